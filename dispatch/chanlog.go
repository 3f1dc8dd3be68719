package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A channel's delivery log is what the engine did with the channel's
// events (attempts, dead letters, cancellations, pauses, replays), as
// entries for the channel's timeline. The engine alone writes it, in the
// same round trips as the changes it reports; channels reads it with
// ChannelLog and merges it into the timeline it shows. The key carries the
// channel's hash tag, so it lives on the channel's Cluster slot:
//
//	P:dl:{cid}   LIST  entries (JSON), oldest first; expires Retention after the last one
//
// Once a settled channel's hot window has passed, package channels folds
// the list into the channel's compressed document and deletes it (its
// fold.go); entries written later start the list anew, and channels reads
// the document's entries before the list's.

// testChannelPrefix starts the channel id of a test delivery (SendTest):
// no channel has it, so such deliveries keep no log.
const testChannelPrefix = "test_"

func (e *Engine) logKey(cid string) string { return e.o.Prefix + ":dl:{" + cid + "}" }

// ChannelLog returns the channel's delivery log, oldest first: JSON
// objects, each with "at" (wire.TimeFormat) and "type".
func (e *Engine) ChannelLog(ctx context.Context, channelID string) ([]json.RawMessage, error) {
	raw, err := e.rdb.LRange(ctx, e.logKey(channelID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read delivery log: %w", err)
	}
	out := make([]json.RawMessage, len(raw))
	for i, r := range raw {
		out[i] = json.RawMessage(r)
	}
	return out, nil
}

// MaxCallbackWait is the longest an event-driven channel may await its
// backend's callback (a workflow's callback_timeout_seconds is at most a
// day). Its record is kept that much longer than the retention, and so is
// the log of its task.ai_generated deliveries.
const MaxCallbackWait = 24 * time.Hour

var logAppendScript = script("logappend")

// logBatch gathers log entries by channel, so that a round trip writes
// each channel's log once (logappend.lua: the entries and the expiry
// together).
type logBatch struct {
	cids    []string // in order of first entry
	entries map[string][]any
	awaits  map[string]bool // the channel awaits a callback: keep its log longer
}

// add adds entries about the channel's deliveries of event.
func (b *logBatch) add(cid, event string, entries ...[]byte) {
	if len(entries) == 0 || strings.HasPrefix(cid, testChannelPrefix) {
		return
	}
	if b.entries == nil {
		b.entries, b.awaits = make(map[string][]any), make(map[string]bool)
	}
	if _, ok := b.entries[cid]; !ok {
		b.cids = append(b.cids, cid)
	}
	for _, en := range entries {
		b.entries[cid] = append(b.entries[cid], en)
	}
	if event == "task.ai_generated" {
		b.awaits[cid] = true
	}
}

// writeLogs queues the batch into p.
func (e *Engine) writeLogs(ctx context.Context, p redis.Pipeliner, b *logBatch) {
	for _, cid := range b.cids {
		keep := e.o.Retention
		if b.awaits[cid] {
			keep += MaxCallbackWait
		}
		logAppendScript.Eval(ctx, p, []string{e.logKey(cid)}, append([]any{keep.Milliseconds()}, b.entries[cid]...)...)
	}
}
