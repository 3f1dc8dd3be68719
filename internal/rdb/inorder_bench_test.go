package rdb

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// BenchmarkInOrder is an ack's shape, 15 tasks: a script and an index
// write each, then the leases' removal; as InOrder's transaction and as
// the plain pipeline it was before.
func BenchmarkInOrder(b *testing.B) {
	c, prefix := rdbtest.New(b)
	ctx := context.Background()
	publish := redis.NewScript(`redis.call('HSET', KEYS[1], 'status', ARGV[1]) return 1`)
	lease := prefix + ":{lease}"
	steps := []func(redis.Pipeliner, *Merge){func(p redis.Pipeliner, m *Merge) {
		for i := range 15 {
			id := strconv.Itoa(i)
			publish.Eval(ctx, p, []string{prefix + ":{" + id + "}:rec"}, "completed")
			m.ZAdd(prefix+":{idx}", redis.Z{Score: float64(i), Member: id})
		}
	}, func(p redis.Pipeliner, _ *Merge) {
		p.ZRem(ctx, lease, "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15")
	}}
	redisCPU := func() float64 { // seconds
		info := c.Info(ctx, "cpu").Val()
		var sum float64
		for _, line := range strings.Split(info, "\n") {
			for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), k); ok {
					f, _ := strconv.ParseFloat(v, 64)
					sum += f
				}
			}
		}
		return sum
	}
	run := func(b *testing.B, send func() error) {
		before := redisCPU()
		for b.Loop() {
			if err := send(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric((redisCPU()-before)*1e6/float64(b.N), "redis-µs/op")
	}
	b.Run("transaction", func(b *testing.B) { run(b, func() error { return InOrder(ctx, c, steps...) }) })
	b.Run("pipeline", func(b *testing.B) {
		run(b, func() error {
			return PipelinedMerge(ctx, c, func(p redis.Pipeliner, m *Merge) {
				for _, s := range steps {
					s(p, m)
				}
			})
		})
	})
}
