package limit

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

const key = "openai:3fa9c2d1"

// fakeClock is a clock the test moves by hand; it is shared by the
// limiters of one test as the nodes of a deployment share Redis time.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	k := &fakeClock{}
	k.ns.Store(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano())
	return k
}

func (k *fakeClock) Now() time.Time      { return time.Unix(0, k.ns.Load()) }
func (k *fakeClock) Add(d time.Duration) { k.ns.Add(int64(d)) }

// nodes returns n limiters on one Redis and prefix, as n riverhub nodes.
func nodes(tb testing.TB, n int, o Options, lim Limits) ([]*Limiter, redis.UniversalClient, string) {
	tb.Helper()
	c, prefix := rdbtest.New(tb)
	o.Prefix = prefix
	ls := make([]*Limiter, n)
	for i := range ls {
		ls[i] = New(c, o)
		ls[i].Set(key, lim)
	}
	return ls, c, prefix + ":plim:{" + key + "}:"
}

func acquire(tb testing.TB, l *Limiter) *Permit {
	tb.Helper()
	p, _, err := l.Acquire(tb.Context(), key, nil)
	if err != nil {
		tb.Fatalf("Acquire: %v", err)
	}
	return p
}

// try runs the acquire script once on l's credential: granted, or the wait.
func try(tb testing.TB, l *Limiter) (*Permit, time.Duration) {
	tb.Helper()
	c := (*l.creds.Load())[key]
	p, wait, err := l.try(tb.Context(), c, c.lim.Load())
	if err != nil {
		tb.Fatalf("try: %v", err)
	}
	return p, wait
}

// acquireAsync starts an Acquire and returns its result channel; it
// returns once the waiter is queued (its waiting callback ran).
type result struct {
	p      *Permit
	waited time.Duration
	err    error
}

func acquireAsync(tb testing.TB, ctx context.Context, l *Limiter) <-chan result {
	tb.Helper()
	out := make(chan result, 1)
	queued := make(chan struct{})
	go func() {
		p, waited, err := l.Acquire(ctx, key, func() { close(queued) })
		out <- result{p, waited, err}
	}()
	select {
	case <-queued:
	case r := <-out:
		tb.Fatalf("Acquire returned without waiting: %+v", r)
	case <-time.After(2 * time.Second):
		tb.Fatal("Acquire neither waited nor returned")
	}
	return out
}

func within(tb testing.TB, ch <-chan result, d time.Duration) result {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		tb.Fatalf("Acquire still waiting after %v", d)
		return result{}
	}
}

func notYet(tb testing.TB, ch <-chan result, d time.Duration) {
	tb.Helper()
	select {
	case r := <-ch:
		tb.Fatalf("Acquire returned %+v, want it still waiting", r)
	case <-time.After(d):
	}
}

func TestConcurrencyAcrossNodes(t *testing.T) {
	ls, c, keys := nodes(t, 3, Options{}, Limits{Concurrency: 5})
	var inFlight, most, done atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			l := ls[i%len(ls)]
			p, _, err := l.Acquire(t.Context(), key, nil)
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			n := inFlight.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Duration(5+rand.IntN(16)) * time.Millisecond)
			inFlight.Add(-1)
			p.Release(0)
			done.Add(1)
		})
	}
	wg.Wait()
	flush(t, ls...)
	if got := most.Load(); got > 5 {
		t.Errorf("%d requests in flight at once, limit 5", got)
	}
	if got := done.Load(); got != 60 {
		t.Errorf("%d of 60 requests finished", got)
	}
	if n := c.ZCard(t.Context(), keys+"conc").Val(); n != 0 {
		t.Errorf("%d permits left in Redis after every Release", n)
	}
	t.Logf("at most %d in flight", most.Load())
}

// TestRPMSlidingLog drives three nodes with a random clock and checks,
// against its own log of admissions, that no window of 60s+Margin holds
// more than RPM, and that every refusal names the exact time the oldest
// counting admission leaves the window.
func TestRPMSlidingLog(t *testing.T) {
	const rpm = 10
	k := newFakeClock()
	ls, _, _ := nodes(t, 3, Options{Now: k.Now}, Limits{RPM: rpm})
	window := time.Minute + time.Second
	var admitted []time.Time
	refused := 0
	for i := range 400 {
		k.Add(time.Duration(rand.IntN(8000)) * time.Millisecond)
		now := k.Now()
		p, wait := try(t, ls[i%len(ls)])
		var counting []time.Time
		for _, at := range admitted {
			if at.After(now.Add(-window)) {
				counting = append(counting, at)
			}
		}
		if p != nil {
			if len(counting) >= rpm {
				t.Fatalf("step %d: admitted with %d admissions in the window", i, len(counting))
			}
			admitted = append(admitted, now)
			p.Release(0)
			continue
		}
		refused++
		if len(counting) < rpm {
			t.Fatalf("step %d: refused with %d admissions in the window", i, len(counting))
		}
		if want := counting[len(counting)-rpm].Add(window).Sub(now); wait != want {
			t.Fatalf("step %d: wait %v, want %v (until the oldest counting admission leaves)", i, wait, want)
		}
	}
	for i := range admitted {
		n := 0
		for _, at := range admitted[i:] {
			if at.Sub(admitted[i]) < window {
				n++
			}
		}
		if n > rpm {
			t.Fatalf("%d admissions within %v of %v", n, window, admitted[i])
		}
	}
	if len(admitted) < 100 || refused < 50 {
		t.Fatalf("%d admitted and %d refused of 400: the test exercised too little", len(admitted), refused)
	}
}

func TestRPMWaiterAdmittedWhenOldestLeaves(t *testing.T) {
	k := newFakeClock()
	ls, _, _ := nodes(t, 2, Options{Now: k.Now, Margin: 2 * time.Second}, Limits{RPM: 10})
	window := time.Minute + 2*time.Second
	for i := range 10 {
		acquire(t, ls[i%2]).Release(0)
		k.Add(time.Second)
	}
	// The first admission was 10s ago.
	if p, wait := try(t, ls[0]); p != nil || wait != window-10*time.Second {
		t.Fatalf("11th request: permit %v, wait %v; want a wait of %v", p, wait, window-10*time.Second)
	}
	ch := acquireAsync(t, t.Context(), ls[1])
	k.Add(window - 10*time.Second - time.Millisecond)
	ls[1].Set(key, Limits{RPM: 10}) // wakes the waiter to check again
	notYet(t, ch, 100*time.Millisecond)
	k.Add(time.Millisecond)
	ls[1].Set(key, Limits{RPM: 10})
	if r := within(t, ch, time.Second); r.err != nil || r.p == nil || r.waited <= 0 {
		t.Fatalf("after the oldest left: %+v, want a permit and the time waited", r)
	}
}

func TestTPM(t *testing.T) {
	k := newFakeClock()
	ls, _, _ := nodes(t, 2, Options{Now: k.Now, Poll: 5 * time.Millisecond}, Limits{TPM: 100})
	p1, p2, p3 := acquire(t, ls[0]), acquire(t, ls[1]), acquire(t, ls[0])
	k.Add(time.Second)
	first := k.Now().Unix()
	p1.Release(60)
	p1.Release(60) // no-op: counted once
	k.Add(time.Second)
	p3.Release(0)
	p2.Release(40) // the sum reaches 100
	flush(t, ls...)
	if p, wait := try(t, ls[0]); p != nil || wait != time.Unix(first+60, 0).Sub(k.Now()) {
		t.Fatalf("at 100 tokens: permit %v, wait %v; want a wait until the first bucket leaves (%v)",
			p, wait, time.Unix(first+60, 0).Sub(k.Now()))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if p, _, err := ls[1].Acquire(ctx, key, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire at 100 tokens: %v, %v; want it to wait", p, err)
	}
	k.ns.Store(time.Unix(first+60, 0).UnixNano())
	// 40 tokens left in the window: admitted again.
	p := acquire(t, ls[1])
	p.Release(59)
	flush(t, ls...)
	if p, _ := try(t, ls[0]); p == nil {
		t.Fatal("refused at 99 tokens")
	}
	k.Add(time.Second) // the 40 leave too
	if p, _ := try(t, ls[0]); p == nil {
		t.Fatal("refused at 59 tokens")
	}
}

func TestDeadHolderExpiresAfterHold(t *testing.T) {
	k := newFakeClock()
	lim := Limits{Concurrency: 1, Hold: 30 * time.Second}
	ls, _, _ := nodes(t, 2, Options{Now: k.Now, Poll: 5 * time.Millisecond}, lim)
	_ = acquire(t, ls[0]) // its node dies holding it
	if p, wait := try(t, ls[1]); p != nil || wait != 5*time.Millisecond {
		t.Fatalf("while held: permit %v, wait %v; want a poll", p, wait)
	}
	ch := acquireAsync(t, t.Context(), ls[1])
	k.Add(lim.Hold - time.Millisecond)
	notYet(t, ch, 50*time.Millisecond)
	k.Add(time.Millisecond)
	if r := within(t, ch, time.Second); r.err != nil || r.p == nil {
		t.Fatalf("after Hold: %+v, want a permit", r)
	}
}

func TestCancelTakesNothing(t *testing.T) {
	ls, c, keys := nodes(t, 1, Options{}, Limits{Concurrency: 1, RPM: 100})
	l := ls[0]
	p0 := acquire(t, l)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Millisecond)
	defer cancel()
	p, waited, err := l.Acquire(ctx, key, nil)
	if !errors.Is(err, context.DeadlineExceeded) || p != nil || waited < 50*time.Millisecond {
		t.Fatalf("Acquire past its deadline: %v, %v, %v; want the context's error after waiting until it ended", p, waited, err)
	}
	if n := l.Waiting(key); n != 0 {
		t.Errorf("%d still waiting", n)
	}
	if n := c.ZCard(t.Context(), keys+"conc").Val(); n != 1 {
		t.Errorf("%d permits held, want 1", n)
	}
	if n := c.ZCard(t.Context(), keys+"rpm").Val(); n != 1 {
		t.Errorf("%d admissions logged, want 1", n)
	}

	// A head that leaves hands its place to the next waiter.
	ctx1, cancel1 := context.WithCancel(t.Context())
	w1 := acquireAsync(t, ctx1, l)
	w2 := acquireAsync(t, t.Context(), l)
	cancel1()
	if r := within(t, w1, time.Second); !errors.Is(r.err, context.Canceled) || r.p != nil {
		t.Fatalf("cancelled head: %+v", r)
	}
	p0.Release(0)
	r := within(t, w2, time.Second)
	if r.err != nil || r.p == nil {
		t.Fatalf("next waiter: %+v, want a permit", r)
	}
	r.p.Release(0)
	if n := l.Waiting(key); n != 0 {
		t.Errorf("%d still waiting", n)
	}
}

// TestLocalFIFO checks that waiters of one node are admitted in arrival
// order, each woken by the local Release before it (Poll is far longer
// than the test, so no one gets in by polling).
func TestLocalFIFO(t *testing.T) {
	ls, _, _ := nodes(t, 1, Options{Poll: time.Minute}, Limits{Concurrency: 1})
	l := ls[0]
	p0 := acquire(t, l)
	var mu sync.Mutex
	var order []int
	var chans []<-chan result
	for i := range 8 {
		ch := make(chan result, 1)
		queued := make(chan struct{})
		go func() {
			p, waited, err := l.Acquire(t.Context(), key, func() { close(queued) })
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			p.Release(0)
			ch <- result{p, waited, err}
		}()
		select {
		case <-queued:
		case <-time.After(2 * time.Second):
			t.Fatalf("waiter %d was not made to wait", i)
		}
		for deadline := time.Now().Add(2 * time.Second); l.Waiting(key) != i+1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d waiting, want %d", l.Waiting(key), i+1)
			}
		}
		chans = append(chans, ch)
	}
	start := time.Now()
	p0.Release(0)
	for _, ch := range chans {
		if r := within(t, ch, 2*time.Second); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(order, want) {
		t.Errorf("admitted in order %v, want %v", order, want)
	}
	t.Logf("8 waiters admitted one after another in %v", time.Since(start))
}

func TestWaitingCalledOnceOnlyWhenWaiting(t *testing.T) {
	ls, _, _ := nodes(t, 2, Options{Poll: 5 * time.Millisecond}, Limits{Concurrency: 1})
	calls := 0
	p, waited, err := ls[0].Acquire(t.Context(), key, func() { calls++ })
	if err != nil || calls != 0 || waited != 0 {
		t.Fatalf("free slot: err %v, waiting called %d times, waited %v; want none", err, calls, waited)
	}
	go func() {
		time.Sleep(80 * time.Millisecond)
		p.Release(0) // on the other node: seen by polling
	}()
	var n atomic.Int64
	p2, waited, err := ls[1].Acquire(t.Context(), key, func() { n.Add(1) })
	if err != nil || p2 == nil {
		t.Fatalf("Acquire: %v", err)
	}
	if n.Load() != 1 {
		t.Errorf("waiting called %d times over several polls, want 1", n.Load())
	}
	if waited < 70*time.Millisecond {
		t.Errorf("waited %v, want about 80ms", waited)
	}
	p2.Release(0)
}

// deafRedis is a server that accepts connections and never answers: a
// command sent to it blocks. It counts the connections.
func deafRedis(tb testing.TB) (redis.UniversalClient, *atomic.Int64) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var conns atomic.Int64
	var mu sync.Mutex
	var open []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
		}
	}()
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ReadTimeout: 50 * time.Millisecond, MaxRetries: -1})
	tb.Cleanup(func() {
		_ = c.Close()
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return c, &conns
}

func TestUnlimitedNeverTouchesRedis(t *testing.T) {
	c, conns := deafRedis(t)
	l := New(c, Options{Prefix: "rh"})
	l.Set("anthropic:zero", Limits{})
	l.Set("openai:was", Limits{RPM: 10})
	l.Set("openai:was", Limits{})
	for _, k := range []string{"openai:never", "anthropic:zero", "openai:was"} {
		start := time.Now()
		p, waited, err := l.Acquire(t.Context(), k, func() { t.Errorf("%s: waiting called", k) })
		if p != nil || waited != 0 || err != nil {
			t.Errorf("%s: %v, %v, %v; want nil, 0, nil", k, p, waited, err)
		}
		if d := time.Since(start); d > 10*time.Millisecond {
			t.Errorf("%s: took %v", k, d)
		}
		p.Release(100)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		_, _, _ = l.Acquire(t.Context(), "openai:never", nil)
	}); allocs != 0 {
		t.Errorf("%v allocations per unlimited Acquire", allocs)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections to Redis", n)
	}

	// The same limiter on a limited key does use Redis, and keeps retrying
	// while it fails: no permit without Redis.
	l.Set(key, Limits{Concurrency: 3})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	waited := 0
	if p, _, err := l.Acquire(ctx, key, func() { waited++ }); !errors.Is(err, context.DeadlineExceeded) || p != nil {
		t.Fatalf("limited key, Redis not answering: %v, %v; want the context's error", p, err)
	}
	if waited != 1 || conns.Load() == 0 {
		t.Errorf("waiting called %d times, %d connections; want 1 and some", waited, conns.Load())
	}
}

func TestSetToZeroReleasesWaiters(t *testing.T) {
	ls, _, _ := nodes(t, 1, Options{Poll: time.Minute}, Limits{Concurrency: 1})
	l := ls[0]
	p0 := acquire(t, l)
	defer p0.Release(0)
	w1 := acquireAsync(t, t.Context(), l)
	w2 := acquireAsync(t, t.Context(), l)
	l.Set(key, Limits{})
	for _, w := range []<-chan result{w1, w2} {
		if r := within(t, w, time.Second); r.err != nil || r.p != nil {
			t.Fatalf("after the limit was lifted: %+v, want no permit and no error", r)
		}
	}
}

func benchLimiter(b *testing.B) (*Limiter, redis.UniversalClient) {
	c, prefix := rdbtest.New(b)
	l := New(c, Options{Prefix: prefix})
	l.Set(key, Limits{Concurrency: 1 << 20, RPM: 1 << 30, TPM: 1 << 40})
	acquire(b, l).Release(10) // loads the scripts
	return l, c
}

// BenchmarkAcquireRelease is one limited, uncontended request: the acquire
// script, then the release script with tokens (two round trips).
func BenchmarkAcquireRelease(b *testing.B) {
	l, _ := benchLimiter(b)
	b.ReportAllocs()
	for b.Loop() {
		p, _, err := l.Acquire(b.Context(), key, nil)
		if err != nil {
			b.Fatal(err)
		}
		p.Release(10)
	}
}

// BenchmarkRedisCPU reports the Redis time (INFO commandstats, EVALSHA)
// that one acquire and release cost. The real Redis is shared: EVALSHA
// calls by other clients during the run are reported, and the figure is
// the average per call times the two calls of one request.
func BenchmarkRedisCPU(b *testing.B) {
	if os.Getenv("REDIS_URL") == "" {
		b.Skip("REDIS_URL not set: the embedded Redis has no commandstats")
	}
	l, c := benchLimiter(b)
	calls0, usec0 := evalsha(b, c)
	b.ResetTimer()
	for range b.N {
		p, _, err := l.Acquire(b.Context(), key, nil)
		if err != nil {
			b.Fatal(err)
		}
		p.Release(10)
	}
	b.StopTimer()
	calls, usec := evalsha(b, c)
	calls, usec = calls-calls0, usec-usec0
	if extra := calls - 2*int64(b.N); extra != 0 {
		b.Logf("%d EVALSHA calls by other clients during the run", extra)
	}
	if calls > 0 {
		b.ReportMetric(float64(usec)/float64(calls)*2, "redis-µs/op")
	}
}

func evalsha(tb testing.TB, c redis.UniversalClient) (calls, usec int64) {
	tb.Helper()
	info, err := c.Info(tb.Context(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			name, v, _ := strings.Cut(field, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch name {
			case "calls":
				calls = n
			case "usec":
				usec = n
			}
		}
	}
	return calls, usec
}

// flush waits until the Releases made on ls are written.
func flush(tb testing.TB, ls ...*Limiter) {
	tb.Helper()
	for _, l := range ls {
		l.Flush(tb.Context())
	}
}
