package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A delivery enqueued on one node is sent by another node's claimer at
// once, not at that claimer's next look at the schedule (up to maxIdle
// later): the enqueue's nudge wakes it. The writer is not started, so the
// sender is the other node.
func TestNudgeWakesAnotherNodesClaimer(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, relStatus(http.StatusOK))
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", rc.URL))
	writer := newRelEngine(t, c, prefix, hooks, Options{})
	sender := newRelEngine(t, c, prefix, hooks, Options{})
	sender.Start()
	ctx := context.Background()
	for deadline := time.Now().Add(5 * time.Second); ; {
		subs, err := c.PubSubNumSub(ctx, sender.nudgeKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		if subs[sender.nudgeKey] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender did not subscribe to nudges")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Each enqueue lands at a random point of the sender's idle sleep:
	// found by its looks alone, the deliveries would wait maxIdle/2 on
	// average (the mean of 20 below 25 ms about once in 300 runs).
	const n = 20
	var total time.Duration
	for i := range n {
		time.Sleep(maxIdle + rand.N(maxIdle))
		t0 := time.Now()
		if err := writer.Enqueue(ctx, relEvent("p1", fmt.Sprintf("ch-%02d", i))); err != nil {
			t.Fatal(err)
		}
		rc.waitCount(t, i+1, 5*time.Second)
		total += rc.requests()[i].at.Sub(t0)
	}
	if mean := total / n; mean >= maxIdle/4 {
		t.Fatalf("deliveries enqueued on another node reached the endpoint %v after their enqueue on average; want under %v", mean, maxIdle/4)
	} else {
		t.Logf("mean %v from enqueue on one node to arrival from the other", mean)
	}
}
