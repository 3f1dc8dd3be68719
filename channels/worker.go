package channels

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wire"
)

const (
	maxRuns    = 5                      // runs of one task before it is failed
	claimBatch = 64                     // most tasks one claim script moves
	idlePoll   = 50 * time.Millisecond  // claim retry when the queue was empty
	errorPause = 500 * time.Millisecond // after a Redis error
	// claimPatience is how long a claim waits for one partition's master
	// when there are others to claim from.
	claimPatience = 2 * time.Second
)

// Start launches the claimer, the lease heartbeat, the reclaimer, the
// callback deadline poller and the retry of failed index removals
// (doc.go). Stop them with StopClaiming and
// Shutdown. A first reclaim runs at once: it also puts tasks left
// in the single-queue layout's ready list on the ring (an upgrade), so they
// are claimed like a project's.
func (s *Service) Start() {
	s.reclaim()
	s.drained.Store(true) // until a claim finds more than it asked for
	s.claimer.Add(1)
	s.loops.Add(5)
	go s.claimLoop()
	go s.every(s.foldEvery(), nil, s.foldAllDue)
	go s.every(deadlinePoll, s.wakeDue, s.fireAllDue)
	go s.every(s.o.Lease/3, nil, s.heartbeat)
	go s.every(max(s.o.Lease/4, 50*time.Millisecond), nil, s.reclaim)
	go s.every(time.Second, nil, s.unindexDue)
	s.taking.Store(len(s.q.keys) == 1 && !rdb.IsCluster(s.rdb))
}

// poke wakes this node's claimer after a local submission.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// lease is where a task is leased: the partition whose lease set holds it
// (the one it was claimed from, which for a task queued by an earlier
// version is partition 0, whatever its channel id) and its member there.
type lease struct {
	part   int
	member string
}

func (s *Service) track(cid string, l lease) {
	s.mu.Lock()
	s.inflight[cid] = l
	s.mu.Unlock()
}

// leaseOf is a task's lease: the one it was claimed under if it runs here
// (a task of the legacy list keeps its bare id), else the one it is leased
// under when claimed from its project's queue in its channel's partition.
func (s *Service) leaseOf(pid, cid string) lease {
	s.mu.Lock()
	l, ok := s.inflight[cid]
	s.mu.Unlock()
	if ok {
		return l
	}
	return lease{s.q.parts.Of(cid), leaseMember(pid, cid)}
}

func (s *Service) untrack(cid string) {
	s.mu.Lock()
	delete(s.inflight, cid)
	s.mu.Unlock()
}

func (s *Service) claimLoop() {
	defer s.claimer.Done()
	slots := s.slots
	for {
		select {
		case <-s.stop:
			return
		case <-slots:
		}
		n := 1
	more:
		for n < claimBatch {
			select {
			case <-slots:
				n++
			default:
				break more
			}
		}
		part, members, starts, err := s.claim(n)
		s.drained.Store(err == nil && len(members) < n)
		for range n - len(members) {
			slots <- struct{}{}
		}
		ids := make([]string, len(members))
		for i, m := range members {
			_, ids[i] = splitMember(m)
			s.track(ids[i], lease{part, m})
		}
		if starts == nil && len(ids) > 0 {
			starts = s.startAll(ids, part, members)
		}
		if starts == nil && len(ids) > 0 { // given back; do not spin on them
			select {
			case <-s.stop:
				return
			case <-time.After(errorPause):
			}
		}
		for i, id := range ids {
			s.tasks.Add(1)
			var st *started
			if starts != nil {
				st = &starts[i]
			}
			s.launch(id, st)
		}
		if len(ids) > 0 {
			continue
		}
		pause := idlePoll
		if err != nil {
			pause = errorPause
		}
		t := time.NewTimer(pause)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// launch runs a task this node leased (st: its start, nil when it could
// not be started: its lease then runs out) on a goroutine of the pool, with
// a worker slot and a count in s.tasks its caller took.
func (s *Service) launch(id string, st *started) {
	s.runners.Go(func() {
		// A task that waits for a provider gives its slot back
		// (within MaxWaiting), so that tasks of other providers
		// and projects run meanwhile; it finishes without one.
		held := true
		defer func() {
			s.untrack(id)
			if held {
				s.slots <- struct{}{}
			} else {
				s.waiting.Add(-1)
			}
			s.tasks.Done()
		}()
		onWait := func(ai.Wait) {
			if s.waiting.Add(1) > int64(s.o.MaxWaiting) {
				s.waiting.Add(-1)
				return
			}
			held = false
			s.slots <- struct{}{}
		}
		if st != nil {
			s.process(id, *st, onWait)
		}
	})
}

// reserve takes a free worker slot for a submission that may run its task
// here at once (submit.lua's take), if this node claims tasks, its last
// claim left nothing ready (else the slot would sit idle through a round
// trip whose take the backlog refuses, while the claimer waits for one),
// one is free and Shutdown has not begun; launch or unreserve gives it
// back.
func (s *Service) reserve() bool {
	if !s.taking.Load() || !s.drained.Load() {
		return false
	}
	select {
	case <-s.slots:
	default:
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		s.slots <- struct{}{}
		return false
	}
	s.tasks.Add(1)
	return true
}

// unreserve gives back a slot reserve took for a task not taken.
func (s *Service) unreserve() {
	s.slots <- struct{}{}
	s.tasks.Done()
}

// claim leases up to n tasks of one partition and returns the partition
// and the tasks' lease members. Partitions take turns: each claim starts at
// the one after the last claim's; when that one has nothing, the
// partitions' depths (one round trip) say which to try instead, so an idle
// node costs one claim and one look per poll, not one claim per partition.
func (s *Service) claim(n int) (int, []string, []started, error) {
	k := int(s.q.cursor.Add(1)-1) % len(s.q.keys)
	ids, starts, err := s.claimFrom(k, n)
	if err != nil || len(ids) > 0 || len(s.q.keys) == 1 {
		return k, ids, starts, err
	}
	depths, err := s.depths(s.runCtx)
	if err != nil {
		return k, nil, nil, err
	}
	for i := 1; i < len(depths); i++ {
		j := (k + i) % len(depths)
		if depths[j] > 0 {
			s.q.cursor.Store(uint32(j + 1))
			ids, starts, err := s.claimFrom(j, n)
			return j, ids, starts, err
		}
	}
	return k, nil, nil, nil
}

// started is a claimed task's start: start.lua's reply, or its error.
type started struct {
	out []string
	err error
}

// claimFrom leases up to n tasks of partition k, round robin across
// projects, and returns their lease members; on one Redis (not a Cluster)
// it starts them in the same script (claimstart.lua) and returns their
// starts too, else the caller starts them (startAll). A claim that fails for Redis
// is sent again, the same claim, until Redis answers: if the first one ran
// but its answer was lost, the second returns what it took, which would
// otherwise wait out its lease.
//
// With several partitions it gives up on one after claimPatience, so that
// a partition whose master is down (until its replica takes over) does not
// hold up the claims of the others: a claim whose answer was lost then
// leaves its tasks leased until their lease runs out and they are
// reclaimed.
func (s *Service) claimFrom(k, n int) ([]string, []started, error) {
	q := s.q.keys[k]
	keys := []string{q.ring, q.lease, q.count, q.legacy, q.qPrefix, q.claimPrefix + uuid.NewString()}
	ctx := s.runCtx
	if len(s.q.keys) > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, claimPatience)
		defer cancel()
	}
	together := !rdb.IsCluster(s.rdb)
	var ids []string
	var starts []started
	err := s.persist(ctx, "claim", func() (err error) {
		now := s.o.Now()
		args := []any{n, now.Add(s.o.Lease).UnixMilli(), legacyEntry, s.o.Lease.Milliseconds()}
		if !together {
			ids, err = claimScript.Run(ctx, s.rdb, keys, args...).StringSlice()
			if errors.Is(err, redis.Nil) {
				err = nil
			}
			return err
		}
		stamp, start, restart := s.startEntries(now)
		args = append(args, s.o.Prefix+":ch:{", stamp, start, restart)
		out, err := claimStartScript.Run(ctx, s.rdb, keys, args...).Slice()
		if err != nil {
			return err
		}
		ids, starts, err = decodeClaimStart(out)
		return err
	})
	if err != nil {
		if s.runCtx.Err() == nil {
			s.o.Log.Error().Err(err).Msg("claim tasks")
		}
		return nil, nil, err
	}
	return ids, starts, nil
}

// startEntries are start.lua's now, and its timeline entries for a first
// start and for a restart after a lost lease.
func (s *Service) startEntries(now time.Time) (stamp string, start, restart []byte) {
	stamp = wire.Stamp(now)
	start = wire.MustJSON(Entry{At: stamp, Type: "generating", Node: s.o.Node})
	restart = wire.MustJSON(Entry{At: stamp, Type: "requeued", Node: s.o.Node, Error: "the previous run was interrupted (lease expired or node stopped)"})
	return stamp, start, restart
}

// startAll marks a batch claimed from partition part as generating, one
// script per channel, all in one round trip. On failure the batch goes back
// to the queue.
func (s *Service) startAll(ids []string, part int, members []string) []started {
	ctx := s.runCtx
	now, start, restart := s.startEntries(s.o.Now())
	cmds := make([]*redis.Cmd, len(ids))
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, id := range ids {
			cmds[i] = startScript.Eval(ctx, p, []string{s.chKey(id), s.tlKey(id)}, now, start, restart)
		}
	})
	if err != nil {
		if ctx.Err() == nil {
			s.o.Log.Error().Err(err).Int("tasks", len(ids)).Msg("start tasks; giving them back")
			leases := make([]lease, len(members))
			for i, m := range members {
				leases[i] = lease{part, m}
			}
			_ = s.persist(ctx, "release", func() error { _, err := s.release(ctx, leases); return err })
		}
		return nil
	}
	starts := make([]started, len(cmds))
	for i, c := range cmds {
		starts[i].out, starts[i].err = c.StringSlice()
	}
	return starts
}

// process runs one claimed task, given the outcome of its start script.
func (s *Service) process(cid string, start started, onWait func(ai.Wait)) {
	ctx := s.runCtx
	r, err := start.reply()
	if err != nil {
		s.o.Log.Error().Err(err).Str("channel_id", cid).Msg("start task") // lease expires, task comes back
		return
	}
	switch r.verdict {
	case "gone":
		s.ack(ctx, "", cid) // claimed here: ack finds its lease member
	case "done":
		if r.task == "" { // settled and compacted: its side effects were done
			s.ack(ctx, "", cid)
			return
		}
		var t Task
		_ = wire.Decode([]byte(r.task), &t)
		t.ChannelID, t.ProjectID = cid, r.project
		if err := s.finish(ctx, outcomeOf(&t, r.outcome)); err != nil && ctx.Err() == nil {
			s.o.Log.Error().Err(err).Str("channel_id", cid).Msg("finish task")
		}
	case "run":
		var t Task
		if err := wire.Decode([]byte(r.task), &t); err != nil {
			s.o.Log.Error().Err(err).Str("channel_id", cid).Msg("decode task")
			t = Task{ChannelID: cid, ProjectID: r.project}
			s.abandon(ctx, &t, "the stored task could not be read")
			return
		}
		t.rerun = r.runs > 1
		if r.runs > maxRuns {
			// Something kills every run (a crash, an encoding failure):
			// stop paying for provider calls and say so.
			s.abandon(ctx, &t, fmt.Sprintf("the task was interrupted %d times and was given up", r.runs-1))
			return
		}
		if _, err := s.execute(ctx, &t, onWait); err != nil && ctx.Err() == nil {
			if errors.Is(err, errGone) { // nothing is left to record, and nothing is lost
				s.o.Log.Info().Err(err).Str("channel_id", cid).Msg("run task")
				return
			}
			s.o.Log.Error().Err(err).Str("channel_id", cid).Msg("run task")
		}
	}
}

// every runs f every d, and whenever wake (nil: never) is signalled, until
// quit.
func (s *Service) every(d time.Duration, wake <-chan struct{}, f func()) {
	defer s.loops.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		case <-wake:
		}
		f()
	}
}

// heartbeat extends the leases of every task this node runs, in one round
// trip (one command per partition).
func (s *Service) heartbeat() {
	s.mu.Lock()
	byPart := make(map[int][]redis.Z)
	score := float64(s.o.Now().Add(s.o.Lease).UnixMilli())
	for _, l := range s.inflight {
		byPart[l.part] = append(byPart[l.part], redis.Z{Score: score, Member: l.member})
	}
	s.mu.Unlock()
	if len(byPart) == 0 {
		return
	}
	// XX: never re-add a lease that was acked or reclaimed meanwhile.
	_, err := s.rdb.Pipelined(s.runCtx, func(p redis.Pipeliner) error {
		for k, zs := range byPart {
			p.ZAddXX(s.runCtx, s.q.keys[k].lease, zs...)
		}
		return nil
	})
	if err != nil && s.runCtx.Err() == nil {
		s.o.Log.Warn().Err(err).Msg("extend task leases")
	}
}

// reclaim requeues tasks whose leases ran out (their node died), each at
// the head of its project's queue, in every partition (one round trip).
func (s *Service) reclaim() {
	cmds := make([]*redis.Cmd, len(s.q.keys))
	legacy := make([]*redis.IntCmd, len(s.q.keys))
	err := s.pipelined(s.runCtx, func(p redis.Pipeliner) {
		for k, q := range s.q.keys {
			cmds[k] = reclaimScript.Eval(s.runCtx, p, q.requeueKeys(), legacyEntry, s.o.Now().UnixMilli(), 1000)
			legacy[k] = p.LLen(s.runCtx, q.legacy)
		}
	})
	if err == nil {
		s.q.sawLegacy(legacy)
	}
	n := 0
	for _, c := range cmds {
		if c != nil {
			m, _ := c.Int()
			n += m
		}
	}
	if err != nil {
		if s.runCtx.Err() == nil {
			s.o.Log.Warn().Err(err).Msg("reclaim expired task leases")
		}
		if n == 0 {
			return
		}
	}
	if n > 0 {
		s.m.reclaimed.Add(float64(n))
		s.o.Log.Info().Int("tasks", n).Msg("requeued tasks whose lease expired")
		s.poke()
	}
}

// StopClaiming stops taking tasks from the queue; tasks running go on.
// The first step of a shutdown, before the HTTP server drains.
func (s *Service) StopClaiming() {
	s.stopOnce.Do(func() {
		s.taking.Store(false)
		close(s.stop)
		s.claimer.Wait()
	})
}

// Shutdown stops claiming, waits for running tasks until ctx ends, then
// stops the rest and gives their leases back so another node takes them
// at once. Safe to call twice.
func (s *Service) Shutdown(ctx context.Context) error {
	s.StopClaiming()
	s.quitOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		done := make(chan struct{})
		go func() { s.tasks.Wait(); close(done) }()
		var ids []lease
		select {
		case <-done:
		case <-ctx.Done():
			// Whatever runs now is abandoned: remember it before the
			// cancelled runs untrack themselves, then hand it back.
			s.mu.Lock()
			for _, l := range s.inflight {
				ids = append(ids, l)
			}
			s.mu.Unlock()
			s.runCancel()
			<-done
		}
		s.runCancel()
		// Heartbeats ran until now, so no lease ran out under a task still
		// running here.
		close(s.quit)
		s.loops.Wait()
		s.closeAcks()
		if len(ids) > 0 {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := s.release(rctx, ids)
			if err != nil {
				s.o.Log.Warn().Err(err).Msg("release task leases; they will expire instead")
			} else {
				s.o.Log.Info().Int("tasks", n).Msg("released unfinished tasks to other nodes")
			}
		}
	})
	return nil
}

// release gives leased tasks back, each at the head of its project's queue
// (those still leased by this node), one script per partition, in one
// round trip.
func (s *Service) release(ctx context.Context, leases []lease) (int, error) {
	args := make(map[int][]any)
	for _, l := range leases {
		if args[l.part] == nil {
			args[l.part] = []any{legacyEntry}
		}
		args[l.part] = append(args[l.part], l.member)
	}
	var cmds []*redis.Cmd
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for k, a := range args {
			cmds = append(cmds, releaseScript.Eval(ctx, p, s.q.keys[k].requeueKeys(), a...))
		}
	})
	n := 0
	for _, c := range cmds {
		m, _ := c.Int()
		n += m
	}
	return n, err
}
