package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// The tests that drive the official phoenix JavaScript client (e2e/*.mjs)
// need node and the e2e packages (cd e2e && npm ci). Without them they
// skip, unless RIVERHUB_E2E_NODE=require (CI), which makes that a failure.

// e2eScript returns node and the path of an e2e script, or skips the test.
func e2eScript(t *testing.T, name string) (node, script string) {
	t.Helper()
	return nodeTool(t, "this test runs the official phoenix client", "phoenix"), filepath.Join("e2e", name)
}

// jsProc is a running e2e script: its stdout lines (payloads or results)
// and its stderr status events ({"event": ...}).
type jsProc struct {
	t      *testing.T
	name   string
	stdin  io.WriteCloser
	exited chan struct{}
	poke   chan struct{} // a new event or the exit

	mu     sync.Mutex
	lines  []string         // stdout
	events []map[string]any // stderr lines that are status events
	stderr []string         // every stderr line
	cursor int              // next event await looks at
	err    error            // the process's exit, once exited is closed
}

func startJS(t *testing.T, script string, args ...string) *jsProc {
	t.Helper()
	node, path := e2eScript(t, script)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, node, append([]string{path}, args...)...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", script, err)
	}
	p := &jsProc{t: t, name: script, stdin: stdin, exited: make(chan struct{}), poke: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev map[string]any
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["event"] != nil {
				p.events = append(p.events, ev)
			}
			p.mu.Unlock()
			p.signal()
		}
	}()
	go func() {
		wg.Wait() // pipes drained before Wait closes them
		err := cmd.Wait()
		cancel()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
		p.signal()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s %s\nstderr:\n%s\nstdout:\n%s", script, strings.Join(args, " "),
				strings.Join(p.stderr, "\n"), strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

func (p *jsProc) signal() {
	select {
	case p.poke <- struct{}{}:
	default:
	}
}

// stops are the events after which a script does not go on as asked.
var stops = map[string]bool{"join_error": true, "join_timeout": true, "timeout": true, "gave_up": true, "exit": true}

// await returns the next status event named event (and matching match, if
// given), failing on one of stops, on the script's exit or after 15 s.
func (p *jsProc) await(event string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		if ev := p.next(event, match); ev != nil {
			return ev
		}
		select {
		case <-p.poke:
		case <-p.exited:
			// Every event was read before exited closed.
			if ev := p.next(event, match); ev != nil {
				return ev
			}
			p.t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.err, event)
		case <-timeout:
			p.t.Fatalf("%s: no %s event within 15s", p.name, event)
		}
	}
}

// next consumes the events up to the first one await wants (nil if none
// has arrived yet).
func (p *jsProc) next(event string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.cursor < len(p.events) {
		ev := p.events[p.cursor]
		p.cursor++
		if ev["event"] == event && (match == nil || match(ev)) {
			return ev
		}
		if name, _ := ev["event"].(string); stops[name] {
			p.t.Fatalf("%s: %v while waiting for %s", p.name, ev, event)
		}
	}
	return nil
}

// send writes one line to the script's stdin.
func (p *jsProc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: write stdin: %v", p.name, err)
	}
}

// wait waits for the script to exit and returns its exit code and stdout.
func (p *jsProc) wait() (int, []string) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("%s did not finish", p.name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	code := 0
	if p.err != nil {
		var ee *exec.ExitError
		if !errors.As(p.err, &ee) {
			p.t.Fatalf("%s: %v", p.name, p.err)
		}
		code = ee.ExitCode()
	}
	return code, append([]string(nil), p.lines...)
}

// stdout returns the lines the script has printed so far.
func (p *jsProc) stdout() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// all returns the status events named event so far.
func (p *jsProc) all(event string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, ev := range p.events {
		if ev["event"] == event {
			out = append(out, ev)
		}
	}
	return out
}

// socketURL is a node's websocket_url (the phoenix client appends /websocket).
func socketURL(n *node) string { return "ws://" + strings.TrimPrefix(n.base, "http://") + "/socket" }

func onURL(u string) func(map[string]any) bool {
	return func(ev map[string]any) bool { return ev["url"] == u }
}

// payloads decodes the JSON lines a phoenix_app.mjs printed.
func payloads(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	out := make([]map[string]any, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &out[i]); err != nil {
			t.Fatalf("payload %q: %v", l, err)
		}
	}
	return out
}

// Three nodes on one Redis, driven by the official phoenix client: a
// client on node C receives the final message of a task submitted on node
// A; a client on node B, joined while the task still runs, sees B shut down
// (close 1001), moves to node A with the same token as an app would, and
// receives the final message exactly once.
func TestThreeNodesPhoenixClient(t *testing.T) {
	t.Parallel()
	e2eScript(t, "phoenix_app.mjs")
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	env := testEnv(t, url, prefix)
	a, b, c := startNode(t, env), startNode(t, env), startNode(t, env)
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "slow", "provider": "mock",
		// Long enough for two node processes to start and join on a loaded machine.
		"mock": map[string]any{"delay_ms": 6000, "response": map[string]any{"ok": true}}})
	ans := a.submit(t, "slow", nil)
	cid, token, topic := ans["channel_id"].(string), ans["ws_token"].(string), ans["websocket_channel"].(string)

	// --linger-ms: after the message, listen on, so that a repeat would show.
	common := []string{"--token", token, "--topic", topic, "--count", "1", "--linger-ms", "400"}
	onC := startJS(t, "phoenix_app.mjs", append([]string{"--urls", socketURL(c)}, common...)...)
	onB := startJS(t, "phoenix_app.mjs", append([]string{"--urls", socketURL(b) + "," + socketURL(a)}, common...)...)
	onC.await("joined", nil)
	onB.await("joined", onURL(socketURL(b)))

	if st := a.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)["status"]; st != "pending" && st != "generating" {
		t.Fatalf("the task is already %v: the test needs it running when node B stops", st)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		b.stop()
	}()
	if ev := onB.await("close", onURL(socketURL(b))); ev["code"] != 1001.0 {
		t.Fatalf("node B closed the socket with %v, want 1001 (going away)", ev)
	}
	onB.await("failover", func(ev map[string]any) bool { return ev["to"] == socketURL(a) })
	onB.await("joined", onURL(socketURL(a)))

	var final string
	for name, p := range map[string]*jsProc{"client on node C": onC, "client moved from B to A": onB} {
		code, lines := p.wait()
		if code != 0 {
			t.Fatalf("%s exited %d", name, code)
		}
		if len(lines) != 1 {
			t.Fatalf("%s received %d messages, want exactly 1: %q", name, len(lines), lines)
		}
		if m := payloads(t, lines)[0]; m["status"] != "success" || m["channel_id"] != cid || get(t, m, "data", "ok") != true {
			t.Errorf("%s received %s", name, lines[0])
		}
		if final != "" && lines[0] != final {
			t.Errorf("the clients received different messages:\n%s\n%s", final, lines[0])
		}
		final = lines[0]
	}
	if n := len(onB.all("open")); n != 2 {
		t.Errorf("the client on B opened %d connections, want 2 (B, then A)", n)
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("node B did not stop")
	}
}
