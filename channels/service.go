package channels

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/batch"
	"github.com/riverhub/riverhub/internal/gopool"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wire"
)

//go:embed lua/*.lua
var luaFS embed.FS

// script loads lua/<name>.lua; several names make one script of their
// sources in order (shared Lua functions first).
func script(names ...string) *redis.Script {
	return rdb.Named(rdb.Script(luaFS, names...), "channels/"+strings.Join(names, "+"))
}

var (
	recordScript       = script("tl", "record", "record_main")
	unrecordScript     = script("unrecord")
	unrecordSyncScript = script("unrecordsync")
	queueKeptScript    = script("queuekept")
	unindexScript      = script("unindex")
	enqueueScript      = script("gcra", "enqueue", "enqueue_main")
	submitScript       = script("gcra", "enqueue", "tl", "record", "start", "submit")
	settleTakeScript   = script("tl", "start", "settletake")
	limitScript        = script("gcra", "limit")
	claimScript        = script("claim", "claim_main")
	claimStartScript   = script("claim", "tl", "start", "claimstart")
	reclaimScript      = script("requeue", "reclaim")
	releaseScript      = script("requeue", "release")
	startScript        = script("tl", "start", "start_main")
	completeScript     = script("tl", "complete")
	claimDueScript     = script("claimdue")
	fireScript         = script("tl", "settle", "fire")
	// (with the hub's publish as a function: ScriptPublisher)
	callbackScript = rdb.Named(rdb.NewScript(rdb.Compact(hub.PublishFunc)+rdb.Source(luaFS, "tl", "settle", "callback")),
		"channels/hub.publish+tl+settle+callback")
	announceScript = script("announce")
	noteScript     = script("tl", "note")
	// The hub's publish, which an ack's transaction sends by hash before
	// the lease's removal (ackPipe): loaded on new connections with the
	// scripts above, so that a node's first ack on a Redis that lacks it
	// does not get NOSCRIPT inside the transaction.
	hubPublishScript = rdb.Named(rdb.NewScript(hub.PublishSource), "hub/publish")
)

// Runner runs a request against the providers (ai.Runner).
type Runner interface {
	Run(ctx context.Context, req ai.Request) (ai.Result, error)
}

// Publisher pushes messages into channels' rooms (the realtime hub).
// PublishIn queues a publish into p, the caller's pipeline, so that it goes
// with the caller's own commands (after a channel's final message the hub
// keeps its history only for the hot window, then rebuilds it from the
// record: RecordKey); the func it returns reports, once p has run, the
// message's sequence number in the room, or 0 when the room already held
// the message and dropped it as a repeat.
type Publisher interface {
	PublishIn(ctx context.Context, p redis.Pipeliner, projectID, channelID string, msg json.RawMessage) func() (seq int64, err error)
}

// LonePublisher is a Publisher that can publish a channel's final message
// that is its room's only one as a bare publish, the message and its seq
// (1) in the record written by the completion itself (hub.PublishLoneIn).
type LonePublisher interface {
	PublishLoneIn(ctx context.Context, p redis.Pipeliner, projectID, channelID string, msg json.RawMessage) func() (seq int64, err error)
}

// ScriptPublisher is a Publisher whose publish of a channel's final
// message callback.lua makes itself, with the compare-and-set that decides
// it: the message reaches the room a round trip sooner, and a settlement
// does not publish it again. The script runs hub.PublishFunc, so the keys
// and arguments must be those of *hub.Hub's FinalPublishArgs (the hub is
// the one implementation). CountScriptPublish counts such a publish.
type ScriptPublisher interface {
	FinalPublishArgs(cid string) (keys []string, args []any)
	CountScriptPublish()
}

// Dispatcher enqueues webhook deliveries (the dispatch engine). Enqueue
// must be idempotent per (event type, channel): it may be called again for
// the same event after a crash. Prepare is an Enqueue to be sent in a round
// trip of the caller's (dispatch.Enqueueing); when it returns nil (an
// error) the caller calls Enqueue instead. CancelIn queues in p the
// stopping of the retries of events' deliveries that have not succeeded
// (ev.Body unused), for a batch of events at once; once p has run, the
// Cancelling says whether that went through and logs it (a nil Cancelling:
// nothing to cancel). It is idempotent too. ChannelLog is that log for one
// channel, what the dispatcher did with its events, oldest first: the
// timeline shows it merged with the channel's own entries.
type Dispatcher interface {
	Enqueue(ctx context.Context, ev dispatch.Event) error
	Prepare(ctx context.Context, ev dispatch.Event) (*dispatch.Enqueueing, error)
	CancelIn(ctx context.Context, p redis.Pipeliner, cs []dispatch.Cancellation) (*dispatch.Cancelling, error)
	ChannelLog(ctx context.Context, channelID string) ([]json.RawMessage, error)
}

// Options configures a Service. Zero values take the defaults noted.
type Options struct {
	Prefix string // Redis key prefix; default "riverhub"
	// Partitions splits the task queue and the callback deadlines over
	// that many Cluster slots (rdb.Partitions); 0 or 1: one, the {tasks}
	// and {cb} tags of earlier versions.
	Partitions int
	Workers    int // concurrent tasks on this node; default 256
	MaxQueue   int // ready tasks above which Submit refuses; default 100000
	// ProjectMaxQueue is the number of one project's ready tasks above
	// which its submissions are refused (ErrProjectQueueFull); default
	// 50000.
	ProjectMaxQueue int
	// ProjectRate is how many tasks per second one project may submit
	// (Submit and RunSync), deployment-wide, with a burst of twice that;
	// more are refused with code rate_limited. Default 0: no limit, so a
	// program that calls the package directly (tests, benchmarks) is not
	// limited unless it asks to be; the server sets it from
	// RIVERHUB_PROJECT_RATE.
	ProjectRate int
	Lease       time.Duration // task lease; default 30s
	Retention   time.Duration // channel record TTL; default 7 days
	// HotWindow is how long a settled channel stays as it is before it is
	// folded (fold.go); default an hour (at most Retention).
	HotWindow time.Duration
	// Archive, when set, takes settled channels past their hot window out
	// of Redis (archive.go) instead of folding them there.
	Archive    Archive
	Node       string     // this node's name on the timeline; default hostname:pid
	Publisher  Publisher  // nil: no room messages
	Dispatcher Dispatcher // nil: no webhooks
	// PublicURL is the base of the callback_url in task.ai_generated.
	PublicURL string
	// CallbackTimeout is how long an event-driven channel awaits its
	// callback (a workflow may set its own); default 5 minutes.
	CallbackTimeout time.Duration
	// PlaygroundDelay is when the playground's simulated callback comes;
	// default 1.5 s.
	PlaygroundDelay time.Duration
	// MaxWaiting is how many tasks of this node may give back their
	// worker slot while they wait for a provider (a rate-limit permit or
	// a retry delay), so that other tasks run meanwhile; beyond it a
	// waiting task keeps its slot. Default 4 × Workers.
	MaxWaiting int
	// SyncWait bounds the time a sync request waits in all for provider
	// rate limits and retry delays before its chain moves on; default 30s.
	SyncWait time.Duration
	// StreamWindow and StreamBytes coalesce a streamed answer's text
	// (Task.Stream) into chunk events: one per window from the first byte
	// waiting, or as soon as StreamBytes are waiting. Defaults 0 (every
	// piece at once) and 256.
	StreamWindow time.Duration
	StreamBytes  int
	// WaitReplicas is how many replicas must confirm the writes of a
	// submission (Submit, RunSync) or a callback before it returns
	// (Redis WAIT, see replicated); default 0: the master's answer is
	// enough. WaitTimeout bounds each WAIT; default 100 ms.
	WaitReplicas int
	WaitTimeout  time.Duration
	Registerer   prometheus.Registerer
	Log          zerolog.Logger
	// Now is the clock of every time stored for other nodes to compare
	// (leases, callback deadlines) and of the timeline; default time.Now.
	// The server passes the Redis clock (rdb.Clock).
	Now func() time.Time
}

// Service runs channels. Its goroutines, which methods may run
// concurrently, and how StopClaiming and Shutdown stop it: see the package
// doc's concurrency contract.
type Service struct {
	rdb    redis.UniversalClient
	runner Runner
	o      Options

	q        *queue
	permits  permits  // blocks of the projects' rates this node holds
	expiries expiries // of the request-log index keys (logs.go)
	dueKeys  []string // callback deadlines, one set per partition (callback.go)
	foldKeys []string // settled channels to fold, one set per partition (fold.go)

	wake      chan struct{}
	wakeDue   chan struct{} // an earlier deadline was set on this node
	syncSlots chan struct{} // one per synchronous run in flight (at most Workers)
	slots     chan struct{} // one token per free worker (claimLoop, a submission's take)
	taking    atomic.Bool   // submissions may run their task here at once (Start to StopClaiming)
	drained   atomic.Bool   // the claimer's last claim took all there was (takes are worth asking)
	acks      chan ackItem  // lease releases (and publishes) for ackLoop
	acked     chan struct{} // closed when ackLoop has sent the last one

	settles     chan settlement // callbacks' side effects, for settleLoop (callback.go)
	settlesDone chan struct{}   // closed when settleLoop has sent the last one
	tidying     *tidying        // settlements' last steps, held on one Redis (callback.go)

	ackMu      sync.RWMutex
	acksClosed bool

	// shared carries submissions' and completions' writes: those of
	// concurrent requests and workers share round trips (rdb.Shared).
	shared *rdb.Shared

	mu       sync.Mutex
	inflight map[string]lease // channel id → its lease, of the tasks this node runs

	streams streams // the streamed answers of the tasks this node runs (stream.go)

	unindexQ unindexQueue // notes of index removals not written yet (unindexDue)

	runCtx    context.Context // cancelled when running tasks must stop
	runCancel context.CancelFunc
	stop      chan struct{} // closed to stop claiming
	quit      chan struct{} // closed to stop heartbeats and reclaims, once no task runs
	loops     sync.WaitGroup
	tasks     sync.WaitGroup
	runners   *gopool.Pool // the goroutines tasks run on
	claimer   sync.WaitGroup
	stopOnce  sync.Once
	quitOnce  sync.Once
	closing   bool // under mu: Shutdown has begun waiting for tasks

	waiting atomic.Int64 // tasks that gave back their worker slot to wait for a provider

	m          metrics
	shortfalls *prometheus.CounterVec // answers given before WaitReplicas confirmed
	waitLog    zerolog.Logger
}

// New returns a Service; Start begins claiming tasks.
func New(rdb redis.UniversalClient, runner Runner, o Options) *Service {
	if o.Prefix == "" {
		o.Prefix = "riverhub"
	}
	if o.Workers <= 0 {
		o.Workers = 256
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 100000
	}
	if o.ProjectMaxQueue <= 0 {
		o.ProjectMaxQueue = 50000
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.Retention <= 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.HotWindow <= 0 {
		o.HotWindow = time.Hour
	}
	o.HotWindow = min(o.HotWindow, o.Retention)
	if o.Node == "" {
		h, _ := os.Hostname()
		o.Node = h + ":" + strconv.Itoa(os.Getpid())
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CallbackTimeout <= 0 {
		o.CallbackTimeout = 5 * time.Minute
	}
	if o.PlaygroundDelay <= 0 {
		o.PlaygroundDelay = 1500 * time.Millisecond
	}
	if o.MaxWaiting <= 0 {
		o.MaxWaiting = 4 * o.Workers
	}
	if o.SyncWait <= 0 {
		o.SyncWait = 30 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 100 * time.Millisecond
	}
	if o.StreamBytes <= 0 {
		o.StreamBytes = 256
	}
	s := &Service{
		rdb: rdb, runner: runner, o: o,
		q:           newQueue(o.Prefix, o.Partitions),
		dueKeys:     dueKeys(o.Prefix, o.Partitions),
		foldKeys:    foldKeys(o.Prefix, o.Partitions),
		wakeDue:     make(chan struct{}, 1),
		wake:        make(chan struct{}, 1),
		syncSlots:   make(chan struct{}, o.Workers),
		slots:       make(chan struct{}, o.Workers),
		acks:        make(chan ackItem, 4096),
		acked:       make(chan struct{}),
		settles:     make(chan settlement, 4096),
		settlesDone: make(chan struct{}),
		inflight:    make(map[string]lease),
		stop:        make(chan struct{}),
		quit:        make(chan struct{}),
	}
	for range o.Workers {
		s.slots <- struct{}{}
	}
	s.runCtx, s.runCancel = context.WithCancel(context.Background())
	s.runners = gopool.New(gopool.Idle, s.quit)
	s.m = newMetrics(o.Registerer, s)
	s.shortfalls = newShortfalls(o.Registerer)
	s.waitLog = o.Log.Sample(&zerolog.BurstSampler{Burst: 1, Period: waitLogPeriod})
	s.shared = newShared(rdb)
	s.tidying = s.newTidying()
	go s.ackLoop()
	go s.settleLoop()
	return s
}

func (s *Service) chKey(cid string) string { return s.o.Prefix + ":ch:{" + cid + "}" }

// RecordKey names the channels' records under prefix, for the hub
// (hub.Options.Record): a finished channel's record holds its final room
// message (field message) and, once published, its seq (field room_seq).
func RecordKey(prefix string) func(cid string) string {
	return func(cid string) string { return prefix + ":ch:{" + cid + "}" }
}

// liveFields are the record's fields that only a channel not yet settled
// needs (to run, to redo its side effects, to await its callback): a
// settled channel drops them (compact), keeping what the channel API, the
// request logs, a repeated callback and a late join read.
// (The bc:<status> markers stay: small, and a settlement redone after the
// compaction must still find that its broadcast entries were written.)
var liveFields = []string{"task", "result", "runs", "hook", "sim", "due_msg", "due_status", "deadline", "announced", "cb_parts", "kept"}

// compact drops a settled channel's live fields, within p: sent once its
// side effects have landed (with its lease release, and with the removal
// of its deadline entries, whose redo finds it compacted and only acks,
// or drops the entry: fire.lua), after the channel is queued to fold
// (queueFoldIn), which drops the live fields too if a compaction was cut
// short.
func (s *Service) compact(ctx context.Context, p redis.Pipeliner, cid string) {
	p.HDel(ctx, s.chKey(cid), liveFields...)
}

// queueFoldIn queues a settled channel to be folded (or archived) once
// its hot window has passed, within m: the channels of one round trip go
// as one ZADD per set.
func (s *Service) queueFoldIn(m *rdb.Merge, cid string) { m.ZAdd(s.foldKey(cid), s.foldEntry(cid)) }

func (s *Service) foldEntry(cid string) redis.Z {
	return redis.Z{Score: float64(s.o.Now().Add(s.o.HotWindow).UnixMilli()), Member: cid}
}
func (s *Service) tlKey(cid string) string { return s.o.Prefix + ":ch:{" + cid + "}:tl" }

// wKey is channel cid's withdrawn mark (unrecord.lua): set when its
// submission is taken back, so that one Redis has not run yet records
// and queues nothing when it does.
func (s *Service) wKey(cid string) string { return s.o.Prefix + ":ch:{" + cid + "}:w" }

// withdrawnTTL is how long a withdrawn mark lasts: far longer than a
// round trip can wait to be run (its timeouts and resends).
const withdrawnTTL = 10 * time.Minute

// errGone is a completion's error when its channel has expired or moved to
// the archive meanwhile (a run redone after its node died): nothing is
// left to record.
var errGone = errors.New("the channel is gone")

// ErrQueueFull answers a submission the node cannot take on.
var ErrQueueFull = &apperr.Error{Kind: apperr.RateLimited, Code: "queue_full",
	Message: "too many tasks are waiting; retry later", RetryAfter: 1}

// recordArgs are the record script's arguments for a new channel.
func (s *Service) recordArgs(t *Task, status Status, now time.Time, entries ...Entry) ([]any, error) {
	task, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode task: %w", err)
	}
	at := wire.Stamp(now)
	args := []any{int64(s.o.Retention / time.Second), 7,
		"project_id", t.ProjectID, "workflow", t.Workflow.Name, "event_name", t.Workflow.EventName,
		"status", string(status), "created_at", at, "updated_at", at, "task", task}
	if len(t.Metadata) > 0 {
		args[1] = 8
		args = append(args, "metadata", []byte(t.Metadata))
	}
	for _, e := range entries {
		args = append(args, wire.MustJSON(e))
	}
	return args, nil
}

// Submit records a channel and queues its task on its project's queue (or,
// on one Redis, may take it for this node to run at once: see the package
// doc, Queue), in one round trip: one script on one Redis (submit.lua); on
// a Cluster in three, each shared with other submissions: the intent (the queue's
// slot), the record with its index entries, then the enqueue script (the
// queue's slot; see docs/layout.md, "Write order across slots"). The channel id is chosen by the
// caller (it is part of the answer, which may have to be stored for
// idempotency before the task exists). A full queue is ErrQueueFull (the
// deployment's) or ErrProjectQueueFull, a project over its rate is a
// rate_limited error (IsRateLimited); either leaves nothing behind (on a
// Cluster the record is deleted again: a second round trip, on refusal
// only; see withdraw). With
// Options.WaitReplicas it returns once that many replicas have the writes,
// or their WAIT timed out.
func (s *Service) Submit(ctx context.Context, t *Task) error {
	ctx, done := s.replicated(ctx, "submit")
	err := s.submit(ctx, t)
	done(err)
	return err
}

func (s *Service) submit(ctx context.Context, t *Task) error {
	now := s.o.Now()
	args, err := s.recordArgs(t, StatusPending, now, s.requestEntry(t, now))
	if err != nil {
		return err
	}
	// With partitions, the project's rate key has a slot of its own, so
	// the rate is checked first, before anything is written (a task then
	// refused for a full queue has used its share of the rate).
	// A permit this node holds (permits.go) spares the check.
	q := s.q.of(t.ChannelID)
	rate, rateKey := s.o.ProjectRate, s.q.rate(t.ProjectID)
	ask := 0 // the tasks of the rate this submission's check asks for
	if len(s.q.keys) > 1 {
		if err := s.admit(ctx, t.ProjectID); err != nil {
			return err
		}
		rate = 0
	} else if rate > 0 {
		if ask = s.permits.take(t.ProjectID, now, permitBlock(rate)); ask == 0 {
			rate = 0
		}
	}
	if rate == 0 {
		rateKey = q.count // not read; a key of the script's slot
	}
	keys := []string{s.chKey(t.ChannelID), s.wKey(t.ChannelID)}
	qkeys := []string{q.queue(t.ProjectID), q.ring, q.count, q.legacy, rateKey}
	qargs := []any{t.ChannelID, t.ProjectID, s.q.share(s.o.MaxQueue), s.q.share(s.o.ProjectMaxQueue), rate, 2 * rate, ask, s.q.legacyArg()}
	ikeys := s.newKeys(t, StatusPending)
	// The record must exist before a worker can claim the task (a claim
	// that finds no record drops the task as expired). On one Redis the
	// submit script queues the task, records it and writes its index
	// entries at once (nothing, if refused), for every submission of the
	// round trip in one call; on a Cluster (rdb.IsCluster) the three live
	// in different slots, so the record goes before the enqueue, in a
	// round trip of its own, and after the intent.
	cluster := rdb.IsCluster(s.rdb)
	var intentUntil int64 // a Cluster submission's intent's deadline
	if cluster {
		// The intent first (enqueue_main.lua): a record never stands
		// without a way to its queue. Both round trips are shared with
		// other submissions (rdb.Shared).
		intent, until := leaseMember(t.ProjectID, t.ChannelID), now.Add(s.o.Lease).UnixMilli()
		intentUntil = until
		err := s.shared.PipelinedMerge(ctx, func(_ redis.Pipeliner, m *rdb.Merge) {
			m.ZAdd(q.lease, redis.Z{Score: float64(until), Member: intent})
		})
		if err != nil {
			s.permits.kept(t.ProjectID, ask, 0, now)
			return fmt.Errorf("submit task: %w", err)
		}
		qkeys, qargs = append(qkeys, q.lease), append(qargs, intent, until)
		// The record with its index entries (entries that land without
		// their record, the node dying between the two parts, are taken
		// out by a listing once past youngEntry), then the task queued.
		var rec *redis.Cmd
		err = s.shared.PipelinedMerge(ctx, func(p redis.Pipeliner, m *rdb.Merge) {
			rec = recordScript.Eval(ctx, p, keys, args...)
			s.indexNew(m, t, StatusPending, now)
		})
		err = s.indexing(err)
		n := int64(1)
		if err == nil { // else rec may never have been filled in (the call gave up)
			n, err = rec.Int64()
		}
		if err == nil && n == 0 {
			err = errors.New("the channel was withdrawn") // the same submission, sent after its take-back
		}
		if err != nil {
			s.permits.kept(t.ProjectID, ask, 0, now)
			if s.withdraw(context.WithoutCancel(ctx), t, err, cluster, until) {
				return fmt.Errorf("submit task: %w (%w)", err, ErrWithdrawn)
			}
			return fmt.Errorf("submit task: %w", err)
		}
	}
	var enq *redis.Cmd
	// Which index expiries the submit script sets: noted as set once it
	// has queued the task (it sets them only then).
	expire := make([]byte, len(ikeys))
	// With a worker free here, the submit script may hand the task to this
	// node at once (take, submit.lua), sparing it a claim's round trip.
	take := !cluster && s.reserve()
	var until int64 // the take's lease deadline (0: no take asked)
	if take {
		until = now.Add(s.o.Lease).UnixMilli()
	}
	var st *started
	err = s.shared.PipelinedMerge(ctx, func(p redis.Pipeliner, m *rdb.Merge) {
		if cluster {
			enq = enqueueScript.Eval(ctx, p, qkeys, qargs...)
			return
		}
		for i, k := range ikeys {
			expire[i] = '0'
			if alwaysExpired(k) || s.expiries.owed(k, now) {
				expire[i] = '1'
			}
		}
		stamp, entry := "", []byte(nil)
		if take {
			stamp, entry, _ = s.startEntries(now)
		}
		sargs := append(qargs, createdMS(t.ChannelID, now), t.ChannelID, max(1, int64(s.o.Retention/time.Second)), string(expire), until, stamp, entry)
		enq = m.Call(ctx, submitScript, slices.Concat(qkeys, keys, []string{q.lease}, ikeys), append(sargs, args...)...)
		s.trim(m, now, ikeys...)
	})
	if err == nil {
		st, err = s.enqueued(enq, t.ProjectID, ask, now)
	} else {
		s.permits.kept(t.ProjectID, ask, 0, now)
	}
	switch {
	case st != nil: // taken: it runs here, in the slot reserved for it
		s.runTaken(t, st)
	case take && (err == nil || apperr.As(err) != nil): // not taken: something else was ready, or refused
		s.unreserve()
	}
	if err == nil {
		for i, k := range ikeys {
			if expire[i] == '1' && !alwaysExpired(k) {
				s.expiries.set(k, now, s.o.Retention)
			}
		}
	}
	if err != nil {
		took := until // a take's deadline on one Redis; the intent's on a Cluster
		if cluster {
			took = intentUntil
		}
		gone := s.withdraw(context.WithoutCancel(ctx), t, err, cluster, took)
		switch {
		case apperr.As(err) != nil && !gone: // kept for a repeat of its key, and queued (withdraw): accepted
			s.m.submitted.Inc()
			return nil
		case apperr.As(err) != nil:
			return err
		case gone:
			if take {
				s.unreserve()
			}
			return fmt.Errorf("submit task: %w (%w)", err, ErrWithdrawn)
		}
		if take { // the outcome is unknown: Redis will tell, once it answers
			go s.settleTake(t, until)
		}
		return fmt.Errorf("submit task: %w", err)
	}
	s.m.submitted.Inc()
	if st == nil {
		s.poke()
	}
	return nil
}

// runTaken runs task t, which its submission took (submit.lua), started
// st, in the worker slot reserved for it.
func (s *Service) runTaken(t *Task, st *started) {
	s.track(t.ChannelID, lease{0, leaseMember(t.ProjectID, t.ChannelID)})
	s.launch(t.ChannelID, st)
}

// settleTake settles a submission that asked to take its task under lease
// deadline until and whose outcome is unknown (its answer lost, and taking
// it back failed too), holding the slot reserved for it: it asks Redis
// (settletake.lua), again until Redis answers (and while it answers that
// it cannot serve now: rdb.Unavailable), as a lost claim is sent again.
// If the take ran and its lease is untouched, the task is leased again
// (until a deadline one lease past the take's) and runs here at once,
// rather than after its lease; if there is no record, the channel is
// marked withdrawn, so that a submission Redis runs later writes nothing;
// else the record runs as any other. It gives up when the running tasks
// are cancelled (Shutdown): a take that ran is then reclaimed when its
// lease runs out.
func (s *Service) settleTake(t *Task, until int64) {
	keys := []string{s.chKey(t.ChannelID), s.wKey(t.ChannelID), s.q.of(t.ChannelID).lease}
	renewed := until + s.o.Lease.Milliseconds() // the same on every call: one that ran, its answer lost, is known by it
	for pause := 50 * time.Millisecond; ; pause = min(2*pause, time.Second) {
		select {
		case <-s.runCtx.Done():
			s.unreserve()
			return
		case <-time.After(pause):
		}
		now := s.o.Now()
		stamp, entry, _ := s.startEntries(now)
		out, err := settleTakeScript.Run(s.runCtx, s.rdb, keys, leaseMember(t.ProjectID, t.ChannelID), until,
			now.UnixMilli(), renewed, stamp, entry, int64(withdrawnTTL/time.Second)).StringSlice()
		var reply redis.Error
		switch {
		case err != nil && (!errors.As(err, &reply) || rdb.Unavailable(err)): // no answer, or not now: ask again
			continue
		case err == nil && len(out) > 0:
			s.runTaken(t, &started{out: out})
			return
		case err != nil:
			s.o.Log.Error().Err(err).Str("channel_id", t.ChannelID).Msg("settle a take whose outcome was unknown")
		}
		s.unreserve()
		return
	}
}

// withdraw takes back submission t, not queued (err): its record must not
// linger as a request that will never run, nor its index entries. Unless
// a worker has started it: then Redis ran the submission after this node
// stopped waiting, the task was accepted after all, and its record,
// indexes and webhooks stand.
//
// On one Redis the record and the entries stand or go together: the
// submit script writes both (nothing, if it refused), and unrecord.lua
// takes both out. On a Cluster the record and the entries were written
// first, in one round trip (or it failed: then the enqueue was not sent,
// and the intent runs out: its claim finds no record), and the task queued
// in the next. A refusal is the enqueue script's answer: nothing was
// queued, and the index writes, sent before it, have run, so they go at
// once. (A node that dies before it takes back a refused Cluster
// submission leaves its record pending until the retention: the task was
// refused, so it must not run.) Otherwise Redis may yet run the
// submission (an answer lost, or a round trip still waiting to be sent):
// its entries are taken back later, and only if no record stands then
// (unindexLater). It reports whether the task will not run (ErrWithdrawn):
// refused, or taken back before any worker started it (its record taken
// out, or not there yet and the channel marked withdrawn: a submission
// Redis runs later writes nothing).
//
// took is the lease deadline under which the submission asked to take its
// task (0: it did not): a task it took and nobody has run yet is taken
// back like a pending one (unrecord.lua). On a Cluster it is the
// deadline of the submission's intent (queueKept).
func (s *Service) withdraw(ctx context.Context, t *Task, err error, cluster bool, took int64) (gone bool) {
	keys := []string{s.chKey(t.ChannelID), s.wKey(t.ChannelID)}
	refused := apperr.As(err) != nil
	ttl := int64(withdrawnTTL / time.Second)
	if refused { // its script ran: nothing of it is still to come
		ttl = 0
	}
	if !cluster {
		ikeys := s.newKeys(t, StatusPending)
		s.expiries.forget(ikeys...) // not written, or emptied: their next write sets an expiry
		if refused {
			return true
		}
		keys, args := append(keys, ikeys...), []any{ttl, t.ChannelID}
		if took != 0 {
			keys, args = append(keys, s.q.of(t.ChannelID).lease), append(args, leaseMember(t.ProjectID, t.ChannelID), took)
		}
		removed, err := unrecordScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			// Redis may have run the submission: then its task runs,
			// with its record and entries, though its answer was an error.
			s.o.Log.Warn().Err(err).Str("channel_id", t.ChannelID).Msg("submit: take back a submission whose outcome is unknown; it runs if Redis queued it")
		}
		return err == nil && (removed == unrecordRemoved || removed == unrecordAbsent)
	}
	removed, uerr := unrecordScript.Run(ctx, s.rdb, keys, ttl).Int()
	u := unindexed{ref: t.logRef(), st: StatusPending}
	switch {
	case uerr == nil && removed == unrecordKept:
		// A repeat of its Idempotency-Key was answered with it
		// (idemsettle.lua): it must run, though its enqueue may have
		// refused it, been lost, or be on its way.
		s.queueKept(ctx, t, took)
		return false
	case refused && uerr != nil: // nothing of it is in flight: taken back once Redis answers
		go s.takeBackRefused(t, keys, ttl, took)
		return true
	case refused:
		s.unindex(ctx, t, StatusPending)
		return true
	case uerr != nil: // Redis is slow or gone: noted without holding up the answer
		go s.unindexLater(ctx, u)
	case removed != unrecordStarted:
		s.unindexLater(ctx, u)
	}
	return uerr == nil && removed != unrecordStarted
}

// takeBackRefused takes back a refused Cluster submission whose first
// take-back failed, again until Redis answers (persist): its record goes,
// with its index entries, unless a repeat of its Idempotency-Key was
// answered with it meanwhile (queueKept).
func (s *Service) takeBackRefused(t *Task, keys []string, ttl, intent int64) {
	var removed int
	err := s.persist(s.runCtx, "take back a refused submission", func() (err error) {
		removed, err = unrecordScript.Run(s.runCtx, s.rdb, keys, ttl).Int()
		return err
	})
	switch {
	case err != nil:
		s.o.Log.Error().Err(err).Str("channel_id", t.ChannelID).Msg("submit: take back a refused submission; its record stays pending")
	case removed == unrecordKept:
		s.queueKept(s.runCtx, t, intent)
	default:
		s.unindex(s.runCtx, t, StatusPending)
	}
}

// unrecord.lua's replies.
const (
	unrecordStarted = 0 // kept: a worker started it
	unrecordRemoved = 1
	unrecordAbsent  = 2 // not there: marked withdrawn
	unrecordKept    = 3 // kept for a repeat of its Idempotency-Key, not started
)

// queueKept makes sure the task of a Cluster submission kept for a repeat
// of its Idempotency-Key runs: its intent (deadline intent) runs out now,
// or, unless the task is leased or queued, goes back already run out, so
// the reclaimer queues it (queuekept.lua). Should that fail, it is tried
// again in the background until Redis answers (persist): the submission's
// answer does not wait for it.
func (s *Service) queueKept(ctx context.Context, t *Task, intent int64) {
	q := s.q.of(t.ChannelID)
	queue := func(ctx context.Context) error {
		return queueKeptScript.Run(ctx, s.rdb, []string{q.lease, q.queue(t.ProjectID)},
			leaseMember(t.ProjectID, t.ChannelID), t.ChannelID, s.o.Now().UnixMilli(), intent).Err()
	}
	if queue(ctx) == nil {
		return
	}
	go func() {
		if err := s.persist(s.runCtx, "queue a kept submission", func() error { return queue(s.runCtx) }); err != nil {
			s.o.Log.Error().Err(err).Str("channel_id", t.ChannelID).Msg("submit: queue a submission a repeat was answered with; it stays pending")
		}
	}()
}

// ErrWithdrawn marks a failed submission (one whose Redis round trip
// failed) that was taken back: its record is gone, or will never be
// written, so its task will not run even if it was queued (a claim drops
// a task without a record). A take-back that failed too leaves the
// outcome unknown: Redis may yet run the submission.
var ErrWithdrawn = errors.New("the submission was taken back; its task will not run")

// enqueued reads the enqueue (or submit) script's answer: the task's start
// when the submit script took it for this node (else nil), or why it was
// refused. It reports to the node's permits what the check, asking for ask
// tasks of project pid's rate at now, took.
func (s *Service) enqueued(c *redis.Cmd, pid string, ask int, now time.Time) (*started, error) {
	out, err := c.Slice()
	if err != nil {
		s.permits.kept(pid, ask, 0, now)
		return nil, err
	}
	r, st, err := decodeSubmit(out)
	s.permits.kept(pid, ask, int(r.taken), now)
	if err != nil {
		return nil, err
	}
	switch r.refused {
	case enqueueQueueFull:
		s.m.rejected.Inc()
		return nil, ErrQueueFull
	case enqueueProjectFull:
		s.m.rejected.Inc()
		return nil, ErrProjectQueueFull
	case enqueueRateLimited:
		s.m.limited.Inc()
		return nil, rateLimited(int64(s.o.ProjectRate), r.waitMS)
	}
	return st, nil
}

// pipelined runs fill's commands in one round trip, scripts by hash; only
// the scripts a restarted or failed-over Redis answered NOSCRIPT to (they
// did not run) are sent again, by source (rdb.Pipelined), so nothing is
// applied twice.
func (s *Service) pipelined(ctx context.Context, fill func(redis.Pipeliner)) error {
	return rdb.Pipelined(ctx, s.rdb, fill)
}

func (s *Service) requestEntry(t *Task, now time.Time) Entry {
	return Entry{At: wire.Stamp(now), Type: "request", Workflow: t.Workflow.Name, Node: s.o.Node,
		WebhookIDs: t.endpoints(), Events: t.Events, DeliveryMethod: t.DeliveryMethod}
}

// RunSync records a channel and runs it on the calling goroutine, returning
// the final message. The record is written while the provider works (the
// completion waits for both), and the side effects run after the answer;
// the task is leased like a queued one throughout, so if this node dies
// mid-run another node finishes it (and delivers its webhooks). With
// Options.WaitReplicas the record and the completion wait for replicas
// before the answer; the side effects after it do not.
func (s *Service) RunSync(ctx context.Context, t *Task) (json.RawMessage, error) {
	// Sync runs hold a provider call like a worker does: bounded the same.
	select {
	case s.syncSlots <- struct{}{}:
		defer func() { <-s.syncSlots }()
	default:
		s.m.rejected.Inc()
		return nil, ErrQueueFull
	}
	if err := s.admit(ctx, t.ProjectID); err != nil {
		return nil, err
	}
	now := s.o.Now()
	args, err := s.recordArgs(t, StatusGenerating, now, s.requestEntry(t, now),
		Entry{At: wire.Stamp(now), Type: "generating", Node: s.o.Node})
	if err != nil {
		return nil, err
	}
	l := lease{s.q.parts.Of(t.ChannelID), leaseMember(t.ProjectID, t.ChannelID)}
	s.track(t.ChannelID, l)
	wctx, replicated := s.replicated(ctx, "sync") // the writes the answer stands for
	recorded := make(chan error, 1)
	go func() {
		ctx := wctx
		// The lease, then the record with its entries (a round trip each on
		// a Cluster, where they live in different slots; hidden behind the
		// provider's answer): a record never stands without its lease, so
		// if this node dies another node finishes the run (a lease whose
		// record never lands is dropped by the claim that finds none).
		var rec *redis.Cmd
		err := s.indexing(rdb.InOrder(ctx, s.rdb, func(p redis.Pipeliner, _ *rdb.Merge) {
			p.ZAdd(ctx, s.q.keys[l.part].lease, redis.Z{Score: float64(now.Add(s.o.Lease).UnixMilli()), Member: l.member})
		}, func(p redis.Pipeliner, m *rdb.Merge) {
			rec = recordScript.Eval(ctx, p, []string{s.chKey(t.ChannelID), s.wKey(t.ChannelID)}, args...)
			s.indexNew(m, t, StatusGenerating, now)
		}))
		if err == nil && rec.Val() == int64(0) { // marked withdrawn (a repeat of its key found no record: idemsettle.lua)
			err = fmt.Errorf("the channel was withdrawn: %w (%w)", ErrInProgress, ErrWithdrawn) // a repeat of its key runs
		}
		recorded <- err
	}()
	res, runErr := s.generate(ctx, t, nil, s.o.SyncWait)
	if err := <-recorded; err != nil {
		s.untrack(t.ChannelID)
		s.takeBackSync(context.WithoutCancel(ctx), t, l)
		return nil, fmt.Errorf("record channel: %w", err)
	}
	s.m.submitted.Inc()
	if ctx.Err() != nil && res.Data == nil && runErr != nil {
		s.untrack(t.ChannelID) // cut short: the lease runs out and another node runs it
		return nil, ctx.Err()
	}
	// The provider answered: keep the answer even if the client left
	// (until this node stops).
	cctx, cancel := context.WithCancel(context.WithoutCancel(wctx))
	defer context.AfterFunc(s.runCtx, cancel)()
	defer cancel()
	o, err := s.conclude(cctx, t, res, runErr)
	replicated(err)
	if err != nil {
		s.untrack(t.ChannelID)
		return nil, err
	}
	msg := o.msg
	finish := func() {
		defer s.untrack(t.ChannelID)
		if err := s.finish(s.runCtx, o); err != nil && s.runCtx.Err() == nil {
			s.o.Log.Error().Err(err).Str("channel_id", t.ChannelID).Msg("finish task")
		}
	}
	s.mu.Lock()
	if s.closing { // Shutdown is waiting for tasks: do not start one behind its back
		s.mu.Unlock()
		finish()
		return msg, nil
	}
	s.tasks.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.tasks.Done()
		finish()
	}()
	return msg, nil
}

// takeBackSync takes back the record of a RunSync whose round trip
// failed: the record may have landed, or land yet. The channel is marked
// withdrawn and its record removed, so that a record script Redis runs
// later writes nothing (record_main.lua), and then its lease goes. If
// that fails the lease is left to run out: the node that claims the task
// then runs it if its record stands, and drops it if not. A record a
// repeat of its Idempotency-Key was answered with (kept, unrecordsync.lua)
// stays, with its lease, and runs when the lease runs out. Index entries
// that land late are taken back if no record stands then (unindexLater).
func (s *Service) takeBackSync(ctx context.Context, t *Task, l lease) {
	n, err := unrecordSyncScript.Run(ctx, s.rdb, []string{s.chKey(t.ChannelID), s.wKey(t.ChannelID), s.tlKey(t.ChannelID)},
		int64(withdrawnTTL/time.Second)).Int()
	if err == nil && n == 0 {
		return
	}
	if err == nil {
		err = s.rdb.ZRem(ctx, s.q.keys[l.part].lease, l.member).Err()
	}
	if err != nil {
		s.o.Log.Warn().Err(err).Str("channel_id", t.ChannelID).Msg("sync run: take back a record whose outcome is unknown; its lease runs out, and it runs if it was recorded")
	}
	s.unindexLater(ctx, unindexed{ref: t.logRef(), st: StatusGenerating})
}

// execute runs a task that this node holds, completes it and acks it.
// onWait (nil: none) is called if the run has to wait for a provider.
func (s *Service) execute(ctx context.Context, t *Task, onWait func(ai.Wait)) (json.RawMessage, error) {
	res, runErr := s.generate(ctx, t, onWait, 0)
	if ctx.Err() != nil {
		// Shutting down: the lease stays and the task runs again
		// elsewhere rather than failing for a reason of ours.
		return nil, ctx.Err()
	}
	o, err := s.conclude(ctx, t, res, runErr)
	if err != nil {
		return nil, err
	}
	if err := s.finish(ctx, o); err != nil {
		return nil, err
	}
	return o.msg, nil
}

// generate calls the providers. onWait is told when the run first waits
// for a provider; maxWait bounds the waiting (0: none).
func (s *Service) generate(ctx context.Context, t *Task, onWait func(ai.Wait), maxWait time.Duration) (ai.Result, error) {
	s.m.busy.Inc()
	defer s.m.busy.Dec()
	st := s.newStreamer(ctx, t)
	req := ai.Request{
		MaxWait: maxWait,
		OnWait: func(w ai.Wait) {
			s.noteWait(ctx, t.ChannelID, w)
			if onWait != nil {
				onWait(w)
			}
		},
		Chain:        append([]ai.Target{{Provider: t.Workflow.Provider, Model: t.Workflow.Model}}, t.Workflow.Fallbacks...),
		SystemPrompt: t.Workflow.SystemPrompt,
		Messages:     t.Messages,
		Schema:       t.Schema,
		SchemaName:   t.SchemaName,
		Mock:         t.Workflow.Mock,
	}
	if st != nil {
		req.OnDelta = st.delta
	}
	res, err := s.runner.Run(ctx, req)
	if st != nil {
		// The final message comes after the stream's last chunk.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), streamGiveUp+5*time.Second)
		st.close(cctx, ctx.Err() != nil)
		cancel()
	}
	s.m.countAttempts(res.Attempts)
	return res, err
}

// outcome is what a finished generation leaves to do: publish its room
// message(s), send its webhook and, for an event-driven channel, set its
// callback deadline.
type outcome struct {
	pid, cid        string
	webhookIDs      []string // only these endpoints (the request chose them), else every subscribed one
	events          []string // only these event types (the request's events), else every one
	workflow, event string   // the workflow's name and event name
	playground      bool
	status          Status
	msg             json.RawMessage // the room's message: the final one, or ai_generated
	hook            json.RawMessage // the task.ai_generated body (event-driven)
	deadline        int64           // the callback deadline, unix ms (event-driven)
	sim             json.RawMessage // playground: the "simulating backend callback" message
	beyond          bool            // a callback or the deadline has settled the channel since
	lone            bool            // msg is the room's only message, its seq 1 in the record (this run's completion wrote it)
	redone          bool            // an earlier run's outcome: its side effects done again (see indexMove)
	enqueued        bool            // its task.completed deliveries stand, written with the completion or by the run that won (completedHook)
	at              time.Time       // when it was read back from Redis: its channel was queued to move by then
}

// outcomeOf is what is left to do for t's stored outcome (as the complete
// and start scripts return it, results.go).
func outcomeOf(t *Task, so storedOutcome) outcome {
	o := outcome{pid: t.ProjectID, cid: t.ChannelID, webhookIDs: t.endpoints(), events: t.Events, playground: t.Playground,
		workflow: t.Workflow.Name, event: t.Workflow.EventName,
		status: Status(so.status), msg: json.RawMessage(so.msg), beyond: so.beyond != "", redone: true, at: time.Now()}
	if so.hook != "" {
		o.hook = json.RawMessage(so.hook)
	}
	o.deadline, _ = strconv.ParseInt(so.deadline, 10, 64)
	if so.sim != "" {
		o.sim = json.RawMessage(so.sim)
	}
	return o
}

// conclude records the outcome (once: the first completion wins) and
// returns the winning one.
func (s *Service) conclude(ctx context.Context, t *Task, res ai.Result, runErr error) (outcome, error) {
	now := s.o.Now()
	at := wire.Stamp(now)
	status, msg, err := completedMessage(t, res, runErr, at)
	if err != nil {
		// The model's output cannot be sent (e.g. nested too deeply for
		// receivers to re-serialise): fail the channel rather than retry.
		res.Data = nil
		runErr = fmt.Errorf("the output could not be encoded: %v", err)
		if status, msg, err = completedMessage(t, res, runErr, at); err != nil {
			return outcome{}, fmt.Errorf("encode message: %w", err)
		}
	}
	result, _ := json.Marshal(struct {
		Data     json.RawMessage `json:"data,omitempty"`
		Provider string          `json:"provider,omitempty"`
		Model    string          `json:"model,omitempty"`
		Tokens   ai.Tokens       `json:"tokens"`
		Duration int64           `json:"duration_ms"`
		Attempts []ai.Attempt    `json:"attempts"`
	}{res.Data, res.Provider, res.Model, res.Tokens, res.DurationMS, res.Attempts})
	final := Entry{At: at, Type: "completed", Node: s.o.Node}
	var fields []any
	if status == StatusSuccess && t.Workflow.EventName != "" {
		g, err := s.generated(t, res, now)
		if err != nil {
			return outcome{}, err
		}
		status, msg, fields, final = StatusAIGenerated, g.msg, g.fields, g.entry
	}
	var attempts []any
	for _, a := range res.Attempts {
		d, ok := a.DurationMS, a.Success
		e := Entry{At: at, Type: "ai_attempt", Provider: a.Provider, Model: a.Model,
			DurationMS: &d, Success: &ok, Error: a.Error, StatusCode: a.Status, Skipped: a.Skipped}
		if a.WaitMS > 0 {
			e.WaitMS = &a.WaitMS
		}
		attempts = append(attempts, wire.MustJSON(e))
	}
	if status == StatusError {
		final.Type = "failed"
		if runErr != nil {
			final.Error = errorText(runErr)
		}
	}
	entries := []any{wire.MustJSON(final)}
	if status != StatusAIGenerated && s.o.Publisher != nil && len(msg) > 0 {
		// The room gets the final message with the lease release (ackPipe),
		// and its broadcast entry is written here, with the completion that
		// decides it, once: a redo after a crash publishes again (the room
		// drops the repeat) but does not log again. The marker keeps
		// broadcast.lua from logging it a second time.
		fields = append(fields, "bc:"+string(status), 1)
		entries = append(entries, wire.MustJSON(Entry{At: at, Type: "broadcast", Status: status, Node: s.o.Node}))
	}
	// A standard task's answer, not streamed, is its room's only message:
	// its seq (1) goes into the record here, where a join reads it, and
	// the room gets a bare publish (LonePublisher) instead of the script
	// that reads the history and writes the record.
	_, lonePub := s.o.Publisher.(LonePublisher)
	lone := lonePub && status.final() && t.Workflow.EventName == "" && !t.Stream && len(msg) > 0
	if lone {
		fields = append(fields, "room_seq", 1)
	}
	args := []any{string(status), result, msg, at, len(fields) / 2}
	args = append(args, fields...)
	args = append(args, attempts...)
	args = append(args, entries...)
	var out []any
	keys := []string{s.chKey(t.ChannelID), s.tlKey(t.ChannelID)}
	hook := s.completedHook(t, status, msg)
	enqueued := false
	err = s.persist(ctx, "complete", func() error {
		var c *redis.Cmd
		var q *dispatch.Enqueueing
		if hook != nil {
			// nil (an error): left to sideEffects (Enqueue).
			q, _ = s.o.Dispatcher.Prepare(ctx, *hook)
		}
		err := s.shared.PipelinedMerge(ctx, func(p redis.Pipeliner, m *rdb.Merge) {
			c = completeScript.Eval(ctx, p, keys, args...)
			if q != nil { // after the completion, guarded by the message it wrote
				q.In(ctx, p, keys[0])
			}
			if status.final() { // settled with its lease release (ackPipe), which may be cut short
				s.queueFoldIn(m, t.ChannelID)
			}
		})
		if q != nil {
			guarded, qerr := q.Done(err)
			enqueued = qerr == nil && !guarded
		}
		if err != nil {
			return err
		}
		out, err = c.Slice()
		return err
	})
	if err != nil {
		return outcome{}, fmt.Errorf("complete channel: %w", err)
	}
	r := decodeComplete(out)
	if r.expired {
		s.ack(ctx, t.ProjectID, t.ChannelID)
		return outcome{}, fmt.Errorf("%w: %w", errGone, apperr.NotFoundf("channel %s expired", t.ChannelID))
	}
	o := outcomeOf(t, r.outcome)
	o.enqueued = enqueued
	if r.won {
		s.m.completed.WithLabelValues(string(status)).Inc()
		o.lone, o.redone = lone, false
	}
	return o, nil
}

// completedHook is the task.completed event of t's outcome (status, msg)
// when it goes with the completion's own round trip (nil: sideEffects
// enqueues it, if anything): on one Redis, where a script may guard the
// deliveries' keys by the record's (a Cluster puts them in other slots).
func (s *Service) completedHook(t *Task, status Status, msg json.RawMessage) *dispatch.Event {
	if s.o.Dispatcher == nil || status == StatusAIGenerated || len(msg) == 0 || t.Playground ||
		!sends(t.Events, "task.completed") || rdb.IsCluster(s.rdb) {
		return nil
	}
	return &dispatch.Event{Type: "task.completed", ProjectID: t.ProjectID, ChannelID: t.ChannelID,
		WebhookIDs: t.endpoints(), Body: msg}
}

// generation is what an event-driven channel stores once generated.
type generation struct {
	msg    json.RawMessage // the room's ai_generated message
	fields []any           // hash fields: deadline, hook or sim, due_status, due_msg
	entry  Entry           // its timeline entry
}

// generated prepares an event-driven channel's wait for its callback: the
// room's ai_generated message, the task.ai_generated body (the playground
// sends none, and announces its simulated callback instead), the deadline,
// and the message the deadline publishes if it comes first (the timeout
// error, or the playground's simulated completion). Everything is built
// now, so the deadline settles the channel in one script.
func (s *Service) generated(t *Task, res ai.Result, now time.Time) (generation, error) {
	at := wire.Stamp(now)
	wait := s.o.CallbackTimeout
	if t.Workflow.CallbackTimeoutSeconds > 0 {
		wait = time.Duration(t.Workflow.CallbackTimeoutSeconds) * time.Second
	}
	if t.Playground {
		wait = s.o.PlaygroundDelay
	}
	deadline := now.Add(wait)
	due := wire.Stamp(deadline)
	cust := orEmpty(t.CustomerData)
	ev := t.Workflow.EventName
	meta := hookMeta{WorkflowID: t.Workflow.ID, WorkflowName: t.Workflow.Name, ProjectID: t.ProjectID,
		Provider: res.Provider, Model: res.Model}
	g := generation{entry: Entry{At: at, Type: "ai_generated", Deadline: due, Simulated: t.Playground, Node: s.o.Node}}
	var err error
	if g.msg, err = encode(roomGenerated{Status: StatusAIGenerated, ChannelID: t.ChannelID, EventName: ev, Meta: meta, Timestamp: at}); err != nil {
		return g, fmt.Errorf("encode message: %w", err)
	}
	g.fields = []any{"deadline", deadline.UnixMilli()}
	var dueStatus Status
	var dueMsg []byte
	if t.Playground {
		sim, err := encode(roomSimulating{Status: StatusSimulating, ChannelID: t.ChannelID, EventName: ev,
			Message: "Simulating backend callback", Timestamp: at})
		if err != nil {
			return g, fmt.Errorf("encode message: %w", err)
		}
		dueStatus = StatusCompleted
		dueMsg, err = encode(roomCompleted{Status: StatusCompleted, ChannelID: t.ChannelID, EventName: ev,
			Data: simulatedData(res.Data, due), AIResponse: aiResponse{orNull(res.Data)}, CustomerData: cust,
			TaskID: json.RawMessage(`"playground"`), CallbackMetadata: json.RawMessage(`{"simulated":true}`),
			Simulated: true, Timestamp: due})
		if err != nil {
			return g, fmt.Errorf("encode message: %w", err)
		}
		g.fields = append(g.fields, "sim", sim)
	} else {
		hook, err := encode(aiGenerated{Type: "task.ai_generated", Event: ev, ChannelID: t.ChannelID,
			AIResponse: aiResponse{orNull(res.Data)}, CallbackURL: s.callbackURL(t.ChannelID), CallbackRequired: true,
			Meta: meta, CustomerData: cust, Timestamp: at})
		if err != nil {
			return g, fmt.Errorf("encode webhook: %w", err)
		}
		dueStatus = StatusError
		dueMsg, err = encode(roomFailed{Status: StatusError, ChannelID: t.ChannelID, EventName: ev,
			Error:        ErrorBody{Message: fmt.Sprintf("no callback arrived within %s", wait), Code: CodeCallbackTimeout},
			CustomerData: cust, Timestamp: due})
		if err != nil {
			return g, fmt.Errorf("encode message: %w", err)
		}
		g.fields = append(g.fields, "hook", hook)
	}
	parts, err := callbackParts(ev, res.Data, cust)
	if err != nil {
		return g, fmt.Errorf("encode message: %w", err)
	}
	g.fields = append(g.fields, "due_status", string(dueStatus), "due_msg", dueMsg, "cb_parts", parts)
	return g, nil
}

// callbackURL is where a backend posts a channel's callback.
func (s *Service) callbackURL(cid string) string {
	return strings.TrimSuffix(s.o.PublicURL, "/") + "/api/v1/callback/" + cid
}

func errorText(err error) string {
	if e := apperr.As(err); e != nil {
		return e.Message
	}
	return err.Error()
}

// finish runs the side effects of a generation's outcome, then releases
// the lease, retrying through a Redis blip. The side effects are
// idempotent, so a reclaimed task that had already completed can run them
// again, and so can a retry.
func (s *Service) finish(ctx context.Context, o outcome) error {
	return s.persist(ctx, "finish", func() error { return s.sideEffects(ctx, o) })
}

func (s *Service) sideEffects(ctx context.Context, o outcome) error {
	if o.beyond || len(o.msg) == 0 {
		// A callback or the deadline settled the channel, and published.
		s.ack(ctx, o.pid, o.cid)
		return nil
	}
	if o.status == StatusAIGenerated {
		return s.awaitCallback(ctx, o)
	}
	if s.o.Dispatcher != nil && !o.playground && sends(o.events, "task.completed") && !o.enqueued {
		if err := s.o.Dispatcher.Enqueue(ctx, dispatch.Event{Type: "task.completed", ProjectID: o.pid, ChannelID: o.cid,
			WebhookIDs: o.webhookIDs, Body: o.msg}); err != nil {
			return fmt.Errorf("enqueue webhooks: %w", err) // lease kept: retried after reclaim
		}
	}
	// Published, indexed and released together, in order, by the batcher.
	s.ackWith(ctx, ackItem{cid: o.cid, pid: o.pid, msg: o.msg, lone: o.lone, status: o.status, workflow: o.workflow, event: o.event,
		redone: o.redone, at: o.at})
	return nil
}

// ack releases a finished task's lease. Acks are batched: one ZREM carries
// every ack that arrived while the previous one was in flight, so under
// load a task costs a fraction of a round trip here. A lost ack only means
// the lease expires and the task is finished again, which is harmless.
func (s *Service) ack(ctx context.Context, pid, cid string) {
	s.ackWith(ctx, ackItem{cid: cid, pid: pid})
}

// ackItem is a lease release, optionally preceded by a room publish and
// the move of the channel to its final status's log index.
type ackItem struct {
	cid, pid string
	lease    lease           // where the task is leased, set by ackWith
	msg      json.RawMessage // the room's message, when set
	lone     bool            // msg is the room's only one (outcome.lone)
	status   Status          // the final status, when set
	workflow string          // the channel's workflow and event name, for the log indexes
	event    string
	redone   bool      // an earlier run's outcome (outcome.redone)
	at       time.Time // when its outcome was read back (outcome.at), else handed over
}

func (s *Service) ackWith(ctx context.Context, it ackItem) {
	it.lease = s.leaseOf(it.pid, it.cid)
	if it.at.IsZero() {
		it.at = time.Now()
	}
	toBatcher(s, s.acks, it, func(it ackItem) { s.sendAcks(context.WithoutCancel(ctx), []ackItem{it}) })
}

// newShared is the Service's shared pipeline over c, at most four of its
// round trips in flight at once (a function of its own: New's parameter
// hides the rdb package).
func newShared(c redis.UniversalClient) *rdb.Shared { return rdb.NewShared(c, 4) }

// toBatcher hands v to a batcher (ch: s.acks or s.settles); if Shutdown
// has closed the batchers, or that one is behind (its channel is full),
// it runs orNow(v) instead, before closeAcks can return.
func toBatcher[T any](s *Service, ch chan<- T, v T, orNow func(T)) {
	s.ackMu.RLock()
	defer s.ackMu.RUnlock()
	if !s.acksClosed {
		select {
		case ch <- v:
			return
		default:
		}
	}
	orNow(v)
}

// sendAcks publishes what must be published (with its timeline entries),
// then releases the leases, in one round trip. If it fails, the leases
// expire and the tasks are finished again (publishing is idempotent),
// which is harmless.
func (s *Service) sendAcks(ctx context.Context, items []ackItem) {
	ids := make(map[int][]any)
	for _, it := range items {
		ids[it.lease.part] = append(ids[it.lease.part], it.lease.member)
	}
	// Retried through a Redis blip for up to a lease: a lost ack costs a
	// lease's wait for the room's final message and the log index.
	ctx, cancel := context.WithTimeout(ctx, s.o.Lease)
	defer cancel()
	b := broadcasts{s: s}
	err := s.persist(ctx, "ack", func() error { return s.ackPipe(ctx, &b, items, ids) })
	b.check()
	if err != nil {
		s.o.Log.Warn().Err(err).Int("tasks", len(items)).Msg("publish and ack tasks")
	}
}

func (s *Service) ackPipe(ctx context.Context, b *broadcasts, items []ackItem, ids map[int][]any) error {
	var moved []ackItem
	// In order (a step per round trip on a Cluster): the leases go only
	// once what a redo would do again has landed. The live fields go with
	// them (after them on one Redis): a redo that finds the record
	// compacted only acks, which is all that is left to do by then.
	err := s.indexing(rdb.InOrder(ctx, s.rdb, func(p redis.Pipeliner, m *rdb.Merge) {
		for _, it := range items {
			if it.lone {
				b.publishLone(ctx, p, it.pid, it.cid, it.msg)
			} else {
				b.publish(ctx, p, it.pid, it.cid, it.msg) // its entry was logged by complete.lua
			}
			if it.status != "" {
				ref := logRef{it.pid, it.cid, it.workflow, it.event}
				s.indexMove(m, ref, StatusGenerating, it.status)
				moved = append(moved, it)
			}
			if it.redone && it.status.final() {
				// Queued by conclude, but its completion's round trip may
				// have landed without the queueing (cut short on one Redis;
				// on a Cluster, its parts run side by side).
				s.queueFoldIn(m, it.cid)
			}
		}
	}, func(p redis.Pipeliner, _ *rdb.Merge) {
		for k, members := range ids {
			p.ZRem(ctx, s.q.keys[k].lease, members...)
		}
		for _, it := range items {
			if it.status.final() {
				s.compact(ctx, p, it.cid) // queued by conclude (or above)
			}
		}
	}))
	if err != nil {
		return err
	}
	var redone []indexed
	for _, it := range moved {
		if it.redone || s.late(it.at) {
			redone = append(redone, indexed{logRef{it.pid, it.cid, it.workflow, it.event}, it.status})
		}
	}
	return s.unindexGone(ctx, redone)
}

const ackBatch = 512

// late reports whether index writes handed over at at (an ack's, a
// settlement's) go out so late that their channel may have moved to the
// archive meanwhile, as a redo's may (see indexMove): more than a lease
// after, where the move comes a hot window (at least four leases) after.
// Such writes are looked at again once sent (unindexGone). A Redis so
// slow that its batches lag behind, or a node cut off from it while its
// side effects are retried, is what makes them late. at is this node's
// own clock (time.Now: monotonic), as it is a duration on one node.
func (s *Service) late(at time.Time) bool { return !at.IsZero() && time.Since(at) > s.o.Lease }

// ackLoop sends batched acks until acks is closed and drained.
func (s *Service) ackLoop() {
	defer close(s.acked)
	batch.Drain(s.acks, ackBatch, func(items []ackItem) { s.sendAcks(context.Background(), items) })
}

// closeAcks stops the batchers (acks, settlements) after they have sent
// what they hold; later ones go straight to Redis.
func (s *Service) closeAcks() {
	s.ackMu.Lock()
	if !s.acksClosed {
		s.acksClosed = true
		close(s.acks)
		close(s.settles)
	}
	s.ackMu.Unlock()
	<-s.acked
	<-s.settlesDone
	s.tidyLogged(context.Background(), s.tidying.close())
	s.shared.Close()
}

// Get returns a channel of the project; another project's channel is not
// found.
func (s *Service) Get(ctx context.Context, pid, cid string) (View, error) {
	v, _, err := s.get(ctx, pid, cid)
	return v, err
}

// get is Get, and the channel's folded document if it has been folded.
func (s *Service) get(ctx context.Context, pid, cid string) (View, *folded, error) {
	v, err := s.rdb.HMGet(ctx, s.chKey(cid), "project_id", "workflow", "event_name", "status", "created_at", "updated_at", "message", "metadata").Result()
	if err != nil {
		return View{}, nil, fmt.Errorf("get channel: %w", err)
	}
	owner, _ := v[0].(string)
	if owner == "" {
		if view, f, err := s.fromArchive(ctx, pid, cid); err != nil || view.ChannelID != "" {
			return view, f, err
		}
	}
	if owner == "" || owner != pid {
		return View{}, nil, apperr.NotFoundf("channel %s not found", cid)
	}
	str := func(i int) string { x, _ := v[i].(string); return x }
	view := View{ChannelID: cid, ProjectID: owner, Workflow: str(1), Status: Status(str(3)),
		CreatedAt: str(4), UpdatedAt: str(5), Message: json.RawMessage("null"), Metadata: json.RawMessage("null")}
	if ev := str(2); ev != "" {
		view.EventName = &ev
	}
	if m := str(6); m != "" {
		view.Message = json.RawMessage(m)
	}
	if m := str(7); m != "" {
		view.Metadata = json.RawMessage(m)
	}
	if str(6) != "" || !view.Status.final() {
		return view, nil, nil
	}
	f, err := s.unfold(ctx, cid)
	if err != nil || f == nil {
		return view, nil, err
	}
	if len(f.Message) > 0 {
		view.Message = f.Message
	}
	if len(f.Metadata) > 0 {
		view.Metadata = f.Metadata
	}
	return view, f, nil
}

// Timeline returns a channel's audit timeline, in order: its own entries
// and the dispatcher's log of its webhook deliveries, merged by time.
//
// A folded or archived channel's entries come from its document first,
// then from the lists (what was written after). A channel folded or
// archived while it was being read (its lists emptied after the record was
// read) is read again.
func (s *Service) Timeline(ctx context.Context, pid, cid string) (View, []json.RawMessage, error) {
	for try := 0; ; try++ {
		view, f, err := s.get(ctx, pid, cid)
		if err != nil {
			return View{}, nil, err
		}
		raw, err := s.timeline(ctx, cid)
		if err != nil {
			return View{}, nil, fmt.Errorf("timeline: %w", err)
		}
		var deliveries []json.RawMessage
		if s.o.Dispatcher != nil {
			if deliveries, err = s.o.Dispatcher.ChannelLog(ctx, cid); err != nil {
				return View{}, nil, fmt.Errorf("timeline: %w", err)
			}
		}
		if try < 2 && (f == nil || !f.archived) && s.movedAway(ctx, cid, f != nil) {
			continue
		}
		if f == nil {
			f = &folded{}
		}
		own := append(f.Timeline, raw...)
		if s.o.Dispatcher == nil {
			return view, own, nil
		}
		return view, mergeTimeline(own, append(f.Log, deliveries...)), nil
	}
}

// timeline reads the timeline entries a channel holds in Redis: its list
// (earlier versions', and an archived channel's late ones), then its
// record's field (tl.lua).
func (s *Service) timeline(ctx context.Context, cid string) ([]json.RawMessage, error) {
	var list *redis.StringSliceCmd
	var field *redis.StringCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		list, field = p.LRange(ctx, s.tlKey(cid), 0, -1), p.HGet(ctx, s.chKey(cid), "tl")
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	return timelineOf(list.Val(), field.Val()), nil
}

// timelineOf is a channel's timeline entries from its list and its
// record's field.
func timelineOf(list []string, field string) []json.RawMessage {
	out := raws(list)
	for e := range strings.SplitSeq(field, "\n") {
		if e != "" {
			out = append(out, json.RawMessage(e))
		}
	}
	return out
}

// movedAway reports whether a channel read from Redis (folded or not) has
// been folded or archived since.
func (s *Service) movedAway(ctx context.Context, cid string, folded bool) bool {
	var z, rec *redis.IntCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		z, rec = p.Exists(ctx, s.zKey(cid)), p.Exists(ctx, s.chKey(cid))
		return nil
	}); err != nil {
		return false
	}
	return (!folded && z.Val() == 1) || rec.Val() == 0
}

// noteWait puts on the timeline that a task waits for a provider (once a
// run: the attempts that follow say how long). It is only a note: a
// failure to write it changes nothing.
func (s *Service) noteWait(ctx context.Context, cid string, w ai.Wait) {
	s.m.waits.WithLabelValues(w.Provider, w.Reason).Inc()
	e := wire.MustJSON(Entry{At: wire.Stamp(s.o.Now()), Type: "waiting", Provider: w.Provider, Model: w.Model, Reason: w.Reason, Node: s.o.Node})
	_ = noteScript.Run(ctx, s.rdb, []string{s.chKey(cid), s.tlKey(cid)}, e).Err()
}

// abandon fails a task that cannot run, so it stops coming back.
func (s *Service) abandon(ctx context.Context, t *Task, why string) {
	o, err := s.conclude(ctx, t, ai.Result{}, errors.New(why))
	if err == nil {
		err = s.finish(ctx, o)
	}
	if err != nil && ctx.Err() == nil {
		s.o.Log.Error().Err(err).Str("channel_id", t.ChannelID).Msg("fail abandoned task")
	}
}
