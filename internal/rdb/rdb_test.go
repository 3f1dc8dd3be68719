package rdb

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/config"
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
