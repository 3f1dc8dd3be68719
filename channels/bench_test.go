package channels

// Benchmarks of event-driven channels on a real Redis (REDIS_URL); they
// report figures and never fail on speed:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Deadline -benchtime=1x -count=3 ./channels/

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/rdb/rdbtest"
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
		leased, _ := s.rdb.ZCard(ctx, s.leaseKey).Result()
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
		for _, k := range []string{s.chKey(sample), s.tlKey(sample), s.chKey(sample) + ":hist", s.chKey(sample) + ":seq"} {
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
		if n, _ := c.ZCard(ctx, s.dueKey).Result(); n != waiting {
			b.Fatalf("%d deadlines set, want %d", n, waiting)
		}
		// The measured ones: generated over ~1 s, each due 10 s later.
		ids := generate(b, s, measured, 10*time.Second)
		last := time.Now()
		for {
			n, _ := c.ZCount(ctx, s.dueKey, "-inf", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)).Result()
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
			tl, _ := c.LRange(ctx, s.tlKey(id), -1, -1).Result()
			var e Entry
			if len(tl) == 1 {
				_ = json.Unmarshal([]byte(tl[0]), &e)
			}
			at, err := time.Parse(timeFormat, e.At)
			if e.Type != "timeout" || err != nil {
				b.Fatalf("channel %s: last entry %s (status %v)", id, tl, v[1])
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
