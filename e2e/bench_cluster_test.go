package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// BenchmarkClusterSpread runs tasks with one webhook each, spread over 128
// endpoints (BENCH_HOOKS), through one node on the Redis named by REDIS_URL, for 10 s,
// and reports completed tasks/s, deliveries/s and Redis CPU per task. On a
// Redis Cluster it also reports, per master, its share of the commands
// (INFO commandstats, all commands, during the run) and, from a 3 s MONITOR
// of every master after the run (a second burst of the same load), its
// share of the commands on task-queue keys ({tasks…}), delivery-schedule
// keys ({dq…}) and callback-deadline keys ({cb…}), the commands the
// scripts run included. It also reports this process's CPU per task (the
// node, its clients and the receiver; clock ticks of 10 ms) and how busy
// the machine was. BENCH_PARTITIONS sets RIVERHUB_PARTITIONS (default:
// the node's own, 16 on a cluster).
//
//	REDIS_URL=redis-cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
//	  go test -run '^$' -bench ClusterSpread -benchtime=1x ./e2e
func BenchmarkClusterSpread(b *testing.B) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		b.Skip("needs REDIS_URL (a real Redis or a redis-cluster:// URL)")
	}
	env := []string{"RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000"}
	if p := os.Getenv("BENCH_PARTITIONS"); p != "" {
		env = append(env, "RIVERHUB_PARTITIONS", p)
	}
	prefix := rdbtest.Prefix()
	b.Cleanup(func() { dropPrefix(b, url, prefix) })
	n := startNode(b, testEnv(b, url, prefix, env...))
	var delivered atomic.Int64
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		delivered.Add(1)
	}))
	defer rx.Close()
	n.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "m", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"ok": true}}})
	hooks := 128
	if v, err := strconv.Atoi(os.Getenv("BENCH_HOOKS")); err == nil && v > 0 {
		hooks = v
	}
	bodies := make([][]byte, hooks)
	for i := range hooks {
		u := fmt.Sprintf("%s/hook/%d", rx.URL, i)
		n.must(b, 201, "POST", "/api/console/webhook", map[string]any{"url": u})
		bodies[i], _ = json.Marshal(map[string]any{"workflow": "m", "messages": userMessages("hello"), "webhook_url": u})
	}
	rc, err := rdbtest.Client(url)
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	masters := masterClients(b, rc)
	replicaCPU := func() float64 { // all replicas' CPU seconds (0 without a cluster)
		cc, ok := rc.(*redis.ClusterClient)
		if !ok {
			return 0
		}
		var mu sync.Mutex
		var sum float64
		_ = cc.ForEachSlave(context.Background(), func(_ context.Context, c *redis.Client) error {
			v := redisCPU(c)
			mu.Lock()
			sum += v
			mu.Unlock()
			return nil
		})
		return sum
	}
	load := func(window time.Duration) (submitted int64) {
		var sub atomic.Int64
		stop := time.Now().Add(window)
		var wg sync.WaitGroup
		for g := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; time.Now().Before(stop); i += 64 {
					code, _ := post(b, n.base+"/v1/ai/async", n.key, bodies[i%hooks])
					switch code {
					case 200:
						sub.Add(1)
					case 429:
						time.Sleep(10 * time.Millisecond)
					default:
						b.Errorf("submit answered %d", code)
						return
					}
				}
			}()
		}
		wg.Wait()
		return sub.Load()
	}
	drain := func(start float64, submitted int64) {
		deadline := time.Now().Add(2 * time.Minute)
		for completed(b, n.base)-start < float64(submitted) || delivered.Load() < submitted {
			if time.Now().After(deadline) {
				b.Fatalf("not drained within 2 minutes: %v of %d completed, %d delivered", completed(b, n.base)-start, submitted, delivered.Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	b.ResetTimer()
	for range b.N {
		const window = 10 * time.Second
		start0, del0 := completed(b, n.base), delivered.Load()
		before, cpu0, rep0 := statsOf(masters), readCPU(), replicaCPU()
		submitted := load(window)
		done, del := completed(b, n.base)-start0, delivered.Load()-del0
		after, cpu1, rep1 := statsOf(masters), readCPU(), replicaCPU()
		if rep1 > 0 && done > 0 {
			b.ReportMetric((rep1-rep0)/done*1e6, "replicas-µs/task")
		}
		if cpu0.ok && cpu1.ok && done > 0 {
			// This process: the node, its 64 clients and the receiver.
			b.ReportMetric(float64(cpu1.self-cpu0.self)*1e6/100/done, "proc-µs/task")
			b.ReportMetric(100*float64(cpu1.busy-cpu0.busy)/float64(cpu1.all-cpu0.all), "machine-busy-%")
		}
		b.ReportMetric(done/window.Seconds(), "completed/s")
		b.ReportMetric(float64(del)/window.Seconds(), "delivered/s")
		b.ReportMetric(float64(submitted)/window.Seconds(), "submitted/s")
		var cpu, calls float64
		for i := range masters {
			cpu += after[i].cpu - before[i].cpu
			calls += after[i].calls - before[i].calls
		}
		if done > 0 {
			b.ReportMetric(cpu/done*1e6, "redis-µs/task")
			b.ReportMetric(calls/done, "redis-cmds/task")
		}
		for i, m := range masters {
			c, u := after[i].calls-before[i].calls, after[i].cpu-before[i].cpu
			b.Logf("master %s: %.1f%% of commands (%.0f), CPU %.2f s (%.0f%% of one core)", m.addr, 100*c/calls, c, u, 100*u/window.Seconds())
		}
		drain(start0, submitted)
		if len(masters) < 2 {
			continue
		}
		// The families' shares, read from MONITOR under a second burst.
		start1 := completed(b, n.base)
		delivered.Store(0)
		counts := make([]map[string]int, len(masters))
		var wg sync.WaitGroup
		for i, m := range masters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				counts[i] = monitorFamilies(b, m.addr, prefix, 3*time.Second)
			}()
		}
		sub := load(3 * time.Second)
		wg.Wait()
		drain(start1, sub)
		for _, fam := range []string{"tasks", "dq", "cb"} {
			total := 0
			for _, c := range counts {
				total += c[fam]
			}
			if total == 0 {
				continue
			}
			var shares []string
			for i, c := range counts {
				share := 100 * float64(c[fam]) / float64(total)
				shares = append(shares, fmt.Sprintf("%s %.1f%%", masters[i].addr, share))
				b.ReportMetric(share, fmt.Sprintf("%s-share%%-m%d", fam, i+1))
			}
			b.Logf("{%s…} commands (%d in 3 s): %s", fam, total, strings.Join(shares, ", "))
		}
	}
}

type master struct {
	addr string
	c    *redis.Client
}

// masterClients lists the masters of a cluster (the server itself for a
// single Redis), in address order.
func masterClients(tb testing.TB, rc redis.UniversalClient) []master {
	cc, ok := rc.(*redis.ClusterClient)
	if !ok {
		c, _ := rc.(*redis.Client)
		if c == nil {
			return nil
		}
		return []master{{c.Options().Addr, c}}
	}
	var mu sync.Mutex
	var out []master
	err := cc.ForEachMaster(context.Background(), func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		out = append(out, master{c.Options().Addr, c})
		mu.Unlock()
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

type masterStats struct{ cpu, calls float64 }

// statsOf reads each master's CPU seconds and total command calls.
func statsOf(ms []master) []masterStats {
	out := make([]masterStats, len(ms))
	for i, m := range ms {
		out[i].cpu = redisCPU(m.c)
		info, _ := m.c.Info(context.Background(), "commandstats").Result()
		for _, line := range strings.Split(info, "\n") {
			if !strings.HasPrefix(line, "cmdstat_") {
				continue
			}
			for _, f := range strings.Split(line[strings.IndexByte(line, ':')+1:], ",") {
				if v, ok := strings.CutPrefix(f, "calls="); ok {
					c, _ := strconv.ParseFloat(v, 64)
					out[i].calls += c
				}
			}
		}
	}
	return out
}

// monitorFamilies reads MONITOR on addr for d and counts the commands on
// keys of prefix by family: "tasks" ({tasks…}), "dq" ({dq…}), "cb" ({cb…}).
func monitorFamilies(tb testing.TB, addr, prefix string, d time.Duration) map[string]int {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Error(err)
		return nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(d))
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		tb.Error(err)
		return nil
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, fam := range []string{"tasks", "dq", "cb"} {
			if strings.Contains(line, prefix+":{"+fam+"}") || strings.Contains(line, prefix+":{"+fam+".") {
				counts[fam]++
				break
			}
		}
	}
	return counts
}
