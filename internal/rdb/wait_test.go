package rdb

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// waitTimeout is the WAIT timeout of these tests: long enough to tell a
// WAIT that waited it out from one that did not.
const waitTimeout = 400 * time.Millisecond

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// synced waits until WAIT 1 confirms on the client's connections.
func synced(t *testing.T, c redis.UniversalClient, keys ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, r := WaitReplicas(context.Background(), 1, 200*time.Millisecond)
		err := Pipelined(ctx, c, func(p redis.Pipeliner) {
			for _, k := range keys {
				p.Set(ctx, k, "sync", 0)
			}
		})
		if err == nil && r.Err() == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas did not confirm within 10s: %v / %v", err, r.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WAIT goes with the writes. With the replica paused (CLIENT PAUSE ALL
// holds the stream from its master, so it confirms nothing new), a marked
// write — a pipeline, or one command — waits out the timeout and reports
// the shortfall, while the same write unmarked answers at once; with the
// replica well, a marked write is confirmed at once. (That the WAIT is on
// the writing connection shows on a Cluster, below: each master's part of
// a pipeline gets its own.)
func TestWaitRunsOnTheWritingConnection(t *testing.T) {
	t.Parallel()
	master := rdbtest.NewServerAt(t, 7351)
	replica := rdbtest.NewServerAt(t, 7352, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	c := redis.NewClient(&redis.Options{Addr: master.Addr, PoolSize: 4})
	EnableWait(c)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	synced(t, c, "k")

	// A healthy replica confirms at once.
	wctx, r := WaitReplicas(ctx, 1, waitTimeout)
	took := timed(func() {
		if err := Pipelined(wctx, c, func(p redis.Pipeliner) { p.Set(wctx, "k", "1", 0); p.Incr(wctx, "n") }); err != nil {
			t.Fatal(err)
		}
	})
	if err := r.Err(); err != nil || took >= waitTimeout {
		t.Fatalf("healthy replica: %v after %v; want confirmed well within %v", err, took, waitTimeout)
	}
	if ran, _ := r.Waits(); ran != 1 {
		t.Fatalf("%d WAITs for one pipeline, want 1", ran)
	}
	// InOrder's steps go as a transaction, its WAIT after the EXEC.
	inOrder := func(ctx context.Context) error {
		return InOrder(ctx, c, func(p redis.Pipeliner, _ *Merge) { p.Set(ctx, "k", "in order", 0) },
			func(p redis.Pipeliner, _ *Merge) { p.Incr(ctx, "n") })
	}
	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	if err := inOrder(wctx); err != nil {
		t.Fatalf("InOrder with WaitReplicas: %v", err)
	}
	if ran, _ := r.Waits(); ran != 1 || r.Err() != nil {
		t.Fatalf("InOrder with WaitReplicas: %d WAITs (%v), want 1, confirmed", ran, r.Err())
	}

	replica.Do("CLIENT", "PAUSE", "5000", "ALL")
	t.Cleanup(func() { replica.Do("CLIENT", "UNPAUSE") })

	if took := timed(func() { c.Set(ctx, "k", "2", 0) }); took >= waitTimeout/2 {
		t.Errorf("unmarked SET took %v with the replica paused; want at once", took)
	}

	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	took = timed(func() {
		if err := Pipelined(wctx, c, func(p redis.Pipeliner) { p.Set(wctx, "k", "3", 0); p.Incr(wctx, "n") }); err != nil {
			t.Fatal(err)
		}
	})
	if err := r.Err(); !errors.Is(err, ErrNotReplicated) || took < waitTimeout {
		t.Errorf("marked pipeline, replica paused: %v after %v; want ErrNotReplicated after %v", err, took, waitTimeout)
	}

	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	took = timed(func() {
		if err := inOrder(wctx); err != nil {
			t.Fatal(err)
		}
	})
	if err := r.Err(); !errors.Is(err, ErrNotReplicated) || took < waitTimeout {
		t.Errorf("marked InOrder, replica paused: %v after %v; want ErrNotReplicated after %v", err, took, waitTimeout)
	}

	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	took = timed(func() {
		if err := c.Set(wctx, "k", "4", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if err := r.Err(); !errors.Is(err, ErrNotReplicated) || took < waitTimeout {
		t.Errorf("marked SET, replica paused: %v after %v; want ErrNotReplicated after %v", err, took, waitTimeout)
	}
	if v := c.Get(ctx, "k").Val(); v != "4" {
		t.Errorf("GET k = %q after a marked SET fell short; want 4: the write stands on the master", v)
	}

	// Reads are not followed by a WAIT.
	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	if took := timed(func() { c.Get(wctx, "k") }); took >= waitTimeout/2 {
		t.Errorf("marked GET took %v; want at once", took)
	}
	if ran, _ := r.Waits(); ran != 0 {
		t.Errorf("%d WAITs after a read, want 0", ran)
	}
}

// On a Cluster a pipeline is split per master, and each part gets its
// WAIT on its own connection: with one master's replica paused, a pipeline
// writing to that master and to another runs two WAITs, of which the
// paused one's falls short; a write to the other master alone confirms.
func TestWaitOnEachClusterNode(t *testing.T) {
	t.Parallel()
	cl := rdbtest.NewCluster(t, 7361)
	c := cl.Client()
	EnableWait(c)
	ctx := context.Background()
	// Two keys on different masters.
	a, b := "wait:{a}", ""
	ma, err := c.MasterForKey(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		k := "wait:{" + strconv.Itoa(i) + "}"
		if mk, err := c.MasterForKey(ctx, k); err == nil && mk.Options().Addr != ma.Options().Addr {
			b = k
			break
		}
	}
	if b == "" {
		t.Fatal("no key on another master")
	}
	synced(t, c, a, b)

	replica := rdbtest.ReplicaOf(t, ma.Options().Addr)
	pause := redis.NewClient(&redis.Options{Addr: replica})
	defer pause.Close()
	if err := pause.Do(ctx, "CLIENT", "PAUSE", 5000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pause.Do(context.Background(), "CLIENT", "UNPAUSE").Err() })

	wctx, r := WaitReplicas(ctx, 1, waitTimeout)
	took := timed(func() {
		if err := Pipelined(wctx, c, func(p redis.Pipeliner) { p.Set(wctx, a, "1", 0); p.Set(wctx, b, "1", 0) }); err != nil {
			t.Fatal(err)
		}
	})
	ran, short := r.Waits()
	if ran != 2 || short != 1 || took < waitTimeout || !errors.Is(r.Err(), ErrNotReplicated) {
		t.Errorf("pipeline to two masters, one replica paused: %d WAITs, %d short, after %v (%v); want 2, 1, after %v",
			ran, short, took, r.Err(), waitTimeout)
	}

	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	took = timed(func() {
		if err := c.Set(wctx, b, "2", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if err := r.Err(); err != nil || took >= waitTimeout {
		t.Errorf("SET on the healthy master: %v after %v; want confirmed at once", err, took)
	}
	wctx, r = WaitReplicas(ctx, 1, waitTimeout)
	took = timed(func() {
		if err := c.Set(wctx, a, "2", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if err := r.Err(); !errors.Is(err, ErrNotReplicated) || took < waitTimeout {
		t.Errorf("SET on the master of the paused replica: %v after %v; want ErrNotReplicated after %v", err, took, waitTimeout)
	}
}

// Without the hook nothing waits, and the Replication says so.
func TestWaitWithoutHookReportsNothingRan(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx, r := WaitReplicas(context.Background(), 1, waitTimeout)
	if err := c.Set(ctx, prefix+":k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("Err = %v; want ErrNotReplicated (no WAIT ran)", err)
	}
}
