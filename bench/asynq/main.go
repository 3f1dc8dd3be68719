// Command asynq is the peer measurement beside riverhub's BenchmarkThroughput
// (BENCHMARKS.md): an asynq server with a no-op handler on the Redis at
// 127.0.0.1:6379 (database -db, 9 by default, its keys under asynq:).
//
// By default 64 goroutines enqueue tasks for 10 s, each waiting while more
// than -backlog are enqueued and not done (the queue does not grow, as in
// BenchmarkThroughput), and it reports the tasks completed in the window
// per second, and Redis CPU and commands per task (INFO). With -preload N
// it enqueues N tasks first, then times their processing alone.
//
// It is a module of its own, so that the peer is no dependency of riverhub:
//
//	cd bench/asynq && go run . [-preload 50000]
package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

func info(rc *redis.Client, section string) map[string]string {
	s, _ := rc.Info(context.Background(), section).Result()
	m := map[string]string{}
	for _, l := range strings.Split(s, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = v
		}
	}
	return m
}

func cpu(rc *redis.Client) float64 {
	m := info(rc, "cpu")
	a, _ := strconv.ParseFloat(m["used_cpu_sys"], 64)
	b, _ := strconv.ParseFloat(m["used_cpu_user"], 64)
	return a + b
}

func calls(rc *redis.Client) float64 {
	var n float64
	for k, v := range info(rc, "commandstats") {
		if !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		f, _, _ := strings.Cut(v, ",")
		x, _ := strconv.ParseFloat(strings.TrimPrefix(f, "calls="), 64)
		n += x
	}
	return n
}

func main() {
	db := flag.Int("db", 9, "redis db")
	conc := flag.Int("concurrency", 64, "server concurrency")
	preload := flag.Int("preload", 0, "enqueue this many first, then time their processing")
	backlog := flag.Int("backlog", 1000, "most tasks enqueued and not yet done")
	flag.Parse()
	opt := asynq.RedisClientOpt{Addr: "127.0.0.1:6379", DB: *db}
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DB: *db})
	insp := asynq.NewInspector(opt)
	_, _ = insp.DeleteAllPendingTasks("default")
	var done atomic.Int64
	if *preload > 0 {
		cl := asynq.NewClient(opt)
		payload := []byte(`{"workflow":"m","messages":[{"role":"user","content":"hello"}],"customer_data":{"user_id":"u1"}}`)
		var wg sync.WaitGroup
		per := *preload / 64
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range per {
					if _, err := cl.Enqueue(asynq.NewTask("noop", payload)); err != nil {
						panic(err)
					}
				}
			}()
		}
		wg.Wait()
		total := int64(per * 64)
		srv := asynq.NewServer(opt, asynq.Config{Concurrency: *conc, LogLevel: asynq.ErrorLevel})
		mux := asynq.NewServeMux()
		mux.HandleFunc("noop", func(ctx context.Context, t *asynq.Task) error { done.Add(1); return nil })
		c0, k0 := cpu(rc), calls(rc)
		start := time.Now()
		if err := srv.Start(mux); err != nil {
			panic(err)
		}
		for done.Load() < total {
			time.Sleep(time.Millisecond)
		}
		el := time.Since(start)
		fmt.Printf("asynq preloaded %d: processed/s %.0f  redis-µs/task %.1f  redis-cmds/task %.1f\n", total,
			float64(total)/el.Seconds(), (cpu(rc)-c0)/float64(total)*1e6, (calls(rc)-k0)/float64(total))
		srv.Shutdown()
		return
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: *conc, LogLevel: asynq.ErrorLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(ctx context.Context, t *asynq.Task) error { done.Add(1); return nil })
	if err := srv.Start(mux); err != nil {
		panic(err)
	}
	cl := asynq.NewClient(opt)
	payload := []byte(`{"workflow":"m","messages":[{"role":"user","content":"hello"}],"customer_data":{"user_id":"u1"}}`)
	time.Sleep(time.Second)
	const window = 10 * time.Second
	d0, c0, k0 := done.Load(), cpu(rc), calls(rc)
	var enq atomic.Int64
	stop := time.Now().Add(window)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				for enq.Load()-(done.Load()-d0) > int64(*backlog) {
					time.Sleep(time.Millisecond)
				}
				if _, err := cl.Enqueue(asynq.NewTask("noop", payload), asynq.Retention(0)); err != nil {
					panic(err)
				}
				enq.Add(1)
			}
		}()
	}
	wg.Wait()
	d := float64(done.Load() - d0)
	fmt.Printf("asynq: completed/s %.0f  enqueued/s %.0f  redis-µs/task %.1f  redis-cmds/task %.1f\n",
		d/window.Seconds(), float64(enq.Load())/window.Seconds(), (cpu(rc)-c0)/d*1e6, (calls(rc)-k0)/d)
	for done.Load()-d0 < enq.Load() {
		time.Sleep(50 * time.Millisecond)
	}
	srv.Shutdown()
}
