package rdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{redis.Nil, false},
		{errors.New("decode task: bad json"), false},
		{redisErr("ERR wrong number of arguments"), false},
		{redisErr("NOPERM this user has no permissions to run the 'eval' command"), false},
		{fmt.Errorf("submit: %w", syscall.ECONNREFUSED), true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("read: %w", io.EOF), true},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{redis.ErrPoolTimeout, true},
		{redis.ErrClosed, true},
		{redisErr("LOADING Redis is loading the dataset in memory"), true},
		{redisErr("READONLY You can't write against a read only replica."), true},
		{redisErr("CLUSTERDOWN The cluster is down"), true},
		{redisErr("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{redisErr("MOVED 3999 127.0.0.1:6381"), true},
		{redisErr("BUSY Redis is busy running a script."), true},
		{fmt.Errorf("claim: %w", redisErr("MASTERDOWN Link with MASTER is down")), true},
	} {
		if got := Unavailable(c.err); got != c.want {
			t.Errorf("Unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A command run with a bounded context gives up at the bound, retries
// included, even though the server would answer much later.
func TestBoundCutsASlowCommand(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, ReadTimeout: 5 * time.Second})
	c.AddHook(boundHook{})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Client().Do(context.Background(), "DEBUG", "SLEEP", "2").Err() }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	err := c.Get(Bound(context.Background(), 200*time.Millisecond), "k").Err()
	took := time.Since(start)
	if !Unavailable(err) {
		t.Fatalf("GET during DEBUG SLEEP: %v; want an unavailable error", err)
	}
	if took > 1500*time.Millisecond {
		t.Fatalf("GET gave up after %v; want about the 200ms bound", took)
	}
	// Unbounded, the same client waits for the answer.
	if err := c.Get(context.Background(), "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("unbounded GET = %v; want redis.Nil", err)
	}
}
