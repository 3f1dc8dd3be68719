package dispatch

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// The log of a channel that awaits its callback is kept as long as the
// channel's record may be (retention + the longest callback wait), and a
// later entry does not shorten it; every write leaves an expiry.
func TestChannelLogExpiry(t *testing.T) {
	t.Parallel()
	e, _, c := relOneEndpoint(t, "http://127.0.0.1:1", Options{Retention: time.Hour})
	ctx := context.Background()
	write := func(cid, event string) time.Duration {
		t.Helper()
		var b logBatch
		b.add(cid, event, []byte(`{"at":"2026-01-01T00:00:00.000Z","type":"x"}`))
		if err := e.pipelined(ctx, func(p redis.Pipeliner) { e.writeLogs(ctx, p, &b) }); err != nil {
			t.Fatal(err)
		}
		ttl, err := c.PTTL(ctx, e.logKey(cid)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ttl
	}
	if ttl := write("plain", "task.completed"); ttl <= 0 || ttl > time.Hour {
		t.Errorf("a completed channel's log expires in %v, want up to the retention", ttl)
	}
	if ttl := write("awaits", "task.ai_generated"); ttl <= time.Hour || ttl > time.Hour+MaxCallbackWait {
		t.Errorf("an awaiting channel's log expires in %v, want past the retention by up to %v", ttl, MaxCallbackWait)
	}
	if ttl := write("awaits", "task.completed"); ttl <= time.Hour {
		t.Errorf("a later entry cut the awaiting channel's log to %v", ttl)
	}
	if n, _ := c.LLen(ctx, e.logKey("awaits")).Result(); n != 2 {
		t.Errorf("the log holds %d entries, want 2", n)
	}
}
