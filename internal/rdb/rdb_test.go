package rdb

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/config"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

func TestPersistent(t *testing.T) {
	tests := []struct {
		name, appendonly, save string
		want                   bool
	}{
		{"nothing on disk", "no", "", false},
		{"aof", "yes", "", true},
		{"rdb snapshots", "no", "3600 1 300 100", true},
		{"both", "yes", "900 1", true},
	}
	for _, tt := range tests {
		if got := Persistent(tt.appendonly, tt.save); got != tt.want {
			t.Errorf("%s: Persistent(%q, %q) = %v, want %v", tt.name, tt.appendonly, tt.save, got, tt.want)
		}
	}
}

func TestOpenEmbeddedAndRefusedInProduction(t *testing.T) {
	cfg := config.Defaults()
	c, err := Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Embedded {
		t.Error("no REDIS_URL in development should give the embedded Redis")
	}
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Errorf("embedded redis: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	cfg.Env = config.Production
	if _, err := Open(context.Background(), cfg, zerolog.Nop()); err == nil {
		t.Error("production without REDIS_URL opened a connection")
	}
}

func TestCompactDropsCommentsAndIndentation(t *testing.T) {
	src := "-- a header\n\n  local x = 1 -- kept: code before it\n\t  -- an indented comment\n  if x then\n    return x\n  end\n"
	want := "local x = 1 -- kept: code before it\nif x then\nreturn x\nend\n"
	if got := Compact(src); got != want {
		t.Fatalf("Compact = %q, want %q", got, want)
	}
}

// IsCluster sees a Cluster client, bare or inside a Conn, and nothing else.
func TestIsCluster(t *testing.T) {
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = cluster.Close(); _ = single.Close() })
	for _, tt := range []struct {
		c    redis.UniversalClient
		want bool
	}{{cluster, true}, {&Conn{UniversalClient: cluster}, true}, {single, false}, {&Conn{UniversalClient: single}, false}} {
		if got := IsCluster(tt.c); got != tt.want {
			t.Errorf("IsCluster(%T) = %v, want %v", tt.c, got, tt.want)
		}
	}
}

// After a restart emptied Redis's script cache, Open's clients load the
// scripts again on their new connections, so a script in InOrder's
// transaction runs in its place (before the next step), not after it as
// one sent again after a NOSCRIPT would.
func TestScriptsLoadedOnNewConnections(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	cfg := config.Defaults()
	cfg.RedisURL = srv.URL()
	c, err := Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	set := redis.NewScript(`return redis.call('SET', KEYS[1], 'x')`)
	inOrder := func(k string) (seen int64) {
		t.Helper()
		var exists *redis.IntCmd
		err := InOrder(ctx, c, func(p redis.Pipeliner, _ *Merge) {
			set.Eval(ctx, p, []string{k})
		}, func(p redis.Pipeliner, _ *Merge) {
			exists = p.Exists(ctx, k)
		})
		if err != nil {
			t.Fatalf("InOrder: %v", err)
		}
		return exists.Val()
	}
	inOrder("first") // the script's first use: Redis learns it (and this process knows it)

	srv.Restart(0)
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(ctx).Err() != nil { // the pool's connections to the old process fail once
		if time.Now().After(deadline) {
			t.Fatal("no connection to the restarted Redis within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := inOrder("after-restart"); n != 1 {
		t.Error("after the restart the script ran after the step behind it: it was not loaded on the new connection")
	}
}
