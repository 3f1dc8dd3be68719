package channels

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
)

// StreamPublisher is a Publisher that can also push the pieces of a
// streamed answer into a channel's room (the realtime hub): LastSeq is the
// seq of the channel's last room entry, which a stream numbers its pieces
// after; AppendStreamIn queues piece seq (event hub.EventChunk or
// hub.EventChunkReset) into the caller's pipeline; a piece queued again
// keeps its seq, and the room shows it once.
type StreamPublisher interface {
	LastSeq(ctx context.Context, channelID string) (int64, error)
	AppendStreamIn(ctx context.Context, p redis.Pipeliner, channelID string, seq int64, event string, payload json.RawMessage, first bool) error
}

// chunkPayload is a chunk event's payload: the channel, the piece's number
// in the channel's stream (1, 2, … across resets; a reset takes one), and
// the text to append. A chunk_reset's payload has no delta.
type chunkPayload struct {
	ChannelID string  `json:"channel_id"`
	Index     int     `json:"index"`
	Delta     *string `json:"delta,omitempty"`
}

// piece is one publish of a stream, its seq and payload fixed when it is
// taken, so that a publish tried again after a failed round trip is the
// same entry (the room drops the repeat).
type piece struct {
	seq     int64
	event   string
	payload json.RawMessage
	first   bool // the stream's first: the history's time to live is set with it
}

// streamer turns a run's deltas (ai.Request.OnDelta, on the run's
// goroutine) into the room's chunk events. The node's stream loop
// (flushStreams) publishes them, so the provider's stream is never held up
// by Redis: each stream's text waiting at one of its window boundaries
// (every Options.StreamWindow, at a phase of its own so that the node's
// streams do not all flush at once) goes as one chunk, sooner when
// Options.StreamBytes are waiting or the run is over; one pipeline
// carries every stream's piece due in a round. A reset (a retry or a
// fallback after a partial answer) drops the text not yet taken and, if
// some was, queues a chunk_reset first.
type streamer struct {
	s    *Service
	cid  string
	done chan struct{} // closed when the stream has nothing more to send

	// Read by the stream loop without mu: the stream's next window
	// boundary (unix ns) and whether it has a piece due before it (text
	// past StreamBytes, a reset, the run's end, a failed piece), so that
	// a round skips the streams with nothing due without locking them.
	dueAt  atomic.Int64
	urgent atomic.Bool

	mu      sync.Mutex
	buf     []byte    // text not yet taken
	outbox  []piece   // taken, not yet in the room; outbox[0] is tried next
	next    time.Time // the stream's next window boundary
	seq     int64     // the last piece's seq (the room's last entry when the stream began)
	index   int       // the last piece's index
	reset   bool      // a chunk_reset is due before the next text
	lazy    bool      // … but only if text follows (a rerun's: an earlier run may have streamed)
	shown   bool      // text of the current attempt has been taken
	closing bool      // the run is over: publish what is left, then stop
	giveUp  time.Time
	ended   bool // done is closed
}

// streams are a node's streamers, for its stream loop.
type streams struct {
	once sync.Once
	wake chan struct{}
	mu   sync.Mutex
	// active is replaced, never changed in place, so that a round reads
	// the slice it took without the lock.
	active []*streamer
}

// newStreamer starts the streamer of t's run, or returns nil when t does
// not stream, no room can take it, or the room's last seq cannot be read
// (the run then goes on unstreamed: its final message carries the answer).
func (s *Service) newStreamer(ctx context.Context, t *Task) *streamer {
	if !t.Stream {
		return nil
	}
	p, ok := s.o.Publisher.(StreamPublisher)
	if !ok {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	last, err := p.LastSeq(rctx, t.ChannelID)
	cancel()
	if err != nil {
		s.o.Log.Warn().Err(err).Str("channel_id", t.ChannelID).Msg("stream: read the room's last seq; the answer will not stream")
		return nil
	}
	st := &streamer{s: s, cid: t.ChannelID, done: make(chan struct{}), seq: last, reset: t.rerun, lazy: t.rerun}
	if w := s.o.StreamWindow; w > 0 {
		st.next = time.Now().Add(time.Duration(rand.Int64N(int64(w))))
		st.dueAt.Store(st.next.UnixNano())
	}
	s.streams.once.Do(func() {
		s.streams.wake = make(chan struct{}, 1)
		go s.flushStreams()
	})
	s.streams.mu.Lock()
	s.streams.active = append(s.streams.active[:len(s.streams.active):len(s.streams.active)], st)
	s.streams.mu.Unlock()
	s.pokeStreams() // an idle loop ticks again
	return st
}

// delta takes one piece of the run's stream.
func (st *streamer) delta(d ai.Delta) {
	st.mu.Lock()
	if d.Reset {
		st.buf = st.buf[:0]
		if st.shown {
			st.reset, st.lazy, st.shown = true, false, false
		}
	} else {
		st.buf = append(st.buf, d.Text...)
	}
	now := st.s.o.StreamWindow <= 0 || len(st.buf) >= st.s.o.StreamBytes || (st.reset && !st.lazy)
	st.mu.Unlock()
	if now {
		st.urgent.Store(true)
		st.s.pokeStreams()
	}
}

func (s *Service) pokeStreams() {
	select {
	case s.streams.wake <- struct{}{}:
	default:
	}
}

// close has what is left published and waits for it (within ctx): the
// run's final message must come after its last chunk. Past ctx, or for a
// run cut short (abandon: it runs again, elsewhere, starting with a
// reset), the rest is dropped: no round that starts after close returns
// sends anything of the stream (one already in flight may finish).
func (st *streamer) close(ctx context.Context, abandon bool) {
	st.mu.Lock()
	st.closing = true
	if abandon {
		st.end()
	}
	st.mu.Unlock()
	st.urgent.Store(true)
	st.s.pokeStreams()
	select {
	case <-st.done:
	case <-ctx.Done():
		st.mu.Lock()
		st.end()
		st.mu.Unlock()
	}
}

// take returns the piece to send in this round (nil: none), taking the
// text due at now into the outbox. It closes done, and reports so, once
// nothing is left.
func (st *streamer) take(now time.Time) (pc *piece, over bool) {
	if !st.urgent.Load() && now.UnixNano() < st.dueAt.Load() {
		return nil, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	// Urgent until taken: a second piece (a reset's text) goes in the
	// next round, a closing stream's rest at once.
	defer func() { st.urgent.Store(st.closing || len(st.outbox) > 1) }()
	if len(st.outbox) == 0 {
		due := st.closing || len(st.buf) >= st.s.o.StreamBytes || st.s.o.StreamWindow <= 0 || !now.Before(st.next)
		if !now.Before(st.next) && st.s.o.StreamWindow > 0 {
			// The next boundary after now, on the stream's own grid.
			w := st.s.o.StreamWindow
			st.next = st.next.Add(w * (now.Sub(st.next)/w + 1))
			st.dueAt.Store(st.next.UnixNano())
		}
		if st.reset && (!st.lazy || len(st.buf) > 0 && due) {
			st.add(hub.EventChunkReset, chunkPayload{ChannelID: st.cid})
			st.reset, st.lazy = false, false
		}
		if len(st.buf) > 0 && due {
			text := string(st.buf)
			st.add(hub.EventChunk, chunkPayload{ChannelID: st.cid, Delta: &text})
			st.buf = st.buf[:0]
			st.shown = true
		}
	}
	switch {
	case len(st.outbox) > 0:
		return &st.outbox[0], false
	case st.closing && len(st.buf) == 0:
		st.end()
		return nil, true
	}
	return nil, false
}

// add queues one piece, numbered after the last. Under mu.
func (st *streamer) add(event string, p chunkPayload) {
	if st.index >= hub.MaxStreamEntries {
		if st.index == hub.MaxStreamEntries {
			st.s.o.Log.Warn().Str("channel_id", st.cid).Msg("stream: the answer has too many pieces; the rest goes with the final message")
			st.index++
		}
		return
	}
	st.index++
	st.seq++
	p.Index = st.index
	payload, _ := encode(p) // a plain struct: cannot fail
	st.outbox = append(st.outbox, piece{seq: st.seq, event: event, payload: payload, first: st.index == 1})
}

// end closes done. Under mu.
func (st *streamer) end() {
	if !st.ended {
		st.ended = true
		st.outbox, st.buf = nil, nil
		close(st.done)
	}
}

// sent records what became of the piece take returned: in, or failed
// (tried again next round; once the run is over, for streamGiveUp at
// most).
func (st *streamer) sent(err error) (over bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.ended:
	case err == nil:
		st.outbox = st.outbox[1:]
	case st.closing:
		st.urgent.Store(true) // tried again next round
		if st.giveUp.IsZero() {
			st.giveUp = time.Now().Add(streamGiveUp)
		} else if time.Now().After(st.giveUp) {
			st.s.o.Log.Warn().Err(err).Str("channel_id", st.cid).Msg("stream: gave up the rest of the answer's chunks; the final message carries it")
			st.end()
		}
	}
	return st.ended
}

// streamGiveUp bounds the tries of a closing stream's pieces (its final
// message does not wait longer than that on a Redis that does not
// answer); streamRetry is the round of a node whose window is 0, for the
// pieces that failed.
const (
	streamGiveUp = 2 * time.Second
	streamRetry  = 20 * time.Millisecond
)

// flushStreams is the node's stream loop: a round every eighth of the
// window (at least 2 ms), in which each stream whose boundary has come
// sends its piece, and one whenever a stream has a piece due sooner; a
// round whose pieces all went in runs again at once (a closing stream may
// have another).
func (s *Service) flushStreams() {
	period := max(s.o.StreamWindow/8, 2*time.Millisecond)
	if s.o.StreamWindow <= 0 {
		period = streamRetry
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	p := s.o.Publisher.(StreamPublisher)
	idle := false
	for {
		s.streams.mu.Lock()
		none := len(s.streams.active) == 0
		s.streams.mu.Unlock()
		if none != idle { // no ticks while no stream runs
			if idle = none; idle {
				tick.Stop()
			} else {
				tick.Reset(period)
			}
		}
		select {
		case <-s.quit:
			return
		case <-tick.C:
		case <-s.streams.wake:
		}
		for s.streamRound(p) {
		}
	}
}

// streamRound sends the piece due of each stream that has one, in one
// pipeline, and reports whether another round is due at once.
func (s *Service) streamRound(p StreamPublisher) bool {
	s.streams.mu.Lock()
	sts := s.streams.active
	s.streams.mu.Unlock()
	if len(sts) == 0 {
		return false
	}
	type queued struct {
		st     *streamer
		from   int // its commands in the pipeline: [from, to)
		to     int
		queued error
	}
	var q []queued
	var over []*streamer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pipe := s.rdb.Pipeline()
	now := time.Now()
	for _, st := range sts {
		pc, done := st.take(now)
		switch {
		case done:
			over = append(over, st)
		case pc != nil:
			from := pipe.Len()
			err := p.AppendStreamIn(ctx, pipe, st.cid, pc.seq, pc.event, pc.payload, pc.first)
			q = append(q, queued{st, from, pipe.Len(), err})
		}
	}
	var cmds []redis.Cmder
	if pipe.Len() > 0 {
		cmds, _ = pipe.Exec(ctx) // each piece's commands say what became of it
	}
	failed := false
	for _, x := range q {
		if x.queued != nil { // a piece no room would take
			s.o.Log.Error().Err(x.queued).Str("channel_id", x.st.cid).Msg("stream: stopped")
			x.st.mu.Lock()
			x.st.end()
			x.st.mu.Unlock()
			over = append(over, x.st)
			continue
		}
		var err error
		for i := x.from; err == nil && i < x.to; i++ {
			if i >= len(cmds) {
				err = errors.New("stream: the pipeline did not run")
			} else {
				err = cmds[i].Err()
			}
		}
		failed = failed || err != nil
		if x.st.sent(err) {
			over = append(over, x.st)
		}
	}
	if len(over) > 0 {
		s.streams.mu.Lock()
		s.streams.active = slices.DeleteFunc(slices.Clone(s.streams.active), func(st *streamer) bool { return slices.Contains(over, st) })
		s.streams.mu.Unlock()
	}
	return len(q) > 0 && !failed
}
