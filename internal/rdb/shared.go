package rdb

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Shared is a pipeline that concurrent callers share: the commands of the
// callers that arrive while earlier round trips are in flight go to Redis
// together, in one round trip (as Pipelined, scripts by hash), and each
// caller gets the outcome of its own commands. Under load a submission or
// a completion then costs a fraction of a round trip — of system calls on
// both sides, and of Redis's per-read work — instead of one each; an idle
// caller's commands go at once, held for no company.
//
// A caller that finds fewer round trips in flight than the pipeline allows
// (then no call waits) sends its own at once, on its own goroutine: an
// idle pipeline hands nothing to another goroutine (each hand-off is a
// thread woken on both sides of it). Calls wait only while every round
// trip allowed is in flight; once its own is answered, a caller that sent
// one hands what waits then to a goroutine, which sends it in turns until
// none waits.
//
// A caller's commands run in one round trip and in its order, as with
// Pipelined; commands of different callers are independent (one caller's
// failed command fails nobody else's), but for what they merge: a merged
// write that fails is the error of every caller that wrote to the Merge,
// and a batch script call (Merge.Call) shares its command's fate with the
// round trip's other calls of that script. Calls whose context asks for WAIT
// (WaitReplicas) go alone, since a WAIT counts the replicas of its own
// connection's writes.
type Shared struct {
	c       redis.UniversalClient
	senders int

	mu      sync.Mutex
	waiting []*sharedCall // calls not yet in a round trip, oldest first
	running int           // round trips being formed or in flight
	closed  bool
	wg      sync.WaitGroup // one per running sender
}

type sharedCall struct {
	ctx    context.Context
	fill   func(redis.Pipeliner, *Merge)
	merged bool // fill wrote to the Merge
	err    error
	done   chan struct{}
}

// sharedBatch is the most callers one round trip carries.
const sharedBatch = 256

// NewShared makes a Shared pipeline over c with senders round trips in
// flight at most. Close stops it.
func NewShared(c redis.UniversalClient, senders int) *Shared {
	return &Shared{c: c, senders: max(senders, 1)}
}

// Pipelined runs fill's commands in one round trip, possibly shared with
// other callers', and returns the first error of its own commands. fill
// runs before Pipelined returns, on this goroutine or another one; the
// commands it queues are read after. If ctx ends first, Pipelined returns
// its error, and the commands may still run (as a round trip whose answer
// was lost), unless their round trip had not been formed yet: then they
// never do. (A caller sending its round trip itself waits for the answer,
// which Bound and the client's timeouts bound.)
func (s *Shared) Pipelined(ctx context.Context, fill func(redis.Pipeliner)) error {
	return s.PipelinedMerge(ctx, func(p redis.Pipeliner, _ *Merge) { fill(p) })
}

// PipelinedMerge is Pipelined with a Merge shared by the round trip's
// callers: what fill writes to it goes after every caller's own commands,
// merged with the others' writes to the same keys. A merged command's
// error is the error of every caller that wrote to the Merge; a batch
// script call's outcome is in its Cmd (Merge.Call), not in the error.
func (s *Shared) PipelinedMerge(ctx context.Context, fill func(redis.Pipeliner, *Merge)) error {
	if ctx.Value(waitKey{}) != nil {
		return PipelinedMerge(ctx, s.c, fill)
	}
	call := &sharedCall{ctx: ctx, fill: fill, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return PipelinedMerge(ctx, s.c, fill)
	}
	if s.running < s.senders { // nothing waits: send it now
		s.running++
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.pass() // also if fill panics
		s.run([]*sharedCall{call})
		return call.err
	}
	s.waiting = append(s.waiting, call)
	s.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close lets the calls already made finish; later calls go alone.
func (s *Shared) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// pass ends a caller's turn, or hands it to a goroutine if calls wait.
func (s *Shared) pass() {
	if !s.stop() {
		go s.send() // in the same turn, still counted in running
	}
}

// send sends the waiting calls, a round trip at a time, until none waits.
func (s *Shared) send() {
	for {
		s.mu.Lock()
		if s.stopLocked() {
			s.mu.Unlock()
			return
		}
		batch := s.take()
		s.mu.Unlock()
		s.run(batch)
	}
}

// stop ends a sender's turn if no call waits, and reports whether it did.
// (Checked and ended under one lock: a call that arrives meanwhile either
// finds a free turn or is found waiting.)
func (s *Shared) stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// stopLocked is stop with s.mu held.
func (s *Shared) stopLocked() bool {
	if len(s.waiting) > 0 {
		return false
	}
	s.running--
	s.wg.Done()
	return true
}

// take removes the next round trip's calls from the waiting ones, the
// oldest first. s.mu is held.
func (s *Shared) take() []*sharedCall {
	n := min(len(s.waiting), sharedBatch)
	batch := make([]*sharedCall, n)
	copy(batch, s.waiting)
	rest := copy(s.waiting, s.waiting[n:])
	clear(s.waiting[rest:])
	s.waiting = s.waiting[:rest]
	return batch
}

// run sends batch's commands in one round trip. Its context carries the
// first call's bound (Bound), not its cancellation: one caller giving up
// does not cancel the others' commands. A call whose caller gave up before
// its round trip (waiting behind the others) is not sent: its caller has
// answered already, and commands sent later would land after whatever it
// did next (a submission after its own removal, say). The check is made
// as the round trip is formed: one that then waits for a connection, or
// sends its scripts again by source (NOSCRIPT), still carries the calls
// of callers who gave up meanwhile.
func (s *Shared) run(batch []*sharedCall) {
	live := batch[:0]
	for _, call := range batch {
		if err := call.ctx.Err(); err != nil {
			call.err = err
			close(call.done)
			continue
		}
		live = append(live, call)
	}
	if batch = live; len(batch) == 0 {
		return
	}
	ctx := context.Background()
	if d := batch[0].ctx.Value(boundKey{}); d != nil {
		ctx = context.WithValue(ctx, boundKey{}, d)
	}
	ends := make([]int, len(batch))
	var m Merge
	calls := 0 // the batch script commands (Merge.Call), flushed first
	cmds, err := pipelined(ctx, s.c, false, func(p redis.Pipeliner) {
		for i, call := range batch {
			n := m.writes
			call.fill(p, &m)
			call.merged = m.writes > n
			ends[i] = p.Len()
		}
		calls = len(m.batches)
		m.Flush(ctx, p)
	})
	m.settle(err)
	var mergeErr error // the first error of the merged writes
	if len(cmds) == 0 {
		mergeErr = err
	}
	for _, cmd := range cmds[min(ends[len(ends)-1]+calls, len(cmds)):] {
		if mergeErr = cmd.Err(); mergeErr != nil {
			break
		}
	}
	start := 0
	for i, call := range batch {
		call.err = nil
		if len(cmds) == 0 && ends[i] > start {
			call.err = err // nothing ran
		}
		for _, cmd := range cmds[min(start, len(cmds)):min(ends[i], len(cmds))] {
			if e := cmd.Err(); e != nil {
				call.err = e
				break
			}
		}
		if call.err == nil && call.merged {
			call.err = mergeErr
		}
		start = ends[i]
		close(call.done)
	}
}
