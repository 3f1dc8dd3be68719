package rdbtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a throwaway Redis Cluster of a test's own: three masters and
// three replicas on loopback ports Base..Base+5, started by
// .ci/redis-cluster, stopped (and its directory removed) when the test
// ends.
type Cluster struct {
	tb   testing.TB
	Base int
	URL  string // its REDIS_URL (redis-cluster://…)
}

// NewCluster starts a cluster on ports base..base+5, which must be free.
func NewCluster(tb testing.TB, base int) *Cluster {
	tb.Helper()
	serverBin(tb)
	script := filepath.Join(moduleRoot(tb), ".ci", "redis-cluster")
	dir := tb.TempDir()
	b := strconv.Itoa(base)
	// Registered first, so it runs even when the start fails half way.
	tb.Cleanup(func() { _ = exec.Command(script, "stop", b, dir).Run() })
	out, err := exec.Command(script, "start", b, dir).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + string(ee.Stderr)
		}
		tb.Fatalf("start a cluster on %d: %s", base, msg)
	}
	cl := &Cluster{tb: tb, Base: base, URL: strings.TrimSpace(string(out))}
	cl.waitReplicas()
	return cl
}

// waitReplicas waits until each master has a replica that holds its data:
// the cluster answers "ok" before the replicas are assigned, and a
// replica's first sync takes a few seconds more (a master waits for other
// replicas before it starts a diskless one). A replica never synced is
// not promoted when its master fails.
func (c *Cluster) waitReplicas() {
	c.tb.Helper()
	ctx := context.Background()
	seed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(c.Base), MaxRetries: -1})
	defer seed.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		synced := 0
		for _, l := range strings.Split(seed.ClusterNodes(ctx).Val(), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || !strings.Contains(f[2], "slave") {
				continue
			}
			r := redis.NewClient(&redis.Options{Addr: strings.Split(f[1], "@")[0], MaxRetries: -1})
			if strings.Contains(r.Info(ctx, "replication").Val(), "master_link_status:up") {
				synced++
			}
			_ = r.Close()
		}
		if synced == 3 {
			return
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("the cluster on %d has %d replicas in sync after 30s, want 3", c.Base, synced)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// moduleRoot is the directory of go.mod above the working directory.
func moduleRoot(tb testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			tb.Fatal("no go.mod above the working directory")
		}
		dir = up
	}
}

// Client returns a cluster client, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	cc, err := Client(c.URL)
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(func() { _ = cc.Close() })
	return cc.(*redis.ClusterClient)
}

// ReplicaOf returns the address of the (first) replica of the master at
// addr, as CLUSTER NODES lists it.
func ReplicaOf(tb testing.TB, addr string) string {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	out, err := c.ClusterNodes(context.Background()).Result()
	if err != nil {
		tb.Fatalf("CLUSTER NODES on %s: %v", addr, err)
	}
	var self string
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 2 && strings.Contains(f[2], "myself") {
			self = f[0]
		}
	}
	for _, l := range lines {
		// <id> <ip:port@cport> <flags> <master id> ...
		if f := strings.Fields(l); len(f) > 3 && f[3] == self && strings.Contains(f[2], "slave") {
			return strings.Split(f[1], "@")[0]
		}
	}
	tb.Fatalf("master %s has no replica:\n%s", addr, out)
	return ""
}

// Crash kills the redis-server at addr with SIGKILL (its pid read from
// INFO), as a crash would: it does not wait for its replicas to catch up,
// as SHUTDOWN does. Only for servers the test started.
func Crash(tb testing.TB, addr string) {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		tb.Fatalf("INFO on %s: %v", addr, err)
	}
	pid := 0
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 1 {
		tb.Fatalf("no process_id in INFO of %s", addr)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.Fatalf("kill redis-server %d (%s): %v", pid, addr, err)
	}
	for range 100 {
		if c.Ping(context.Background()).Err() != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("redis-server %s still answers after SIGKILL", addr)
}

// IsMaster reports whether the server at addr answers ROLE with master.
func IsMaster(addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v, err := c.Do(ctx, "ROLE").Slice()
	return err == nil && len(v) > 0 && fmt.Sprint(v[0]) == "master"
}
