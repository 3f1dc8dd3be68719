package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/rdb/rdbtest"
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
	cmd *exec.Cmd
}

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
	go func() { // drain, and show the log when the test fails
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if testing.Verbose() {
				tb.Log(sc.Text())
			}
		}
	}()
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
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
	return &process{node: n, cmd: cmd}
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
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()

	b := startProcess(t, bin, env())
	for _, id := range ids {
		v := b.waitFinal(t, b.key, id, 15*time.Second)
		if v["status"] != "success" {
			t.Errorf("task %s ended %v", id, v["status"])
		}
		log := b.must(t, 200, "GET", "/api/console/logs/"+id, nil)
		var kinds []string
		for _, e := range log["timeline"].([]any) {
			kinds = append(kinds, e.(map[string]any)["type"].(string))
		}
		if got := strings.Join(kinds, ","); got != "request,generating,requeued,ai_attempt,completed" {
			t.Errorf("task %s timeline = %s", id, got)
		}
	}
}
