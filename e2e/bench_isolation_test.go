package e2e

import (
	"context"
	"sync"
	"testing"
	"time"
)

// BenchmarkIsolation measures what a noisy project costs a quiet one:
// the quiet (default) project's submit-to-webhook latency, 100 tasks at
// 10/s to its one healthy endpoint, (a) alone and (b) while project D, with
// 12 endpoints that accept and never answer plus 1 healthy one, submits
// 3,000 tasks at 300/s over the same 10 s. Two nodes, default settings
// (512 attempts per node, 64 per endpoint, 10 s attempt timeout).
//
// Webhooks that have not arrived 120 s after the last submission are
// counted (undelivered) and enter the percentiles at 120 s, a lower bound,
// so a capped run does not flatter the figures.
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Isolation -benchtime=1x .
func BenchmarkIsolation(b *testing.B) {
	const (
		quietRate  = 10.0
		quietTasks = 100
		floodRate  = 300.0
		floodTasks = 3000
		hanging    = 12
		within     = 120 * time.Second
	)
	for range b.N {
		r := newIsoRig(b)
		ctx := context.Background()

		alone, failed, err := r.paced(ctx, r.quietKey, quietRate, quietTasks)
		if failed > 0 {
			b.Fatalf("quiet phase: %d submissions failed, first: %v", failed, err)
		}
		latAlone, missingAlone := r.quiet.waitCapped(alone, time.Now().Add(within))

		r.addHanging(b, hanging)
		var flood []submission
		var wg sync.WaitGroup
		wg.Go(func() {
			var failed int
			var err error
			flood, failed, err = r.paced(ctx, r.noisyKey, floodRate, floodTasks)
			if failed > 0 {
				b.Errorf("flood: %d submissions failed, first: %v", failed, err)
			}
		})
		beside, failed, err := r.paced(ctx, r.quietKey, quietRate, quietTasks)
		if failed > 0 {
			b.Fatalf("noisy phase: %d submissions failed, first: %v", failed, err)
		}
		wg.Wait()
		deadline := time.Now().Add(within)
		var latBeside, latD []time.Duration
		var missingBeside, missingD int
		wg.Go(func() { latBeside, missingBeside = r.quiet.waitCapped(beside, deadline) })
		wg.Go(func() { latD, missingD = r.noisyOK.waitCapped(flood, deadline) })
		wg.Wait()
		eps, reqs := r.hang.attempted()
		r.close()

		q99, n99 := percentile(latAlone, .99), percentile(latBeside, .99)
		b.ReportMetric(ms(percentile(latAlone, .5)), "quiet_p50_ms")
		b.ReportMetric(ms(q99), "quiet_p99_ms")
		b.ReportMetric(ms(percentile(latBeside, .5)), "noisy_p50_ms")
		b.ReportMetric(ms(n99), "noisy_p99_ms")
		b.ReportMetric(float64(n99)/float64(q99), "ratio_p99")
		b.ReportMetric(float64(missingAlone+missingBeside), "quiet_undelivered")
		b.ReportMetric(ms(percentile(latD, .5)), "d_healthy_p50_ms")
		b.ReportMetric(ms(percentile(latD, .99)), "d_healthy_p99_ms")
		b.ReportMetric(float64(missingD), "d_healthy_undelivered")
		b.Logf("hanging endpoints: %d of %d tried, %d requests, at most %d held at once",
			eps, hanging, reqs, r.hang.peak.Load())
	}
}

// waitCapped is wait with the webhooks that did not arrive counted at the
// time waited for them.
func (a *arrivals) waitCapped(subs []submission, deadline time.Time) ([]time.Duration, int) {
	lat, missing := a.wait(subs, deadline)
	if missing == 0 {
		return lat, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for _, s := range subs {
		if _, ok := a.first[s.cid]; !ok {
			lat = append(lat, now.Sub(s.at))
		}
	}
	return lat, missing
}
