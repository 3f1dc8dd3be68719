package dispatch

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/wire"
)

// Endpoint health. Every attempt updates its endpoint's health hash in
// the record script, so all nodes share one view of an endpoint:
//
//	closed  — deliveries go as usual (healthy, or degraded after recent
//	          failures);
//	open    — after BreakerThreshold consecutive failures, or a 429/503
//	          with Retry-After: deliveries wait without an attempt until
//	          open_until (their schedule position, tries and webhook-id
//	          are kept);
//	probing — open_until has passed: one delivery is attempted (the
//	          probe); the rest wait for its lease. Its success closes the
//	          circuit, its failure opens it again for twice as long (up to
//	          BreakerMaxCooldown).
//
// An endpoint failing without a success for DisableAfter is disabled
// (Disabler), and says why.
//
// Besides the shared circuit, each node limits its own attempts per
// endpoint adaptively (limiter): a healthy endpoint gets up to
// PerEndpoint at once, a failing one fewer, down to one.

// Disabler turns an endpoint off, saying why (console.Store).
type Disabler interface {
	DisableWebhook(ctx context.Context, projectID, webhookID, reason string) error
}

// Health is what the console shows of an endpoint.
type Health struct {
	// State is healthy, degraded (recent failures), open (deliveries wait
	// for a probe), probing, or paused (the receiver asked to wait with
	// Retry-After). Disabled endpoints are the console's to report.
	State               string     `json:"state"`
	FailureRate         float64    `json:"failure_rate"`    // of the recent attempts
	RecentAttempts      int        `json:"recent_attempts"` // up to 50
	ConsecutiveFailures int64      `json:"consecutive_failures"`
	FailingSince        *time.Time `json:"failing_since,omitempty"`
	OpenUntil           *time.Time `json:"open_until,omitempty"`
	Reason              string     `json:"reason,omitempty"`
	LastError           string     `json:"last_error,omitempty"`
	LastAttemptAt       *time.Time `json:"last_attempt_at,omitempty"`
}

// Health reads the health of the given endpoints in one round trip. An
// endpoint never attempted is healthy. (Each endpoint's record is in its
// partition; during an upgrade from one partition, the deliveries an earlier
// version wrote go by partition 0's copy, which this does not show.)
func (e *Engine) Health(ctx context.Context, ids []string) (map[string]Health, error) {
	cmds := make([]*redis.SliceCmd, len(ids))
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, e.partOf(id).epKey(id), "state", "fails", "failing_since", "open_until", "reason",
				"last_error", "last_at", "recent")
		}
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]Health, len(ids))
	for i, id := range ids {
		v, _ := cmds[i].Result()
		out[id] = healthOf(v)
	}
	return out, nil
}

func healthOf(v []any) Health {
	s := func(i int) string {
		if i < len(v) {
			x, _ := v[i].(string)
			return x
		}
		return ""
	}
	ms := func(i int) *time.Time {
		n, _ := strconv.ParseInt(s(i), 10, 64)
		if n <= 0 {
			return nil
		}
		t := time.UnixMilli(n).UTC()
		return &t
	}
	h := Health{State: "healthy", Reason: s(4), LastError: s(5), LastAttemptAt: ms(6)}
	h.ConsecutiveFailures, _ = strconv.ParseInt(s(1), 10, 64)
	if recent := s(7); recent != "" {
		h.RecentAttempts = len(recent)
		h.FailureRate = float64(strings.Count(recent, "0")) / float64(len(recent))
	}
	switch s(0) {
	case "open":
		h.State, h.OpenUntil = "open", ms(3)
		if strings.Contains(h.Reason, "Retry-After") {
			h.State = "paused"
		}
	case "probing":
		h.State = "probing"
	default:
		if h.ConsecutiveFailures > 0 {
			h.State = "degraded"
		}
	}
	if h.ConsecutiveFailures > 0 {
		h.FailingSince = ms(2)
	}
	if h.State == "healthy" {
		h.Reason, h.LastError = "", ""
	}
	return h
}

// unpark gives the deliveries this node holds for an endpoint whose
// circuit just opened back to the schedule, unattempted: the next claim
// moves them to the endpoint's waiting set instead of sending them into
// the failure.
func (e *Engine) unpark(whid string) {
	e.mu.Lock()
	parked := e.waiting[whid]
	delete(e.waiting, whid)
	e.mu.Unlock()
	if len(parked) == 0 {
		return
	}
	ctx := context.WithoutCancel(e.runCtx)
	now := e.o.Now()
	at := now.UnixMilli()
	touched := make(partSet, len(e.parts))
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		for _, d := range parked {
			pt := e.parts[d.part]
			deferScript.Eval(ctx, p, []string{pt.dKey(d.id), pt.dueOf(d.projectID), pt.leaseKey, pt.projectsKey}, d.id, d.token, at, d.projectID)
			touched.add(pt.k)
		}
		e.nudge(ctx, p, now, now, touched)
	})
	if err != nil {
		// Their leases run out and they come back: nothing is lost.
		e.o.Log.Warn().Err(err).Msg("give back deliveries parked for an opened endpoint")
	}
}

// Restart gives an endpoint that is enabled again a fresh start: its
// circuit closed and its failure clock stopped, so that its first failure
// after the Enable does not disable it again at once for failures from
// before (RIVERHUB_ENDPOINT_DISABLE_AFTER counts from then on). The
// endpoint's record in partition 0, which the deliveries an earlier version
// wrote go by (see Health), gets the same if it exists.
func (e *Engine) Restart(ctx context.Context, whid string) error {
	pt := e.partOf(whid)
	var old *redis.IntCmd
	err := e.pipelined(ctx, func(p redis.Pipeliner) {
		p.HDel(ctx, pt.unhealthyKey, whid)
		p.HSet(ctx, pt.epKey(whid), "state", "closed", "probe", "", "fails", 0, "failing_since", 0)
		if pt.k != 0 {
			old = p.Exists(ctx, e.parts[0].epKey(whid))
		}
	})
	if err != nil || old == nil || old.Val() == 0 {
		return err
	}
	p0 := e.parts[0]
	return e.pipelined(ctx, func(p redis.Pipeliner) {
		p.HDel(ctx, p0.unhealthyKey, whid)
		p.HSet(ctx, p0.epKey(whid), "state", "closed", "probe", "", "fails", 0, "failing_since", 0)
	})
}

// forget settles a deleted or disabled endpoint's circuit: off the
// unhealthy count, closed, and its waiting deliveries released (500 per
// claim), so they are dead-lettered with the reason at once instead of one
// probe at a time. pt is the partition of the delivery that found it gone:
// another partition's record (partition 0's, during an upgrade) is settled
// by a delivery of its own.
func (e *Engine) forget(pt *part, whid string) {
	ctx := e.runCtx
	_ = e.pipelined(ctx, func(p redis.Pipeliner) {
		p.HDel(ctx, pt.unhealthyKey, whid)
		p.HSet(ctx, pt.epKey(whid), "state", "closed", "probe", "")
		p.Expire(ctx, pt.epKey(whid), e.o.DLQRetention)
		p.ZAdd(ctx, pt.wakeKey, redis.Z{Score: float64(e.o.Now().UnixMilli()), Member: whid})
	})
}

// noteEntry is a timeline entry about a delivery that is not an attempt.
type noteEntry struct {
	At         string `json:"at"`
	Type       string `json:"type"` // delivery_paused, delivery_resumed, endpoint_opened, endpoint_closed, endpoint_disabled
	DeliveryID string `json:"delivery_id"`
	WebhookID  string `json:"webhook_id"`
	Event      string `json:"event,omitempty"`
	Until      string `json:"until,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

var resumedWhy = map[string]string{
	"probe":  "the endpoint's circuit is open: this attempt probes it",
	"closed": "the endpoint recovered",
}

// notePaused puts the claim's paused deliveries in their channels'
// delivery logs: why they wait, and until when.
func (e *Engine) notePaused(paused []pausedDelivery, now time.Time) {
	at := wire.Stamp(now)
	for _, pd := range paused {
		until := pd.until
		if ms, err := parseInt(until); err == nil {
			until = time.UnixMilli(ms).UTC().Format(wire.TimeFormat)
		}
		d := claimed{id: pd.id, channelID: pd.channelID, webhookID: pd.webhookID, event: pd.event}
		e.m.paused.Inc()
		e.results <- result{d: d, verdict: verdictNote, entries: [][]byte{wire.MustJSON(noteEntry{At: at, Type: "delivery_paused",
			DeliveryID: d.id, WebhookID: d.webhookID, Event: d.event, Until: until,
			Reason: "the endpoint's circuit is open: " + pd.reason + "; this delivery waits without using an attempt"})}}
	}
}

// healthChanged acts on an endpoint's change of state after an attempt:
// the attempt's channel hears of it (in logs), metrics count it, and an
// endpoint failing for too long is disabled.
func (e *Engine) healthChanged(ctx context.Context, r result, change healthChange, now time.Time, logs *logBatch) {
	at := wire.Stamp(now)
	d := r.d
	e.m.transitions.WithLabelValues(string(change)).Inc()
	entry := noteEntry{At: at, DeliveryID: d.id, WebhookID: d.webhookID, Event: d.event}
	switch change {
	case changeOpened, changeReopened:
		entry.Type = "endpoint_opened"
		entry.Reason = "the endpoint's circuit opened after this attempt: its deliveries wait for a probe"
		if r.retryAfter > 0 {
			entry.Reason = "the receiver asked to wait (Retry-After " + r.retryAfter.String() + "): its deliveries wait"
		}
		e.o.Log.Warn().Str("webhook_id", d.webhookID).Str("project_id", d.projectID).Str("error", r.err).Msg("endpoint circuit opened")
		e.unpark(d.webhookID)
	case changeClosed:
		entry.Type = "endpoint_closed"
		entry.Reason = "the endpoint answered: its circuit is closed and waiting deliveries go"
		e.o.Log.Info().Str("webhook_id", d.webhookID).Str("project_id", d.projectID).Msg("endpoint circuit closed")
	case changeDisable:
		why := "failing without a success for " + e.o.DisableAfter.String() + " (last: " + r.err + ")"
		dis, ok := e.o.Endpoints.(Disabler)
		if !ok {
			return
		}
		if err := dis.DisableWebhook(ctx, d.projectID, d.webhookID, why); err != nil {
			e.o.Log.Warn().Err(err).Str("webhook_id", d.webhookID).Msg("disable failing endpoint")
			return
		}
		e.forget(e.parts[d.part], d.webhookID)
		entry.Type, entry.Reason = "endpoint_disabled", "the endpoint was disabled: "+why
		e.o.Log.Warn().Str("webhook_id", d.webhookID).Str("project_id", d.projectID).Msg("endpoint disabled: " + why)
	default:
		return
	}
	logs.add(d.channelID, d.event, wire.MustJSON(entry))
}

// limiter is a node's adaptive per-endpoint concurrency: an endpoint
// starts at a few attempts at once, gains one with every success up to
// the cap, and is halved by every failure (down to one), so endpoints that
// hang or fail hold few of the node's attempt slots.
type limiter struct {
	mu    sync.Mutex
	cap   int
	start int
	lim   map[string]int       // by endpoint, once it has been attempted
	ok    map[string]time.Time // by endpoint, its last success on this node
	now   func() time.Time
}

// recentlyOK reports whether the endpoint answered 2xx since t.
func (l *limiter) recentlyOK(id string, t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok[id].After(t)
}

func newLimiter(cap int, now func() time.Time) *limiter {
	return &limiter{cap: cap, start: max(1, min(cap, 8)), lim: make(map[string]int), ok: make(map[string]time.Time), now: now}
}

func (l *limiter) get(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, ok := l.lim[id]; ok {
		return n
	}
	return l.start
}

func (l *limiter) observe(id string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, known := l.lim[id]
	if !known {
		n = l.start
	}
	if ok {
		n++
		l.ok[id] = l.now()
	} else {
		n = max(1, n/2)
	}
	if n >= l.cap {
		l.lim[id] = l.cap
		return
	}
	l.lim[id] = n
}
