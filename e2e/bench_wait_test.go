package e2e

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// BenchmarkSubmitWait measures what RIVERHUB_REDIS_WAIT_REPLICAS=1 costs a
// submission: two nodes on one master with one replica (ports 7341,
// 7342), one without the setting and one with it, take the same closed-loop
// submissions side by side (8 clients each, alternating), and the
// POST /v1/ai/async → 200 latencies of each are reported (p50, p99, in
// ms). Run it alone:
//
//	go test -run '^$' -bench BenchmarkSubmitWait -benchtime=1x ./e2e
func BenchmarkSubmitWait(b *testing.B) {
	master := rdbtest.NewServerAt(b, 7341)
	replica := rdbtest.NewServerAt(b, 7342, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	url := master.URL()
	var nodes [2]*node
	for i, wait := range []string{"0", "1"} {
		prefix := rdbtest.Prefix()
		b.Cleanup(func() { dropPrefix(b, url, prefix) })
		nodes[i] = startNode(b, testEnv(b, url, prefix, "RIVERHUB_REDIS_WAIT_REPLICAS", wait,
			"RIVERHUB_PROJECT_RATE", "0", "RIVERHUB_MAX_QUEUE", "1000000", "RIVERHUB_PROJECT_MAX_QUEUE", "1000000"))
		nodes[i].must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
			"mock": map[string]any{"response": map[string]any{"ok": true}}})
	}
	replicaSynced(b, replica.Addr)
	body := []byte(`{"workflow":"w","messages":[{"role":"user","content":"hello"}]}`)
	const perNode, clients = 3000, 8
	var mu sync.Mutex
	lat := [2][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for c := range 2 * clients {
			wg.Go(func() {
				n := c % 2
				for range perNode / clients {
					start := time.Now()
					status, raw := post(b, nodes[n].base+"/v1/ai/async", nodes[n].key, body)
					d := time.Since(start)
					if status != 200 {
						b.Errorf("node %d: %d %s", n, status, raw)
						return
					}
					mu.Lock()
					lat[n] = append(lat[n], d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	for i, name := range []string{"nowait", "wait1"} {
		b.ReportMetric(float64(percentile(lat[i], 0.50).Microseconds())/1000, name+"_p50_ms")
		b.ReportMetric(float64(percentile(lat[i], 0.99).Microseconds())/1000, name+"_p99_ms")
	}
	shortfalls := nodeMetric(b, nodes[1], `riverhub_redis_wait_shortfalls_total{op="submit"}`)
	b.ReportMetric(shortfalls, "wait1_shortfalls")
}
