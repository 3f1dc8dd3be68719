package hub

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/riverhub/riverhub/internal/wstoken"
)

// Join error reasons (the "reason" of a phx_reply error).
const (
	reasonInvalidFormat       = "invalid_channel_format"
	reasonInvalidProject      = "invalid_project_uuid"
	reasonInvalidChannel      = "invalid_channel_uuid"
	reasonUnauthorizedProject = "unauthorized_project_access"
	reasonUnauthorizedChannel = "unauthorized_channel_access"
	reasonTooMany             = "too_many_channels"
	reasonTokenExpired        = "token_expired"
	reasonUnavailable         = "unavailable" // Redis did not answer in time; the client rejoins
	reasonUnmatchedTopic      = "unmatched topic"
	reasonUnknownEvent        = "unknown_event"
)

// session is one socket. Its reader (serve, started by ServeHTTP) decodes
// frames and handles joins. Everyone hands frames to the writer through
// send, without ever waiting: a full queue closes the socket. The writer is
// a goroutine that exists only while there is something to write (or the
// close to send), one at a time, so an idle socket costs one goroutine.
type session struct {
	h      *Hub
	conn   *websocket.Conn
	claims wstoken.Claims

	mu          sync.Mutex
	queue       [][][]byte // batches of frames waiting for the writer, in order; nil when empty
	writing     bool       // a writer goroutine is running (or has closed the connection)
	closing     bool       // closeWith was called: the close frame goes out next
	closeCode   websocket.StatusCode
	closeReason string

	stop   chan struct{} // closed by closeWith
	closed chan struct{} // closed when the writer has closed the connection
	done   chan struct{} // closed when the socket is finished and left its rooms

	// subsMu guards subs and idleSince. The reader adds and removes joins;
	// the pub/sub loop removes those their channel's final message ends.
	subsMu    sync.Mutex
	subs      []*member   // joins, one per canonical topic (a slice: most sockets hold one); nil when none
	idle      *time.Timer // runs while subs is empty; see checkIdle
	idleSince time.Time   // when subs last became empty (or the socket opened)

	slow atomic.Bool // counted as a slow client
}

func newSession(h *Hub, conn *websocket.Conn, claims wstoken.Claims) *session {
	return &session{
		h: h, conn: conn, claims: claims,
		stop:   make(chan struct{}),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// closeWith asks the writer to close the socket with code and reason once
// the frame it is writing (if any) is out; frames still queued are dropped.
// It never blocks; the first call wins.
func (s *session) closeWith(code websocket.StatusCode, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	s.closing, s.closeCode, s.closeReason = true, code, reason
	close(s.stop)
	s.queue = nil
	s.wakeWriter()
}

func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// send queues frames for the writer, in order with everything queued
// before. It never blocks: a client whose queue is full is closed.
func (s *session) send(frames [][]byte) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	if len(s.queue) >= s.h.o.SendQueue {
		s.mu.Unlock()
		s.tooSlow()
		return false
	}
	s.queue = append(s.queue, frames)
	s.wakeWriter()
	s.mu.Unlock()
	return true
}

// wakeWriter starts the writer unless one is running. Under mu.
func (s *session) wakeWriter() {
	if !s.writing {
		s.writing = true
		go s.write()
	}
}

// tooSlow closes a socket whose queue is full.
func (s *session) tooSlow() {
	s.countSlow("queue_full")
	s.closeWith(websocket.StatusPolicyViolation, "client too slow")
}

// countSlow records, once per socket, that it was closed for not keeping up.
func (s *session) countSlow(reason string) {
	if s.slow.CompareAndSwap(false, true) {
		s.h.m.slow.WithLabelValues(reason).Inc()
		s.h.o.Log.Info().Str("channel_id", s.claims.ChannelID).Str("reason", reason).Msg("socket closed: client too slow")
	}
}

// serve runs the socket until it closes, then forgets it.
func (s *session) serve() {
	defer s.h.conns.Add(-1)
	s.h.m.sockets.Inc()
	defer s.h.m.sockets.Dec()
	s.run()
	s.h.unregister(s)
}

// run reads the socket until it closes.
func (s *session) run() {
	defer close(s.done)
	silent := time.AfterFunc(s.h.o.HeartbeatTimeout, func() {
		s.closeWith(websocket.StatusPolicyViolation, "heartbeat timeout")
	})
	s.subsMu.Lock()
	s.idleSince = time.Now()
	s.idle = time.AfterFunc(s.h.o.IdleTimeout, s.checkIdle)
	s.subsMu.Unlock()
	s.readLoop(silent)
	silent.Stop()
	s.closeWith(websocket.StatusNormalClosure, "")
	<-s.closed
	s.subsMu.Lock()
	s.idle.Stop()
	left := s.subs
	s.subs = nil
	s.subsMu.Unlock()
	for _, m := range left {
		m.finish()
		s.h.removeMember(m)
	}
}

// checkIdle closes a socket that has had no join for IdleTimeout: a
// client that dropped its socket without closing it (the hosted service's
// SDK does so once a channel's final message has arrived) would otherwise
// keep it open with heartbeats alone. 1000: the phoenix client 1.7 does
// not reconnect after it (1.8 reconnects after any close; see
// docs/realtime.md).
func (s *session) checkIdle() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	if len(s.subs) > 0 {
		return // a join arrived as the timer fired
	}
	// The timer may have fired for an earlier idle spell: wait out this one.
	if left := s.h.o.IdleTimeout - time.Since(s.idleSince); left > 0 {
		s.idle.Reset(left)
		return
	}
	if !s.isClosing() {
		s.h.m.idleCloses.Inc()
	}
	s.closeWith(websocket.StatusNormalClosure, idleReason)
}

// idleReason is the reason of the close of a socket without joins.
const idleReason = "idle: no channel joined"

// put records a join; the socket is no longer idle. Under subsMu.
func (s *session) put(m *member) {
	if i := s.subIndex(m.key); i >= 0 {
		s.subs[i] = m
	} else {
		s.subs = append(s.subs, m)
	}
	s.idle.Stop()
}

// unput forgets a join if it is still the socket's join of its topic, and
// starts the idle timer when it was the last. Under subsMu.
func (s *session) unput(m *member) {
	i := s.subIndex(m.key)
	if i < 0 || s.subs[i] != m {
		return
	}
	if s.subs = slices.Delete(s.subs, i, i+1); len(s.subs) == 0 {
		s.subs = nil
		s.idleSince = time.Now()
		s.idle.Reset(s.h.o.IdleTimeout)
	}
}

// subIndex is the index in subs of the join of canonical topic key, or -1.
// Under subsMu.
func (s *session) subIndex(key string) int {
	for i, m := range s.subs {
		if m.key == key {
			return i
		}
	}
	return -1
}

// sub is the socket's join of canonical topic key, or nil. Under subsMu.
func (s *session) sub(key string) *member {
	if i := s.subIndex(key); i >= 0 {
		return s.subs[i]
	}
	return nil
}

// forget is unput for callers that do not hold subsMu.
func (s *session) forget(m *member) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	s.unput(m)
}

// lookup is the join a client frame names: the socket's join of the
// frame's channel, if the client spelled its topic as it did when joining
// (each spelling is its own channel object in the client) and the frame's
// join_ref, when it has one, is that join's. Else nil.
func (s *session) lookup(f frame) *member {
	key, ok := canonicalTopic(f.Topic, s.claims)
	if !ok {
		return nil
	}
	s.subsMu.Lock()
	m := s.sub(key)
	s.subsMu.Unlock()
	if m == nil || m.topic != f.Topic {
		return nil
	}
	if f.JoinRef != nil && (m.joinRef == nil || *m.joinRef != *f.JoinRef) {
		return nil
	}
	return m
}

// readLoop reads frames until the connection fails or a frame is garbage.
// Reads are not bound to a context: cancelling one would drop the
// connection without the close frame the writer is about to send.
func (s *session) readLoop(idle *time.Timer) {
	for {
		typ, data, err := s.conn.Read(context.Background())
		if err != nil {
			// Closed by the peer, by the writer, or over the read limit
			// (the library has then sent 1009 itself).
			return
		}
		idle.Reset(s.h.o.HeartbeatTimeout)
		if typ != websocket.MessageText {
			s.closeWith(websocket.StatusUnsupportedData, "binary frames are not supported; use the v2 JSON serializer")
			return
		}
		f, err := parseFrame(data)
		if err != nil {
			s.closeWith(websocket.StatusInvalidFramePayloadData, err.Error())
			return
		}
		if s.isClosing() {
			return
		}
		s.handle(f)
	}
}

// write is the writer: it writes the queued batches, each frame within
// WriteTimeout, and returns when the queue is empty (the next send starts
// another). Once the session is closing it closes the connection with the
// recorded code instead, and no writer starts again.
func (s *session) write() {
	for {
		s.mu.Lock()
		if s.closing {
			code, reason := s.closeCode, s.closeReason
			s.mu.Unlock()
			_ = s.conn.Close(code, reason)
			close(s.closed)
			return
		}
		if len(s.queue) == 0 {
			s.queue = nil // an idle socket keeps no queue
			s.writing = false
			s.mu.Unlock()
			return
		}
		frames := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		for _, f := range frames {
			if s.isClosing() {
				break // the close frame goes out next
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.h.o.WriteTimeout)
			err := s.conn.Write(ctx, websocket.MessageText, f)
			cancel()
			if err != nil {
				// Timed out or broken: the library has closed the
				// connection; there is no one to send a close frame to.
				if errors.Is(err, context.DeadlineExceeded) {
					s.countSlow("write_timeout")
				}
				s.mu.Lock()
				if !s.closing {
					s.closing, s.closeCode, s.closeReason = true, websocket.StatusAbnormalClosure, "write failed"
					close(s.stop)
				}
				s.queue = nil
				s.mu.Unlock()
				_ = s.conn.CloseNow()
				close(s.closed)
				return
			}
		}
	}
}

func (s *session) reply(f frame, status string, response []byte) {
	s.send([][]byte{replyFrame(f, status, response)})
}

func (s *session) replyError(f frame, reason string) {
	s.reply(f, "error", reasonResponse(reason))
}

func (s *session) handle(f frame) {
	switch f.Event {
	case "heartbeat":
		// On "phoenix" (the socket's heartbeat) or on any channel topic:
		// the frame has already reset the idle timer.
		s.reply(f, "ok", emptyObject)
	case "phx_join":
		// The join's Redis calls grow a stack to 8 KiB, and
		// a goroutine keeps a grown stack until a GC finds it less than a
		// quarter used, which the reader parked in Read never is. On a
		// goroutine of its own the join's stack goes when it returns; the
		// reader waits for it, so frames are still handled one at a time,
		// in order.
		joined := make(chan struct{})
		go func() {
			defer close(joined)
			s.join(f)
		}()
		<-joined
	case "phx_leave":
		// As Phoenix: ok even for a topic that is not joined (the phoenix
		// client leaves after a join timeout without knowing), or for a
		// join the server has closed meanwhile (its phx_close is out
		// already).
		if m := s.lookup(f); m != nil {
			open := m.finish()
			s.drop(m)
			s.reply(f, "ok", emptyObject)
			if open {
				s.send([][]byte{m.closeFrame()})
				s.h.m.channelCloses.WithLabelValues("left").Inc()
			}
			return
		}
		s.reply(f, "ok", emptyObject)
	default:
		if s.lookup(frame{Topic: f.Topic}) == nil {
			s.replyError(f, reasonUnmatchedTopic)
			return
		}
		s.replyError(f, reasonUnknownEvent)
	}
}

// join subscribes the socket to a channel: reply, then the channel's
// history, then live messages, with no gap and no repeat. A join of a
// channel the socket has joined already, under any spelling of its topic,
// replaces the old join, which gets phx_close just before the new join's
// reply: a socket holds one join per channel, so it never receives a
// message twice.
func (s *session) join(f frame) {
	// The token was verified when the socket opened: only its expiry
	// can have changed.
	if s.h.o.Tokens.Expired(s.claims) {
		s.refuse(f, reasonTokenExpired)
		return
	}
	cid, reason := authorize(f.Topic, s.claims)
	if reason != "" {
		s.refuse(f, reason)
		return
	}
	key, _ := canonicalTopic(f.Topic, s.claims)
	joinRef := f.JoinRef
	if joinRef == nil {
		joinRef = f.Ref // a client that sends no join_ref gets its join's ref
	}
	m := &member{s: s, key: key, topic: f.Topic, joinRef: joinRef, lastSeq: lastSeq(f.Payload)}
	m.head, m.tail = pushPrefix(joinRef, f.Topic)

	s.subsMu.Lock()
	old := s.sub(key)
	if old == nil && len(s.subs) >= s.h.o.MaxChannelsPerSocket {
		s.subsMu.Unlock()
		s.refuse(f, reasonTooMany)
		return
	}
	s.put(m)
	s.subsMu.Unlock()
	// The new join enters the room before the old one leaves it, so the
	// room's subscription stays up.
	r := s.h.addMember(cid, m)
	var pre [][]byte
	if old != nil {
		if old.finish() {
			pre = append(pre, old.closeFrame())
			s.h.m.channelCloses.WithLabelValues("replaced").Inc()
		}
		s.h.removeMember(old)
	}

	// Subscribe first and wait until Redis confirms it, then read the
	// history: every message is then either in what we read or arrives
	// live after it (m buffers those until start), or both.
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	var hist []entry
	err := s.awaitRoom(ctx, r)
	if err == nil {
		hist, err = s.h.history(ctx, cid)
	}
	if err != nil {
		m.finish()
		s.drop(m)
		if !s.isClosing() {
			s.h.o.Log.Warn().Err(err).Str("channel_id", cid).Msg("join failed")
			s.send(append(pre, replyFrame(f, "error", reasonResponse(reasonUnavailable))))
			s.h.m.joins.WithLabelValues("unavailable").Inc()
		}
		return
	}
	s.h.m.joins.WithLabelValues("ok").Inc()
	if m.start(pre, replyFrame(f, "ok", emptyObject), hist) {
		s.drop(m) // the channel has ended: history, then phx_close
	}
}

// refuse answers a join with an error reason.
func (s *session) refuse(f frame, reason string) {
	s.h.m.joins.WithLabelValues("refused").Inc()
	s.replyError(f, reason)
}

var errSessionClosing = errors.New("socket closing")

func (s *session) awaitRoom(ctx context.Context, r *room) error {
	select {
	case <-r.ready:
		return nil
	case <-s.stop:
		return errSessionClosing
	case <-ctx.Done():
		return errors.New("redis subscription not confirmed in time")
	}
}

// drop takes a join that has ended out of the socket and its room.
func (s *session) drop(m *member) {
	s.forget(m)
	s.h.removeMember(m)
}

// splitTopic reads ai_response:{project_id}:{channel_id} (pid set) or
// ai_response:{channel_id} (pid empty), ids not checked.
func splitTopic(topic string) (pid, cid string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "ai_response:")
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, ":")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return "", parts[0], true
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return parts[0], parts[1], true
	}
	return "", "", false
}

// canonicalTopic is the one spelling of a topic's channel: the long form,
// in lower case, with the token's project for the short form. Every
// spelling a socket may join of one channel has the same canonical topic.
func canonicalTopic(topic string, c wstoken.Claims) (string, bool) {
	pid, cid, ok := splitTopic(topic)
	if !ok {
		return "", false
	}
	if pid == "" {
		pid = c.ProjectID
	}
	return "ai_response:" + strings.ToLower(pid) + ":" + strings.ToLower(cid), true
}

// authorize checks a join topic against the socket's token and returns the
// room's channel id, or the error reason. Shape first, then ids, then
// ownership; ids compare case-insensitively (UUIDs), and the room is the
// token's channel.
func authorize(topic string, c wstoken.Claims) (cid, reason string) {
	pid, cid, ok := splitTopic(topic)
	if !ok {
		return "", reasonInvalidFormat
	}
	if pid != "" && !isUUID(pid) {
		return "", reasonInvalidProject
	}
	if !isUUID(cid) {
		return "", reasonInvalidChannel
	}
	if pid != "" && !strings.EqualFold(pid, c.ProjectID) {
		return "", reasonUnauthorizedProject
	}
	if !strings.EqualFold(cid, c.ChannelID) {
		return "", reasonUnauthorizedChannel
	}
	return c.ChannelID, ""
}

// isUUID accepts the canonical 8-4-4-4-12 hex form only.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
