package channels

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

func TestPermitBlock(t *testing.T) {
	for rate, want := range map[int]int{1: 1, 99: 1, 199: 1, 200: 2, 1000: 10, 1_000_000: 10_000} {
		if got := permitBlock(rate); got != want {
			t.Errorf("permitBlock(%d) = %d, want %d", rate, got, want)
		}
	}
	var p permits
	t0 := time.Now()
	for i := range 20 { // nothing submitted before: one task per check
		if ask := p.take("a", t0, 10); ask != 1 {
			t.Fatalf("submission %d of a fresh project asks %d, want 1", i+1, ask)
		}
	}
	// A window later a check asks for a block sized to that use (20 in
	// 50 ms, at most 10), one check at a time.
	now := t0.Add(permitHold)
	if ask := p.take("a", now, 30); ask != 21 {
		t.Fatalf("asks %d after 20 submissions in a window, want 21", ask)
	}
	if ask := p.take("a", now, 30); ask != 1 {
		t.Fatalf("a second check while a block is being taken asks %d, want 1", ask)
	}
	p.kept("a", 21, 0, now)
	if ask := p.take("a", now, 10); ask != 10 {
		t.Fatalf("asks %d with at most 10, want 10", ask)
	}
	p.kept("a", 5, 5, now)
	for i := range 4 {
		if ask := p.take("a", now, 10); ask != 0 {
			t.Fatalf("permit %d of 4 held not spent (asks %d)", i+1, ask)
		}
	}
	if ask := p.take("a", now, 10); ask == 0 {
		t.Fatal("spent a permit beyond those held")
	}
	p.kept("a", 5, 0, now) // refused: nothing held, a check may ask again
	if ask := p.take("a", now, 10); ask <= 1 {
		t.Fatalf("after a refused block a check asks %d, want a block", ask)
	}
	p.kept("a", 5, 5, now)
	if ask := p.take("a", now.Add(permitHold), 10); ask == 0 {
		t.Fatal("spent a permit of a block past its hold")
	}
	// Idle for two windows: one task per check again.
	p.kept("a", 10, 0, now)
	if ask := p.take("a", now.Add(5*permitHold), 10); ask != 1 {
		t.Fatalf("after an idle while a check asks %d, want 1", ask)
	}
	if ask := p.take("b", now, 3); ask != 1 {
		t.Fatalf("another project asks %d, want 1", ask)
	}
}

// At a high rate one check in Redis takes a block of it: the project's
// next submissions on the node leave the rate's key alone until the block
// is spent; near the limit a check takes what still fits, so the burst is
// used to its last task, and no more.
func TestHighRateIsTakenInBlocks(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	const rate = 1000 // burst 2,000, blocks of 10
	for _, parts := range []int{1, 4} {
		t.Run(fmt.Sprintf("partitions=%d", parts), func(t *testing.T) {
			var clock atomic.Int64 // the node's clock: a block lasts until the test moves it
			clock.Store(time.Now().UnixNano())
			s := newService(t, c, fmt.Sprintf("%s:p%d", prefix, parts), answer(`{}`),
				Options{ProjectRate: rate, Partitions: parts, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
			ctx := context.Background()
			key := s.q.rate("A")
			submit := func() error { return s.Submit(ctx, projectTask("A", "a")) }
			held := func() int {
				s.permits.mu.Lock()
				defer s.permits.mu.Unlock()
				return s.permits.m["A"].n
			}
			// A window of use first (blocks are sized to it), then a
			// window later: blocks of the rate's 10 ms (10 tasks).
			block := permitBlock(rate)
			for range 5 * block {
				if err := submit(); err != nil {
					t.Fatal(err)
				}
			}
			clock.Add(int64(permitHold))
			for i := range 2*block + 1 {
				if err := submit(); err != nil {
					t.Fatal(err)
				}
				// one check per block: the first submission of a block takes
				// it, the others spend it
				if want := block - 1 - i%block; held() != want {
					t.Fatalf("after submission %d: %d permits held, want %d", i+1, held(), want)
				}
			}

			// The budget nearly spent: three tasks fit.
			clock.Add(int64(permitHold)) // the block held is dropped
			const fit = 3
			start := time.Now() // the budget refills from Redis's time read next: counted from before it
			rt, err := c.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			step := time.Second / rate
			if err := c.Set(ctx, key, rt.Add(step*(2*rate-fit)).UnixMicro(), time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			accepted := 0
			for ; accepted < 100; accepted++ {
				if err := submit(); err != nil {
					if !IsRateLimited(err) {
						t.Fatal(err)
					}
					break
				}
			}
			if most := fit + 1 + int(time.Since(start)/step); accepted < fit || accepted > most {
				t.Errorf("accepted %d with %d left in the budget, want %d..%d", accepted, fit, fit, most)
			}
		})
	}
}

// Tasks still in the single-queue layout's ready list (an upgrade) count
// against the deployment's queue limit until a reclaim finds the list
// empty, and again once one finds it written to.
func TestLegacyListCountsWhileItHoldsTasks(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	s := newService(t, c, prefix, answer(`{}`), Options{MaxQueue: 2})
	ctx := context.Background()
	legacy := s.q.keys[0].legacy
	c.RPush(ctx, legacy, "an-old-task")
	s.reclaim() // the list holds a task: counted
	if err := s.Submit(ctx, newTask()); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(ctx, newTask()); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("with 1 legacy and 1 queued task of at most 2: %v, want queue_full", err)
	}
	if s.q.legacyArg() != "1" {
		t.Fatal("a legacy list holding a task is not counted")
	}
	c.Del(ctx, legacy) // drained
	s.reclaim()
	if s.q.legacyArg() != "0" {
		t.Fatal("a drained legacy list is still read by every submission")
	}
	if err := s.Submit(ctx, newTask()); err != nil {
		t.Fatalf("legacy list drained: %v", err)
	}
	c.Decr(ctx, s.q.keys[0].count) // one claimed
	c.RPush(ctx, legacy, "a-requeued-old-task")
	s.reclaim()
	if err := s.Submit(ctx, newTask()); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("legacy list written again: %v, want queue_full", err)
	}
}
