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
// shared server. (Only this prefix: never a flush.)
func Drop(c redis.UniversalClient, prefix string) {
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			c.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Unlink(ctx, batch...)
	}
}

// Client connects to the Redis named by url.
func Client(url string) (redis.UniversalClient, error) {
	t, err := config.ParseRedisURL(url)
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: t.Addrs, DB: t.DB, Username: t.Username, Password: t.Password,
		MasterName: t.MasterName, IsClusterMode: t.Cluster, PoolSize: 128,
	}), nil
}

// Prefix returns a key prefix no other test uses.
func Prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "rhtest:" + hex.EncodeToString(b)
}
