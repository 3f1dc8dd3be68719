package dispatch

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/batch"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wire"
	"github.com/riverhub/riverhub/project"
)

const (
	claimBatch = 256
	maxIdle    = 100 * time.Millisecond // longest sleep without a look at the schedule: 10 cheap claims a second when idle
	errorPause = 500 * time.Millisecond
)

// claimed is a delivery this node holds for one attempt.
type claimed struct {
	id, projectID, webhookID, channelID, event string
	body                                       []byte
	attempts, tries                            int64
	token                                      string
	at                                         time.Time // when it was claimed
	// part is the partition the delivery was claimed from, where its
	// outcome is recorded: its endpoint's (partOf), or partition 0 for a
	// delivery an earlier version wrote.
	part int
	// resumed says why a delivery that waited for its endpoint goes now:
	// "probe" (it tests an open endpoint), "closed" (the endpoint
	// recovered), or "" (it did not wait).
	resumed string
}

// result is an attempt's outcome, waiting to be recorded.
type result struct {
	d       claimed
	verdict verdict
	attempt []byte   // JSON for the delivery's attempt list
	entries [][]byte // for the channel's delivery log
	nextAt  time.Time
	status  int
	err     string
	// durationMS is the attempt's duration (statistics).
	durationMS int64
	// health is what the attempt says of its endpoint: "1" it answered
	// 2xx, "0" it failed, "" no attempt reached it.
	health     string
	retryAfter time.Duration
	// remember: a put-off (verdictDefer) to bring forward when the
	// endpoint has room, remembered once it is written (rememberPutOffs).
	remember bool
}

// Start launches the claimer, the lease reclaimer and the listener for
// other nodes' nudges.
func (e *Engine) Start() {
	// Subscribed by listen, not here: Start does not wait for Redis.
	e.sub = e.rdb.Subscribe(e.runCtx)
	e.claiming.Store(true)
	e.loops.Add(3)
	go e.claimLoop()
	go e.reclaimLoop()
	go e.listen(e.sub)
}

// listen wakes the claimer at the due time of each nudge (any node's,
// this one's too: poke wakes it only if it sleeps past that time), until
// StopClaiming closes the subscription. go-redis reconnects and subscribes
// again after a lost connection (a Redis restart); nudges published
// meanwhile are lost, and cost only the old latency: the claimer looks at
// the schedule at least every maxIdle.
func (e *Engine) listen(sub *redis.PubSub) {
	defer e.loops.Done()
	if err := sub.Subscribe(e.runCtx, e.nudgeKey); err != nil && !errors.Is(err, redis.ErrClosed) {
		e.o.Log.Warn().Err(err).Msg("subscribe to schedule nudges: retrying with the connection")
	}
	for m := range sub.Channel() {
		if due, ks, ok := parseNudge(m.Payload, len(e.parts)); ok {
			e.m.nudged.Inc()
			var s partSet
			if ks != nil {
				s = make(partSet, len(e.parts))
				for _, k := range ks {
					s.add(k)
				}
			}
			e.poke(due, s)
		}
	}
}

func (e *Engine) lease() time.Duration { return 2*e.o.Timeout + 5*time.Second }

func (e *Engine) claimLoop() {
	defer e.loops.Done()
	for {
		select {
		case <-e.stop:
			return
		default:
		}
		n, skip := e.admit()
		var err error
		if n > 0 {
			var ds []claimed
			var more bool
			ds, more, err = e.claim(n, skip)
			e.begin(ds)
			for _, d := range ds {
				e.attempts.Add(1)
				e.runners.Go(func() {
					defer func() { e.end(d.projectID); e.attempts.Done() }()
					e.attempt(d)
				})
			}
			if len(ds) == n || more {
				continue // more may be due
			}
		}
		now := e.o.Now()
		wakeAt := now.Add(maxIdle)
		e.mu.Lock()
		switch {
		case err != nil:
			wakeAt = now.Add(errorPause)
		case n > 0 && len(skip) == 0:
			for _, t := range e.dueAt {
				if t.Before(wakeAt) {
					wakeAt = t
				}
			}
		}
		e.nextAt = wakeAt
		e.mu.Unlock()
		t := time.NewTimer(max(0, wakeAt.Sub(now)))
		select {
		case <-e.stop:
			t.Stop()
			return
		case <-e.wake:
		case <-e.freed:
		case <-t.C:
		}
		t.Stop()
		e.mu.Lock()
		e.nextAt = time.Time{}
		e.mu.Unlock()
	}
}

// admit decides how many deliveries the claimer may take now, and for
// which projects not: those holding their fair share of this node's
// slots (Concurrency divided among the projects with attempts running
// here or deliveries due), or ProjectConcurrency. A project alone gets
// every slot. When every slot is taken, projects under their share may
// still start up to their share beyond it (so a project never waits for
// slots another holds beyond its own share); in flight stays below twice
// Concurrency.
func (e *Engine) admit() (int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.o.Concurrency
	share := e.fairShare()
	var skip []string
	for pid, k := range e.perProj {
		if k >= share || (e.o.ProjectConcurrency > 0 && k >= e.o.ProjectConcurrency) {
			skip = append(skip, pid)
		}
	}
	if free := c - e.running; free > 0 {
		e.inClaim = min(free, claimBatch) // an enqueue takes none of them meanwhile
		e.release(skip, e.inClaim)
		return e.inClaim, skip
	}
	if len(skip) > 0 && e.running < 2*c {
		// Full, and some project holds more than its share: other
		// projects may start within theirs. Look when the last claim saw
		// more projects due than are skipped, else at most every maxIdle
		// (an attempt ending must not cost a claim that finds nothing).
		now := e.o.Now()
		if e.dueProjs > len(skip) || now.Sub(e.lastLook) >= maxIdle {
			e.lastLook = now
			n := min(claimBatch, share, 2*c-e.running)
			e.release(skip, n)
			return n, skip
		}
	}
	return 0, skip
}

// release brings forward, once, partitions where a claim that skipped
// projects saw work due of one that skip (admit's, for a claim of n; e.mu
// held) no longer holds back (under its share or cap again): that work is
// due for the next claim, not a look maxIdle later (which kept the
// claimer idle half of a preloaded run when one project filled the node).
// At most n partitions, those held longest (the claim looks at no more
// than n partitions, in its own rotation): released all at once, the rest
// would be looked at by the claims after it, which may skip the project
// again and find nothing; they stay held for the next release. The
// projects still skipped stay held.
func (e *Engine) release(skip []string, n int) {
	var freed []string
	for _, pid := range e.held {
		if !slices.Contains(skip, pid) {
			freed = append(freed, pid)
		}
	}
	if len(freed) == 0 {
		return
	}
	var ks []int
	for k, t := range e.heldDue {
		if !t.IsZero() && slices.ContainsFunc(e.duePids[k], func(pid string) bool { return slices.Contains(freed, pid) }) {
			ks = append(ks, k)
		}
	}
	slices.SortStableFunc(ks, func(a, b int) int { return e.heldDue[a].Compare(e.heldDue[b]) })
	for _, k := range ks[:min(n, len(ks))] {
		if e.heldDue[k].Before(e.dueAt[k]) {
			e.dueAt[k] = e.heldDue[k]
		}
		e.heldDue[k] = time.Time{}
	}
	if len(ks) <= n {
		e.held = slices.DeleteFunc(e.held, func(pid string) bool { return slices.Contains(freed, pid) })
	}
}

// saturated lists the endpoints this node has no room for: as many
// attempts in flight as their limit allows and as many waiting. The claim
// puts their deliveries off without handing them over.
// Each comes with how long its deliveries are put off (putOffFor).
func (e *Engine) saturated() []any {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []any
	for id, n := range e.busy {
		if n >= e.limits.get(id) && len(e.waiting[id]) >= e.o.PerEndpoint {
			out = append(out, id, e.putOffFor(id).Milliseconds())
		}
	}
	return out
}

const putOff = 250 * time.Millisecond // see saturated

// fairShare is the most attempts one project may hold on this node while
// others want some (e.mu held): max-min fair, so what projects with few
// attempts leave unused goes to the others. The projects are those with
// attempts running here and, as wanting a full share, those seen with
// deliveries due that run nothing here.
func (e *Engine) fairShare() int {
	c := e.o.Concurrency
	n := max(1, len(e.perProj), e.dueProjs)
	counts := make([]int, 0, len(e.perProj))
	for _, k := range e.perProj {
		counts = append(counts, k)
	}
	slices.Sort(counts)
	left := c
	for _, k := range counts {
		if k*n >= left { // this one and the rest reach the level
			break
		}
		left -= k
		n--
	}
	if n == 0 {
		return c // every project is below the level: none is held back
	}
	return max(1, left/n)
}

// begin counts the deliveries a claim took as running, and frees the
// slots admit held for the claim that it did not fill.
func (e *Engine) begin(ds []claimed) {
	e.mu.Lock()
	for _, d := range ds {
		e.running++
		e.perProj[d.projectID]++
	}
	e.inClaim = 0
	e.mu.Unlock()
}

func (e *Engine) end(pid string) {
	e.mu.Lock()
	e.running--
	if e.perProj[pid]--; e.perProj[pid] <= 0 {
		delete(e.perProj, pid)
	}
	e.mu.Unlock()
	select {
	case e.freed <- struct{}{}:
	default:
	}
}

// claim takes up to n due deliveries, of projects not in skip, from the
// partitions due for a look (dueAt), in one round trip: n is split evenly
// among them, taken in rotation from a partition that moves on by one each
// round, so none starves. more reports partitions left for the next round
// (more due than n) or that filled their part of n (more may be due
// there). Each partition's dueAt becomes the earliest due time of what it
// has left (at most maxIdle ahead), or now when it filled its part. A
// claim that skipped projects leaves it maxIdle ahead instead, as what is
// due may be theirs and a look would find nothing again; it keeps that
// due time in heldDue, for when admit no longer skips them (release).
//
// A claim that fails for Redis is sent again, the same claim (its token),
// until Redis answers: if the first one ran but its answer was lost, the
// second returns what it took, which would otherwise wait out its lease.
// err is set when no partition answered.
func (e *Engine) claim(n int, skip []string) (out []claimed, more bool, err error) {
	now := e.o.Now()
	e.mu.Lock()
	var ks []int
	for i := range e.parts {
		if k := (e.turn + i) % len(e.parts); !e.dueAt[k].After(now) {
			ks = append(ks, k)
		}
	}
	for _, k := range ks {
		e.pokedAt[k] = time.Time{}
	}
	e.turn = (e.turn + 1) % len(e.parts)
	e.mu.Unlock()
	if len(ks) == 0 {
		return nil, false, nil
	}
	if len(ks) > n {
		ks, more = ks[:n], true
	}
	quota := make([]int, len(ks))
	tokens := make([]string, len(ks))
	for i := range ks {
		quota[i] = n / len(ks)
		if i < n%len(ks) {
			quota[i]++
		}
		tokens[i] = newToken()
	}
	replies := make([][]any, len(ks))
	errs := make([]error, len(ks))
	for try := 0; ; try++ {
		now = e.o.Now()
		busy := e.saturated()
		cmds := make([]*redis.Cmd, len(ks))
		err = e.pipelined(e.runCtx, func(p redis.Pipeliner) {
			for i, k := range ks {
				if replies[i] != nil {
					continue // answered by an earlier try
				}
				pt := e.parts[k]
				keys := []string{pt.projectsKey, pt.leaseKey, pt.unhealthyKey, pt.wakeKey, pt.claimPrefix + tokens[i]}
				args := make([]any, 0, 10+len(skip)+len(busy))
				args = append(args, now.UnixMilli(), quota[i], now.Add(e.lease()).UnixMilli(), tokens[i], pt.dPrefix,
					int64(e.o.Retention/time.Second), pt.epPrefix, pt.duePrefix, len(skip))
				for _, pid := range skip {
					args = append(args, pid)
				}
				args = append(args, busy...)
				cmds[i] = claimScript.Eval(e.runCtx, p, keys, args...)
			}
		})
		again := false
		for i, c := range cmds {
			if c == nil {
				continue
			}
			if replies[i], errs[i] = c.Slice(); errs[i] != nil {
				replies[i] = nil
				again = again || rdb.Unavailable(errs[i])
			}
		}
		if err == nil || !again || !rdb.Backoff(e.runCtx, try) {
			break
		}
	}
	var paused []pausedDelivery
	e.mu.Lock()
	answered := 0
	for i, k := range ks {
		e.dueAt[k] = now.Add(maxIdle)
		e.heldDue[k] = time.Time{}
		if replies[i] == nil {
			if errs[i] == nil {
				errs[i] = err
			}
			e.dueAt[k] = now.Add(errorPause)
			if e.runCtx.Err() == nil {
				e.o.Log.Error().Err(errs[i]).Int("partition", k).Msg("claim deliveries")
			}
			continue
		}
		r, derr := decodeClaim(replies[i])
		if derr != nil {
			e.o.Log.Error().Err(derr).Msg("claim deliveries")
			errs[i] = derr
			e.dueAt[k] = now.Add(errorPause)
			continue
		}
		answered++
		switch {
		case len(r.deliveries) >= quota[i]:
			e.dueAt[k] = time.Time{}
			more = true
		case !r.next.IsZero() && r.next.Before(e.dueAt[k]):
			if len(skip) == 0 {
				e.dueAt[k] = r.next
			} else {
				e.heldDue[k] = r.next // perhaps a skipped project's: see release
			}
		}
		for j := range r.deliveries {
			r.deliveries[j].token, r.deliveries[j].at, r.deliveries[j].part = tokens[i], now, k
		}
		out = append(out, r.deliveries...)
		if r.hasDue {
			e.duePids[k] = r.duePids
		}
		// Remember every put-off, the short ones too: the endpoint may
		// have room again long before they come due (the claim script
		// has written them, so handOff can bring them forward).
		for _, d := range r.putOff {
			if len(e.deferred[d.webhookID]) >= maxDeferred {
				e.pruneDeferred(d.webhookID, now)
			}
			if len(e.deferred[d.webhookID]) < maxDeferred {
				e.deferred[d.webhookID] = append(e.deferred[d.webhookID], claimed{id: d.id, projectID: d.projectID, at: d.at, part: k})
			}
		}
		paused = append(paused, r.paused...)
	}
	for _, pid := range skip {
		if !slices.Contains(e.held, pid) {
			e.held = append(e.held, pid)
		}
	}
	for _, k := range ks {
		// poked while the claim was under way: what it scheduled may have
		// come after the claim's look
		if t := e.pokedAt[k]; !t.IsZero() && t.Before(e.dueAt[k]) {
			e.dueAt[k] = t
		}
	}
	if answered > 0 {
		e.dueProjs = e.countDueProjects()
	}
	e.mu.Unlock()
	e.m.claimed.Add(float64(len(out)))
	if len(paused) > 0 {
		e.notePaused(paused, now)
	}
	if answered == 0 {
		for _, er := range errs {
			if er != nil {
				return out, more, er
			}
		}
	}
	return out, more, nil
}

// countDueProjects is how many projects the partitions' last claims saw
// with something due (e.mu held): a project's deliveries may be in every
// partition.
func (e *Engine) countDueProjects() int {
	if len(e.duePids) == 1 {
		return len(e.duePids[0])
	}
	seen := make(map[string]struct{})
	for _, pids := range e.duePids {
		for _, pid := range pids {
			seen[pid] = struct{}{}
		}
	}
	return len(seen)
}

// migrate moves deliveries an earlier version scheduled in its single due
// set into their projects' due sets (a rolling upgrade keeps adding there
// until the last old node stops). That set is partition 0's, and so are
// its deliveries.
func (e *Engine) migrate() {
	pt := e.parts[0]
	for range 10 {
		n, err := migrateScript.Run(e.runCtx, e.rdb, []string{pt.legacyDueKey, pt.projectsKey}, 1000, pt.dPrefix, pt.duePrefix).Int()
		if err != nil || n == 0 {
			return
		}
		e.o.Log.Info().Int("deliveries", n).Msg("moved deliveries from the earlier schedule into the projects' schedules")
		e.poke(e.o.Now(), e.only(0))
	}
}

// attempt sends one delivery and queues its outcome for recording.
func (e *Engine) attempt(d claimed) {
	w, ok := e.endpoint(d)
	if !ok {
		return
	}
	if !e.acquireOrWait(d, w.ID) {
		return
	}
	// Holding the endpoint's slot, send this delivery and then any that
	// wait for the same endpoint on this node.
	for {
		now := e.o.Now()
		o := send(e.runCtx, e.o.Client, w.URL, d.id, d.channelID, d.body, w.Secrets(now), now, e.o.Timeout)
		if e.runCtx.Err() != nil {
			// Cut off by shutdown, not by the receiver: no attempt is counted.
			e.putBack(d, e.o.Now())
		} else {
			e.conclude(d, w.URL, o, false)
		}
		for {
			next, more := e.handOff(w.ID)
			if !more {
				return
			}
			d = next
			// The slot passes on; a parked delivery whose endpoint is
			// gone (or unreadable) is settled and the next one takes it.
			if w2, ok := e.endpoint(d); ok {
				w = w2
				break
			}
		}
	}
}

// endpoint finds a delivery's endpoint; a deleted or disabled one
// dead-letters the delivery at once (false).
func (e *Engine) endpoint(d claimed) (project.Webhook, bool) {
	hooks, err := e.o.Endpoints.ProjectWebhooks(e.runCtx, d.projectID)
	if err != nil {
		e.putBack(d, e.o.Now().Add(errorPause))
		return project.Webhook{}, false
	}
	for _, w := range hooks {
		if w.ID == d.webhookID {
			if !w.Enabled {
				e.forget(e.parts[d.part], w.ID)
				e.conclude(d, w.URL, outcome{err: "endpoint disabled"}, true)
				return project.Webhook{}, false
			}
			return w, true
		}
	}
	e.forget(e.parts[d.part], d.webhookID)
	e.conclude(d, "", outcome{err: "endpoint deleted"}, true)
	return project.Webhook{}, false
}

// acquireOrWait takes one of the endpoint's attempt slots on this node
// (true), or parks the delivery, in one step under e.mu, so the last
// attempt in flight cannot release the endpoint between a failed take and
// the parking (and leave the delivery with nobody to hand it on). Up to
// PerEndpoint deliveries wait on this node and are sent as slots free up
// (one that has waited half its lease goes back to the schedule instead,
// see handOff). The rest go back to the schedule (putOffFor), and this
// node remembers the put-offs to bring them forward as soon as the
// endpoint has room again.
func (e *Engine) acquireOrWait(d claimed, id string) bool {
	e.mu.Lock()
	if e.busy[id] < e.limits.get(id) {
		if e.busy[id] == 0 {
			e.busySince[id] = e.o.Now()
		}
		e.busy[id]++
		e.mu.Unlock()
		return true
	}
	if len(e.waiting[id]) < e.o.PerEndpoint {
		e.waiting[id] = append(e.waiting[id], d)
		e.mu.Unlock()
		return false
	}
	at := e.o.Now().Add(e.putOffFor(id))
	e.mu.Unlock()
	// Remembered once written, the short put-offs too: a burst's overflow
	// would otherwise wait its put-off out whole while the endpoint has
	// room again within milliseconds.
	e.results <- result{d: d, verdict: verdictDefer, nextAt: at, remember: true}
	return false
}

// putOffFor is how long a delivery for a busy endpoint is put off (e.mu
// held): briefly (putOff) while the endpoint answers, since it will soon
// have room; a whole attempt timeout while it does not (it may hang), so
// its backlog is not claimed again and again. An endpoint answers if it
// answered 2xx on this node within the last second, or has been busy for
// less than a second without an answer yet.
func (e *Engine) putOffFor(id string) time.Duration {
	now := e.o.Now()
	if e.limits.recentlyOK(id, now.Add(-time.Second)) || now.Sub(e.busySince[id]) < time.Second {
		return min(putOff, e.o.Timeout)
	}
	return e.o.Timeout
}

const maxDeferred = 10000 // deferred ids remembered per endpoint

// pruneDeferred forgets an endpoint's put-offs that have come due (e.mu
// held): a short put-off, remembered to be brought forward, has usually
// come due and been claimed again by the time the endpoint has room.
func (e *Engine) pruneDeferred(id string, now time.Time) {
	ids := e.deferred[id]
	kept := ids[:0]
	for _, d := range ids {
		if d.at.After(now) {
			kept = append(kept, d)
		}
	}
	clear(ids[len(kept):])
	if len(kept) == 0 {
		delete(e.deferred, id)
	} else {
		e.deferred[id] = kept
	}
}

// rememberPutOffs remembers the put-offs of a batch just written that
// asked for it (acquireOrWait's), to be brought forward when their
// endpoint has room; those of an endpoint that has room already (its
// attempts ended while the write was under way) are brought forward now.
// Remembered before being written, one could be brought forward before
// its put-back landed: that does not move it, and it would wait its
// put-off out whole.
func (e *Engine) rememberPutOffs(batch []result) {
	var pull []claimed
	now := e.o.Now()
	e.mu.Lock()
	seen := map[string]bool{}
	for _, r := range batch {
		if !r.remember {
			continue
		}
		id := r.d.webhookID
		if len(e.deferred[id]) >= maxDeferred {
			e.pruneDeferred(id, now)
		}
		if len(e.deferred[id]) < maxDeferred {
			e.deferred[id] = append(e.deferred[id], claimed{id: r.d.id, projectID: r.d.projectID, at: r.nextAt, part: r.d.part})
		}
		seen[id] = true
	}
	for id := range seen {
		// (as handOff: fewer than half of what the node parks for it wait)
		if left := len(e.waiting[id]); left < e.o.PerEndpoint/2 && e.busy[id] < e.limits.get(id) {
			pull = append(pull, e.takeDeferred(id, e.o.PerEndpoint-left)...)
		}
	}
	e.mu.Unlock()
	e.bringForward(pull)
}

// handOff passes the caller's endpoint slot to the next waiting delivery,
// or releases it (and brings deferred deliveries forward when the
// endpoint has room again).
func (e *Engine) handOff(id string) (claimed, bool) {
	e.mu.Lock()
	// Hand off only within the endpoint's limit: after failures it is
	// lower than the attempts in flight, and the slot is released instead
	// (the last attempt in flight always hands off, so none stays parked).
	lim := e.limits.get(id)
	stale := e.o.Now().Add(-e.lease() / 2)
	q := e.waiting[id]
	var expired []claimed
	for len(q) > 0 && q[0].at.Before(stale) {
		// Parked for half its lease (a slow endpoint at a low limit):
		// back to the schedule, to be claimed afresh, before the lease
		// runs out and another node sends it too.
		expired = append(expired, q[0])
		q = q[1:]
	}
	if len(expired) > 0 {
		defer func() {
			for _, d := range expired {
				e.putBack(d, e.o.Now())
			}
		}()
	}
	if len(q) == 0 {
		delete(e.waiting, id)
	} else {
		e.waiting[id] = q
	}
	if len(q) > 0 && e.busy[id] <= lim {
		d := q[0]
		if len(q) == 1 {
			delete(e.waiting, id)
		} else {
			e.waiting[id] = q[1:]
		}
		// Keep the endpoint fed while it keeps up: when fewer than half
		// the deliveries a node parks for it wait here, bring put-off
		// ones forward to fill up.
		var pull []claimed
		if left := len(q) - 1; left < e.o.PerEndpoint/2 {
			pull = e.takeDeferred(id, e.o.PerEndpoint-left)
		}
		e.mu.Unlock()
		e.bringForward(pull)
		return d, true
	}
	if e.busy[id]--; e.busy[id] <= 0 {
		delete(e.busy, id)
		delete(e.busySince, id)
	}
	var pull []claimed
	if len(q) == 0 {
		pull = e.takeDeferred(id, 2*e.o.PerEndpoint)
	}
	e.mu.Unlock()
	e.bringForward(pull)
	return claimed{}, false
}

// takeDeferred takes up to n of the deliveries put off for an endpoint
// that are not due yet (e.mu held), forgetting the due ones it passes: one
// due already has nothing to be brought forward to (it has been, or will
// at once be, claimed again).
func (e *Engine) takeDeferred(id string, n int) []claimed {
	ids := e.deferred[id]
	if len(ids) == 0 {
		return nil
	}
	now := e.o.Now()
	var pull []claimed
	i := 0
	for ; i < len(ids) && len(pull) < n; i++ {
		if ids[i].at.After(now) {
			pull = append(pull, ids[i])
		}
	}
	if i == len(ids) {
		delete(e.deferred, id)
	} else {
		e.deferred[id] = ids[i:]
	}
	return pull
}

// bringForward makes put-off deliveries due now, and wakes the claimer.
func (e *Engine) bringForward(pull []claimed) {
	if len(pull) == 0 {
		return
	}
	now := e.o.Now()
	ctx := context.WithoutCancel(e.runCtx)
	touched := make(partSet, len(e.parts))
	// Only deliveries still put off, to the time they were put off to,
	// move: one claimed, failed and rescheduled since keeps its backoff.
	if err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for _, d := range pull {
			pt := e.parts[d.part]
			forwardScript.Eval(ctx, p, []string{pt.dueOf(d.projectID), pt.projectsKey}, d.id, d.at.UnixMilli(), now.UnixMilli(), d.projectID)
			touched.add(pt.k)
		}
		e.nudge(ctx, p, now, now, touched)
	}); err == nil {
		e.poke(now, touched)
	}
}

// putBack returns a claimed delivery to the schedule, due at at, without
// an attempt. It travels with the attempt outcomes, batched.
func (e *Engine) putBack(d claimed, at time.Time) {
	e.results <- result{d: d, verdict: verdictDefer, nextAt: at}
}

// Attempt is one entry of a delivery's attempt history.
type Attempt struct {
	Attempt         int64  `json:"attempt"`
	At              string `json:"at"`
	URL             string `json:"url"`
	StatusCode      int    `json:"status_code,omitempty"`
	DurationMS      int64  `json:"duration_ms"`
	Success         bool   `json:"success"`
	Error           string `json:"error,omitempty"`
	ResponseExcerpt string `json:"response_excerpt,omitempty"`
	NextAttemptAt   string `json:"next_attempt_at,omitempty"`
	// Headers are the request's headers as sent (the signatures change
	// with each attempt's timestamp); kept with the delivery's history,
	// not on the channel's timeline.
	Headers map[string]string `json:"request_headers,omitempty"`
}

// timelineEntry is what a channel's delivery log shows of an attempt.
type timelineEntry struct {
	At         string `json:"at"`
	Type       string `json:"type"` // delivery_attempt, dead_lettered, replayed
	DeliveryID string `json:"delivery_id"`
	WebhookID  string `json:"webhook_id"`
	Event      string `json:"event"`
	*Attempt
}

// conclude decides what follows an attempt and queues it for recording.
// final forces a dead letter (the endpoint is gone or disabled).
func (e *Engine) conclude(d claimed, url string, o outcome, final bool) {
	now := e.o.Now()
	at := wire.Stamp(now)
	r := result{d: d, status: o.status, err: o.err, durationMS: o.duration.Milliseconds(), retryAfter: o.retryAfter}
	if !final {
		r.health = "0"
		if o.ok() {
			r.health = "1"
		}
		e.limits.observe(d.webhookID, o.ok())
	}
	a := Attempt{Attempt: d.attempts + 1, At: at, URL: url, StatusCode: o.status, DurationMS: o.duration.Milliseconds(),
		Success: o.ok(), Error: o.err, ResponseExcerpt: o.excerpt, Headers: o.headers}
	switch {
	case o.ok():
		r.verdict = verdictOK
	case !final && d.tries+1 < int64(len(e.o.Schedule)):
		r.verdict = verdictRetry
		r.nextAt = now.Add(max(e.o.Schedule[d.tries+1], o.retryAfter))
		a.NextAttemptAt = wire.Stamp(r.nextAt)
	default:
		r.verdict = verdictDead
	}
	r.attempt = wire.MustJSON(a)
	if d.resumed != "" {
		r.entries = append(r.entries, wire.MustJSON(noteEntry{At: at, Type: "delivery_resumed", DeliveryID: d.id,
			WebhookID: d.webhookID, Event: d.event, Reason: resumedWhy[d.resumed]}))
	}
	ta := a
	ta.Headers = nil
	r.entries = append(r.entries, wire.MustJSON(timelineEntry{At: at, Type: "delivery_attempt", DeliveryID: d.id,
		WebhookID: d.webhookID, Event: d.event, Attempt: &ta}))
	e.results <- r
}

// recordLoop writes attempt outcomes in batches until results is closed.
func (e *Engine) recordLoop() {
	defer close(e.written)
	batch.Drain(e.results, claimBatch, e.record)
}

func (e *Engine) record(batch []result) {
	// As long as a lease: a slow Redis (the embedded one under load) that
	// gets through a batch late still has it counted here, and a batch cut
	// off is attempted again when its leases run out anyway.
	ctx, cancel := context.WithTimeout(context.Background(), e.lease())
	defer cancel()
	now := e.o.Now()
	at := now.UTC().Format(time.RFC3339Nano)
	var earliest time.Time
	touched := make(partSet, len(e.parts)) // the partitions given retries or put-backs
	recorded := make([]*redis.Cmd, len(batch))
	keys := make([][]string, len(batch))
	args := make([][]any, len(batch))
	// A batch that fails for Redis is written again until Redis answers
	// (within the lease): otherwise its attempts, delivered or not, are
	// all made again once their leases run out. A record that did apply
	// before the failure changes and counts nothing the second time, and
	// answers as it did the first (record.lua).
	var err error
	for n := 0; ; n++ {
		if err = e.recordOnce(ctx, batch, recorded, keys, args, now, at, &earliest, touched); err == nil || !rdb.Unavailable(err) {
			break
		}
		if n == 0 {
			e.o.Log.Warn().Err(err).Int("attempts", len(batch)).Msg("record delivery attempts: retrying until Redis answers")
		}
		if !rdb.Backoff(ctx, n) {
			break
		}
	}
	if err != nil {
		// The leases run out and the attempts are made again: at-least-once.
		e.o.Log.Error().Err(err).Int("attempts", len(batch)).Msg("record delivery attempts")
		return
	}
	e.rememberPutOffs(batch)
	// What each record did decides what follows: a dead letter, or retries
	// cancelled meanwhile (the channel was settled). Only then is there a
	// second round trip.
	var after logBatch
	for i, r := range batch {
		if recorded[i] == nil {
			continue
		}
		rep := decodeRecord(recorded[i])
		if rep.change != changeNone {
			e.healthChanged(ctx, r, rep.change, now, &after)
		}
		ts := wire.Stamp(now)
		switch rep.recorded {
		case recordStale:
			// The newer claim records the delivery's outcome; this
			// attempt was still made, and is counted.
		case recordCancelled:
			r.verdict = verdictCancelled
			after.add(r.d.channelID, r.d.event, wire.MustJSON(cancelEntry{At: ts, Type: "delivery_cancelled", DeliveryID: r.d.id,
				WebhookID: r.d.webhookID, Event: r.d.event, Reason: "retries cancelled: the channel was settled while this attempt was under way"}))
		default:
			if r.verdict == verdictDead {
				after.add(r.d.channelID, r.d.event, wire.MustJSON(timelineEntry{At: ts, Type: "dead_lettered", DeliveryID: r.d.id,
					WebhookID: r.d.webhookID, Event: r.d.event}))
			}
		}
		e.m.attempts.WithLabelValues(string(r.verdict)).Inc()
	}
	if len(after.cids) > 0 {
		if err := e.pipelined(ctx, func(p redis.Pipeliner) { e.writeLogs(ctx, p, &after) }); err != nil {
			e.o.Log.Warn().Err(err).Msg("log delivery outcomes")
		}
	}
	if !earliest.IsZero() {
		e.poke(earliest, touched)
	}
}

// recordOnce sends a batch's records in one round trip (a second if Redis
// had lost the record script).
func (e *Engine) recordOnce(ctx context.Context, batch []result, recorded []*redis.Cmd, keys [][]string, args [][]any,
	now time.Time, at string, earliest *time.Time, touched partSet) error {
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		var logs logBatch
		for i, r := range batch {
			d := r.d
			if r.verdict == verdictNote {
				logs.add(d.channelID, d.event, r.entries...)
				continue
			}
			pt := e.parts[d.part]
			if r.verdict == verdictDefer {
				deferScript.Eval(ctx, p, []string{pt.dKey(d.id), pt.dueOf(d.projectID), pt.leaseKey, pt.projectsKey}, d.id, d.token,
					r.nextAt.UnixMilli(), d.projectID)
				touched.add(pt.k)
				if earliest.IsZero() || r.nextAt.Before(*earliest) {
					*earliest = r.nextAt
				}
				continue
			}
			ttl := e.o.HotWindow // delivered (or cancelled): its attempts are on the channel's log
			if r.verdict == verdictDead {
				ttl = e.o.DLQRetention
			}
			next := int64(0)
			if r.verdict == verdictRetry {
				next = r.nextAt.UnixMilli()
				touched.add(pt.k)
				if earliest.IsZero() || r.nextAt.Before(*earliest) {
					*earliest = r.nextAt
				}
			}
			keys[i] = []string{pt.dKey(d.id), pt.attKey(d.id), pt.dueOf(d.projectID), pt.leaseKey,
				pt.dlqKey(d.projectID), pt.dlqHookKey(d.projectID, d.webhookID), pt.epKey(d.webhookID), pt.unhealthyKey, pt.wakeKey,
				pt.projectsKey, pt.statsKey(d.projectID, now.Unix()/60), pt.staleKey(d.id, d.token)}
			args[i] = []any{d.id, d.token, string(r.verdict), now.UnixMilli(), r.attempt, next, int64(ttl / time.Second), r.status, r.err, at,
				r.health, e.o.BreakerThreshold, e.o.BreakerCooldown.Milliseconds(), e.o.BreakerMaxCooldown.Milliseconds(),
				r.retryAfter.Milliseconds(), e.o.DisableAfter.Milliseconds(), d.projectID, int64(e.o.DLQRetention / time.Second), d.webhookID,
				latencyField(r.durationMS), int64(statsTTL / time.Second)}
			// By hash: the record script is the longest sent per
			// attempt; a NOSCRIPT answer is retried whole below (the
			// command did not run, the rest of the batch did).
			recorded[i] = recordScript.EvalSha(ctx, p, keys[i], args[i]...)
			logs.add(d.channelID, d.event, r.entries...)
		}
		e.writeLogs(ctx, p, &logs)
		e.nudge(ctx, p, *earliest, now, touched)
	})
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = e.rerunNoScript(ctx, recorded, keys, args)
	}
	return err
}

// rerunNoScript runs again, whole, the record scripts of a batch that
// Redis did not know by hash (it restarted or failed over): those did not
// run at all, so running them now applies each once. Other errors stand.
func (e *Engine) rerunNoScript(ctx context.Context, recorded []*redis.Cmd, keys [][]string, args [][]any) error {
	var again []int
	for i, c := range recorded {
		if c == nil || c.Err() == nil {
			continue
		}
		if !redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return c.Err()
		}
		again = append(again, i)
	}
	return e.pipelined(ctx, func(p redis.Pipeliner) {
		for _, i := range again {
			recorded[i] = recordScript.Eval(ctx, p, keys[i], args[i]...)
		}
	})
}

func (e *Engine) reclaimLoop() {
	defer e.loops.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		e.migrate()
		e.reclaim()
	}
}

// reclaim makes due again the deliveries whose lease ran out, in every
// partition, in one round trip.
func (e *Engine) reclaim() {
	now := e.o.Now()
	cmds := make([]*redis.Cmd, len(e.parts))
	err := e.pipelined(e.runCtx, func(p redis.Pipeliner) {
		for k, pt := range e.parts {
			cmds[k] = reclaimScript.Eval(e.runCtx, p, []string{pt.projectsKey, pt.leaseKey}, now.UnixMilli(), 1000, pt.dPrefix, pt.duePrefix)
		}
	})
	if err != nil && e.runCtx.Err() == nil {
		e.o.Log.Warn().Err(err).Msg("reclaim delivery leases")
	}
	total := 0
	touched := make(partSet, len(e.parts))
	for k, c := range cmds {
		if n, err := c.Int(); err == nil && n > 0 {
			total += n
			touched.add(k)
		}
	}
	if total > 0 {
		e.o.Log.Info().Int("deliveries", total).Msg("deliveries whose lease expired are due again")
		e.m.reclaimed.Add(float64(total))
		e.poke(e.o.Now(), touched)
	}
}

// StopClaiming stops taking deliveries; attempts in flight go on. Safe to
// call twice.
func (e *Engine) StopClaiming() {
	e.stopOnce.Do(func() {
		e.mu.Lock() // as take's attempts.Add
		e.claiming.Store(false)
		e.mu.Unlock()
		close(e.stop)
		if e.sub != nil {
			_ = e.sub.Close() // ends listen
		}
		e.loops.Wait()
	})
}

// Shutdown stops claiming, lets attempts in flight finish until ctx ends,
// cuts the rest off (they go back to the schedule without an attempt), and
// writes the outcomes it holds. Safe to call twice.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.StopClaiming()
	e.quitOnce.Do(func() {
		done := make(chan struct{})
		go func() { e.attempts.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			e.runCancel()
			<-done
		}
		e.runCancel()
		// Deliveries parked for a busy endpoint go back to the schedule.
		e.mu.Lock()
		var parked []claimed
		for id, q := range e.waiting {
			parked = append(parked, q...)
			delete(e.waiting, id)
		}
		e.mu.Unlock()
		for _, d := range parked {
			e.putBack(d, e.o.Now())
		}
		close(e.results)
		<-e.written
		e.shared.Close() // later Enqueues send their own round trips
	})
	return nil
}

func parseInt(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }
