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
// A caller's commands run in one round trip and in its order, as with
// Pipelined; commands of different callers are independent (one caller's
// failed command fails nobody else's), but for what they merge: a merged
// write that fails is the error of every caller that wrote to the Merge,
// and a batch script call (Merge.Call) shares its command's fate with the
// round trip's other calls of that script. Calls whose context asks for WAIT
// (WaitReplicas) go alone, since a WAIT counts the replicas of its own
// connection's writes.
type Shared struct {
	c     redis.UniversalClient
	calls chan *sharedCall

	mu     sync.RWMutex // held to send on calls; Close takes it to close it
	closed bool
	wg     sync.WaitGroup
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

// NewShared starts a Shared pipeline over c with senders round trips in
// flight at most. Close stops it.
func NewShared(c redis.UniversalClient, senders int) *Shared {
	s := &Shared{c: c, calls: make(chan *sharedCall, sharedBatch)}
	s.wg.Add(senders)
	for range senders {
		go s.send()
	}
	return s
}

// Pipelined runs fill's commands in one round trip, possibly shared with
// other callers', and returns the first error of its own commands. fill
// runs on another goroutine, before Pipelined returns; the commands it
// queues are read after. If ctx ends first, Pipelined returns its error,
// and the commands may still run (as a round trip whose answer was lost),
// unless their round trip had not been formed yet: then they never do.
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
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return PipelinedMerge(ctx, s.c, fill)
	}
	s.calls <- call
	s.mu.RUnlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close lets the calls already made finish and stops the senders; later
// calls go alone.
func (s *Shared) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.calls)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Shared) send() {
	defer s.wg.Done()
	batch := make([]*sharedCall, 0, sharedBatch)
	for call := range s.calls {
		batch = append(batch[:0], call)
	more:
		for len(batch) < sharedBatch {
			select {
			case c, ok := <-s.calls:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		s.run(batch)
	}
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
	cmds, err := pipelined(ctx, s.c, func(p redis.Pipeliner) {
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
