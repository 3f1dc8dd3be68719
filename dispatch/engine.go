package dispatch

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/gopool"
	"github.com/riverhub/riverhub/internal/netguard"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wire"
	"github.com/riverhub/riverhub/project"
)

//go:embed lua/*.lua
var luaFS embed.FS

func script(name string) *redis.Script { return rdb.Named(rdb.Script(luaFS, name), "dispatch/"+name) }

var (
	enqueueScript = script("enqueue")
	claimScript   = script("claim")
	recordScript  = script("record")
	deferScript   = script("defer")
	reclaimScript = script("reclaim")
	replayScript  = script("replay")
	discardScript = script("discard")
	cancelScript  = script("cancel")
	migrateScript = script("migrate")
	forwardScript = script("forward")
)

// Endpoints gives a project's webhook endpoints (project.Store).
type Endpoints interface {
	ProjectWebhooks(ctx context.Context, projectID string) ([]project.Webhook, error)
}

// Event is a webhook event to deliver: channels sends task.completed and
// task.ai_generated.
type Event struct {
	Type       string          // task.completed, task.ai_generated
	ProjectID  string          //
	ChannelID  string          //
	WebhookIDs []string        // only these endpoints when set, else every subscribed one
	Body       json.RawMessage // the exact body to sign and send
}

// Options configures an Engine. Zero values take the defaults noted.
type Options struct {
	Prefix string // Redis key prefix; default "riverhub"
	// Partitions splits the delivery schedule over that many Cluster slots
	// (rdb.Partitions); 0 or 1: one, the {dq} tag of earlier versions.
	Partitions   int
	Schedule     []time.Duration // delay before each attempt; default 0s,5s,30s,2m,10m,30m,1h,2h
	Timeout      time.Duration   // one attempt; default 10s
	Retention    time.Duration   // how long a channel's delivery log is kept; default 7 days
	HotWindow    time.Duration   // how long a delivered or cancelled delivery's record is kept; default an hour (at most Retention)
	DLQRetention time.Duration   // how long a dead delivery is kept; default 30 days
	Concurrency  int             // attempts in flight on this node; default 512
	PerEndpoint  int             // attempts in flight per healthy endpoint on this node; default 64
	// BreakerThreshold consecutive failed attempts open an endpoint's
	// circuit (default 5); it stays open BreakerCooldown (default 5s),
	// doubling after each failed probe up to BreakerMaxCooldown (default
	// 5m). An endpoint failing without a success for DisableAfter is
	// disabled (0: never).
	// ProjectConcurrency caps one project's attempts in flight on this
	// node (0: only its fair share of Concurrency).
	ProjectConcurrency int
	BreakerThreshold   int
	BreakerCooldown    time.Duration
	BreakerMaxCooldown time.Duration
	DisableAfter       time.Duration
	Production         bool            // guard every attempt's resolved addresses
	Guard              *netguard.Guard // the allow-list; default none
	Client             *http.Client    // default: built from Timeout, Guard, Production
	Endpoints          Endpoints
	Registerer         prometheus.Registerer
	Log                zerolog.Logger
	// Now is the clock of every time stored for other nodes to compare
	// (leases, due times, circuit times) and of the webhook timestamps;
	// default time.Now. The server passes the Redis clock (rdb.Clock).
	Now func() time.Time
}

// Engine enqueues, schedules and sends deliveries.
type Engine struct {
	rdb    redis.UniversalClient
	shared *rdb.Shared // Enqueue's writes share round trips with concurrent ones; closed by Shutdown
	// claiming is set from Start to StopClaiming.
	claiming atomic.Bool
	o        Options

	ps       rdb.Partitions
	parts    []*part // the delivery schedule's partitions (partition.go)
	nudgeKey string  // pub/sub channel: schedule entries due soon (nudge)
	limits   *limiter

	wake    chan struct{}
	sub     *redis.PubSub // nudges from every node (listen); set by Start
	results chan result
	written chan struct{}

	mu        sync.Mutex
	busy      map[string]int       // attempts in flight per endpoint
	busySince map[string]time.Time // since when an endpoint has had attempts in flight
	waiting   map[string][]claimed // parked for a busy endpoint, by endpoint
	deferred  map[string][]claimed // put back for a busy endpoint, by endpoint
	running   int                  // attempts in flight on this node
	inClaim   int                  // slots the claim in flight may fill (admit); not for take
	perProj   map[string]int       // of which, by project
	dueProjs  int                  // projects with deliveries due, at the last claim
	lastLook  time.Time            // the last claim made while every slot was taken
	freed     chan struct{}        // an attempt ended
	nextAt    time.Time            // when the claimer means to wake
	// dueAt is, per partition, when the claimer is to look at it next:
	// the earliest due time its last claim reported (at most maxIdle
	// ahead), brought forward by pokes and nudges; zero: now.
	dueAt   []time.Time
	pokedAt []time.Time // per partition, the earliest poke since its last claim began; zero: none
	// heldDue is, per partition, the earliest due time its last claim saw
	// when that claim skipped projects, perhaps theirs; zero: none. It
	// becomes the partition's dueAt, once, when admit no longer skips a
	// project held that the claim saw with something due there (release,
	// a claim's worth of partitions at a time).
	heldDue []time.Time
	held    []string   // the projects skipped by claims since, not yet released
	duePids [][]string // per partition, the projects its last claim saw with something due
	turn    int        // the partition a claim round starts from, in rotation

	runCtx    context.Context
	runCancel context.CancelFunc
	stop      chan struct{}
	loops     sync.WaitGroup
	attempts  sync.WaitGroup
	runners   *gopool.Pool // the goroutines attempts run on
	stopOnce  sync.Once
	quitOnce  sync.Once

	m metrics
}

// New returns an Engine; Start begins sending.
func New(c redis.UniversalClient, o Options) *Engine {
	if o.Prefix == "" {
		o.Prefix = "riverhub"
	}
	if len(o.Schedule) == 0 {
		o.Schedule = []time.Duration{0, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute,
			30 * time.Minute, time.Hour, 2 * time.Hour}
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Retention <= 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.HotWindow <= 0 {
		o.HotWindow = time.Hour
	}
	o.HotWindow = min(o.HotWindow, o.Retention)
	if o.DLQRetention <= 0 {
		o.DLQRetention = 30 * 24 * time.Hour
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 512
	}
	if o.PerEndpoint <= 0 {
		o.PerEndpoint = 64
	}
	if o.BreakerThreshold <= 0 {
		o.BreakerThreshold = 5
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = 5 * time.Second
	}
	if o.BreakerMaxCooldown < o.BreakerCooldown {
		o.BreakerMaxCooldown = max(o.BreakerCooldown, 5*time.Minute)
	}
	if o.Guard == nil {
		o.Guard = &netguard.Guard{}
	}
	if o.Client == nil {
		o.Client = newClient(o.Timeout, o.Guard, o.Production, o.Concurrency)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Partitions = max(o.Partitions, 1)
	ps := rdb.NewPartitions("dq", o.Partitions)
	e := &Engine{
		rdb: c, o: o, ps: ps,
		shared:    rdb.NewShared(c, 4),
		nudgeKey:  o.Prefix + ":{dq}:nudge",
		dueAt:     make([]time.Time, ps.N()),
		pokedAt:   make([]time.Time, ps.N()),
		heldDue:   make([]time.Time, ps.N()),
		duePids:   make([][]string, ps.N()),
		limits:    newLimiter(o.PerEndpoint, o.Now),
		wake:      make(chan struct{}, 1),
		results:   make(chan result, 4096),
		written:   make(chan struct{}),
		busy:      make(map[string]int),
		busySince: make(map[string]time.Time),
		waiting:   make(map[string][]claimed),
		deferred:  make(map[string][]claimed),
		perProj:   make(map[string]int),
		freed:     make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	for k := range ps.N() {
		e.parts = append(e.parts, newPart(o.Prefix, ps, k))
	}
	e.runners = gopool.New(gopool.Idle, e.stop)
	e.runCtx, e.runCancel = context.WithCancel(context.Background())
	e.m = newMetrics(o.Registerer, e)
	go e.recordLoop()
	return e
}

// DeliveryID is the delivery (and webhook-id) of an event for an endpoint:
// derived, so that enqueueing the same event again is a no-op.
func DeliveryID(eventType, channelID, webhookID string) string {
	h := sha256.Sum256([]byte(eventType + "\x00" + channelID + "\x00" + webhookID))
	return "msg_" + hex.EncodeToString(h[:13])
}

// Enqueue creates a delivery of ev for every enabled endpoint of the project
// subscribed to its type (only those of ev.WebhookIDs when set), due now.
// A delivery this node has room for (take) it claims in the same round
// trip and attempts at once, unless its endpoint's circuit is open: it
// does not wait for the claimer's next look and round trip.
func (e *Engine) Enqueue(ctx context.Context, ev Event) error {
	q, err := e.Prepare(ctx, ev)
	if q == nil || len(q.ts) == 0 {
		return err
	}
	err = e.sharedPipelined(ctx, func(p redis.Pipeliner) { q.In(ctx, p, "") })
	_, err = q.Done(err)
	return err
}

// Enqueueing is an Enqueue whose writes go in a round trip of the
// caller's, with writes of its own (Prepare, In, Done).
type Enqueueing struct {
	e       *Engine
	ev      Event
	ts      []enqueueTarget
	now     time.Time
	nudge   bool
	touched partSet
}

type enqueueTarget struct {
	d     claimed
	taken bool // a slot of this node is held for it (take)
	cmd   *redis.Cmd
}

// Prepare is Enqueue up to its round trip: ev's deliveries, one per
// endpoint of the project that subscribes to it (none: In queues nothing),
// with a slot of this node held for each one the node can send at once;
// nil on an error (the project's endpoints could not be read). The caller
// queues them with In and must then call Done, which gives back the slots
// of those not taken.
func (e *Engine) Prepare(ctx context.Context, ev Event) (*Enqueueing, error) {
	hooks, err := e.o.Endpoints.ProjectWebhooks(ctx, ev.ProjectID)
	if err != nil {
		return nil, fmt.Errorf("load endpoints: %w", err)
	}
	q := &Enqueueing{e: e, ev: ev, now: e.o.Now()}
	for _, w := range hooks {
		if !w.Subscribes(ev.Type) || (len(ev.WebhookIDs) > 0 && !slices.Contains(ev.WebhookIDs, w.ID)) {
			continue
		}
		d := claimed{id: DeliveryID(ev.Type, ev.ChannelID, w.ID), projectID: ev.ProjectID, webhookID: w.ID,
			channelID: ev.ChannelID, event: ev.Type, body: []byte(ev.Body), at: q.now, part: e.partOf(w.ID).k}
		t := enqueueTarget{d: d, taken: e.take(ev.ProjectID, w.ID)}
		if t.taken {
			t.d.token = newToken()
		}
		q.ts = append(q.ts, t)
	}
	// Other nodes are nudged only for deliveries this one did not take and
	// cannot claim at once: it pokes its own claimer in Done, and a nudge
	// per task would wake every node of the deployment for deliveries this
	// one claims anyway.
	for _, t := range q.ts {
		q.nudge = q.nudge || !t.taken
	}
	q.nudge = q.nudge && !e.canTakeNow()
	return q, nil
}

// In queues the deliveries' writes in p. guard, when set, is the key of a
// hash whose field "message" must hold the event's body for them to be
// written (on one Redis only: the keys span slots): a completion sends its
// task.completed deliveries in its own round trip, after the script that
// records it, and a completion that lost to another run's (whose message
// differs) writes none. (Should the completion's script run after them
// all the same, sent again by its source after NOSCRIPT, the guard finds
// no message yet and keeps them from being written: Done says so.) Each
// delivery is written unless it exists: a delivery enqueued again after a
// crash keeps its first body.
func (q *Enqueueing) In(ctx context.Context, p redis.Pipeliner, guard string) {
	if len(q.ts) == 0 {
		return
	}
	e := q.e
	q.touched = make(partSet, len(e.parts))
	lease := q.now.Add(e.lease()).UnixMilli()
	at := q.now.UTC().Format(time.RFC3339Nano)
	for i := range q.ts {
		t := &q.ts[i]
		pt := e.parts[t.d.part]
		until := int64(0)
		if t.taken {
			until = lease
		}
		keys := []string{pt.dKey(t.d.id), pt.dueOf(q.ev.ProjectID), pt.projectsKey, pt.leaseKey, pt.epKey(t.d.webhookID)}
		if guard != "" {
			keys = append(keys, guard)
		}
		t.cmd = enqueueScript.Eval(ctx, p, keys,
			t.d.id, q.now.UnixMilli(), q.ev.ProjectID, until, t.d.token,
			"project_id", q.ev.ProjectID, "webhook_id", t.d.webhookID, "channel_id", q.ev.ChannelID, "event", q.ev.Type,
			"body", t.d.body, "attempts", 0, "tries", 0, "replays", 0, "status", "pending", "created_at", at)
		q.touched.add(pt.k)
	}
	if q.nudge {
		e.nudge(ctx, p, q.now, q.now, q.touched)
	}
}

// Done finishes the enqueue once In's round trip has run (err: its
// error): the deliveries taken are sent, the slots of the others given
// back. guarded reports that the guard (In) kept at least one delivery
// from being written (the others may exist, written by the run that won):
// the caller then enqueues the winning outcome (Enqueue, idempotent). The
// error is the round trip's.
func (q *Enqueueing) Done(err error) (guarded bool, _ error) {
	e := q.e
	sent, refused := 0, 0
	for i := range q.ts {
		n := -1
		if err == nil && q.ts[i].cmd != nil {
			n, _ = q.ts[i].cmd.Int()
		}
		if n == 3 {
			refused++
		}
		if !q.ts[i].taken {
			continue
		}
		d := q.ts[i].d
		// Taken only when the script says so (not when it existed, or its
		// endpoint's circuit is open). After an error its answer is not
		// read (the round trip may not have been filled yet: only taken
		// and d are read then): put back, as a claim's would be (defer.lua
		// acts only if this token holds it), it is due again at once
		// rather than after its lease.
		if err == nil {
			if n == 2 {
				sent++
				e.runners.Go(func() {
					defer func() { e.end(d.projectID); e.attempts.Done() }()
					e.attempt(d)
				})
				continue
			}
		} else {
			e.putBack(d, q.now)
		}
		e.end(d.projectID)
		e.attempts.Done()
	}
	if err != nil {
		return false, fmt.Errorf("enqueue deliveries: %w", err)
	}
	e.m.enqueued.Add(float64(len(q.ts) - refused))
	e.m.claimed.Add(float64(sent))
	if sent < len(q.ts)-refused {
		e.poke(q.now, q.touched)
	}
	return refused > 0, nil
}

// take holds one of this node's attempt slots for a delivery of project
// pid to endpoint whid, enqueued now, when the claimer would take it at
// once: the node claims, has a free slot, pid is within its share (admit),
// and the endpoint has room (saturated). The caller gives the slot back
// (end and attempts.Done) if the delivery is not taken after all.
func (e *Engine) take(pid, whid string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.claiming.Load() || e.running+e.inClaim >= e.o.Concurrency {
		return false
	}
	if k := e.perProj[pid]; k >= e.fairShare() || (e.o.ProjectConcurrency > 0 && k >= e.o.ProjectConcurrency) {
		return false
	}
	if e.busy[whid] >= e.limits.get(whid) && len(e.waiting[whid]) >= e.o.PerEndpoint {
		return false
	}
	e.running++
	e.perProj[pid]++
	// Under e.mu, as StopClaiming's store: Shutdown's wait for the
	// attempts starts after it, so this Add never races it.
	e.attempts.Add(1)
	return true
}

// poke notes that the partitions in s (every one when s is nil) have
// deliveries due at t, and wakes the claimer if it sleeps past t.
func (e *Engine) poke(t time.Time, s partSet) {
	e.mu.Lock()
	for k := range e.dueAt {
		if s != nil && !s[k] {
			continue
		}
		if t.Before(e.dueAt[k]) {
			e.dueAt[k] = t
		}
		if e.pokedAt[k].IsZero() || t.Before(e.pokedAt[k]) {
			e.pokedAt[k] = t
		}
	}
	early := e.nextAt.IsZero() || t.Before(e.nextAt)
	e.mu.Unlock()
	if early {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// nudge adds to p, a pipeline that writes schedule entries, the PUBLISH
// that tells every node (listen) the earliest due time among them, when it
// comes before the next look at the schedule a sleeping node is sure to
// make (maxIdle from now): without it, another node finds an entry due
// sooner up to maxIdle late. An entry due later needs none, as a look made
// before it sees it and sleeps until then. It goes last, so Redis has
// written the entries when the nodes woken by it look; a nudge that comes
// first (a script Redis had lost, sent again by rdb.Pipelined after it; in
// a Cluster, a PUBLISH sent to another shard) or is lost costs the old
// latency: the look every maxIdle finds the entries. It names the
// partitions in s (nudgePayload), so that the nodes woken look at those.
func (e *Engine) nudge(ctx context.Context, p redis.Pipeliner, due, now time.Time, s partSet) {
	if !due.IsZero() && due.Before(now.Add(maxIdle)) {
		p.Publish(ctx, e.nudgeKey, nudgePayload(due, s))
	}
}

// pipelined sends fill's commands in one round trip, scripts by hash;
// only those answered NOSCRIPT (they did not run) are sent again, by
// source (rdb.Pipelined).
func (e *Engine) pipelined(ctx context.Context, fill func(redis.Pipeliner)) error {
	err := rdb.Pipelined(ctx, e.rdb, fill)
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// canTakeNow reports whether this node claims deliveries and has a free
// slot for one.
func (e *Engine) canTakeNow() bool {
	if !e.claiming.Load() {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running+e.inClaim < e.o.Concurrency
}

// sharedPipelined is pipelined through the shared pipeline (rdb.Shared):
// fill's commands go in the next round trip concurrent callers share.
func (e *Engine) sharedPipelined(ctx context.Context, fill func(redis.Pipeliner)) error {
	err := e.shared.Pipelined(ctx, fill)
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SendTest enqueues a "webhook.test" delivery to one endpoint of the
// project, due now, whatever events it subscribes to (a disabled endpoint
// dead-letters it, as any delivery). It goes through the same signing,
// attempts and retries as real deliveries, and returns the delivery id.
func (e *Engine) SendTest(ctx context.Context, pid string, w project.Webhook) (string, error) {
	now := e.o.Now()
	at := wire.Stamp(now)
	test := testChannelPrefix + newToken()
	body, err := json.Marshal(struct {
		Type      string `json:"type"`
		WebhookID string `json:"webhook_id"`
		ProjectID string `json:"project_id"`
		Message   string `json:"message"`
		Timestamp string `json:"timestamp"`
	}{"webhook.test", w.ID, pid, "a test delivery from riverhub: answer 2xx to pass", at})
	if err != nil {
		return "", err
	}
	id := DeliveryID("webhook.test", test, w.ID)
	pt := e.partOf(w.ID)
	touched := make(partSet, len(e.parts))
	touched.add(pt.k)
	if err := e.pipelined(ctx, func(p redis.Pipeliner) {
		enqueueScript.Eval(ctx, p, []string{pt.dKey(id), pt.dueOf(pid), pt.projectsKey, pt.leaseKey, pt.epKey(w.ID)}, id, now.UnixMilli(), pid, 0, "",
			"project_id", pid, "webhook_id", w.ID, "channel_id", test, "event", "webhook.test",
			"body", body, "attempts", 0, "tries", 0, "replays", 0, "status", "pending", "created_at",
			now.UTC().Format(time.RFC3339Nano))
		e.nudge(ctx, p, now, now, touched)
	}); err != nil {
		return "", fmt.Errorf("enqueue test delivery: %w", err)
	}
	e.m.enqueued.Inc()
	e.poke(now, touched)
	return id, nil
}
