package channels

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
)

// StreamPublisher is a Publisher that can also push the pieces of a
// streamed answer into a channel's room (the realtime hub's
// PublishStreamIn): event hub.EventChunk or hub.EventChunkReset, queued
// into the caller's pipeline; the func reports, once it has run, the
// piece's seq (0: a repeat, dropped), hub.ErrChannelEnded,
// hub.ErrStreamFull or a Redis error.
type StreamPublisher interface {
	PublishStreamIn(ctx context.Context, p redis.Pipeliner, channelID, event string, payload json.RawMessage) func() (int64, error)
}

// chunkPayload is a chunk event's payload: the channel, the piece's number
// in the channel's stream (1, 2, … across resets; a reset takes one), and
// the text to append. A chunk_reset's payload has no delta.
type chunkPayload struct {
	ChannelID string  `json:"channel_id"`
	Index     int     `json:"index"`
	Delta     *string `json:"delta,omitempty"`
}

// piece is one publish of a stream, its payload fixed when it is taken, so
// that a publish tried again after a failed round trip is the same bytes
// (chunk.lua drops a repeat).
type piece struct {
	event   string
	payload json.RawMessage
}

// streamer turns a run's deltas (ai.Request.OnDelta, on the run's
// goroutine) into the room's chunk events. The node's stream loop
// (flushStreams) publishes them: every Options.StreamWindow it sends, in one
// pipeline, one piece of every stream that has one (its text since the last
// window as one chunk, or a chunk_reset), and sooner for a stream that has
// Options.StreamBytes waiting or is closing; so the provider's stream is
// never held up by Redis, and one round trip carries the pieces of every
// stream of the node. A reset (a retry or a fallback after a partial
// answer) drops the text not yet taken and, if some was, queues a
// chunk_reset first.
type streamer struct {
	s    *Service
	cid  string
	done chan struct{} // closed when the stream has nothing more to send

	mu      sync.Mutex
	buf     []byte  // text not yet taken
	outbox  []piece // taken, not yet in the room; outbox[0] is tried next
	reset   bool    // a chunk_reset is due before the next text
	lazy    bool    // … but only if text follows (a rerun's: an earlier run may have streamed)
	shown   bool    // text of the current attempt has been taken
	index   int     // the last piece's index
	closing bool    // the run is over: publish what is left, then stop
	giveUp  time.Time
	ended   bool // done is closed
}

// streams are a node's streamers, for its stream loop.
type streams struct {
	once   sync.Once
	wake   chan struct{}
	mu     sync.Mutex
	active map[*streamer]struct{}
}

// newStreamer starts the streamer of t's run, or returns nil when t does
// not stream or no room can take it.
func (s *Service) newStreamer(t *Task) *streamer {
	if !t.Stream {
		return nil
	}
	if _, ok := s.o.Publisher.(StreamPublisher); !ok {
		return nil
	}
	st := &streamer{s: s, cid: t.ChannelID, done: make(chan struct{}), reset: t.rerun, lazy: t.rerun}
	s.streams.once.Do(func() {
		s.streams.wake = make(chan struct{}, 1)
		s.streams.active = make(map[*streamer]struct{})
		go s.flushStreams()
	})
	s.streams.mu.Lock()
	s.streams.active[st] = struct{}{}
	s.streams.mu.Unlock()
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
// run's final message must come after its last chunk.
func (st *streamer) close(ctx context.Context) {
	st.mu.Lock()
	st.closing = true
	st.mu.Unlock()
	st.s.pokeStreams()
	select {
	case <-st.done:
	case <-ctx.Done():
	}
}

// next returns the piece to send in this round (nil: none), taking due
// text into the outbox; all is a window's round (every stream's text is
// due), else only text past StreamBytes, a reset, or a closing stream's.
// It closes done, and reports so, once nothing is left.
func (st *streamer) next(all bool) (pc *piece, over bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.outbox) == 0 {
		if st.reset && !st.lazy || st.reset && len(st.buf) > 0 && (all || st.closing || len(st.buf) >= st.s.o.StreamBytes) {
			st.index++
			st.outbox = append(st.outbox, piece{hub.EventChunkReset, mustJSON(chunkPayload{ChannelID: st.cid, Index: st.index})})
			st.reset, st.lazy = false, false
		}
		if len(st.buf) > 0 && (all || st.closing || len(st.buf) >= st.s.o.StreamBytes || st.s.o.StreamWindow <= 0) {
			st.index++
			text := string(st.buf)
			st.outbox = append(st.outbox, piece{hub.EventChunk, mustJSON(chunkPayload{ChannelID: st.cid, Index: st.index, Delta: &text})})
			st.buf = st.buf[:0]
			st.shown = true
		}
	}
	if len(st.outbox) > 0 {
		return &st.outbox[0], false
	}
	if st.closing && len(st.buf) == 0 {
		st.end()
		return nil, true
	}
	return nil, false
}

// end closes done. Under mu.
func (st *streamer) end() {
	if !st.ended {
		st.ended = true
		st.outbox, st.buf = nil, nil
		close(st.done)
	}
}

// sent records what became of the piece next returned: in (or a repeat),
// refused for good (the room takes no more), or failed (tried again next
// round; once the run is over, for streamGiveUp at most).
func (st *streamer) sent(err error) (over bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case err == nil:
		st.outbox = st.outbox[1:]
	case errors.Is(err, hub.ErrChannelEnded) || errors.Is(err, hub.ErrStreamFull) || errors.Is(err, hub.ErrInvalidMessage):
		st.s.o.Log.Warn().Err(err).Str("channel_id", st.cid).Msg("stream: the room takes no more of the answer")
		st.end()
	default:
		if st.closing {
			if st.giveUp.IsZero() {
				st.giveUp = time.Now().Add(streamGiveUp)
			} else if time.Now().After(st.giveUp) {
				st.s.o.Log.Warn().Err(err).Str("channel_id", st.cid).Msg("stream: gave up the rest of the answer's chunks; the final message carries it")
				st.end()
			}
		}
	}
	return st.ended
}

func mustJSON(v any) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // a delta's "<" stays "<", as JSON.stringify writes it
	_ = enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// streamGiveUp bounds the tries of a closing stream's pieces (its final
// message does not wait longer than that on a Redis that does not
// answer); streamRetry is the round of a node whose window is 0, for the
// pieces that failed.
const (
	streamGiveUp = 2 * time.Second
	streamRetry  = 20 * time.Millisecond
)

// flushStreams is the node's stream loop: a round every StreamWindow
// (with every stream's text), and one whenever a stream has a piece due
// sooner; a round whose pieces all went in and left more due runs again at
// once.
func (s *Service) flushStreams() {
	period := s.o.StreamWindow
	if period <= 0 {
		period = streamRetry
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	p := s.o.Publisher.(StreamPublisher)
	for {
		all := false
		select {
		case <-s.quit:
			return
		case <-tick.C:
			all = true
		case <-s.streams.wake:
		}
		for again := true; again; {
			again = s.streamRound(p, all)
			all = false
		}
	}
}

// streamRound sends one piece of each stream that has one due, in one
// pipeline, and reports whether another round is due at once.
func (s *Service) streamRound(p StreamPublisher, all bool) bool {
	s.streams.mu.Lock()
	sts := make([]*streamer, 0, len(s.streams.active))
	for st := range s.streams.active {
		sts = append(sts, st)
	}
	s.streams.mu.Unlock()
	type queued struct {
		st  *streamer
		res func() (int64, error)
	}
	var q []queued
	var over []*streamer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, st := range sts {
		pc, done := st.next(all)
		switch {
		case done:
			over = append(over, st)
		case pc != nil:
			q = append(q, queued{st, p.PublishStreamIn(ctx, pipe, st.cid, pc.event, pc.payload)})
		}
	}
	if len(q) > 0 {
		_, _ = pipe.Exec(ctx) // each piece's own result says what became of it
	}
	failed := false
	for _, x := range q {
		_, err := x.res()
		failed = failed || err != nil
		if x.st.sent(err) {
			over = append(over, x.st)
		}
	}
	if len(over) > 0 {
		s.streams.mu.Lock()
		for _, st := range over {
			delete(s.streams.active, st)
		}
		s.streams.mu.Unlock()
	}
	// More due now: a closing stream's second piece, or one that ended.
	return len(q) > 0 && !failed
}
