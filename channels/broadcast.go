package channels

import (
	"context"
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/wire"
)

// broadcasts are the room publishes queued into one pipeline (and its
// retries), logged on their channels' timelines once it has run. The room
// says which messages it took as new; a repeat it dropped (side effects
// redone after a crash, or by a run that lost the race) is not logged, so
// nothing is logged twice. The timeline is channels' own: the hub only
// publishes and reports.
type broadcasts struct {
	s    *Service
	sent []broadcast
}

type broadcast struct {
	cid   string
	entry []byte
	seq   func() (int64, error)
}

// add queues msg's publish into cid's room within p; without a Publisher
// (a node with no rooms) it does nothing.
func (b *broadcasts) add(ctx context.Context, p redis.Pipeliner, pid, cid string, st Status, msg json.RawMessage) {
	if b.s.o.Publisher == nil || len(msg) == 0 {
		return
	}
	b.sent = append(b.sent, broadcast{cid: cid,
		entry: wire.MustJSON(Entry{At: wire.Stamp(b.s.o.Now()), Type: "broadcast", Status: st, Node: b.s.o.Node}),
		seq:   b.s.o.Publisher.PublishIn(ctx, p, pid, cid, msg)})
}

// logIn queues into p a "broadcast" entry on the timeline of each message
// the room took as new (the pipeline of the publishes must have run), so
// that the entries go with the caller's next round trip.
func (b *broadcasts) logIn(ctx context.Context, p redis.Pipeliner) {
	for _, x := range b.sent {
		seq, err := x.seq()
		if err != nil {
			b.s.o.Log.Warn().Err(err).Str("channel_id", x.cid).Msg("publish")
			continue
		}
		if seq > 0 {
			p.RPushX(ctx, b.s.tlKey(x.cid), x.entry)
		}
	}
	b.sent = b.sent[:0]
}

// log is logIn in a round trip of its own (none when there is nothing to
// log). The entries are notes: a failure is only logged.
func (b *broadcasts) log(ctx context.Context) {
	p := b.s.rdb.Pipeline()
	b.logIn(ctx, p)
	if p.Len() == 0 {
		return
	}
	if _, err := p.Exec(context.WithoutCancel(ctx)); err != nil {
		b.s.o.Log.Warn().Err(err).Int("entries", p.Len()).Msg("log broadcasts")
	}
}
