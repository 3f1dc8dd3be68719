package hub

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	fastjson "github.com/segmentio/encoding/json"
)

// entry is one history entry: {"seq":N,"payload":<message>}, pushed as
// event "response"; or a streamed piece, {"seq":N,"event":E,"payload":…},
// pushed as event E (EventChunk, EventChunkReset).
type entry struct {
	seq     int64
	event   string // "" for a message ("response")
	payload string
	final   bool // the channel's last message: see isFinal
}

// isFinal reports whether a message ends its channel: its "status" is
// success (a standard workflow's result), completed (the backend's
// callback) or error (generation failed, the backend reported an error, or
// the callback timed out). Nothing is published to a channel after one of
// them (package channels moves a channel to such a state once), and the
// hosted service's browser SDK treats them as the end of the request.
func isFinal(payload string) bool {
	var m struct {
		Status string `json:"status"`
	}
	// (Decoded as encoding/json would, in less than half the time: a
	// publish reads its message's status, and a socket each entry's.)
	if fastjson.Unmarshal([]byte(payload), &m) != nil {
		return false
	}
	switch m.Status {
	case "success", "completed", "error":
		return true
	}
	return false
}

// parseEntry reads an entry as the publish scripts write it, without
// decoding the payload (it is sent on byte for byte).
func parseEntry(s string) (entry, bool) {
	const pre, ev, mid = `{"seq":`, `,"event":"`, `,"payload":`
	rest, ok := strings.CutPrefix(s, pre)
	if !ok || !strings.HasSuffix(rest, "}") {
		return entry{}, false
	}
	i := strings.IndexByte(rest, ',')
	if i <= 0 {
		return entry{}, false
	}
	seq, err := strconv.ParseInt(rest[:i], 10, 64)
	if err != nil || seq <= 0 {
		return entry{}, false
	}
	rest = rest[i:]
	if after, ok := strings.CutPrefix(rest, ev); ok {
		j := strings.IndexByte(after, '"')
		if j <= 0 || !streamEvent(after[:j]) {
			return entry{}, false
		}
		e := entry{seq: seq, event: after[:j]}
		payload, ok := strings.CutPrefix(after[j+1:], mid)
		if !ok {
			return entry{}, false
		}
		e.payload = payload[:len(payload)-1]
		return e, true
	}
	if !strings.HasPrefix(rest, mid) {
		return entry{}, false
	}
	payload := rest[len(mid) : len(rest)-1]
	return entry{seq: seq, payload: payload, final: isFinal(payload)}, true
}

type roomState int

const (
	roomNew         roomState = iota // no (S)SUBSCRIBE sent yet
	roomSubscribing                  // (S)SUBSCRIBE sent, not confirmed
	roomLive                         // confirmed: messages published from now on arrive
)

// room is a channel with subscribers on this node.
type room struct {
	cid     string
	members map[*member]struct{}
	state   roomState
	ready   chan struct{} // closed when the room goes live
	// sh is the pub/sub connection the room's subscription was sent on;
	// nil before that, and again while it is to be sent anew (its shard
	// failed, or its slot moved), a live room staying live meanwhile.
	sh *shard
	// movedFrom is the master that last ended the room's subscription
	// (its slot moved away, at movedAt): until the Cluster client stops
	// naming it as the slot's master, its view of the Cluster is older
	// than the move.
	movedFrom string
	movedAt   time.Time
}

// member is one socket's join of a room.
type member struct {
	s       *session
	key     string // the canonical topic: the session's subs key
	topic   string // as the client spelled it, which its pushes carry
	joinRef *string
	head    []byte // [join_ref,
	tail    []byte // ,topic,
	room    *room  // under Hub.mu: set by addMember, nil once removed

	mu      sync.Mutex
	ready   bool    // the join reply and history are queued; live messages go straight out
	lastSeq int64   // the last seq queued to the socket
	pending []entry // live messages received before ready
	ended   bool    // nothing more goes to this join: it was closed (phx_close queued) or its socket is gone
}

// frame is the push of one message: its seq is the frame's ref.
func (m *member) frame(e entry) []byte {
	b := make([]byte, 0, len(m.head)+len(m.tail)+len(e.payload)+len(e.event)+36)
	b = append(b, m.head...)
	b = append(b, '"')
	b = strconv.AppendInt(b, e.seq, 10)
	b = append(b, '"')
	b = append(b, m.tail...)
	if e.event == "" {
		b = append(b, `"response",`...)
	} else {
		b = append(b, '"')
		b = append(b, e.event...)
		b = append(b, `",`...)
	}
	b = append(b, e.payload...)
	return append(b, ']')
}

// closeFrame is the phx_close that ends this join, as a Phoenix server
// sends it when a channel process stops: its topic, join_ref and ref both
// the join's ref, payload {}.
func (m *member) closeFrame() []byte {
	return frame{JoinRef: m.joinRef, Ref: m.joinRef, Topic: m.topic, Event: "phx_close", Payload: emptyObject}.encode()
}

// finish ends the join on the server's side and reports whether it was
// still open, in which case its phx_close is the caller's to send: whoever
// ends a join sends its close, once.
func (m *member) finish() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	open := !m.ended
	m.ended = true
	m.pending = nil
	return open
}

// deliver queues one message, in seq order, each seq once. After the
// channel's final message it queues the join's phx_close in the same batch,
// so the close can never overtake the message, and reports that the join
// has ended: the caller takes it out of its room and session.
func (m *member) deliver(e entry) (ended bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended {
		return false
	}
	if !m.ready {
		if len(m.pending) >= 2*m.s.h.o.HistoryMax+MaxStreamEntries+m.s.h.o.SendQueue {
			m.s.tooSlow()
			return false
		}
		m.pending = append(m.pending, e)
		return false
	}
	// A seq the join has had is a repeat; but a final message reaching a
	// join still open is never one (a join ends at its final message): a
	// streamed piece that reached the room without reaching the history
	// (its RPUSH refused, its PUBLISH not) may have used its seq.
	if e.seq <= m.lastSeq && !e.final {
		return false
	}
	frames := [][]byte{m.frame(e)}
	if e.final {
		m.ended = true
		frames = append(frames, m.closeFrame())
	}
	if m.s.send(frames) {
		m.lastSeq = max(m.lastSeq, e.seq)
		m.s.h.m.pushed.Inc()
		if m.ended {
			m.s.h.m.channelCloses.WithLabelValues("final").Inc()
		}
	}
	return m.ended
}

// start queues, as one batch: pre (the phx_close of a join this one
// replaces), the join reply, the history and what arrived meanwhile; and
// lets live messages through from then on. A channel that has ended (its
// history holds a final message, even one the client had: last_seq) gets
// its messages up to that one and then the join's phx_close; start then
// reports the join ended.
func (m *member) start(pre [][]byte, reply []byte, hist []entry) (ended bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended {
		return false
	}
	frames := make([][]byte, 0, len(pre)+2+len(hist)+len(m.pending))
	frames = append(frames, pre...)
	frames = append(frames, reply)
	slices.SortStableFunc(m.pending, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	pushed := 0
	for _, list := range [][]entry{hist, m.pending} {
		for _, e := range list {
			if m.ended {
				break
			}
			if e.seq > m.lastSeq {
				m.lastSeq = e.seq
				frames = append(frames, m.frame(e))
				pushed++
			}
			m.ended = e.final
		}
	}
	if m.ended {
		frames = append(frames, m.closeFrame())
	}
	m.pending = nil
	m.ready = true
	if m.s.send(frames) {
		m.s.h.m.pushed.Add(float64(pushed))
		if m.ended {
			m.s.h.m.channelCloses.WithLabelValues("final").Inc()
		}
	}
	return m.ended
}

// addMember puts m in its channel's room, creating the room (and asking
// the loop to subscribe it) if it is the first.
func (h *Hub) addMember(cid string, m *member) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[cid]
	if r == nil {
		r = &room{cid: cid, members: make(map[*member]struct{}), ready: make(chan struct{})}
		h.rooms[cid] = r
		h.markDirty(cid)
	}
	r.members[m] = struct{}{}
	m.room = r
	h.m.joined.Inc()
	return r
}

// removeMember takes m out of its room; the loop unsubscribes a room that
// stays empty. It does not end the join (see member.finish). Safe twice.
func (h *Hub) removeMember(m *member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := m.room
	if r == nil {
		return
	}
	m.room = nil
	delete(r.members, m)
	h.m.joined.Dec()
	if len(r.members) == 0 {
		h.markDirty(r.cid)
	}
}

// ended forgets joins that their channel's final message has closed: out
// of their rooms and sessions. Called without Hub.mu held.
func (h *Hub) ended(ms []*member) {
	for _, m := range ms {
		h.removeMember(m)
		m.s.forget(m)
	}
}

// markDirty records that a room's subscription may have to change. Under mu.
func (h *Hub) markDirty(cid string) {
	h.dirty[cid] = struct{}{}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *Hub) fanout(msg *redis.Message) {
	cid, ok := h.roomOf(msg.Channel)
	if !ok {
		return
	}
	e, ok := parseEntry(msg.Payload)
	if !ok {
		h.o.Log.Warn().Str("channel", msg.Channel).Msg("hub: unreadable room message")
		return
	}
	var ended []*member
	h.mu.RLock()
	if r := h.rooms[cid]; r != nil {
		for m := range r.members {
			if m.deliver(e) {
				ended = append(ended, m)
			}
		}
	}
	h.mu.RUnlock()
	h.ended(ended)
}

// resync re-reads the history of rooms whose subscription was interrupted
// and hands each socket what it has not had (deliver drops the rest). If
// Redis does not answer, the rooms' sockets are closed with 1013: their
// clients reconnect and rejoin, which replays the history, so a gap is never
// silent.
func (h *Hub) resync(cids []string) {
	h.m.resyncs.Add(float64(len(cids)))
	var hists [][]entry
	var err error
	for attempt, wait := 0, 100*time.Millisecond; attempt < 3; attempt, wait = attempt+1, wait*4 {
		if hists, err = h.histories(cids); err == nil {
			break
		}
		select {
		case <-h.quit:
			return
		case <-time.After(wait):
		}
	}
	var ended []*member
	h.mu.RLock()
	for i, cid := range cids {
		r := h.rooms[cid]
		if r == nil {
			continue
		}
		for m := range r.members {
			if err != nil {
				m.s.closeWith(websocket.StatusTryAgainLater, "message history unavailable; reconnect")
				continue
			}
			for _, e := range hists[i] {
				if m.deliver(e) {
					ended = append(ended, m)
					break
				}
			}
		}
	}
	h.mu.RUnlock()
	h.ended(ended)
	if err != nil {
		h.o.Log.Error().Err(err).Int("rooms", len(cids)).Msg("hub: re-read history after pub/sub reconnect")
	}
}

// history reads one channel's history, oldest first; once the history
// has expired after the final message (Options.HotWindow), the final
// message, rebuilt from the channel's record.
func (h *Hub) history(ctx context.Context, cid string) ([]entry, error) {
	raw, err := h.rdb.LRange(ctx, h.histKey(cid), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	return h.orFinal(ctx, cid, h.entries(cid, raw))
}

// orFinal is what a join or a resync is sent of a channel whose history
// is es: es, unless es is empty or ends in streamed pieces and the
// channel's record has its final message (which a lone final message
// writes no history for, and which a run racing it may have streamed
// after): then that final message alone, which holds the whole answer.
func (h *Hub) orFinal(ctx context.Context, cid string, es []entry) ([]entry, error) {
	if len(es) > 0 && es[len(es)-1].event == "" {
		return es, nil
	}
	fin, err := h.finalOf(ctx, cid)
	if err != nil || len(fin) > 0 || len(es) == 0 {
		return fin, err
	}
	return es, nil
}

// finalOf is a finished channel's final message as its history's one
// entry, from its record (Options.Record): none if the record has no
// room_seq (the channel has not finished, or has expired).
func (h *Hub) finalOf(ctx context.Context, cid string) ([]entry, error) {
	if h.o.Record == nil {
		return nil, nil
	}
	var seq, msg string
	if h.o.FinalMessage != nil { // it knows where else the message may be kept
		s, m, err := h.o.FinalMessage(ctx, cid)
		if err != nil {
			return nil, err
		}
		seq, msg = s, string(m)
	} else {
		v, err := h.rdb.HMGet(ctx, h.o.Record(cid), "room_seq", "message").Result()
		if err != nil {
			return nil, err
		}
		seq, _ = v[0].(string)
		msg, _ = v[1].(string)
	}
	if seq == "" || msg == "" {
		return nil, nil
	}
	return h.entries(cid, []string{`{"seq":` + seq + `,"payload":` + msg + `}`}), nil
}

// histories reads several channels' histories in one round trip.
func (h *Hub) histories(cids []string) ([][]entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	cmds := make([]*redis.StringSliceCmd, len(cids))
	_, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, cid := range cids {
			cmds[i] = p.LRange(ctx, h.histKey(cid), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([][]entry, len(cids))
	for i, c := range cmds {
		if out[i], err = h.orFinal(ctx, cids[i], h.entries(cids[i], c.Val())); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (h *Hub) entries(cid string, raw []string) []entry {
	out := make([]entry, 0, len(raw))
	for _, s := range raw {
		if e, ok := parseEntry(s); ok {
			out = append(out, e)
		} else {
			h.o.Log.Warn().Str("channel_id", cid).Msg("hub: unreadable history entry")
		}
	}
	return out
}
