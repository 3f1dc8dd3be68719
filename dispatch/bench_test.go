package dispatch

// Benchmarks of the delivery engine against a real Redis. They are programs
// that report figures, not timed tests: each does a fixed amount of work, is
// meant to be run once per count, and never fails on speed:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench <Name> -benchtime=1x -count=3 ./dispatch/
//
// Without REDIS_URL they skip: figures from the embedded Redis mean nothing.
// Each works under its own key prefix, dropped at cleanup; nothing is
// flushed (the Redis is shared).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

const (
	benchProject   = "prj_benchmark01"
	benchSecret    = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	benchEndpoints = 10
)

// benchClient is rdbtest.New, but only against the Redis named by REDIS_URL.
func benchClient(b *testing.B) (redis.UniversalClient, string) {
	b.Helper()
	if os.Getenv("REDIS_URL") == "" {
		b.Skip("REDIS_URL is not set: these benchmarks need a real Redis")
	}
	return rdbtest.New(b)
}

// benchHooks is a project's endpoints, as project.Store serves them from
// its cache.
type benchHooks []project.Webhook

func (h benchHooks) ProjectWebhooks(context.Context, string) ([]project.Webhook, error) {
	return h, nil
}

func newBenchHooks(n int, url string) benchHooks {
	hs := make(benchHooks, n)
	for i := range hs {
		hs[i] = project.Webhook{ID: fmt.Sprintf("wh_%020x", 0xbe0000+i), URL: fmt.Sprintf("%s/hooks/%d", url, i),
			Events: []string{"task.completed", "task.ai_generated"}, Enabled: true, Secret: benchSecret}
	}
	return hs
}

// benchReceiver answers 200 at once, counting requests and the TCP
// connections the engine opened to it.
type benchReceiver struct {
	*httptest.Server
	hits, conns atomic.Int64
}

func newBenchReceiver(b *testing.B, onHit func(r *http.Request, at time.Time)) *benchReceiver {
	b.Helper()
	rc := &benchReceiver{}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		_, _ = io.Copy(io.Discard, r.Body)
		if onHit != nil {
			onHit(r, at)
		}
		rc.hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	rc.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rc.conns.Add(1)
		}
	}
	rc.Start()
	b.Cleanup(rc.Close)
	return rc
}

// benchChannelID looks like the uuid channels get.
func benchChannelID(run uint32, i int) string {
	return fmt.Sprintf("%08x-5a1e-4c3b-9d2e-%012x", run, i)
}

const benchLorem = "Thanks for reaching out about the duplicate charge on your March invoice. I checked your " +
	"account and can confirm that the second payment of 49.00 EUR was taken in error when the card " +
	"was retried after a timeout on our side. I have issued a full refund to the original card; it " +
	"usually appears within three to five business days depending on your bank. Your subscription " +
	"stays active and nothing else changes on your plan. If the refund has not arrived by next " +
	"Friday, reply to this message with the last four digits of the card and we will trace it with " +
	"the payment provider straight away. Sorry for the trouble, and thank you for your patience. " +
	"Kind regards, the support team. "

// benchBody is a task.completed payload of exactly size bytes (at least
// its fixed fields), shaped like the one channels sends.
func benchBody(cid string, size int) []byte {
	head := `{"type":"task.completed","workflow":"support-reply","status":"success","channel_id":"` + cid +
		`","data":{"reply":"`
	tail := `","sentiment":"neutral","tags":["billing","refund"]},"meta":{"provider":"openai","model":"gpt-4o-mini",` +
		`"tokens":{"input":412,"output":187,"total":599},"duration_ms":1834,"attempts":[{"provider":"openai",` +
		`"model":"gpt-4o-mini","status":"ok","duration_ms":1834}]},"customer_data":{"ticket_id":"T-48213",` +
		`"user_id":"u_9f2c61"},"timestamp":"2026-11-28T10:15:42.123Z"}`
	pad := max(size-len(head)-len(tail), 0)
	reply := strings.Repeat(benchLorem, pad/len(benchLorem)+1)[:pad]
	return []byte(head + reply + tail)
}

// benchSmallBody is a JSON body of exactly size bytes (none for 0).
func benchSmallBody(size int) []byte {
	if size == 0 {
		return nil
	}
	const head, tail = `{"type":"task.completed","x":"`, `"}`
	return []byte(head + strings.Repeat("x", max(size-len(head)-len(tail), 0)) + tail)
}

// benchEnqueue enqueues events[0..n) through the engine from workers
// goroutines (each event makes one delivery per endpoint).
func benchEnqueue(b *testing.B, e *Engine, n, workers int, event func(i int) Event) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := e.Enqueue(context.Background(), event(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("enqueue: %v", err)
	}
}

// benchWaitDrained waits until no delivery of e is due or leased, in any
// partition, and reports whether that happened before the deadline.
func benchWaitDrained(b *testing.B, c redis.UniversalClient, e *Engine, deadline time.Time) bool {
	b.Helper()
	ctx := context.Background()
	for time.Now().Before(deadline) {
		var cards []*redis.IntCmd
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, pt := range e.parts {
				cards = append(cards, p.ZCard(ctx, pt.leaseKey), p.ZCard(ctx, pt.dueOf(benchProject)))
			}
			return nil
		})
		if err != nil {
			b.Fatalf("zcard: %v", err)
		}
		left := int64(0)
		for _, cmd := range cards {
			left += cmd.Val()
		}
		if left == 0 {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// benchCount sums cmd's answers over e's partitions (a missing key's
// error counts 0).
func benchCount(b *testing.B, c redis.UniversalClient, e *Engine, cmd func(redis.Pipeliner, *part) *redis.IntCmd) int64 {
	b.Helper()
	ctx := context.Background()
	var cmds []*redis.IntCmd
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, pt := range e.parts {
			cmds = append(cmds, cmd(p, pt))
		}
		return nil
	})
	n := int64(0)
	for _, c := range cmds {
		n += c.Val()
	}
	return n
}

func benchWaitHits(rc *benchReceiver, n int64, deadline time.Time) bool {
	for rc.hits.Load() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// benchAttempts sums riverhub_delivery_attempts_total{verdict} on reg.
func benchAttempts(b *testing.B, reg *prometheus.Registry, verdict string) float64 {
	b.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "riverhub_delivery_attempts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "verdict" && l.GetValue() == verdict {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// benchCPU is the CPU time used so far by Redis (INFO cpu, the whole
// server) and by this process.
type benchCPU struct{ redis, proc time.Duration }

func readCPU(b *testing.B, c redis.UniversalClient) benchCPU {
	b.Helper()
	s, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatalf("info cpu: %v", err)
	}
	var out benchCPU
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			out.redis += time.Duration(f * float64(time.Second))
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		out.proc = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// reportCPU reports the CPU Redis and this process spent per delivery
// since from.
func reportCPU(b *testing.B, c redis.UniversalClient, from benchCPU, n int) {
	b.Helper()
	to := readCPU(b, c)
	b.ReportMetric(float64((to.redis-from.redis).Microseconds())/float64(n), "redis-cpu-µs/delivery")
	b.ReportMetric(float64((to.proc-from.proc).Microseconds())/float64(n), "go-cpu-µs/delivery")
}

// benchFailedAttempts reports the attempts that did not succeed (verdict
// retry or dead) and logs what the first few of them recorded. Delivery i
// is channel(i)'s for endpoint i%10.
func benchFailedAttempts(b *testing.B, c redis.UniversalClient, e *Engine, reg *prometheus.Registry, n int, channel func(i int) string) {
	b.Helper()
	failed := benchAttempts(b, reg, "retry") + benchAttempts(b, reg, "dead")
	b.ReportMetric(failed, "failed-attempts")
	if failed == 0 {
		return
	}
	ctx := context.Background()
	hooks, _ := e.o.Endpoints.ProjectWebhooks(ctx, benchProject)
	errs := map[string]int{}
	for i := 0; i < n; i += 500 {
		cmds := make([]*redis.StringSliceCmd, 0, 500)
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k := i; k < min(i+500, n); k++ {
				w := hooks[k%len(hooks)].ID
				cmds = append(cmds, p.LRange(ctx, e.partOf(w).attKey(DeliveryID("task.completed", channel(k), w)), 0, -2))
			}
			return nil
		})
		for _, cmd := range cmds {
			for _, a := range cmd.Val() {
				var at Attempt
				if json.Unmarshal([]byte(a), &at) == nil && !at.Success {
					errs[at.Error]++
				}
			}
		}
	}
	b.Logf("%.0f attempts failed; their errors: %v", failed, errs)
}

func benchShutdown(e *Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.Shutdown(ctx)
}

// percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkDeliveryThroughput measures how fast one node sends and records
// deliveries to endpoints that answer 200 at once.
//
// preloaded: 50,000 deliveries (5,000 task.completed events of ~1 KiB × 10
// endpoints) are enqueued first; the clock runs from Start until the last
// one is recorded (its lease released and nothing due). steady: events are
// enqueued at a fixed rate while the engine sends; the latency is from the
// moment an event was meant to be enqueued to the receiver's answer.
//
// The ten endpoints share the one receiver (one host:port, as when several
// endpoints live on one service); tcp-conns counts the connections it
// accepted. redis-cpu is the whole Redis server's CPU time, go-cpu this
// process's (engine, receiver and load generator alike), per delivery.
func BenchmarkDeliveryThroughput(b *testing.B) {
	b.Run("preloaded", func(b *testing.B) {
		endpoints := benchEndpoints
		if v, _ := strconv.Atoi(os.Getenv("RIVERHUB_BENCH_ENDPOINTS")); v > 0 {
			endpoints = v
		}
		events := 50_000 / endpoints
		n := float64(events * endpoints)
		c, prefix := benchClient(b)
		rc := newBenchReceiver(b, nil)
		reg := prometheus.NewRegistry()
		e := New(c, Options{Prefix: prefix, Partitions: testPartitions(), Endpoints: newBenchHooks(endpoints, rc.URL),
			Log: zerolog.Nop(), Registerer: reg})
		b.Cleanup(func() { benchShutdown(e) })
		run := uint32(time.Now().UnixNano())
		bodies := make([][]byte, events)
		for i := range bodies {
			bodies[i] = benchBody(benchChannelID(run, i), 1024)
		}

		t0 := time.Now()
		benchEnqueue(b, e, events, 8, func(i int) Event {
			return Event{Type: "task.completed", ProjectID: benchProject, ChannelID: benchChannelID(run, i), Body: bodies[i]}
		})
		enqueueTook := time.Since(t0)

		b.ResetTimer()
		cpu0 := readCPU(b, c)
		start := time.Now()
		e.Start()
		deadline := start.Add(5 * time.Minute)
		sentAll := benchWaitHits(rc, int64(n), deadline)
		sent := time.Since(start)
		drained := benchWaitDrained(b, c, e, deadline)
		took := time.Since(start)
		b.StopTimer()
		reportCPU(b, c, cpu0, int(n))
		if !sentAll || !drained {
			b.Logf("gave up after %v: %d of %.0f requests received, drained=%v", took, rc.hits.Load(), n, drained)
		}

		benchShutdown(e)
		ok := benchAttempts(b, reg, "ok")
		benchFailedAttempts(b, c, e, reg, int(n), func(i int) string { return benchChannelID(run, i/endpoints) })
		b.ReportMetric(n/took.Seconds(), "deliveries/s")
		b.ReportMetric(n/sent.Seconds(), "sent/s")
		b.ReportMetric(n/enqueueTook.Seconds(), "enqueued/s")
		b.ReportMetric(float64(rc.conns.Load()), "tcp-conns")
		b.ReportMetric(float64(rc.hits.Load()-int64(n)), "duplicates")
		b.ReportMetric(n-ok, "not-recorded-ok")
	})

	b.Run("steady", func(b *testing.B) {
		const rate = 3_000 // deliveries/s, 300 events/s
		const seconds = 10
		const events = rate * seconds / benchEndpoints
		const n = events * benchEndpoints
		const interval = time.Second * benchEndpoints / rate
		c, prefix := benchClient(b)
		run := uint32(time.Now().UnixNano())
		index := make(map[string]int, events)
		for i := range events {
			index[benchChannelID(run, i)] = i
		}
		var startNS atomic.Int64 // when the first event is meant to be enqueued
		lats := make([]time.Duration, n)
		var got atomic.Int64
		rc := newBenchReceiver(b, func(r *http.Request, at time.Time) {
			i, ok := index[r.Header.Get("mr-channel-id")]
			if !ok {
				return
			}
			if k := got.Add(1) - 1; k < n {
				lats[k] = at.Sub(time.Unix(0, startNS.Load()).Add(time.Duration(i) * interval))
			}
		})
		reg := prometheus.NewRegistry()
		e := New(c, Options{Prefix: prefix, Partitions: testPartitions(), Endpoints: newBenchHooks(benchEndpoints, rc.URL),
			Log: zerolog.Nop(), Registerer: reg})
		b.Cleanup(func() { benchShutdown(e) })
		e.Start()
		time.Sleep(100 * time.Millisecond)

		b.ResetTimer()
		cpu0 := readCPU(b, c)
		start := time.Now().Add(10 * time.Millisecond)
		startNS.Store(start.UnixNano())
		jobs := make(chan int, events)
		enqLag := make([]time.Duration, events) // from the planned instant to Enqueue's return
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for i := range jobs {
					cid := benchChannelID(run, i)
					if err := e.Enqueue(context.Background(), Event{Type: "task.completed", ProjectID: benchProject,
						ChannelID: cid, Body: benchBody(cid, 1024)}); err != nil {
						b.Errorf("enqueue: %v", err)
					}
					enqLag[i] = time.Since(start.Add(time.Duration(i) * interval))
				}
			})
		}
		for i := range events {
			time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		deadline := time.Now().Add(5 * time.Minute)
		sentAll := benchWaitHits(rc, n, deadline)
		drained := benchWaitDrained(b, c, e, deadline)
		took := time.Since(start)
		b.StopTimer()
		reportCPU(b, c, cpu0, n)
		if !sentAll || !drained {
			b.Logf("gave up after %v: %d of %d requests received, drained=%v", took, rc.hits.Load(), n, drained)
		}

		benchShutdown(e)
		ok := benchAttempts(b, reg, "ok")
		benchFailedAttempts(b, c, e, reg, n, func(i int) string { return benchChannelID(run, i/benchEndpoints) })
		ls := lats[:min(got.Load(), n)]
		slices.Sort(ls)
		b.ReportMetric(n/took.Seconds(), "deliveries/s")
		b.ReportMetric(ms(percentile(ls, 0.50)), "p50-ms")
		b.ReportMetric(ms(percentile(ls, 0.99)), "p99-ms")
		b.ReportMetric(ms(percentile(ls, 1)), "max-ms")
		slices.Sort(enqLag)
		b.ReportMetric(ms(percentile(enqLag, 0.99)), "enqueue-p99-ms")
		b.ReportMetric(float64(rc.conns.Load()), "tcp-conns")
		b.ReportMetric(float64(rc.hits.Load()-n), "duplicates")
		b.ReportMetric(n-ok, "not-recorded-ok")
	})
}

// benchWrite writes deliveries [from, from+n) as enqueue.lua does (the
// hash and its due entry), in pipelines of 1,000 from 4 goroutines.
// retry writes them as record.lua leaves a delivery whose first attempt
// failed. dueAt gives each one's due time (unix ms); zadd false leaves them
// out of the due set.
func benchWrite(b *testing.B, c redis.UniversalClient, e *Engine, hooks benchHooks, run uint32, from, n int,
	retry, zadd bool, dueAt func(i int) int64) {
	b.Helper()
	const batch = 1000
	ctx := context.Background()
	created := time.Now().UTC().Format(time.RFC3339Nano)
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 4 {
		wg.Go(func() {
			for {
				lo := int(next.Add(batch) - batch)
				if lo >= from+n {
					return
				}
				hi := min(lo+batch, from+n)
				zs := map[*part][]redis.Z{}
				_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for i := lo; i < hi; i++ {
						cid := benchChannelID(run, i)
						w := hooks[i%len(hooks)]
						id := DeliveryID("task.completed", cid, w.ID)
						body := `{"type":"task.completed","channel_id":"` + cid + `","status":"success","data":{"ok":true}}`
						f := []any{"project_id", benchProject, "webhook_id", w.ID, "channel_id", cid, "event", "task.completed",
							"body", body, "attempts", 0, "tries", 0, "replays", 0, "status", "pending", "created_at", created}
						if retry {
							f = append(f, "attempts", 1, "tries", 1, "status", "retrying", "next_at", dueAt(i),
								"last_status", 503, "last_error", "status 503", "claim", "", "updated_at", created)
						}
						pt := e.partOf(w.ID)
						p.HSet(ctx, pt.dKey(id), f...)
						zs[pt] = append(zs[pt], redis.Z{Score: float64(dueAt(i)), Member: id})
					}
					for pt, z := range zs {
						if zadd {
							p.ZAdd(ctx, pt.dueOf(benchProject), z...)
							p.ZAddArgs(ctx, pt.projectsKey, redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(dueAt(from)), Member: benchProject}}})
						}
					}
					return nil
				})
				if err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("write deliveries: %v", *err)
	}
}

// usedMemory is INFO memory's used_memory.
func usedMemory(b *testing.B, c redis.UniversalClient) int64 {
	b.Helper()
	s, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatalf("info memory: %v", err)
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatalf("used_memory %q: %v", v, err)
			}
			return n
		}
	}
	b.Fatalf("no used_memory in INFO memory")
	return 0
}

// benchWaitMemory waits up to within for used_memory to fall to at most
// limit and returns the last reading.
func benchWaitMemory(b *testing.B, c redis.UniversalClient, limit int64, within time.Duration) int64 {
	b.Helper()
	deadline := time.Now().Add(within)
	for {
		m := usedMemory(b, c)
		if m <= limit || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const mib = 1 << 20

// BenchmarkSchedulerLateness measures how late an engine with the default
// options sends deliveries that become due while 1,000,000 others wait in
// the due set, due a month ahead. 2,000 deliveries (retries, as another
// node's record.lua leaves them) are due at known instants spread over 5 s,
// written straight into Redis, so the engine learns of them only by looking
// at the schedule: nothing pokes it. Lateness is the receiver's arrival time
// minus the due time.
//
// p50/p99/max: all 2,000 are written 1.5 s before the first is due (a retry
// is scheduled at least 5 s ahead). jit-*: 2,000 more, each written at its
// due instant with no nudge, as when another node reclaims a lease: this
// engine finds them at its next look at the schedule, at most maxIdle
// away. nudge-*: 2,000 more written the same way, each with the nudge
// another node publishes in the same pipeline when it enqueues, replays
// or puts back a delivery due now.
func BenchmarkSchedulerLateness(b *testing.B) {
	const waiting = 1_000_000
	const timed = 2_000
	const spread = 5 * time.Second
	const step = spread / timed
	c, prefix := benchClient(b)
	ctx := context.Background()

	var mu sync.Mutex
	arrivals := map[string]time.Time{} // webhook-id → first arrival
	rc := newBenchReceiver(b, func(r *http.Request, at time.Time) {
		mu.Lock()
		if id := r.Header.Get("webhook-id"); arrivals[id].IsZero() {
			arrivals[id] = at
		}
		mu.Unlock()
	})
	hooks := newBenchHooks(benchEndpoints, rc.URL)
	e := New(c, Options{Prefix: prefix, Endpoints: hooks, Log: zerolog.Nop()})
	b.Cleanup(func() { benchShutdown(e) })
	run := uint32(time.Now().UnixNano())

	mem0 := usedMemory(b, c)
	t0 := time.Now()
	far := time.Now().Add(30 * 24 * time.Hour).UnixMilli()
	benchWrite(b, c, e, hooks, run, 0, waiting, false, true, func(i int) int64 { return far + int64(i) })
	fillTook := time.Since(t0)
	mem1 := usedMemory(b, c)
	b.Logf("wrote %d waiting deliveries in %v (%.0f/s); used_memory %+.1f MiB (%.0f B each)",
		waiting, fillTook.Round(time.Millisecond), waiting/fillTook.Seconds(), float64(mem1-mem0)/mib, float64(mem1-mem0)/waiting)

	b.ResetTimer()
	e.Start()
	time.Sleep(300 * time.Millisecond) // it has looked, found nothing due, and sleeps

	// phase schedules deliveries [from, from+timed) and returns their
	// lateness, sorted, and how many never arrived. In jit mode it also
	// reports how far behind the due instants its own writes fell.
	var writeLag time.Duration
	phase := func(from int, jit, nudge bool) ([]time.Duration, int) {
		ids := make([]string, timed)
		for i := range ids {
			ids[i] = DeliveryID("task.completed", benchChannelID(run, from+i), hooks[(from+i)%len(hooks)].ID)
		}
		base := time.Now().Add(1500 * time.Millisecond).UnixMilli()
		dueAt := func(i int) int64 { return base + int64(time.Duration(i-from)*step/time.Millisecond) }
		benchWrite(b, c, e, hooks, run, from, timed, true, !jit, dueAt)
		if jit {
			for i := from; i < from+timed; i++ {
				time.Sleep(time.Until(time.UnixMilli(dueAt(i))))
				due := redis.Z{Score: float64(dueAt(i)), Member: ids[i-from]}
				proj := redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(dueAt(i)), Member: benchProject}}}
				pt := e.partOf(hooks[i%len(hooks)].ID)
				if nudge {
					if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
						p.ZAdd(ctx, pt.dueOf(benchProject), due)
						p.ZAddArgs(ctx, pt.projectsKey, proj)
						e.nudge(ctx, p, time.UnixMilli(dueAt(i)), time.Now(), e.only(pt.k))
						return nil
					}); err != nil {
						b.Fatalf("schedule with a nudge: %v", err)
					}
				} else {
					if err := c.ZAdd(ctx, pt.dueOf(benchProject), due).Err(); err != nil {
						b.Fatalf("zadd: %v", err)
					}
					if err := c.ZAddArgs(ctx, pt.projectsKey, proj).Err(); err != nil {
						b.Fatalf("zadd: %v", err)
					}
				}
				writeLag = max(writeLag, time.Since(time.UnixMilli(dueAt(i))))
			}
		}
		deadline := time.UnixMilli(dueAt(from + timed - 1)).Add(10 * time.Second)
		var late []time.Duration
		for {
			late = late[:0]
			mu.Lock()
			for i, id := range ids {
				if at, ok := arrivals[id]; ok {
					late = append(late, at.Sub(time.UnixMilli(dueAt(from+i))))
				}
			}
			mu.Unlock()
			if len(late) == timed || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		slices.Sort(late)
		return late, timed - len(late)
	}
	ahead, missing := phase(waiting, false, false)
	jit, jitMissing := phase(waiting+timed, true, false)
	nudged, nudgedMissing := phase(waiting+2*timed, true, true)
	b.StopTimer()

	b.ReportMetric(ms(percentile(ahead, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(ahead, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(ahead, 1)), "max-ms")
	b.ReportMetric(ms(percentile(jit, 0.50)), "jit-p50-ms")
	b.ReportMetric(ms(percentile(jit, 0.99)), "jit-p99-ms")
	b.ReportMetric(ms(percentile(jit, 1)), "jit-max-ms")
	b.ReportMetric(ms(percentile(nudged, 0.50)), "nudge-p50-ms")
	b.ReportMetric(ms(percentile(nudged, 0.99)), "nudge-p99-ms")
	b.ReportMetric(ms(percentile(nudged, 1)), "nudge-max-ms")
	b.ReportMetric(ms(writeLag), "jit-write-lag-max-ms")
	b.ReportMetric(float64(missing+jitMissing+nudgedMissing), "missing")

	benchShutdown(e)
	if n := benchCount(b, c, e, func(p redis.Pipeliner, pt *part) *redis.IntCmd { return p.ZCard(ctx, pt.dueOf(benchProject)) }); n != waiting {
		b.Logf("due sets hold %d deliveries after the run, want %d", n, waiting)
	}
	t0 = time.Now()
	rdbtest.Drop(c, prefix)
	dropTook := time.Since(t0)
	mem2 := benchWaitMemory(b, c, mem0+8*mib, 30*time.Second)
	b.ReportMetric(float64(mem2-mem0)/mib, "MiB-left-after-drop")
	b.Logf("dropped the prefix in %v; used_memory %.1f MiB before the fill, %.1f MiB filled, %.1f MiB after the drop",
		dropTook.Round(time.Millisecond), float64(mem0)/mib, float64(mem1)/mib, float64(mem2)/mib)
}

// BenchmarkMemoryPerWaitingDelivery measures what a waiting delivery costs
// in Redis: used_memory before and after enqueueing 100,000 deliveries
// through Engine.Enqueue (what enqueue.lua writes: the hash and the due
// entry), nothing else of this process writing meanwhile. Bodies of 64
// and 65 bytes straddle Redis's default hash-max-listpack-value (64): a
// longer field turns the hash from a listpack into a hashtable. Three rounds,
// each on a fresh prefix dropped before the next; the median is reported.
// MEMORY USAGE of a sample of the hashes and of the due set cross-checks it
// against other processes using the same Redis.
func BenchmarkMemoryPerWaitingDelivery(b *testing.B) {
	for _, size := range []int{0, 64, 65, 1024} {
		b.Run(fmt.Sprintf("body=%dB", size), func(b *testing.B) {
			const events = 10_000
			const n = events * benchEndpoints
			c, _ := benchClient(b)
			ctx := context.Background()
			hooks := newBenchHooks(benchEndpoints, "http://127.0.0.1:9/")
			var per, hashB, zsetB []float64
			var encoding string
			for round := range 3 {
				prefix := rdbtest.Prefix()
				b.Cleanup(func() { rdbtest.Drop(c, prefix) })
				e := New(c, Options{Prefix: prefix, Endpoints: hooks, Log: zerolog.Nop()})
				run := uint32(time.Now().UnixNano())
				body := benchSmallBody(size)
				if size > 512 {
					body = benchBody(benchChannelID(run, 0), size)
				}
				time.Sleep(300 * time.Millisecond)
				before := usedMemory(b, c)
				benchEnqueue(b, e, events, 8, func(i int) Event {
					return Event{Type: "task.completed", ProjectID: benchProject, ChannelID: benchChannelID(run, i), Body: body}
				})
				time.Sleep(300 * time.Millisecond)
				after := usedMemory(b, c)
				per = append(per, float64(after-before)/n)

				// Cross-check: MEMORY USAGE of 100 of the hashes and of the due set.
				var sample []*redis.IntCmd
				_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for i := 0; i < events; i += 100 {
						id := DeliveryID("task.completed", benchChannelID(run, i), hooks[i%len(hooks)].ID)
						sample = append(sample, p.MemoryUsage(ctx, e.partOf(hooks[i%len(hooks)].ID).dKey(id), 0))
					}
					return nil
				})
				if err != nil {
					b.Fatalf("memory usage: %v", err)
				}
				sum := int64(0)
				for _, s := range sample {
					sum += s.Val()
				}
				hashB = append(hashB, float64(sum)/float64(len(sample)))
				zs := benchCount(b, c, e, func(p redis.Pipeliner, pt *part) *redis.IntCmd {
					return p.MemoryUsage(ctx, pt.dueOf(benchProject), 0)
				})
				zsetB = append(zsetB, float64(zs)/n)
				id := DeliveryID("task.completed", benchChannelID(run, 0), hooks[0].ID)
				encoding = c.ObjectEncoding(ctx, e.partOf(hooks[0].ID).dKey(id)).Val()
				b.Logf("round %d: used_memory %+d B for %d deliveries = %.1f B each; MEMORY USAGE hash %.1f B + due entry %.1f B; hash encoding %s",
					round+1, after-before, n, per[round], hashB[round], zsetB[round], encoding)

				benchShutdown(e)
				rdbtest.Drop(c, prefix)
				benchWaitMemory(b, c, before+1*mib, 10*time.Second)
			}
			median := func(xs []float64) float64 { s := slices.Clone(xs); slices.Sort(s); return s[len(s)/2] }
			b.ReportMetric(median(per), "B/delivery")
			if size > 0 {
				b.ReportMetric(median(per)-float64(size), "B/delivery-excl-body")
			}
			b.ReportMetric(median(hashB), "hash-B")
			b.ReportMetric(median(zsetB), "due-entry-B")
		})
	}
}
