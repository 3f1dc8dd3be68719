package channels

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb"
)

// The archive: with Options.Archive set, a settled channel whose hot
// window has passed is not folded in Redis but moved out of it (package
// archive keeps it in PostgreSQL). The same loop that folds takes the
// channels due from the same sets:
//
//  1. it reads each channel's record, timeline, delivery log and folded
//     document (one an earlier version may have written);
//  2. it stores them in the archive, a batch at once, replacing what it
//     holds under the same ids (a batch sent again after a crash changes
//     nothing: the channel id is the archive's key);
//  3. its log-index entries are removed, then archive.lua deletes its
//     keys, if its lists and its record's timeline did not grow since they
//     were read (else the next round stores it again, whole);
//  4. they are noted to be taken out of the log indexes once more, a few
//     leases later (sweepMoved), and the channels done leave the due set.
//
// A node that dies between two steps leaves the channel due: the next
// round repeats from step 1. While the archive cannot be written, the
// channels wait in Redis (as settled, not folded) and nothing else slows.
//
// Readers look in Redis first and in the archive for a record that is not
// there: the channel API (Get), its timeline, a late join's final message,
// a repeated callback's answer; the request logs merge both, newest first.
// Entries written after a channel left Redis (a refused late callback, a
// delivery retried for days) go to its lists as before and are read after
// the archived ones.

// Archive keeps settled channels outside Redis (package archive).
type Archive interface {
	// Put stores channels, replacing any stored under the same ids with
	// no more Entries.
	Put(ctx context.Context, cs []Archived) error
	// Get returns an archived channel, or nil when none is stored under cid.
	Get(ctx context.Context, cid string) (*Archived, error)
	// Logs lists a project's archived channels that match f, newest first
	// (by CreatedMS, then channel id), strictly after the position after
	// when it is not nil, at most limit of them.
	Logs(ctx context.Context, pid string, f LogFilter, after *LogPos, limit int) ([]ArchivedLog, error)
}

// Archived is a settled channel as the archive keeps it.
type Archived struct {
	ChannelID, ProjectID, Workflow, EventName string
	Status                                    Status
	CreatedAt, UpdatedAt                      string // as the record had them (RFC 3339)
	CreatedMS                                 int64  // the channel's position in the request logs
	// Doc is the rest, as a folded document (packFolded): the final
	// message, metadata, timeline, delivery log and the record's other
	// fields.
	Doc []byte
	// Entries counts the document's timeline and delivery-log entries:
	// while a channel is in Redis its lists only grow, so of two copies
	// stored by nodes that read it at different times, the archive keeps
	// the one with more.
	Entries int
}

// LogPos is a position in the request logs: newest first, by creation
// (unix ms), then by channel id.
type LogPos struct {
	CreatedMS int64
	ChannelID string
}

// ArchivedLog is an archived channel as the request logs list it.
type ArchivedLog struct {
	LogItem
	CreatedMS int64
}

var archiveScript = script("archive")

// archiveTimeout bounds one batch's write to the archive.
const archiveTimeout = 30 * time.Second

// archiveDue moves up to a batch of partition k's due channels to the
// archive and returns how many it looked at.
//
// It takes up to archiveWorkers batches at once and moves them side by
// side (each its own round trips to Redis and statement to the archive),
// so that one batch's waits overlap another's work.
func (s *Service) archiveDue(ctx context.Context, k int) (int, error) {
	key := s.foldKeys[k]
	// Nodes moving the same channels at once store them more than once,
	// harmlessly (Archive.Put keeps the copy with more entries; archive.lua
	// deletes only what was read).
	ids, err := s.rdb.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf",
		Max: strconv.FormatInt(s.o.Now().UnixMilli(), 10), Count: foldBatch * archiveWorkers}).Result()
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	errs := make(chan error, archiveWorkers)
	n := 0
	for len(ids) > 0 {
		chunk := ids[:min(foldBatch, len(ids))]
		ids = ids[len(chunk):]
		n += len(chunk)
		go func() { errs <- s.archiveBatch(ctx, key, chunk) }()
	}
	var first error
	for range (n + foldBatch - 1) / foldBatch {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if n > foldBatch && first == nil {
		n = foldBatch // a full round: the caller goes on
	}
	return n, first
}

// archiveWorkers is how many batches a node moves at once.
const archiveWorkers = 4

// archiveBatch moves channels ids of the due set key to the archive.
func (s *Service) archiveBatch(ctx context.Context, key string, ids []string) error {
	type read struct {
		rec    *redis.MapStringStringCmd
		tl, dl *redis.StringSliceCmd
		z      *redis.StringCmd
	}
	reads := make([]read, len(ids))
	if err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, cid := range ids {
			reads[i] = read{p.HGetAll(ctx, s.chKey(cid)), p.LRange(ctx, s.tlKey(cid), 0, -1),
				p.LRange(ctx, s.dlKey(cid), 0, -1), p.Get(ctx, s.zKey(cid))}
		}
	}); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read channels to archive: %w", err)
	}
	for _, r := range reads { // a missing document is no error; any other is
		for _, err := range []error{r.rec.Err(), r.tl.Err(), r.dl.Err(), r.z.Err()} {
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("read channels to archive: %w", err)
			}
		}
	}
	var done []any
	var batch []Archived
	var refs []logRef
	var lens [][3]int
	var cids []string
	var gone []string // due, but no record in Redis
	var live []string // due, but not settled
	for i, cid := range ids {
		r := reads[i]
		if len(r.rec.Val()) == 0 {
			gone = append(gone, cid)
			continue
		}
		a, err := s.archived(cid, r.rec.Val(), r.tl.Val(), r.dl.Val(), []byte(r.z.Val()))
		switch {
		case err != nil:
			s.o.Log.Warn().Err(err).Str("channel_id", cid).Msg("archive: could not encode; left in Redis")
			done = append(done, cid)
			continue
		case a == nil && r.rec.Val()["project_id"] != "":
			live = append(live, cid)
			continue
		case a == nil:
			done = append(done, cid) // a fragment written after the record expired
			continue
		}
		batch = append(batch, *a)
		refs = append(refs, logRef{a.ProjectID, cid, a.Workflow, a.EventName})
		lens = append(lens, [3]int{len(r.tl.Val()), len(r.dl.Val()), len(r.rec.Val()["tl"])})
		cids = append(cids, cid)
	}
	goneDone, swept, err := s.unindexGoneDue(ctx, gone)
	if err != nil {
		return err
	}
	for _, cid := range goneDone {
		done = append(done, cid)
	}
	if len(batch) > 0 {
		pctx, cancel := context.WithTimeout(ctx, archiveTimeout)
		err := s.o.Archive.Put(pctx, batch)
		cancel()
		if err != nil {
			return fmt.Errorf("archive channels: %w", err)
		}
	}
	cmds := make([]*redis.Cmd, len(batch))
	if len(batch) > 0 {
		// The archive answers for them from now on: their log-index
		// entries go first (every status's, stale ones too), then their
		// keys; a node that dies in between leaves them in Redis, unlisted
		// there, listed from the archive, and due: moved again next round.
		// The entries go once more after the keys, from the indexes a
		// completion or settlement redone meanwhile may have written them
		// in again (lateIndexKeys; see indexMove).
		sts := make([]Status, len(batch))
		for i := range batch {
			sts[i] = batch[i].Status
		}
		if err := s.unindexEvery(ctx, refs, sts, s.everyIndexKey); err != nil {
			return fmt.Errorf("archive channels: unindex: %w", err)
		}
		if err := s.pipelined(ctx, func(p redis.Pipeliner) {
			for i, cid := range cids {
				cmds[i] = archiveScript.Eval(ctx, p, []string{s.chKey(cid), s.tlKey(cid), s.dlKey(cid), s.zKey(cid)},
					lens[i][0], lens[i][1], lens[i][2])
			}
		}); err != nil {
			return fmt.Errorf("archive channels: remove from Redis: %w", err)
		}
		if err := s.unindexEvery(ctx, refs, sts, s.lateIndexKeys); err != nil {
			return fmt.Errorf("archive channels: unindex: %w", err)
		}
	}
	ok := 0
	for i, c := range cmds {
		if st, _ := c.Text(); st != "moved" { // moved: stored again, whole, next round
			ok++
			done = append(done, cids[i])
			swept = append(swept, unindexed{ref: refs[i], st: batch[i].Status, moved: true})
		}
	}
	if err := s.sweepMoved(ctx, swept); err != nil {
		return fmt.Errorf("archive channels: %w", err)
	}
	if err := s.putOff(ctx, key, live); err != nil {
		return fmt.Errorf("archive channels: %w", err)
	}
	if len(done) > 0 {
		if err := s.rdb.ZRem(ctx, key, done...).Err(); err != nil {
			return fmt.Errorf("archive channels: %w", err)
		}
	}
	s.m.archived.Add(float64(ok))
	return nil
}

// unindexGoneDue takes out of every log index the channels of ids, due to
// move but no longer in Redis, that the archive holds, and returns those
// done, and those of them the archive holds, to sweep (sweepMoved): a
// round cut short (its node died) after it deleted their keys and
// before its second removal of their index entries leaves them due, and a
// completion or settlement redone meanwhile may have indexed them again
// (see indexMove). Those the archive does not hold have expired. One the
// archive cannot be asked about stays due (the next round asks again);
// the others go on.
func (s *Service) unindexGoneDue(ctx context.Context, ids []string) (done []string, swept []unindexed, err error) {
	var refs []logRef
	var sts []Status
	for _, cid := range ids {
		gctx, cancel := context.WithTimeout(ctx, archiveTimeout)
		a, err := s.o.Archive.Get(gctx, cid)
		cancel()
		if err != nil {
			s.o.Log.Warn().Err(err).Str("channel_id", cid).Msg("archive: look up a moved channel; asked again next round")
			continue
		}
		if a != nil {
			refs = append(refs, logRef{a.ProjectID, cid, a.Workflow, a.EventName})
			sts = append(sts, a.Status)
			swept = append(swept, unindexed{ref: refs[len(refs)-1], st: a.Status, moved: true})
		}
		done = append(done, cid)
	}
	if len(refs) > 0 {
		if err := s.unindexEvery(ctx, refs, sts, s.everyIndexKey); err != nil {
			return nil, nil, fmt.Errorf("archive channels: unindex: %w", err)
		}
	}
	return done, swept, nil
}

// sweepMoved notes the channels us, just moved to the archive, to be taken
// out of the log indexes a late write can list them in (lateIndexKeys)
// once more, a sweepLeases of
// leases later, by any node's round (unindexDue), if their record is not
// in Redis again: an index entry written after the move's second removal
// (a completion or settlement redone by a node that died before its own
// look, whose look failed, or whose writes Redis ran late) is taken out
// then, with no writer left to notice it. The note goes before the
// channels leave the due set: a node that dies in between leaves them due,
// and the next round notes them again (unindexGoneDue).
func (s *Service) sweepMoved(ctx context.Context, us []unindexed) error {
	if len(us) == 0 {
		return nil
	}
	if err := s.noteUnindex(ctx, us, s.o.Now().Add(sweepLeases*s.o.Lease)); err != nil {
		return fmt.Errorf("note the moved channels' sweep: %w", err)
	}
	return nil
}

// sweepLeases is how many leases after a move its sweep comes: a writer
// more than a lease late looks at the record itself (Service.late).
const sweepLeases = 3

// unindexEvery removes channels refs, settled in statuses sts, from the
// log indexes of each that indexes gives (everyIndexKey, lateIndexKeys),
// in one round trip.
func (s *Service) unindexEvery(ctx context.Context, refs []logRef, sts []Status, indexes func(logRef, Status) []string) error {
	cids := make([]string, len(refs))
	keys := make([][]string, len(refs))
	for i, r := range refs {
		cids[i], keys[i] = r.cid, indexes(r, sts[i])
	}
	return s.unindexFrom(ctx, cids, keys)
}

// unindexFrom takes each channel cids[i] out of the index keys keys[i],
// in one round trip.
func (s *Service) unindexFrom(ctx context.Context, cids []string, keys [][]string) error {
	for _, ks := range keys {
		s.expiries.forget(ks...) // emptied keys go: their next write sets an expiry again
	}
	return s.indexing(rdb.PipelinedMerge(ctx, s.rdb, func(p redis.Pipeliner, m *rdb.Merge) {
		for i, cid := range cids {
			for _, k := range keys[i] {
				m.ZRem(k, cid)
			}
		}
	}))
}

// everyIndexKey is every log index r, settled in status st, could be in:
// its status's, and (stale entries) the live statuses' it went through.
func (s *Service) everyIndexKey(r logRef, st Status) []string {
	keys := append(s.indexKeys(r, st), s.stateKeys(r, StatusPending)...)
	if r.event != "" { // only event-driven channels await a callback
		keys = append(keys, s.stateKeys(r, StatusAIGenerated)...)
	}
	return keys
}

// lateIndexKeys are the log indexes a write after channel r settled in
// st can list it in again: a completion or settlement redone, or sent
// late (indexMove), writes its status's state indexes only, and for an
// event-driven channel that may be the wait for its callback's. The
// indexes a submission writes (indexNew) are written before it settles.
func (s *Service) lateIndexKeys(r logRef, st Status) []string {
	keys := s.stateKeys(r, st)
	if r.event != "" && st != StatusAIGenerated {
		keys = append(keys, s.stateKeys(r, StatusAIGenerated)...)
	}
	return keys
}

// archived is what the archive keeps of a channel read from Redis: nil
// when its record has expired (a fragment, without its project), or is
// not settled (putOff).
func (s *Service) archived(cid string, rec map[string]string, tl, dl []string, z []byte) (*Archived, error) {
	if rec["project_id"] == "" || !Status(rec["status"]).final() {
		return nil, nil
	}
	f := &folded{}
	if len(z) > 0 { // folded before: its document's entries come first
		var err error
		if f, err = unpackFolded(z); err != nil {
			return nil, err
		}
	}
	if m := rec["message"]; m != "" {
		f.Message = raw(m)
	}
	if m := rec["metadata"]; m != "" {
		f.Metadata = raw(m)
	}
	f.Timeline = append(f.Timeline, timelineOf(tl, rec["tl"])...)
	f.Log = append(f.Log, raws(dl)...)
	a := &Archived{ChannelID: cid, ProjectID: rec["project_id"], Workflow: rec["workflow"], EventName: rec["event_name"],
		Status: Status(rec["status"]), CreatedAt: rec["created_at"], UpdatedAt: rec["updated_at"]}
	created, _ := time.Parse(time.RFC3339Nano, a.CreatedAt)
	a.CreatedMS = createdMS(cid, created)
	f.Record = make(map[string]string, len(rec))
	for k, v := range rec {
		switch {
		case slices.Contains(liveFields, k): // its compaction was cut short
		case k == "project_id", k == "workflow", k == "event_name", k == "status", k == "created_at", k == "updated_at",
			k == "message", k == "metadata", k == "tl":
		default:
			f.Record[k] = v
		}
	}
	doc, err := packFolded(*f)
	if err != nil {
		return nil, err
	}
	a.Doc = doc
	a.Entries = len(f.Timeline) + len(f.Log)
	return a, nil
}

// fromArchive is the project's archived channel: its view and document;
// not found (a zero View) when the archive does not hold it.
func (s *Service) fromArchive(ctx context.Context, pid, cid string) (View, *folded, error) {
	if s.o.Archive == nil {
		return View{}, nil, nil
	}
	a, err := s.o.Archive.Get(ctx, cid)
	if err != nil {
		return View{}, nil, fmt.Errorf("get channel: %w", err)
	}
	if a == nil || a.ProjectID != pid {
		return View{}, nil, nil
	}
	f, err := unpackFolded(a.Doc)
	if err != nil {
		return View{}, nil, err
	}
	f.archived = true
	v := View{ChannelID: cid, ProjectID: a.ProjectID, Workflow: a.Workflow, Status: a.Status, CreatedAt: a.CreatedAt,
		UpdatedAt: a.UpdatedAt, Message: json.RawMessage("null"), Metadata: json.RawMessage("null")}
	if a.EventName != "" {
		ev := a.EventName
		v.EventName = &ev
	}
	if len(f.Message) > 0 {
		v.Message = f.Message
	}
	if len(f.Metadata) > 0 {
		v.Metadata = f.Metadata
	}
	return v, f, nil
}
