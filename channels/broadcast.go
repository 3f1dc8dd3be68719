package channels

import (
	"context"
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/wire"
)

var broadcastScript = script("tl", "broadcast")

// broadcasts are the room publishes queued into one pipeline (and its
// retries). On the callback paths each publish is followed in the pipeline
// by channels' own "broadcast" entry on the channel's timeline
// (broadcast.lua: once per status, so side effects redone after a crash or
// by a run that lost the race log nothing twice, and a redo after a failed
// round trip logs what was missing). A final message whose entry was
// written with the outcome that decided it, once, goes out alone
// (publish): a task's (complete.lua), and an event-driven channel's when
// its room surely held the generation's messages (callback.lua, fire.lua,
// settle.lua). The hub only publishes, and reports.
type broadcasts struct {
	s    *Service
	sent []broadcast
}

type broadcast struct {
	cid string
	seq func() (int64, error)
}

// add queues msg's publish into cid's room, and its timeline entry, within
// p; without a Publisher (a node with no rooms) it does nothing.
func (b *broadcasts) add(ctx context.Context, p redis.Pipeliner, pid, cid string, st Status, msg json.RawMessage) {
	if !b.publish(ctx, p, pid, cid, msg) {
		return
	}
	broadcastScript.Eval(ctx, p, []string{b.s.chKey(cid), b.s.tlKey(cid)}, string(st), b.s.broadcastEntry(wire.Stamp(b.s.o.Now()), st))
}

// broadcastEntry is the timeline entry that the room was sent the message
// of status st, at at; none (empty) on a node without rooms.
func (s *Service) broadcastEntry(at string, st Status) []byte {
	if s.o.Publisher == nil {
		return nil
	}
	return wire.MustJSON(Entry{At: at, Type: "broadcast", Status: st, Node: s.o.Node})
}

// announcedFor is how long after the generation noted its messages sent
// (announce.lua) a settlement skips sending them again (ms): half the
// retention, for which the room keeps them after their publish.
func (s *Service) announcedFor() int64 { return (s.o.Retention / 2).Milliseconds() }

// publish queues msg's publish alone, for a message whose entry is logged
// elsewhere (a task's completion logs it with the outcome, complete.lua);
// it reports whether it queued anything.
func (b *broadcasts) publish(ctx context.Context, p redis.Pipeliner, pid, cid string, msg json.RawMessage) bool {
	if b.s.o.Publisher == nil || len(msg) == 0 {
		return false
	}
	b.sent = append(b.sent, broadcast{cid: cid, seq: b.s.o.Publisher.PublishIn(ctx, p, pid, cid, msg)})
	return true
}

// publishLone queues the publish of a channel's only message, its seq
// already in the record (LonePublisher).
func (b *broadcasts) publishLone(ctx context.Context, p redis.Pipeliner, pid, cid string, msg json.RawMessage) {
	b.sent = append(b.sent, broadcast{cid: cid, seq: b.s.o.Publisher.(LonePublisher).PublishLoneIn(ctx, p, pid, cid, msg)})
}

// check reads what the room reported once the pipeline has run, and logs
// the publishes that failed (the caller's error says the round trip
// failed; this says which channels it cost). A repeat the room dropped
// (seq 0) is no failure.
func (b *broadcasts) check() {
	for _, x := range b.sent {
		if _, err := x.seq(); err != nil {
			b.s.o.Log.Warn().Err(err).Str("channel_id", x.cid).Msg("publish")
		}
	}
	b.sent = b.sent[:0]
}
