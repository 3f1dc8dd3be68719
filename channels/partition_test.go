package channels

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// waitEmpty waits until no partition has a task waiting or leased.
func waitEmpty(t *testing.T, s *Service) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, q := range s.q.keys {
			if n, _ := s.rdb.ZCard(ctx, q.lease).Result(); n > 0 {
				left = append(left, q.lease)
			}
			if n, _ := s.rdb.LLen(ctx, q.ring).Result(); n > 0 {
				left = append(left, q.ring)
			}
			if n, _ := s.rdb.Get(ctx, q.count).Int(); n != 0 {
				left = append(left, q.count+"≠0")
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %s", strings.Join(left, ", "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With four partitions, tasks of every partition are claimed, by two
// nodes, and each partition's queue, ring, counter and leases end empty.
func TestPartitionedQueueRunsEveryPartition(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	a := newService(t, c, prefix, answer(`{"ok":true}`), Options{Partitions: 4})
	b := newService(t, c, prefix, answer(`{"ok":true}`), Options{Partitions: 4})
	perPart := make([]int, 4)
	var ids []string
	for range 200 {
		task := newTask()
		if err := a.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		perPart[a.q.parts.Of(task.ChannelID)]++
		ids = append(ids, task.ChannelID)
	}
	for k, n := range perPart {
		if n == 0 {
			t.Fatalf("no task went to partition %d: %v", k, perPart)
		}
	}
	if n, _ := a.QueueDepth(ctx); n != 200 {
		t.Errorf("queue depth %d, want 200 (all partitions)", n)
	}
	if n, _ := a.ProjectQueueDepth(ctx, "p1"); n != 200 {
		t.Errorf("project queue depth %d, want 200", n)
	}
	a.Start()
	b.Start()
	for _, id := range ids {
		waitStatus(t, a, id, StatusSuccess)
	}
	waitEmpty(t, a)
}

// A task an earlier version queued (partition 0, the only one it knew)
// whose channel belongs to another partition is claimed from partition 0
// and its lease released there.
func TestPartitionZeroKeepsEarlierTasks(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	old := newService(t, c, prefix, answer(`{}`), Options{})
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{Partitions: 4, Lease: time.Second})
	// One leased by an old node that died: reclaimed in partition 0.
	dead := newTask()
	for s.q.parts.Of(dead.ChannelID) == 0 {
		dead = newTask()
	}
	if err := old.Submit(ctx, dead); err != nil {
		t.Fatal(err)
	}
	if _, got, _, err := old.claim(10); err != nil || len(got) != 1 {
		t.Fatalf("old node claimed %v, %v", got, err)
	}
	c.ZAdd(ctx, old.q.keys[0].lease, redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "p1/" + dead.ChannelID})
	// Five queued by an old node.
	var ids []string
	for len(ids) < 5 {
		task := newTask()
		if s.q.parts.Of(task.ChannelID) == 0 {
			continue
		}
		if err := old.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ChannelID)
	}
	s.Start()
	for _, id := range append(ids, dead.ChannelID) {
		waitStatus(t, s, id, StatusSuccess)
	}
	waitEmpty(t, s)
}

// Callback deadlines of channels in every partition fire, and one left in
// partition 0's set by an earlier version fires too.
func TestPartitionedDeadlinesFire(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	rec := &recorder{}
	h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
	s := newService(t, c, prefix, answer(`{"a":1}`), Options{Partitions: 4, Publisher: h, Dispatcher: rec, CallbackTimeout: 2 * time.Second})
	seen := make(map[int]bool)
	var ids []string
	for len(seen) < 4 || len(ids) < 12 {
		task := eventTask()
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		seen[s.q.parts.Of(task.ChannelID)] = true
		ids = append(ids, task.ChannelID)
	}
	// The last one's entry moves to partition 0, as an earlier version
	// would have written it.
	last := ids[len(ids)-1]
	for s.q.parts.Of(last) == 0 {
		task := eventTask()
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		last = task.ChannelID
		ids = append(ids, last)
	}
	s.Start()
	waitStatus(t, s, last, StatusAIGenerated)
	k := s.q.parts.Of(last)
	// The deadline is set just after the status (awaitCallback).
	var score float64
	for deadline := time.Now().Add(5 * time.Second); ; {
		var err error
		if score, err = c.ZScore(ctx, s.dueKeys[k], last).Result(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deadline of %s not in partition %d's set: %v", last, k, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.ZAdd(ctx, s.dueKeys[0], redis.Z{Score: score, Member: last})
	c.ZRem(ctx, s.dueKeys[k], last)
	for _, id := range ids {
		v := waitStatus(t, s, id, StatusError)
		if !strings.Contains(string(v.Message), `"code":"callback_timeout"`) {
			t.Errorf("%s: %s", id, v.Message)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for k := 0; k < 4; k++ {
		for n, _ := c.ZCard(ctx, s.dueKeys[k]).Result(); n != 0; n, _ = c.ZCard(ctx, s.dueKeys[k]).Result() {
			if time.Now().After(deadline) {
				t.Fatalf("deadline set %d keeps %d entries", k, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// With partitions the rate is checked before anything is written: a
// submission refused for its rate leaves no record behind (on a Cluster
// the record is written in a round trip of its own, before the queue).
func TestPartitionedRateRefusalLeavesNothing(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	s := newService(t, c, prefix, answer(`{}`), Options{Partitions: 4, ProjectRate: 1})
	var refused *Task
	for range 10 {
		task := newTask()
		err := s.Submit(ctx, task)
		if IsRateLimited(err) {
			refused = task
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if refused == nil {
		t.Fatal("10 submissions at 1 task/s (burst 2): none refused")
	}
	if n, _ := c.Exists(ctx, s.chKey(refused.ChannelID), s.tlKey(refused.ChannelID)).Result(); n != 0 {
		t.Errorf("a refused submission left %d keys of its channel", n)
	}
	if _, err := s.Get(ctx, "p1", refused.ChannelID); err == nil {
		t.Error("a refused submission's channel can be read")
	}
}
