package channels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/batch"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wire"
)

// Event-driven channels. Once generated, a channel awaits its backend's
// callback until its deadline:
//
//	generating ──▶ ai_generated ──callback {data}──▶ completed
//	                    │        ──callback {error}─▶ error
//	                    └──────── deadline ────────▶ error (callback_timeout)
//	                              (playground: ────▶ completed, simulated)
//
// A callback and the deadline settle the channel through one
// compare-and-set on its record (callback.lua, fire.lua), so exactly one
// outcome wins and exactly one final message is published. The winner
// publishes it; the deadline entry stays in P:{cb}:due until that publish
// is done, so if the winner's node dies in between, the deadline poller
// of any node publishes it (publishing is idempotent).
//
//	P:{cb}:due  ZSET channel id → when a node next looks at it (unix ms):
//	            its deadline, or a claim's lease while a node settles it
//
// With partitions (Options.Partitions > 1) there is one such set per
// partition, P:{cb}:due and P:{cb.<s>}:due (rdb.Partitions), and a channel's
// entry is in its channel id's. An entry an earlier version wrote is in
// partition 0's set whatever its channel: the poller claims it from there
// and puts it back or removes it there; a callback that settles such a
// channel first leaves it in place, and the poller then finds it settled
// and publishes the final message again, which the room drops.

// dueKeys are the callback-deadline sets, one per partition.
func dueKeys(prefix string, n int) []string { return partitionSets(prefix, "cb", n) }

// partitionSets names a family's sets P:<tag>:due, one per partition.
func partitionSets(prefix, family string, n int) []string {
	parts := rdb.NewPartitions(family, n)
	keys := make([]string, parts.N())
	for k := range keys {
		keys[k] = prefix + ":" + parts.Tag(k) + ":due"
	}
	return keys
}

// dueKey is the deadline set of a channel's partition.
func (s *Service) dueKey(cid string) string { return s.dueKeys[s.q.parts.Of(cid)] }

const (
	deadlineBatch = 256                    // most deadlines one claim takes
	deadlinePoll  = 100 * time.Millisecond // the poller's period
	deadlineLease = 5 * time.Second        // a claimed deadline's lease
)

// awaitCallback runs the side effects of an event-driven generation: the
// deadline is set and the room told before the backend is sent the
// webhook, so a callback always finds both.
func (s *Service) awaitCallback(ctx context.Context, o outcome) error {
	b := broadcasts{s: s}
	err := rdb.PipelinedMerge(ctx, s.rdb, func(p redis.Pipeliner, m *rdb.Merge) {
		p.ZAddNX(ctx, s.dueKey(o.cid), redis.Z{Score: float64(o.deadline), Member: o.cid})
		// The record outlives its deadline by the retention, however short
		// the retention and long the deadline.
		ttl := time.UnixMilli(o.deadline).Sub(s.o.Now()) + s.o.Retention
		p.Expire(ctx, s.chKey(o.cid), ttl)
		p.Expire(ctx, s.tlKey(o.cid), ttl)
		s.indexMove(m, logRef{o.pid, o.cid, o.workflow, o.event}, StatusGenerating, StatusAIGenerated)
		b.add(ctx, p, o.pid, o.cid, StatusAIGenerated, o.msg)
		b.add(ctx, p, o.pid, o.cid, StatusSimulating, o.sim)
	})
	b.check()
	if err := s.indexing(err); err != nil {
		return fmt.Errorf("set callback deadline: %w", err)
	}
	if o.redone {
		if err := s.unindexGone(ctx, []indexed{{logRef{o.pid, o.cid, o.workflow, o.event}, StatusAIGenerated}}); err != nil {
			return err
		}
	}
	if s.o.Dispatcher != nil && o.hook != nil && !o.playground && sends(o.events, "task.ai_generated") {
		if err := s.o.Dispatcher.Enqueue(ctx, dispatch.Event{Type: "task.ai_generated", ProjectID: o.pid, ChannelID: o.cid,
			WebhookIDs: o.webhookIDs, Body: o.hook}); err != nil {
			return fmt.Errorf("enqueue webhooks: %w", err)
		}
	}
	// The generation's messages are in the room (the round trip that sent
	// them answered without an error): noted, so that the settlement does
	// not send them again (announce.lua).
	// A callback (or the deadline) may have settled the channel while the
	// steps above ran: they re-added its deadline entry, indexed it as
	// awaiting and enqueued its webhook after the settle had cancelled what
	// there was. Settling again (idempotent) puts that right.
	v, err := announceScript.Run(ctx, s.rdb, []string{s.chKey(o.cid)}).Slice()
	if err != nil {
		return fmt.Errorf("read channel: %w", err)
	}
	if outcome, _ := v[2].(string); outcome != "" {
		st, _ := v[0].(string)
		msg, _ := v[1].(string)
		// Its entry was just put back at its deadline (unguarded).
		if err := s.settleAll(ctx, []settlement{{ref: logRef{o.pid, o.cid, o.workflow, o.event}, due: s.dueKey(o.cid),
			status: Status(st), why: settleReason(outcome), msg: json.RawMessage(msg), redone: true, unguarded: true}}, nil); err != nil {
			return err
		}
	}
	s.ack(ctx, o.pid, o.cid)
	if time.UnixMilli(o.deadline).Sub(s.o.Now()) < deadlinePoll {
		s.pokeDeadlines()
	}
	return nil
}

// settleReason is why a settled channel's webhook retries were cancelled
// ("" when there is none to cancel: a simulated callback).
func settleReason(outcome string) string {
	switch outcome {
	case "timeout":
		return "the callback deadline passed"
	case "simulated":
		return ""
	}
	return "a callback was received"
}

func (s *Service) pokeDeadlines() {
	select {
	case s.wakeDue <- struct{}{}:
	default:
	}
}

// CallbackBody is a backend's callback: a success ({data, task_id?,
// metadata?}) or an error ({error, message?}).
type CallbackBody struct {
	Data     json.RawMessage // set for a success (never JSON null)
	TaskID   json.RawMessage // any JSON value, or nil
	Metadata json.RawMessage // any JSON value, or nil
	Error    string          // set for an error
	Message  string
	// Canonical is the body as received, re-serialised canonically: it
	// is logged on the timeline and tells a repeat from a different
	// callback.
	Canonical json.RawMessage
}

// Conflict codes of a callback that cannot be accepted.
var (
	ErrCallbackTimeout = func(cid string) error {
		return apperr.New(apperr.Conflict, "callback_timeout",
			"channel %s stopped waiting for its callback: the deadline passed", cid)
	}
	ErrCallbackReceived = func(cid string) error {
		return apperr.New(apperr.Conflict, "callback_already_received",
			"channel %s already received a different callback", cid)
	}
	ErrNotAwaiting = func(cid string, st Status) error {
		return apperr.New(apperr.Conflict, "not_awaiting_callback",
			"channel %s is not awaiting a callback (its status is %s)", cid, st)
	}
)

// Callback settles an event-driven channel of project pid with its
// backend's callback, in one round trip on one Redis (the deadline entry
// brought forward; the compare-and-set, which builds the final message
// from the parts the generation stored, and with a ScriptPublisher
// publishes it when the room holds the generation's messages; on a
// Cluster two), and returns; the final message is published (unless the
// compare-and-set did), the indexes moved and the webhook retries
// cancelled right after, with other callbacks' (settleLater). The same callback
// again is accepted again (nothing changes); anything else once the
// channel is settled, before it awaits a callback, or after its deadline
// is a conflict; another project's channel is not found. With
// Options.WaitReplicas it returns once that many replicas have its writes,
// or their WAIT timed out.
func (s *Service) Callback(ctx context.Context, pid, cid string, cb CallbackBody) error {
	ctx, done := s.replicated(ctx, "callback")
	err := s.callback(ctx, pid, cid, cb)
	done(err)
	return err
}

func (s *Service) callback(ctx context.Context, pid, cid string, cb CallbackBody) error {
	d, err := s.accept(ctx, pid, cid, cb)
	switch {
	case d == nil:
	case d.unguarded:
		// Nothing would redo it within seconds if this node died: settle
		// before answering, and let the backend retry a failure.
		if serr := s.settleAll(context.WithoutCancel(ctx), []settlement{*d}, nil); err == nil && serr != nil {
			err = serr
		}
	default:
		s.settleLater(ctx, *d)
	}
	return err
}

// accept is a callback up to its answer: the settlement it leaves to do
// (nil: none) and the answer's error.
func (s *Service) accept(ctx context.Context, pid, cid string, cb CallbackBody) (*settlement, error) {
	fp := sha256.Sum256(cb.Canonical)
	now := s.o.Now()
	at := wire.Stamp(now)
	f, err := newCallbackFrame(cid, cb, at)
	if err != nil {
		return nil, err
	}
	entry := Entry{At: at, Type: "callback", Status: f.status, Callback: cb.Canonical, Answer: 200, Node: s.o.Node}
	if f.status == StatusError {
		entry.Code, entry.Error = cb.Error, cb.Message
	}
	keys := []string{s.chKey(cid), s.tlKey(cid)}
	args := append([]any{now.UnixMilli(), at, hex.EncodeToString(fp[:]), string(f.status), pid,
		f.head, f.mid, f.tail, "", wire.MustJSON(entry)}, s.outcomeArgs(at)...)
	sp, _ := s.o.Publisher.(ScriptPublisher)
	if sp != nil { // the script publishes the final message it decides
		pk, pa := sp.FinalPublishArgs(cid)
		keys, args = append(keys, pk...), append(args, pa...)
	}
	// Bring the channel's deadline entry forward to a claim's lease, so
	// that if this node dies between the compare-and-set and the publish,
	// a poller publishes within seconds (it puts an entry looked at early
	// back to its deadline); then the compare-and-set, which builds the
	// final message from the parts the generation stored. On one Redis the
	// two go in one round trip, in order; on a Cluster (other slots) the
	// entry is brought forward in a round trip of its own first.
	forward := func(p redis.Pipeliner) *redis.IntCmd {
		return p.ZAddArgs(ctx, s.dueKey(cid), redis.ZAddArgs{XX: true, LT: true, Ch: true,
			Members: []redis.Z{{Score: float64(now.Add(deadlineLease).UnixMilli()), Member: cid}}})
	}
	cluster := rdb.IsCluster(s.rdb)
	var fwd *redis.IntCmd
	var cas *redis.Cmd
	err = s.shared.Pipelined(ctx, func(p redis.Pipeliner) {
		fwd = forward(p)
		if !cluster {
			cas = callbackScript.Eval(ctx, p, keys, args...)
		}
	})
	if cluster && err == nil {
		cas = callbackScript.Run(ctx, s.rdb, keys, args...)
	}
	if cas != nil && cas.Err() == nil && cas.Val() != nil {
		err = nil // the script ran: its outcome decides, whatever befell the entry's
	}
	r, err := s.casReply(cas, err)
	if err != nil {
		return nil, err
	}
	// Not brought forward: no entry there (not yet added, or one an
	// earlier version left in partition 0), one due sooner anyway, or the
	// ZADD failed.
	unguarded := fwd.Err() != nil || fwd.Val() == 0
	if r.verdict == "read" {
		// Generated by an earlier version, which stored no parts: build
		// them from the task and generation the script read.
		if args[8], err = readParts(r); err != nil {
			return nil, err
		}
		if r, err = s.casReply(callbackScript.Run(ctx, s.rdb, keys, args...), nil); err != nil {
			return nil, err
		}
	}
	var archived *Archived // the channel, when the archive holds it
	if r.verdict == "gone" && s.o.Archive != nil {
		if r, archived, err = s.archivedVerdict(ctx, pid, cid, fp[:]); err != nil {
			return nil, err
		}
	}
	ref := logRef{pid, cid, r.workflow, r.event}
	var d *settlement
	var reject error
	switch r.verdict {
	case "gone", "foreign":
		return nil, apperr.NotFoundf("channel %s not found", cid)
	case "ok":
		if r.published && sp != nil {
			sp.CountScriptPublish()
		}
		return &settlement{ref: ref, due: s.dueKey(cid), status: f.status, why: "a callback was received",
			pre: rawAll(r.generated, r.sim), msg: json.RawMessage(r.msg), unguarded: unguarded, logged: r.logged,
			published: r.published}, nil
	case "repeat":
		if r.compacted {
			return nil, nil // settled long since: the same answer, nothing to redo
		}
		return &settlement{ref: ref, due: s.dueKey(cid), status: Status(r.status), why: "a callback was received",
			msg: json.RawMessage(r.msg), unguarded: unguarded, redone: true}, nil
	case "late":
		d = &settlement{ref: ref, due: s.dueKey(cid), status: Status(r.status), why: settleReason(r.outcome),
			pre: rawAll(r.generated, r.sim), msg: json.RawMessage(r.msg), unguarded: unguarded, redone: true, logged: r.logged}
		reject = ErrCallbackTimeout(cid)
		if r.outcome != "timeout" {
			reject = ErrCallbackReceived(cid)
		}
	case "timeout":
		reject = ErrCallbackTimeout(cid)
	case "conflict":
		reject = ErrCallbackReceived(cid)
	default: // not_awaiting
		reject = ErrNotAwaiting(cid, Status(r.status))
	}
	e := apperr.As(reject)
	rejected := Entry{At: at, Type: "callback_rejected", Code: e.Code, Error: e.Message, Answer: 409, Node: s.o.Node}
	if len(cb.Canonical) <= maxLoggedCallback { // a backend retrying a big body must not grow the timeline by it each time
		rejected.Callback = cb.Canonical
	}
	note := []any{wire.MustJSON(rejected)}
	if archived != nil { // the entry lives as long as the archived record would have
		created, _ := time.Parse(time.RFC3339Nano, archived.CreatedAt)
		note = append(note, max(created.Add(s.o.Retention).Sub(s.o.Now()).Milliseconds(), 1))
	}
	_ = noteScript.Run(ctx, s.rdb, keys, note...).Err()
	return d, reject
}

// archivedVerdict is callback.lua's verdict for a channel the archive
// holds (settled, so nothing changes): the same callback again is
// repeated, any other refused as on a settled channel; another project's
// channel, or one the archive does not hold, is not found.
func (s *Service) archivedVerdict(ctx context.Context, pid, cid string, fp []byte) (callbackReply, *Archived, error) {
	a, err := s.o.Archive.Get(ctx, cid)
	if err != nil {
		return callbackReply{}, nil, fmt.Errorf("read channel: %w", err)
	}
	if a == nil || a.ProjectID != pid {
		return callbackReply{}, nil, apperr.NotFoundf("channel %s not found", cid)
	}
	f, err := unpackFolded(a.Doc)
	if err != nil {
		return callbackReply{}, nil, err
	}
	r := callbackReply{verdict: "not_awaiting", status: string(a.Status)}
	switch f.Record["outcome"] {
	case "callback":
		if f.Record["cb_fp"] == hex.EncodeToString(fp) {
			r = callbackReply{verdict: "repeat", msg: string(f.Message), status: r.status, compacted: true}
		} else {
			r.verdict = "conflict"
		}
	case "timeout":
		r.verdict = "timeout"
	case "simulated":
		r.verdict = "conflict"
	}
	return r, a, nil
}

// messageStatus is a room message's status, for its broadcast entry.
func messageStatus(m json.RawMessage) Status {
	var v struct {
		Status Status `json:"status"`
	}
	_ = wire.Decode(m, &v)
	return v.Status
}

// maxLoggedCallback is the largest refused callback body kept on the
// timeline (larger ones are logged without their body).
const maxLoggedCallback = 4 << 10

// rawAll is the non-empty messages among ms.
func rawAll(ms ...string) []json.RawMessage {
	var out []json.RawMessage
	for _, m := range ms {
		if m != "" {
			out = append(out, json.RawMessage(m))
		}
	}
	return out
}

// casReply decodes callback.lua's reply (err: the round trip's).
func (s *Service) casReply(cas *redis.Cmd, err error) (callbackReply, error) {
	var out []string
	if err == nil {
		out, err = cas.StringSlice()
	}
	if err != nil {
		return callbackReply{}, fmt.Errorf("accept callback: %w", err)
	}
	r, err := decodeCallback(out)
	if err != nil {
		return r, fmt.Errorf("accept callback: %w", err)
	}
	return r, nil
}

// readParts builds the parts of a callback's final message (cb_parts)
// for a channel generated by an earlier version, which stored none, from
// its record as callback.lua read it (the "read" verdict).
func readParts(r callbackReply) (string, error) {
	var t struct { // of the stored task, what the message carries
		CustomerData json.RawMessage `json:"customer_data"`
	}
	var g struct {
		Data json.RawMessage `json:"data"`
	}
	if err := wire.Decode([]byte(r.task), &t); err != nil {
		return "", fmt.Errorf("read channel task: %w", err)
	}
	_ = wire.Decode([]byte(r.result), &g)
	return callbackParts(r.event, g.Data, t.CustomerData)
}

// outcomeArgs are the arguments callback.lua and fire.lua both take
// last, in this order: the timeline entries of a timeout and of a
// simulated callback, the "broadcast" entries of an error and of a
// completed final message (settle.lua), and announcedFor.
func (s *Service) outcomeArgs(at string) []any {
	return []any{
		wire.MustJSON(Entry{At: at, Type: "timeout", Status: StatusError, Code: CodeCallbackTimeout,
			Error: "no callback arrived before the deadline", Node: s.o.Node}),
		wire.MustJSON(Entry{At: at, Type: "callback", Status: StatusCompleted, Simulated: true, Node: s.o.Node}),
		s.broadcastEntry(at, StatusError), s.broadcastEntry(at, StatusCompleted), s.announcedFor(),
	}
}

// settlement is the side effects of a settled channel, whoever settled it
// (a callback, the deadline, or a redo after a crash): its room gets the
// generation's messages (pre; the room drops those it has) and the final
// one, its indexes move, the retries of its task.ai_generated webhook are
// cancelled (why says why; none when empty), and last its entry leaves
// the deadline set due. Until that last step the entry stays there, under
// a claim's lease at most, so if this node dies first, a poller does it all
// again (each step is idempotent).
type settlement struct {
	ref    logRef
	due    string
	status Status
	why    string
	pre    []json.RawMessage
	msg    json.RawMessage
	// unguarded: its channel's deadline entry was not brought forward to
	// a claim's lease, so a poller would redo it only at its deadline.
	unguarded bool
	// logged: the final message's broadcast entry was written with the
	// outcome (callback.lua, fire.lua, when the room surely held the
	// generation's messages: settle.lua), so the room is only sent it; a
	// settlement that sends the generation's messages again, or is redone,
	// logs each entry as it sends it (broadcast.lua writes one once).
	logged bool
	// published: the final message was published with the outcome
	// (callback.lua, ScriptPublisher): the room is not sent it again.
	published bool
	// redone: settled before (a repeated or late callback, a deadline
	// claimed again): its channel may have moved to the archive since the
	// script read it (see indexMove).
	redone bool
	at     time.Time // when it was handed to the settler (settleLater)
}

// settleLater hands a callback's settlement to the settler, which sends
// those of concurrent callbacks together after their answers (the
// compare-and-set has decided the outcome; what remains is idempotent and,
// if lost, redone by a poller within deadlineLease). Past Shutdown, or
// when the settler is behind, it settles at once.
func (s *Service) settleLater(ctx context.Context, d settlement) {
	d.at = time.Now()
	toBatcher(s, s.settles, d, func(d settlement) {
		s.settleAllLogged(context.WithoutCancel(ctx), []settlement{d}, nil)
	})
}

// settleAllLogged is settleAll for those who cannot answer its error: it
// is logged (a poller settles those channels again after the lease).
func (s *Service) settleAllLogged(ctx context.Context, done []settlement, more func(redis.Pipeliner)) {
	if err := s.settleAll(ctx, done, more); err != nil && ctx.Err() == nil {
		s.o.Log.Warn().Err(err).Int("channels", len(done)).Msg("settle channels; retried after the lease")
	}
}

// settleLoop sends batched settlements until settles is closed and drained.
func (s *Service) settleLoop() {
	defer close(s.settlesDone)
	batch.Drain(s.settles, deadlineBatch, func(ds []settlement) { s.settleAllLogged(context.Background(), ds, nil) })
}

// settleAll runs the settlements of done: the publishes and index moves
// (with whatever more queues in them) and the cancellation of the webhook
// retries, in one round trip on one Redis (two on a Cluster, the
// cancellation after the publishes); what was cancelled logged (a round
// trip, when something was); then their last steps (tidySteps: the
// deadline entries removed), held for the next settlement's round trip
// on one Redis when every entry is under a claim's lease (tidying), else
// sent at once. A failure of the publishes leaves the entries to their
// claim's lease: a poller settles them again (on one Redis the
// cancellation has run all the same, and is logged, unless Redis refused
// the whole transaction, as it does out of memory). A failure of the
// cancellation is logged and leaves the retries to run out: the backend's
// callback then gets a conflict, which is harmless.
func (s *Service) settleAll(ctx context.Context, done []settlement, more func(redis.Pipeliner)) error {
	b := broadcasts{s: s}
	var cancels []dispatch.Cancellation
	for _, d := range done {
		if d.why != "" { // idempotent: also for a settle redone
			cancels = append(cancels, dispatch.Cancellation{Event: dispatch.Event{Type: "task.ai_generated",
				ProjectID: d.ref.pid, ChannelID: d.ref.cid}, Why: d.why})
		}
	}
	var cancelling *dispatch.Cancelling
	var cancelErr error
	// The last steps tidying holds ride along, after this round trip's own.
	earlier := s.tidying.take()
	steps := []func(redis.Pipeliner, *rdb.Merge){func(p redis.Pipeliner, m *rdb.Merge) {
		for _, d := range done {
			for _, m := range d.pre {
				b.add(ctx, p, d.ref.pid, d.ref.cid, messageStatus(m), m)
			}
			switch {
			case d.published: // with the outcome (callback.lua)
			case d.logged:
				b.publish(ctx, p, d.ref.pid, d.ref.cid, d.msg)
			default:
				b.add(ctx, p, d.ref.pid, d.ref.cid, d.status, d.msg)
			}
			s.indexMove(m, d.ref, StatusAIGenerated, d.status)
		}
		if more != nil {
			more(p)
		}
	}, func(p redis.Pipeliner, _ *rdb.Merge) {
		if s.o.Dispatcher != nil && len(cancels) > 0 {
			cancelling, cancelErr = s.o.Dispatcher.CancelIn(ctx, p, cancels)
		}
	}}
	errs := rdb.InOrderEach(ctx, s.rdb, append(steps, s.tidySteps(ctx, earlier)...)...)
	b.check()
	if i := slices.IndexFunc(errs[2:], func(err error) bool { return err != nil }); i >= 0 {
		switch {
		case ctx.Err() == nil:
			s.o.Log.Warn().Err(errs[2+i]).Int("channels", len(earlier)).Msg("remove settled callback deadlines; redone after the lease")
		case !s.tidying.add(earlier): // cut short by this settlement's context (Shutdown's), and no longer held
			s.tidyLogged(context.WithoutCancel(ctx), earlier)
		}
	}
	if cancelErr == nil && !errors.Is(errs[1], rdb.ErrNotRun) {
		cancelErr = cancelling.Log(ctx)
	}
	if cancelErr != nil {
		s.o.Log.Warn().Err(cancelErr).Int("channels", len(cancels)).Msg("cancel task.ai_generated retries")
	}
	if err := s.indexing(errs[0]); err != nil {
		return fmt.Errorf("publish the final message: %w", err)
	}
	if len(done) == 0 {
		return nil
	}
	var redone []indexed
	for _, d := range done {
		if d.redone || s.late(d.at) {
			redone = append(redone, indexed{d.ref, d.status})
		}
	}
	if err := s.unindexGone(ctx, redone); err != nil {
		return err
	}
	for _, d := range done {
		if d.unguarded { // nothing would redo it within seconds: at once, its error the caller's
			return s.tidy(ctx, done)
		}
	}
	if s.tidying.add(done) {
		return nil
	}
	return s.tidy(ctx, done)
}

// tidy sends the last steps of done (tidySteps).
func (s *Service) tidy(ctx context.Context, done []settlement) error {
	if len(done) == 0 {
		return nil
	}
	if err := rdb.InOrder(ctx, s.rdb, s.tidySteps(ctx, done)...); err != nil {
		return fmt.Errorf("remove the callback deadline: %w", err)
	}
	return nil
}

// tidyLogged is tidy for those who cannot answer its error: it is logged
// (a poller settles those channels again after the lease).
func (s *Service) tidyLogged(ctx context.Context, done []settlement) {
	if err := s.tidy(ctx, done); err != nil {
		s.o.Log.Warn().Err(err).Int("channels", len(done)).Msg("remove settled callback deadlines; redone after the lease")
	}
}

// tidySteps are a settlement's last steps, once its final message has
// landed, in order (a round trip each on a Cluster): queued to fold; then
// compacted and its deadline entry removed. If the entries' removal went
// through and the queueing did not, nothing would redo it. Compaction and
// removal may land in either order: a poller that finds an entry of a
// compacted channel drops it (fire.lua), and the fold drops the live
// fields of one whose compaction did not land. None when done is empty.
func (s *Service) tidySteps(ctx context.Context, done []settlement) []func(redis.Pipeliner, *rdb.Merge) {
	if len(done) == 0 {
		return nil
	}
	settled := make(map[string][]any)
	for _, d := range done {
		settled[d.due] = append(settled[d.due], d.ref.cid)
	}
	return []func(redis.Pipeliner, *rdb.Merge){func(_ redis.Pipeliner, m *rdb.Merge) {
		for _, d := range done {
			if d.status.final() {
				s.queueFoldIn(m, d.ref.cid)
			}
		}
	}, func(p redis.Pipeliner, _ *rdb.Merge) {
		for _, d := range done {
			if d.status.final() {
				s.compact(ctx, p, d.ref.cid)
			}
		}
		for due, ids := range settled {
			p.ZRem(ctx, due, ids...)
		}
	}}
}

// tidying holds, on one Redis, the last steps (tidySteps) of settlements
// whose final message has landed and whose deadline entries are under a
// claim's lease: they go in the next settlement's round trip, after its
// own steps, or alone once tidyDelay has passed without one. Under load
// that is a round trip fewer per batch of settlements. Nothing is lost if
// the node dies meanwhile: the entries' lease runs out and a poller
// settles those channels again (each step is idempotent), as it would
// had the node died between the two round trips. On a Cluster, where a
// settlement's steps go a round trip each, it holds nothing (closed).
type tidying struct {
	mu       sync.Mutex
	pending  []settlement
	timer    *time.Timer // sends pending after delay; armed while pending holds some
	closed   bool        // each settlement sends its own (past Shutdown, or on a Cluster)
	flushing sync.WaitGroup
	send     func([]settlement) // the timer's send
	delay    time.Duration
}

// tidyDelay is the longest a settlement's last steps wait for company.
const tidyDelay = 10 * time.Millisecond

func (s *Service) newTidying() *tidying {
	t := &tidying{send: func(done []settlement) { s.tidyLogged(context.Background(), done) },
		closed: rdb.IsCluster(s.rdb), delay: tidyDelay}
	t.timer = time.AfterFunc(time.Hour, t.flush)
	t.timer.Stop()
	return t
}

// add holds done's last steps, and reports false if it did not (closed):
// the caller sends them itself.
func (t *tidying) add(done []settlement) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if len(t.pending) == 0 && len(done) > 0 {
		t.timer.Reset(t.delay)
	}
	t.pending = append(t.pending, done...)
	return true
}

// take removes and returns what is held.
func (t *tidying) take() []settlement {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.takeLocked()
}

func (t *tidying) takeLocked() []settlement {
	out := t.pending
	t.pending = nil
	t.timer.Stop()
	return out
}

// flush sends what is held (the timer's function).
func (t *tidying) flush() {
	t.mu.Lock()
	out := t.takeLocked()
	if len(out) > 0 {
		t.flushing.Add(1)
	}
	t.mu.Unlock()
	if len(out) > 0 {
		defer t.flushing.Done()
		t.send(out)
	}
}

// close makes add refuse, waits for a flush under way, and returns what
// is held.
func (t *tidying) close() []settlement {
	t.mu.Lock()
	t.closed = true
	out := t.takeLocked()
	t.mu.Unlock()
	t.flushing.Wait()
	return out
}

// fireAllDue settles the channels whose callback deadline has come, on
// whichever node claims them first, a full batch after another.
func (s *Service) fireAllDue() {
	for s.fireDue() && s.runCtx.Err() == nil {
	}
}

// fireDue claims due deadlines, a batch of each partition in one round
// trip, and settles them; it reports whether a partition had a full batch
// (more may be due).
func (s *Service) fireDue() bool {
	ctx := s.runCtx
	now := s.o.Now()
	claims := make([]*redis.Cmd, len(s.dueKeys))
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for k, key := range s.dueKeys {
			claims[k] = claimDueScript.Eval(ctx, p, []string{key}, now.UnixMilli(), deadlineBatch, now.Add(deadlineLease).UnixMilli())
		}
	})
	if err != nil && ctx.Err() == nil {
		s.o.Log.Warn().Err(err).Msg("claim callback deadlines")
	}
	full := false
	for k, c := range claims {
		ids, err := c.StringSlice()
		if err != nil || len(ids) == 0 {
			continue
		}
		full = full || len(ids) == deadlineBatch
		s.settleDue(now, s.dueKeys[k], ids)
	}
	return full
}

// settleDue settles the channels of ids, claimed from the deadline set due.
func (s *Service) settleDue(now time.Time, due string, ids []string) {
	ctx := s.runCtx
	at := wire.Stamp(now)
	args := append([]any{now.UnixMilli(), at}, s.outcomeArgs(at)...)
	cmds := make([]*redis.Cmd, len(ids))
	if err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, id := range ids {
			cmds[i] = fireScript.Eval(ctx, p, []string{s.chKey(id), s.tlKey(id)}, args...)
		}
	}); err != nil && ctx.Err() == nil {
		s.o.Log.Warn().Err(err).Int("channels", len(ids)).Msg("fire callback deadlines; retried after the lease")
	}
	// Then: the winners' messages published (the generation's first: the
	// room drops those it has) and their channels indexed, early entries
	// put back to their deadline and expired ones dropped, in one round
	// trip; then the webhook retries cancelled; and only once all that
	// succeeded, the settled channels' entries removed (else their claim's
	// lease brings them back).
	var done []settlement
	var waits []redis.Z
	var drop []any
	for i, id := range ids {
		out, err := cmds[i].StringSlice()
		var r fireReply
		if err == nil {
			r, err = decodeFire(out)
		}
		if err != nil {
			continue // the claim's lease runs out and it is tried again
		}
		switch r.verdict {
		case "gone":
			drop = append(drop, id)
		case "wait":
			waits = append(waits, redis.Z{Score: float64(r.deadline), Member: id})
		case "fired", "done":
			d := settlement{ref: logRef{r.project, id, r.workflow, r.event}, due: due, status: Status(r.status),
				why: settleReason(r.outcome), msg: json.RawMessage(r.msg)}
			if r.verdict == "fired" {
				s.m.timeouts.WithLabelValues(r.outcome).Inc()
				d.pre, d.logged = rawAll(r.generated, r.sim), r.logged
			} else {
				d.redone = true
			}
			done = append(done, d)
		}
	}
	s.settleAllLogged(ctx, done, func(p redis.Pipeliner) {
		if len(waits) > 0 {
			p.ZAdd(ctx, due, waits...)
		}
		if len(drop) > 0 {
			p.ZRem(ctx, due, drop...)
		}
	})
}
