package channels

import (
	"sync"
	"time"
)

// A project's rate (Options.ProjectRate) is a GCRA in Redis, shared by
// every node. At a high rate a node takes it a block at a time: one check
// in Redis takes several tasks (counted at once against the project's
// budget), and the node's next submissions of that project spend the
// block without asking Redis again, for permitHold at most; what is left
// then is dropped (those tasks count against the budget without having
// run). A block is sized to what the node submitted for the project in
// the last permitHold (plus one), at most permitSpan's worth of the rate;
// one check at a time per
// project takes a block (the submissions that miss meanwhile take one
// task each), so what a node drops stays within one block. Nodes together
// never admit more than the budget took, but a block spent later than it
// was taken lets a window of time hold up to permitHold's worth of the
// rate more than the burst (at the default rate, 50 tasks beyond a burst
// of 2,000). Below 1/permitSpan tasks per second, and for a project the
// node has not just been busy with, a block is one task: every
// submission asks Redis, as without blocks. Near the limit a block is
// refused and the check takes one task, so the burst can be used to its
// last task. (A task refused for a full queue after it took a held
// permit has used it, as when the rate is checked apart from the queue.)
const (
	permitSpan = 10 * time.Millisecond
	permitHold = 50 * time.Millisecond
)

// permitBlock is the most tasks one check in Redis takes at rate.
func permitBlock(rate int) int {
	return max(1, int(float64(rate)*permitSpan.Seconds()))
}

// permits are the blocks this node holds, by project.
type permits struct {
	mu sync.Mutex
	m  map[string]*heldPermits
}

type heldPermits struct {
	n      int       // permits held
	until  time.Time // when they are dropped
	asking bool      // a check taking a block is under way
	used   int       // submissions since since
	since  time.Time // the start of the current window (permitHold)
	last   int       // submissions in the window before
}

// take spends one of pid's permits, if the node holds one still valid
// (0); else it says how many tasks the submission's check asks for: a
// block (at most most) when no other check takes one, else 1. A caller
// given more than 1 reports the check's answer with kept.
func (p *permits) take(pid string, now time.Time, most int) (ask int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]*heldPermits)
	}
	h := p.m[pid]
	if h == nil {
		if len(p.m) >= maxPermitProjects {
			p.drop(now)
		}
		h = &heldPermits{since: now}
		p.m[pid] = h
	}
	if gap := now.Sub(h.since); gap >= permitHold {
		h.last = h.used
		if gap >= 2*permitHold { // idle for a window
			h.last = 0
		}
		h.used, h.since = 0, now
	}
	h.used++
	if h.n > 0 && now.Before(h.until) {
		h.n--
		return 0
	}
	h.n = 0
	if h.asking {
		return 1
	}
	ask = min(most, 1+h.last)
	h.asking = ask > 1
	return ask
}

// kept records the answer of a check that asked for ask tasks at now:
// taken of them (0 when refused or failed), one of which its submission
// spends; the rest are held for permitHold.
func (p *permits) kept(pid string, ask, taken int, now time.Time) {
	if ask <= 1 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.m[pid]
	if h == nil {
		return
	}
	h.asking = false
	if taken > 1 {
		h.n, h.until = taken-1, now.Add(permitHold)
	}
}

// drop forgets the projects with nothing held, asked or counted lately.
// Under mu.
func (p *permits) drop(now time.Time) {
	for pid, h := range p.m {
		if !h.asking && (h.n == 0 || !now.Before(h.until)) && now.Sub(h.since) >= 2*permitHold {
			delete(p.m, pid)
		}
	}
}

// maxPermitProjects bounds the projects whose blocks a node remembers at
// once before it sweeps the idle ones.
const maxPermitProjects = 4096
