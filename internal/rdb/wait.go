package rdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replication is what the WAITs of the writes made with one context
// reported (see WaitReplicas).
type Replication struct {
	want    int64
	timeout time.Duration

	mu    sync.Mutex
	ran   int   // WAITs answered
	short int   // of those, answered with fewer than want replicas, or failed
	least int64 // fewest replicas a WAIT reported; -1 before the first
	err   error // the first WAIT's error
}

// ErrNotReplicated reports that writes were acknowledged by the master
// but not, within the timeout, by as many replicas as asked.
var ErrNotReplicated = errors.New("not confirmed by enough replicas")

// WaitReplicas marks ctx so that every round trip of writes made with it
// (a pipeline, or one command) ends with WAIT replicas timeout, on the
// connection that made the writes, as WAIT requires: it counts the
// replicas that have the connection's writes. On a Cluster a pipeline goes
// to each master that owns some of its keys on a connection of that
// master, and each of those parts gets its own WAIT. Round trips of reads
// only are sent as they are.
//
// The hook that adds the WAITs is installed by Open (EnableWait); on a
// client without it nothing waits, and Err says so. Err tells whether
// every WAIT found enough replicas.
func WaitReplicas(ctx context.Context, replicas int, timeout time.Duration) (context.Context, *Replication) {
	r := &Replication{want: int64(replicas), timeout: timeout, least: -1}
	return context.WithValue(ctx, waitKey{}, r), r
}

// Err is nil when at least one WAIT ran and each found the replicas asked
// for; otherwise it wraps ErrNotReplicated and says how far it got.
func (r *Replication) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.ran == 0:
		return fmt.Errorf("%w: no WAIT ran", ErrNotReplicated)
	case r.err != nil:
		return fmt.Errorf("%w: WAIT: %v", ErrNotReplicated, r.err)
	case r.short > 0:
		return fmt.Errorf("%w: %d of %d WAITs found %d of %d replicas within %v",
			ErrNotReplicated, r.short, r.ran, r.least, r.want, r.timeout)
	}
	return nil
}

// Waits is how many WAITs ran, and how many of those fell short.
func (r *Replication) Waits() (ran, short int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ran, r.short
}

func (r *Replication) note(c *redis.IntCmd) {
	n, err := c.Result()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran++
	if err != nil && r.err == nil {
		r.err = err
	}
	if err != nil || n < r.want {
		r.short++
	}
	if err == nil && (r.least < 0 || n < r.least) {
		r.least = n
	}
}

// waitCmd is the WAIT r asks for.
func (r *Replication) waitCmd(ctx context.Context) *redis.IntCmd {
	ms := max(1, r.timeout.Milliseconds()) // WAIT n 0 would block for ever
	return redis.NewIntCmd(ctx, "wait", r.want, ms)
}

type waitKey struct{}

func replicationOf(ctx context.Context) *Replication {
	r, _ := ctx.Value(waitKey{}).(*Replication)
	return r
}

// EnableWait installs the hook WaitReplicas relies on: on the client
// itself for one Redis or a Sentinel group (one connection per pipeline),
// on each node's client for a Cluster (where a pipeline is split into one
// per node). Install it before the client's first command.
func EnableWait(c redis.UniversalClient) {
	switch c := c.(type) {
	case *Conn:
		EnableWait(c.UniversalClient)
	case *redis.ClusterClient:
		c.OnNewNode(func(n *redis.Client) { n.AddHook(waitHook{n}) })
	case *redis.Client:
		c.AddHook(waitHook{c})
	}
}

// waitHook appends WAIT to the round trips of writes made with a context
// marked by WaitReplicas. It sits on a client whose pipelines use one
// connection each (a node's, on a Cluster).
type waitHook struct{ c *redis.Client }

func (waitHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h waitHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if replicationOf(ctx) == nil || readOnly(cmd) {
			return next(ctx, cmd)
		}
		// One command has no connection of its own to send WAIT on: it
		// goes as a pipeline of one, which the pipeline hook completes.
		_, _ = h.c.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Process(ctx, cmd) })
		return cmd.Err()
	}
}

func (waitHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r := replicationOf(ctx)
		if r == nil || allReadOnly(cmds) {
			return next(ctx, cmds)
		}
		wait := r.waitCmd(ctx)
		// A copy: the caller's slice must not see the WAIT.
		err := next(ctx, append(cmds[:len(cmds):len(cmds)], wait))
		r.note(wait)
		if err != nil && firstErr(cmds) == nil {
			// The WAIT's own failure; the writes went through, and the
			// Replication reports it.
			return nil
		}
		return err
	}
}

func firstErr(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// readOnlyCmds are the commands riverhub reads with, and those that set a
// connection up (the client sends them on a new connection, with the
// context of the command that needed it); anything else (a script
// included) counts as a write.
var readOnlyCmds = map[string]bool{
	"hello": true, "auth": true, "select": true, "client": true, "readonly": true, "readwrite": true,
	"asking": true, "command": true, "cluster": true, "role": true, "quit": true, "reset": true,
	"get": true, "mget": true, "strlen": true, "exists": true, "type": true, "ttl": true, "pttl": true,
	"hget": true, "hmget": true, "hgetall": true, "hexists": true, "hlen": true, "hscan": true,
	"llen": true, "lrange": true, "lindex": true,
	"scard": true, "smembers": true, "sismember": true, "sscan": true,
	"zcard": true, "zcount": true, "zscore": true, "zmscore": true, "zrange": true, "zrangebyscore": true,
	"zrevrange": true, "zrevrangebyscore": true, "zrank": true, "zscan": true,
	"xlen": true, "xrange": true, "xrevrange": true, "scan": true,
	"ping": true, "time": true, "info": true, "wait": true, "evalsha_ro": true, "eval_ro": true,
}

func readOnly(cmd redis.Cmder) bool { return readOnlyCmds[strings.ToLower(cmd.Name())] }

func allReadOnly(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if !readOnly(c) {
			return false
		}
	}
	return true
}
