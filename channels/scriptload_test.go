package channels

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/config"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A new connection's Redis is given the hub's publish with this package's
// own scripts: an ack's transaction sends it by hash before the lease's
// removal, and a NOSCRIPT there would run it after that removal.
func TestHubPublishLoadedOnNewConnections(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	cfg := config.Defaults()
	cfg.RedisURL = srv.URL()
	c, err := rdb.Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	// Named by its registration alone (a test that ran an ack first has
	// also sent it by hash, which is loaded too, but unnamed).
	if h := redis.NewScript(hub.PublishSource).Hash(); rdb.ScriptName(h) != "hub/publish" {
		t.Errorf("the hub's publish (%s) is not registered: named %q", h, rdb.ScriptName(h))
	}
	for _, s := range []*redis.Script{redis.NewScript(hub.PublishSource), completeScript, callbackScript} {
		ok, err := c.ScriptExists(ctx, s.Hash()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !ok[0] {
			t.Errorf("script %s (%s) not loaded on a new connection", s.Hash(), rdb.ScriptName(s.Hash()))
		}
	}
}
