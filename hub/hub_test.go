package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wstoken"
)

func TestJoinThenPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()

	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	// Sent byte for byte: spacing, key order and HTML characters survive.
	payload := `{"status":"success",  "data": {"b":1,"a":"<&>"} ,"n":1}`
	publish(t, h, pid, cid, payload)
	c.response(topic, ref, payload)
}

func TestHistoryOnJoin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	for i := 1; i <= 3; i++ {
		publish(t, h, pid, cid, fmt.Sprintf(`{"n":%d}`, i))
	}

	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	for i := 1; i <= 3; i++ {
		c.response(topic, ref, fmt.Sprintf(`{"n":%d}`, i))
	}
	publish(t, h, pid, cid, `{"n":4}`)
	c.response(topic, ref, `{"n":4}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("unexpected frames: %v", extra)
	}
}

func TestHistoryIsTrimmedAndExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{HistoryMax: 3, Retention: time.Hour})
	pid, cid, topic, token := e.channel()
	for i := 1; i <= 5; i++ {
		publish(t, h, pid, cid, fmt.Sprintf(`{"n":%d}`, i))
	}
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	for i := 3; i <= 5; i++ {
		c.response(topic, ref, fmt.Sprintf(`{"n":%d}`, i))
	}
	ctx := context.Background()
	key := h.histKey(cid)
	ttl, err := e.rdb.TTL(ctx, key).Result()
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Errorf("TTL %s = %v, %v; want (0, 1h]", key, ttl, err)
	}
	// Trimmed to its last three, the history goes on numbering from its
	// last entry.
	publish(t, h, pid, cid, `{"n":6}`)
	c.response(topic, ref, `{"n":6}`)
	if last := e.rdb.LIndex(ctx, key, -1).Val(); last != `{"seq":6,"payload":{"n":6}}` {
		t.Errorf("last entry %s, want seq 6", last)
	}
	if n := e.rdb.Exists(ctx, key[:len(key)-len("hist")]+"seq").Val(); n != 0 {
		t.Errorf("a seq key was written")
	}
}

func TestShortTopicForm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, _, token := e.channel()
	topic := "ai_response:" + cid
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"n":1}`)
	c.response(topic, ref, `{"n":1}`)
}

func TestDuplicatePublishDeliveredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)

	// A publisher that crashed after publishing runs again: the repeat is
	// dropped, also when other messages came in between.
	for _, p := range []string{`{"s":"a"}`, `{"s":"a"}`, `{"s":"b"}`, `{"s":"a"}`, `{"s":"c"}`} {
		publish(t, h, pid, cid, p)
	}
	for _, p := range []string{`{"s":"a"}`, `{"s":"b"}`, `{"s":"c"}`} {
		c.response(topic, ref, p)
	}
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("duplicate delivered: %v", extra)
	}
	// A late joiner's history holds it once too.
	late := dial(t, srv, token)
	lref := late.mustJoin(topic)
	for _, p := range []string{`{"s":"a"}`, `{"s":"b"}`, `{"s":"c"}`} {
		late.response(topic, lref, p)
	}
	if extra := late.heartbeat(); len(extra) > 0 {
		t.Fatalf("duplicate in history: %v", extra)
	}
}

func TestPublishRejectsNonObjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := New(e.rdb, Options{Prefix: e.prefix})
	for _, p := range []string{``, `nope`, `[1]`, `"s"`, `{"a":`, `null`} {
		if err := h.Publish(context.Background(), "p", uuid.NewString(), json.RawMessage(p)); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidMessage", p, err)
		}
	}
}

func TestTwoNodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _ := e.node(Options{})
	_, srvB := e.node(Options{})
	pid, cid, topic, token := e.channel()

	c := dial(t, srvB, token)
	ref := c.mustJoin(topic)
	publish(t, a, pid, cid, `{"from":"a"}`)
	c.response(topic, ref, `{"from":"a"}`)
}

func TestConnectRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{})
	pid, cid := uuid.NewString(), uuid.NewString()
	expired, _ := wstoken.NewIssuer(testSecret, -time.Minute).Issue(pid, cid)
	foreign, _ := wstoken.NewIssuer("another secret", time.Hour).Issue(pid, cid)
	good, _ := e.tokens.Issue(pid, cid)
	tests := []struct {
		name, url string
		want      int
	}{
		{"no token", strings.TrimSuffix(wsURL(srv, ""), "&token="), http.StatusForbidden},
		{"garbage token", wsURL(srv, "garbage"), http.StatusForbidden},
		{"expired token", wsURL(srv, expired), http.StatusForbidden},
		{"token of another deployment", wsURL(srv, foreign), http.StatusForbidden},
		{"serializer v1", strings.Replace(wsURL(srv, good), "vsn=2.0.0", "vsn=1.0.0", 1), http.StatusBadRequest},
		{"good token", wsURL(srv, good), http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dialStatus(t, tt.url); got != tt.want {
				t.Errorf("HTTP %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTokenInSubprotocol(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	// The phoenix client's authToken option: btoa(token) without padding.
	enc := strings.TrimRight(base64Std(token), "=")
	url := strings.TrimSuffix(wsURL(srv, ""), "&token=")
	c := dialWith(t, url, &websocket.DialOptions{Subprotocols: []string{"phoenix", "base64url.bearer.phx." + enc}})
	if got := c.c.Subprotocol(); got != "phoenix" {
		t.Errorf("subprotocol %q, want phoenix", got)
	}
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"n":1}`)
	c.response(topic, ref, `{"n":1}`)
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{MaxConns: 1})
	_, _, _, token := e.channel()
	first := dial(t, srv, token)
	if got := dialStatus(t, wsURL(srv, token)); got != http.StatusServiceUnavailable {
		t.Fatalf("second socket: HTTP %d, want 503", got)
	}
	_ = first.c.Close(websocket.StatusNormalClosure, "")
	eventually(t, "the first socket to finish", func() bool { return h.conns.Load() == 0 })
	if got := dialStatus(t, wsURL(srv, token)); got != http.StatusSwitchingProtocols {
		t.Fatalf("after the first closed: HTTP %d, want 101", got)
	}
}

func TestJoinReasons(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{})
	pid, cid, _, token := e.channel()
	other := uuid.NewString()
	tests := []struct {
		name, topic, want string
	}{
		{"another project", wstoken.Topic(other, cid), "unauthorized_project_access"},
		{"another project and channel", wstoken.Topic(other, other), "unauthorized_project_access"},
		{"another channel", wstoken.Topic(pid, other), "unauthorized_channel_access"},
		{"another channel, short form", "ai_response:" + other, "unauthorized_channel_access"},
		{"wrong prefix", "room:" + pid + ":" + cid, "invalid_channel_format"},
		{"no ids", "ai_response", "invalid_channel_format"},
		{"empty id", "ai_response:", "invalid_channel_format"},
		{"empty project", "ai_response::" + cid, "invalid_channel_format"},
		{"three ids", "ai_response:" + pid + ":" + cid + ":x", "invalid_channel_format"},
		{"project not a UUID", "ai_response:default:" + cid, "invalid_project_uuid"},
		{"channel not a UUID", "ai_response:" + pid + ":42", "invalid_channel_uuid"},
		{"short form not a UUID", "ai_response:42", "invalid_channel_uuid"},
		{"UUID without dashes", "ai_response:" + strings.ReplaceAll(cid, "-", ""), "invalid_channel_uuid"},
		{"the phoenix topic", "phoenix", "invalid_channel_format"},
	}
	c := dial(t, srv, token)
	for _, tt := range tests {
		_, m := c.join(tt.topic)
		if st, reason := m.reply(); st != "error" || reason != tt.want {
			t.Errorf("%s: join %q → %s %q, want error %q", tt.name, tt.topic, st, reason, tt.want)
		}
	}
	// Refused joins leave the socket usable.
	c.mustJoin(wstoken.Topic(strings.ToUpper(pid), cid))
}

func TestTokenExpiredAtJoin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{})
	pid, cid := uuid.NewString(), uuid.NewString()
	// exp has one-second precision: a two-second token is good for at
	// least one more second, enough to connect.
	issuer := wstoken.NewIssuer(testSecret, 2*time.Second)
	token, _ := issuer.Issue(pid, cid)
	claims, err := issuer.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, srv, token)
	time.Sleep(time.Until(claims.ExpiresAt.Time) + 50*time.Millisecond)
	_, m := c.join(wstoken.Topic(pid, cid))
	if st, reason := m.reply(); st != "error" || reason != "token_expired" {
		t.Fatalf("join with an expired token: %s %q, want error token_expired", st, reason)
	}
}

// The limit counts channels, not spellings: the short form of a topic
// joined in the long form replaces that join rather than adding one.
func TestTooManyChannelsCountsChannels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{MaxChannelsPerSocket: 1})
	_, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	first := c.mustJoin(topic)
	short := "ai_response:" + strings.ToUpper(cid)
	ref := c.nextRef()
	c.writeRaw(fmt.Sprintf(`[%q,%q,%q,"phx_join",{}]`, ref, ref, short))
	c.expectClose(topic, first)
	if st, reason := c.read().reply(); st != "ok" {
		t.Fatalf("the short form: %s %q, want ok", st, reason)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{})
	_, _, topic, token := e.channel()
	c := dial(t, srv, token)
	ref := c.push(nil, "phoenix", "heartbeat", map[string]any{})
	if m := c.read(); m.Raw != fmt.Sprintf(`[null,%q,"phoenix","phx_reply",{"status":"ok","response":{}}]`, ref) {
		t.Fatalf("heartbeat reply %s", m)
	}
	joinRef := c.mustJoin(topic)
	ref = c.push(&joinRef, topic, "heartbeat", map[string]any{})
	if m := c.read(); m.Raw != fmt.Sprintf(`[%q,%q,%q,"phx_reply",{"status":"ok","response":{}}]`, joinRef, ref, topic) {
		t.Fatalf("heartbeat on the channel topic: %s", m)
	}
}

func TestUnmatchedTopicAndUnknownEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{})
	_, _, topic, token := e.channel()
	c := dial(t, srv, token)
	c.push(nil, topic, "ping", map[string]any{})
	if st, reason := c.read().reply(); st != "error" || reason != "unmatched topic" {
		t.Fatalf("event on a topic not joined: %s %q", st, reason)
	}
	joinRef := c.mustJoin(topic)
	c.push(&joinRef, topic, "ping", map[string]any{})
	if st, reason := c.read().reply(); st != "error" || reason != "unknown_event" {
		t.Fatalf("unknown event: %s %q", st, reason)
	}
}

func TestLeave(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	joinRef := c.mustJoin(topic)
	ref := c.push(&joinRef, topic, "phx_leave", map[string]any{})
	m := c.read()
	if st, _ := m.reply(); st != "ok" || *m.Ref != ref {
		t.Fatalf("leave reply %s", m)
	}
	if m := c.read(); m.Raw != fmt.Sprintf(`[%q,%q,%q,"phx_close",{}]`, joinRef, joinRef, topic) {
		t.Fatalf("after leave: %s, want phx_close", m)
	}
	// The node lets go of the Redis subscription.
	eventually(t, "the room to close", func() bool { return h.roomCount() == 0 })
	eventually(t, "the Redis unsubscription", func() bool {
		n, err := e.rdb.PubSubNumSub(context.Background(), h.roomChannel(cid)).Result()
		return err == nil && n[h.roomChannel(cid)] == 0
	})
	publish(t, h, pid, cid, `{"n":1}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("pushed after leave: %v", extra)
	}
	// Leaving a topic that is not joined is ok (as Phoenix).
	c.push(nil, "ai_response:"+uuid.NewString(), "phx_leave", map[string]any{})
	if st, _ := c.read().reply(); st != "ok" {
		t.Fatal("leave of an unjoined topic refused")
	}
}

func TestDuplicateJoinReplacesOld(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	publish(t, h, pid, cid, `{"n":1}`)
	c := dial(t, srv, token)
	first := c.mustJoin(topic)
	c.response(topic, first, `{"n":1}`)

	second := c.nextRef()
	c.writeRaw(fmt.Sprintf(`[%q,%q,%q,"phx_join",{}]`, second, second, topic))
	if m := c.read(); m.Raw != fmt.Sprintf(`[%q,%q,%q,"phx_close",{}]`, first, first, topic) {
		t.Fatalf("want phx_close of the first join, got %s", m)
	}
	if m := c.read(); *m.Ref != second || *m.JoinRef != second {
		t.Fatalf("want the reply to the second join, got %s", m)
	} else if st, _ := m.reply(); st != "ok" {
		t.Fatalf("second join: %s", m)
	}
	c.lastSeq = 0
	c.response(topic, second, `{"n":1}`) // the new join replays the history
	publish(t, h, pid, cid, `{"n":2}`)
	c.response(topic, second, `{"n":2}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("the old join still receives: %v", extra)
	}
}

func TestGarbageClosesOnlyThatSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	healthy := dial(t, srv, token)
	ref := healthy.mustJoin(topic)

	tests := []struct {
		name   string
		frame  string
		binary bool
		want   websocket.StatusCode
	}{
		{"not JSON", `hello`, false, websocket.StatusInvalidFramePayloadData},
		{"object", `{"topic":"phoenix"}`, false, websocket.StatusInvalidFramePayloadData},
		{"four elements", `[null,"1","phoenix","heartbeat"]`, false, websocket.StatusInvalidFramePayloadData},
		{"numeric topic", `[null,"1",7,"heartbeat",{}]`, false, websocket.StatusInvalidFramePayloadData},
		{"object ref", `[null,{},"phoenix","heartbeat",{}]`, false, websocket.StatusInvalidFramePayloadData},
		{"payload not an object", `[null,"1","phoenix","heartbeat",[]]`, false, websocket.StatusInvalidFramePayloadData},
		{"invalid UTF-8", "[null,\"1\",\"\xff\",\"heartbeat\",{}]", false, websocket.StatusInvalidFramePayloadData},
		{"binary frame", `[null,"1","phoenix","heartbeat",{}]`, true, websocket.StatusUnsupportedData},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, srv, token)
			c.mustJoin(topic)
			typ := websocket.MessageText
			if tt.binary {
				typ = websocket.MessageBinary
			}
			if err := c.c.Write(context.Background(), typ, []byte(tt.frame)); err != nil {
				t.Fatal(err)
			}
			if code, reason := c.closeStatus(); code != tt.want || reason == "" {
				t.Fatalf("closed with %d %q, want %d and a reason", code, reason, tt.want)
			}
			p := fmt.Sprintf(`{"after":%d}`, i)
			publish(t, h, pid, cid, p)
			healthy.response(topic, ref, p)
		})
	}
}

func TestOversizeFrame(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{MaxFrameBytes: 1024})
	_, _, topic, token := e.channel()
	c := dial(t, srv, token)
	joinRef := c.mustJoin(topic)
	c.push(&joinRef, topic, "heartbeat", map[string]string{"pad": strings.Repeat("x", 2048)})
	if code, _ := c.closeStatus(); code != websocket.StatusMessageTooBig {
		t.Fatalf("closed with %d, want 1009", code)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, srv := e.node(Options{HeartbeatTimeout: 300 * time.Millisecond})
	_, _, _, token := e.channel()
	c := dial(t, srv, token)
	c.heartbeat() // activity keeps it open…
	start := time.Now()
	code, reason := c.closeStatus() // …silence does not
	if code != websocket.StatusPolicyViolation || reason != "heartbeat timeout" {
		t.Fatalf("closed with %d %q", code, reason)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestSlowClientClosedPublisherNeverBlocked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: smallBuffers{ln}, Config: &http.Server{}}
	h, _ := e.nodeOn(e.rdb, Options{SendQueue: 2, HistoryMax: 4, WriteTimeout: 500 * time.Millisecond, Registerer: reg}, srv)
	pid, cid, topic, token := e.channel()

	healthy := dial(t, srv, token)
	href := healthy.mustJoin(topic)
	slow := dial(t, srv, token)
	slow.mustJoin(topic) // and then never reads again

	// The healthy client keeps up (each message is read before the next is
	// published); the slow one stops reading, its kernel buffers fill,
	// then its two-message queue.
	big := strings.Repeat("x", 32<<10)
	for i := 0; i < 60; i++ {
		start := time.Now()
		publish(t, h, pid, cid, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, big))
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("publish %d took %v", i, d)
		}
		m := healthy.read()
		if !strings.HasPrefix(string(m.Payload), fmt.Sprintf(`{"i":%d,`, i)) || *m.JoinRef != href {
			t.Fatalf("healthy client, message %d: %.60s", i, m.Raw)
		}
	}
	eventually(t, "the slow socket to be closed", func() bool { return h.sessionCount() == 1 })
	if got := counterValue(t, reg, "riverhub_hub_slow_client_closes_total"); got != 1 {
		t.Fatalf("slow-client closes = %v, want 1", got)
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	_, _, topic, token := e.channel()
	a, b := dial(t, srv, token), dial(t, srv, token)
	a.mustJoin(topic)
	b.heartbeat()

	done := make(chan error, 1)
	go func() { done <- h.Shutdown(context.Background()) }()
	for _, c := range []*client{a, b} {
		if code, reason := c.closeStatus(); code != websocket.StatusGoingAway || reason != "server shutting down" {
			t.Fatalf("closed with %d %q, want 1001", code, reason)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := h.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if got := dialStatus(t, wsURL(srv, token)); got != http.StatusServiceUnavailable {
		t.Fatalf("after shutdown: HTTP %d, want 503", got)
	}
}

// A message that reached the history while the room's subscription was
// interrupted is delivered when Redis confirms the resubscription.
func TestResubscriptionFillsTheGap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"n":1}`)
	c.response(topic, ref, `{"n":1}`)

	lost(t, e.rdb, h, cid, 2, `{"n":2}`)
	// What a room's new shard does once its old one failed: SUBSCRIBE
	// (SSUBSCRIBE on a Cluster) again.
	h.mu.RLock()
	sh := h.rooms[cid].sh
	h.mu.RUnlock()
	if err := h.subscribe(context.Background(), sh, []string{h.roomChannel(cid)}); err != nil {
		t.Fatal(err)
	}
	c.response(topic, ref, `{"n":2}`)
	publish(t, h, pid, cid, `{"n":3}`)
	c.response(topic, ref, `{"n":3}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("repeated: %v", extra)
	}
}

// The real thing: Redis drops the node's pub/sub connection (on a
// Cluster, the one to the room's master).
func TestPubSubConnectionKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := "riverhub-test-" + strings.ReplaceAll(e.prefix, ":", "-")
	own := rdbtest.Named(t, name)
	h, srv := e.nodeOn(own, Options{}, httptest.NewUnstartedServer(nil))
	pid, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"n":1}`)
	c.response(topic, ref, `{"n":1}`)

	lost(t, e.rdb, h, cid, 2, `{"n":2}`)
	if n := killPubSub(t, e.rdb, name); n != 1 {
		t.Fatalf("killed %d pub/sub connections named %s, want 1", n, name)
	}
	c.response(topic, ref, `{"n":2}`)
	publish(t, h, pid, cid, `{"n":3}`)
	c.response(topic, ref, `{"n":3}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("repeated: %v", extra)
	}
}

// lost writes a history entry without publishing it, as if the node's
// subscription had been down when it was published.
func lost(tb testing.TB, c redis.UniversalClient, h *Hub, cid string, seq int, payload string) {
	tb.Helper()
	ctx := context.Background()
	if err := c.RPush(ctx, h.histKey(cid), fmt.Sprintf(`{"seq":%d,"payload":%s}`, seq, payload)).Err(); err != nil {
		tb.Fatal(err)
	}
}

// killPubSub kills the pub/sub connections named name, on every master of
// a Cluster, and returns how many it killed.
func killPubSub(tb testing.TB, c redis.UniversalClient, name string) int {
	tb.Helper()
	killed := 0
	err := rdbtest.Nodes(context.Background(), c, func(ctx context.Context, n redis.UniversalClient) error {
		list, err := n.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			fields := map[string]string{}
			for _, f := range strings.Fields(line) {
				k, v, _ := strings.Cut(f, "=")
				fields[k] = v
			}
			if fields["name"] != name || (fields["sub"] == "0" || fields["sub"] == "") && (fields["ssub"] == "0" || fields["ssub"] == "") {
				continue
			}
			if err := n.Do(ctx, "CLIENT", "KILL", "ID", fields["id"]).Err(); err != nil {
				return err
			}
			killed++
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return killed
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	h, srv := e.node(Options{Registerer: reg})
	pid, cid, topic, token := e.channel()
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	publish(t, h, pid, cid, `{"n":1}`)
	publish(t, h, pid, cid, `{"n":1}`)
	c.response(topic, ref, `{"n":1}`)
	for name, want := range map[string]float64{
		"riverhub_hub_sockets_open":          1,
		"riverhub_hub_joined_channels":       1,
		"riverhub_hub_rooms":                 1,
		"riverhub_hub_messages_pushed_total": 1,
		"riverhub_hub_publishes_total":       2,
	} {
		// The counters move just after the frame is handed over.
		eventually(t, fmt.Sprintf("%s = %v", name, want), func() bool { return counterValue(t, reg, name) == want })
	}
}

// counterValue is the sum of a metric's samples (counter or gauge).
func counterValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func strPtr(s string) *string { return &s }

// Sockets that join while messages are being published each receive every
// message exactly once, in order: from the history, then live, with no gap
// or repeat at the seam.
func TestJoinWhilePublishingMissesNothing(t *testing.T) {
	t.Parallel()
	joinWhilePublishing(t, 200, false)
}

// joinWhilePublishing has 8 sockets, on two nodes, join one channel
// staggered across the publishing of total messages, and wants each to get
// every message exactly once, in order. With final, the last message is the
// channel's final one, and phx_close must follow it, once, with nothing
// after.
func joinWhilePublishing(t *testing.T, total int, final bool) {
	t.Helper()
	e := newEnv(t)
	// The burst below is far denser than a channel's real traffic; a queue
	// that holds it keeps this test about the join seam, not slow clients.
	o := Options{HistoryMax: 1000, SendQueue: 1024}
	h, srv := e.node(o)
	_, srvB := e.node(o) // and on another node
	pid, cid, topic, token := e.channel()
	const clients = 8

	results := make(chan error, clients)
	started := make(chan struct{}, clients)
	for i := range clients {
		s := srv
		if i%2 == 1 {
			s = srvB
		}
		c := dial(t, s, token)
		go func() {
			// Stagger the joins across the publishing.
			time.Sleep(time.Duration(i) * 15 * time.Millisecond)
			ref := c.nextRef()
			b, _ := json.Marshal([]any{ref, ref, topic, "phx_join", map[string]any{}})
			if err := c.c.Write(context.Background(), websocket.MessageText, b); err != nil {
				results <- err
				return
			}
			started <- struct{}{}
			if m, err := c.readErr(10 * time.Second); err != nil || m.Event != "phx_reply" {
				results <- fmt.Errorf("client %d: join reply %v %v", i, m, err)
				return
			}
			for want := 1; want <= total; want++ {
				m, err := c.readErr(10 * time.Second)
				if err != nil {
					results <- fmt.Errorf("client %d: waiting for n=%d: %v", i, want, err)
					return
				}
				var p struct{ N int }
				_ = json.Unmarshal(m.Payload, &p)
				if m.Event != "response" || p.N != want {
					results <- fmt.Errorf("client %d: got %s, want n=%d", i, m.Raw, want)
					return
				}
			}
			if final {
				if m, err := c.readErr(10 * time.Second); err != nil || m.Raw != closeFrameOf(topic, ref) {
					results <- fmt.Errorf("client %d: after the final message: %v %v", i, m, err)
					return
				}
			}
			results <- nil
		}()
	}
	<-started
	for n := 1; n <= total; n++ {
		status := "ai_generated"
		if final && n == total {
			status = "success"
		}
		publish(t, h, pid, cid, fmt.Sprintf(`{"n":%d,"status":%q}`, n, status))
	}
	for range clients {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
}

// Each push carries its message's seq as its ref; a join with
// {"last_seq": N} replays only the messages after N: a client that
// reconnects gets exactly what it missed.
func TestJoinResumesAfterLastSeq(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, srv := e.node(Options{})
	pid, cid, topic, token := e.channel()
	for _, p := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		publish(t, h, pid, cid, p)
	}
	c := dial(t, srv, token)
	ref, m := c.joinWith(topic, map[string]any{"last_seq": int64(2)})
	if st, _ := m.reply(); st != "ok" {
		t.Fatalf("join: %s", m)
	}
	c.response(topic, ref, `{"n":3}`)
	if c.lastSeq != 3 {
		t.Fatalf("seq of the 3rd message = %d", c.lastSeq)
	}
	publish(t, h, pid, cid, `{"n":4}`)
	c.response(topic, ref, `{"n":4}`)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("more than the missing messages: %v", extra)
	}
	// A last_seq that is not a count replays everything.
	c2 := dial(t, srv, token)
	ref2, _ := c2.joinWith(topic, map[string]any{"last_seq": "x"})
	for _, p := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`} {
		c2.response(topic, ref2, p)
	}
}

// PublishIn reports each message's sequence number once the pipeline has
// run, and 0 for a repeat the room dropped.
func TestPublishInReportsWhatItPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, _ := e.node(Options{})
	pid, cid, _, _ := e.channel()
	ctx := context.Background()
	var got []int64
	for _, m := range []string{`{"s":"a"}`, `{"s":"a"}`, `{"s":"b"}`, `{"s":"a"}`} {
		var seq func() (int64, error)
		if _, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			seq = h.PublishIn(ctx, p, pid, cid, json.RawMessage(m))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		n, err := seq()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if fmt.Sprint(got) != "[1 0 2 0]" {
		t.Fatalf("seqs = %v, want [1 0 2 0]", got)
	}
	if _, err := h.PublishIn(ctx, e.rdb.Pipeline(), pid, cid, json.RawMessage(`[1]`))(); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("a non-object: %v", err)
	}
}

// A final message notes its seq in the channel's record and keeps the
// history only for the hot window; a join after that is sent the final
// message rebuilt from the record, with the seq it had, and a join from
// that seq on is sent nothing.
func TestFinalMessageOutlivesItsHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	record := func(cid string) string { return e.prefix + ":ch:{" + cid + "}" }
	h, srv := e.node(Options{Retention: time.Hour, HotWindow: 30 * time.Second, Record: record})
	pid, cid, topic, token := e.channel()
	ctx := context.Background()
	final := `{"status":"success","n":2}`
	if err := e.rdb.HSet(ctx, record(cid), "status", "success", "message", final).Err(); err != nil {
		t.Fatal(err)
	}
	e.rdb.Expire(ctx, record(cid), time.Hour)
	publish(t, h, pid, cid, `{"status":"ai_generated","n":1}`)
	if _, err := h.PublishIn(ctx, e.rdb.Pipeline(), pid, cid, json.RawMessage(final))(); err == nil {
		t.Fatal("a pipeline not run reported no error")
	}
	p := e.rdb.Pipeline()
	seq := h.PublishIn(ctx, p, pid, cid, json.RawMessage(final))
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := seq(); err != nil || n != 2 {
		t.Fatalf("final seq %d, %v; want 2", n, err)
	}
	if ttl := e.rdb.TTL(ctx, h.histKey(cid)).Val(); ttl <= 0 || ttl > 30*time.Second {
		t.Errorf("history TTL %v after the final message, want the hot window (30s)", ttl)
	}
	if got := e.rdb.HGet(ctx, record(cid), "room_seq").Val(); got != "2" {
		t.Errorf("room_seq = %q, want 2", got)
	}

	e.rdb.Del(ctx, h.histKey(cid)) // the hot window has passed
	c := dial(t, srv, token)
	ref := c.mustJoin(topic)
	c.lastSeq = 1 // the rebuilt entry keeps its seq, 2
	c.response(topic, ref, final)
	c.expectClose(topic, ref)
	if extra := c.heartbeat(); len(extra) > 0 {
		t.Fatalf("unexpected frames: %v", extra)
	}
	c2 := dial(t, srv, token)
	ref2, _ := c2.joinWith(topic, map[string]any{"last_seq": int64(2)})
	c2.expectClose(topic, ref2)
	if extra := c2.heartbeat(); len(extra) > 0 {
		t.Fatalf("a join from seq 2 was sent %v", extra)
	}

	// A channel that has not finished (no room_seq) rebuilds nothing.
	_, cid2, topic2, token2 := e.channel()
	e.rdb.HSet(ctx, record(cid2), "status", "generating", "message", final)
	e.rdb.Expire(ctx, record(cid2), time.Hour)
	c3 := dial(t, srv, token2)
	c3.mustJoin(topic2)
	if extra := c3.heartbeat(); len(extra) > 0 {
		t.Fatalf("an unfinished channel's join was sent %v", extra)
	}
}
