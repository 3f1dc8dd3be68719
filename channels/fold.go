package channels

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Folding: a settled channel, once its hot window has passed, keeps its
// final message, metadata, timeline and delivery log as one compressed
// document, beside a record of small fields only (which Redis then stores
// in its compact listpack encoding):
//
//	P:{fold}:due    ZSET  settled channels → when their hot window ends (unix ms),
//	                      one set per partition (tag {fold.<s>} past the first)
//	P:ch:{cid}:z    STRING the folded document (flate-compressed JSON, see folded),
//	                      expiring with the record
//
// compact queues a channel with its settlement; a loop on every node folds
// the channels due, a batch at a time: it reads what it folds, compresses
// it, and fold.lua swaps it in only if nothing was added meanwhile (else
// the next round tries again); two nodes folding one channel fold it once.
// Entries written after the fold (a rejected late callback, a delivery
// retried for days) go to the lists as before, and a read merges the
// document's entries first, then the lists'.

// folded is the document a channel is folded into.
type folded struct {
	Message  json.RawMessage   `json:"message,omitempty"`
	Metadata json.RawMessage   `json:"metadata,omitempty"`
	Timeline []json.RawMessage `json:"tl,omitempty"`
	Log      []json.RawMessage `json:"dl,omitempty"`
	// Record is the record's other fields, in an archived channel's
	// document only (archive.go).
	Record map[string]string `json:"record,omitempty"`
	// archived: read from the archive (nothing of it can move any more).
	archived bool
}

var foldScript = script("fold")

const foldBatch = 256

// foldKeys are the sets of channels to fold, one per partition.
func foldKeys(prefix string, n int) []string { return partitionSets(prefix, "fold", n) }

func (s *Service) foldKey(cid string) string { return s.foldKeys[s.q.parts.Of(cid)] }
func (s *Service) zKey(cid string) string    { return s.o.Prefix + ":ch:{" + cid + "}:z" }
func (s *Service) dlKey(cid string) string   { return s.o.Prefix + ":dl:{" + cid + "}" }

// foldEvery is how often a node looks for channels to fold.
func (s *Service) foldEvery() time.Duration {
	return min(max(s.o.HotWindow/4, 100*time.Millisecond), 30*time.Second)
}

// foldAllDue folds the channels whose hot window has passed, a batch of
// each partition after another, while batches come full.
//
// With an archive (Options.Archive) they are moved to it instead
// (archive.go).
func (s *Service) foldAllDue() {
	do, what := s.foldDue, "fold settled channels; retried"
	if s.o.Archive != nil {
		do, what = s.archiveDue, "archive settled channels; retried"
	}
	for k := range s.foldKeys {
		for s.runCtx.Err() == nil {
			n, err := do(s.runCtx, k)
			if err != nil {
				if s.runCtx.Err() == nil {
					s.o.Log.Warn().Err(err).Msg(what)
				}
				break
			}
			if n < foldBatch {
				break
			}
		}
	}
}

// foldDue folds up to a batch of partition k's due channels and returns
// how many it looked at.
func (s *Service) foldDue(ctx context.Context, k int) (int, error) {
	key := s.foldKeys[k]
	ids, err := s.rdb.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf",
		Max: strconv.FormatInt(s.o.Now().UnixMilli(), 10), Count: foldBatch}).Result()
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	type read struct {
		fields *redis.SliceCmd
		tl, dl *redis.StringSliceCmd
	}
	reads := make([]read, len(ids))
	if err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, cid := range ids {
			reads[i] = read{p.HMGet(ctx, s.chKey(cid), "message", "metadata", "tl"),
				p.LRange(ctx, s.tlKey(cid), 0, -1), p.LRange(ctx, s.dlKey(cid), 0, -1)}
		}
	}); err != nil {
		return 0, fmt.Errorf("read channels to fold: %w", err)
	}
	cmds := make([]*redis.Cmd, len(ids))
	if err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, cid := range ids {
			r := reads[i]
			v := r.fields.Val()
			msg, _ := v[0].(string)
			meta, _ := v[1].(string)
			tl, _ := v[2].(string)
			doc, err := packFolded(folded{Message: raw(msg), Metadata: raw(meta), Timeline: timelineOf(r.tl.Val(), tl), Log: raws(r.dl.Val())})
			if err != nil {
				continue // not folded: left in the set, logged below
			}
			cmds[i] = foldScript.Eval(ctx, p, []string{s.chKey(cid), s.tlKey(cid), s.dlKey(cid), s.zKey(cid)},
				doc, len(r.tl.Val()), len(r.dl.Val()), s.o.Retention.Milliseconds(), len(tl))
		}
	}); err != nil {
		return 0, fmt.Errorf("fold channels: %w", err)
	}
	var done []any
	var live []string
	ok := 0
	for i, c := range cmds {
		if c == nil {
			s.o.Log.Warn().Str("channel_id", ids[i]).Msg("fold: could not encode; left as it is")
			done = append(done, ids[i])
			continue
		}
		switch st, _ := c.Text(); st {
		case "moved": // read again next round
		case "ok":
			ok++
			done = append(done, ids[i])
		case "live":
			live = append(live, ids[i])
		default: // done (by another node), gone
			done = append(done, ids[i])
		}
	}
	if len(done) > 0 {
		if err := s.rdb.ZRem(ctx, key, done...).Err(); err != nil {
			return 0, fmt.Errorf("fold channels: %w", err)
		}
	}
	if err := s.putOff(ctx, key, live); err != nil {
		return 0, fmt.Errorf("fold channels: %w", err)
	}
	s.m.folded.Add(float64(ok))
	return len(ids), nil
}

// putOff puts channels ids of the due set key off by a hot window: they
// are not settled (a run that lost its lease queued them with a final
// status the winner did not have). Their settlement queues them again,
// but a removal here could take that entry away too, had it come between
// the read and the removal; pushed back instead (never brought forward,
// never added again once gone), they are looked at again then.
func (s *Service) putOff(ctx context.Context, key string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	zs := make([]redis.Z, len(ids))
	for i, cid := range ids {
		zs[i] = s.foldEntry(cid)
	}
	if err := s.rdb.ZAddArgs(ctx, key, redis.ZAddArgs{XX: true, GT: true, Members: zs}).Err(); err != nil {
		return fmt.Errorf("put off channels not settled: %w", err)
	}
	return nil
}

func raw(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

func raws(ss []string) []json.RawMessage {
	out := make([]json.RawMessage, len(ss))
	for i, s := range ss {
		out[i] = json.RawMessage(s)
	}
	return out
}

// foldDict primes the compressor with what every document repeats, so
// that one channel's few hundred bytes compress as well as a long text.
// Documents are read with the dictionary they were written with: it must
// not change without a new foldVersion (and this one kept for reading).
var foldDict = []byte(`{"message":{"status":"success","channel_id":"","customer_data":{},"data":{},` +
	`"meta":{"attempts":[{"duration_ms":0,"model":"","provider":"","success":true}],"duration_ms":,"model":"","provider":"",` +
	`"tokens":{"completion":,"prompt":,"total":}},"timestamp":"20","type":"task.completed","workflow":""},` +
	`"tl":[{"at":"20","node":"","type":"request","workflow":""},{"at":"","node":"","type":"generating"},` +
	`{"at":"","duration_ms":0,"model":"","provider":"","success":true,"type":"ai_attempt"},{"at":"","node":"","type":"completed"},` +
	`{"at":"","node":"","status":"success","type":"broadcast"},{"at":"","deadline":"","node":"","type":"ai_generated"},` +
	`{"answer":200,"at":"","callback":{"data":{},"metadata":{},"task_id":""},"node":"","status":"completed","type":"callback"}],` +
	`"dl":[{"at":"","attempt":1,"delivery_id":"msg_","duration_ms":,"event":"task.completed","status_code":200,"success":true,` +
	`"type":"delivery_attempt","url":"https://","webhook_id":"wh_"}],"ai_response":{"data":{}},"callback_metadata":{},` +
	`"event_name":"","task_id":"","task.ai_generated","error":{"code":"","message":""}}`)

// foldWriters are compressors primed with foldDict (a new one costs far
// more than a document's compression).
var foldWriters = sync.Pool{New: func() any {
	w, err := flate.NewWriterDict(io.Discard, foldLevel, foldDict)
	if err != nil {
		panic(err) // only for a bad level
	}
	return w
}}

const foldLevel = flate.DefaultCompression

// foldVersion is a document's first byte: its format (JSON, flate with
// foldDict).
const foldVersion = 1

// packFolded encodes and compresses a document.
func packFolded(f folded) ([]byte, error) {
	var j bytes.Buffer
	enc := json.NewEncoder(&j)
	enc.SetEscapeHTML(false) // the messages keep their bytes ("<" stays "<")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	b := bytes.NewBuffer([]byte{foldVersion})
	w := foldWriters.Get().(*flate.Writer)
	defer foldWriters.Put(w)
	w.Reset(b)
	if _, err := w.Write(j.Bytes()); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// unfold reads a channel's folded document; nil when it has none.
func (s *Service) unfold(ctx context.Context, cid string) (*folded, error) {
	b, err := s.rdb.Get(ctx, s.zKey(cid)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read folded channel: %w", err)
	}
	return unpackFolded(b)
}

func unpackFolded(b []byte) (*folded, error) {
	if len(b) == 0 || b[0] != foldVersion {
		return nil, errors.New("folded channel: unknown format")
	}
	j, err := io.ReadAll(flate.NewReaderDict(bytes.NewReader(b[1:]), foldDict))
	if err != nil {
		return nil, fmt.Errorf("folded channel: %w", err)
	}
	var f folded
	if err := json.Unmarshal(j, &f); err != nil {
		return nil, fmt.Errorf("folded channel: %w", err)
	}
	// A node of an earlier version, archiving a channel whose timeline is
	// in its record's field (during a rolling upgrade), kept the field
	// among the record's other fields: its entries are the timeline's.
	if tl, ok := f.Record["tl"]; ok {
		f.Timeline = append(f.Timeline, timelineOf(nil, tl)...)
		delete(f.Record, "tl")
	}
	return &f, nil
}

// FinalMessage is a settled channel's final message and its seq in the
// room, wherever they are kept (the record, its folded document, the
// archive): for the hub's late joins (hub.Options.FinalMessage). Both are
// empty for a channel not finished, or gone.
func (s *Service) FinalMessage(ctx context.Context, cid string) (seq string, msg json.RawMessage, err error) {
	v, err := s.rdb.HMGet(ctx, s.chKey(cid), "project_id", "room_seq", "message").Result()
	if err != nil {
		return "", nil, err
	}
	owner, _ := v[0].(string)
	seq, _ = v[1].(string)
	m, _ := v[2].(string)
	var f *folded
	switch {
	case seq == "" && owner != "": // not finished
		return "", nil, nil
	case m != "":
		return seq, json.RawMessage(m), nil
	case owner == "" && s.o.Archive != nil:
		a, err := s.o.Archive.Get(ctx, cid)
		if a == nil || err != nil {
			return "", nil, err
		}
		if f, err = unpackFolded(a.Doc); err != nil {
			return "", nil, err
		}
		seq = f.Record["room_seq"]
	case owner != "":
		if f, err = s.unfold(ctx, cid); err != nil {
			return "", nil, err
		}
	}
	if f == nil || seq == "" || len(f.Message) == 0 {
		return "", nil, nil
	}
	return seq, f.Message, nil
}
