package limit

import (
	"context"
	"embed"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb"
)

//go:embed lua/*.lua
var luaFS embed.FS

var (
	acquireScript = rdb.Named(rdb.Script(luaFS, "acquire"), "limit/acquire")
	releaseScript = rdb.Named(rdb.Script(luaFS, "release"), "limit/release")
)

// releaseBound is how long Release (and the undo of an admission whose
// answer was lost) may wait for Redis; past it the slot expires after Hold.
const releaseBound = 2 * time.Second

// Limits of one credential. Zero fields mean no limit of that kind.
type Limits struct {
	Concurrency int // requests in flight at once, all nodes
	RPM         int // requests started in any window of one minute (plus Options.Margin), all nodes
	// TPM is the tokens that answers reported in the last minute, all
	// nodes: admission stops once their sum reaches it.
	TPM int
	// Hold is how long a concurrency permit outlives a node that died
	// holding it: the provider timeout plus a margin; default 90s.
	Hold time.Duration
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l.Concurrency <= 0 && l.RPM <= 0 && l.TPM <= 0 }

// Options configures a Limiter. Zero values take the defaults noted.
type Options struct {
	Prefix string // Redis key prefix, e.g. "riverhub"
	// Now is the time written to and compared in Redis by every node, so it
	// should be the node's clock corrected to Redis time (rdb.Clock.Now);
	// default time.Now.
	Now func() time.Time
	// Poll is how often a node's first waiter re-checks a full concurrency
	// limit: a slot released by another node is only seen this way; default
	// 20ms.
	Poll time.Duration
	// Margin is added to the RPM window, so that requests which take a
	// little longer to reach the provider than to be admitted never make it
	// count more than RPM in its own minute; default 1s.
	Margin time.Duration
}

// Limiter admits requests to providers within the limits of their
// credentials, shared by every node through Redis.
type Limiter struct {
	rdb    redis.UniversalClient
	o      Options
	window int64 // RPM window, ms

	mu    sync.Mutex                             // serialises Set
	creds atomic.Pointer[map[string]*credential] // copy on write: Acquire reads it without a lock

	relMu      sync.Mutex
	relPending []pendingRelease // Releases waiting for the flusher
	relRunning bool             // a flusher goroutine runs
}

// credential is one key's limits and its node-local queue of waiters.
type credential struct {
	key  string
	keys []string // conc, rpm, tpm; one hash tag
	lim  atomic.Pointer[Limits]

	mu         sync.Mutex
	head, tail *waiter
	n          int
}

// waiter is one Acquire queued on this node. Only the head talks to Redis;
// wake tells it that it became head, that a local permit was released or
// that the limits changed.
type waiter struct {
	wake       chan struct{}
	prev, next *waiter
}

// New returns a Limiter on c.
func New(c redis.UniversalClient, o Options) *Limiter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = 20 * time.Millisecond
	}
	if o.Margin <= 0 {
		o.Margin = time.Second
	}
	l := &Limiter{rdb: c, o: o, window: (time.Minute + o.Margin).Milliseconds()}
	l.creds.Store(&map[string]*credential{})
	return l
}

// Set configures the limits of a credential key (e.g. "openai:3fa9c2d1").
// Keys never Set, or set to zero Limits, are not limited: Acquire returns at
// once without touching Redis. Waiters of the key re-check the new limits at
// once.
func (l *Limiter) Set(key string, lim Limits) {
	if lim.Hold <= 0 {
		lim.Hold = 90 * time.Second
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.creds.Load()
	c := old[key]
	if c == nil {
		if lim.IsZero() {
			return
		}
		tag := "plim:{" + key + "}:"
		if l.o.Prefix != "" {
			tag = l.o.Prefix + ":" + tag
		}
		c = &credential{key: key, keys: []string{tag + "conc", tag + "rpm", tag + "tpm"}}
		c.lim.Store(&lim)
		m := make(map[string]*credential, len(old)+1)
		for k, v := range old {
			m[k] = v
		}
		m[key] = c
		l.creds.Store(&m)
		return
	}
	c.lim.Store(&lim)
	c.signal()
}

// Waiting reports how many callers on this node are waiting for key now.
func (l *Limiter) Waiting(key string) int {
	c := (*l.creds.Load())[key]
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Acquire waits until the credential key may start one more request, or ctx
// ends: then it returns ctx's error, having taken nothing. waiting, when not
// nil, is called once, the first time Acquire knows it must wait, before it
// waits. It returns the Permit to Release after the request (nil for a key
// that is not limited) and how long it waited (0 when it did not; also
// when ctx ended while it waited).
//
// Waiters of one key on this node are admitted in their order of arrival.
// While Redis fails, Acquire keeps retrying with backoff: it never lets a
// request go without a permit.
func (l *Limiter) Acquire(ctx context.Context, key string, waiting func()) (*Permit, time.Duration, error) {
	c := (*l.creds.Load())[key]
	if c == nil {
		return nil, 0, nil
	}
	lim := c.lim.Load()
	if lim.IsZero() {
		return nil, 0, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	c.mu.Lock()
	queued := c.head != nil
	c.mu.Unlock()
	var d time.Duration
	fails := 0
	if !queued {
		p, wait, err := l.try(ctx, c, lim)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, 0, ctx.Err()
		case err != nil:
			fails = 1
		case p != nil:
			return p, 0, nil
		default:
			d = wait
		}
	}
	if waiting != nil {
		waiting()
	}
	return l.wait(ctx, c, start, d, fails)
}

// wait queues the caller behind this node's other waiters for c. As head,
// it pauses d (or backs off after fails Redis errors) before each try.
func (l *Limiter) wait(ctx context.Context, c *credential, start time.Time, d time.Duration, fails int) (*Permit, time.Duration, error) {
	w := &waiter{wake: make(chan struct{}, 1)}
	c.push(w)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		// Limits lifted (Set) before this waiter was queued, whose signal
		// it therefore missed: go at once rather than after d.
		if c.lim.Load().IsZero() {
			c.leave(w)
			return nil, time.Since(start), nil
		}
		switch {
		case !c.isHead(w):
			select {
			case <-ctx.Done():
				c.leave(w)
				return nil, time.Since(start), ctx.Err()
			case <-w.wake:
			}
			// Becoming head, try at once: the waiter before it was just
			// admitted or left.
			d, fails = 0, 0
			continue
		case fails > 0:
			if !rdb.Backoff(ctx, fails-1) {
				c.leave(w)
				return nil, time.Since(start), ctx.Err()
			}
		case d > 0:
			t.Reset(d)
			select {
			case <-ctx.Done():
				c.leave(w)
				return nil, time.Since(start), ctx.Err()
			case <-w.wake:
			case <-t.C:
			}
		}
		lim := c.lim.Load()
		if lim.IsZero() {
			c.leave(w)
			return nil, time.Since(start), nil
		}
		p, wait, err := l.try(ctx, c, lim)
		switch {
		case err != nil && ctx.Err() != nil:
			c.leave(w)
			return nil, time.Since(start), ctx.Err()
		case err != nil:
			fails++
		case p != nil:
			c.leave(w)
			return p, time.Since(start), nil
		default:
			d, fails = wait, 0
		}
	}
}

// try runs the acquire script once: a Permit, or how long to wait before
// the next try.
func (l *Limiter) try(ctx context.Context, c *credential, lim *Limits) (*Permit, time.Duration, error) {
	id := uuid.NewString()
	ms, err := acquireScript.Run(ctx, l.rdb, c.keys, l.o.Now().UnixMilli(), lim.Concurrency, lim.RPM, lim.TPM,
		l.window, lim.Hold.Milliseconds(), id).Int64()
	if err != nil {
		if ctx.Err() != nil {
			// The answer was lost, not necessarily the admission: the
			// caller is leaving, so give back whatever it may have taken.
			go l.release(c, id, 0, true)
		}
		return nil, 0, fmt.Errorf("acquire permit for %s: %w", c.key, err)
	}
	switch {
	case ms == 0:
		return &Permit{l: l, c: c, id: id, conc: lim.Concurrency > 0, tpm: lim.TPM > 0}, 0, nil
	case ms < 0:
		return nil, min(time.Duration(-ms)*time.Millisecond, l.o.Poll), nil
	default:
		return nil, time.Duration(ms) * time.Millisecond, nil
	}
}

// release runs the release script, bounded by releaseBound; an error is
// dropped: the slot then expires after Hold.
func (l *Limiter) release(c *credential, id string, tokens int, undo bool) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseBound)
	defer cancel()
	u := "0"
	if undo {
		u = "1"
	}
	_ = releaseScript.Run(ctx, l.rdb, c.keys, id, tokens, strconv.FormatInt(l.o.Now().Unix(), 10),
		l.window+c.lim.Load().Hold.Milliseconds(), u).Err()
}

// Permit is one admitted request of a limited credential.
type Permit struct {
	l    *Limiter
	c    *credential
	id   string
	conc bool // holds a concurrency slot
	tpm  bool // its tokens count against a TPM limit
	done atomic.Bool
}

// Release gives back the concurrency slot and records the tokens the answer
// reported (0: none) for TPM. Only the first call counts, and a nil Permit
// (a key that is not limited) does nothing. It does not wait: the release
// is written in the background, with others of this node in one pipeline,
// within 2s; if Redis fails, the slot expires after Hold.
func (p *Permit) Release(tokens int) {
	if p == nil || !p.done.CompareAndSwap(false, true) {
		return
	}
	if !p.tpm || tokens < 0 {
		tokens = 0
	}
	if !p.conc && tokens == 0 {
		return
	}
	p.l.queueRelease(pendingRelease{c: p.c, id: p.id, tokens: tokens, conc: p.conc, at: p.l.o.Now().Unix()})
}

// Flush waits until the Releases made before it are written (or given
// up), or ctx ends: a node calls it before it exits, so that its slots
// are free at once rather than after Hold.
func (l *Limiter) Flush(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		l.relMu.Lock()
		idle := !l.relRunning
		l.relMu.Unlock()
		if idle {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pendingRelease is a Release not yet written.
type pendingRelease struct {
	c      *credential
	id     string
	tokens int
	conc   bool
	at     int64 // the unix second its tokens count in
}

// maxReleaseBatch bounds one pipeline of releases.
const maxReleaseBatch = 256

// queueRelease hands a release to the node's flusher, starting one if
// none runs: releases that come while a batch is being written go out
// together in the next one, so a busy node pays a fraction of a round
// trip per release, and an idle one a single round trip as before.
func (l *Limiter) queueRelease(r pendingRelease) {
	l.relMu.Lock()
	l.relPending = append(l.relPending, r)
	start := !l.relRunning
	l.relRunning = true
	l.relMu.Unlock()
	if start {
		go l.flushReleases()
	}
}

func (l *Limiter) flushReleases() {
	for {
		l.relMu.Lock()
		batch := l.relPending
		if len(batch) > maxReleaseBatch {
			batch = batch[:maxReleaseBatch:maxReleaseBatch]
			l.relPending = l.relPending[maxReleaseBatch:]
		} else {
			l.relPending = nil
		}
		if len(batch) == 0 {
			l.relRunning = false
			l.relMu.Unlock()
			return
		}
		l.relMu.Unlock()
		l.releaseBatch(batch)
	}
}

// releaseBatch writes releases in one pipeline, bounded by releaseBound
// (errors are dropped: a slot then expires after Hold), then wakes the
// local waiters of the credentials that got a slot back.
func (l *Limiter) releaseBatch(batch []pendingRelease) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseBound)
	defer cancel()
	run := func(eval func(p redis.Pipeliner, r pendingRelease) *redis.Cmd) []*redis.Cmd {
		cmds := make([]*redis.Cmd, len(batch))
		_, _ = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, r := range batch {
				cmds[i] = eval(p, r)
			}
			return nil
		})
		return cmds
	}
	args := func(r pendingRelease) []any {
		return []any{r.id, r.tokens, r.at, l.window + r.c.lim.Load().Hold.Milliseconds(), "0"}
	}
	cmds := run(func(p redis.Pipeliner, r pendingRelease) *redis.Cmd {
		return releaseScript.EvalSha(ctx, p, r.c.keys, args(r)...)
	})
	for _, c := range cmds {
		if c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			// Redis lost its scripts (a restart): send the source once.
			run(func(p redis.Pipeliner, r pendingRelease) *redis.Cmd {
				return releaseScript.Eval(ctx, p, r.c.keys, args(r)...)
			})
			break
		}
	}
	for i, r := range batch {
		if r.conc && !slices.ContainsFunc(batch[:i], func(o pendingRelease) bool { return o.conc && o.c == r.c }) {
			r.c.signal()
		}
	}
}

func (c *credential) push(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tail == nil {
		c.head = w
	} else {
		c.tail.next, w.prev = w, c.tail
	}
	c.tail = w
	c.n++
}

func (c *credential) isHead(w *waiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head == w
}

// leave takes w out of the queue; if it was the head, the next waiter
// becomes head and is woken to try.
func (c *credential) leave(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wasHead := w.prev == nil
	if wasHead {
		c.head = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next == nil {
		c.tail = w.prev
	} else {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
	c.n--
	if wasHead {
		c.signalLocked()
	}
}

// signal wakes the head, if any, to try again at once.
func (c *credential) signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signalLocked()
}

func (c *credential) signalLocked() {
	if c.head == nil {
		return
	}
	select {
	case c.head.wake <- struct{}{}:
	default:
	}
}
