package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
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

// Attempts are counted per project and minute, by outcome and duration.
func TestStatsCountAttempts(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	now := time.Date(2026, 11, 27, 5, 30, 10, 0, time.UTC)
	e := New(c, Options{Prefix: prefix, Log: zerolog.Nop(), Now: func() time.Time { return now }})
	ctx := context.Background()
	batch := []result{
		{d: claimed{projectID: "p1"}, verdict: "ok", durationMS: 3},
		{d: claimed{projectID: "p1"}, verdict: "ok", durationMS: 40},
		{d: claimed{projectID: "p1"}, verdict: "retry", durationMS: 9000},
		{d: claimed{projectID: "p1"}, verdict: "defer"},
		{d: claimed{projectID: "p2"}, verdict: "dead", durationMS: 20000},
	}
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { e.countAttempts(ctx, p, batch, now); return nil }); err != nil {
		t.Fatal(err)
	}
	st, err := e.Stats(ctx, "p1", 3)
	if err != nil {
		t.Fatal(err)
	}
	last := st.Minutes[2]
	if len(st.Minutes) != 3 || last.At != "2026-11-27T05:30:00Z" || last.Succeeded != 2 || last.Failed != 1 || last.Dead != 0 {
		t.Fatalf("stats = %+v", st.Minutes)
	}
	if *last.P50MS != 50 || *last.P99MS != 50 || st.Minutes[0].P50MS != nil { // 3 attempts: the 99th is the 2nd
		t.Errorf("percentiles = %v %v", *last.P50MS, *last.P99MS)
	}
	if other, _ := e.Stats(ctx, "p2", 1); other.Minutes[0].Dead != 1 || *other.P99MS != -1 {
		t.Errorf("p2 stats = %+v", other.Minutes)
	}
}
