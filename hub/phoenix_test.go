package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/riverhub/riverhub/internal/wstoken"
)

// These tests run the official phoenix JavaScript client (npm "phoenix",
// e2e/phoenix_client.mjs) against the hub. They need node and the e2e
// packages (cd e2e && npm ci); without them they skip, unless
// RIVERHUB_E2E_NODE=require (meant for CI, so that they cannot silently
// stop running).

const e2eDir = "../e2e"

func phoenixScript(t *testing.T) (node, script string) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("RIVERHUB_E2E_NODE") == "require" {
		skip = t.Fatalf
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node is not on PATH; these tests run the official phoenix client under Node 20+")
	}
	if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", "phoenix", "package.json")); err != nil {
		skip("the phoenix npm package is not installed: run `cd e2e && npm ci`")
	}
	return node, filepath.Join(e2eDir, "phoenix_client.mjs")
}

// phoenixClient is a running phoenix_client.mjs.
type phoenixClient struct {
	t      *testing.T
	cmd    *exec.Cmd
	events chan map[string]any // stderr status lines
	exited chan error

	mu       sync.Mutex
	payloads []string // stdout lines
	stderr   []string
}

func startPhoenix(t *testing.T, wsBase, token, topic string, args ...string) *phoenixClient {
	t.Helper()
	node, script := phoenixScript(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, node, append([]string{script, "--url", wsBase, "--token", token, "--topic", topic}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node: %v", err)
	}
	p := &phoenixClient{t: t, cmd: cmd, events: make(chan map[string]any, 64), exited: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.payloads = append(p.payloads, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			p.mu.Unlock()
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["event"] != nil {
				p.events <- ev
			}
		}
	}()
	go func() {
		wg.Wait() // pipes drained before Wait closes them
		p.exited <- cmd.Wait()
		cancel()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			p.mu.Lock()
			t.Logf("phoenix client stderr:\n%s\nstdout:\n%s", strings.Join(p.stderr, "\n"), strings.Join(p.payloads, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// await waits for a status event, failing on anything unexpected.
func (p *phoenixClient) await(event string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev := <-p.events:
			if ev["event"] == event && (match == nil || match(ev)) {
				return ev
			}
			if e := ev["event"]; e == "join_error" || e == "join_timeout" || e == "timeout" {
				p.t.Fatalf("phoenix client: %v while waiting for %s", ev, event)
			}
		case err := <-p.exited:
			p.exited <- err
			p.t.Fatalf("phoenix client exited (%v) while waiting for %s", err, event)
		case <-timeout:
			p.t.Fatalf("phoenix client: no %s event", event)
		}
	}
}

// wait waits for a clean exit and returns the payloads printed.
func (p *phoenixClient) wait() []string {
	p.t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			p.t.Fatalf("phoenix client: %v", err)
		}
	case <-time.After(20 * time.Second):
		p.t.Fatal("phoenix client did not finish")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.payloads...)
}

func joins(n float64) func(map[string]any) bool {
	return func(ev map[string]any) bool { return ev["joins"] == n }
}

// ns returns the "n" of each payload.
func ns(t *testing.T, payloads []string) []int {
	t.Helper()
	out := make([]int, len(payloads))
	for i, p := range payloads {
		var v struct{ N int }
		if err := json.Unmarshal([]byte(p), &v); err != nil {
			t.Fatalf("payload %q: %v", p, err)
		}
		out[i] = v.N
	}
	return out
}

func wsBase(srvURL string) string { return "ws" + strings.TrimPrefix(srvURL, "http") + "/socket" }

// The official client receives a message published before it joined (from
// the history) and one published after.
func TestPhoenixClientHistoryAndLive(t *testing.T) {
	t.Parallel()
	phoenixScript(t)
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	publish(t, h, pid, cid, `{"status":"ai_generated","n":1}`)

	p := startPhoenix(t, wsBase(srv.URL), token, topic, "--count", "2", "--unique-key", "n")
	p.await("joined", joins(1))
	publish(t, h, pid, cid, `{"status":"completed","n":2,"data":{"title":"Dune"}}`)
	got := p.wait()
	want := []string{`{"status":"ai_generated","n":1}`, `{"status":"completed","n":2,"data":{"title":"Dune"}}`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("payloads %q, want %q", got, want)
	}
}

// The connection drops after the first message; two messages are published
// while the client is away; it reconnects and rejoins by itself. Asserted:
// the rejoin replays the history from the start (the raw stream is exactly
// 1, 1, 2, 3, then the live 4), so after the client dedupes by "n" every
// message arrived exactly once, in publish order.
func TestPhoenixClientReconnectCatchesUp(t *testing.T) {
	t.Parallel()
	phoenixScript(t)
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()

	p := startPhoenix(t, wsBase(srv.URL), token, topic,
		"--count", "4", "--unique-key", "n", "--drop-after", "1", "--reconnect-ms", "1500")
	p.await("joined", joins(1))
	publish(t, h, pid, cid, `{"n":1}`)
	p.await("dropped", nil)
	eventually(t, "the server to see the drop", func() bool { return h.sessionCount() == 0 })
	publish(t, h, pid, cid, `{"n":2}`)
	publish(t, h, pid, cid, `{"n":3}`)
	p.await("joined", joins(2))
	publish(t, h, pid, cid, `{"n":4}`)

	raw := ns(t, p.wait())
	if want := []int{1, 1, 2, 3, 4}; !reflect.DeepEqual(raw, want) {
		t.Fatalf("received n = %v, want %v", raw, want)
	}
	var deduped []int
	seen := map[int]bool{}
	for _, n := range raw {
		if !seen[n] {
			seen[n] = true
			deduped = append(deduped, n)
		}
	}
	if want := []int{1, 2, 3, 4}; !reflect.DeepEqual(deduped, want) {
		t.Fatalf("after dedupe n = %v, want %v", deduped, want)
	}
}

// The official client understands the hub's join errors.
func TestPhoenixClientJoinRefused(t *testing.T) {
	t.Parallel()
	phoenixScript(t)
	e := newEnv(t)
	_, srv := e.node(Options{})
	pid, _, _, token := e.channel()

	p := startPhoenix(t, wsBase(srv.URL), token, wstoken.Topic(pid, uuid.NewString()), "--count", "1")
	select {
	case ev := <-p.events:
		if ev["event"] != "join_error" || ev["reason"] != "unauthorized_channel_access" {
			t.Fatalf("got %v, want join_error unauthorized_channel_access", ev)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no join reply")
	}
}

// The same drop, with an app that rejoins with {"last_seq": N} (the
// channel's params as a function, the official client's way): the raw
// stream is exactly 1, 2, 3, 4 — exactly the missing messages, no repeats,
// no dedupe needed.
func TestPhoenixClientResumesExactly(t *testing.T) {
	t.Parallel()
	phoenixScript(t)
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()

	p := startPhoenix(t, wsBase(srv.URL), token, topic,
		"--count", "4", "--drop-after", "1", "--reconnect-ms", "1500", "--resume", "true")
	p.await("joined", joins(1))
	publish(t, h, pid, cid, `{"n":1}`)
	p.await("dropped", nil)
	eventually(t, "the server to see the drop", func() bool { return h.sessionCount() == 0 })
	publish(t, h, pid, cid, `{"n":2}`)
	publish(t, h, pid, cid, `{"n":3}`)
	p.await("joined", joins(2))
	publish(t, h, pid, cid, `{"n":4}`)

	if raw := ns(t, p.wait()); !reflect.DeepEqual(raw, []int{1, 2, 3, 4}) {
		t.Fatalf("received n = %v, want exactly 1, 2, 3, 4", raw)
	}
}
