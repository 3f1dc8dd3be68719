package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// buildBinary builds riverhub once per test run.
func buildBinary(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "riverhub")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is riverhub running as a child process.
type process struct {
	*node
	cmd     *exec.Cmd
	log     *logTail
	drained chan struct{} // closed when all of its output is read
}

// startProcess starts bin with env and waits until it listens. Its output
// is kept (the last lines) and shown if the test fails.
func startProcess(tb testing.TB, bin string, env map[string]string) *process {
	tb.Helper()
	addr := freeAddr(tb)
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	env["RIVERHUB_ADDR"] = addr
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	lt := &logTail{keep: 40}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lt.add(sc.Text())
		}
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-drained
		_ = cmd.Wait()
		if tb.Failed() {
			tb.Logf("node %s: %s", addr, lt)
		}
	})
	n := &node{base: "http://" + addr, key: testAdminKey}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("process did not listen within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &process{node: n, cmd: cmd, log: lt, drained: drained}
}

// kill stops the process with SIGKILL, as a crash would.
func (p *process) kill(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		tb.Fatal(err)
	}
	<-p.drained
	_ = p.cmd.Wait()
}

// logTail keeps the last lines of a log and counts them all.
type logTail struct {
	mu    sync.Mutex
	keep  int
	lines []string
	total int
}

func (l *logTail) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if len(l.lines) == l.keep {
		l.lines = l.lines[1:]
	}
	l.lines = append(l.lines, line)
}

// String is the count and the last lines, for a test's log.
func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d log lines, the last %d:\n%s", l.total, len(l.lines), strings.Join(l.lines, "\n"))
}

// A node killed with SIGKILL while it holds leased tasks: another node
// completes every one of them once the leases run out.
func TestKilledNodeTasksCompleteElsewhere(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin := buildBinary(t)
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	env := func() map[string]string {
		return testEnv(t, url, prefix, "RIVERHUB_TASK_LEASE", "1s", "RIVERHUB_LOG_LEVEL", "info")
	}

	a := startProcess(t, bin, env())
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{
		"name": "slow", "provider": "mock", "mock": map[string]any{"delay_ms": 3000, "response": map[string]any{"ok": true}},
	})
	var ids []string
	for range 10 {
		ids = append(ids, a.submit(t, "slow", nil)["channel_id"].(string))
	}
	// Wait until node A runs all of them (they hold its leases).
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range ids {
		for a.must(t, 200, "GET", "/api/v1/channels/"+id, nil)["status"] != "generating" {
			if time.Now().After(deadline) {
				t.Fatalf("task %s was not started by node A", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a.kill(t)

	b := startProcess(t, bin, env())
	for _, id := range ids {
		v := b.waitFinal(t, b.key, id, 15*time.Second)
		if v["status"] != "success" {
			t.Errorf("task %s ended %v", id, v["status"])
		}
		log := b.must(t, 200, "GET", "/api/console/logs/"+id, nil)
		var kinds []string
		for _, e := range log["timeline"].([]any) {
			if k := e.(map[string]any)["type"].(string); k != "broadcast" { // logged with the publish, a moment later
				kinds = append(kinds, k)
			}
		}
		if got := strings.Join(kinds, ","); got != "request,generating,requeued,ai_attempt,completed" {
			t.Errorf("task %s timeline = %s", id, got)
		}
	}
}

// A node killed with SIGKILL after generating event-driven channels: their
// callback deadlines live in Redis, and another node fires every one of
// them; a socket on that node sees the timeout.
func TestKilledNodeDeadlinesFireElsewhere(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin := buildBinary(t)
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })

	a := startProcess(t, bin, testEnv(t, url, prefix))
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
		"event_name": "e", "callback_timeout_seconds": 2, "mock": map[string]any{"response": map[string]any{"ok": true}}})
	var answers []map[string]any
	for range 20 {
		answers = append(answers, a.submit(t, "ev", nil))
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, ans := range answers {
		for a.must(t, 200, "GET", "/api/v1/channels/"+ans["channel_id"].(string), nil)["status"] != "ai_generated" {
			if time.Now().After(deadline) {
				t.Fatalf("channel %s was not generated by node A", ans["channel_id"])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a.kill(t)

	b := startNode(t, testEnv(t, url, prefix))
	_, next := joinRoom(t, b, answers[0])
	var got []string
	for len(got) < 2 {
		m, err := next(10 * time.Second)
		if err != nil {
			t.Fatalf("room on node B: %v after %v", err, got)
		}
		code := ""
		if e, ok := m["error"].(map[string]any); ok {
			code = fmt.Sprint(e["code"])
		}
		got = append(got, fmt.Sprint(m["status"], "/", code))
	}
	if strings.Join(got, ",") != "ai_generated/,error/callback_timeout" {
		t.Errorf("room on node B got %v", got)
	}
	for _, ans := range answers {
		v := b.waitFinal(t, b.key, ans["channel_id"].(string), 10*time.Second)
		if v["status"] != "error" || !strings.Contains(fmt.Sprint(v["message"]), "code:callback_timeout") {
			t.Errorf("channel %s ended %v", ans["channel_id"], v)
		}
	}
}
