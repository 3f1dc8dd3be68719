package channels

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

func projectTask(pid, content string) *Task {
	t := newTask()
	t.ProjectID = pid
	t.Messages = []ai.Message{{Role: "user", Content: content}}
	return t
}

// fill queues n recorded tasks of project pid through the record and
// enqueue scripts, a thousand per round trip (Submit's commands, batched).
func fill(tb testing.TB, s *Service, pid string, n int) {
	tb.Helper()
	ctx := context.Background()
	for done := 0; done < n; {
		chunk := min(1000, n-done)
		var cmds []*redis.Cmd
		err := s.pipelined(ctx, func(p redis.Pipeliner) {
			for range chunk {
				t := projectTask(pid, pid)
				args, err := s.recordArgs(t, StatusPending, time.Now(), s.requestEntry(t, time.Now()))
				if err != nil {
					tb.Fatal(err)
				}
				recordScript.Eval(ctx, p, []string{s.chKey(t.ChannelID), s.wKey(t.ChannelID)}, args...)
				q := s.q.of(t.ChannelID)
				intent, until := leaseMember(pid, t.ChannelID), time.Now().Add(time.Hour).UnixMilli()
				p.ZAdd(ctx, q.lease, redis.Z{Score: float64(until), Member: intent})
				cmds = append(cmds, enqueueScript.Eval(ctx, p,
					[]string{q.queue(pid), q.ring, q.count, q.legacy, s.q.rate(pid), q.lease},
					t.ChannelID, pid, s.o.MaxQueue, s.o.ProjectMaxQueue, 0, 0, 0, s.q.legacyArg(), intent, until))
			}
		})
		if err != nil {
			tb.Fatal(err)
		}
		for _, c := range cmds {
			if _, err := s.enqueued(c, pid, 0, time.Time{}); err != nil {
				tb.Fatal(err)
			}
		}
		done += chunk
	}
}

// A project's backlog does not hold another project's tasks back: with
// 50,000 of A's tasks queued, each of B's tasks starts after at most
// (projects × claim batch) = 128 other starts from its submission, where
// one queue for all would have run A's whole backlog first.
func TestFairQueueBacklogDoesNotDelayOtherProject(t *testing.T) {
	if testing.Short() {
		t.Skip("50,000 tasks")
	}
	t.Parallel()
	c, prefix := rdbtest.New(t)
	const backlog, bTasks, bound = 50_000, 20, 2 * claimBatch
	var starts atomic.Int64 // tasks started (the runner was called), all projects
	var mu sync.Mutex
	startedAt := map[string]int64{}
	runner := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		n := starts.Add(1)
		if content := req.Messages[0].Content; strings.HasPrefix(content, "B") {
			mu.Lock()
			startedAt[content] = n
			mu.Unlock()
		}
		time.Sleep(2 * time.Millisecond) // a slow provider: A's backlog lasts
		return ai.Result{Data: []byte(`{}`), Provider: "mock", Model: "m"}, nil
	})
	s := newService(t, c, prefix, runner, Options{Workers: 32, MaxQueue: 1 << 20, ProjectMaxQueue: 1 << 20})
	fill(t, s, "A", backlog)
	s.Start()
	for starts.Load() < 1000 { // the workers are busy with A
		time.Sleep(time.Millisecond)
	}
	ctx := context.Background()
	submittedAt := map[string]int64{}
	var ids []string
	for i := range bTasks {
		content := "B" + strconv.Itoa(i)
		task := projectTask("B", content)
		submittedAt[content] = starts.Load()
		if err := s.Submit(ctx, task); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ChannelID)
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(startedAt)
		mu.Unlock()
		if n == bTasks {
			break
		}
		if time.Now().After(deadline) {
			left, _ := s.ProjectQueueDepth(ctx, "A")
			t.Fatalf("%d of B's %d tasks started in 30 s (A has %d left)", n, bTasks, left)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var waits []int64
	mu.Lock()
	for content, at := range startedAt {
		w := at - submittedAt[content]
		waits = append(waits, w)
		if w > bound {
			t.Errorf("task %s started after %d other starts, want at most %d", content, w, bound)
		}
	}
	mu.Unlock()
	slices.Sort(waits)
	left, _ := s.ProjectQueueDepth(ctx, "A")
	t.Logf("starts between B's submission and its start: %v; A still has %d queued", waits, left)
	if left < backlog/2 {
		t.Errorf("A has %d of %d left: the test did not run against a backlog", left, backlog)
	}
}

// The claim script alternates projects, one task each per turn, and takes
// a lone project's tasks in a batch.
func TestClaimIsRoundRobin(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	fill(t, s, "A", 5)
	fill(t, s, "B", 2)
	fill(t, s, "C", 1)
	_, got, _, err := s.claim(100)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range got {
		pid, _ := splitMember(m)
		order = append(order, pid)
	}
	if want := "A B C A B A A A"; strings.Join(order, " ") != want {
		t.Errorf("claim order %v, want %s", order, want)
	}
	ctx := context.Background()
	if n, _ := s.QueueDepth(ctx); n != 0 {
		t.Errorf("queue depth %d after claiming everything", n)
	}
	if n, _ := c.LLen(ctx, s.q.keys[0].ring).Result(); n != 0 {
		t.Errorf("ring has %d entries with nothing queued", n)
	}
	if n, _ := c.ZCard(ctx, s.q.keys[0].lease).Result(); n != int64(len(got)) {
		t.Errorf("%d leases for %d claims", n, len(got))
	}
}

// A project at its queue limit is refused (and leaves nothing behind);
// another project still submits.
func TestProjectQueueLimit(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{ProjectMaxQueue: 3})
	ctx := context.Background()
	for range 3 {
		if err := s.Submit(ctx, projectTask("A", "a")); err != nil {
			t.Fatal(err)
		}
	}
	refused := projectTask("A", "a")
	err := s.Submit(ctx, refused)
	if !errors.Is(err, ErrProjectQueueFull) || apperr.As(err).Code != "queue_full" {
		t.Fatalf("fourth submit of A: %v, want queue_full", err)
	}
	if n, _ := c.Exists(ctx, s.chKey(refused.ChannelID), s.wKey(refused.ChannelID)).Result(); n != 0 {
		t.Errorf("refused task left %d keys", n)
	}
	if err := s.Submit(ctx, projectTask("B", "b")); err != nil {
		t.Errorf("B refused while A is full: %v", err)
	}
	if n, _ := s.ProjectQueueDepth(ctx, "A"); n != 3 {
		t.Errorf("A has %d queued, want 3", n)
	}
	if n, _ := s.QueueDepth(ctx); n != 4 {
		t.Errorf("queue depth %d, want 4", n)
	}
}

// The rate is per project and deployment-wide: two nodes share one
// budget (a burst of twice the rate), then refuse with rate_limited and a
// Retry-After; another project, and synchronous runs, are limited apart.
func TestProjectRateIsSharedByNodes(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	const rate = 2 // burst 4
	o := Options{ProjectRate: rate}
	nodes := []*Service{newService(t, c, prefix, answer(`{}`), o), newService(t, c, prefix, answer(`{}`), o)}
	ctx := context.Background()
	start := time.Now()
	accepted := 0
	var refusal error
	var refused *Task
	for i := range 20 {
		task := projectTask("A", "a")
		if err := nodes[i%2].Submit(ctx, task); err != nil {
			refusal, refused = err, task
			break
		}
		accepted++
	}
	// The budget refills at 2/s while the loop runs.
	if most := 2*rate + int(time.Since(start).Seconds()*rate); accepted < 2*rate || accepted > most {
		t.Errorf("accepted %d before a refusal, want %d..%d", accepted, 2*rate, most)
	}
	e := apperr.As(refusal)
	if e == nil || e.Code != "rate_limited" || e.Kind != apperr.RateLimited || e.RetryAfter < 1 || !IsRateLimited(refusal) {
		t.Fatalf("refusal = %#v, want rate_limited with a Retry-After", refusal)
	}
	if n, _ := c.Exists(ctx, s0(nodes).chKey(refused.ChannelID)).Result(); n != 0 {
		t.Errorf("rate-limited task left its record")
	}
	if n, _ := s0(nodes).ProjectQueueDepth(ctx, "A"); n != int64(accepted) {
		t.Errorf("A has %d queued, want %d", n, accepted)
	}
	for i := range 2 * rate {
		if err := nodes[i%2].Submit(ctx, projectTask("B", "b")); err != nil {
			t.Errorf("B's submission %d: %v", i, err)
		}
	}
	if _, err := nodes[1].RunSync(ctx, projectTask("A", "a")); !IsRateLimited(err) {
		t.Errorf("sync run of A over its rate: %v, want rate_limited", err)
	}
	if _, err := nodes[1].RunSync(ctx, projectTask("C", "c")); err != nil {
		t.Errorf("sync run of C: %v", err)
	}
}

func s0(nodes []*Service) *Service { return nodes[0] }

// Reclaim and release put a task back at the head of its own project's
// queue, and its project on the ring.
func TestRequeueGoesToHeadOfOwnProject(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{})
	ctx := context.Background()
	fill(t, s, "A", 2)
	fill(t, s, "B", 1)
	qa, _ := c.LRange(ctx, s.q.keys[0].queue("A"), 0, -1).Result()
	qb, _ := c.LRange(ctx, s.q.keys[0].queue("B"), 0, -1).Result()
	past := float64(time.Now().Add(-time.Second).UnixMilli())
	future := float64(time.Now().Add(time.Hour).UnixMilli())
	// Leased by a dead node: one of A, one of B, one of project C (whose
	// queue is empty, so not on the ring), one still running elsewhere.
	c.ZAdd(ctx, s.q.keys[0].lease, redis.Z{Score: past, Member: "A/xa"}, redis.Z{Score: past, Member: "B/xb"},
		redis.Z{Score: past, Member: "C/xc"}, redis.Z{Score: future, Member: "A/alive"})
	s.reclaim()
	check := func(pid string, want []string) {
		t.Helper()
		if got, _ := c.LRange(ctx, s.q.keys[0].queue(pid), 0, -1).Result(); !slices.Equal(got, want) {
			t.Errorf("queue of %s = %v, want %v", pid, got, want)
		}
	}
	check("A", append([]string{"xa"}, qa...))
	check("B", append([]string{"xb"}, qb...))
	check("C", []string{"xc"})
	ring, _ := c.LRange(ctx, s.q.keys[0].ring, 0, -1).Result()
	if slices.Sort(ring); !slices.Equal(ring, []string{"A", "B", "C"}) {
		t.Errorf("ring = %v, want A, B and C once each", ring)
	}
	if n, _ := s.QueueDepth(ctx); n != 6 {
		t.Errorf("queue depth %d, want 6", n)
	}
	if _, err := c.ZScore(ctx, s.q.keys[0].lease, "A/alive").Result(); err != nil {
		t.Errorf("a live lease was reclaimed: %v", err)
	}
	// Graceful shutdown's give-back, and a member already reclaimed (not
	// queued twice).
	if n, err := s.release(ctx, []lease{{0, "A/alive"}, {0, "A/xa"}}); n != 1 || err != nil {
		t.Errorf("release = %d, %v; want 1", n, err)
	}
	check("A", append([]string{"alive", "xa"}, qa...))
}

// An upgrade from the single-queue layout: tasks in the old ready list and
// a task leased by an old node (a bare channel id, expired) all complete
// on the new layout, and the legacy list leaves the ring once drained.
func TestUpgradeFromSingleQueue(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	old := newService(t, c, prefix, answer(`{}`), Options{})
	var ids []string
	record := func(t0 *Task) {
		args, err := old.recordArgs(t0, StatusPending, time.Now(), old.requestEntry(t0, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if err := recordScript.Run(ctx, c, []string{old.chKey(t0.ChannelID), old.wKey(t0.ChannelID)}, args...).Err(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, t0.ChannelID)
	}
	for range 5 { // queued by an old node: RPUSH onto the one ready list
		t0 := newTask()
		record(t0)
		c.RPush(ctx, old.q.keys[0].legacy, t0.ChannelID)
	}
	leased := newTask() // leased by an old node that died
	record(leased)
	c.ZAdd(ctx, old.q.keys[0].lease, redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: leased.ChannelID})
	fresh := newTask() // submitted on the new layout meanwhile
	if err := old.Submit(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, fresh.ChannelID)
	if n, _ := old.QueueDepth(ctx); n != 6 {
		t.Errorf("queue depth %d before the upgrade, want 6 (5 legacy + 1)", n)
	}

	// A short lease: the reclaimer (which adopts the legacy list) runs
	// every lease/4.
	s := newService(t, c, prefix, answer(`{"ok":true}`), Options{Lease: time.Second})
	s.Start()
	for _, id := range ids {
		waitStatus(t, s, id, StatusSuccess)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		leases, _ := c.ZCard(ctx, s.q.keys[0].lease).Result()
		ring, _ := c.LLen(ctx, s.q.keys[0].ring).Result()
		depth, _ := s.QueueDepth(ctx)
		if leases == 0 && ring == 0 && depth == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the upgrade: %d leases, %d ring entries, depth %d; want none", leases, ring, depth)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// An old node still running pushes onto the legacy list without the
	// ring: the reclaimer adopts it.
	late := newTask()
	record(late)
	c.RPush(ctx, s.q.keys[0].legacy, late.ChannelID)
	waitStatus(t, s, late.ChannelID, StatusSuccess)
}

// A running task's lease names its project, and heartbeats extend that
// member (not a bare id).
func TestLeaseMemberNamesProject(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	release := make(chan struct{})
	block := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return ai.Result{Data: []byte(`{}`)}, nil
	})
	s := newService(t, c, prefix, block, Options{Lease: 300 * time.Millisecond})
	s.Start()
	ctx := context.Background()
	task := newTask()
	if err := s.Submit(ctx, task); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, task.ChannelID, StatusGenerating)
	member := leaseMember(task.ProjectID, task.ChannelID)
	first, err := c.ZScore(ctx, s.q.keys[0].lease, member).Result()
	if err != nil {
		t.Fatalf("no lease %q: %v", member, err)
	}
	time.Sleep(250 * time.Millisecond) // > a heartbeat (lease/3)
	if again, _ := c.ZScore(ctx, s.q.keys[0].lease, member).Result(); again <= first {
		t.Errorf("lease not extended: %v then %v", first, again)
	}
	close(release)
	waitStatus(t, s, task.ChannelID, StatusSuccess)
	deadline := time.Now().Add(2 * time.Second)
	for n, _ := c.ZCard(ctx, s.q.keys[0].lease).Result(); n != 0; n, _ = c.ZCard(ctx, s.q.keys[0].lease).Result() {
		if time.Now().After(deadline) {
			t.Fatalf("%d leases left after completion", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
