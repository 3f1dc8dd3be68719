package dispatch

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery statistics for the console's overview: per project and minute,
// the attempts by outcome and a histogram of their durations, kept for
// two hours.
//
//	P:{dq}:stats:<pid>:<unix minute>  HASH <outcome>:l<bucket>: attempts by outcome
//	                                  (ok, retry, dead) and duration bucket (l0..l11,
//	                                  latencyBounds)
//
// in each partition (the tag of the partition of the deliveries counted):
// the attempts' writes spread with them, and a read sums the partitions.
// An attempt is counted by the script that records it (record.lua), once
// however often its batch is sent, in one field. (Earlier versions counted
// it twice, in a field of its outcome and one of its bucket; a read sums
// both forms, so minutes written before an upgrade still count.)

// latencyBounds are the upper bounds (ms) of the duration buckets; the
// last bucket is everything slower.
var latencyBounds = []int64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

const statsTTL = 2 * time.Hour

func latencyBucket(ms int64) int {
	for i, b := range latencyBounds {
		if ms <= b {
			return i
		}
	}
	return len(latencyBounds)
}

// latencyField is the statistics field of an attempt's duration bucket.
func latencyField(ms int64) string { return "l" + strconv.Itoa(latencyBucket(ms)) }

// MinuteStats are one minute's delivery attempts.
type MinuteStats struct {
	At        string `json:"at"` // the minute's start, RFC 3339
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"` // failed, retry scheduled
	Dead      int64  `json:"dead"`   // failed, dead-lettered
	// P50MS and P99MS are the attempts' duration percentiles, as the
	// upper bound of the histogram bucket they fall in (null when the
	// minute had no attempt, -1 above the last bound).
	P50MS *int64 `json:"p50_ms"`
	P99MS *int64 `json:"p99_ms"`
}

// Stats are the project's delivery attempts per minute over the last
// minutes (oldest first), and the percentiles over the whole window.
type Stats struct {
	Minutes []MinuteStats `json:"minutes"`
	P50MS   *int64        `json:"p50_ms"`
	P99MS   *int64        `json:"p99_ms"`
	Bounds  []int64       `json:"latency_bounds_ms"`
}

// Stats reads the last minutes (at most 120) of the project's statistics.
func (e *Engine) Stats(ctx context.Context, pid string, minutes int) (Stats, error) {
	minutes = min(max(minutes, 1), 120)
	now := e.o.Now().Unix() / 60
	cmds := make([][]*redis.MapStringStringCmd, minutes)
	if _, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range minutes {
			for _, pt := range e.parts {
				cmds[i] = append(cmds[i], p.HGetAll(ctx, pt.statsKey(pid, now-int64(minutes-1-i))))
			}
		}
		return nil
	}); err != nil {
		return Stats{}, fmt.Errorf("read delivery statistics: %w", err)
	}
	st := Stats{Minutes: make([]MinuteStats, minutes), Bounds: latencyBounds}
	total := make([]int64, len(latencyBounds)+1)
	for i, cs := range cmds {
		byOutcome := map[string]int64{}
		hist := make([]int64, len(total))
		for _, c := range cs {
			for f, v := range c.Val() {
				x, _ := strconv.ParseInt(v, 10, 64)
				outcome, bucket, both := strings.Cut(f, ":")
				if !both { // one of an earlier version's two fields
					if strings.HasPrefix(f, "l") {
						outcome, bucket = "", f
					} else {
						outcome, bucket = f, ""
					}
				}
				byOutcome[outcome] += x
				if b, err := strconv.Atoi(strings.TrimPrefix(bucket, "l")); err == nil && b >= 0 && b < len(hist) {
					hist[b] += x
				}
			}
		}
		for b := range hist {
			total[b] += hist[b]
		}
		m := MinuteStats{At: time.Unix((now-int64(minutes-1-i))*60, 0).UTC().Format(time.RFC3339),
			Succeeded: byOutcome[string(verdictOK)], Failed: byOutcome[string(verdictRetry)], Dead: byOutcome[string(verdictDead)]}
		m.P50MS, m.P99MS = percentileOf(hist, .50), percentileOf(hist, .99)
		st.Minutes[i] = m
	}
	st.P50MS, st.P99MS = percentileOf(total, .50), percentileOf(total, .99)
	return st, nil
}

// percentileOf is the upper bound of the bucket holding the p-th
// percentile of hist (nil when empty, -1 for the open last bucket).
func percentileOf(hist []int64, p float64) *int64 {
	var n int64
	for _, c := range hist {
		n += c
	}
	if n == 0 {
		return nil
	}
	rank := int64(float64(n-1)*p) + 1
	for i, c := range hist {
		if rank -= c; rank <= 0 {
			b := int64(-1)
			if i < len(latencyBounds) {
				b = latencyBounds[i]
			}
			return &b
		}
	}
	return nil
}
