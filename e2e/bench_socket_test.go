package e2e

// Realtime benchmarks across two nodes (BENCHMARKS.md, "Realtime hub"):
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench CrossNodePublish -benchtime=1x -count=3 .
//
// Server memory per socket is measured with the load tool against a built
// binary instead (cmd/wsload -rss-pid): in this process the client's
// sockets would count as the server's.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// BenchmarkCrossNodePublish measures publish-to-receive latency across two
// nodes of one deployment: subscribers are joined on node B, each to its
// own channel (an event-driven task submitted on node A, generated and
// awaiting its backend's callback), and one message per channel is caused
// at a fixed 1,000/s (open loop: a slow answer does not slow the sender)
// for 5 s. Latency runs from just before the call to the arrival of the
// `response` frame on B's socket.
//
//   - callback: the backend's HTTP call, POST /v1/callback/{channel_id} to
//     node A, which settles the task and publishes its final message; what
//     a user's browser waits for. Sent by the lean client of
//     BenchmarkThroughput (BENCH_CLIENT=net/http: net/http's), one
//     keep-alive connection per call in flight.
//   - publish: hub.Publish called directly on a hub of the same deployment
//     (what node A's task code calls): the Redis script, pub/sub and node
//     B's fan-out only.
//
// A channel is a task's own, so each message needs its own channel and its
// own socket: 5,000 sockets (plus 200 for warming up) on node B. The
// socket cannot be joined before POST /v1/ai/async answers (the answer
// names the channel) and a zero-delay task is done by then, so a submit
// would time a join and a history replay, not a publish.
//
// Metrics: p50-ms, p99-ms, max-ms (call to frame); call-p99-ms (the call's
// own answer); msg/s (the rate achieved); lost (messages not received
// within 10 s); redis-cores and others-cores (CPU used meanwhile by Redis
// and by everything else outside this process and its nodes: a run beside
// other work is not a clean one); nodes-cores (the nodes' processes);
// self-cores (this process: the load generator and its 5,200 sockets, and
// the nodes too unless BENCH_PROCESS is set); self-gcs and self-B/msg (this
// process's collections in the window and what it allocated per message).
//
// BENCH_HOOK=1 gives the project a webhook endpoint (a local receiver
// answering 200): the tasks' task.ai_generated deliveries go out, and each
// callback's settlement cancels their retries, as in a deployment whose
// backend learns of its tasks by webhook.
//
// BENCH_CPUPROFILE=file writes a CPU profile of this process over the
// measured window only (the nodes too, unless BENCH_PROCESS is set).
//
// BENCH_PROCESS=1 runs nodes A and B as processes of their own, built
// (go build) from the tree the test binary runs in: to compare two trees,
// run each binary from its own tree's e2e directory.
// This process's garbage collector is then off for the window (quietGC),
// as bench/centrifugo's is: the load generator's collections are not the
// nodes' latency. BENCH_SELF_GC=1 leaves it on.
func BenchmarkCrossNodePublish(b *testing.B) {
	b.Run("callback", func(b *testing.B) {
		benchCrossNode(b, func(x *crossNode, i int) error {
			body := fmt.Appendf(nil, `{"data":{"i":%d}}`, i)
			code, out, err := x.calls.post("/v1/callback/"+x.chans[i].cid, body)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("callback answered %d: %s", code, out)
			}
			return err
		}, "completed")
	})
	b.Run("publish", func(b *testing.B) {
		benchCrossNode(b, func(x *crossNode, i int) error {
			ch := x.chans[i]
			return x.pub.Publish(context.Background(), ch.pid, ch.cid, fmt.Appendf(nil, `{"status":"bench","i":%d}`, i))
		}, "bench")
	})
}

// crossNode is two nodes on one Redis prefix and the channels under test.
type crossNode struct {
	a, b  *node
	pub   *hub.Hub    // a third publisher of the deployment (publish case)
	calls *callerPool // the backend's calls to node A (callback case)
	chans []*benchChannel
}

// callerPool is the load generator's clients to one node, each a
// keep-alive connection (newSubmitter: the lean client by default), one
// per call in flight: an open loop's calls overlap when answers are slow.
type callerPool struct {
	base, key string
	mu        sync.Mutex
	idle      []submitter
}

func (p *callerPool) post(path string, body []byte) (int, []byte, error) {
	p.mu.Lock()
	var c submitter
	if n := len(p.idle); n > 0 {
		c, p.idle = p.idle[n-1], p.idle[:n-1]
	}
	p.mu.Unlock()
	if c == nil {
		c = newSubmitter(p.base, p.key)
	}
	code, out, err := c.post(path, body)
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	return code, out, err
}

func (p *callerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		c.close()
	}
	p.idle = nil
}

// benchChannel is one channel and its subscriber on node B.
type benchChannel struct {
	pid, cid, topic, token string

	conn    *websocket.Conn
	ready   chan struct{} // closed when the socket has the channel's ai_generated message
	arrived chan struct{} // closed when the awaited message has arrived
	at      time.Time     // its arrival; written before arrived is closed
}

func benchCrossNode(b *testing.B, cause func(x *crossNode, i int) error, want string) {
	const (
		window = 5 * time.Second
		warm   = 200
	)
	rate := 1000 // messages/s; BENCH_RATE sets another
	if v, err := strconv.Atoi(os.Getenv("BENCH_RATE")); err == nil && v > 0 {
		rate = v
	}
	// BENCH_SAMPLE=k joins a socket to one channel in k only (the
	// latencies and losses are those channels'; every channel still gets
	// its message): a process has too few files for a socket per channel
	// at 5,000/s.
	sample := 1
	if v, err := strconv.Atoi(os.Getenv("BENCH_SAMPLE")); err == nil && v > 1 {
		sample = v
	}
	total := int(float64(rate) * window.Seconds())
	url := testRedisURL(b)
	prefix := rdbtest.Prefix()
	b.Cleanup(func() { dropPrefix(b, url, prefix) })
	env := testEnv(b, url, prefix, "RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000")
	start := startNode
	var pids []int                        // the nodes' processes
	if os.Getenv("BENCH_PROCESS") != "" { // each node a process of its own, built from this tree
		bin := buildBinary(b)
		start = func(tb testing.TB, env map[string]string) *node {
			p := startProcess(tb, bin, env)
			pids = append(pids, p.cmd.Process.Pid)
			return p.node
		}
	}
	x := &crossNode{a: start(b, env), b: start(b, env)}
	x.calls = &callerPool{base: x.a.base, key: x.a.key}
	b.Cleanup(x.calls.close)
	x.a.must(b, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
		"event_name": "bench.done", "callback_timeout_seconds": 3600, "mock": map[string]any{"response": map[string]any{"ok": true}}})
	if os.Getenv("BENCH_HOOK") != "" { // a webhook endpoint: each settlement cancels its channel's task.ai_generated retries
		rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
		b.Cleanup(rx.Close)
		x.a.must(b, 201, "POST", "/api/console/webhook", map[string]any{"url": rx.URL + "/hook"})
	}
	rc, err := rdbtest.Client(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rc.Close() })
	x.pub = hub.New(rc, hub.Options{Prefix: prefix})

	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		x.chans = x.open(b, warm+total, want, sample)
		// Warm the HTTP pool and both nodes' paths with channels not measured.
		var wg sync.WaitGroup
		for i := range warm {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := cause(x, i); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		x.await(b, joined(x.chans[:warm]), 10*time.Second)
		b.StartTimer()

		measured := x.chans[warm:]
		sent := make([]time.Time, total)
		answered := make([]time.Duration, total) // the call's own duration
		var failed atomic.Int64
		tick := time.Second / time.Duration(rate)
		restoreGC := func() {}
		if len(pids) > 0 && os.Getenv("BENCH_SELF_GC") == "" {
			restoreGC = quietGC()
		}
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cpu0, redis0 := readCPU(pids...), redisCPU(rc)
		var prof *os.File
		if f := os.Getenv("BENCH_CPUPROFILE"); f != "" {
			if prof, err = os.Create(f); err != nil {
				b.Fatal(err)
			}
			_ = pprof.StartCPUProfile(prof)
		}
		t0 := time.Now()
		for i := range total {
			time.Sleep(time.Until(t0.Add(time.Duration(i) * tick)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent[i] = time.Now()
				if err := cause(x, warm+i); err != nil {
					if failed.Add(1) == 1 {
						b.Errorf("message %d: %v", i, err)
					}
				}
				answered[i] = time.Since(sent[i])
			}()
		}
		wg.Wait()
		elapsed := time.Since(t0)
		if prof != nil {
			pprof.StopCPUProfile()
			_ = prof.Close()
		}
		cpu1, redis1 := readCPU(pids...), redisCPU(rc)
		lost := x.await(b, joined(measured), 10*time.Second)
		runtime.ReadMemStats(&ms1)
		restoreGC()
		b.StopTimer()

		lat := make([]time.Duration, 0, total)
		for i, ch := range measured {
			if ch.conn == nil {
				continue
			}
			select {
			case <-ch.arrived:
				lat = append(lat, ch.at.Sub(sent[i]))
			default:
			}
		}
		b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		b.ReportMetric(ms(percentile(lat, 1)), "max-ms")
		b.ReportMetric(ms(percentile(answered, 0.99)), "call-p99-ms")
		b.ReportMetric(float64(total)/elapsed.Seconds(), "msg/s")
		b.ReportMetric(float64(lost), "lost")
		b.ReportMetric(float64(ms1.NumGC-ms0.NumGC), "self-gcs")
		b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(total), "self-B/msg")
		redisCores := (redis1 - redis0) / elapsed.Seconds()
		b.ReportMetric(redisCores, "redis-cores")
		if cpu0.ok && cpu1.ok {
			// What else ran on the machine meanwhile, in cores: a run
			// beside other work is not a clean one.
			others := float64((cpu1.busy-cpu0.busy)-(cpu1.self-cpu0.self))/float64(cpu1.all-cpu0.all)*float64(runtime.NumCPU()) - redisCores
			b.ReportMetric(max(others, 0), "others-cores")
			self := (cpu1.self - cpu0.self) - (cpu1.nodes - cpu0.nodes)
			b.ReportMetric(float64(self)/float64(cpu1.all-cpu0.all)*float64(runtime.NumCPU()), "self-cores")
			if len(pids) > 0 {
				b.ReportMetric(float64(cpu1.nodes-cpu0.nodes)/float64(cpu1.all-cpu0.all)*float64(runtime.NumCPU()), "nodes-cores")
			}
		}
		for _, ch := range x.chans {
			if ch.conn != nil {
				_ = ch.conn.CloseNow()
			}
		}
		b.StartTimer()
	}
}

// open submits n event-driven tasks on node A and joins a socket on node
// B to each task's channel; it returns once every socket has received the
// channel's ai_generated message (live or from the history), so nothing
// measured later waits on a join or on the generation. Each socket then
// waits for a message with status want.
func (x *crossNode) open(b *testing.B, n int, want string, sample int) []*benchChannel {
	b.Helper()
	chans := make([]*benchChannel, n)
	body, _ := json.Marshal(map[string]any{"workflow": "ev", "messages": userMessages("hello")})
	next := make(chan int)
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ch, err := x.subscribe(body, want, i%sample == 0)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					continue
				}
				chans[i] = ch
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatalf("open the channels: %v", firstErr)
	}
	deadline := time.After(30 * time.Second)
	for _, ch := range chans {
		if ch.conn == nil {
			continue
		}
		select {
		case <-ch.ready:
		case <-deadline:
			b.Fatalf("channel %s: no ai_generated message within 30 s", ch.cid)
		}
	}
	x.awaitGenerated(b, chans, 30*time.Second)
	return chans
}

// awaitGenerated waits until each channel without a socket awaits its
// callback (ai_generated), read through the channel API.
func (x *crossNode) awaitGenerated(b *testing.B, chans []*benchChannel, within time.Duration) {
	b.Helper()
	end := time.Now().Add(within)
	next := make(chan *benchChannel)
	var wg sync.WaitGroup
	var late atomic.Int64
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ch := range next {
				for !x.generated(ch.cid) {
					if time.Now().After(end) {
						late.Add(1)
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	for _, ch := range chans {
		if ch.conn == nil {
			next <- ch
		}
	}
	close(next)
	wg.Wait()
	if n := late.Load(); n > 0 {
		b.Fatalf("%d channels not ai_generated within %v", n, within)
	}
}

func (x *crossNode) generated(cid string) bool {
	req, _ := http.NewRequest("GET", x.a.base+"/api/v1/channels/"+cid, nil)
	req.Header.Set("Authorization", "Bearer "+x.a.key)
	res, err := benchClient.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	var v struct{ Status string }
	return json.NewDecoder(res.Body).Decode(&v) == nil && v.Status == "ai_generated"
}

// joined are the channels of chans with a socket.
func joined(chans []*benchChannel) []*benchChannel {
	var out []*benchChannel
	for _, ch := range chans {
		if ch.conn != nil {
			out = append(out, ch)
		}
	}
	return out
}

func (x *crossNode) subscribe(submit []byte, want string, socket bool) (*benchChannel, error) {
	code, out, err := postKey(x.a.base+"/v1/ai/async", x.a.key, submit)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("submit answered %d: %s", code, out)
	}
	var ans struct {
		ProjectID        string `json:"project_id"`
		ChannelID        string `json:"channel_id"`
		WSToken          string `json:"ws_token"`
		WebsocketChannel string `json:"websocket_channel"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		return nil, err
	}
	ch := &benchChannel{pid: ans.ProjectID, cid: ans.ChannelID, topic: ans.WebsocketChannel, token: ans.WSToken,
		ready: make(chan struct{}), arrived: make(chan struct{})}
	if !socket {
		return ch, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws://" + strings.TrimPrefix(x.b.base, "http://") + "/socket/websocket?vsn=2.0.0&token=" + ch.token
	if ch.conn, _, err = websocket.Dial(ctx, u, nil); err != nil {
		return nil, fmt.Errorf("dial node B: %w", err)
	}
	join, _ := json.Marshal([]any{"1", "1", ch.topic, "phx_join", map[string]any{}})
	if err := ch.conn.Write(ctx, websocket.MessageText, join); err != nil {
		return nil, err
	}
	go ch.read(want)
	return ch, nil
}

// read records the arrival of the channel's messages.
func (ch *benchChannel) read(want string) {
	generated := false
	for {
		_, raw, err := ch.conn.Read(context.Background())
		if err != nil {
			return
		}
		now := time.Now()
		if !bytes.Contains(raw, []byte(`,"response",`)) {
			continue
		}
		var f [5]json.RawMessage
		var p struct{ Status string }
		if json.Unmarshal(raw, &f) != nil || json.Unmarshal(f[4], &p) != nil {
			continue
		}
		switch {
		case p.Status == "ai_generated" && !generated:
			generated = true
			close(ch.ready)
		case p.Status == want:
			ch.at = now
			close(ch.arrived)
			return
		}
	}
}

// await waits up to within for every channel's message and returns how
// many did not come.
func (x *crossNode) await(b *testing.B, chans []*benchChannel, within time.Duration) int {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	lost := 0
	for _, ch := range chans {
		select {
		case <-ch.arrived:
		case <-ctx.Done():
			lost++
		}
	}
	return lost
}

// postKey posts a JSON body with a bearer key and returns the answer; unlike
// post it returns errors, so that it can run outside the benchmark's
// goroutine.
func postKey(url, key string, body []byte) (int, []byte, error) {
	status, _, out, err := postJSON(benchClient, url, key, body)
	return status, out, err
}

// redisCPU is the CPU time Redis has used, in seconds (INFO cpu).
func redisCPU(c redis.UniversalClient) float64 {
	return redisStat(c, "cpu", "used_cpu_sys") + redisStat(c, "cpu", "used_cpu_user")
}

// cpuTicks are the machine's and this process's CPU time, in clock ticks,
// from /proc (Linux; ok is false elsewhere).
type cpuTicks struct {
	all, busy, self int64
	nodes           int64 // of self, the processes of readCPU's pids
	ok              bool
}

// readCPU reads the machine's CPU time and this process's, with the
// processes of pids (its nodes run as processes) counted as its own.
func readCPU(pids ...int) cpuTicks {
	var t cpuTicks
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return t
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return t
	}
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t.all += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	t.self, t.ok = processTicks("self")
	for _, pid := range pids {
		n, ok := processTicks(strconv.Itoa(pid))
		t.self += n
		t.nodes += n
		t.ok = t.ok && ok
	}
	return t
}

// processTicks is the CPU time of a process (/proc/<pid>; "self": this
// one), in clock ticks.
func processTicks(pid string) (int64, bool) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th.
	_, rest, _ := strings.Cut(string(stat), ") ")
	g := strings.Fields(rest)
	if len(g) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseInt(g[11], 10, 64)
	k, _ := strconv.ParseInt(g[12], 10, 64)
	return u + k, true
}

// quietGC collects this process's garbage, then turns its collector off
// until the returned func is called: the load generator's own collection
// (a heap of about 100 MB for its sockets, 20 ms of marking on a machine of
// two cores) would otherwise take a core from the nodes under test in the
// middle of the measured window. The window allocates about 3 KB per
// message.
func quietGC() (restore func()) {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	return func() { debug.SetGCPercent(old) }
}
