package channels

import (
	"sync"
	"time"
)

// A project's rate (Options.ProjectRate) is a GCRA in Redis, shared by
// every node. At a high rate a node takes it a block at a time: one check
// in Redis takes up to permitSpan's worth of the rate (counted at once
// against the project's budget), and the node's next submissions of that
// project spend the block without asking Redis again, for permitHold at
// most; what is left then is dropped (those tasks count against the
// budget without having run). Nodes together never admit more than the
// budget took, but a block spent later than it was taken lets a window of
// time hold up to permitHold's worth of the rate more than the burst (at
// the default rate, 50 tasks beyond a burst of 2,000). Below 1/permitSpan
// tasks per second a block is one task: every submission asks Redis, as
// without blocks. Near the limit a block is refused and the check takes
// one task, so the burst can be used to its last task. (A task refused
// for a full queue after it took a held permit has used it, as when the
// rate is checked apart from the queue.)
const (
	permitSpan = 10 * time.Millisecond
	permitHold = 50 * time.Millisecond
)

// permitBlock is how many tasks one check in Redis takes at rate.
func permitBlock(rate int) int {
	return max(1, int(float64(rate)*permitSpan.Seconds()))
}

// permits are the blocks this node holds, by project.
type permits struct {
	mu sync.Mutex
	m  map[string]heldPermits
}

type heldPermits struct {
	n     int
	until time.Time
}

// take spends one of pid's permits, if the node holds one still valid.
func (p *permits) take(pid string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.m[pid]
	if !ok {
		return false
	}
	if !now.Before(h.until) {
		delete(p.m, pid)
		return false
	}
	if h.n--; h.n == 0 {
		delete(p.m, pid)
	} else {
		p.m[pid] = h
	}
	return true
}

// keep holds n more of pid's permits, valid until, or until the block
// held already runs out if that is sooner (no permit outlives its hold).
func (p *permits) keep(pid string, n int, until time.Time) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]heldPermits)
	}
	if len(p.m) >= maxPermitProjects {
		p.drop(until.Add(-permitHold))
	}
	h, ok := p.m[pid]
	if !ok || until.Before(h.until) {
		h.until = until
	}
	h.n += n
	p.m[pid] = h
}

// drop forgets the blocks that ran out by now. Under mu.
func (p *permits) drop(now time.Time) {
	for pid, h := range p.m {
		if !now.Before(h.until) {
			delete(p.m, pid)
		}
	}
}

// maxPermitProjects bounds the projects whose blocks a node remembers at
// once before it sweeps the spent ones.
const maxPermitProjects = 4096
