package channels

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A settled channel's record keeps what the channel API, the request logs,
// a repeated callback and a late join read, and drops what only running,
// redoing and awaiting need; the room notes the final message's seq there.
// A standard task is compacted with its lease release, an event-driven one
// with its settlement; a repeat of the callback that settled a compacted
// channel is answered as before and publishes nothing.
func TestSettledRecordsAreCompacted(t *testing.T) {
	t.Parallel()
	s, c, prefix, rec := roomService(t, Options{})
	ctx := context.Background()

	compacted := func(cid, roomSeq string) {
		t.Helper()
		until(t, cid+" compacted", func() bool { return !c.HExists(ctx, s.chKey(cid), "task").Val() })
		v, err := c.HGetAll(ctx, s.chKey(cid)).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range liveFields {
			if _, ok := v[f]; ok {
				t.Errorf("%s: field %s kept", cid, f)
			}
		}
		for _, f := range []string{"project_id", "workflow", "status", "created_at", "updated_at", "message"} {
			if v[f] == "" {
				t.Errorf("%s: field %s dropped", cid, f)
			}
		}
		if v["room_seq"] != roomSeq {
			t.Errorf("%s: room_seq %q, want %s", cid, v["room_seq"], roomSeq)
		}
		if _, err := s.Get(ctx, "p1", cid); err != nil {
			t.Errorf("%s: Get after compaction: %v", cid, err)
		}
	}

	std := newTask()
	if err := s.Submit(ctx, std); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, std.ChannelID, StatusSuccess)
	compacted(std.ChannelID, "1")

	ev := eventTask()
	if err := s.Submit(ctx, ev); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, ev.ChannelID, StatusAIGenerated)
	// Its side effects done (the webhook enqueued last), so that none of
	// them redoes the settlement after the history is gone below.
	until(t, "task.ai_generated enqueued", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.events) > 0
	})
	time.Sleep(50 * time.Millisecond)
	if n, _ := c.HExists(ctx, s.chKey(ev.ChannelID), "task").Result(); !n {
		t.Fatal("a channel awaiting its callback was compacted")
	}
	cb := success(`{"title":"Inception","id":7}`)
	if err := s.Callback(ctx, "p1", ev.ChannelID, cb); err != nil {
		t.Fatal(err)
	}
	compacted(ev.ChannelID, "2")
	if got := statuses(history(t, s, ev.ChannelID)); got != "ai_generated,completed" {
		t.Errorf("room history = %s", got)
	}
	c.Del(ctx, prefix+":ch:{"+ev.ChannelID+"}:hist") // the hot window has passed
	if err := s.Callback(ctx, "p1", ev.ChannelID, cb); err != nil {
		t.Errorf("identical repeat after compaction: %v", err)
	}
	if code := conflictCode(s.Callback(ctx, "p1", ev.ChannelID, success(`{"other":true}`))); code != "callback_already_received" {
		t.Errorf("different callback after compaction: %s", code)
	}
	time.Sleep(50 * time.Millisecond) // a settlement, if one were left to do
	if got := statuses(history(t, s, ev.ChannelID)); got != "" {
		t.Errorf("the repeats published again into the ended room: %s", got)
	}
	if got := c.HGet(ctx, s.chKey(ev.ChannelID), "room_seq").Val(); got != "2" {
		t.Errorf("room_seq after the repeats = %q, want 2", got)
	}
}

// A run that lost its lease and finishes after its channel was settled
// and compacted (its history since expired) redoes none of the side
// effects: no webhook enqueued again, nothing published again.
func TestLateRunAfterCompactionDoesNothing(t *testing.T) {
	t.Parallel()
	s, c, prefix, rec := roomService(t, Options{})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	until(t, "compacted", func() bool { return !c.HExists(ctx, s.chKey(task.ChannelID), "task").Val() })
	rec.mu.Lock()
	enqueued := len(rec.events)
	rec.mu.Unlock()
	c.Del(ctx, prefix+":ch:{"+task.ChannelID+"}:hist") // the hot window has passed

	o, err := s.conclude(ctx, task, ai.Result{Data: json.RawMessage(`{"title":"Other"}`), Provider: "mock", Model: "m"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !o.beyond {
		t.Errorf("the late run's outcome is not marked settled: %+v", o)
	}
	if err := s.finish(ctx, o); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the ack batcher
	rec.mu.Lock()
	again := len(rec.events) - enqueued
	rec.mu.Unlock()
	if again != 0 {
		t.Errorf("the late run enqueued %d webhooks again", again)
	}
	if got := statuses(history(t, s, task.ChannelID)); got != "" {
		t.Errorf("the late run published again: %s", got)
	}
}

// roomService is a started Service with a real room publisher (whose
// records note the final seq) and a recording dispatcher.
func roomService(t *testing.T, o Options) (*Service, redis.UniversalClient, string, *recorder) {
	t.Helper()
	c, prefix := rdbtest.New(t)
	o.Publisher = hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop(), Record: RecordKey(prefix)})
	rec := &recorder{}
	o.Dispatcher = rec
	s := newService(t, c, prefix, answer(`{"title":"Inception"}`), o)
	s.Start()
	return s, c, prefix, rec
}

// until polls cond for up to 5 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not %s within 5s", what)
		}
	}
}

// A standard task is queued to fold with its completion, so that a lease
// release cut short before its compaction (a node killed mid-pipeline)
// still leaves it queued; the fold then drops the live fields the
// compaction would have (all of them, an event-driven channel's too).
func TestCompletionQueuesTheFold(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"title":"Inception"}`), Options{HotWindow: time.Hour})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	// Completed, and never acked (no worker: conclude alone).
	if _, err := s.conclude(ctx, task, ai.Result{Data: json.RawMessage(`{"title":"Other"}`), Provider: "mock", Model: "m"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.ZScore(ctx, s.foldKey(task.ChannelID), task.ChannelID).Err(); err != nil {
		t.Fatalf("a completed task is not queued to fold: %v", err)
	}
	if c.HExists(ctx, s.chKey(task.ChannelID), "task").Val() != true {
		t.Fatal("the test needs the live fields there")
	}
	// Every live field, as an event-driven channel's record has them too
	// (fold.lua's own list must hold them all).
	for _, f := range liveFields {
		if err := c.HSetNX(ctx, s.chKey(task.ChannelID), f, "1").Err(); err != nil {
			t.Fatal(err)
		}
	}
	c.ZAdd(ctx, s.foldKey(task.ChannelID), redis.Z{Score: 0, Member: task.ChannelID})
	if _, err := s.foldDue(ctx, 0); err != nil {
		t.Fatal(err)
	}
	fields := c.HGetAll(ctx, s.chKey(task.ChannelID)).Val()
	for _, f := range liveFields {
		if _, ok := fields[f]; ok {
			t.Errorf("field %s kept by the fold", f)
		}
	}
	if fields["status"] != string(StatusSuccess) || c.Exists(ctx, s.zKey(task.ChannelID)).Val() != 1 {
		t.Errorf("not folded: %v", fields)
	}
}

// A standard task's answer, not streamed, is its room's only message: its
// completion writes it with its seq (1) into the record, and the room
// gets a bare publish (no history); a streamed one, or an event-driven
// one, goes through the room's publish script.
func TestLoneAnswerIsRecordedWithItsSeq(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	h := &loneCounter{Hub: hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop(), Record: RecordKey(prefix)})}
	s := newService(t, c, prefix, answer(`{"title":"Inception"}`), Options{Publisher: h, HotWindow: time.Hour})
	s.Start()
	ctx := context.Background()
	for _, stream := range []bool{false, true} {
		task := newTask()
		task.Stream = stream
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, s, task.ChannelID, StatusSuccess)
		// (room_seq: the completion's for a lone answer, the room's script's
		// for the streamed one)
		until(t, "published", func() bool {
			return h.lone.Load() == 1 && c.HGet(ctx, s.chKey(task.ChannelID), "room_seq").Val() == "1"
		})
		time.Sleep(20 * time.Millisecond) // a second bare publish would have come
		if n := h.lone.Load(); n != 1 {   // the first task's only
			t.Errorf("stream %v: %d bare publishes, want 1 (the answer not streamed)", stream, n)
		}
		if c.Exists(ctx, s.chKey(task.ChannelID)+":hist").Val() != 0 {
			t.Errorf("stream %v: a history for an answer alone in its room", stream)
		}
	}
}

type loneCounter struct {
	*hub.Hub
	lone atomic.Int64
}

func (h *loneCounter) PublishLoneIn(ctx context.Context, p redis.Pipeliner, pid, cid string, msg json.RawMessage) func() (int64, error) {
	h.lone.Add(1)
	return h.Hub.PublishLoneIn(ctx, p, pid, cid, msg)
}

// A completion whose round trip landed without its queueing to fold (cut
// short by its node's death; on a Cluster its parts run side by side)
// is queued by the redo that acks it once its lease runs out.
func TestRedoneCompletionQueuesTheFold(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{Lease: 200 * time.Millisecond, HotWindow: time.Hour})
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	// A node claims it, completes it, loses the queueing and dies.
	q := s.q.keys[0]
	ids, err := claimScript.Run(ctx, s.rdb, []string{q.ring, q.lease, q.count, q.legacy, q.qPrefix, q.claimPrefix + "dead"},
		10, time.Now().Add(100*time.Millisecond).UnixMilli(), legacyEntry, 1000).StringSlice()
	if err != nil || len(ids) != 1 {
		t.Fatalf("claim: %v %v", ids, err)
	}
	if _, err := s.conclude(ctx, task, ai.Result{Data: json.RawMessage(`{"ok":true}`), Provider: "mock", Model: "m"}, nil); err != nil {
		t.Fatal(err)
	}
	c.ZRem(ctx, s.foldKey(task.ChannelID), task.ChannelID)
	s.Start()
	until(t, "the redo compacts the record", func() bool { return !c.HExists(ctx, s.chKey(task.ChannelID), "task").Val() })
	at, err := c.ZScore(ctx, s.foldKey(task.ChannelID), task.ChannelID).Result()
	if err != nil || at < float64(time.Now().Add(time.Hour-time.Minute).UnixMilli()) {
		t.Errorf("the redo did not queue the channel to fold: %v, %v", at, err)
	}
	if n := c.ZCard(ctx, q.lease).Val(); n != 0 {
		t.Errorf("%d leases left", n)
	}
}
