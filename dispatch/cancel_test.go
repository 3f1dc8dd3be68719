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
	if err := e.Cancel(ctx, ev, "the callback deadline passed"); err != nil {
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
