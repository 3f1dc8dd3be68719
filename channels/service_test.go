package channels

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

// runnerFunc adapts a function to Runner.
type runnerFunc func(ctx context.Context, req ai.Request) (ai.Result, error)

func (f runnerFunc) Run(ctx context.Context, req ai.Request) (ai.Result, error) { return f(ctx, req) }

func answer(data string) runnerFunc {
	return func(ctx context.Context, req ai.Request) (ai.Result, error) {
		return ai.Result{Data: json.RawMessage(data), Provider: "mock", Model: "m",
			Attempts: []ai.Attempt{{Provider: "mock", Model: "m", Success: true}}}, nil
	}
}

// recorder counts side effects.
type recorder struct {
	mu        sync.Mutex
	published []string
	events    []dispatch.Event
	cancels   []dispatch.Event
	logs      map[string][]json.RawMessage // the dispatcher's log, by channel
}

// Prepare leaves every event to Enqueue (as after an error).
func (r *recorder) Prepare(context.Context, dispatch.Event) (*dispatch.Enqueueing, error) {
	return nil, nil
}

// CancelIn records the cancellations (as done: nothing goes in p).
func (r *recorder) CancelIn(_ context.Context, _ redis.Pipeliner, cs []dispatch.Cancellation) (*dispatch.Cancelling, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		r.cancels = append(r.cancels, c.Event)
	}
	return nil, nil
}

// PublishIn records msg as published once the pipeline it was queued in
// has run and its outcome is read: the recorder is a room that takes every
// message as new.
func (r *recorder) PublishIn(_ context.Context, _ redis.Pipeliner, _, _ string, msg json.RawMessage) func() (int64, error) {
	return func() (int64, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.published = append(r.published, string(msg))
		return int64(len(r.published)), nil
	}
}

// awaitPublished waits for the room to have been sent a message (a
// completed task's publish goes with its lease release, in the ack
// batcher's next round trip) and returns what it was sent.
func (r *recorder) awaitPublished(t *testing.T) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.published)
		r.mu.Unlock()
		if len(got) > 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *recorder) Enqueue(_ context.Context, ev dispatch.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) ChannelLog(_ context.Context, cid string) ([]json.RawMessage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs[cid], nil
}

func newTask() *Task {
	return &Task{ChannelID: NewChannelID(), ProjectID: "p1",
		Workflow:     project.Workflow{Name: "w", Provider: "mock", Model: "m"},
		Messages:     []ai.Message{{Role: "user", Content: "hi"}},
		CustomerData: json.RawMessage(`{"u":1}`)}
}

func newService(tb testing.TB, c redis.UniversalClient, prefix string, r Runner, o Options) *Service {
	tb.Helper()
	o.Prefix = prefix
	o.Log = zerolog.Nop()
	s := New(c, r, o)
	tb.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

func waitStatus(tb testing.TB, s *Service, cid string, want Status) View {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := s.Get(context.Background(), "p1", cid)
		if err == nil && v.Status == want {
			return v
		}
		if time.Now().After(deadline) {
			tb.Fatalf("channel %s: status %q (err %v), want %q", cid, v.Status, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two nodes running the same task (one kept going after losing its lease)
// complete it once: both see the winner's message, the timeline has one
// outcome.
func TestCompletionIsOnce(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	a := newService(t, c, prefix, answer(`{"from":"a"}`), Options{Publisher: rec, Dispatcher: rec})
	b := newService(t, c, prefix, answer(`{"from":"b"}`), Options{Publisher: rec, Dispatcher: rec})
	task := newTask()
	if err := a.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	msgs := make([]json.RawMessage, 2)
	for i, s := range []*Service{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t2 := *task
			m, err := s.execute(context.Background(), &t2, nil)
			if err != nil {
				t.Error(err)
			}
			msgs[i] = m
		}()
	}
	wg.Wait()
	if string(msgs[0]) != string(msgs[1]) {
		t.Fatalf("the two runs disagree on the final message:\n%s\n%s", msgs[0], msgs[1])
	}
	_, tl, err := a.Timeline(context.Background(), "p1", task.ChannelID)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := 0
	for _, e := range tl {
		if strings.Contains(string(e), `"type":"completed"`) {
			outcomes++
		}
	}
	if outcomes != 1 {
		t.Errorf("timeline has %d completions, want 1: %s", outcomes, tl)
	}
	// Side effects may repeat (they are idempotent downstream) but always
	// carry the winner's message.
	for _, p := range rec.awaitPublished(t) {
		if p != string(msgs[0]) {
			t.Errorf("published a losing message: %s", p)
		}
	}
}

// A run whose channel is gone by its completion (expired, or moved to the
// archive while a redo ran) ends with errGone, a not_found for the API, and
// records nothing.
func TestRunOfAGoneChannel(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rec := &recorder{}
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{Publisher: rec, Dispatcher: rec})
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(context.Background(), s.chKey(task.ChannelID), s.tlKey(task.ChannelID)).Err(); err != nil {
		t.Fatal(err)
	}
	t2 := *task
	_, err := s.execute(context.Background(), &t2, nil)
	if !errors.Is(err, errGone) {
		t.Fatalf("run of a gone channel: %v, want errGone", err)
	}
	if e := apperr.As(err); e == nil || e.Kind != apperr.NotFound {
		t.Errorf("run of a gone channel: %v, want a not_found", err)
	}
	if n := c.Exists(context.Background(), s.chKey(task.ChannelID)).Val(); n != 0 {
		t.Errorf("the run wrote the gone channel's record again")
	}
}

// A task leased by a node that then vanished is requeued when its lease
// ends and completed by another node.
func TestExpiredLeaseIsReclaimed(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{Lease: 200 * time.Millisecond})
	task := newTask()
	ctx := context.Background()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	// A "dead node" claims it and never comes back.
	ids, err := claimScript.Run(ctx, s.rdb, []string{s.q.keys[0].ring, s.q.keys[0].lease, s.q.keys[0].count, s.q.keys[0].legacy, s.q.keys[0].qPrefix, s.q.keys[0].claimPrefix + "dead"},
		10, time.Now().Add(100*time.Millisecond).UnixMilli(), legacyEntry, 1000).StringSlice()
	if err != nil || len(ids) != 1 {
		t.Fatalf("claim: %v %v", ids, err)
	}
	s.Start()
	v := waitStatus(t, s, task.ChannelID, StatusSuccess)
	if !strings.Contains(string(v.Message), `"ok":true`) {
		t.Errorf("message = %s", v.Message)
	}
	// The lease is acked right after the completion is recorded.
	deadline := time.Now().Add(2 * time.Second)
	for n, _ := s.rdb.ZCard(ctx, s.q.keys[0].lease).Result(); n != 0; n, _ = s.rdb.ZCard(ctx, s.q.keys[0].lease).Result() {
		if time.Now().After(deadline) {
			t.Fatalf("%d leases left after completion", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Shutdown with a task still running hands it back to the queue.
func TestShutdownReleasesUnfinishedTasks(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	block := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		<-ctx.Done()
		return ai.Result{}, ctx.Err()
	})
	s := newService(t, c, prefix, block, Options{})
	s.Start()
	task := newTask()
	ctx := context.Background()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusGenerating)
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_ = s.Shutdown(sctx)
	ready, _ := s.rdb.LRange(ctx, s.q.keys[0].queue(task.ProjectID), 0, -1).Result()
	leased, _ := s.rdb.ZCard(ctx, s.q.keys[0].lease).Result()
	if len(ready) != 1 || ready[0] != task.ChannelID || leased != 0 {
		t.Errorf("after shutdown: ready %v, leased %d; want the task back in the queue", ready, leased)
	}
	if v, _ := s.Get(ctx, "p1", task.ChannelID); v.Status != StatusGenerating {
		t.Errorf("status = %s: an interrupted task must not be marked failed", v.Status)
	}
}

func TestFullQueueLeavesNothing(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{MaxQueue: 1})
	ctx := context.Background()
	if err := s.Submit(ctx, newTask()); err != nil {
		t.Fatal(err)
	}
	second := newTask()
	if err := s.Submit(ctx, second); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("second submit: %v, want ErrQueueFull", err)
	}
	if n, _ := s.rdb.Exists(ctx, s.chKey(second.ChannelID), s.tlKey(second.ChannelID)).Result(); n != 0 {
		t.Errorf("refused task left %d keys", n)
	}
	for _, k := range s.newKeys(second, StatusPending) {
		if _, err := s.rdb.ZScore(ctx, k, second.ChannelID).Result(); err == nil {
			t.Errorf("refused task left in log index %s", k)
		}
	}
}

func TestRecordsExpireAfterRetention(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{Retention: time.Hour})
	task := newTask()
	ctx := context.Background()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	k := s.chKey(task.ChannelID) // the timeline is in it (tl.lua)
	ttl, err := c.TTL(ctx, k).Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL of %s = %v (%v), want the 1h retention", k, ttl, err)
	}
	if n, _ := c.Exists(ctx, s.tlKey(task.ChannelID)).Result(); n != 0 {
		t.Errorf("a new channel wrote a timeline list")
	}
	if tl, err := s.timeline(ctx, task.ChannelID); err != nil || len(tl) != 1 {
		t.Errorf("timeline %s (%v), want the request's entry", tl, err)
	}
}

func TestForeignProjectIsNotFound(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "p2", task.ChannelID); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("another project read the channel: %v", err)
	}
}

// A reservation that was never confirmed nor released (the submission
// failed, and so did the release: Redis was failing) blocks repeats only
// for its lease: then a repeat takes the key if the first request was not
// accepted, or replays it if it was.
func TestIdempotencyKeyIsNeverStuck(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{})
	ctx := context.Background()
	lease := func(key string) string { return s.idemKey("p1", key) + ":lease" }

	// Not accepted: the repeat takes the key over.
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k1", "fp", "ch-first"); prev != nil || err != nil {
		t.Fatalf("first claim = %+v, %v", prev, err)
	}
	prev, err := s.ClaimIdempotency(ctx, "p1", "k1", "fp", "ch-second")
	if err != nil || prev == nil || prev.Done || prev.ChannelID != "ch-first" {
		t.Fatalf("repeat within the lease = %+v, %v; want the first, in progress", prev, err)
	}
	c.Del(ctx, lease("k1")) // the lease runs out
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k1", "fp", "ch-second"); prev != nil || err != nil {
		t.Fatalf("repeat after the lease = %+v, %v; want to go ahead", prev, err)
	}
	s.ConfirmIdempotency(ctx, "p1", "k1", "fp", "ch-second")
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k1", "fp", "ch-third"); err != nil || prev == nil || !prev.Done || prev.ChannelID != "ch-second" {
		t.Fatalf("after the takeover = %+v, %v; want ch-second's answer replayed", prev, err)
	}

	// Accepted, but the confirm failed: the repeat replays it.
	task := newTask()
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k2", "fp", task.ChannelID); prev != nil || err != nil {
		t.Fatalf("claim = %+v, %v", prev, err)
	}
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	c.Del(ctx, lease("k2"))
	prev, err = s.ClaimIdempotency(ctx, "p1", "k2", "fp", NewChannelID())
	if err != nil || prev == nil || !prev.Done || prev.ChannelID != task.ChannelID {
		t.Fatalf("repeat of an accepted, unconfirmed request = %+v, %v; want its channel %s, done", prev, err, task.ChannelID)
	}
}

// A repeat that finds the reservation run out settles the first request's
// fate for good (idemsettle.lua). Its channel standing, the repeat replays
// it as accepted, and the first submission's take-back, landing after
// (sent when its answer was lost, and slow on its way), leaves it: the
// client was told it was accepted. With no channel, the repeat submits
// afresh, and the first submission, run late by Redis, writes nothing: one
// task for the key.
func TestIdempotencyRepeatSettlesTheFirst(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	cluster := rdb.IsCluster(c)
	lease := func(key string) string { return s.idemKey("p1", key) + ":lease" }
	exists := func(cid string) bool { return c.Exists(ctx, s.chKey(cid)).Val() == 1 }

	first := newTask()
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k1", "fp", first.ChannelID); prev != nil || err != nil {
		t.Fatalf("claim = %+v, %v", prev, err)
	}
	if err := s.Submit(ctx, first); err != nil { // accepted; its answer is lost
		t.Fatal(err)
	}
	c.Del(ctx, lease("k1"))
	prev, err := s.ClaimIdempotency(ctx, "p1", "k1", "fp", NewChannelID())
	if err != nil || prev == nil || !prev.Done || prev.ChannelID != first.ChannelID {
		t.Fatalf("repeat = %+v, %v; want %s replayed as accepted", prev, err, first.ChannelID)
	}
	if s.withdraw(ctx, first, context.DeadlineExceeded, cluster, 0) {
		t.Error("a take-back landing after the repeat was answered: reported the task gone")
	}
	if !exists(first.ChannelID) {
		t.Fatal("a take-back landing after the repeat took out the channel the repeat was answered with")
	}
	if v, err := s.Get(ctx, "p1", first.ChannelID); err != nil || v.Status != StatusPending {
		t.Errorf("the kept channel = %+v, %v; want it pending, to run", v.Status, err)
	}

	late := newTask()
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k2", "fp", late.ChannelID); prev != nil || err != nil {
		t.Fatalf("claim = %+v, %v", prev, err)
	}
	c.Del(ctx, lease("k2")) // its submission has not reached Redis yet
	again := NewChannelID()
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k2", "fp", again); prev != nil || err != nil {
		t.Fatalf("repeat = %+v, %v; want it to take the key", prev, err)
	}
	if err := s.Submit(ctx, late); !errors.Is(err, ErrWithdrawn) {
		t.Errorf("the first submission, run after the repeat took the key: %v, want ErrWithdrawn", err)
	}
	if exists(late.ChannelID) {
		t.Error("the first submission, run after the repeat took the key, recorded its channel: two tasks for one key")
	}
	// The first node, told ErrWithdrawn, releases its reservation; the key
	// is the repeat's now, and stays so.
	s.ReleaseIdempotency(ctx, "p1", "k2", "fp", late.ChannelID)
	s.ConfirmIdempotency(ctx, "p1", "k2", "fp", late.ChannelID)
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k2", "fp", NewChannelID()); err != nil || prev == nil || prev.Done || prev.ChannelID != again {
		t.Errorf("after the first node settled its reservation late = %+v, %v; want the repeat's %s, in progress", prev, err, again)
	}
	s.ConfirmIdempotency(ctx, "p1", "k2", "fp", again)
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k2", "fp", NewChannelID()); err != nil || prev == nil || !prev.Done || prev.ChannelID != again {
		t.Errorf("after the repeat confirmed = %+v, %v; want the repeat's %s, done", prev, err, again)
	}
}

// On a Cluster a submission's record stands before its enqueue. A record
// a repeat of its Idempotency-Key was answered with (kept) runs whatever
// its enqueue did: refused (its intent taken out) or lost, the take-back
// puts the intent back, run out, and the reclaimer queues the task; still
// on its way (its intent as written), the intent runs out now, so that the
// enqueue pushes nothing when it lands; still queued, nothing is added
// (it would run twice).
func TestKeptSubmissionRuns(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Lease: 400 * time.Millisecond})
	ctx := context.Background()
	var tasks []*Task
	for i, failure := range []error{ErrQueueFull, context.DeadlineExceeded, context.DeadlineExceeded, context.DeadlineExceeded} {
		key := "k" + strconv.Itoa(i)
		lease := s.idemKey("p1", key) + ":lease"
		task := newTask()
		if prev, err := s.ClaimIdempotency(ctx, "p1", key, "fp", task.ChannelID); prev != nil || err != nil {
			t.Fatalf("claim = %+v, %v", prev, err)
		}
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		q := s.q.of(task.ChannelID)
		member := leaseMember(task.ProjectID, task.ChannelID)
		queued, inFlight := i == 2, i == 3
		var intent int64
		if !queued { // as if its enqueue had refused it or not run: only the record stands
			c.LRem(ctx, q.queue(task.ProjectID), 0, task.ChannelID)
			c.Decr(ctx, q.count)
		}
		if inFlight { // its intent as written, its enqueue still to come
			intent = time.Now().Add(time.Hour).UnixMilli()
			c.ZAdd(ctx, q.lease, redis.Z{Score: float64(intent), Member: member})
		}
		c.Del(ctx, lease)
		if prev, err := s.ClaimIdempotency(ctx, "p1", key, "fp", NewChannelID()); err != nil || prev == nil || !prev.Done || prev.ChannelID != task.ChannelID {
			t.Fatalf("repeat = %+v, %v; want %s replayed", prev, err, task.ChannelID)
		}
		if s.withdraw(ctx, task, failure, true, intent) {
			t.Errorf("%v: a submission kept for a repeat reported gone", failure)
		}
		at, err := c.ZScore(ctx, q.lease, member).Result()
		if due := err == nil && at <= float64(time.Now().UnixMilli()); due == queued {
			t.Errorf("case %d (%v): its intent due now: %v (at %v, %v)", i, failure, due, at, err)
		}
		tasks = append(tasks, task)
	}
	s.Start()
	for _, task := range tasks {
		waitStatus(t, s, task.ChannelID, StatusSuccess)
	}
}

// A refused Cluster submission whose take-back failed is taken back once
// Redis answers (takeBackRefused): its record goes, unless a repeat of its
// Idempotency-Key was answered with it meanwhile; then it runs.
func TestRefusedTakenBackLater(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Lease: 400 * time.Millisecond})
	ctx := context.Background()
	plain, kept := newTask(), newTask()
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k", "fp", kept.ChannelID); prev != nil || err != nil {
		t.Fatalf("claim = %+v, %v", prev, err)
	}
	for _, task := range []*Task{plain, kept} {
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		q := s.q.of(task.ChannelID) // refused: only the record stands
		c.LRem(ctx, q.queue(task.ProjectID), 0, task.ChannelID)
		c.Decr(ctx, q.count)
	}
	c.Del(ctx, s.idemKey("p1", "k")+":lease")
	if prev, err := s.ClaimIdempotency(ctx, "p1", "k", "fp", NewChannelID()); err != nil || prev == nil || !prev.Done {
		t.Fatalf("repeat = %+v, %v; want %s replayed", prev, err, kept.ChannelID)
	}
	for _, task := range []*Task{plain, kept} {
		s.takeBackRefused(task, []string{s.chKey(task.ChannelID), s.wKey(task.ChannelID)}, 0, 0)
	}
	if c.Exists(ctx, s.chKey(plain.ChannelID)).Val() != 0 {
		t.Error("a refused submission taken back late left its record")
	}
	s.Start()
	waitStatus(t, s, kept.ChannelID, StatusSuccess)
}

// A sync run whose record Redis refuses (the channel marked withdrawn: a
// repeat of its Idempotency-Key found no record) ends withdrawn, its lease
// taken out, rather than concluding a channel that is not there.
func TestSyncRunWithdrawn(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{})
	ctx := context.Background()
	task := newTask()
	c.Set(ctx, s.wKey(task.ChannelID), 1, time.Minute)
	if _, err := s.RunSync(ctx, task); !errors.Is(err, ErrWithdrawn) || !errors.Is(err, ErrInProgress) {
		t.Fatalf("RunSync = %v, want ErrWithdrawn, answered as in progress", err)
	}
	if c.Exists(ctx, s.chKey(task.ChannelID)).Val() != 0 {
		t.Error("a withdrawn sync run left a record")
	}
	l := leaseMember(task.ProjectID, task.ChannelID)
	if c.ZScore(ctx, s.q.of(task.ChannelID).lease, l).Err() == nil {
		t.Error("a withdrawn sync run left its lease")
	}
}

// A sync run whose record round trip failed takes its record back, unless
// a repeat of its Idempotency-Key was answered with it (kept): that record
// stays, with its lease, and runs when the lease runs out.
func TestSyncTakeBackKeepsARepeatsChannel(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	for _, kept := range []bool{false, true} {
		task := newTask()
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		l := lease{s.q.parts.Of(task.ChannelID), leaseMember(task.ProjectID, task.ChannelID)}
		lk := s.q.keys[l.part].lease
		c.ZAdd(ctx, lk, redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: l.member})
		if kept {
			c.Del(ctx, s.idemKey("p1", "k")+":lease")
			if prev, err := s.ClaimIdempotency(ctx, "p1", "k", "fp", task.ChannelID); prev != nil || err != nil {
				t.Fatalf("claim = %+v, %v", prev, err)
			}
			c.Del(ctx, s.idemKey("p1", "k")+":lease")
			if prev, err := s.ClaimIdempotency(ctx, "p1", "k", "fp", NewChannelID()); err != nil || prev == nil || !prev.Done {
				t.Fatalf("repeat = %+v, %v; want the channel replayed", prev, err)
			}
		}
		s.takeBackSync(ctx, task, l)
		standing := c.Exists(ctx, s.chKey(task.ChannelID)).Val() == 1
		leased := c.ZScore(ctx, lk, l.member).Err() == nil
		marked := c.Exists(ctx, s.wKey(task.ChannelID)).Val() == 1
		if standing != kept || leased != kept || marked == kept {
			t.Errorf("kept %v: record standing %v, leased %v, marked withdrawn %v", kept, standing, leased, marked)
		}
	}
}

// On one Redis a submission's index entries stand exactly when its record
// does: the submit script writes both or nothing, and taking back one
// whose answer was lost (Redis ran it after all) takes both out in one
// script. Nothing is left for a note, so nothing rests on the node that
// submitted (it may be killed right after).
func TestWithdrawnSubmissionLeavesNoIndex(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	if rdb.IsCluster(c) {
		t.Skip("on a Cluster the entries are taken out by a note (TestUnindexSparesAcceptedChannels)")
	}
	s := newService(t, c, prefix, answer(`{}`), Options{MaxQueue: 2})
	ctx := context.Background()
	kept, lost, refused := newTask(), newTask(), newTask()
	for _, task := range []*Task{kept, lost} {
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Submit(ctx, refused); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third submit: %v, want ErrQueueFull", err)
	}
	if !s.withdraw(ctx, lost, context.DeadlineExceeded, false, 0) { // its answer was lost
		t.Error("a submission taken back with its record: not reported gone")
	}
	listed := func(task *Task) (n int) {
		for _, k := range s.newKeys(task, StatusPending) {
			if c.ZScore(ctx, k, task.ChannelID).Err() == nil {
				n++
			}
		}
		return n
	}
	if n := listed(kept); n != len(s.newKeys(kept, StatusPending)) {
		t.Errorf("an accepted channel is in %d of its indexes", n)
	}
	for _, task := range []*Task{lost, refused} {
		if n, _ := c.Exists(ctx, s.chKey(task.ChannelID)).Result(); n != 0 {
			t.Errorf("channel %s not accepted has a record", task.ChannelID)
		}
		if n := listed(task); n != 0 {
			t.Errorf("channel %s not accepted is in %d indexes", task.ChannelID, n)
		}
	}
	if n, _ := c.ZCard(ctx, s.unindexKey()).Result(); n != 0 {
		t.Errorf("%d notes written: the removal was left for later", n)
	}
	if us := s.unindexQ.take(); len(us) != 0 {
		t.Errorf("%d notes kept in the node's memory", len(us))
	}
}

// A submission taken back before Redis ran it (its round trip still on
// its way, or sent again) is reported gone, and when Redis runs it after
// all it records, queues and lists nothing (on a Cluster, lists nothing
// once the take-back's note is due): its outcome is known at once.
func TestWithdrawnBeforeItRanNeverRuns(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	late := newTask()
	if !s.withdraw(ctx, late, context.DeadlineExceeded, rdb.IsCluster(c), 0) {
		t.Fatal("a submission taken back before it ran: not reported gone")
	}
	queue := s.q.of(late.ChannelID).queue(late.ProjectID)
	before, _ := c.LLen(ctx, queue).Result()
	if err := s.Submit(ctx, late); !errors.Is(err, ErrWithdrawn) { // Redis runs it now
		t.Fatalf("the late submission: %v, want it refused as withdrawn", err)
	}
	if n, _ := c.Exists(ctx, s.chKey(late.ChannelID)).Result(); n != 0 {
		t.Error("the late submission wrote its record")
	}
	if after, _ := c.LLen(ctx, queue).Result(); after != before {
		t.Errorf("the late submission queued its task (%d → %d)", before, after)
	}
	if rdb.IsCluster(c) {
		// There its entries went beside its record, and are taken out by
		// the note its take-back wrote, once due.
		if _, err := s.unindexRound(ctx, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range s.newKeys(late, StatusPending) {
		if c.ZScore(ctx, k, late.ChannelID).Err() == nil {
			t.Errorf("the late submission is in index %s", k)
		}
	}
	other := newTask()
	if err := s.Submit(ctx, other); err != nil {
		t.Fatalf("another submission: %v", err)
	}
	if n, _ := c.Exists(ctx, s.chKey(other.ChannelID)).Result(); n != 1 {
		t.Error("another submission has no record")
	}
	// One a worker has started is accepted after all: kept, and not marked.
	if err := c.HSet(ctx, s.chKey(other.ChannelID), "status", string(StatusGenerating)).Err(); err != nil {
		t.Fatal(err)
	}
	if s.withdraw(ctx, other, context.DeadlineExceeded, rdb.IsCluster(c), 0) {
		t.Error("a started submission: reported gone")
	}
	if n, _ := c.Exists(ctx, s.chKey(other.ChannelID)).Result(); n != 1 {
		t.Error("a started submission lost its record")
	}
	if n, _ := c.Exists(ctx, s.wKey(other.ChannelID)).Result(); n != 0 {
		t.Error("a started submission was marked withdrawn")
	}
}

// A submission Redis runs twice (its round trip sent again by the client
// after the answer was lost) is queued once, and its record, which a
// worker may have changed meanwhile, stands as it is.
func TestSubmissionSentAgainRunsOnce(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	if rdb.IsCluster(c) {
		t.Skip("on a Cluster the record and the queue go in round trips of their own; a record sent again stands (record_main.lua)")
	}
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	task := newTask()
	queue := s.q.of(task.ChannelID).queue(task.ProjectID)
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	queued, _ := c.LLen(ctx, queue).Result()
	if err := c.HSet(ctx, s.chKey(task.ChannelID), "status", string(StatusGenerating)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(ctx, task); err != nil { // the same round trip, run again
		t.Fatalf("the submission sent again: %v, want it answered as queued", err)
	}
	if n, _ := c.LLen(ctx, queue).Result(); n != queued {
		t.Errorf("the submission sent again queued its task again (%d → %d)", queued, n)
	}
	if st, _ := c.HGet(ctx, s.chKey(task.ChannelID), "status").Result(); st != string(StatusGenerating) {
		t.Errorf("the submission sent again wrote its record again: status %q", st)
	}
}

// A submission the script fails (its project's queue key is not a list)
// is an error, leaves nothing, and fails no other submission.
func TestFailedSubmissionLeavesNothing(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	broken := newTask()
	broken.ProjectID = "p9"
	if err := c.Set(ctx, s.q.of(broken.ChannelID).queue("p9"), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(ctx, broken); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("submit onto a broken queue key: %v, want its WRONGTYPE", err)
	}
	if n, _ := c.Exists(ctx, s.chKey(broken.ChannelID)).Result(); n != 0 {
		t.Error("the failed submission left its record")
	}
	if rdb.IsCluster(c) { // its entries went in the round trip that failed: taken out by a note
		if _, err := s.unindexRound(ctx, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range s.newKeys(broken, StatusPending) {
		if c.ZScore(ctx, k, broken.ChannelID).Err() == nil {
			t.Errorf("the failed submission is in index %s", k)
		}
	}
	if err := s.Submit(ctx, newTask()); err != nil {
		t.Errorf("another project's submission: %v", err)
	}
}

// A round takes its notes for itself: another round at the same time
// does not handle them again, and once notesRetry has passed (the first
// round's node died midway) another round does.
func TestNotesAreSharedOut(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(ctx, s.chKey(task.ChannelID)).Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.noteUnindex(ctx, []unindexed{{ref: task.logRef(), st: StatusPending}}, now); err != nil {
		t.Fatal(err)
	}
	// The first round's take, its node dying before it handles them.
	taken, err := takeNotesScript.Run(ctx, c, []string{s.unindexKey()}, now.UnixMilli(), maxUnindexRound, notesRetry.Milliseconds()).StringSlice()
	if err != nil || len(taken) != 1 {
		t.Fatalf("took %v, %v; want the one note", taken, err)
	}
	listed := func() int {
		n := 0
		for _, k := range s.newKeys(task, StatusPending) {
			if c.ZScore(ctx, k, task.ChannelID).Err() == nil {
				n++
			}
		}
		return n
	}
	if n, err := s.unindexRound(ctx, now); err != nil || n != 0 || listed() == 0 {
		t.Fatalf("a second round at once handled %d notes (%v), %d entries left; want none handled", n, err, listed())
	}
	if n, err := s.unindexRound(ctx, now.Add(notesRetry)); err != nil || n != 1 {
		t.Fatalf("a round once the note is due again handled %d (%v), want 1", n, err)
	}
	if n := listed(); n != 0 {
		t.Errorf("the channel is still in %d indexes", n)
	}
}

// A channel whose submission's outcome is unknown is noted for its index
// entries to be taken out, and any node's round takes them out only if its record is not in Redis:
// one whose submission was accepted after all keeps its entries. A note
// its node could not write is written by that node's next round.
func TestUnindexSparesAcceptedChannels(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{})
	ctx := context.Background()
	kept, gone, late := newTask(), newTask(), newTask()
	for _, task := range []*Task{kept, gone, late} {
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	for _, task := range []*Task{gone, late} {
		if err := c.Del(ctx, s.chKey(task.ChannelID)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	s.unindexLater(ctx, unindexed{ref: kept.logRef(), st: StatusPending}) // accepted after all
	s.unindexLater(ctx, unindexed{ref: gone.logRef(), st: StatusPending})
	s.unindexQ.add(unindexed{ref: late.logRef(), st: StatusPending}) // Redis did not answer its note
	if _, err := s.unindexRound(ctx, now); err != nil {
		t.Fatal(err)
	}
	for _, task := range []*Task{kept, gone, late} {
		due, err := c.ZScore(ctx, s.unindexKey(), unindexed{ref: task.logRef(), st: StatusPending}.member()).Result()
		if err != nil && c.Exists(ctx, s.chKey(task.ChannelID)).Val() == 0 {
			continue // due already, and taken out by the node's own round (a slow machine)
		}
		if err != nil || due < float64(now.Add(unindexGrace).UnixMilli()) {
			t.Errorf("channel %s noted due at %.0f (%v), want a grace after %d", task.ChannelID, due, err, now.UnixMilli())
		}
	}
	// Another node's round, once they are due.
	other := newService(t, c, prefix, answer(`{"ok":true}`), Options{})
	if _, err := other.unindexRound(ctx, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	listed := func(task *Task) bool {
		for _, k := range s.newKeys(task, StatusPending) {
			if c.ZScore(ctx, k, task.ChannelID).Err() == nil {
				return true
			}
		}
		return false
	}
	if !listed(kept) {
		t.Error("a channel whose record stands was taken out of the indexes")
	}
	if listed(gone) || listed(late) {
		t.Error("a channel whose record is gone is still indexed")
	}
	if n := c.ZCard(ctx, s.unindexKey()).Val(); n != 0 {
		t.Errorf("%d notes left after the round", n)
	}
}

// A submission cut short after its record and before its task was queued
// (on a Cluster, its node died between the two round trips) runs once its
// intent's lease runs out: on a Cluster the intent goes before the
// record, in the lease set, and the enqueue takes it away.
func TestSubmissionCutShortAfterItsRecordRuns(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	lease := 300 * time.Millisecond
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{Lease: lease})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	if n := c.ZCard(ctx, s.q.of(task.ChannelID).lease).Val(); n != 0 {
		t.Errorf("%d leases after a submission was queued, want its intent taken away", n)
	}
	if rdb.IsCluster(c) {
		// A submission whose record is refused (withdrawn) leaves its
		// intent: written before the record. It runs out harmlessly.
		refused := newTask()
		c.Set(ctx, s.wKey(refused.ChannelID), 1, time.Minute)
		if err := s.Submit(ctx, refused); !errors.Is(err, ErrWithdrawn) {
			t.Fatalf("a withdrawn submission: %v", err)
		}
		if c.ZScore(ctx, s.q.of(refused.ChannelID).lease, leaseMember(refused.ProjectID, refused.ChannelID)).Err() != nil {
			t.Error("no intent before the record")
		}
	}
	cut := newTask()
	now := time.Now()
	args, err := s.recordArgs(cut, StatusPending, now, s.requestEntry(cut, now))
	if err != nil {
		t.Fatal(err)
	}
	q := s.q.of(cut.ChannelID)
	c.ZAdd(ctx, q.lease, redis.Z{Score: float64(now.Add(lease).UnixMilli()), Member: leaseMember(cut.ProjectID, cut.ChannelID)})
	if err := recordScript.Run(ctx, c, []string{s.chKey(cut.ChannelID), s.wKey(cut.ChannelID)}, args...).Err(); err != nil {
		t.Fatal(err)
	}
	s.Start()
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	waitStatus(t, s, cut.ChannelID, StatusSuccess)
	until(t, "no lease left", func() bool { return c.ZCard(ctx, q.lease).Val() == 0 })
}

// A sync run whose record round trip failed takes its record back: one
// that landed goes with its lease, and one Redis runs later writes
// nothing (the channel is marked withdrawn).
func TestSyncRunTakenBack(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	task := newTask()
	now := time.Now()
	args, err := s.recordArgs(task, StatusGenerating, now, s.requestEntry(task, now))
	if err != nil {
		t.Fatal(err)
	}
	l := lease{s.q.parts.Of(task.ChannelID), leaseMember(task.ProjectID, task.ChannelID)}
	record := func() int {
		n, err := recordScript.Run(ctx, c, []string{s.chKey(task.ChannelID), s.wKey(task.ChannelID)}, args...).Int()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	c.ZAdd(ctx, s.q.keys[l.part].lease, redis.Z{Score: float64(now.Add(time.Minute).UnixMilli()), Member: l.member})
	record() // landed, its answer lost
	s.takeBackSync(ctx, task, l)
	if c.Exists(ctx, s.chKey(task.ChannelID)).Val() != 0 || c.ZCard(ctx, s.q.keys[l.part].lease).Val() != 0 {
		t.Error("the record or its lease stands")
	}
	if n := record(); n != 0 || c.Exists(ctx, s.chKey(task.ChannelID)).Val() != 0 {
		t.Errorf("a record Redis ran after the take-back: %d, written", n)
	}
}

// A Cluster submission's enqueue that comes after its intent ran out (the
// task requeued by then, maybe claimed and running), or that is sent
// again after its answer was lost, pushes nothing and leaves the lease
// as it is.
func TestLateEnqueueLeavesTheTaskAlone(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	task := newTask()
	q := s.q.of(task.ChannelID)
	member := leaseMember(task.ProjectID, task.ChannelID)
	intent := time.Now().Add(time.Minute).UnixMilli()
	enqueue := func() []int64 {
		t.Helper()
		out, err := enqueueScript.Run(ctx, c, []string{q.queue(task.ProjectID), q.ring, q.count, q.legacy, q.count, q.lease},
			task.ChannelID, task.ProjectID, 1000, 1000, 0, 0, 0, s.q.legacyArg(), member, intent).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	queued := func() int64 { return c.LLen(ctx, q.queue(task.ProjectID)).Val() }
	c.ZAdd(ctx, q.lease, redis.Z{Score: float64(intent), Member: member})
	if out := enqueue(); out[0] != 1 || queued() != 1 || c.ZScore(ctx, q.lease, member).Err() == nil {
		t.Fatalf("the enqueue: %v, %d queued; want it queued and its intent gone", out, queued())
	}
	if out := enqueue(); out[0] != 0 || queued() != 1 { // sent again
		t.Errorf("the enqueue sent again: %v, %d queued", out, queued())
	}
	claimed := float64(time.Now().Add(2 * time.Minute).UnixMilli())
	c.ZAdd(ctx, q.lease, redis.Z{Score: claimed, Member: member}) // requeued and claimed meanwhile
	c.LPop(ctx, q.queue(task.ProjectID))
	if out := enqueue(); out[0] != 0 || queued() != 0 {
		t.Errorf("the late enqueue: %v, %d queued", out, queued())
	}
	if at, err := c.ZScore(ctx, q.lease, member).Result(); err != nil || at != claimed {
		t.Errorf("the claim's lease: %v, %v", at, err)
	}
}

// A submission on a node that claims tasks, with a worker free and no other
// task ready, is taken at once (submit.lua's take): leased to this node and
// started in the submission's own round trip, never queued. One made with
// no worker free, or while another task is ready, is queued: a take
// overtakes no task.
func TestSubmissionTakenAtOnce(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	if rdb.IsCluster(c) {
		t.Skip("no take on a Cluster")
	}
	release := make(chan struct{})
	ok := answer(`{"ok":true}`)
	block := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return ai.Result{}, ctx.Err()
		}
		return ok(ctx, req)
	})
	s := newService(t, c, prefix, block, Options{Workers: 1})
	s.reclaim() // as Start: the legacy lists are seen empty
	s.drained.Store(true)
	s.taking.Store(true) // claiming, without the claim loop: what runs, the take started
	ctx := context.Background()
	q := s.q.keys[0]
	queued := func(want ...*Task) {
		t.Helper()
		ids, _ := s.rdb.LRange(ctx, q.queue("p1"), 0, -1).Result()
		n, _ := s.rdb.Get(ctx, q.count).Int()
		if len(ids) != len(want) || n != len(want) {
			t.Fatalf("queue %v (ready counter %d), want %d tasks", ids, n, len(want))
		}
		for i, w := range want {
			if ids[i] != w.ChannelID {
				t.Fatalf("queue %v: %d is not %s", ids, i, w.ChannelID)
			}
			if v, err := s.Get(ctx, "p1", w.ChannelID); err != nil || v.Status != StatusPending {
				t.Fatalf("queued %s: %q %v, want pending", w.ChannelID, v.Status, err)
			}
		}
	}
	first := newTask()
	if err := s.Submit(ctx, first); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "p1", first.ChannelID); err != nil || v.Status != StatusGenerating {
		t.Fatalf("taken task: %q %v, want generating when its submission returns", v.Status, err)
	}
	if _, err := s.rdb.ZScore(ctx, q.lease, leaseMember("p1", first.ChannelID)).Result(); err != nil {
		t.Fatalf("taken task not leased: %v", err)
	}
	queued()

	second := newTask() // the one worker runs first
	if err := s.Submit(ctx, second); err != nil {
		t.Fatal(err)
	}
	queued(second)

	close(release)
	waitStatus(t, s, first.ChannelID, StatusSuccess)
	for deadline := time.Now().Add(5 * time.Second); len(s.slots) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the worker slot never came back")
		}
	}
	third := newTask() // a worker is free, but second is ready
	if err := s.Submit(ctx, third); err != nil {
		t.Fatal(err)
	}
	queued(second, third)
	if len(s.slots) != 1 {
		t.Errorf("%d free slots after a submission not taken, want 1", len(s.slots))
	}

	s.Start() // the claim loop runs the queued ones
	waitStatus(t, s, second.ChannelID, StatusSuccess)
	waitStatus(t, s, third.ChannelID, StatusSuccess)
}

// submitHook does to the next round trip that carries a submission what a
// network can: runs it twice (the client sent it again after losing its
// answer) or runs it and loses the answer.
type submitHook struct {
	twice, lose, drop atomic.Bool
	down              atomic.Bool // every command but pipelines fails, unsent
}

var errAnswerLost = errors.New("answer lost")

func (h *submitHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *submitHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.down.Load() {
			cmd.SetErr(errAnswerLost)
			return errAnswerLost
		}
		return next(ctx, cmd)
	}
}
func (h *submitHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		submits := slices.ContainsFunc(cmds, func(c redis.Cmder) bool {
			return slices.Contains(c.Args(), any(submitScript.Hash()))
		})
		if submits && h.drop.CompareAndSwap(true, false) { // lost on its way
			for _, c := range cmds {
				c.SetErr(errAnswerLost)
			}
			return errAnswerLost
		}
		err := next(ctx, cmds)
		switch {
		case !submits:
		case h.twice.CompareAndSwap(true, false):
			return next(ctx, cmds)
		case h.lose.CompareAndSwap(true, false):
			for _, c := range cmds {
				c.SetErr(errAnswerLost)
			}
			return errAnswerLost
		}
		return err
	}
}

// A submission that took its task (submit.lua's take) and was sent again
// after its answer was lost runs it at once, once; one whose answer was
// lost is taken back (ErrWithdrawn), its task never run, its slot free;
// one that cannot be taken back either is settled once Redis answers
// (settleTake) and runs.
func TestTakenSubmissionSentAgainOrLost(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	if rdb.IsCluster(c) {
		t.Skip("no take on a Cluster")
	}
	h := &submitHook{}
	c.AddHook(h)
	var runs atomic.Int32
	ok := answer(`{"ok":true}`)
	s := newService(t, c, prefix, runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		runs.Add(1)
		return ok(ctx, req)
	}), Options{Workers: 4})
	s.reclaim()
	s.drained.Store(true)
	s.taking.Store(true)
	ctx := context.Background()

	again := newTask()
	h.twice.Store(true)
	if err := s.Submit(ctx, again); err != nil {
		t.Fatalf("a take sent again: %v", err)
	}
	waitStatus(t, s, again.ChannelID, StatusSuccess) // within 5 s: not left to its 30 s lease
	if runs.Load() != 1 {
		t.Errorf("a take sent again: %d provider calls, want 1", runs.Load())
	}

	lost := newTask()
	h.lose.Store(true)
	if err := s.Submit(ctx, lost); !errors.Is(err, ErrWithdrawn) {
		t.Fatalf("a take whose answer was lost: %v, want ErrWithdrawn", err)
	}
	if n, _ := c.Exists(ctx, s.chKey(lost.ChannelID)).Result(); n != 0 {
		t.Error("a withdrawn take left its record")
	}
	if c.ZScore(ctx, s.q.keys[0].lease, leaseMember(lost.ProjectID, lost.ChannelID)).Err() == nil {
		t.Error("a withdrawn take left its lease")
	}
	for _, k := range s.newKeys(lost, StatusPending) {
		if c.ZScore(ctx, k, lost.ChannelID).Err() == nil {
			t.Errorf("a withdrawn take is in index %s", k)
		}
	}
	until(t, "every worker slot free", func() bool { return len(s.slots) == 4 })
	if runs.Load() != 1 {
		t.Errorf("%d provider calls, want 1: the withdrawn take ran", runs.Load())
	}

	// Its answer lost, and taking it back failing too: settled once Redis
	// answers, it runs then, not after its 30 s lease.
	// submitUnknown submits task with fault set and every single command
	// failing (so withdraw fails too) for hold past the submission: its
	// outcome must be unknown (an error, not ErrWithdrawn).
	submitUnknown := func(task *Task, fault *atomic.Bool, hold time.Duration) {
		t.Helper()
		fault.Store(true)
		h.down.Store(true)
		err := s.Submit(ctx, task)
		time.Sleep(hold)
		h.down.Store(false)
		if err == nil || errors.Is(err, ErrWithdrawn) {
			t.Fatalf("a take whose outcome is unknown: %v, want an error, not ErrWithdrawn", err)
		}
	}
	unknown := newTask()
	submitUnknown(unknown, &h.lose, 200*time.Millisecond) // Redis answers nothing a while longer
	waitStatus(t, s, unknown.ChannelID, StatusSuccess)
	until(t, "every worker slot free", func() bool { return len(s.slots) == 4 })
	if runs.Load() != 2 {
		t.Errorf("%d provider calls, want 2", runs.Load())
	}

	// Lost on its way, and not taken back: once Redis answers, the channel
	// is marked withdrawn, so the submission, run late, writes nothing.
	late := newTask()
	submitUnknown(late, &h.drop, 0)
	until(t, "every worker slot free", func() bool { return len(s.slots) == 4 })
	if err := s.Submit(ctx, late); !errors.Is(err, ErrWithdrawn) { // the late run
		t.Fatalf("a submission run after its take was settled: %v, want ErrWithdrawn", err)
	}
	if n, _ := c.Exists(ctx, s.chKey(late.ChannelID)).Result(); n != 0 || runs.Load() != 2 {
		t.Errorf("a settled take lost on its way: record %d, provider calls %d; want none and 2", n, runs.Load())
	}
}

// settletake.lua may run twice (its answer lost): the second run finds the
// lease it renewed and answers the start again; a lease not the take's is
// left alone; with no record, the channel is marked withdrawn.
func TestSettleTakeRunsTwice(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	if rdb.IsCluster(c) {
		t.Skip("no take on a Cluster")
	}
	release := make(chan struct{})
	defer close(release)
	s := newService(t, c, prefix, runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		<-release
		return ai.Result{}, errors.New("stopped")
	}), Options{})
	s.reclaim()
	s.drained.Store(true)
	s.taking.Store(true)
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	q, member := s.q.of(task.ChannelID), leaseMember(task.ProjectID, task.ChannelID)
	until, err := c.ZScore(ctx, q.lease, member).Result()
	if err != nil {
		t.Fatalf("not taken: %v", err)
	}
	now := time.Now()
	renewed := int64(until) + time.Hour.Milliseconds()
	settle := func(cid string, took, renew int64) []string {
		t.Helper()
		stamp, entry, _ := s.startEntries(now)
		out, err := settleTakeScript.Run(ctx, c, []string{s.chKey(cid), s.wKey(cid), q.lease}, leaseMember(task.ProjectID, cid),
			took, now.UnixMilli(), renew, stamp, entry, 60).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for i := range 2 {
		if out := settle(task.ChannelID, int64(until), renewed); len(out) == 0 || out[0] != "run" {
			t.Fatalf("call %d: %v, want the start", i+1, out)
		}
		if got := c.ZScore(ctx, q.lease, member).Val(); got != float64(renewed) {
			t.Fatalf("call %d: lease %v, want renewed to %d", i+1, got, renewed)
		}
	}
	if out := settle(task.ChannelID, int64(until)-1, renewed+1); len(out) != 0 {
		t.Errorf("a lease not the take's: %v, want it left alone", out)
	}
	gone := NewChannelID()
	if out := settle(gone, int64(until), renewed); len(out) != 0 || c.Exists(ctx, s.wKey(gone)).Val() != 1 {
		t.Errorf("no record: %v, mark %d; want nothing and the channel marked withdrawn", out, c.Exists(ctx, s.wKey(gone)).Val())
	}
}
