package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// An endpoint that keeps failing opens its circuit: its deliveries wait
// without using attempts while single probes test it, each channel's
// timeline says why, and when the endpoint answers again every delivery
// goes through.
func TestCircuitOpensAndDeliveriesWaitWithoutAttempts(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	down.Store(true)
	rc := newRelReceiver(t, func(_ *relReceiver, _ int, w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	sched := []time.Duration{0, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}
	e, _, _ := relOneEndpoint(t, rc.URL, Options{Schedule: sched,
		BreakerThreshold: 3, BreakerCooldown: 300 * time.Millisecond})
	e.Start()
	ctx := context.Background()
	const n = 20
	relEnqueueN(t, e, "p1", "ch", n)
	// Without the circuit, 20 deliveries x 5 attempts 20 ms apart would
	// all be dead within a few hundred milliseconds (100 requests). With
	// it: the first attempts in flight, their retries and a probe (18) on
	// a quiet machine; on a busy one the circuit may open only after the
	// recorder has written the first failures, by when every delivery may
	// have had its first attempt (n + 8 + 2).
	time.Sleep(500 * time.Millisecond)
	while := rc.count()
	if while > n+8+2 {
		t.Errorf("the failing endpoint got %d requests in 500 ms; want at most every first attempt, the retries of those in flight and a probe (%d)", while, n+8+2)
	}
	h, err := e.Health(ctx, []string{"wh_1"})
	if err != nil {
		t.Fatal(err)
	}
	if st := h["wh_1"].State; st != "open" && st != "probing" {
		t.Errorf("health state = %q, want open or probing; %+v", st, h["wh_1"])
	}
	if h["wh_1"].FailureRate != 1 || h["wh_1"].ConsecutiveFailures < 3 || h["wh_1"].FailingSince == nil {
		t.Errorf("health = %+v, want failure rate 1, >= 3 consecutive failures, failing_since set", h["wh_1"])
	}
	down.Store(false)
	for i := range n {
		relWaitStatus(t, e, "p1", DeliveryID("task.completed", fmt.Sprintf("ch%02d", i), "wh_1"), "succeeded", 10*time.Second)
	}
	h, _ = e.Health(ctx, []string{"wh_1"})
	if h["wh_1"].State != "healthy" {
		t.Errorf("after recovery: health = %+v, want healthy", h["wh_1"])
	}
	var paused, resumed, opened, closed int
	for i := range n {
		ts := relLog(t, e, fmt.Sprintf("ch%02d", i))
		paused += count(ts, "delivery_paused")
		resumed += count(ts, "delivery_resumed")
		opened += count(ts, "endpoint_opened")
		closed += count(ts, "endpoint_closed")
	}
	if paused == 0 || resumed == 0 || opened == 0 || closed != 1 {
		t.Errorf("timelines: %d delivery_paused, %d delivery_resumed, %d endpoint_opened, %d endpoint_closed; want some of each and one close",
			paused, resumed, opened, closed)
	}
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// A 429 with Retry-After pauses the endpoint for that long: the retry and
// deliveries enqueued meanwhile wait for it.
func TestRetryAfterPausesTheEndpoint(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, func(_ *relReceiver, n int, w http.ResponseWriter, _ *http.Request) {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	e, _, _ := relOneEndpoint(t, rc.URL, Options{})
	e.Start()
	ctx := context.Background()
	if err := e.Enqueue(ctx, relEvent("p1", "ch1")); err != nil {
		t.Fatal(err)
	}
	rc.waitCount(t, 1, 5*time.Second)
	first := rc.requests()[0].at
	deadline := time.Now().Add(2 * time.Second)
	for {
		h, _ := e.Health(ctx, []string{"wh_1"})
		if h["wh_1"].State == "paused" {
			if !strings.Contains(h["wh_1"].Reason, "Retry-After") || h["wh_1"].OpenUntil == nil {
				t.Errorf("paused health = %+v, want the reason and open_until", h["wh_1"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint not paused after a 429 with Retry-After: %+v", h["wh_1"])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.Enqueue(ctx, relEvent("p1", "ch2")); err != nil {
		t.Fatal(err)
	}
	for _, cid := range []string{"ch1", "ch2"} {
		relWaitStatus(t, e, "p1", DeliveryID("task.completed", cid, "wh_1"), "succeeded", 5*time.Second)
	}
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("receiver got %d requests, want 3 (the 429, the retry, the second delivery)", len(reqs))
	}
	for i, r := range reqs[1:] {
		if wait := r.at.Sub(first); wait < 950*time.Millisecond {
			t.Errorf("request %d came %v after the 429; want at least the Retry-After (1s)", i+2, wait)
		}
	}
}

// An endpoint that fails without a success for DisableAfter is disabled,
// says why, and its deliveries are dead-lettered (replayable once it is
// enabled again).
func TestEndpointFailingTooLongIsDisabled(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, relStatus(http.StatusBadGateway))
	sched := slices.Repeat([]time.Duration{50 * time.Millisecond}, 40)
	e, hooks, _ := relOneEndpoint(t, rc.URL, Options{Schedule: sched, BreakerThreshold: 1000,
		DisableAfter: 300 * time.Millisecond})
	e.Start()
	if err := e.Enqueue(context.Background(), relEvent("p1", "ch1")); err != nil {
		t.Fatal(err)
	}
	d := relWaitStatus(t, e, "p1", DeliveryID("task.completed", "ch1", "wh_1"), "dead", 10*time.Second)
	ws, _ := hooks.ProjectWebhooks(context.Background(), "p1")
	if ws[0].Enabled || !strings.Contains(ws[0].DisabledReason, "failing without a success") {
		t.Errorf("endpoint enabled=%v reason=%q; want disabled, saying it failed too long", ws[0].Enabled, ws[0].DisabledReason)
	}
	if d.Attempts >= int64(len(sched)) || d.LastError != "endpoint disabled" {
		t.Errorf("delivery: %d attempts, last error %q; want fewer than the schedule, ended by 'endpoint disabled'", d.Attempts, d.LastError)
	}
	if ts := relLog(t, e, "ch1"); count(ts, "endpoint_disabled") != 1 {
		t.Errorf("timeline %v: want one endpoint_disabled", ts)
	}
}

// The per-endpoint limit starts small, grows with successes to the cap
// and halves with every failure.
func TestLimiterAdapts(t *testing.T) {
	l := newLimiter(64, time.Now)
	if got := l.get("a"); got != 8 {
		t.Fatalf("start = %d, want 8", got)
	}
	for range 100 {
		l.observe("a", true)
	}
	if got := l.get("a"); got != 64 {
		t.Fatalf("after successes = %d, want the cap 64", got)
	}
	for _, want := range []int{32, 16, 8, 4, 2, 1, 1} {
		l.observe("a", false)
		if got := l.get("a"); got != want {
			t.Fatalf("after a failure = %d, want %d", got, want)
		}
	}
}

// When an endpoint's circuit opens, the deliveries a node holds parked for
// it go back unattempted instead of being sent into the failure.
func TestOpeningGivesBackParkedDeliveries(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, func(rc *relReceiver, _ int, _ http.ResponseWriter, r *http.Request) { rc.hang(r) })
	e, _, _ := relOneEndpoint(t, rc.URL, Options{PerEndpoint: 4, Timeout: 400 * time.Millisecond, BreakerThreshold: 2,
		Schedule: []time.Duration{0, 20 * time.Millisecond, 20 * time.Millisecond}})
	e.Start()
	ctx := context.Background()
	relEnqueueN(t, e, "p1", "ch", 20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, _ := e.Health(ctx, []string{"wh_1"})
		if h["wh_1"].State == "open" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("circuit not open: %+v", h["wh_1"])
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	// The endpoint's limit fell to 1 with the failures: one parked
	// delivery may go while the failures are recorded, no more.
	if n := rc.count(); n > 5 {
		t.Errorf("the hanging endpoint got %d requests; want the 4 in flight when it opened and at most one parked", n)
	}
	e.mu.Lock()
	parked := len(e.waiting["wh_1"])
	e.mu.Unlock()
	if parked != 0 {
		t.Errorf("%d deliveries still parked for the open endpoint", parked)
	}
}

// Attempts are recorded by script hash; a Redis that forgot its scripts
// (restarted, failed over) answers NOSCRIPT, and the record runs again
// whole, once.
func TestRecordSurvivesAForgottenScript(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	rc := newRelReceiver(t, relStatus(http.StatusOK))
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", rc.URL))
	e := newRelEngine(t, c, "t", hooks, Options{})
	e.Start()
	ctx := context.Background()
	for i, cid := range []string{"ch1", "ch2"} {
		if i == 1 {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Enqueue(ctx, relEvent("p1", cid)); err != nil {
			t.Fatal(err)
		}
		d := relWaitStatus(t, e, "p1", DeliveryID("task.completed", cid, "wh_1"), "succeeded", 5*time.Second)
		if d.Attempts != 1 || len(d.History) != 1 {
			t.Errorf("%s: %d attempts, %d in history; want the one attempt recorded once", cid, d.Attempts, len(d.History))
		}
	}
}
