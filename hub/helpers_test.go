package hub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wstoken"
)

const testSecret = "hub-test-secret"

// env is one test's Redis, key prefix and token issuer; hubs made from one
// env are nodes of one deployment.
type env struct {
	tb     testing.TB
	rdb    redis.UniversalClient
	prefix string
	tokens *wstoken.Issuer
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	c, prefix := rdbtest.New(tb)
	return &env{tb: tb, rdb: c, prefix: prefix, tokens: wstoken.NewIssuer(testSecret, time.Hour)}
}

// node starts a Hub behind an httptest server; both stop when the test ends.
func (e *env) node(o Options) (*Hub, *httptest.Server) {
	e.tb.Helper()
	return e.nodeOn(e.rdb, o, httptest.NewUnstartedServer(nil))
}

func (e *env) nodeOn(c redis.UniversalClient, o Options, srv *httptest.Server) (*Hub, *httptest.Server) {
	e.tb.Helper()
	o.Prefix = e.prefix
	if o.Tokens == nil {
		o.Tokens = e.tokens
	}
	h := New(c, o)
	h.Start()
	srv.Config.Handler = h
	srv.Start()
	e.tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			e.tb.Errorf("shutdown: %v", err)
		}
		srv.Close()
	})
	return h, srv
}

// channel returns a fresh project id, channel id, long-form topic and token.
func (e *env) channel() (pid, cid, topic, token string) {
	e.tb.Helper()
	pid, cid = uuid.NewString(), uuid.NewString()
	token, err := e.tokens.Issue(pid, cid)
	if err != nil {
		e.tb.Fatal(err)
	}
	return pid, cid, wstoken.Topic(pid, cid), token
}

func wsURL(srv *httptest.Server, token string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/socket/websocket?vsn=2.0.0&token=" + token
}

// client is a raw Phoenix v2 client.
type client struct {
	tb      testing.TB
	c       *websocket.Conn
	ref     int
	lastSeq int64 // the seq (ref) of the last push read
}

func dial(tb testing.TB, srv *httptest.Server, token string) *client {
	tb.Helper()
	return dialWith(tb, wsURL(srv, token), nil)
}

func dialWith(tb testing.TB, url string, opts *websocket.DialOptions) *client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	c.SetReadLimit(-1)
	tb.Cleanup(func() { _ = c.CloseNow() })
	return &client{tb: tb, c: c}
}

// dialStatus is the HTTP status of a refused handshake (101 if it opened).
func dialStatus(tb testing.TB, url string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		_ = c.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		tb.Fatalf("dial: %v", err)
	}
	return resp.StatusCode
}

func (c *client) nextRef() string {
	c.ref++
	return strconv.Itoa(c.ref)
}

func (c *client) writeRaw(b string) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(b)); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

// push sends a frame and returns its ref.
func (c *client) push(joinRef *string, topic, event string, payload any) string {
	c.tb.Helper()
	ref := c.nextRef()
	b, _ := json.Marshal([]any{joinRef, ref, topic, event, payload})
	c.writeRaw(string(b))
	return ref
}

type msg struct {
	JoinRef *string
	Ref     *string
	Topic   string
	Event   string
	Payload json.RawMessage
	Raw     string
}

func (m msg) String() string { return m.Raw }

// reply decodes a phx_reply payload.
func (m msg) reply() (status, reason string) {
	var p struct {
		Status   string `json:"status"`
		Response struct {
			Reason string `json:"reason"`
		} `json:"response"`
	}
	_ = json.Unmarshal(m.Payload, &p)
	return p.Status, p.Response.Reason
}

// read returns the next frame; a read that times out fails the test.
func (c *client) read() msg {
	c.tb.Helper()
	m, err := c.readErr(5 * time.Second)
	if err != nil {
		c.tb.Fatalf("read: %v", err)
	}
	return m
}

func (c *client) readErr(timeout time.Duration) (msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.c.Read(ctx)
	if err != nil {
		return msg{}, err
	}
	if typ != websocket.MessageText {
		return msg{}, fmt.Errorf("binary frame from server")
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 5 {
		return msg{}, fmt.Errorf("server sent a frame that is not a v2 message: %s", b)
	}
	m := msg{Raw: string(b), Payload: raw[4]}
	_ = json.Unmarshal(raw[0], &m.JoinRef)
	_ = json.Unmarshal(raw[1], &m.Ref)
	_ = json.Unmarshal(raw[2], &m.Topic)
	_ = json.Unmarshal(raw[3], &m.Event)
	return m, nil
}

// closeStatus reads until the server closes the socket and returns its code.
func (c *client) closeStatus() (websocket.StatusCode, string) {
	c.tb.Helper()
	for {
		_, err := c.readErr(10 * time.Second)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return -1, err.Error()
		}
	}
}

// join joins topic and returns the join ref and the reply.
func (c *client) join(topic string) (string, msg) {
	c.tb.Helper()
	return c.joinWith(topic, map[string]any{})
}

func (c *client) joinWith(topic string, payload map[string]any) (string, msg) {
	c.tb.Helper()
	ref := c.nextRef()
	c.lastSeq, _ = payload["last_seq"].(int64) // a join replays from there
	b, _ := json.Marshal([]any{ref, ref, topic, "phx_join", payload})
	c.writeRaw(string(b))
	m := c.read()
	if m.Event != "phx_reply" || m.Ref == nil || *m.Ref != ref {
		c.tb.Fatalf("join %s: want the phx_reply to ref %s, got %s", topic, ref, m)
	}
	return ref, m
}

// mustJoin joins and fails the test unless the reply is ok.
func (c *client) mustJoin(topic string) string {
	c.tb.Helper()
	ref, m := c.join(topic)
	if st, reason := m.reply(); st != "ok" || m.JoinRef == nil || *m.JoinRef != ref {
		c.tb.Fatalf("join %s: %s %s (%s)", topic, st, reason, m)
	}
	return ref
}

// heartbeat sends a heartbeat and returns every frame that arrived before
// its reply: a barrier that proves what the server did not send.
func (c *client) heartbeat() []msg {
	c.tb.Helper()
	ref := c.push(nil, "phoenix", "heartbeat", map[string]any{})
	var before []msg
	for {
		m := c.read()
		if m.Event == "phx_reply" && m.Topic == "phoenix" && m.Ref != nil && *m.Ref == ref {
			if st, _ := m.reply(); st != "ok" {
				c.tb.Fatalf("heartbeat reply: %s", m)
			}
			return before
		}
		before = append(before, m)
	}
}

// response reads the next frame and checks it is a push of payload.
func (c *client) response(topic, joinRef, payload string) {
	c.tb.Helper()
	c.pushed(topic, joinRef, "response", payload)
}

// pushed reads the next frame and checks it is a push of event and
// payload.
func (c *client) pushed(topic, joinRef, event, payload string) {
	c.tb.Helper()
	m := c.read()
	// The push's ref is the message's seq: increasing, from 1.
	want := fmt.Sprintf(`[%q,"<seq>",%q,%q,%s]`, joinRef, topic, event, payload)
	var seq int64
	if m.Ref != nil {
		seq, _ = strconv.ParseInt(*m.Ref, 10, 64)
	}
	if seq <= c.lastSeq || m.Raw != strings.Replace(want, "<seq>", *m.Ref, 1) {
		c.tb.Fatalf("got  %s\nwant %s (seq above %d)", m.Raw, want, c.lastSeq)
	}
	c.lastSeq = seq
}

func publish(tb testing.TB, h *Hub, pid, cid, payload string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Publish(ctx, pid, cid, json.RawMessage(payload)); err != nil {
		tb.Fatalf("publish: %v", err)
	}
}

// eventually polls cond for up to 10 s.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *Hub) sessionCount() int {
	h.sessMu.Lock()
	defer h.sessMu.Unlock()
	return len(h.sessions)
}

func (h *Hub) roomCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms)
}

// smallBuffers makes a listener whose connections have tiny kernel send
// buffers, so a client that stops reading backs the server up at once.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
