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
		b.add(cid, event, []byte(`{"at":"2026-01-01T00:00:00.000Z","type":"x","event":"`+event+`"}`))
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

// A delivered delivery's record and attempts are kept only the hot window
// (its attempts stay on the channel's log, kept the retention); a dead
// one's the DLQ retention.
func TestDeliveredRecordsKeepTheHotWindow(t *testing.T) {
	t.Parallel()
	ok := newRelReceiver(t, relStatus(200))
	e, _, c := relOneEndpoint(t, ok.URL, Options{Schedule: []time.Duration{0}, Retention: time.Hour,
		HotWindow: time.Minute, DLQRetention: 2 * time.Hour})
	e.Start()
	ctx := context.Background()
	ev := relEvent("p1", "c2")
	if err := e.Enqueue(ctx, ev); err != nil {
		t.Fatal(err)
	}
	id := DeliveryID(ev.Type, "c2", "wh_1")
	relWaitStatus(t, e, "p1", id, "succeeded", 5*time.Second)
	// The attempt's log entry may land a moment after the status (on a
	// Cluster the two go to different masters, side by side).
	for end := time.Now().Add(5 * time.Second); len(relLog(t, e, "c2")) == 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	pt := e.partOf("wh_1")
	for _, key := range []string{pt.dKey(id), pt.attKey(id)} {
		if ttl, err := c.TTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
			t.Errorf("TTL of delivered %s = %v (%v), want up to the hot window (1m)", key, ttl, err)
		}
	}
	if ttl := c.TTL(ctx, e.logKey("c2")).Val(); ttl <= time.Minute {
		t.Errorf("TTL of the channel's log = %v, want the retention", ttl)
	}
	if got := relLog(t, e, "c2"); len(got) != 1 || got[0] != "delivery_attempt" {
		t.Errorf("log = %v", got)
	}

	bad := newRelReceiver(t, relStatus(500))
	e2, _, c2 := relOneEndpoint(t, bad.URL, Options{Schedule: []time.Duration{0}, Retention: time.Hour,
		HotWindow: time.Minute, DLQRetention: 2 * time.Hour, BreakerThreshold: 1000})
	e2.Start()
	ev2 := relEvent("p1", "c3")
	if err := e2.Enqueue(ctx, ev2); err != nil {
		t.Fatal(err)
	}
	id2 := DeliveryID(ev2.Type, "c3", "wh_1")
	relWaitStatus(t, e2, "p1", id2, "dead", 5*time.Second)
	if ttl := c2.TTL(ctx, e2.partOf("wh_1").dKey(id2)).Val(); ttl <= time.Hour {
		t.Errorf("TTL of a dead delivery = %v, want the DLQ retention (2h)", ttl)
	}
}

// A round trip of log entries sent again (its answer was lost) appends
// nothing twice; new entries still go after them.
func TestLogAppendSentAgainWritesOnce(t *testing.T) {
	t.Parallel()
	e, _, c := relOneEndpoint(t, "http://127.0.0.1:9/", Options{Retention: time.Hour})
	ctx := context.Background()
	var b logBatch
	b.add("c1", "task.completed", []byte(`{"at":"1","type":"delivery_attempt"}`), []byte(`{"at":"2","type":"delivery_attempt"}`))
	for range 2 {
		if err := e.pipelined(ctx, func(p redis.Pipeliner) { e.writeLogs(ctx, p, &b) }); err != nil {
			t.Fatal(err)
		}
	}
	var more logBatch
	more.add("c1", "task.completed", []byte(`{"at":"3","type":"dead_lettered"}`))
	if err := e.pipelined(ctx, func(p redis.Pipeliner) { e.writeLogs(ctx, p, &more) }); err != nil {
		t.Fatal(err)
	}
	got := c.LRange(ctx, e.logKey("c1"), 0, -1).Val()
	want := []string{`{"at":"1","type":"delivery_attempt"}`, `{"at":"2","type":"delivery_attempt"}`, `{"at":"3","type":"dead_lettered"}`}
	if !slices.Equal(got, want) {
		t.Fatalf("log = %q, want %q", got, want)
	}
}
