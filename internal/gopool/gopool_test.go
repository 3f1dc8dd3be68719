package gopool

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every function given runs exactly once, whether an idle goroutine takes
// it or a new one starts.
func TestEveryFunctionRunsOnce(t *testing.T) {
	p := New(time.Minute, nil)
	const n = 10000
	var ran [n]atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		p.Go(func() { defer wg.Done(); ran[i].Add(1) })
		if i%100 == 0 {
			wg.Wait() // let goroutines go idle, so later ones are reused
		}
	}
	wg.Wait()
	for i := range n {
		if got := ran[i].Load(); got != 1 {
			t.Fatalf("function %d ran %d times", i, got)
		}
	}
}

// A goroutine that finished its function takes the next one instead of a
// new goroutine starting.
func TestIdleGoroutineIsReused(t *testing.T) {
	p := New(time.Minute, nil)
	ids := make(chan uint64, 1)
	p.Go(func() { ids <- goid() })
	a := <-ids
	waitIdle(t, a)
	p.Go(func() { ids <- goid() })
	if b := <-ids; a != b {
		t.Fatalf("second function ran on goroutine %d, not on the idle %d", b, a)
	}
}

// Idle goroutines end after the idle time, and at once when quit closes.
func TestIdleGoroutinesEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration
		quit bool
	}{{"idle time", 20 * time.Millisecond, false}, {"quit", time.Hour, true}} {
		t.Run(tc.name, func(t *testing.T) {
			quit := make(chan struct{})
			p := New(tc.idle, quit)
			before := runtime.NumGoroutine()
			var wg sync.WaitGroup
			for range 50 {
				wg.Add(1)
				p.Go(func() { time.Sleep(time.Millisecond); wg.Done() })
			}
			wg.Wait()
			if tc.quit {
				close(quit)
			}
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines still running, %d before", runtime.NumGoroutine(), before)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// waitIdle waits until goroutine id, a pool's, waits for work (in its
// select). Other pools' goroutines, idle or not, do not count.
func waitIdle(t *testing.T, id uint64) {
	t.Helper()
	head := fmt.Sprintf("goroutine %d [select", id)
	buf := make([]byte, 1<<22)
	for range 1000 {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), head) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("goroutine %d of the pool did not go idle", id)
}

// goid is the calling goroutine's id, from its stack's first line.
func goid() uint64 {
	var buf [64]byte
	s := buf[:runtime.Stack(buf[:], false)]
	var id uint64
	for _, c := range s[len("goroutine "):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
