package channels

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/project"
)

// memArchive is an Archive in memory (package archive keeps one in
// PostgreSQL and is tested against it; the e2e tests run the two together).
type memArchive struct {
	mu   sync.Mutex
	byID map[string]Archived
	down bool // Put fails
}

func (m *memArchive) Put(_ context.Context, cs []Archived) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return fmt.Errorf("archive down")
	}
	if m.byID == nil {
		m.byID = map[string]Archived{}
	}
	for _, c := range cs {
		if old, ok := m.byID[c.ChannelID]; !ok || old.Entries <= c.Entries {
			m.byID[c.ChannelID] = c
		}
	}
	return nil
}

func (m *memArchive) Get(_ context.Context, cid string) (*Archived, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.byID[cid]; ok {
		return &a, nil
	}
	return nil, nil
}

func (m *memArchive) Logs(_ context.Context, pid string, f LogFilter, after *LogPos, limit int) ([]ArchivedLog, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ArchivedLog
	for _, a := range m.byID {
		c := logCursor{a.CreatedMS, a.ChannelID}
		if a.ProjectID != pid || (f.Workflow != "" && a.Workflow != f.Workflow) || (f.EventName != "" && a.EventName != f.EventName) ||
			(f.Status != "" && a.Status != f.Status) || (after != nil && !(logCursor{after.CreatedMS, after.ChannelID}).before(c)) {
			continue
		}
		it := ArchivedLog{LogItem{ChannelID: a.ChannelID, Workflow: a.Workflow, Status: a.Status, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}, a.CreatedMS}
		if a.EventName != "" {
			ev := a.EventName
			it.EventName = &ev
		}
		out = append(out, it)
	}
	slices.SortFunc(out, func(a, b ArchivedLog) int {
		if (logCursor{a.CreatedMS, a.ChannelID}).before(logCursor{b.CreatedMS, b.ChannelID}) {
			return -1
		}
		return 1
	})
	return out[:min(limit, len(out))], nil
}

// Channels moved to the archive, some of them only: the request logs list
// the same pages (merged from Redis and the archive) at every page size
// and filter; the channel API, the timeline and a late join's final
// message answer as before; a callback refused before is refused the same
// way, its entry read after the archived ones.
func TestArchivedChannelsReadTheSame(t *testing.T) {
	t.Parallel()
	arch := &memArchive{}
	s, c, _, _ := roomService(t, Options{HotWindow: time.Hour, Archive: arch})
	ctx := context.Background()
	var ids []string
	for i := range 24 {
		task := newTask()
		task.Workflow.Name = fmt.Sprintf("wf%d", i%3)
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ChannelID)
		if i%4 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	for _, id := range ids {
		waitStatus(t, s, id, StatusSuccess)
	}
	time.Sleep(100 * time.Millisecond) // the status indexes move with the batched acks
	walk := func(f LogFilter, limit int) []string {
		t.Helper()
		var out []string
		cursor := ""
		for range 200 {
			page, err := s.Logs(ctx, "p1", f, project.ListParams{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range page.Items {
				out = append(out, fmt.Sprintf("%s/%s/%s/%s", it.ChannelID, it.Workflow, it.Status, it.UpdatedAt))
			}
			if page.NextCursor == nil {
				return out
			}
			cursor = *page.NextCursor
		}
		t.Fatal("no last page")
		return nil
	}
	filters := []LogFilter{{}, {Workflow: "wf1"}, {Status: StatusSuccess}, {Workflow: "wf2", Status: StatusSuccess}}
	before := map[string][]string{}
	for _, f := range filters {
		for _, limit := range []int{1, 3, 7, 100} {
			before[fmt.Sprint(f, limit)] = walk(f, limit)
		}
	}
	views := map[string]string{}
	for _, id := range ids {
		v, tl, err := s.Timeline(ctx, "p1", id)
		if err != nil {
			t.Fatal(err)
		}
		views[id] = fmt.Sprintf("%+v %s", v, tl)
	}
	// Every other channel moves (its hot window made to have passed), the
	// rest stay in Redis: pages mix the two.
	fold := s.foldKeys[0]
	for i, id := range ids {
		if i%2 == 0 {
			c.ZAdd(ctx, fold, redis.Z{Score: 0, Member: id})
		}
	}
	if _, err := s.archiveDue(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if moved := c.Exists(ctx, s.chKey(id)).Val() == 0; moved != (i%2 == 0) {
			t.Fatalf("channel %d: moved out of Redis: %v", i, moved)
		}
	}
	if n := len(arch.byID); n != len(ids)/2 {
		t.Fatalf("archive holds %d channels, want %d", n, len(ids)/2)
	}
	for _, f := range filters {
		for _, limit := range []int{1, 3, 7, 100} {
			if got, want := walk(f, limit), before[fmt.Sprint(f, limit)]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("logs %+v, limit %d, half archived:\n got %v\nwant %v", f, limit, got, want)
			}
		}
	}
	for _, id := range ids {
		v, tl, err := s.Timeline(ctx, "p1", id)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%+v %s", v, tl); got != views[id] {
			t.Errorf("channel %s after archiving:\n got %s\nwant %s", id, got, views[id])
		}
	}
	archived := ids[0]
	if _, err := s.Get(ctx, "p2", archived); err == nil {
		t.Error("another project's archived channel was found")
	}
	seq, msg, err := s.FinalMessage(ctx, archived)
	if v, _ := s.Get(ctx, "p1", archived); err != nil || seq == "" || string(msg) != string(v.Message) {
		t.Errorf("FinalMessage = %s, %s, %v", seq, msg, err)
	}
	// A callback on an archived standard channel is refused as before,
	// and its entry is read after the archived ones.
	if code := conflictCode(s.Callback(ctx, "p1", archived, success(`{"x":1}`))); code == "" {
		t.Fatal("a callback on an archived standard channel was accepted")
	}
	_, tl, _ := s.Timeline(ctx, "p1", archived)
	if last := string(tl[len(tl)-1]); !strings.Contains(last, "callback_rejected") {
		t.Errorf("timeline after a refused callback ends with %s", last)
	}
	// Archived twice (a node died before the due set was cleaned): the
	// archive holds it once, and Redis nothing of it.
	c.ZAdd(ctx, fold, redis.Z{Score: 0, Member: ids[2]})
	if _, err := s.archiveDue(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if n := len(arch.byID); n != len(ids)/2 {
		t.Errorf("archive holds %d channels after a repeat, want %d", n, len(ids)/2)
	}
}

// While the archive cannot be written, channels wait in Redis, due; once it
// can, they move.
func TestArchiveDownChannelsWait(t *testing.T) {
	t.Parallel()
	arch := &memArchive{down: true}
	s, c, _, _ := roomService(t, Options{HotWindow: time.Hour, Archive: arch})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	until(t, "queued to move", func() bool { return c.ZScore(ctx, s.foldKeys[0], task.ChannelID).Err() == nil })
	c.ZAdd(ctx, s.foldKeys[0], redis.Z{Score: 0, Member: task.ChannelID})
	if _, err := s.archiveDue(ctx, 0); err == nil {
		t.Fatal("archiving to an archive that is down did not fail")
	}
	if c.Exists(ctx, s.chKey(task.ChannelID)).Val() != 1 || c.ZScore(ctx, s.foldKeys[0], task.ChannelID).Err() != nil {
		t.Fatal("a channel left Redis, or its due entry, while the archive was down")
	}
	arch.mu.Lock()
	arch.down = false
	arch.mu.Unlock()
	if _, err := s.archiveDue(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if c.Exists(ctx, s.chKey(task.ChannelID)).Val() != 0 || len(arch.byID) != 1 {
		t.Error("the channel did not move once the archive was back")
	}
	if v, err := s.Get(ctx, "p1", task.ChannelID); err != nil || v.Status != StatusSuccess {
		t.Errorf("Get after the move = %+v, %v", v, err)
	}
}

// A channel still awaiting its callback, queued by a run that lost its
// lease with a final status the winner did not have, is neither archived
// nor folded: it stays live, put off by a hot window rather than taken out
// of the due set, so that its settlement's own queueing, which may come
// between a round's read and its removal, is never taken away.
func TestLiveChannelsAreNotMoved(t *testing.T) {
	t.Parallel()
	for _, withArchive := range []bool{true, false} {
		o := Options{HotWindow: time.Hour}
		arch := &memArchive{}
		if withArchive {
			o.Archive = arch
		}
		s, c, _, _ := roomService(t, o)
		ctx := context.Background()
		task := eventTask()
		generated(t, s, task)
		c.ZAdd(ctx, s.foldKeys[0], redis.Z{Score: 0, Member: task.ChannelID})
		var err error
		if withArchive {
			_, err = s.archiveDue(ctx, 0)
		} else {
			_, err = s.foldDue(ctx, 0)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !c.HExists(ctx, s.chKey(task.ChannelID), "deadline").Val() || len(arch.byID) != 0 ||
			c.Exists(ctx, s.zKey(task.ChannelID)).Val() != 0 {
			t.Errorf("archive %v: a live channel was moved or folded", withArchive)
		}
		if at, err := c.ZScore(ctx, s.foldKeys[0], task.ChannelID).Result(); err != nil ||
			at < float64(time.Now().Add(time.Hour-time.Minute).UnixMilli()) {
			t.Errorf("archive %v: a live channel is not put off by a hot window: %v, %v", withArchive, at, err)
		}
		// Its callback settles it as ever.
		if err := s.Callback(ctx, "p1", task.ChannelID, success(`{"x":1}`)); err != nil {
			t.Fatalf("archive %v: callback: %v", withArchive, err)
		}
		waitStatus(t, s, task.ChannelID, StatusCompleted)
	}
}

// A completion or settlement redone after its channel moved to the
// archive (its lease ran out, and the archive moved the channel between
// the script that read the record and the index writes) takes its index
// entries back: the channel is listed once, from the archive, and no log
// index holds it. A first completion writes them as it is (its channel
// moves a hot window later), which the last step shows. (The archive's
// second removal, for writes that land between its first removal and its
// deletion of the keys, is exercised by the e2e test of a killed node.)
func TestRedoneAfterTheMoveLeavesNoIndex(t *testing.T) {
	t.Parallel()
	arch := &memArchive{}
	s, c, _, _ := roomService(t, Options{HotWindow: time.Hour, Archive: arch})
	ctx := context.Background()
	task := newTask()
	task.Workflow.EventName = "thing"
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	cid := task.ChannelID
	ref := task.logRef()
	waitStatus(t, s, cid, StatusAIGenerated)
	if err := s.Callback(ctx, "p1", cid, success(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	moveNow(t, s, c, arch, ref)
	indexed := func() []string {
		var in []string
		for _, k := range s.everyIndexKey(ref, StatusSuccess) {
			if c.ZScore(ctx, k, cid).Err() == nil {
				in = append(in, k)
			}
		}
		return in
	}
	if in := indexed(); len(in) != 0 {
		t.Fatalf("indexed in Redis after the move: %v", in)
	}
	v, _ := s.Get(ctx, "p1", cid)
	// The redos, each as its writer sends it after the move.
	s.sendAcks(ctx, []ackItem{{cid: cid, pid: "p1", msg: v.Message, status: StatusSuccess, workflow: ref.workflow,
		event: ref.event, redone: true}})
	if err := s.awaitCallback(ctx, outcome{pid: "p1", cid: cid, workflow: ref.workflow, event: ref.event,
		status: StatusAIGenerated, msg: v.Message, deadline: time.Now().Add(time.Hour).UnixMilli(), redone: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.settleAll(ctx, []settlement{{ref: ref, due: s.dueKey(cid), status: StatusSuccess, msg: v.Message,
		redone: true}}, nil); err != nil {
		t.Fatal(err)
	}
	if in := indexed(); len(in) != 0 {
		t.Errorf("redos after the move left index entries: %v", in)
	}
	seen := 0
	page, err := s.Logs(ctx, "p1", LogFilter{}, project.ListParams{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range page.Items {
		if it.ChannelID == cid {
			seen++
		}
	}
	if seen != 1 {
		t.Errorf("the channel is listed %d times", seen)
	}
	// Not redone: written as it is (what unindexGone is for).
	s.sendAcks(ctx, []ackItem{{cid: cid, pid: "p1", msg: v.Message, status: StatusSuccess, workflow: ref.workflow, event: ref.event}})
	if in := indexed(); len(in) == 0 {
		t.Error("a first completion's ack wrote no index entry: the check above tests nothing")
	}
	// A first completion's ack sent more than a lease after it was handed
	// over (a lagging batcher) is looked at as a redo is.
	s.sendAcks(ctx, []ackItem{{cid: cid, pid: "p1", msg: v.Message, status: StatusSuccess, workflow: ref.workflow, event: ref.event,
		at: time.Now().Add(-2 * s.o.Lease)}})
	if in := indexed(); len(in) != 0 {
		t.Errorf("a late ack after the move left index entries: %v", in)
	}
}

// A round cut short after it deleted a channel's keys (its node died before
// the second removal of the index entries and before the due entry went)
// leaves the channel due with no record; a redo had indexed it again
// meanwhile. The next round takes those entries out, found from the
// archived copy, and the due entry with them.
func TestCutShortMoveLeavesNoIndex(t *testing.T) {
	t.Parallel()
	s, c, task := movedChannel(t)
	ctx := context.Background()
	cid := task.ChannelID
	// What the dead node left: an entry a redo wrote, and the due entry.
	idx := s.indexKeys(task.logRef(), StatusSuccess)
	for _, k := range idx {
		c.ZAdd(ctx, k, redis.Z{Score: 1, Member: cid})
	}
	c.ZAdd(ctx, s.foldKeys[0], redis.Z{Score: 0, Member: cid})
	if _, err := s.archiveDue(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range idx {
		if c.ZScore(ctx, k, cid).Err() == nil {
			t.Errorf("%s still lists the moved channel", k)
		}
	}
	if c.ZScore(ctx, s.foldKeys[0], cid).Err() == nil {
		t.Error("the channel is still due to move")
	}
	if c.ZScore(ctx, s.sweepKey(), unindexed{ref: task.logRef(), st: StatusSuccess}.member()).Err() != nil {
		t.Error("the move finished by this round noted no sweep")
	}
}

// An index entry written after a move is done (a completion redone by a
// node that died before its own look at the record, or whose look failed)
// has no writer left to take it out: the move noted the channel, and any
// node's round a few leases later takes it out of the indexes a late write
// can list it in. One whose record stands again keeps its entries.
func TestLateEntryAfterTheMoveIsSwept(t *testing.T) {
	t.Parallel()
	moved := time.Now()
	s, c, task := movedChannel(t)
	ctx := context.Background()
	cid := task.ChannelID
	ref := task.logRef()
	due, err := c.ZScore(ctx, s.sweepKey(), unindexed{ref: ref, st: StatusSuccess}.member()).Result()
	if err != nil || due < float64(moved.Add(sweepLeases*s.o.Lease).UnixMilli()) {
		t.Fatalf("moved channel noted due at %.0f (%v), want %d leases after %d", due, err, sweepLeases, moved.UnixMilli())
	}
	// What a dead node's late writes left: entries in the success
	// indexes (a redone completion's, indexMove).
	late := s.stateKeys(ref, StatusSuccess)
	for _, k := range late {
		c.ZAdd(ctx, k, redis.Z{Score: 1, Member: cid})
	}
	listed := func() (in []string) {
		for _, k := range late {
			if c.ZScore(ctx, k, cid).Err() == nil {
				in = append(in, k)
			}
		}
		return in
	}
	other := newService(t, c, s.o.Prefix, answer(`{}`), Options{})
	if _, err := other.unindexRound(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if in := listed(); len(in) != len(late) {
		t.Fatalf("swept before the note was due: listed in %v only", in)
	}
	if _, err := other.unindexRound(ctx, time.Now().Add((sweepLeases+1)*s.o.Lease)); err != nil {
		t.Fatal(err)
	}
	if in := listed(); len(in) != 0 {
		t.Errorf("late entries left after the sweep: %v", in)
	}
	if c.ZScore(ctx, s.sweepKey(), unindexed{ref: ref, st: StatusSuccess}.member()).Err() == nil {
		t.Error("the sweep's note is still due")
	}
	// A channel whose record stands keeps its entries.
	kept := newTask()
	if err := s.Submit(ctx, kept); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, kept.ChannelID, StatusSuccess)
	if err := s.sweepMoved(ctx, []unindexed{{ref: kept.logRef(), st: StatusSuccess, moved: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.unindexRound(ctx, time.Now().Add((sweepLeases+1)*s.o.Lease)); err != nil {
		t.Fatal(err)
	}
	for _, k := range s.indexKeys(kept.logRef(), StatusSuccess) {
		if c.ZScore(ctx, k, kept.ChannelID).Err() != nil {
			t.Errorf("a channel in Redis was taken out of %s", k)
		}
	}
}

// movedChannel runs a standard task on a node with an archive and moves
// its channel there (moveNow).
func movedChannel(t *testing.T) (*Service, redis.UniversalClient, *Task) {
	t.Helper()
	arch := &memArchive{}
	s, c, _, _ := roomService(t, Options{HotWindow: time.Hour, Archive: arch})
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	moveNow(t, s, c, arch, task.logRef())
	return s, c, task
}

// moveNow waits until the finished channel of ref is queued to move and
// its settlement has been sent (its final status's index lists it), makes it due and moves it to the archive arch, which
// then holds it alone. A round that finds the channel still being written
// leaves it for the next ("moved"), so it is asked again.
func moveNow(t *testing.T, s *Service, c redis.UniversalClient, arch *memArchive, ref logRef) {
	t.Helper()
	ctx := context.Background()
	v, err := s.Get(ctx, ref.pid, ref.cid)
	if err != nil || !v.Status.final() {
		t.Fatalf("channel %s: %s, %v; want it finished", ref.cid, v.Status, err)
	}
	st := v.Status
	until(t, "queued to move", func() bool { return c.ZScore(ctx, s.foldKeys[0], ref.cid).Err() == nil })
	until(t, "settled", func() bool { return c.ZScore(ctx, s.stateKeys(ref, st)[0], ref.cid).Err() == nil })
	until(t, "moved", func() bool {
		c.ZAdd(ctx, s.foldKeys[0], redis.Z{Score: 0, Member: ref.cid})
		if _, err := s.archiveDue(ctx, 0); err != nil {
			t.Fatal(err)
		}
		return c.Exists(ctx, s.chKey(ref.cid)).Val() == 0
	})
	if len(arch.byID) != 1 {
		t.Fatalf("the archive holds %d channels, want 1", len(arch.byID))
	}
}

// A reservation never confirmed (its submission answered 503, and Redis
// ran it anyway) whose channel has since moved to the archive is resolved
// as accepted: a repeat replays it rather than submitting a second task.
func TestIdempotencyFindsAnArchivedChannel(t *testing.T) {
	t.Parallel()
	arch := &memArchive{}
	s, c, _, _ := roomService(t, Options{HotWindow: time.Hour, Archive: arch})
	ctx := context.Background()
	first := NewChannelID()
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k", "fp", first); err != nil || prev != nil {
		t.Fatalf("claim = %+v, %v", prev, err)
	}
	// Neither confirmed nor released; its lease has run out, and its
	// channel is in the archive, not in Redis.
	c.Del(ctx, s.idemKey("p1", "k")+":lease")
	if err := arch.Put(ctx, []Archived{{ChannelID: first, ProjectID: "p1", Status: StatusSuccess}}); err != nil {
		t.Fatal(err)
	}
	prev, err := s.ClaimIdempotency(ctx, "p1", "k", "fp", NewChannelID())
	if err != nil || prev == nil || !prev.Done || prev.ChannelID != first {
		t.Fatalf("repeat = %+v, %v; want the archived channel %s replayed", prev, err, first)
	}
	// Another project's archived channel of that id does not count.
	if prev, err := s.ClaimIdempotency(ctx, "p2", "k", "fp", first); err != nil || prev != nil {
		t.Fatalf("another project's claim = %+v, %v", prev, err)
	}
	c.Del(ctx, s.idemKey("p2", "k")+":lease")
	if prev, err := s.ClaimIdempotency(ctx, "p2", "k", "fp", NewChannelID()); err != nil || prev != nil {
		t.Fatalf("another project's repeat = %+v, %v; want the key taken afresh", prev, err)
	}
}
