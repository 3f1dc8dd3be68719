// Package gopool runs functions on goroutines that are kept after each
// function returns and given the next one.
//
// A path that starts a goroutine per item (a task, a delivery attempt)
// grows each new goroutine's stack from 2 KiB to what the path needs by
// copying it several times (runtime.copystack): 6 % of a node's CPU in the
// webhooks benchmark. A goroutine that is reused keeps the stack it grew.
package gopool

import "time"

// Idle is how long the goroutines of the node's pools wait for the next
// function: longer than the gaps between a busy node's claims.
const Idle = 10 * time.Second

// Pool hands functions to its idle goroutines, or to a new one when none is
// idle. A goroutine idle for longer than the pool's idle time, or once quit
// is closed, ends. The zero Pool is not usable; see New.
type Pool struct {
	work chan func()
	idle time.Duration
	quit <-chan struct{}
}

// New returns a pool whose goroutines end after idle without work, or once
// quit is closed (nil: never).
func New(idle time.Duration, quit <-chan struct{}) *Pool {
	return &Pool{work: make(chan func()), idle: idle, quit: quit}
}

// Go runs f on a goroutine of the pool, like the go statement: it does not
// wait for f, and f runs even after quit is closed.
func (p *Pool) Go(f func()) {
	select {
	case p.work <- f: // an idle goroutine took it
	default:
		go p.run(f)
	}
}

func (p *Pool) run(f func()) {
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		f = nil // not kept alive while idle
		t.Reset(p.idle)
		select {
		case f = <-p.work:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}
