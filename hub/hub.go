package hub

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/wstoken"
)

//go:embed lua/publish.lua
var publishLua string

var publishScript = redis.NewScript(publishLua)

// PublishSource is the source of the script Publish sends, for a package
// that registers it to be loaded on each new Redis connection with its
// own scripts (rdb.NewScript): the hub imports none of those packages.
var PublishSource = publishLua

// PublishFunc is the publish script as the Lua function
// hub_publish(KEYS, ARGV), for a script of another package that publishes
// a channel's final message itself, in the step that decides it (on the
// channel's slot), with the keys and arguments of FinalPublishArgs and
// the message as ARGV[1]. It returns what Publish's seq would be (0: the
// history already had the message).
var PublishFunc = "local function hub_publish(KEYS, ARGV)\n" + publishLua + "\nend\n"

// Options configures a Hub. Zero values take the defaults noted.
type Options struct {
	Prefix    string          // Redis key prefix; default "riverhub"
	Tokens    *wstoken.Issuer // verifies ws tokens; required to serve sockets
	Retention time.Duration   // history TTL, renewed by each message; default 7 days
	HotWindow time.Duration   // history TTL once a channel's final message is in; default an hour (at most Retention)
	// Record, when set, names each channel's record (a hash on the
	// channel's slot, kept by package channels): a final publish notes its
	// seq there (field room_seq), and a join that finds the history gone
	// (after HotWindow) is sent {"seq": room_seq, "payload": the record's
	// message field}, the final message as the history held it. When
	// FinalMessage is set, it is asked instead, for the seq and the
	// message (both empty: none), wherever its owner keeps them.
	Record               func(cid string) string
	FinalMessage         func(ctx context.Context, cid string) (seq string, msg json.RawMessage, err error)
	HistoryMax           int           // messages kept per channel and replayed on join; default 100
	MaxChannelsPerSocket int           // topics one socket may join; default 100
	MaxConns             int           // sockets on this node; more are refused with 503; default 20000
	SendQueue            int           // per-socket outbound queue, in pushes (a join's replay counts as one); default 256
	WriteTimeout         time.Duration // per frame written; default 10s
	HeartbeatTimeout     time.Duration // a socket silent this long is closed; default 60s (2 × the phoenix client's 30 s heartbeat)
	IdleTimeout          time.Duration // a socket without a join this long is closed with 1000, heartbeats or not; default 60s
	MaxFrameBytes        int64         // inbound frame limit; larger frames close the socket with 1009; default 64 KiB
	SingleUseTokens      bool          // each ws token opens one socket, on any node; a second connection with it gets 403; default false
	Log                  zerolog.Logger
	Registerer           prometheus.Registerer // optional
	Now                  func() time.Time      // the clock ws token expiries are read off; default time.Now
}

const (
	// joinTimeout bounds a join's wait for the room's subscription and its
	// history read: below the phoenix client's 10 s push timeout, so the
	// client sees our error reply rather than its own timeout.
	joinTimeout = 5 * time.Second
	// redisTimeout bounds the pub/sub loop's own Redis calls.
	redisTimeout = 5 * time.Second
)

// Hub serves Phoenix-protocol sockets and fans channel messages out to them.
type Hub struct {
	rdb redis.UniversalClient
	o   Options
	m   metrics

	conns atomic.Int64 // sockets accepted and not yet finished

	sessMu   sync.Mutex
	sessions map[*session]struct{}
	closed   bool // under sessMu: Shutdown began; no new sockets

	// cluster is the Cluster client when Redis is a Cluster (rooms then
	// use sharded pub/sub: see pubsub.go), nil on a single Redis.
	cluster *redis.ClusterClient

	// Rooms: one per channel with local subscribers. mu guards rooms,
	// dirty, shards and the shards' counts; the pub/sub loop reads rooms
	// under RLock to fan out.
	mu     sync.RWMutex
	rooms  map[string]*room
	dirty  map[string]struct{} // channel ids whose Redis subscription may need to change
	shards map[string]*shard   // the pub/sub connections, by master address ("" on a single Redis)

	wake     chan struct{} // pokes the pub/sub loop to (un)subscribe dirty rooms
	events   chan event    // what the shards' readers received, for the pub/sub loop
	quit     chan struct{} // closed by Shutdown to stop the pub/sub loop
	loopDone chan struct{} // closed when the pub/sub loop has returned

	// The pub/sub loop's own: when to try again the rooms that could not
	// be subscribed (their shard failed, or their slot's master is unknown).
	retry    *time.Timer
	retrying bool
	backoff  time.Duration

	psMu    sync.Mutex
	started bool // under psMu: Start has run the loop
	stopped bool // under psMu: Shutdown has stopped (or forestalled) the loop
}

// New returns a Hub; Start begins its pub/sub loop.
func New(rdb redis.UniversalClient, o Options) *Hub {
	if o.Prefix == "" {
		o.Prefix = "riverhub"
	}
	if o.Retention <= 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.HotWindow <= 0 {
		o.HotWindow = time.Hour
	}
	o.HotWindow = min(o.HotWindow, o.Retention)
	if o.HistoryMax <= 0 {
		o.HistoryMax = 100
	}
	if o.MaxChannelsPerSocket <= 0 {
		o.MaxChannelsPerSocket = 100
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 20000
	}
	if o.SendQueue <= 0 {
		o.SendQueue = 256 // a streamed answer is ~20 pushes a second per channel
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = 60 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 64 << 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Hub{
		rdb: rdb, o: o,
		sessions: make(map[*session]struct{}),
		cluster:  clusterOf(rdb),
		rooms:    make(map[string]*room),
		dirty:    make(map[string]struct{}),
		shards:   make(map[string]*shard),
		wake:     make(chan struct{}, 1),
		events:   make(chan event, 4096),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
		retry:    time.NewTimer(time.Hour),
		backoff:  minBackoff,
	}
	h.retry.Stop()
	h.m = newMetrics(o.Registerer, h)
	return h
}

func (h *Hub) histKey(cid string) string { return h.o.Prefix + ":ch:{" + cid + "}:hist" }

// roomChannel is the pub/sub channel a channel's messages are published on.
func (h *Hub) roomChannel(cid string) string { return h.o.Prefix + ":room:{" + cid + "}" }

// roomOf is the inverse of roomChannel.
func (h *Hub) roomOf(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, h.o.Prefix+":room:{")
	if !ok || !strings.HasSuffix(rest, "}") {
		return "", false
	}
	return rest[:len(rest)-1], true
}

// Start starts the loop that subscribes rooms (opening pub/sub
// connections as they are needed) and fans messages out. Safe twice.
func (h *Hub) Start() {
	h.psMu.Lock()
	defer h.psMu.Unlock()
	if h.started || h.stopped {
		return
	}
	h.started = true
	go h.loop()
}

// ErrInvalidMessage is a message that is not a JSON object.
var ErrInvalidMessage = errors.New("hub: message is not a JSON object")

// Publish appends msg to the channel's history and sends it to every socket
// joined to the channel, on every node. msg is sent byte for byte as the
// payload of a "response" push. A repeat of a message the channel's
// history holds is dropped, so a publisher that runs again after a crash
// does not show it twice. projectID is not part of the room's identity (the
// ws token binds a socket to one project and channel); it is accepted to
// satisfy channels.Publisher. Publish never waits on a socket.
func (h *Hub) Publish(ctx context.Context, projectID, channelID string, msg json.RawMessage) error {
	if channelID == "" {
		return errors.New("hub: publish: empty channel id")
	}
	if !isObject(msg) {
		return ErrInvalidMessage
	}
	keys, args := h.publishArgs(channelID, msg)
	seq, err := publishScript.Run(ctx, h.rdb, keys, args...).Int64()
	if err != nil {
		return fmt.Errorf("publish to channel %s: %w", channelID, err)
	}
	if seq == 0 {
		h.m.published.WithLabelValues("duplicate").Inc()
	} else {
		h.m.published.WithLabelValues("published").Inc()
	}
	return nil
}

// PublishIn queues the same publish as Publish into p, the caller's
// pipeline, so that it goes in one round trip with the caller's own
// commands (the task workers send their publishes with their lease
// releases). After the channel's final message (isFinal) the history
// expires after HotWindow, and the message's seq is noted in the channel's
// record (Options.Record). The func it returns reports, once p
// has run, what the room did: the message's sequence number, or 0 when the
// room already held the message and dropped it as a repeat. It is counted
// as "pipelined".
func (h *Hub) PublishIn(ctx context.Context, p redis.Pipeliner, projectID, channelID string, msg json.RawMessage) func() (seq int64, err error) {
	if channelID == "" {
		return func() (int64, error) { return 0, errors.New("hub: publish: empty channel id") }
	}
	if !isObject(msg) {
		return func() (int64, error) { return 0, ErrInvalidMessage }
	}
	keys, args := h.publishArgs(channelID, msg)
	cmd := publishScript.Eval(ctx, p, keys, args...)
	h.m.published.WithLabelValues("pipelined").Inc()
	return func() (int64, error) {
		seq, err := cmd.Int64()
		if err != nil {
			return 0, fmt.Errorf("publish to channel %s: %w", channelID, err)
		}
		return seq, nil
	}
}

// PublishLoneIn queues into p the publish of a channel's final message
// that is its room's only message (a standard task's answer, not
// streamed): seq 1, no history, one PUBLISH (SPUBLISH on a Cluster). The
// caller has already written the message and room_seq 1 into the
// channel's record (Options.Record) with the write that decided it, which
// is where a join reads it (as it does once a history has expired) and
// what tells publish.lua it is a repeat. Publishing again is harmless: a
// join ends at its final message, so no socket shows it twice; that is
// also how a publish redone after a crash reaches sockets still waiting
// (publish.lua sends a lone final message again). Without Options.Record
// it is PublishIn.
func (h *Hub) PublishLoneIn(ctx context.Context, p redis.Pipeliner, projectID, channelID string, msg json.RawMessage) func() (seq int64, err error) {
	if h.o.Record == nil || channelID == "" || !isObject(msg) || !isFinal(string(msg)) {
		return h.PublishIn(ctx, p, projectID, channelID, msg)
	}
	entry := make([]byte, 0, len(msg)+24)
	entry = append(entry, `{"seq":1,"payload":`...)
	entry = append(entry, msg...)
	entry = append(entry, '}')
	var cmd *redis.IntCmd
	if h.cluster != nil {
		cmd = p.SPublish(ctx, h.roomChannel(channelID), entry)
	} else {
		cmd = p.Publish(ctx, h.roomChannel(channelID), entry)
	}
	h.m.published.WithLabelValues("pipelined").Inc()
	return func() (int64, error) {
		if err := cmd.Err(); err != nil {
			return 0, fmt.Errorf("publish to channel %s: %w", channelID, err)
		}
		return 1, nil
	}
}

// FinalPublishArgs are the keys and arguments of hub_publish
// (PublishFunc) for channel cid's final message, without the message
// (ARGV[1]), which the caller's script fills in: what PublishIn sends for
// a final message.
func (h *Hub) FinalPublishArgs(cid string) ([]string, []any) {
	keys := []string{h.histKey(cid)}
	if h.o.Record != nil {
		keys = append(keys, h.o.Record(cid))
	}
	return keys, []any{h.o.HistoryMax, max(int64(h.o.HotWindow/time.Second), 1), h.roomChannel(cid), h.shardedFlag(), "1"}
}

// CountScriptPublish counts a publish made by another package's script
// (PublishFunc), as PublishIn counts its own.
func (h *Hub) CountScriptPublish() { h.m.published.WithLabelValues("script").Inc() }

// publishArgs are publish.lua's keys and arguments: a final message
// (isFinal) keeps the history for the hot window and notes its seq in the
// channel's record.
func (h *Hub) publishArgs(cid string, msg json.RawMessage) ([]string, []any) {
	if isFinal(string(msg)) {
		keys, args := h.FinalPublishArgs(cid)
		return keys, append([]any{[]byte(msg)}, args...)
	}
	return []string{h.histKey(cid)}, []any{[]byte(msg), h.o.HistoryMax, max(int64(h.o.Retention/time.Second), 1),
		h.roomChannel(cid), h.shardedFlag(), "0"}
}

// The events of a channel's streamed answer (docs/realtime.md, "Streamed
// answers"), pushed besides its messages' "response".
const (
	EventChunk      = "chunk"       // a piece of the answer's text
	EventChunkReset = "chunk_reset" // the pieces so far are void: a retry or fallback starts over
)

func streamEvent(ev string) bool { return ev == EventChunk || ev == EventChunkReset }

// MaxStreamEntries bounds a channel's streamed entries: a stream stops
// publishing after so many (its final message still carries the whole
// answer).
const MaxStreamEntries = 4000

// LastSeq is the seq of the channel's last room entry (0: none), which a
// stream numbers its pieces after (AppendStreamIn): its history's last, or
// its final message's (room_seq in its record, Options.Record), whichever
// is later.
func (h *Hub) LastSeq(ctx context.Context, channelID string) (int64, error) {
	var last *redis.StringCmd
	var final *redis.StringCmd
	_, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		last = p.LIndex(ctx, h.histKey(channelID), -1)
		if h.o.Record != nil {
			final = p.HGet(ctx, h.o.Record(channelID), "room_seq")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	var seq int64
	if s, err := last.Result(); err == nil {
		e, ok := parseEntry(s)
		if !ok {
			return 0, fmt.Errorf("hub: channel %s: unreadable history entry", channelID)
		}
		seq = e.seq
	}
	if final != nil {
		if n, err := final.Int64(); err == nil {
			seq = max(seq, n)
		}
	}
	return seq, nil
}

// AppendStreamIn queues piece seq of a channel's streamed answer (event
// EventChunk or EventChunkReset) into p, the caller's pipeline: RPUSH to
// the channel's history (EXPIRE to Retention with the stream's first
// piece), PUBLISH (SPUBLISH on a Cluster) to its room; two commands, no
// script. The stream numbers its pieces itself, from LastSeq on: it is the
// channel's only publisher while it streams (nothing else is published
// into a channel before its answer is in), and a piece sent again after a
// failed round trip keeps its seq, so sockets drop the repeat (a join
// replays each seq once). Streamed entries do not count against
// HistoryMax; the final message drops them (publish.lua).
func (h *Hub) AppendStreamIn(ctx context.Context, p redis.Pipeliner, channelID string, seq int64, event string, payload json.RawMessage, first bool) error {
	switch {
	case channelID == "":
		return errors.New("hub: publish: empty channel id")
	case !streamEvent(event):
		return fmt.Errorf("hub: %q is not a stream event", event)
	case seq <= 0:
		return fmt.Errorf("hub: stream entry seq %d", seq)
	case !isObject(payload):
		return ErrInvalidMessage
	}
	entry := make([]byte, 0, len(payload)+48)
	entry = append(entry, `{"seq":`...)
	entry = strconv.AppendInt(entry, seq, 10)
	entry = append(entry, `,"event":"`...)
	entry = append(entry, event...)
	entry = append(entry, `","payload":`...)
	entry = append(entry, payload...)
	entry = append(entry, '}')
	key := h.histKey(channelID)
	p.RPush(ctx, key, entry)
	if first {
		p.Expire(ctx, key, h.o.Retention)
	}
	if h.cluster != nil {
		p.SPublish(ctx, h.roomChannel(channelID), entry)
	} else {
		p.Publish(ctx, h.roomChannel(channelID), entry)
	}
	h.m.published.WithLabelValues("streamed").Inc()
	return nil
}

// clusterOf is c's Cluster client, or nil when c does not talk to a
// Cluster. It sees through a wrapper that says what it wraps (as the
// server's Redis connection does).
func clusterOf(c redis.UniversalClient) *redis.ClusterClient {
	if w, ok := c.(interface{ Unwrap() redis.UniversalClient }); ok {
		c = w.Unwrap()
	}
	cc, _ := c.(*redis.ClusterClient)
	return cc
}

// shardedFlag is the publish script's ARGV[5]: "1" to SPUBLISH.
func (h *Hub) shardedFlag() string {
	if h.cluster != nil {
		return "1"
	}
	return "0"
}

// isObject reports whether b is one valid JSON object.
func isObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return json.Valid(b)
		}
		return false
	}
	return false
}

// ServeHTTP is the socket endpoint, GET /socket/websocket?token=…&vsn=2.0.0.
//
// Any Origin is accepted: the credential is the ws token in the URL (or the
// phoenix client's authToken subprotocol), never a cookie, so a page on
// another origin gains nothing a token holder does not already have.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if vsn := r.URL.Query().Get("vsn"); vsn != "" && !strings.HasPrefix(vsn, "2.") {
		httpError(w, http.StatusBadRequest, "unsupported_vsn", "only the Phoenix v2 JSON serializer (vsn=2.0.0) is supported")
		return
	}
	if h.isClosed() {
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "unavailable", "this node is shutting down")
		return
	}
	if h.o.Tokens == nil {
		httpError(w, http.StatusServiceUnavailable, "unavailable", "sockets are not configured on this node")
		return
	}
	token := requestToken(r)
	claims, err := h.o.Tokens.Parse(token)
	if err != nil {
		msg := "missing or invalid ws token"
		if errors.Is(err, wstoken.ErrExpired) {
			msg = "ws token expired; get a fresh one from POST /api/v1/ai/reconnect"
		}
		httpError(w, http.StatusForbidden, "forbidden", msg)
		return
	}
	if h.conns.Add(1) > int64(h.o.MaxConns) {
		h.conns.Add(-1)
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "unavailable", "this node has too many sockets open")
		return
	}
	handedOff := false // from then on the socket's goroutine holds the slot
	defer func() {
		if !handedOff {
			h.conns.Add(-1)
		}
	}()
	// After the checks that answer 503, so that a node which cannot take
	// the socket does not use the token up.
	if h.o.SingleUseTokens {
		fresh, err := h.useToken(r.Context(), claims)
		switch {
		case errors.Is(err, errNoTokenID):
			httpError(w, http.StatusForbidden, "forbidden", "single-use ws tokens need an id (jti) and this one has none; get a fresh one from POST /api/v1/ai/reconnect")
			return
		case err != nil:
			h.o.Log.Warn().Err(err).Msg("record a single-use ws token")
			w.Header().Set("Retry-After", "1")
			httpError(w, http.StatusServiceUnavailable, "unavailable", "could not check the ws token; try again")
			return
		case !fresh:
			httpError(w, http.StatusForbidden, "forbidden", "ws token already used: each token opens one socket; get a fresh one from POST /api/v1/ai/reconnect")
			return
		}
	}

	conn, err := websocket.Accept(leanBuffers{w}, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // see above: the token is the credential
		Subprotocols:       []string{"phoenix"},
	})
	if err != nil {
		return // Accept has answered
	}
	conn.SetReadLimit(h.o.MaxFrameBytes)
	s := newSession(h, conn, claims)
	if !h.register(s) {
		_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	// The socket outlives this handler: returning lets net/http drop what
	// it keeps per request (the request, its response buffer, the handler's
	// deep stack), none of which a socket uses again.
	handedOff = true
	go s.serve()
}

// tokenSkew keeps a used token's record a little past its exp: a margin
// for any error in the nodes' clocks.
const tokenSkew = time.Minute

var errNoTokenID = errors.New("ws token has no jti")

// useToken records the token as used and reports whether this was its
// first use: SET NX of P:wstoken:used:{jti}, so that of two sockets racing
// on any nodes exactly one wins, kept until the token expires. The phoenix
// client reconnects with the token it started with, so with single-use
// tokens its app fetches a fresh one for each reconnect.
func (h *Hub) useToken(ctx context.Context, c wstoken.Claims) (bool, error) {
	if c.ID == "" || c.ExpiresAt == nil {
		return false, errNoTokenID
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	ttl := c.ExpiresAt.Time.Sub(h.o.Now()) + tokenSkew
	fresh, err := h.rdb.SetNX(ctx, h.o.Prefix+":wstoken:used:"+c.ID, 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("record ws token %s as used: %w", c.ID, err)
	}
	return fresh, nil
}

// requestToken is the token from the query, or else from the phoenix
// client's authToken option (subprotocol "base64url.bearer.phx.<base64>").
func requestToken(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	for _, line := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(line, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), "base64url.bearer.phx.")
			if !ok {
				continue
			}
			enc = strings.TrimRight(enc, "=")
			for _, e := range []*base64.Encoding{base64.RawURLEncoding, base64.RawStdEncoding} {
				if b, err := e.DecodeString(enc); err == nil {
					return string(b)
				}
			}
		}
	}
	return ""
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg})
}

func (h *Hub) isClosed() bool {
	h.sessMu.Lock()
	defer h.sessMu.Unlock()
	return h.closed
}

func (h *Hub) register(s *session) bool {
	h.sessMu.Lock()
	defer h.sessMu.Unlock()
	if h.closed {
		return false
	}
	h.sessions[s] = struct{}{}
	return true
}

func (h *Hub) unregister(s *session) {
	h.sessMu.Lock()
	delete(h.sessions, s)
	h.sessMu.Unlock()
}

// Shutdown refuses new sockets, closes every socket with 1001 (going away)
// so that clients reconnect to another node, waits for them to finish
// (until ctx is done; then the rest are dropped without a close handshake
// and Shutdown returns ctx's error), then stops the pub/sub loop. A socket
// whose client has stopped reading takes up to WriteTimeout (or the close
// frame's 5 s) to finish. Safe twice.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.sessMu.Lock()
	h.closed = true
	open := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		open = append(open, s)
	}
	h.sessMu.Unlock()

	for _, s := range open {
		s.closeWith(websocket.StatusGoingAway, "server shutting down")
	}
	var err error
	for _, s := range open {
		select {
		case <-s.done:
			continue
		case <-ctx.Done():
		}
		err = ctx.Err()
		// Out of time: drop the rest without a handshake. A socket whose
		// close handshake is under way finishes it on its own (within
		// 10 s, the library's bound), so do not wait for it here.
		for _, s := range open {
			go func() { _ = s.conn.CloseNow() }()
		}
		break
	}
	h.psMu.Lock()
	if !h.stopped {
		h.stopped = true
		close(h.quit)
	}
	running := h.started
	h.psMu.Unlock()
	if running {
		<-h.loopDone // the loop closes the pub/sub connection as it returns
	}
	if err != nil {
		return fmt.Errorf("hub shutdown: %w", err)
	}
	return nil
}

type metrics struct {
	sockets       prometheus.Gauge
	joined        prometheus.Gauge
	pushed        prometheus.Counter
	slow          *prometheus.CounterVec
	resyncs       prometheus.Counter
	published     *prometheus.CounterVec
	joins         *prometheus.CounterVec
	channelCloses *prometheus.CounterVec
	idleCloses    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, h *Hub) metrics {
	m := metrics{
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{Name: "riverhub_hub_sockets_open",
			Help: "WebSockets open on this node."}),
		joined: prometheus.NewGauge(prometheus.GaugeOpts{Name: "riverhub_hub_joined_channels",
			Help: "Channel topics joined by this node's sockets."}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_hub_messages_pushed_total",
			Help: "Channel messages queued to this node's sockets (history replays included)."}),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_hub_slow_client_closes_total",
			Help: "Sockets closed for not keeping up, by reason (queue_full, write_timeout)."}, []string{"reason"}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_hub_room_resyncs_total",
			Help: "Rooms re-read from history after their pub/sub subscription was re-established."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_hub_publishes_total",
			Help: "Publish calls on this node, by result (published, duplicate; streamed: a piece of a streamed answer queued in a caller's pipeline; pipelined: queued in a caller's pipeline, whose outcome the caller reads; script: made by another package's script, with the write that decided the message)."}, []string{"result"}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_hub_joins_total",
			Help: "phx_join requests answered on this node, by result (ok, refused, unavailable)."}, []string{"result"}),
		channelCloses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_hub_channel_closes_total",
			Help: "Joins ended by the server with phx_close, by reason (final: the channel's final message; replaced: a new join of the channel on the socket; left: phx_leave)."}, []string{"reason"}),
		idleCloses: prometheus.NewCounter(prometheus.CounterOpts{Name: "riverhub_hub_idle_closes_total",
			Help: "Sockets closed for having no join for the idle timeout."}),
	}
	if reg == nil {
		return m
	}
	rooms := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_hub_rooms",
		Help: "Channels this node holds a Redis subscription for."}, func() float64 {
		h.mu.RLock()
		defer h.mu.RUnlock()
		return float64(len(h.rooms))
	})
	conns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_hub_pubsub_connections",
		Help: "Redis pub/sub connections this node holds: one on a single Redis, one per master owning a room's slot on a Cluster."}, func() float64 {
		h.mu.RLock()
		defer h.mu.RUnlock()
		return float64(len(h.shards))
	})
	reg.MustRegister(m.sockets, m.joined, m.pushed, m.slow, m.resyncs, m.published, m.joins, m.channelCloses, m.idleCloses, rooms, conns)
	return m
}
