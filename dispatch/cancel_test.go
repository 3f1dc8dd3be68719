package dispatch

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// Cancel stops a waiting delivery at once; a delivery whose attempt is
// under way ends with that attempt, as cancelled: not retried, not
// dead-lettered, and the timeline says so rather than "dead_lettered".
func TestCancelWaitingAndInFlight(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	release := make(chan struct{})
	rc := newRelReceiver(t, func(rc *relReceiver, n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-rc.quit:
			}
		}
		w.WriteHeader(500)
	})
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_fail", rc.URL+"/fail"), relHook("wh_slow", rc.URL+"/slow"))
	// A retry a minute after the first attempt: the failing delivery waits
	// for it; the in-flight one would be scheduled for it if it were not
	// cancelled.
	e := newRelEngine(t, c, prefix, hooks, Options{Schedule: []time.Duration{0, time.Minute}})
	ctx := context.Background()
	e.Start()
	ev := relEvent("p1", "c1")
	ev.Type = "task.ai_generated"
	if err := e.Enqueue(ctx, ev); err != nil {
		t.Fatal(err)
	}
	fail, slow := DeliveryID(ev.Type, "c1", "wh_fail"), DeliveryID(ev.Type, "c1", "wh_slow")
	relWaitStatus(t, e, "p1", fail, "retrying", 5*time.Second)
	relWaitStatus(t, e, "p1", slow, "delivering", 5*time.Second)
	if err := e.Cancel(ctx, []Cancellation{{ev, "the callback deadline passed"}}); err != nil {
		t.Fatal(err)
	}
	relWaitStatus(t, e, "p1", fail, "cancelled", time.Second)
	close(release) // the slow attempt fails now: its retry is not scheduled
	d := relWaitStatus(t, e, "p1", slow, "cancelled", 5*time.Second)
	if d.Attempts != 1 || relInDLQ(t, e, "p1", slow) {
		t.Errorf("in-flight delivery after its attempt: %+v (in DLQ: %v)", d, relInDLQ(t, e, "p1", slow))
	}
	// Cancel logs both; the record logs the in-flight one's end (its
	// follow-up pipeline, a moment after the status).
	count := func() int {
		n := 0
		for _, ty := range relLog(t, e, "c1") {
			if ty == "delivery_cancelled" {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(2 * time.Second); count() < 3 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if types := relLog(t, e, "c1"); count() != 3 || slices.Contains(types, "dead_lettered") {
		t.Errorf("timeline = %v, want three cancellations and no dead letter", types)
	}
	if rc.count() != 2 {
		t.Errorf("receiver got %d requests, want 2 (no retry after the cancel)", rc.count())
	}
}

// One Cancel takes a batch: each channel's deliveries are cancelled (here
// two endpoints for each of three channels, across projects), each on its
// own channel's log, and a cancellation with no delivery behind it (a
// project without endpoints) is no error.
func TestCancelBatch(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	rc := newRelReceiver(t, func(rc *relReceiver, n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_a", rc.URL+"/a"), relHook("wh_b", rc.URL+"/b"))
	hooks.set("p2", relHook("wh_c", rc.URL+"/c"), relHook("wh_d", rc.URL+"/d"))
	e := newRelEngine(t, c, prefix, hooks, Options{Schedule: []time.Duration{0, time.Minute}})
	ctx := context.Background()
	e.Start()
	var batch []Cancellation
	for _, pc := range [][2]string{{"p1", "c1"}, {"p1", "c2"}, {"p2", "c3"}} {
		ev := relEvent(pc[0], pc[1])
		ev.Type = "task.ai_generated"
		if err := e.Enqueue(ctx, ev); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, Cancellation{ev, "a callback was received"})
	}
	batch = append(batch, Cancellation{relEvent("p3", "c4"), "no endpoints"})
	ids := map[string][]string{"c1": {"wh_a", "wh_b"}, "c2": {"wh_a", "wh_b"}, "c3": {"wh_c", "wh_d"}}
	pids := map[string]string{"c1": "p1", "c2": "p1", "c3": "p2"}
	for cid, hs := range ids {
		for _, h := range hs {
			relWaitStatus(t, e, pids[cid], DeliveryID("task.ai_generated", cid, h), "retrying", 5*time.Second)
		}
	}
	if err := e.Cancel(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for cid, hs := range ids {
		for _, h := range hs {
			relWaitStatus(t, e, pids[cid], DeliveryID("task.ai_generated", cid, h), "cancelled", time.Second)
		}
		n := 0
		for _, ty := range relLog(t, e, cid) {
			if ty == "delivery_cancelled" {
				n++
			}
		}
		if n != 2 {
			t.Errorf("channel %s: %d cancellations logged, want 2: %v", cid, n, relLog(t, e, cid))
		}
	}
}
