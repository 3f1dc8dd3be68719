package e2e

// Benchmarks of the whole program: app.Run on a real Redis (REDIS_URL, else
// the embedded one), driven over HTTP. They report figures with
// b.ReportMetric and never fail on speed. BENCHMARKS.md records them; run
// them with -benchtime=1x (each runs a fixed amount of work):
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchtime=1x .

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}

func post(tb testing.TB, url, key string, body []byte) (int, []byte) {
	code, b, err := postKey(url, key, body)
	if err != nil {
		tb.Fatalf("POST %s: %v", url, err)
	}
	return code, b
}

// completed reads riverhub_tasks_completed_total (all statuses) from /metrics.
func completed(tb testing.TB, base string) float64 {
	res, err := benchClient.Get(base + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "riverhub_tasks_completed_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkThroughput submits tasks of a zero-delay mock workflow from 64
// concurrent clients for 10 s and counts the tasks completed in that
// window: the sustained rate of the whole pipeline (HTTP, auth, record,
// queue, claim, provider, completion), with its queue kept from growing.
// All clients submit for one project, whose rate limit is set far above
// what they reach: its check runs on every submission but never refuses.
func BenchmarkThroughput(b *testing.B) { throughput(b) }

// BenchmarkThroughputLimited is BenchmarkThroughput with limits on the
// mock provider's credential that it never reaches (10,000 in flight,
// 10,000,000 a minute): what checking the limits in Redis costs each task.
func BenchmarkThroughputLimited(b *testing.B) {
	throughput(b, "RIVERHUB_PROVIDER_LIMITS", "mock:concurrency=10000,rpm=10000000")
}

// BenchmarkProviderLimitBurst submits 1,000 tasks at once to two nodes
// whose provider allows 300 requests a minute and 20 at once (each
// answered in 50 ms), and reports how long they took against the least
// the limits allow (ratio = elapsed / minimum).
func BenchmarkProviderLimitBurst(b *testing.B) {
	for range b.N {
		r := limitedBurst(b, 1000, 300, 20, 50*time.Millisecond)
		b.ReportMetric(r.elapsed.Seconds(), "s")
		b.ReportMetric(r.minimum.Seconds(), "minimum-s")
		b.ReportMetric(float64(r.elapsed)/float64(r.minimum), "ratio")
	}
}

func throughput(b *testing.B, env ...string) {
	if p := os.Getenv("BENCH_PARTITIONS"); p != "" { // RIVERHUB_PARTITIONS of the node
		env = append(env, "RIVERHUB_PARTITIONS", p)
	}
	n := newNode(b, append([]string{"RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000"}, env...)...)
	n.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "m", "provider": "mock", "mock": map[string]any{"response": map[string]any{"ok": true}}})
	body, _ := json.Marshal(map[string]any{"workflow": "m", "messages": userMessages("hello"), "customer_data": map[string]any{"user_id": "u1"}})
	const window = 10 * time.Second
	b.ResetTimer()
	// Redis CPU per task, when the Redis is a real server (INFO cpu).
	var rc redis.UniversalClient
	if u := os.Getenv("REDIS_URL"); u != "" {
		rc, _ = rdbtest.Client(u)
		defer rc.Close()
	}
	for range b.N {
		var submitted, refused atomic.Int64
		start0 := completed(b, n.base)
		var rcpu0, in0 float64
		var cmds0 map[string]float64
		if rc != nil {
			rcpu0, in0, cmds0 = redisCPU(rc), redisStat(rc, "stats", "total_net_input_bytes"), redisCalls(rc)
		}
		cpu0 := processCPU()
		stop := time.Now().Add(window)
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newSubmitter(n.base, n.key)
				defer c.close()
				for time.Now().Before(stop) {
					code, out, err := c.post("/v1/ai/async", body)
					if err != nil {
						b.Errorf("submit: %v", err)
						return
					}
					switch code {
					case 200:
						submitted.Add(1)
					case 429:
						refused.Add(1)
						time.Sleep(10 * time.Millisecond)
					default:
						b.Errorf("submit answered %d: %s", code, out)
						return
					}
				}
			}()
		}
		wg.Wait()
		done := completed(b, n.base) - start0
		if done > 0 {
			// This process's CPU per task: the node's and the load
			// generator's, steadier than the rate on a machine whose
			// speed drifts between runs.
			b.ReportMetric((processCPU()-cpu0).Seconds()/done*1e6, "process-µs/task")
		}
		if rc != nil && done > 0 {
			b.ReportMetric((redisCPU(rc)-rcpu0)/done*1e6, "redis-µs/task")
			b.ReportMetric((redisStat(rc, "stats", "total_net_input_bytes")-in0)/done, "redis-in-B/task")
			b.ReportMetric(callsPerTask(b, cmds0, redisCalls(rc), done), "redis-cmds/task")
		}
		b.ReportMetric(done/window.Seconds(), "completed/s")
		b.ReportMetric(float64(submitted.Load())/window.Seconds(), "submitted/s")
		b.ReportMetric(float64(refused.Load()), "refused")
		// Drain, so the next iteration starts from an empty queue.
		for completed(b, n.base)-start0 < float64(submitted.Load()) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// BenchmarkSubmitLatency sends async submissions at a fixed 1,000 req/s
// (open loop: a slow answer does not slow the sender) for 5 s and reports
// the answer latency percentiles.
func BenchmarkSubmitLatency(b *testing.B) {
	n := newNode(b, "RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000")
	n.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "m", "provider": "mock"})
	body, _ := json.Marshal(map[string]any{"workflow": "m", "messages": userMessages("hello")})
	rate, window := 1000, 5*time.Second
	if r, err := strconv.Atoi(os.Getenv("BENCH_RATE")); err == nil {
		rate = r
	}
	// Warm the connection pool.
	for range 200 {
		post(b, n.base+"/v1/ai/async", n.key, body)
	}
	b.ResetTimer()
	for range b.N {
		total := int(float64(rate) * window.Seconds())
		lat := make([]time.Duration, total)
		var wg sync.WaitGroup
		tick := time.Second / time.Duration(rate)
		t0 := time.Now()
		for i := range total {
			due := t0.Add(time.Duration(i) * tick)
			time.Sleep(time.Until(due))
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := time.Now()
				if code, out := post(b, n.base+"/v1/ai/async", n.key, body); code != 200 {
					b.Errorf("submit: %d %s", code, out)
				}
				lat[i] = time.Since(s)
			}()
		}
		wg.Wait()
		b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		b.ReportMetric(float64(total)/time.Since(t0).Seconds(), "req/s")
	}
}

// BenchmarkSyncOverhead compares POST /v1/ai (an openai workflow pointed at
// a local fake chat-completions server) with calling that fake directly,
// one request at a time, interleaved, and reports both medians and the
// difference: what riverhub adds to a synchronous request.
func BenchmarkSyncOverhead(b *testing.B) {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"{\"answer\":42}"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`)
	}))
	defer fake.Close()
	n := newNode(b, "RIVERHUB_LOG_LEVEL", "error", "OPENAI_BASE_URL", fake.URL+"/v1", "OPENAI_API_KEY", "sk-bench",
		"RIVERHUB_PROJECT_RATE", "1000000") // 3,200 sequential requests: over the default rate
	n.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "o", "provider": "openai", "model": "gpt-4o"})
	body, _ := json.Marshal(map[string]any{"workflow": "o", "messages": userMessages("hello")})
	direct, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": userMessages("hello")})
	const rounds = 3000
	for range 200 { // warm both paths
		post(b, fake.URL+"/v1/chat/completions", "sk-bench", direct)
		post(b, n.base+"/v1/ai", n.key, body)
	}
	b.ResetTimer()
	for range b.N {
		viaHub := make([]time.Duration, 0, rounds)
		straight := make([]time.Duration, 0, rounds)
		for range rounds {
			s := time.Now()
			post(b, fake.URL+"/v1/chat/completions", "sk-bench", direct)
			straight = append(straight, time.Since(s))
			s = time.Now()
			if code, out := post(b, n.base+"/v1/ai", n.key, body); code != 200 {
				b.Fatalf("sync: %d %s", code, out)
			}
			viaHub = append(viaHub, time.Since(s))
		}
		p50d, p50h := percentile(straight, .5), percentile(viaHub, .5)
		b.ReportMetric(ms(p50d), "direct-p50-ms")
		b.ReportMetric(ms(p50h), "riverhub-p50-ms")
		b.ReportMetric(ms(p50h-p50d), "added-p50-ms")
		b.ReportMetric(ms(percentile(viaHub, .99)-percentile(straight, .99)), "added-p99-ms")
	}
}

// BenchmarkWebhooksEndToEnd submits BENCH_TASKS (default 20,000) tasks of a
// zero-delay mock workflow from 64 clients as fast as they are answered,
// with one webhook endpoint (a local receiver answering 200), and measures
// each task's time from its submission to its task.completed delivery's
// arrival: deliveries per second over the whole run, the latency's p50,
// p99 and max, and how many took over a second; the same split in two, the
// submission's call (submit-*) and the time from its answer to the
// arrival (after-submit-*); with REDIS_URL, Redis's
// CPU and commands per task until the last delivery arrived (the last
// attempts' outcomes may be written after). The slowest deliveries'
// timelines are logged, to tell where their time went.
func BenchmarkWebhooksEndToEnd(b *testing.B) {
	tasks := 20000
	if v, err := strconv.Atoi(os.Getenv("BENCH_TASKS")); err == nil && v > 0 {
		tasks = v
	}
	kv := []string{"RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000"}
	if v := os.Getenv("BENCH_ENDPOINT_CONCURRENCY"); v != "" {
		kv = append(kv, "RIVERHUB_ENDPOINT_CONCURRENCY", v)
	}
	var n *node
	if os.Getenv("BENCH_PROCESS") != "" { // the node as a process of its own, built from this tree
		url, prefix := testRedisURL(b), rdbtest.Prefix()
		b.Cleanup(func() { dropPrefix(b, url, prefix) })
		n = startProcess(b, buildBinary(b), testEnv(b, url, prefix, kv...)).node
	} else {
		n = newNode(b, kv...)
	}
	var mu sync.Mutex
	arrived := make(map[string]time.Time, tasks)
	var attempts atomic.Int64
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		now := time.Now()
		attempts.Add(1)
		cid := r.Header.Get("mr-channel-id")
		mu.Lock()
		if _, ok := arrived[cid]; !ok {
			arrived[cid] = now
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer rx.Close()
	n.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "m", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"ok": true}}})
	n.must(b, 201, "POST", "/api/console/webhook", map[string]any{"url": rx.URL + "/hook"})
	body, _ := json.Marshal(map[string]any{"workflow": "m", "messages": userMessages("hello")})
	// Redis's CPU and commands per task, when the Redis is a real server.
	var rc redis.UniversalClient
	if u := os.Getenv("REDIS_URL"); u != "" {
		rc, _ = rdbtest.Client(u)
		defer rc.Close()
	}
	b.ResetTimer()
	for range b.N {
		mu.Lock()
		clear(arrived)
		mu.Unlock()
		attempts.Store(0)
		var rcpu0 float64
		var cmds0 map[string]float64
		if rc != nil {
			rcpu0, cmds0 = redisCPU(rc), redisCalls(rc)
		}
		sent := make(map[string]time.Time, tasks)
		answered := make(map[string]time.Time, tasks) // when its submission was answered
		var sentMu sync.Mutex
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newSubmitter(n.base, n.key)
				defer c.close()
				for int(next.Add(1)) <= tasks {
					t0 := time.Now()
					cid, err := submitID(c, n.base, body)
					if err != nil {
						b.Errorf("submit: %v", err)
						return
					}
					t1 := time.Now()
					sentMu.Lock()
					sent[cid], answered[cid] = t0, t1
					sentMu.Unlock()
				}
			}()
		}
		wg.Wait()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mu.Lock()
			got := len(arrived)
			mu.Unlock()
			if got >= tasks {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d deliveries arrived within 2 minutes of the last submission", got, tasks)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if rc != nil { // (with the last attempts' outcomes still being written)
			b.ReportMetric((redisCPU(rc)-rcpu0)/float64(tasks)*1e6, "redis-µs/task")
			b.ReportMetric(callsPerTask(b, cmds0, redisCalls(rc), float64(tasks)), "redis-cmds/task")
		}
		mu.Lock()
		var last time.Time
		lat := make([]time.Duration, 0, tasks)
		type slow struct {
			cid string
			d   time.Duration
		}
		var slowest []slow
		// The submission's own part (a closed loop's: 64 / the rate on
		// average) and the part after its answer, apart.
		submit := make([]time.Duration, 0, tasks)
		after := make([]time.Duration, 0, tasks)
		for cid, t0 := range sent {
			at := arrived[cid]
			if at.After(last) {
				last = at
			}
			d := at.Sub(t0)
			lat = append(lat, d)
			slowest = append(slowest, slow{cid, d})
			submit = append(submit, answered[cid].Sub(t0))
			after = append(after, at.Sub(answered[cid]))
		}
		mu.Unlock()
		slices.SortFunc(slowest, func(x, y slow) int { return int(y.d - x.d) })
		over := 0
		for _, d := range lat {
			if d > time.Second {
				over++
			}
		}
		b.ReportMetric(float64(tasks)/last.Sub(start).Seconds(), "deliveries/s")
		b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		b.ReportMetric(ms(percentile(lat, 1)), "max-ms")
		b.ReportMetric(ms(percentile(submit, 0.50)), "submit-p50-ms")
		b.ReportMetric(ms(percentile(submit, 0.99)), "submit-p99-ms")
		b.ReportMetric(ms(percentile(after, 0.50)), "after-submit-p50-ms")
		b.ReportMetric(ms(percentile(after, 0.99)), "after-submit-p99-ms")
		b.ReportMetric(float64(over), "over-1s")
		b.ReportMetric(float64(attempts.Load()-int64(tasks)), "extra-attempts")
		if os.Getenv("BENCH_DEBUG") != "" { // the latency by submission time
			buckets := map[int][]time.Duration{}
			for cid, t0 := range sent {
				k := int(t0.Sub(start) / (250 * time.Millisecond))
				buckets[k] = append(buckets[k], arrived[cid].Sub(t0))
			}
			for k := 0; k < len(buckets); k++ {
				d := buckets[k]
				slices.Sort(d)
				b.Logf("sent %4d-%4d ms: %5d tasks, p50 %.0f p99 %.0f max %.0f ms", k*250, k*250+250, len(d), ms(percentile(d, 0.5)), ms(percentile(d, 0.99)), ms(percentile(d, 1)))
			}
		}
		if os.Getenv("BENCH_DEBUG") != "" { // where the time of deliveries at the p99 went
			at := len(slowest) / 100
			switch os.Getenv("BENCH_DEBUG") {
			case "p50":
				at = len(slowest) / 2
			case "max":
				at = 0
			}
			for _, s := range slowest[at : at+2] {
				r := n.do(b, "GET", "/api/console/logs/"+s.cid, n.key, nil)
				b.Logf("p99: %s took %v; sent at %s; timeline: %s", s.cid, s.d, sent[s.cid].UTC().Format("15:04:05.000"), r.body)
			}
		}
		for _, s := range slowest[:min(3, len(slowest))] {
			if s.d < time.Second {
				break
			}
			r := n.do(b, "GET", "/api/console/logs/"+s.cid, n.key, nil)
			b.Logf("%s took %v; sent at %s; timeline: %s", s.cid, s.d, sent[s.cid].UTC().Format("15:04:05.000"), r.body)
		}
	}
}

// redisCalls are INFO commandstats' calls by command (those scripts run
// included).
func redisCalls(c redis.UniversalClient) map[string]float64 {
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		return nil
	}
	calls := map[string]float64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, found := strings.CutPrefix(name, "cmdstat_")
		if !ok || !found {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				calls[name], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return calls
}

// callsPerTask is the commands Redis ran per task between two commandstats
// reads, the benchmark's own INFO reads left out; the breakdown is logged.
func callsPerTask(b *testing.B, before, after map[string]float64, tasks float64) float64 {
	var total float64
	var lines []string
	for name, n := range after {
		d := n - before[name]
		if d <= 0 || name == "info" {
			continue
		}
		total += d
		lines = append(lines, fmt.Sprintf("%s=%.2f", name, d/tasks))
	}
	sort.Strings(lines)
	b.Logf("Redis commands per task: %.1f (%s)", total/tasks, strings.Join(lines, " "))
	return total / tasks
}

// redisStat reads one numeric field of an INFO section.
func redisStat(c redis.UniversalClient, section, field string) float64 {
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// processCPU is the CPU time this process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
