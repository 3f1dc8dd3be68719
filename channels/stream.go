package channels

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/hub"
)

// StreamPublisher is a Publisher that can also push the pieces of a
// streamed answer into a channel's room (the realtime hub's PublishStream):
// event hub.EventChunk or hub.EventChunkReset, in order, each once.
type StreamPublisher interface {
	PublishStream(ctx context.Context, channelID, event string, payload json.RawMessage) (int64, error)
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
// goroutine) into the room's chunk events: text is held for up to
// Options.StreamWindow from its first byte, or until Options.StreamBytes
// are waiting, then published as one chunk by the streamer's own goroutine,
// so the provider's stream is never held up by Redis. A reset (a retry or
// a fallback after a partial answer) drops the text not yet published and,
// if some was, publishes a chunk_reset first.
type streamer struct {
	s    *Service
	cid  string
	wake chan struct{}
	done chan struct{}

	mu       sync.Mutex
	buf      []byte    // text not yet taken
	since    time.Time // when buf's first byte came
	reset    bool      // a chunk_reset is due before the next text
	lazy     bool      // … but only if text follows (a rerun's: an earlier run may have streamed)
	shown    bool      // text of the current attempt has been taken
	index    int       // the last piece's index
	closing  bool      // the run is over: publish what is left, then stop
	stopped  bool      // the room takes no more (its final message is in, or it is full)
	pieces   int       // published, for the metrics and tests
	failures int       // publishes that failed (Redis), each tried again
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
	st := &streamer{s: s, cid: t.ChannelID, wake: make(chan struct{}, 1), done: make(chan struct{}),
		reset: t.rerun, lazy: t.rerun}
	go st.loop()
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
	} else if d.Text != "" {
		if len(st.buf) == 0 {
			st.since = time.Now()
		}
		st.buf = append(st.buf, d.Text...)
	}
	st.mu.Unlock()
	st.poke()
}

func (st *streamer) poke() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// close publishes what is left and waits for it (within ctx): the run's
// final message must come after its last chunk.
func (st *streamer) close(ctx context.Context) {
	st.mu.Lock()
	st.closing = true
	st.mu.Unlock()
	st.poke()
	select {
	case <-st.done:
	case <-ctx.Done():
	}
}

// take returns what is due now, or how long to wait for it (0: wait for a
// poke), or stop.
func (st *streamer) take() (due []piece, wait time.Duration, stop bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped || (st.closing && len(st.buf) == 0 && (!st.reset || st.lazy)) {
		return nil, 0, true
	}
	pending := len(st.buf) > 0 || (st.reset && !st.lazy)
	if !pending {
		return nil, 0, false
	}
	if !st.closing && !(st.reset && !st.lazy) && len(st.buf) < st.s.o.StreamBytes {
		if left := st.s.o.StreamWindow - time.Since(st.since); left > 0 {
			return nil, left, false
		}
	}
	if st.reset && (len(st.buf) > 0 || !st.lazy) {
		st.index++
		due = append(due, piece{hub.EventChunkReset, mustJSON(chunkPayload{ChannelID: st.cid, Index: st.index})})
		st.reset, st.lazy = false, false
	}
	if len(st.buf) > 0 {
		st.index++
		text := string(st.buf)
		due = append(due, piece{hub.EventChunk, mustJSON(chunkPayload{ChannelID: st.cid, Index: st.index, Delta: &text})})
		st.buf = st.buf[:0]
		st.shown = true
	}
	return due, 0, false
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// streamRetry bounds the waits between tries of a publish that failed, and
// the tries left once the run is over (its final message does not wait
// longer than that on a Redis that does not answer).
const (
	streamRetryMin = 20 * time.Millisecond
	streamRetryMax = time.Second
	streamGiveUp   = 2 * time.Second
)

func (st *streamer) loop() {
	defer close(st.done)
	p := st.s.o.Publisher.(StreamPublisher)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sleep := func(d time.Duration) {
		timer.Reset(d)
		select {
		case <-st.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
	for {
		due, wait, stop := st.take()
		if stop {
			return
		}
		switch {
		case len(due) > 0:
			if !st.publish(p, due) {
				return
			}
		case wait > 0:
			sleep(wait)
		default:
			<-st.wake
		}
	}
}

// publish sends pieces in order, each tried again (the same bytes) until it
// is in, the room refuses more, or the run is over and streamGiveUp has
// passed; it reports whether the stream goes on.
func (st *streamer) publish(p StreamPublisher, due []piece) bool {
	wait := streamRetryMin
	var giveUp time.Time
	for _, pc := range due {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := p.PublishStream(ctx, st.cid, pc.event, pc.payload)
			cancel()
			if err == nil {
				st.mu.Lock()
				st.pieces++
				st.mu.Unlock()
				break
			}
			if errors.Is(err, hub.ErrChannelEnded) || errors.Is(err, hub.ErrStreamFull) || errors.Is(err, hub.ErrInvalidMessage) {
				st.s.o.Log.Warn().Err(err).Str("channel_id", st.cid).Msg("stream: the room takes no more of the answer")
				st.mu.Lock()
				st.stopped = true
				st.mu.Unlock()
				return false
			}
			st.mu.Lock()
			st.failures++
			closing := st.closing
			st.mu.Unlock()
			if closing {
				if giveUp.IsZero() {
					giveUp = time.Now().Add(streamGiveUp)
				}
				if time.Now().After(giveUp) {
					st.s.o.Log.Warn().Err(err).Str("channel_id", st.cid).Msg("stream: gave up the rest of the answer's chunks; the final message carries it")
					return false
				}
			}
			time.Sleep(wait)
			wait = min(2*wait, streamRetryMax)
		}
	}
	return true
}
