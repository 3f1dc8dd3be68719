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

// log appends a "broadcast" entry to the timeline of each message the room
// took as new, in one round trip. It is a note: a failure is only logged.
func (b *broadcasts) log(ctx context.Context) {
	var fresh []broadcast
	for _, x := range b.sent {
		seq, err := x.seq()
		if err != nil {
			b.s.o.Log.Warn().Err(err).Str("channel_id", x.cid).Msg("publish")
			continue
		}
		if seq > 0 {
			fresh = append(fresh, x)
		}
	}
	b.sent = b.sent[:0]
	if len(fresh) == 0 {
		return
	}
	if err := b.s.pipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) {
		for _, x := range fresh {
			p.RPushX(ctx, b.s.tlKey(x.cid), x.entry)
		}
	}); err != nil {
		b.s.o.Log.Warn().Err(err).Int("entries", len(fresh)).Msg("log broadcasts")
	}
}
