package channels

// Benchmarks of event-driven channels on a real Redis (REDIS_URL); they
// report figures and never fail on speed:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Deadline -benchtime=1x -count=3 ./channels/

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wire"
	"github.com/riverhub/riverhub/project"
)

func benchRedis(b *testing.B) (redis.UniversalClient, string) {
	b.Helper()
	if os.Getenv("REDIS_URL") == "" {
		b.Skip("REDIS_URL is not set: these benchmarks need a real Redis")
	}
	return rdbtest.New(b)
}

func usedMemory(b *testing.B, c redis.UniversalClient) int64 {
	b.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// generate submits n event-driven tasks through the real path (record,
// queue, workers, completion, room publish) and waits until every one
// awaits its callback.
func generate(b *testing.B, s *Service, n int, wait time.Duration) []string {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	var wg sync.WaitGroup
	const submitters = 32
	for w := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += submitters {
				t := eventTask()
				t.Workflow.CallbackTimeoutSeconds = int(wait / time.Second)
				ids[i] = t.ChannelID
				for {
					err := s.Submit(ctx, t)
					if err == nil {
						break
					}
					if err != ErrQueueFull {
						b.Error(err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		depth, _ := s.QueueDepth(ctx)
		leased, _ := s.rdb.ZCard(ctx, s.q.keys[0].lease).Result()
		if depth == 0 && leased == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("generation did not finish: %d queued, %d running", depth, leased)
		}
	}
	return ids
}

// BenchmarkDeadlineLateness: 100,000 channels await their callback (due in
// 10 minutes) while 5,000 more, due within the next 10 seconds, time out;
// it reports how late each fired after its deadline (the timeline's
// timeout entry against the stored deadline) and what a waiting channel
// costs in Redis (used_memory growth over the 100,000, divided).
func BenchmarkDeadlineLateness(b *testing.B) {
	for range b.N {
		c, prefix := benchRedis(b)
		ctx := context.Background()
		h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop()})
		s := newService(b, c, prefix, answer(`{"title":"Inception","year":2010}`),
			Options{Publisher: h, Workers: 256, MaxQueue: 1 << 20})
		s.Start()
		before := usedMemory(b, c)
		t0 := time.Now()
		const waiting, measured = 100_000, 5_000
		sample := generate(b, s, waiting, 10*time.Minute)[0]
		gen := time.Since(t0)
		perChannel := float64(usedMemory(b, c)-before) / waiting
		var parts []string
		for _, k := range []string{s.chKey(sample), s.chKey(sample) + ":hist"} {
			n, _ := c.MemoryUsage(ctx, k, 0).Result()
			parts = append(parts, fmt.Sprintf("%s %d B", k[len(prefix):], n))
		}
		fields, _ := c.HGetAll(ctx, s.chKey(sample)).Result()
		var sizes []string
		for f, v := range fields {
			sizes = append(sizes, fmt.Sprintf("%s=%d", f, len(v)))
		}
		slices.Sort(sizes)
		b.Logf("one waiting channel: %s; hash fields (bytes): %s", strings.Join(parts, ", "), strings.Join(sizes, " "))
		if n, _ := c.ZCard(ctx, s.dueKeys[0]).Result(); n != waiting {
			b.Fatalf("%d deadlines set, want %d", n, waiting)
		}
		// The measured ones: generated over ~1 s, each due 10 s later.
		ids := generate(b, s, measured, 10*time.Second)
		last := time.Now()
		for {
			n, _ := c.ZCount(ctx, s.dueKeys[0], "-inf", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)).Result()
			if n == 0 {
				break
			}
			if time.Since(last) > 30*time.Second {
				b.Fatalf("%d deadlines still due", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		late := make([]time.Duration, 0, measured)
		for _, id := range ids {
			v, _ := c.HMGet(ctx, s.chKey(id), "deadline", "status").Result()
			dl, _ := strconv.ParseInt(v[0].(string), 10, 64)
			tl, _ := s.timeline(ctx, id)
			var e Entry
			for _, raw := range tl {
				if _ = json.Unmarshal([]byte(raw), &e); e.Type == "timeout" {
					break
				}
			}
			at, err := time.Parse(wire.TimeFormat, e.At)
			if e.Type != "timeout" || err != nil {
				b.Fatalf("channel %s: no timeout entry in %s (status %v)", id, tl, v[1])
			}
			late = append(late, at.Sub(time.UnixMilli(dl)))
		}
		slices.Sort(late)
		q := func(p float64) float64 { return float64(late[int(float64(len(late)-1)*p)]) / float64(time.Millisecond) }
		b.ReportMetric(q(0.50), "late-p50-ms")
		b.ReportMetric(q(0.99), "late-p99-ms")
		b.ReportMetric(q(1), "late-max-ms")
		b.ReportMetric(perChannel, "B/waiting-channel")
		b.ReportMetric(waiting/gen.Seconds(), "generated/s")
	}
}

// v7At is a UUIDv7 for a channel created at ms.
func v7At(ms int64, rnd *rand.Rand) string {
	var u uuid.UUID
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	for i := 6; i < 16; i++ {
		u[i] = byte(rnd.Uint32())
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u.String()
}

// BenchmarkLogsPage: one project retains 1,000,000 channels (created over
// the last 6 days: 8 workflows, two of them event-driven; mostly
// successes, some errors, a few awaiting callbacks), written as the real
// path writes their records' listed fields and their log indexes. Then
// 2,000 pages are read with filters drawn from a mix (none, workflow,
// event name, status, workflow + status, event + status, a day's range,
// a rare combination, and workflow + event name, the one combination
// without an index of its own, here matching nothing, so that each page
// scans its full budget), a third of them following the cursor to the
// next page; it reports each page's latency.
func BenchmarkLogsPage(b *testing.B) {
	for range b.N {
		c, prefix := benchRedis(b)
		ctx := context.Background()
		s := newService(b, c, prefix, answer(`{}`), Options{})
		const n, pid = 1_000_000, "p1"
		rnd := rand.New(rand.NewPCG(1, 2))
		now := time.Now()
		span := int64(6 * 24 * time.Hour / time.Millisecond)
		t0 := time.Now()
		const chunk = 2000
		for base := 0; base < n; base += chunk {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for range chunk {
					ms := now.UnixMilli() - rnd.Int64N(span)
					t := &Task{ChannelID: v7At(ms, rnd), ProjectID: pid}
					w := rnd.IntN(8)
					t.Workflow.Name = fmt.Sprintf("wf%d", w)
					st := StatusSuccess
					if w >= 6 {
						t.Workflow.EventName = fmt.Sprintf("ev_%d", w)
						st = StatusCompleted
					}
					switch r := rnd.IntN(100); {
					case r < 5:
						st = StatusError
					case r < 8 && w >= 6:
						st = StatusAIGenerated
					}
					at := wire.Stamp(time.UnixMilli(ms))
					p.HSet(ctx, s.chKey(t.ChannelID), "project_id", pid, "workflow", t.Workflow.Name,
						"event_name", t.Workflow.EventName, "status", string(st), "created_at", at, "updated_at", at)
					var m rdb.Merge // flushed per write: a move must follow its add
					s.indexNew(&m, t, st, now)
					m.Flush(ctx, p)
					if st != StatusPending {
						s.indexMove(&m, t.logRef(), StatusPending, st)
						m.Flush(ctx, p)
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("seeded %d channels in %v", n, time.Since(t0))
		day := now.Add(-72 * time.Hour)
		filters := []struct {
			name string
			f    LogFilter
		}{
			{"none", LogFilter{}},
			{"workflow", LogFilter{Workflow: "wf3"}},
			{"event", LogFilter{EventName: "ev_7"}},
			{"status=error", LogFilter{Status: StatusError}},
			{"status=ai_generated", LogFilter{Status: StatusAIGenerated}},
			{"workflow+status", LogFilter{Workflow: "wf2", Status: StatusError}},
			{"event+status", LogFilter{EventName: "ev_6", Status: StatusAIGenerated}},
			{"day", LogFilter{From: day, To: day.Add(24 * time.Hour)}},
			{"workflow+day", LogFilter{Workflow: "wf5", From: day, To: day.Add(24 * time.Hour)}},
			{"rare: standard workflow awaiting callback", LogFilter{Workflow: "wf1", Status: StatusAIGenerated}},
			{"worst: workflow + another's event (a scan)", LogFilter{Workflow: "wf6", EventName: "ev_7"}},
		}
		var all []time.Duration
		per := map[string][]time.Duration{}
		for i := range 2000 {
			f := filters[i%len(filters)]
			start := time.Now()
			page, err := s.Logs(ctx, pid, f.f, project.ListParams{Limit: 50})
			d := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if i%3 == 0 && page.NextCursor != nil {
				start = time.Now()
				if _, err := s.Logs(ctx, pid, f.f, project.ListParams{Limit: 50, Cursor: *page.NextCursor}); err != nil {
					b.Fatal(err)
				}
				d2 := time.Since(start)
				all = append(all, d2)
				per[f.name] = append(per[f.name], d2)
			}
			all = append(all, d)
			per[f.name] = append(per[f.name], d)
		}
		q := func(d []time.Duration, p float64) float64 {
			slices.Sort(d)
			return float64(d[int(float64(len(d)-1)*p)]) / float64(time.Millisecond)
		}
		for _, f := range filters {
			b.Logf("%-45s p50 %.2f ms  p99 %.2f ms", f.name, q(per[f.name], .5), q(per[f.name], .99))
		}
		b.ReportMetric(q(all, .50), "p50-ms")
		b.ReportMetric(q(all, .99), "p99-ms")
		b.ReportMetric(float64(len(all)), "pages")
	}
}

// BenchmarkFairQueueWait: project A has 50,000 tasks waiting (a provider
// taking 10 ms each, 64 workers: at most 6,400 starts/s) while project B submits 100 tasks per
// second for 5 s; it reports B's queue wait, from Submit to the start of
// its run (status generating, the provider called), and how much of A's
// backlog was left at the end (it must not have drained for the figure to
// mean anything). With one queue for all, B's tasks would wait for A's
// whole backlog.
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench FairQueueWait -benchtime=1x -count=3 ./channels/
func BenchmarkFairQueueWait(b *testing.B) {
	for range b.N {
		c, prefix := benchRedis(b)
		ctx := context.Background()
		var mu sync.Mutex
		started := map[string]time.Time{}
		runner := runnerFunc(func(ctx context.Context, req ai.Request) (ai.Result, error) {
			if content := req.Messages[0].Content; content != "A" {
				mu.Lock()
				started[content] = time.Now()
				mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
			return ai.Result{Data: []byte(`{}`), Provider: "mock", Model: "m"}, nil
		})
		s := newService(b, c, prefix, runner, Options{Workers: 64, MaxQueue: 1 << 20, ProjectMaxQueue: 1 << 20})
		const backlog, rate, window = 50_000, 100, 5 * time.Second
		fill(b, s, "A", backlog)
		s.Start()
		total := int(rate * window.Seconds())
		submitted := make(map[string]time.Time, total)
		t0 := time.Now()
		for i := range total {
			time.Sleep(time.Until(t0.Add(time.Duration(i) * time.Second / rate)))
			content := "B" + strconv.Itoa(i)
			submitted[content] = time.Now()
			if err := s.Submit(ctx, projectTask("B", content)); err != nil {
				b.Fatal(err)
			}
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(started)
			mu.Unlock()
			if n == total {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of B's %d tasks started", n, total)
			}
		}
		left, _ := s.ProjectQueueDepth(ctx, "A")
		waits := make([]time.Duration, 0, total)
		mu.Lock()
		for content, at := range started {
			waits = append(waits, at.Sub(submitted[content]))
		}
		mu.Unlock()
		slices.Sort(waits)
		q := func(p float64) float64 {
			return float64(waits[int(float64(len(waits)-1)*p)]) / float64(time.Millisecond)
		}
		b.ReportMetric(q(0.50), "wait-p50-ms")
		b.ReportMetric(q(0.99), "wait-p99-ms")
		b.ReportMetric(q(1), "wait-max-ms")
		b.ReportMetric(float64(left), "A-left")
		b.ReportMetric(float64(backlog-left)/time.Since(t0).Seconds(), "A-started/s")
	}
}

// BenchmarkFold measures folding (fold.go) on its own: n standard tasks
// (BENCH_TASKS, default 20,000) run to their end through the real path
// with a room publisher, their hot window is then made to have passed, and
// the node folds them all. It reports channels folded per second, Redis
// commands and Redis CPU per fold, and the bytes Redis holds per channel
// before and after (the log indexes included). Folding has to keep up
// with the tasks finishing: the goal is at least twice the task
// throughput (BenchmarkThroughput in e2e).
func BenchmarkFold(b *testing.B) {
	c, prefix := benchRedis(b)
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("BENCH_TASKS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		h := hub.New(c, hub.Options{Prefix: prefix, Log: zerolog.Nop(), Record: RecordKey(prefix)})
		s := newService(b, c, prefix, answer(`{"title":"Inception","year":2010}`),
			Options{Publisher: h, Workers: 256, MaxQueue: 1 << 20, HotWindow: time.Hour})
		s.Start()
		before := usedMemory(b, c)
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Go(func() {
				for i := w; i < n; i += 32 {
					if err := s.Submit(ctx, newTask()); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if due, _ := c.ZCard(ctx, s.foldKeys[0]).Result(); int(due) >= n {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the tasks did not settle within 5 minutes")
			}
		}
		settled := usedMemory(b, c)
		// The hot window has passed: every entry due now.
		ids, _ := c.ZRange(ctx, s.foldKeys[0], 0, -1).Result()
		zs := make([]redis.Z, len(ids))
		for i, id := range ids {
			zs[i] = redis.Z{Score: 0, Member: id}
		}
		c.ZAdd(ctx, s.foldKeys[0], zs...)
		cpu0, calls0 := redisCPU(b, c), redisCalls(b, c)
		b.StartTimer()
		t0 := time.Now()
		s.foldAllDue()
		elapsed := time.Since(t0)
		b.StopTimer()
		if left, _ := c.ZCard(ctx, s.foldKeys[0]).Result(); left != 0 {
			b.Fatalf("%d channels left unfolded", left)
		}
		folded := usedMemory(b, c)
		b.ReportMetric(float64(n)/elapsed.Seconds(), "folded/s")
		b.ReportMetric((redisCPU(b, c)-cpu0)/float64(n)*1e6, "redis-µs/fold")
		b.ReportMetric((redisCalls(b, c)-calls0)/float64(n), "redis-cmds/fold")
		b.ReportMetric(float64(settled-before)/float64(n), "used-B/settled")
		b.ReportMetric(float64(folded-before)/float64(n), "used-B/folded")
		_ = s.Shutdown(ctx)
		rdbtest.Drop(c, prefix)
	}
}

func redisCPU(b *testing.B, c redis.UniversalClient) float64 {
	return infoFloat(b, c, "cpu", "used_cpu_sys") + infoFloat(b, c, "cpu", "used_cpu_user")
}

// redisCalls is INFO commandstats' calls, all commands.
func redisCalls(b *testing.B, c redis.UniversalClient) float64 {
	b.Helper()
	var total float64
	for _, line := range strings.Split(c.Info(context.Background(), "commandstats").Val(), "\r\n") {
		if _, rest, ok := strings.Cut(line, ":calls="); ok {
			n, _ := strconv.ParseFloat(strings.SplitN(rest, ",", 2)[0], 64)
			total += n
		}
	}
	return total
}

func infoFloat(b *testing.B, c redis.UniversalClient, section, field string) float64 {
	b.Helper()
	for _, line := range strings.Split(c.Info(context.Background(), section).Val(), "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	b.Fatalf("no %s in INFO %s", field, section)
	return 0
}
