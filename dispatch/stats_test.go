package dispatch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wire"
)

func TestPercentileOfBuckets(t *testing.T) {
	for _, tc := range []struct {
		hist []int64
		p    float64
		want int64
	}{
		{[]int64{10}, .5, 5},
		{[]int64{0, 0, 99, 1}, .5, 25},
		{[]int64{0, 0, 98, 2}, .99, 50},
		{[]int64{0, 0, 99, 1}, .99, 25},
		{append(make([]int64, len(latencyBounds)), 3), .5, -1},
	} {
		h := append(tc.hist, make([]int64, len(latencyBounds)+1-len(tc.hist))...)
		if got := percentileOf(h, tc.p); got == nil || *got != tc.want {
			t.Errorf("percentileOf(%v, %v) = %v, want %d", tc.hist, tc.p, got, tc.want)
		}
	}
	if percentileOf(make([]int64, 12), .5) != nil {
		t.Error("an empty histogram has a percentile")
	}
}

// recordBatch sends a batch's records as the recorder does, once.
func recordBatch(t *testing.T, e *Engine, batch []result, now time.Time) []recordReply {
	t.Helper()
	recorded := make([]*redis.Cmd, len(batch))
	var earliest time.Time
	if err := e.recordOnce(context.Background(), batch, recorded, make([][]string, len(batch)), make([][]any, len(batch)),
		now, wire.Stamp(now), &earliest, make(partSet, len(e.parts))); err != nil {
		t.Fatal(err)
	}
	out := make([]recordReply, len(batch))
	for i, c := range recorded {
		if c != nil {
			out[i] = decodeRecord(c)
		}
	}
	return out
}

// statsEngine is an engine, not started, whose clock stands at a minute's
// tenth second, and its Redis.
func statsEngine(t *testing.T) (*Engine, redis.UniversalClient, time.Time) {
	c, prefix := rdbtest.New(t)
	now := time.Date(2026, 11, 27, 5, 30, 10, 0, time.UTC)
	return New(c, Options{Prefix: prefix, Log: zerolog.Nop(), Now: func() time.Time { return now }}), c, now
}

// Attempts are counted per project and minute, by outcome and duration,
// stale claims too; a put-off and a log note are no attempts.
func TestStatsCountAttempts(t *testing.T) {
	t.Parallel()
	e, c, now := statsEngine(t)
	ctx := context.Background()
	att := func(n int) []byte { return fmt.Appendf(nil, `{"attempt":%d}`, n) }
	recordBatch(t, e, []result{ // no delivery holds these claims: stale, counted all the same
		{d: claimed{id: "a", projectID: "p1"}, verdict: "ok", durationMS: 3, attempt: att(1)},
		{d: claimed{id: "b", projectID: "p1"}, verdict: "ok", durationMS: 40, attempt: att(2)},
		{d: claimed{id: "c", projectID: "p1"}, verdict: "retry", durationMS: 9000, attempt: att(3), nextAt: now.Add(time.Minute)},
		{d: claimed{id: "d", projectID: "p1"}, verdict: "defer", nextAt: now.Add(time.Minute)},
		{d: claimed{id: "e", projectID: "p1", channelID: "ch1", event: "task.completed"}, verdict: verdictNote,
			entries: [][]byte{[]byte(`{"type":"delivery_paused"}`)}},
		{d: claimed{id: "f", projectID: "p2"}, verdict: "dead", durationMS: 20000, attempt: att(4)},
	}, now)
	st, err := e.Stats(ctx, "p1", 3)
	if err != nil {
		t.Fatal(err)
	}
	last := st.Minutes[2]
	if len(st.Minutes) != 3 || last.At != "2026-11-27T05:30:00Z" || last.Succeeded != 2 || last.Failed != 1 || last.Dead != 0 {
		t.Fatalf("stats = %+v", st.Minutes)
	}
	if *last.P50MS != 50 || *last.P99MS != 50 || st.Minutes[0].P50MS != nil { // 3 attempts: the 99th is the 2nd
		t.Errorf("percentiles = %v %v (a put-off or a note counted as an attempt?)", *last.P50MS, *last.P99MS)
	}
	if other, _ := e.Stats(ctx, "p2", 1); other.Minutes[0].Dead != 1 || *other.P99MS != -1 {
		t.Errorf("p2 stats = %+v", other.Minutes)
	}
	if ttl := c.TTL(ctx, e.parts[0].statsKey("p1", now.Unix()/60)).Val(); ttl <= 0 || ttl > statsTTL {
		t.Errorf("statistics TTL %v, want up to %v", ttl, statsTTL)
	}
}

// A minute that an earlier version began counting (a field per outcome and
// one per duration bucket) is read with what this one adds (one field per
// attempt): an upgrade inside a minute loses no attempt and counts none
// twice.
func TestStatsReadEarlierCounts(t *testing.T) {
	t.Parallel()
	e, c, now := statsEngine(t)
	ctx := context.Background()
	// Earlier: 3 succeeded in 0–5 ms, 1 retry in 25–50 ms.
	c.HSet(ctx, e.parts[0].statsKey("p1", now.Unix()/60), "ok", 3, "retry", 1, "l0", 3, "l3", 1)
	recordBatch(t, e, []result{
		{d: claimed{id: "a", projectID: "p1"}, verdict: "ok", durationMS: 3, attempt: []byte(`{"attempt":1}`)},
		{d: claimed{id: "b", projectID: "p1"}, verdict: "dead", durationMS: 20000, attempt: []byte(`{"attempt":2}`)},
	}, now)
	st, err := e.Stats(ctx, "p1", 1)
	if err != nil {
		t.Fatal(err)
	}
	m := st.Minutes[0]
	if m.Succeeded != 4 || m.Failed != 1 || m.Dead != 1 {
		t.Fatalf("minute = %+v, want 4 succeeded, 1 failed, 1 dead", m)
	}
	// 6 attempts: 4 in the first bucket (≤ 5 ms), 1 ≤ 50 ms, 1 above the
	// last bound; the 99th percentile is the 5th.
	if *m.P50MS != 5 || *m.P99MS != 50 {
		t.Errorf("percentiles = %v %v, want 5 and 50", *m.P50MS, *m.P99MS)
	}
	if n := c.HLen(ctx, e.parts[0].statsKey("p1", now.Unix()/60)).Val(); n != 6 {
		t.Errorf("the minute has %d fields, want the earlier 4 and one per new outcome and bucket", n)
	}
}

// A batch sent again after a round trip that failed part-way records and
// counts each attempt once, and answers as the first time: a dead letter
// stays one, a dead letter of a cancelled delivery stays cancelled and is
// counted as a failed attempt, a retry cancelled in between is still the
// retry recorded, a health change is told again, and a stale claim's
// record stays stale and is not counted twice.
func TestRecordSentAgainCountsOnce(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	now := time.Now()
	e := New(c, Options{Prefix: prefix, Log: zerolog.Nop(), Now: func() time.Time { return now }, BreakerThreshold: 1})
	ctx := context.Background()
	pt := e.parts[0]
	c.HSet(ctx, pt.dKey("dead"), "claim", "t1", "status", "sending")
	c.HSet(ctx, pt.dKey("cancelled"), "claim", "t2", "status", "sending", "cancel", "the channel was settled")
	c.HSet(ctx, pt.dKey("retry"), "claim", "t3", "status", "sending")
	c.HSet(ctx, pt.dKey("stale"), "claim", "newer", "status", "sending")
	at := func(id string) []byte { return fmt.Appendf(nil, `{"attempt":1,"n":%q}`, id) }
	batch := []result{
		{d: claimed{id: "dead", token: "t1", projectID: "p1", webhookID: "w1"}, verdict: "dead", durationMS: 7, attempt: at("dead")},
		{d: claimed{id: "cancelled", token: "t2", projectID: "p1", webhookID: "w1"}, verdict: "dead", durationMS: 7, attempt: at("cancelled")},
		{d: claimed{id: "retry", token: "t3", projectID: "p1", webhookID: "w2"}, verdict: "retry", durationMS: 7, attempt: at("retry"),
			nextAt: now.Add(time.Minute), health: "0"},
		{d: claimed{id: "stale", token: "old", projectID: "p1", webhookID: "w1"}, verdict: "ok", durationMS: 7, attempt: at("stale")},
	}
	first := recordBatch(t, e, batch, now)
	// Between the two sends a settlement cancels the retrying delivery.
	c.HSet(ctx, pt.dKey("retry"), "status", "cancelled", "cancel", "the channel was settled")
	again := recordBatch(t, e, batch, now)
	want := []recordReply{{recordApplied, ""}, {recordCancelled, ""}, {recordApplied, "opened"}, {recordStale, ""}}
	for i, w := range want {
		if first[i] != w || again[i] != w {
			t.Errorf("%s: answered %+v, then %+v when sent again; want %+v both times", batch[i].d.id, first[i], again[i], w)
		}
	}
	for _, id := range []string{"dead", "cancelled", "retry"} {
		if n := c.LLen(ctx, pt.attKey(id)).Val(); n != 1 {
			t.Errorf("%s: %d attempts listed, want 1", id, n)
		}
	}
	st, err := e.Stats(ctx, "p1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Minutes[0]; m.Dead != 1 || m.Failed != 2 || m.Succeeded != 1 {
		t.Errorf("stats = %+v, want 1 dead, 2 failed (the cancelled dead letter, the retry), 1 succeeded (the stale claim's)", m)
	}
	if n := c.ZCard(ctx, pt.dlqKey("p1")).Val(); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
	if fails, _ := c.HGet(ctx, pt.epKey("w2"), "fails").Int(); fails != 1 {
		t.Errorf("endpoint w2 counts %d failures, want 1", fails)
	}
}
