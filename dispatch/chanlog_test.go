package dispatch

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/project"
)

// A channel's delivery log is the engine's own list, on the channel's
// hash tag, expiring with the retention; a test delivery keeps none.
func TestChannelLogIsTheEnginesOwn(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, relStatus(500))
	e, _, c := relOneEndpoint(t, rc.URL, Options{Schedule: []time.Duration{0, 10 * time.Millisecond}, Retention: time.Hour,
		BreakerThreshold: 1000})
	e.Start()
	ctx := context.Background()
	ev := relEvent("p1", "c1")
	if err := e.Enqueue(ctx, ev); err != nil {
		t.Fatal(err)
	}
	id := DeliveryID(ev.Type, "c1", "wh_1")
	relWaitStatus(t, e, "p1", id, "dead", 5*time.Second)
	want := "delivery_attempt,delivery_attempt,dead_lettered"
	for deadline := time.Now().Add(2 * time.Second); strings.Join(relLog(t, e, "c1"), ",") != want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Join(relLog(t, e, "c1"), ","); got != want {
		t.Fatalf("log = %s, want %s", got, want)
	}
	key := e.o.Prefix + ":dl:{c1}"
	if ttl, err := c.TTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
		t.Errorf("TTL of %s = %v (%v), want up to the retention", key, ttl, err)
	}
	if err := e.Replay(ctx, "p1", id); err != nil {
		t.Fatal(err)
	}
	if got := relLog(t, e, "c1"); len(got) < 4 || !slices.Contains(got[3:], "replayed") {
		t.Errorf("log after a replay = %v", got)
	}

	tid, err := e.SendTest(ctx, "p1", project.Webhook{ID: "wh_1", URL: rc.URL, Enabled: true, Secret: relSecret})
	if err != nil {
		t.Fatal(err)
	}
	relWaitStatus(t, e, "p1", tid, "dead", 5*time.Second)
	if keys, _ := c.Keys(ctx, e.o.Prefix+":dl:{"+testChannelPrefix+"*").Result(); len(keys) != 0 {
		t.Errorf("a test delivery keeps a log: %v", keys)
	}
}
