// Command centrifugo is the peer measurement beside riverhub's
// BenchmarkCrossNodePublish/callback (BENCHMARKS.md): two Centrifugo v6
// nodes sharing the Redis at 127.0.0.1:6379 (the Redis engine, its keys
// under a prefix of this run), 5,000 WebSocket clients on node B, each
// subscribed to a channel of its own, and one HTTP publish per channel
// sent to node A's server API at a fixed rate (open loop) for 5 s. The
// latency runs from just before the publish request to the arrival of the
// publication on B's socket, as in riverhub's benchmark; the publishes go
// out the same way (one request written whole, http.ReadResponse on a
// keep-alive connection, one connection per request in flight).
//
// It reports p50, p99 and max, the publish call's own p99, the rate
// achieved, the publications lost (not received within 10 s), and the CPU
// used meanwhile by Redis, by the two Centrifugo processes and by this one,
// in cores, and this process's collections in the window (its collector
// is off then, quietGC; -self-gc leaves it on) and bytes allocated per
// publication.
//
// It is a module of its own, so that the peer is no dependency of
// riverhub. The centrifugo binary is built apart:
//
//	GOBIN=/tmp/cbin go install github.com/centrifugal/centrifugo/v6@v6.9.1
//	cd bench/centrifugo && go run . -bin /tmp/cbin/centrifugo [-rate 5000 -sample 5]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
)

const apiKey = "bench-api-key"

func main() {
	bin := flag.String("bin", "centrifugo", "the centrifugo binary")
	rate := flag.Int("rate", 1000, "publications per second")
	sample := flag.Int("sample", 1, "subscribe a socket to one channel in k (every channel still gets its publication)")
	window := flag.Duration("window", 5*time.Second, "how long to publish")
	portA := flag.Int("port-a", 18401, "node A's port")
	portB := flag.Int("port-b", 18402, "node B's port")
	selfGC := flag.Bool("self-gc", false, "leave this process's garbage collector on during the window")
	flag.Parse()
	const warm = 200
	total := int(float64(*rate) * window.Seconds())

	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	prefix := fmt.Sprintf("bench-centrifugo-%d", time.Now().UnixNano())
	defer dropPrefix(rc, prefix)
	dir, err := os.MkdirTemp("", "bench-centrifugo")
	check(err)
	defer os.RemoveAll(dir)
	a := startNode(*bin, dir, "a", *portA, prefix)
	defer a.stop()
	b := startNode(*bin, dir, "b", *portB, prefix)
	defer b.stop()

	n := warm + total
	subs := make([]*sub, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if i%*sample != 0 && i >= warm {
					continue
				}
				s, err := subscribe(*portB, "bench"+strconv.Itoa(i))
				check(err)
				subs[i] = s
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()

	pool := &callerPool{addr: "127.0.0.1:" + strconv.Itoa(*portA)}
	publish := func(i int) error {
		body := fmt.Appendf(nil, `{"channel":"bench%d","data":{"status":"completed","i":%d}}`, i, i)
		code, out, err := pool.post("/api/publish", body)
		if err == nil && (code != http.StatusOK || bytes.Contains(out, []byte(`"error"`))) {
			err = fmt.Errorf("publish answered %d: %s", code, out)
		}
		return err
	}
	for i := range warm { // warm both nodes' paths and the pool
		wg.Add(1)
		go func() { defer wg.Done(); check(publish(i)) }()
	}
	wg.Wait()
	await(subs[:warm], 10*time.Second)

	sent := make([]time.Time, total)
	answered := make([]time.Duration, total)
	var failed atomic.Int64
	tick := time.Second / time.Duration(*rate)
	restoreGC := func() {}
	if !*selfGC {
		restoreGC = quietGC()
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, redis0 := readCPU(a.pid(), b.pid()), redisCPU(rc)
	t0 := time.Now()
	for i := range total {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * tick)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[i] = time.Now()
			if err := publish(warm + i); err != nil && failed.Add(1) == 1 {
				fmt.Fprintf(os.Stderr, "publish %d: %v\n", i, err)
			}
			answered[i] = time.Since(sent[i])
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu1, redis1 := readCPU(a.pid(), b.pid()), redisCPU(rc)
	measured := subs[warm:]
	lost := await(measured, 10*time.Second)
	runtime.ReadMemStats(&ms1)
	restoreGC()

	var lat []time.Duration
	for i, s := range measured {
		if s == nil {
			continue
		}
		select {
		case <-s.arrived:
			lat = append(lat, s.at.Sub(sent[i]))
		default:
		}
	}
	all := float64(cpu1.all-cpu0.all) / float64(runtime.NumCPU())
	fmt.Printf("centrifugo %s, rate %d/s, %d sockets on B\n", version(*bin), *rate, len(lat)+lost)
	fmt.Printf("p50-ms %.3f  p99-ms %.3f  max-ms %.3f  call-p99-ms %.3f  msg/s %.0f  lost %d  failed %d\n",
		ms(pct(lat, 0.50)), ms(pct(lat, 0.99)), ms(pct(lat, 1)), ms(pct(answered, 0.99)),
		float64(total)/elapsed.Seconds(), lost, failed.Load())
	fmt.Printf("nodes-cores %.3f  redis-cores %.3f  self-cores %.3f  self-gcs %d  self-B/msg %.0f\n",
		float64(cpu1.nodes-cpu0.nodes)/all, (redis1-redis0)/elapsed.Seconds(), float64(cpu1.self-cpu0.self)/all,
		ms1.NumGC-ms0.NumGC, float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(total))
	for _, s := range subs {
		if s != nil {
			_ = s.conn.CloseNow()
		}
	}
}

// node is a Centrifugo process.
type node struct{ cmd *exec.Cmd }

func startNode(bin, dir, name string, port int, prefix string) *node {
	cfg := map[string]any{
		"http_server": map[string]any{"port": port, "address": "127.0.0.1"},
		"health":      map[string]any{"enabled": true},
		"log":         map[string]any{"level": "error"},
		"client":      map[string]any{"insecure": true, "allowed_origins": []string{"*"}},
		"http_api":    map[string]any{"key": apiKey},
		"channel": map[string]any{"without_namespace": map[string]any{
			"allow_subscribe_for_client": true,
		}},
		"engine": map[string]any{"type": "redis", "redis": map[string]any{
			"address": []string{"redis://127.0.0.1:6379"}, "prefix": prefix,
		}},
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, name+".json")
	check(os.WriteFile(path, b, 0o600))
	cmd := exec.Command(bin, "--config", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Start())
	n := &node{cmd}
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return n
			}
		}
		if time.Now().After(deadline) {
			n.stop()
			panic(fmt.Sprintf("centrifugo %s did not answer on :%d", name, port))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) pid() int { return n.cmd.Process.Pid }

func (n *node) stop() {
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
}

func version(bin string) string {
	out, _ := exec.Command(bin, "version").Output()
	return strings.TrimSpace(string(out))
}

// sub is a client subscribed to one channel, waiting for one publication.
type sub struct {
	conn    *websocket.Conn
	arrived chan struct{}
	at      time.Time
}

// subscribe connects (client protocol, JSON) and subscribes to ch; it
// returns once the subscription is confirmed, then reads on its own:
// answering the server's pings, noting the first publication.
func subscribe(port int, ch string) (*sub, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", port), nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	cmd := fmt.Sprintf(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":%q}}`, ch)
	if err := c.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
		return nil, err
	}
	s := &sub{conn: c, arrived: make(chan struct{})}
	for subscribed := false; !subscribed; {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return nil, err
		}
		for line := range bytes.SplitSeq(msg, []byte("\n")) {
			var r struct {
				ID        int             `json:"id"`
				Error     json.RawMessage `json:"error"`
				Subscribe json.RawMessage `json:"subscribe"`
			}
			if err := json.Unmarshal(line, &r); err != nil {
				return nil, err
			}
			if r.Error != nil {
				return nil, fmt.Errorf("%s: %s", ch, r.Error)
			}
			subscribed = subscribed || (r.ID == 2 && r.Subscribe != nil)
		}
	}
	go s.read()
	return s, nil
}

func (s *sub) read() {
	for {
		_, msg, err := s.conn.Read(context.Background())
		if err != nil {
			return
		}
		now := time.Now()
		for line := range bytes.SplitSeq(msg, []byte("\n")) {
			switch {
			case bytes.Equal(line, []byte("{}")): // the server's ping
				_ = s.conn.Write(context.Background(), websocket.MessageText, []byte("{}"))
			case bytes.Contains(line, []byte(`"pub"`)):
				select {
				case <-s.arrived:
				default:
					s.at = now
					close(s.arrived)
				}
			}
		}
	}
}

// await waits until every subscriber has its publication or d has
// passed; it returns how many have not.
func await(subs []*sub, d time.Duration) int {
	deadline := time.After(d)
	lost := 0
	for _, s := range subs {
		if s == nil {
			continue
		}
		select {
		case <-s.arrived:
		case <-deadline:
			lost++
		}
	}
	return lost
}

// callerPool hands out keep-alive connections to the server API, one per
// request in flight, each request written whole.
type callerPool struct {
	addr string
	mu   sync.Mutex
	idle []*rawClient
}

func (p *callerPool) post(path string, body []byte) (int, []byte, error) {
	p.mu.Lock()
	var c *rawClient
	if n := len(p.idle); n > 0 {
		c, p.idle = p.idle[n-1], p.idle[:n-1]
	}
	p.mu.Unlock()
	if c == nil {
		c = &rawClient{addr: p.addr}
	}
	code, out, err := c.post(path, body)
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	return code, out, err
}

type rawClient struct {
	addr string
	conn net.Conn
	r    *bufio.Reader
	req  []byte
}

func (c *rawClient) post(path string, body []byte) (int, []byte, error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 4096)
	}
	c.req = fmt.Appendf(c.req[:0], "POST %s HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, c.addr, apiKey, len(body))
	c.req = append(c.req, body...)
	if _, err := c.conn.Write(c.req); err != nil {
		c.close()
		return 0, nil, err
	}
	res, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.close()
		return 0, nil, err
	}
	out, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil || res.Close {
		c.close()
	}
	return res.StatusCode, out, err
}

func (c *rawClient) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.r = nil, nil
	}
}

type cpuTicks struct{ all, self, nodes int64 }

func readCPU(pids ...int) cpuTicks {
	var t cpuTicks
	stat, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	for _, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t.all += n
	}
	t.self = processTicks("self")
	for _, pid := range pids {
		t.nodes += processTicks(strconv.Itoa(pid))
	}
	return t
}

func processTicks(pid string) int64 {
	stat, _ := os.ReadFile("/proc/" + pid + "/stat")
	_, rest, _ := strings.Cut(string(stat), ") ")
	g := strings.Fields(rest)
	if len(g) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(g[11], 10, 64)
	s, _ := strconv.ParseInt(g[12], 10, 64)
	return u + s
}

func redisCPU(rc *redis.Client) float64 {
	s, _ := rc.Info(context.Background(), "cpu").Result()
	var sum float64
	for _, l := range strings.Split(s, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			sum += f
		}
	}
	return sum
}

func dropPrefix(rc *redis.Client, prefix string) {
	ctx := context.Background()
	iter := rc.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rc.Del(ctx, iter.Val())
	}
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(p * float64(len(d)-1))
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func check(err error) {
	if err != nil {
		panic(err)
	}
}

// quietGC collects this process's garbage, then turns its collector off
// until the returned func is called, as riverhub's benchmark does with its
// nodes in processes of their own: the load generator's collections (its
// sockets' heap) would otherwise take a core from the nodes mid-window.
func quietGC() (restore func()) {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	return func() { debug.SetGCPercent(old) }
}
