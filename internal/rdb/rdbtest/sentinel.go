package rdbtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewSentinel starts a sentinel (redis-server --sentinel) on port that
// monitors the master named name at 127.0.0.1:masterPort with a quorum of
// 2, takes it for down after 1 s and gives a failover 5 s. It is stopped
// when the test ends.
func NewSentinel(tb testing.TB, port int, name string, masterPort int) {
	tb.Helper()
	bin := serverBin(tb)
	freePort(tb, port)
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf") // the sentinel rewrites it
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 2\n"+
		"sentinel down-after-milliseconds %[4]s 1000\n"+
		"sentinel failover-timeout %[4]s 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), name, masterPort)
	// (%[4]s is name again.)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start sentinel: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			tb.Fatalf("sentinel on %d did not answer within 10s\n%s", port, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
