package rdb

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Unavailable reports whether err means Redis could not serve a command
// now — it is down, slow, loading its data, failing over or out of
// connections — rather than that the command or the code is wrong. Such an
// error is worth retrying a moment later; the API answers it with 503.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	for _, target := range []error{context.DeadlineExceeded, context.Canceled, redis.ErrClosed,
		redis.ErrPoolTimeout, redis.ErrPoolExhausted, io.EOF, io.ErrUnexpectedEOF,
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, target) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.IsOOMError(err) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		// MOVED and ASK reach here only when a slot migration or failover
		// outlasted the cluster client's redirects; BUSY is a script that
		// has run too long.
		msg := re.Error()
		for _, p := range []string{"MOVED ", "ASK ", "BUSY ", "LOADING ", "READONLY ", "CLUSTERDOWN ", "TRYAGAIN ", "MASTERDOWN "} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

type boundKey struct{}

// Bound marks ctx so that every Redis command run with it (its retries
// included) gives up after d: an API request then answers 503 within a
// known time instead of waiting out the client's dial and read timeouts.
// Background work is not bounded this way.
func Bound(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	return context.WithValue(ctx, boundKey{}, d)
}

// boundHook applies the bound set by Bound to each command and pipeline.
type boundHook struct{}

func (boundHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (boundHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, cancel := bounded(ctx)
		defer cancel()
		return next(ctx, cmd)
	}
}

func (boundHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := bounded(ctx)
		defer cancel()
		return next(ctx, cmds)
	}
}

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Value(boundKey{}).(time.Duration); ok {
		return context.WithTimeout(ctx, d)
	}
	return ctx, func() {}
}

// Backoff waits before retry n (0, 1, ...) of a write that failed for
// Redis: 25 ms, doubling up to 1 s. It reports false if ctx ended first.
func Backoff(ctx context.Context, n int) bool {
	d := time.Second
	if n < 6 {
		d = min(25*time.Millisecond<<n, time.Second)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
