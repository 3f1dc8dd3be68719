package channels

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A Redis restart while the provider works costs neither a second provider
// call nor a lease's wait: the completion write is retried until Redis
// answers again, and the task is final and its webhook enqueued moments
// after.
func TestRedisRestartKeepsTheGeneration(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t, "--appendonly", "yes", "--appendfsync", "always")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })

	var calls atomic.Int32
	running, release := make(chan struct{}), make(chan struct{})
	runner := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		if calls.Add(1) == 1 {
			close(running)
			<-release
		}
		return answer(`{"ok":true}`)(ctx, req)
	})
	rec := &recorder{}
	const lease = 20 * time.Second
	s := newService(t, c, rdbtest.Prefix(), runner, Options{Lease: lease, Dispatcher: rec, Publisher: rec})
	s.Start()
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	<-running
	srv.Kill()
	close(release)              // the provider answers while Redis is down
	time.Sleep(3 * time.Second) // longer than the client's own retries
	srv.Start()
	back := time.Now()

	waitStatus(t, s, task.ChannelID, StatusSuccess)
	for rec.enqueued() == 0 {
		if time.Since(back) > lease/2 {
			t.Fatal("no webhook enqueued half a lease after Redis came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("final and enqueued %v after Redis answered again", time.Since(back).Round(time.Millisecond))
	if n := calls.Load(); n != 1 {
		t.Errorf("the provider was called %d times; want once", n)
	}
}

// A webhook enqueue that fails for Redis is retried at once, not after the
// task's lease.
func TestFailedEnqueueIsRetried(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	d := &flakyDispatcher{failures: 3}
	var calls atomic.Int32
	runner := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		calls.Add(1)
		return answer(`{"ok":true}`)(ctx, req)
	})
	s := newService(t, c, prefix, runner, Options{Lease: time.Minute, Dispatcher: d})
	s.Start()
	task := newTask()
	if err := s.Submit(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	deadline := time.Now().Add(5 * time.Second)
	for d.done() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("webhook not enqueued 5s after 3 failures (tried %d times)", d.tries())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the provider was called %d times; want once", n)
	}
}

func (r *recorder) enqueued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// flakyDispatcher fails its first enqueues as a refused Redis connection
// would.
type flakyDispatcher struct {
	mu       sync.Mutex
	failures int
	n, ok    int
}

func (d *flakyDispatcher) Enqueue(context.Context, dispatch.Event) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if d.n <= d.failures {
		return fmt.Errorf("enqueue: %w", syscall.ECONNREFUSED)
	}
	d.ok++
	return nil
}

func (d *flakyDispatcher) Prepare(context.Context, dispatch.Event) (*dispatch.Enqueueing, error) {
	return nil, nil
}

func (d *flakyDispatcher) CancelIn(context.Context, redis.Pipeliner, []dispatch.Cancellation) (*dispatch.Cancelling, error) {
	return nil, nil
}

func (d *flakyDispatcher) ChannelLog(context.Context, string) ([]json.RawMessage, error) {
	return nil, nil
}

func (d *flakyDispatcher) done() int  { d.mu.Lock(); defer d.mu.Unlock(); return d.ok }
func (d *flakyDispatcher) tries() int { d.mu.Lock(); defer d.mu.Unlock(); return d.n }

// A claim sent again with its token (its answer was lost when Redis
// stopped) returns the tasks it took, and takes no others.
func TestClaimSentAgainReturnsWhatItTook(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	submit := func(n int) {
		for range n {
			if err := s.Submit(context.Background(), newTask()); err != nil {
				t.Fatal(err)
			}
		}
	}
	keys := func(token string) []string {
		return []string{s.q.keys[0].ring, s.q.keys[0].lease, s.q.keys[0].count, s.q.keys[0].legacy, s.q.keys[0].qPrefix, s.q.keys[0].claimPrefix + token}
	}
	run := func(token string) []string {
		t.Helper()
		ids, err := claimScript.Run(t.Context(), c, keys(token), 10, time.Now().Add(time.Minute).UnixMilli(), legacyEntry, 60000).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	submit(3)
	first := run("lost-answer")
	submit(2)
	again := run("lost-answer")
	if fmt.Sprint(again) != fmt.Sprint(first) || len(first) != 3 {
		t.Fatalf("the claim sent again returned %v; want the 3 it took (%v)", again, first)
	}
	if rest := run("next"); len(rest) != 2 {
		t.Fatalf("a new claim took %v; want the 2 later tasks", rest)
	}

	// On one Redis a claim starts what it takes (claimstart.lua): the same
	// claim sent again reports those tasks as started, once, without
	// counting a second run or writing a second timeline entry.
	if rdb.IsCluster(c) {
		return
	}
	submit(2)
	claimStart := func() ([]string, []started) {
		t.Helper()
		now := time.Now()
		stamp, start, restart := s.startEntries(now)
		out, err := claimStartScript.Run(t.Context(), c, keys("lost-start"), 10, now.Add(time.Minute).UnixMilli(), legacyEntry, 60000,
			s.o.Prefix+":ch:{", stamp, start, restart).Slice()
		if err != nil {
			t.Fatal(err)
		}
		ids, starts, err := decodeClaimStart(out)
		if err != nil {
			t.Fatal(err)
		}
		return ids, starts
	}
	ids, starts := claimStart()
	ids2, starts2 := claimStart()
	if len(ids) != 2 || fmt.Sprint(ids2) != fmt.Sprint(ids) {
		t.Fatalf("claimed %v, then %v again; want the same 2", ids, ids2)
	}
	for i, st := range append(starts, starts2...) {
		r, err := st.reply()
		if err != nil || r.verdict != "run" || r.runs != 1 {
			t.Errorf("start %d: %+v, %v; want run 1", i, r, err)
		}
	}
	for _, m := range ids {
		_, cid := splitMember(m)
		if tl, err := s.timeline(t.Context(), cid); err != nil || len(tl) != 2 {
			t.Errorf("timeline of %s has %d entries (%v), want 2 (request, generating)", cid, len(tl), err)
		}
	}
}
