package channels

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/project"
)

// The request logs: a project's channels, newest first, filtered by
// workflow, event name, status and time, answered from secondary indexes
// rather than by scanning every channel.
//
//	P:logs:{pid}               ZSET every channel of the project → created (unix ms)
//	P:logs:{pid}:wf:<name>     ZSET the same, one workflow's
//	P:logs:{pid}:ev:<event>    ZSET the same, one event name's
//	P:logs:{pid}:st:<state>    ZSET the same, by state: active (pending or
//	                           generating), ai_generated, success, completed, error
//	P:logs:{pid}:wf:<name>:st:<state>, P:logs:{pid}:ev:<event>:st:<state>
//	                           ZSET the same, by workflow and state, by event and state
//
// So every filter but "workflow and event name together" has an index of
// its own, read a page at a time (the time range is a score range); that
// one combination scans the workflow's index and checks the event name.
//
// Channel ids are UUIDv7, so a channel's score is read off its id wherever
// its status changes. The indexes are written in the pipelines that
// already carry a channel's record and status changes (no extra round
// trip; on one Redis, a submission's are written by its submit script),
// trimmed to the retention as they are written, and always confirmed
// against the channel's record when read: an entry whose channel has
// expired, or whose status has moved on since, is skipped.
//
//	P:unindex                  ZSET channels perhaps not accepted, to take out of
//	                           their indexes if their record is not in Redis
//	                           → due (unix ms); see unindexLater
//	P:unindex:moved            ZSET the same for channels moved to the archive,
//	                           taken out of the indexes a late write can
//	                           list them in; see sweepMoved

// NewChannelID returns a new channel id: a UUIDv7, ordered by creation time.
func NewChannelID() string { return uuid.Must(uuid.NewV7()).String() }

// createdMS is when the channel was created, read off a UUIDv7 id (else
// now: the id came from elsewhere).
func createdMS(cid string, now time.Time) int64 {
	u, err := uuid.Parse(cid)
	if err != nil || u.Version() != 7 {
		return now.UnixMilli()
	}
	sec, nsec := u.Time().UnixTime()
	return sec*1000 + nsec/1e6
}

func (s *Service) logKey(pid string) string { return s.o.Prefix + ":logs:{" + pid + "}" }
func (s *Service) logKeyOf(pid, kind, v string) string {
	return s.logKey(pid) + ":" + kind + ":" + v
}

// stateOf is the status index a channel in status st belongs to.
func stateOf(st Status) string {
	if st == StatusPending || st == StatusGenerating {
		return "active"
	}
	return string(st)
}

// trimEvery: one index write in this many also drops the entries older
// than the retention (each such trim removes what accumulated meanwhile).
const trimEvery = 64

func (s *Service) trim(m *rdb.Merge, now time.Time, keys ...string) {
	if rand.IntN(trimEvery) != 0 {
		return
	}
	cutoff := now.Add(-s.o.Retention).UnixMilli()
	for _, k := range keys {
		m.TrimBelow(k, cutoff)
	}
}

// logRef names a channel and what it is indexed by.
type logRef struct{ pid, cid, workflow, event string }

func (t *Task) logRef() logRef {
	return logRef{t.ProjectID, t.ChannelID, t.Workflow.Name, t.Workflow.EventName}
}

// stateKeys are the status indexes of r in state st.
func (s *Service) stateKeys(r logRef, st Status) []string {
	state := stateOf(st)
	keys := []string{s.logKeyOf(r.pid, "st", state), s.logKeyOf(r.pid, "wf", r.workflow+":st:"+state)}
	if r.event != "" {
		keys = append(keys, s.logKeyOf(r.pid, "ev", r.event+":st:"+state))
	}
	return keys
}

// newKeys are the indexes a new channel in status st goes in.
func (s *Service) newKeys(t *Task, st Status) []string { return s.indexKeys(t.logRef(), st) }

// indexKeys are the indexes a channel in status st is in.
func (s *Service) indexKeys(r logRef, st Status) []string {
	keys := append([]string{s.logKey(r.pid), s.logKeyOf(r.pid, "wf", r.workflow)}, s.stateKeys(r, st)...)
	if r.event != "" {
		keys = append(keys, s.logKeyOf(r.pid, "ev", r.event))
	}
	return keys
}

// indexNew adds a new channel to its project's indexes, within m (merged
// with the other writes of its round trip to the same indexes).
func (s *Service) indexNew(m *rdb.Merge, t *Task, st Status, now time.Time) {
	z := redis.Z{Score: float64(createdMS(t.ChannelID, now)), Member: t.ChannelID}
	keys := s.newKeys(t, st)
	for _, k := range keys {
		m.ZAdd(k, z)
	}
	s.expire(m, now, keys...)
	s.trim(m, now, keys...)
}

// expire pushes back the expiry of index keys just written to, so that an
// index no longer written goes with its last channels. A node does it for
// a key at most once a minute (less with a short retention): the entries
// written meanwhile then live at most that much less than the retention.
// A key written without it must already have an expiry, so whatever may
// delete an index key makes the node set every expiry again: the indexes
// of the states channels leave (active, ai_generated), whose keys empty
// as channels move on, get one on every write; unindex, and a failed
// round trip that carried index writes (indexing), reset the record.
func (s *Service) expire(m *rdb.Merge, now time.Time, keys ...string) {
	for _, k := range keys {
		if s.expiring(now, k) {
			m.Expire(k, s.o.Retention)
		}
	}
}

// expiring reports whether index key k's expiry is to be set with a write
// at now (see expire), and if so notes it.
func (s *Service) expiring(now time.Time, k string) bool {
	return alwaysExpired(k) || s.expiries.due(k, now, s.o.Retention)
}

// alwaysExpired reports whether k is the index of a state channels leave,
// whose expiry every write sets (see expire).
func alwaysExpired(k string) bool {
	return strings.HasSuffix(k, ":st:active") || strings.HasSuffix(k, ":st:ai_generated")
}

// indexing passes on the error of a round trip that carried index writes;
// a failed one may have left keys without the expiry the node recorded as
// set, so it forgets them all.
func (s *Service) indexing(err error) error {
	if err != nil {
		s.expiries.reset()
	}
	return err
}

// expiries remembers when this node last set each index key's expiry.
type expiries struct {
	mu   sync.Mutex
	next map[string]time.Time // key → when its expiry is due to be set again
}

// reset forgets every key: each gets its expiry set on its next write.
func (e *expiries) reset() {
	e.mu.Lock()
	e.next = nil
	e.mu.Unlock()
}

// maxExpiries bounds the map: past it, it starts over (every key's expiry
// is then set once more).
const maxExpiries = 1 << 14

// forget makes each of keys get its expiry set on its next write (they
// may have been emptied, so deleted).
func (e *expiries) forget(keys ...string) {
	e.mu.Lock()
	for _, k := range keys {
		delete(e.next, k)
	}
	e.mu.Unlock()
}

// due reports whether k's expiry should be set now, and if so notes it.
func (e *expiries) due(k string, now time.Time, retention time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.next[k]) {
		return false
	}
	e.setLocked(k, now, retention)
	return true
}

// owed reports whether k's expiry should be set now, noting nothing: its
// writer notes it (set) once the write is known to have been made.
func (e *expiries) owed(k string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !now.Before(e.next[k])
}

// set notes that k's expiry was set at now.
func (e *expiries) set(k string, now time.Time, retention time.Duration) {
	e.mu.Lock()
	e.setLocked(k, now, retention)
	e.mu.Unlock()
}

func (e *expiries) setLocked(k string, now time.Time, retention time.Duration) {
	if e.next == nil || len(e.next) >= maxExpiries {
		e.next = make(map[string]time.Time)
	}
	e.next[k] = now.Add(min(retention/100, time.Minute))
}

// unindex takes back indexNew, for channel t in status st, which was
// refused on a Cluster (its submission's script ran and queued nothing).
// A round trip that fails (a slow or absent Redis, often) leaves it to
// unindexLater.
func (s *Service) unindex(ctx context.Context, t *Task, st Status) {
	u := unindexed{ref: t.logRef(), st: st}
	if err := s.unindexFrom(ctx, []string{u.ref.cid}, [][]string{s.indexKeys(u.ref, st)}); err != nil {
		s.unindexLater(ctx, u)
	}
}

// unindexLater takes back indexNew for u later: for a channel whose
// acceptance is unknown (Redis did not answer, and may yet run its
// submission). It is noted in Redis (unindexKey), due unindexGrace later,
// and a round on any node (unindexDue) then takes the entries out if the
// channel's record is not in Redis: a note outlives its node. A note that
// cannot be written is kept in memory and written by the node's next
// round.
func (s *Service) unindexLater(ctx context.Context, u unindexed) {
	if err := s.noteUnindex(ctx, []unindexed{u}, s.o.Now().Add(unindexGrace)); err != nil {
		s.unindexQ.add(u)
	}
}

// unindexGrace is how long a note waits before its round: a submission
// whose answer was lost has landed by then, almost always. What makes the
// round right is its look at the record, not the wait: on one Redis, the
// look and the removal are one script (unindex.lua), and a sync run
// sends its record before its entries (but for a record script Redis had
// lost, sent again after them: rdb.Pipelined); on a Cluster the record and
// its entries go in one round trip, side by side, and the note is written
// once that round trip has answered or given up.
const unindexGrace = time.Second

// youngEntry is how long after its channel's creation a listing leaves an
// index entry without its record in place (skipped, not taken out): its
// record may still be on its way.
const youngEntry = time.Minute

// unindexKey is the set of channels to take out of the log indexes if
// their record is not in Redis, each (unindexed.member) scored with when
// it is due (unix ms); sweepKey the same for channels moved to the
// archive (sweepMoved), taken out of the indexes a late write can list
// them in (lateIndexKeys). They
// are two keys so that a node of an earlier version, which reads only the
// first, never reads a note it would take the wrong way.
func (s *Service) unindexKey() string { return s.o.Prefix + ":unindex" }
func (s *Service) sweepKey() string   { return s.o.Prefix + ":unindex:moved" }

// notesKey is the key of the notes of channels moved (sweepKey) or not.
func (s *Service) notesKey(moved bool) string {
	if moved {
		return s.sweepKey()
	}
	return s.unindexKey()
}

// unindexed is a channel to take out of the indexes of status st. One
// moved to the archive (settled in st) is taken out of every index a late
// write could list it in (lateIndexKeys): see Service.sweepMoved.
type unindexed struct {
	ref   logRef
	st    Status
	moved bool
}

// member is u as its notes key holds it: project, channel, workflow,
// event name and status, a line each; parseUnindexed reads it back.
func (u unindexed) member() string {
	return strings.Join([]string{u.ref.pid, u.ref.cid, u.ref.workflow, u.ref.event, string(u.st)}, "\n")
}

func parseUnindexed(m string, moved bool) (unindexed, bool) {
	f := strings.Split(m, "\n")
	if len(f) != 5 {
		return unindexed{}, false
	}
	return unindexed{logRef{f[0], f[1], f[2], f[3]}, Status(f[4]), moved}, true
}

// unindexKeys are the indexes u is taken out of.
func (s *Service) unindexKeys(u unindexed) []string {
	if u.moved {
		return s.lateIndexKeys(u.ref, u.st)
	}
	return s.indexKeys(u.ref, u.st)
}

// noteUnindex writes us, all moved or all not, into their notes key, due
// at due.
func (s *Service) noteUnindex(ctx context.Context, us []unindexed, due time.Time) error {
	if len(us) == 0 {
		return nil
	}
	score := float64(due.UnixMilli())
	zs := make([]redis.Z, len(us))
	for i, u := range us {
		zs[i] = redis.Z{Score: score, Member: u.member()}
	}
	return s.rdb.ZAdd(ctx, s.notesKey(us[0].moved), zs...).Err()
}

// unindexDue is the index removals' round, every second: it writes the
// notes kept in memory, then takes the channels due in unindexKey out of
// their indexes, those whose record is not in Redis (a submission whose
// outcome was unknown may have been accepted after all: its record then
// stands, with its entries), and those due in sweepKey out of the indexes
// a late write can list them in, likewise. It goes on while rounds come
// full.
func (s *Service) unindexDue() {
	for range maxUnindexRounds {
		n, err := s.unindexRound(s.runCtx, s.o.Now())
		if err != nil {
			s.o.Log.Warn().Err(err).Msg("log indexes: take back unaccepted or moved channels; tried again in a second")
		}
		if err != nil || n < maxUnindexRound {
			return
		}
	}
}

// maxUnindexRound bounds the notes of each key one round takes, and
// maxUnindexRounds the rounds a node makes at once, while they come full
// (the archive notes every channel it moves: see sweepMoved).
const (
	maxUnindexRound  = 500
	maxUnindexRounds = 40
)

// notesRetry is how long the notes a round took wait before another round
// may take them (takeNotes): the nodes share a backlog out, and the notes
// of a node that died midway are handled by another then.
const notesRetry = 10 * time.Second

var takeNotesScript = script("takenotes")

// unindexRound writes the notes kept in memory, then handles up to
// maxUnindexRound of each notes key's due at now, and returns the most it
// handled of one key.
func (s *Service) unindexRound(ctx context.Context, now time.Time) (int, error) {
	if us := s.unindexQ.take(); len(us) > 0 {
		if err := s.noteUnindex(ctx, us, now.Add(unindexGrace)); err != nil {
			for _, u := range us {
				s.unindexQ.add(u)
			}
			return 0, err
		}
	}
	most := 0
	for _, moved := range []bool{false, true} {
		n, err := s.notesRound(ctx, moved, now)
		if err != nil {
			return most, err
		}
		most = max(most, n)
	}
	return most, nil
}

// notesRound handles up to maxUnindexRound notes of notesKey(moved) due at
// now, and returns how many it took.
func (s *Service) notesRound(ctx context.Context, moved bool, now time.Time) (int, error) {
	key := s.notesKey(moved)
	members, err := takeNotesScript.Run(ctx, s.rdb, []string{key}, now.UnixMilli(), maxUnindexRound, notesRetry.Milliseconds()).StringSlice()
	if err != nil || len(members) == 0 {
		return 0, err
	}
	var us []unindexed
	var done []any // the notes handled
	for _, m := range members {
		u, ok := parseUnindexed(m, moved)
		if !ok {
			s.o.Log.Warn().Str("note", m).Msg("log indexes: a note to take back a channel that cannot be read; dropped")
		} else {
			us = append(us, u)
		}
		done = append(done, m)
	}
	cids := make([]string, len(us))
	keys := make([][]string, len(us))
	for i, u := range us {
		cids[i], keys[i] = u.ref.cid, s.unindexKeys(u)
	}
	if err := s.unindexIfGone(ctx, cids, keys); err != nil {
		return 0, err
	}
	return len(members), s.rdb.ZRem(ctx, key, done...).Err()
}

// unindexIfGone takes each channel cids[i] out of its index keys keys[i]
// if its record is not in Redis. On one Redis the look and the removal
// are one script; on a Cluster, where a channel's record and its indexes
// live in different slots, two round trips (see unindexGrace).
func (s *Service) unindexIfGone(ctx context.Context, cids []string, keys [][]string) error {
	if len(cids) == 0 {
		return nil
	}
	for _, ks := range keys {
		s.expiries.forget(ks...) // emptied keys go: their next write sets an expiry again
	}
	if !rdb.IsCluster(s.rdb) {
		var ks []string
		var args []any
		for i, cid := range cids {
			ks = append(append(ks, s.chKey(cid)), keys[i]...)
			args = append(args, len(keys[i]), cid)
		}
		return unindexScript.Run(ctx, s.rdb, ks, args...).Err()
	}
	exists := make([]*redis.IntCmd, len(cids))
	if err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, cid := range cids {
			exists[i] = p.Exists(ctx, s.chKey(cid))
		}
	}); err != nil {
		return err
	}
	return s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, cid := range cids {
			if exists[i].Val() == 0 {
				for _, k := range keys[i] {
					p.ZRem(ctx, k, cid)
				}
			}
		}
	})
}

// unindexQueue holds the notes a node could not write yet, a bounded
// number: past it, the entries of a channel that was never accepted stay
// until their index key expires (the logs skip an entry whose record is
// gone).
type unindexQueue struct {
	mu sync.Mutex
	us []unindexed
}

const maxUnindexQueue = 10000

func (q *unindexQueue) add(u unindexed) {
	q.mu.Lock()
	if len(q.us) < maxUnindexQueue {
		q.us = append(q.us, u)
	}
	q.mu.Unlock()
}

func (q *unindexQueue) take() []unindexed {
	q.mu.Lock()
	defer q.mu.Unlock()
	us := q.us
	q.us = nil
	return us
}

// indexMove moves a channel between status indexes, within m. Idempotent.
//
// Its ZADDs cannot see whether the channel is still in Redis. A first
// completion or settlement needs no such look: its channel is queued to
// move to the archive with it (or after it), a hot window (at least four
// leases) later; one whose writes go out more than a lease late (a Redis
// so slow that the batches lag) is looked at as a redo is (Service.late).
// A completion or settlement redone after a lease ran out
// may find its channel queued long since, and the archive may move it
// between the script that read the record and these writes: such a writer
// looks again once they have gone through (unindexGone), and the archive
// removes a channel's entries both before and after it deletes its keys.
// An entry written after the archive's second removal then finds the
// record gone and is taken back by its writer; one written before is
// taken by the archive; and one whose writer died or failed to look is
// taken by the move's sweep, a few leases later (sweepMoved).
func (s *Service) indexMove(m *rdb.Merge, r logRef, from, to Status) {
	now := s.o.Now()
	if stateOf(from) != stateOf(to) {
		for _, k := range s.stateKeys(r, from) {
			m.ZRem(k, r.cid)
		}
	}
	z := redis.Z{Score: float64(createdMS(r.cid, now)), Member: r.cid}
	keys := s.stateKeys(r, to)
	for _, k := range keys {
		m.ZAdd(k, z)
	}
	s.expire(m, now, keys...)
	s.trim(m, now, keys...)
}

// indexed is a channel indexMove moved to status to.
type indexed struct {
	ref logRef
	to  Status
}

// unindexGone takes back the index entries (indexMove's to) of the
// channels of redone whose record is no longer in Redis (moved to the
// archive, or expired), after those entries were written (see indexMove).
func (s *Service) unindexGone(ctx context.Context, redone []indexed) error {
	if len(redone) == 0 {
		return nil
	}
	cids := make([]string, len(redone))
	keys := make([][]string, len(redone))
	for i, r := range redone {
		cids[i], keys[i] = r.ref.cid, s.stateKeys(r.ref, r.to)
	}
	if err := s.unindexIfGone(ctx, cids, keys); err != nil {
		return fmt.Errorf("unindex moved channels: %w", err)
	}
	return nil
}

// LogFilter selects channels; zero fields do not filter.
type LogFilter struct {
	Workflow  string
	EventName string
	Status    Status
	From, To  time.Time // created at or after From, at or before To
}

// LogItem is a channel as the request log lists it.
type LogItem struct {
	ChannelID string  `json:"channel_id"`
	Workflow  string  `json:"workflow"`
	EventName *string `json:"event_name"`
	Status    Status  `json:"status"`
	CreatedAt string  `json:"created_at"`
	UpdatedAt string  `json:"updated_at"`
}

// ValidStatus reports whether st is a channel status.
func ValidStatus(st Status) bool {
	switch st {
	case StatusPending, StatusGenerating, StatusAIGenerated, StatusSuccess, StatusCompleted, StatusError:
		return true
	}
	return false
}

const (
	// logScanBudget bounds the index entries one page looks at: a page of
	// a rare combination of filters may come back short, with a cursor
	// to go on from, rather than slow.
	logScanBudget = 1000
	logBatchMin   = 100
)

type logCursor struct {
	score int64
	cid   string
}

func (c logCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.score, 10) + ":" + c.cid))
}

func parseLogCursor(s string) (logCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		score, cid, ok := strings.Cut(string(b), ":")
		if n, err := strconv.ParseInt(score, 10, 64); ok && err == nil && uuid.Validate(cid) == nil {
			return logCursor{n, cid}, nil
		}
	}
	return logCursor{}, apperr.Invalidf("cursor is not one this server gave out")
}

// Logs lists the project's channels that match f, newest first, a page at
// a time. The most selective index drives the scan and the other filters
// are checked on each channel's record; a page looks at no more than
// logScanBudget entries, so it may hold fewer than p.Limit items with a
// next cursor (more may follow), and next_cursor is null once there is
// nothing left.
//
// With an archive (Options.Archive), its channels are merged in: a page
// holds the newest of both that match, and goes no further back than
// either source has been read (the cursor resumes there).
func (s *Service) Logs(ctx context.Context, pid string, f LogFilter, p project.ListParams) (project.Page[LogItem], error) {
	page := project.Page[LogItem]{Items: []LogItem{}}
	p, err := p.Normalize()
	if err != nil {
		return page, err
	}
	if f.Status != "" && !ValidStatus(f.Status) {
		return page, apperr.Invalidf("status %q is not one of pending, generating, ai_generated, success, completed, error", f.Status)
	}
	var after *logCursor
	if p.Cursor != "" {
		c, err := parseLogCursor(p.Cursor)
		if err != nil {
			return page, err
		}
		after = &c
	}
	hot, last, err := s.hotLogs(ctx, pid, f, after, p.Limit)
	if err != nil {
		return page, err
	}
	var items []ArchivedLog
	if s.o.Archive == nil || (f.Status != "" && !f.Status.final()) { // the archive holds settled channels only
		items = hot
	} else if items, last, err = s.withArchived(ctx, pid, f, after, p.Limit, hot, last); err != nil {
		return page, err
	}
	for _, it := range items {
		page.Items = append(page.Items, it.LogItem)
	}
	if last != nil {
		c := last.String()
		page.NextCursor = &c
	}
	return page, nil
}

// withArchived merges a page of the archive's channels into hot, a page
// of Redis's read down to hotLast (nil: to the end), and returns the page
// and where the next one starts (nil: nothing left).
func (s *Service) withArchived(ctx context.Context, pid string, f LogFilter, after *logCursor, limit int,
	hot []ArchivedLog, hotLast *logCursor) ([]ArchivedLog, *logCursor, error) {
	var pos *LogPos
	if after != nil {
		pos = &LogPos{after.score, after.cid}
	}
	cold, err := s.o.Archive.Logs(ctx, pid, f, pos, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("read archived logs: %w", err)
	}
	// Redis may have been read only down to hotLast (its scan budget
	// spent): the page stops there, so that nothing below it is skipped.
	// (The archive's page, when full, reaches at least limit items
	// without a bound.)
	bound := hotLast
	seen := make(map[string]bool, len(hot))
	items := make([]ArchivedLog, 0, len(hot)+len(cold))
	for _, it := range hot {
		seen[it.ChannelID] = true
		items = append(items, it)
	}
	for _, it := range cold {
		if !seen[it.ChannelID] { // in both while it moves: Redis's answer
			items = append(items, it)
		}
	}
	slices.SortFunc(items, func(a, b ArchivedLog) int {
		if (logCursor{a.CreatedMS, a.ChannelID}).before(logCursor{b.CreatedMS, b.ChannelID}) {
			return -1
		}
		return 1
	})
	n := 0
	for _, it := range items {
		if bound != nil && bound.before(logCursor{it.CreatedMS, it.ChannelID}) {
			break
		}
		n++
	}
	if n >= limit {
		last := items[limit-1]
		return items[:limit], &logCursor{last.CreatedMS, last.ChannelID}, nil
	}
	return items[:n], bound, nil
}

// before reports whether c comes before d in the logs (newer, or as new
// with a greater id).
func (c logCursor) before(d logCursor) bool {
	return c.score > d.score || (c.score == d.score && c.cid > d.cid)
}

// hotLogs is Logs over Redis's indexes: the page, and where it stopped
// reading (nil: at the end).
func (s *Service) hotLogs(ctx context.Context, pid string, f LogFilter, after *logCursor, limit int) ([]ArchivedLog, *logCursor, error) {
	items := []ArchivedLog{}
	maxS, minS := "+inf", "-inf"
	if !f.To.IsZero() {
		maxS = strconv.FormatInt(f.To.UnixMilli(), 10)
	}
	if !f.From.IsZero() {
		minS = strconv.FormatInt(f.From.UnixMilli(), 10)
	}
	if after != nil && (f.To.IsZero() || after.score < f.To.UnixMilli()) {
		maxS = strconv.FormatInt(after.score, 10)
	}
	key, err := s.logDriver(ctx, pid, f, minS, maxS)
	if err != nil {
		return nil, nil, err
	}
	batch := min(max(2*limit, logBatchMin), 500)
	var last *logCursor
	var stale []any
	// An entry of a channel created within youngEntry may be on its way
	// with its record (on a Cluster they go side by side, maybe a while
	// after the channel id was made): skipped, not taken out.
	young := s.o.Now().Add(-youngEntry).UnixMilli()
	scanned, offset := 0, int64(0)
	for scanned < logScanBudget {
		// Each batch starts at the last entry seen (inclusive, skipping
		// what is at or before it), not at an offset: entries added or
		// removed meanwhile do not shift it. Offset only steps over a
		// batch of entries that all share one millisecond.
		zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, Start: maxS, Stop: minS, ByScore: true,
			Rev: true, Offset: offset, Count: int64(batch)}).Result()
		if err != nil {
			return nil, nil, fmt.Errorf("read log index: %w", err)
		}
		cmds := make([]*redis.SliceCmd, len(zs))
		if _, err := s.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
			for i, z := range zs {
				cmds[i] = pp.HMGet(ctx, s.chKey(z.Member.(string)), "project_id", "workflow", "event_name", "status", "created_at", "updated_at")
			}
			return nil
		}); err != nil {
			return nil, nil, fmt.Errorf("read channels: %w", err)
		}
		progressed := false
		for i, z := range zs {
			cid, score := z.Member.(string), int64(z.Score)
			if after != nil && score == after.score && cid >= after.cid {
				continue // at or before the cursor, or the last entry seen (same millisecond)
			}
			progressed = true
			scanned++
			last = &logCursor{score, cid}
			v := cmds[i].Val()
			str := func(j int) string { x, _ := v[j].(string); return x }
			if str(0) != pid {
				if score < young {
					stale = append(stale, cid) // expired
				}
				continue
			}
			it := LogItem{ChannelID: cid, Workflow: str(1), Status: Status(str(3)), CreatedAt: str(4), UpdatedAt: str(5)}
			if ev := str(2); ev != "" {
				it.EventName = &ev
			}
			if (f.Workflow != "" && it.Workflow != f.Workflow) || (f.EventName != "" && str(2) != f.EventName) ||
				(f.Status != "" && it.Status != f.Status) {
				continue
			}
			items = append(items, ArchivedLog{it, score})
			if len(items) == limit {
				break
			}
		}
		if len(items) == limit || len(zs) < batch {
			break
		}
		if progressed {
			after, offset = last, 0
			maxS = strconv.FormatInt(last.score, 10)
		} else {
			offset += int64(len(zs))
		}
	}
	if len(stale) > 0 {
		_ = s.rdb.ZRem(ctx, key, stale...).Err()
	}
	if exhausted := len(items) < limit && scanned < logScanBudget; exhausted {
		return items, nil, nil
	}
	return items, last, nil
}

// logDriver picks the index that answers f: the one of its status (by
// workflow or event when given), else of its workflow or event name, else
// every channel's. Given both a workflow and an event name, it takes the
// index with fewer entries in the time range and the other is checked on
// each record.
func (s *Service) logDriver(ctx context.Context, pid string, f LogFilter, minS, maxS string) (string, error) {
	var keys []string
	suffix := ""
	if f.Status != "" {
		suffix = ":st:" + stateOf(f.Status)
	}
	if f.Workflow != "" {
		keys = append(keys, s.logKeyOf(pid, "wf", f.Workflow+suffix))
	}
	if f.EventName != "" {
		keys = append(keys, s.logKeyOf(pid, "ev", f.EventName+suffix))
	}
	switch {
	case len(keys) == 0 && f.Status != "":
		return s.logKeyOf(pid, "st", stateOf(f.Status)), nil
	case len(keys) == 0:
		return s.logKey(pid), nil
	case len(keys) == 1:
		return keys[0], nil
	}
	counts := make([]*redis.IntCmd, len(keys))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			counts[i] = p.ZCount(ctx, k, minS, maxS)
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("count log indexes: %w", err)
	}
	best := 0
	for i, c := range counts {
		if c.Val() < counts[best].Val() {
			best = i
		}
	}
	return keys[best], nil
}
