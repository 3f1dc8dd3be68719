package rdb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/config"
)

// Conn is an open Redis connection and whatever must be stopped with it.
type Conn struct {
	redis.UniversalClient
	// Embedded is true when the connection goes to the in-process Redis.
	Embedded bool
	stop     func()
}

// Unwrap is the client inside: a *redis.ClusterClient on a Cluster, for
// what only a Cluster client does (the hub finds each room's master).
func (c *Conn) Unwrap() redis.UniversalClient { return c.UniversalClient }

// Close closes the client and, for the embedded Redis, the server. Safe twice.
func (c *Conn) Close() error {
	err := c.UniversalClient.Close()
	if errors.Is(err, redis.ErrClosed) {
		err = nil
	}
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	return err
}

// Open connects to the Redis named by cfg.RedisURL, or starts the embedded
// one when it is empty (never in production: config validation refuses that),
// and checks that it answers.
func Open(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*Conn, error) {
	quietClientLog(log)
	if cfg.RedisURL == "" {
		if cfg.Production() {
			return nil, errors.New("REDIS_URL: required in production")
		}
		return openEmbedded(ctx, log)
	}
	t, err := config.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opts := &redis.UniversalOptions{
		Addrs:         t.Addrs,
		DB:            t.DB,
		Username:      t.Username,
		Password:      t.Password,
		MasterName:    t.MasterName,
		IsClusterMode: t.Cluster,
		// Workers, the scheduler and the HTTP handlers all share the pool;
		// the default (10 per CPU) queues callers under load.
		PoolSize:     64 + cfg.Workers/2,
		ReadTimeout:  5 * time.Second,
		WriteTimeout: 5 * time.Second,
		// A command gives up at its context's deadline, so the bound Bound
		// sets on API requests holds for reads and writes too.
		ContextTimeoutEnabled: true,
		OnConnect:             loadScripts,
	}
	if t.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c := &Conn{UniversalClient: redis.NewUniversalClient(opts)}
	if cc, ok := c.UniversalClient.(*redis.ClusterClient); ok {
		reloadOnFailure(cc)
	}
	EnableWait(c)
	c.AddHook(boundHook{})
	if err := ping(ctx, c); err != nil {
		_ = c.Close()
		return nil, err
	}
	if cfg.Production() {
		warnWithoutPersistence(ctx, c, log)
	}
	return c, nil
}

// Age makes an embedded server (miniredis), which ages keys only when told
// to, age them as time passes, a second at a time, until stop is called:
// TTLs then run out as on a real Redis.
func Age(m *miniredis.Miniredis) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				m.FastForward(time.Second)
			}
		}
	}()
	return func() { close(done) }
}

func openEmbedded(ctx context.Context, log zerolog.Logger) (*Conn, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	// The retention TTLs hold in development too.
	stopAging := Age(m)
	c := &Conn{
		UniversalClient: redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: 64, ContextTimeoutEnabled: true}),
		Embedded:        true,
		stop: func() {
			stopAging()
			m.Close()
		},
	}
	c.AddHook(boundHook{})
	if err := ping(ctx, c); err != nil {
		_ = c.Close()
		return nil, err
	}
	log.Warn().Str("addr", m.Addr()).Msg("REDIS_URL is not set: using an EMBEDDED IN-MEMORY Redis. " +
		"Nothing survives a restart and other nodes cannot share it. Set REDIS_URL for real use.")
	return c, nil
}

func ping(ctx context.Context, c redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis does not answer: %w", err)
	}
	return nil
}

// warnWithoutPersistence logs a warning when the server keeps nothing on
// disk: a restart of Redis would then lose every queued task and delivery.
func warnWithoutPersistence(ctx context.Context, c redis.UniversalClient, log zerolog.Logger) {
	res, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		log.Debug().Err(err).Msg("cannot read redis persistence settings (CONFIG GET refused)")
		return
	}
	if !Persistent(res["appendonly"], res["save"]) {
		log.Warn().Msg("redis has no persistence (appendonly no, save \"\"): " +
			"a Redis restart loses queued tasks, pending deliveries and dead letters")
	}
}

// Persistent reports whether the CONFIG values of appendonly and save mean
// the server writes its data to disk.
func Persistent(appendonly, save string) bool {
	return strings.EqualFold(appendonly, "yes") || strings.TrimSpace(save) != ""
}

var clientLogOnce sync.Once

// quietClientLog sends the Redis client's own log lines (one per failed
// dial, hundreds a second while Redis is down) to the process log, at most
// one every few seconds. The client's logger is global: the first node of
// the process sets it.
func quietClientLog(log zerolog.Logger) {
	clientLogOnce.Do(func() {
		redis.SetLogger(clientLog{log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 5 * time.Second})})
	})
}

type clientLog struct{ log zerolog.Logger }

func (l clientLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn().Str("component", "redis client").Msgf(format, v...)
}

// IsCluster reports whether c talks to a Redis Cluster. There the parts of
// a pipeline bound for different nodes run side by side, and each node has
// its own script cache (a script one node knows another may answer
// NOSCRIPT to, and get again after the rest of the pipeline): commands on
// different hash tags are not ordered within one pipeline.
func IsCluster(c redis.UniversalClient) bool {
	if conn, ok := c.(*Conn); ok {
		c = conn.UniversalClient
	}
	_, ok := c.(*redis.ClusterClient)
	return ok
}
