package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/riverhub/riverhub/internal/wstoken"
)

// loader opens the sockets and keeps them alive.
type loader struct {
	cfg     config
	out     io.Writer
	clients []*http.Client // one per source address, used round-robin
	issuer  *wstoken.Issuer

	mu   sync.Mutex
	live map[*sock]struct{}

	joined, pushes, closed, hbSent, hbFailed atomic.Int64

	failMu   sync.Mutex
	failures map[string]int    // by kind
	example  map[string]string // one full error per kind

	latMu sync.Mutex
	lat   []time.Duration // handshake + join, per joined socket
}

// sock is one open, joined socket.
type sock struct {
	c      *websocket.Conn
	nextHB time.Time // owned by the heartbeat loop
	busy   atomic.Bool
	ref    atomic.Int64
}

func newLoader(cfg config, out io.Writer) (*loader, error) {
	l := &loader{cfg: cfg, out: out, live: make(map[*sock]struct{}),
		failures: make(map[string]int), example: make(map[string]string)}
	if cfg.tokens == "mint" {
		l.issuer = wstoken.NewIssuer(cfg.secret, cfg.tokenTTL)
		if l.cfg.project == "" {
			l.cfg.project = uuid.NewString()
		}
	}
	srcs := cfg.sources
	if len(srcs) == 0 {
		srcs = []string{""}
	}
	for _, src := range srcs {
		d := &net.Dialer{Timeout: cfg.timeout}
		if src != "" {
			ip := net.ParseIP(src)
			// Fail now rather than 15,000 times: the address must be local.
			ln, err := net.Listen("tcp", net.JoinHostPort(src, "0"))
			if err != nil {
				return nil, fmt.Errorf("source address %s is not usable here: %w", src, err)
			}
			_ = ln.Close()
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		l.clients = append(l.clients, &http.Client{Transport: &http.Transport{
			DialContext: d.DialContext, MaxIdleConnsPerHost: cfg.concurrency,
		}})
	}
	return l, nil
}

func (l *loader) logf(format string, a ...any) {
	if !l.cfg.quiet {
		fmt.Fprintf(l.out, format+"\n", a...)
	}
}

func (l *loader) run(ctx context.Context) error {
	cfg := l.cfg
	from := fmt.Sprintf("%d source address(es)", len(cfg.sources))
	if len(cfg.sources) == 0 {
		from = "the kernel's source address"
	}
	fmt.Fprintf(l.out, "wsload: %d sockets to %d node(s) from %s, tokens: %s, %d at once\n",
		cfg.n, len(cfg.nodes), from, cfg.tokens, cfg.concurrency)
	var rssBefore int64
	if cfg.rssPid != 0 {
		var err error
		if rssBefore, err = vmRSS(cfg.rssPid); err != nil {
			return err
		}
		fmt.Fprintf(l.out, "server pid %d VmRSS before: %s\n", cfg.rssPid, mib(rssBefore))
	}
	if cfg.tokens == "submit" {
		for _, node := range cfg.nodes {
			if err := l.ensureWorkflow(ctx, node); err != nil {
				return err
			}
		}
	}

	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go l.heartbeats(hbCtx)

	t0 := time.Now()
	l.ramp(ctx)
	ramp := time.Since(t0)
	l.summary(ramp)
	if ctx.Err() != nil {
		return nil
	}

	if cfg.rssPid != 0 {
		if err := l.settleRSS(ctx, rssBefore); err != nil || ctx.Err() != nil {
			return err
		}
	}

	var hold <-chan time.Time
	if cfg.hold > 0 {
		hold = time.After(cfg.hold)
		l.logf("holding the sockets for %v", cfg.hold)
	} else {
		l.logf("holding the sockets until interrupted")
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.status("stopped")
			return nil
		case <-hold:
			l.status("done")
			return nil
		case <-tick.C:
			l.status("holding")
		}
	}
}

// settleRSS reads the server's VmRSS every 30 s for cfg.settle (the
// sockets heartbeating meanwhile) and reports the last reading per joined
// socket.
func (l *loader) settleRSS(ctx context.Context, before int64) error {
	cfg := l.cfg
	l.logf("reading the server's memory for %v…", cfg.settle)
	t0 := time.Now()
	var after int64
	for {
		wait := min(30*time.Second, cfg.settle-time.Since(t0))
		if wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		var err error
		if after, err = vmRSS(cfg.rssPid); err != nil {
			return err
		}
		if time.Since(t0) >= cfg.settle {
			break
		}
		l.logf("  after %v: VmRSS %s, %d sockets open", time.Since(t0).Round(time.Second), mib(after), l.open())
	}
	j := l.open()
	per := "n/a"
	if j > 0 {
		per = fmt.Sprintf("%.1f KiB", float64(after-before)/1024/float64(j))
	}
	fmt.Fprintf(l.out, "server pid %d VmRSS %v after the ramp: %s; +%s for %d joined sockets still open: %s per joined socket\n",
		cfg.rssPid, cfg.settle, mib(after), mib(after-before), j, per)
	return nil
}

// ramp opens cfg.n sockets, cfg.concurrency at a time.
func (l *loader) ramp(ctx context.Context) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range l.cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := l.openOne(ctx, i); err != nil {
					l.fail(err)
				}
			}
		}()
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
feed:
	for i := range l.cfg.n {
		for {
			select {
			case <-ctx.Done():
				break feed
			case <-progress.C:
				l.status("ramping")
				continue
			case next <- i:
			}
			break
		}
	}
	close(next)
	wg.Wait()
}

// failure is an error with a kind to count it by.
type failure struct {
	kind string
	err  error
}

func (f failure) Error() string { return f.kind + ": " + f.err.Error() }

func (l *loader) fail(err error) {
	kind := err.Error()
	var f failure
	if errors.As(err, &f) {
		kind = f.kind
	}
	l.failMu.Lock()
	l.failures[kind]++
	if _, ok := l.example[kind]; !ok {
		l.example[kind] = err.Error()
	}
	l.failMu.Unlock()
}

func (l *loader) openOne(ctx context.Context, i int) error {
	node := l.cfg.nodes[i%len(l.cfg.nodes)]
	hc := l.clients[i%len(l.clients)]
	ctx, cancel := context.WithTimeout(ctx, l.cfg.timeout)
	defer cancel()
	token, topic, err := l.token(ctx, hc, node)
	if err != nil {
		return failure{"token", err}
	}
	t0 := time.Now()
	u := "ws" + strings.TrimPrefix(node, "http") + "/socket/websocket?vsn=2.0.0&token=" + url.QueryEscape(token)
	c, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return failure{dialKind(res, err), err}
	}
	c.SetReadLimit(1 << 20)
	s := &sock{c: c}
	if err := join(ctx, c, topic); err != nil {
		_ = c.CloseNow()
		var f failure
		if errors.As(err, &f) {
			return err
		}
		return failure{"join", err}
	}
	lat := time.Since(t0)
	l.latMu.Lock()
	l.lat = append(l.lat, lat)
	l.latMu.Unlock()
	l.joined.Add(1)
	s.nextHB = time.Now().Add(l.cfg.heartbeat)
	l.mu.Lock()
	l.live[s] = struct{}{}
	l.mu.Unlock()
	go l.read(s)
	return nil
}

func dialKind(res *http.Response, err error) string {
	if res != nil && res.StatusCode != http.StatusSwitchingProtocols {
		return "handshake HTTP " + strconv.Itoa(res.StatusCode)
	}
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "dial timeout"
	case errors.As(err, &errno):
		return "dial " + errno.Error()
	}
	return "dial"
}

// join sends phx_join and waits for its reply.
func join(ctx context.Context, c *websocket.Conn, topic string) error {
	f, _ := json.Marshal([]any{"1", "1", topic, "phx_join", map[string]any{}})
	if err := c.Write(ctx, websocket.MessageText, f); err != nil {
		return err
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return failure{"join timeout", err}
			}
			return err
		}
		var fr []json.RawMessage
		if json.Unmarshal(b, &fr) != nil || len(fr) != 5 {
			return fmt.Errorf("not a phoenix frame: %.100s", b)
		}
		if string(fr[3]) != `"phx_reply"` || string(fr[1]) != `"1"` {
			continue
		}
		var p struct {
			Status   string `json:"status"`
			Response struct {
				Reason string `json:"reason"`
			} `json:"response"`
		}
		_ = json.Unmarshal(fr[4], &p)
		if p.Status != "ok" {
			return failure{"join refused: " + p.Response.Reason, fmt.Errorf("%s", fr[4])}
		}
		return nil
	}
}

// read reads the socket until it closes, counting pushes.
func (l *loader) read(s *sock) {
	for {
		_, b, err := s.c.Read(context.Background())
		if err != nil {
			l.mu.Lock()
			_, was := l.live[s]
			delete(l.live, s)
			l.mu.Unlock()
			if was {
				l.closed.Add(1)
				l.fail(failure{"closed by server (" + websocket.CloseStatus(err).String() + ")", err})
			}
			return
		}
		if bytes.Contains(b, []byte(`,"response",`)) {
			l.pushes.Add(1)
		}
	}
}

// heartbeats sends each socket a phoenix heartbeat every cfg.heartbeat,
// from its join on, so the heartbeats are spread as the joins were. One
// loop for all sockets: the tool holds no timer per socket.
func (l *loader) heartbeats(ctx context.Context) {
	step := min(time.Second, l.cfg.heartbeat/10)
	t := time.NewTicker(step)
	defer t.Stop()
	var due []*sock
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			l.mu.Lock()
			for s := range l.live {
				if !now.Before(s.nextHB) && !s.busy.Load() {
					s.nextHB = now.Add(l.cfg.heartbeat)
					s.busy.Store(true)
					due = append(due, s)
				}
			}
			l.mu.Unlock()
			for _, s := range due {
				go l.heartbeat(s)
			}
		}
	}
}

func (l *loader) heartbeat(s *sock) {
	defer s.busy.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := `[null,"hb` + strconv.FormatInt(s.ref.Add(1), 10) + `","phoenix","heartbeat",{}]`
	if err := s.c.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
		l.hbFailed.Add(1)
		return
	}
	l.hbSent.Add(1)
}

// token returns a ws token and the topic it may join.
func (l *loader) token(ctx context.Context, hc *http.Client, node string) (token, topic string, err error) {
	if l.issuer != nil {
		cid := uuid.NewString()
		token, err = l.issuer.Issue(l.cfg.project, cid)
		return token, wstoken.Topic(l.cfg.project, cid), err
	}
	body, _ := json.Marshal(map[string]any{"workflow": l.cfg.workflow,
		"messages": []map[string]string{{"role": "user", "content": "wsload"}}})
	var ans struct {
		ChannelID        string `json:"channel_id"`
		WSToken          string `json:"ws_token"`
		WebsocketChannel string `json:"websocket_channel"`
	}
	if err := l.post(ctx, hc, node+"/v1/ai/async", body, http.StatusOK, &ans); err != nil {
		return "", "", err
	}
	if ans.WSToken == "" || ans.WebsocketChannel == "" {
		return "", "", fmt.Errorf("submit answer without ws_token or websocket_channel")
	}
	return ans.WSToken, ans.WebsocketChannel, nil
}

// ensureWorkflow creates the mock workflow submit mode submits, unless the
// project has it already.
func (l *loader) ensureWorkflow(ctx context.Context, node string) error {
	body, _ := json.Marshal(map[string]any{"name": l.cfg.workflow, "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"ok": true}}})
	err := l.post(ctx, l.clients[0], node+"/api/console/workflow", body, http.StatusCreated, nil)
	var st statusError
	if errors.As(err, &st) && st.status == http.StatusConflict {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create workflow %q on %s: %w", l.cfg.workflow, node, err)
	}
	return nil
}

type statusError struct {
	status int
	body   string
}

func (e statusError) Error() string { return fmt.Sprintf("HTTP %d: %.200s", e.status, e.body) }

func (l *loader) post(ctx context.Context, hc *http.Client, u string, body []byte, want int, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+l.cfg.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		return statusError{res.StatusCode, string(b)}
	}
	if into != nil {
		return json.Unmarshal(b, into)
	}
	return nil
}

// open is the number of joined sockets still open.
func (l *loader) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

func (l *loader) status(phase string) {
	l.failMu.Lock()
	var failed int
	for _, n := range l.failures {
		failed += n
	}
	l.failMu.Unlock()
	l.logf("%s: joined %d, open %d, failed or closed %d, pushes received %d, heartbeats sent %d (%d failed)",
		phase, l.joined.Load(), l.open(), failed, l.pushes.Load(), l.hbSent.Load(), l.hbFailed.Load())
}

func (l *loader) summary(ramp time.Duration) {
	j := l.joined.Load()
	fmt.Fprintf(l.out, "ramp: %d of %d sockets joined in %v (%.0f/s)\n", j, l.cfg.n, ramp.Round(time.Millisecond), float64(j)/ramp.Seconds())
	l.latMu.Lock()
	lat := slices.Clone(l.lat)
	l.latMu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
		fmt.Fprintf(l.out, "handshake+join latency: p50 %v, p99 %v, max %v\n", q(.5).Round(time.Microsecond), q(.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	}
	l.failMu.Lock()
	defer l.failMu.Unlock()
	kinds := make([]string, 0, len(l.failures))
	for k := range l.failures {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(l.out, "failed: %d × %s (e.g. %s)\n", l.failures[k], k, l.example[k])
	}
}

// closeAll closes every socket still open (without the close handshake:
// thousands of handshakes would only slow the exit).
func (l *loader) closeAll() {
	l.mu.Lock()
	socks := make([]*sock, 0, len(l.live))
	for s := range l.live {
		socks = append(socks, s)
	}
	clear(l.live)
	l.mu.Unlock()
	for _, s := range socks {
		_ = s.c.CloseNow()
	}
}
