// Package rdbtest gives tests a Redis: the real one named by REDIS_URL when
// it is set (CI sets it), an embedded one otherwise. Each call returns a
// fresh key prefix so tests run in parallel against a shared server without
// touching each other's keys; nothing is ever flushed.
package rdbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/riverhub/riverhub/config"
)

// New returns a client and a unique key prefix. The client is closed when
// the test ends.
func New(tb testing.TB) (redis.UniversalClient, string) {
	tb.Helper()
	url := os.Getenv("REDIS_URL")
	var c redis.UniversalClient
	if url == "" {
		m := miniredis.RunT(tb)
		c = redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: 64})
	} else {
		var err error
		if c, err = Client(url); err != nil {
			tb.Fatalf("REDIS_URL: %v", err)
		}
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		_ = c.Close()
		tb.Fatalf("redis: %v", err)
	}
	prefix := Prefix()
	tb.Cleanup(func() {
		Drop(c, prefix)
		_ = c.Close()
	})
	return c, prefix
}

// Drop deletes the keys under prefix, so runs do not pile up data on a
// shared server. (Only this prefix: never a flush.) On a Cluster it scans
// every master and deletes key by key (one UNLINK may not span slots).
func Drop(c redis.UniversalClient, prefix string) {
	ctx := context.Background()
	if cc, ok := c.(*redis.ClusterClient); ok {
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			dropOn(ctx, n, prefix, true)
			return nil
		})
		return
	}
	dropOn(ctx, c, prefix, false)
}

func dropOn(ctx context.Context, c redis.UniversalClient, prefix string, oneByOne bool) {
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	flush := func() {
		if oneByOne {
			p := c.Pipeline()
			for _, k := range batch {
				p.Unlink(ctx, k)
			}
			_, _ = p.Exec(ctx)
		} else {
			c.Unlink(ctx, batch...)
		}
		batch = batch[:0]
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}

// Client connects to the Redis named by url.
func Client(url string) (redis.UniversalClient, error) {
	return clientNamed(url, "")
}

func clientNamed(url, name string) (redis.UniversalClient, error) {
	t, err := config.ParseRedisURL(url)
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: t.Addrs, DB: t.DB, Username: t.Username, Password: t.Password,
		MasterName: t.MasterName, IsClusterMode: t.Cluster, PoolSize: 128,
		ClientName: name,
	}), nil
}

// Named returns a client of its own to the Redis named by REDIS_URL whose
// connections carry name (CLIENT SETNAME), so that a test can find them
// in CLIENT LIST and kill them. It skips the test without REDIS_URL (the
// embedded Redis cannot kill a client). The client is closed when the test
// ends.
func Named(tb testing.TB, name string) redis.UniversalClient {
	tb.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		tb.Skip("needs a real Redis (REDIS_URL): the embedded one cannot kill a client")
	}
	c, err := clientNamed(url, name)
	if err != nil {
		tb.Fatalf("REDIS_URL: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// IsCluster reports whether REDIS_URL names a Redis Cluster; tests of what
// only a Cluster does skip unless it does.
func IsCluster() bool {
	t, err := config.ParseRedisURL(os.Getenv("REDIS_URL"))
	return err == nil && t.Cluster
}

// Nodes runs fn on each server c talks to: every master of a Cluster, or
// c itself.
func Nodes(ctx context.Context, c redis.UniversalClient, fn func(context.Context, redis.UniversalClient) error) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) })
	}
	return fn(ctx, c)
}

// Prefix returns a key prefix no other test uses.
func Prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "rhtest:" + hex.EncodeToString(b)
}
