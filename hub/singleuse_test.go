package hub

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/riverhub/riverhub/internal/wstoken"
)

// dialBody is the HTTP status of a handshake (101 if it opened) and the
// body of a refusal.
func dialBody(tb testing.TB, url string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		tb.Cleanup(func() { _ = c.CloseNow() })
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		tb.Fatalf("dial: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSingleUseTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, a := e.node(Options{SingleUseTokens: true})
	_, b := e.node(Options{SingleUseTokens: true})
	pid, cid, topic, token := e.channel()

	c := dial(t, a, token)
	c.mustJoin(topic)
	// The same token again, on this node or another: refused, saying why.
	for name, srv := range map[string]string{"same node": wsURL(a, token), "other node": wsURL(b, token)} {
		status, body := dialBody(t, srv)
		if status != http.StatusForbidden || !strings.Contains(body, "already used") || !strings.Contains(body, "/api/v1/ai/reconnect") {
			t.Errorf("%s, second use: HTTP %d %s; want 403 naming the reuse and the way out", name, status, body)
		}
	}
	// The first socket is unharmed by the refusals.
	publish(t, h, pid, cid, `{"n":1}`)
	if m := c.read(); m.Event != "response" || string(m.Payload) != `{"n":1}` {
		t.Fatalf("first socket got %s", m)
	}

	// A fresh token for the same channel opens a socket.
	fresh, _ := e.tokens.Issue(pid, cid)
	if status, body := dialBody(t, wsURL(b, fresh)); status != http.StatusSwitchingProtocols {
		t.Fatalf("fresh token: HTTP %d %s", status, body)
	}

	// The record lives as long as the token (1 h here), plus the skew margin.
	claims, err := e.tokens.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := e.rdb.TTL(context.Background(), e.prefix+":wstoken:used:"+claims.ID).Result()
	if err != nil || ttl < 59*time.Minute || ttl > time.Hour+tokenSkew {
		t.Fatalf("TTL of the used-token record = %v (%v), want about 1h", ttl, err)
	}
}

// Sockets racing with one token on two nodes: exactly one opens.
func TestSingleUseTokenRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, a := e.node(Options{SingleUseTokens: true})
	_, b := e.node(Options{SingleUseTokens: true})
	_, _, _, token := e.channel()

	const n = 8
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		srv := a
		if i%2 == 1 {
			srv = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := dialBody(t, wsURL(srv, token))
			statuses <- status
		}()
	}
	wg.Wait()
	close(statuses)
	opened := 0
	for s := range statuses {
		switch s {
		case http.StatusSwitchingProtocols:
			opened++
		case http.StatusForbidden:
		default:
			t.Errorf("HTTP %d", s)
		}
	}
	if opened != 1 {
		t.Fatalf("%d sockets opened with one single-use token, want 1", opened)
	}
}

func TestSingleUseTokenEdges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pid, cid := uuid.NewString(), uuid.NewString()

	t.Run("off by default: a token opens any number of sockets", func(t *testing.T) {
		_, srv := e.node(Options{})
		token, _ := e.tokens.Issue(pid, cid)
		for i := range 3 {
			if status, body := dialBody(t, wsURL(srv, token)); status != http.StatusSwitchingProtocols {
				t.Fatalf("socket %d: HTTP %d %s", i+1, status, body)
			}
		}
	})
	t.Run("a token without jti is refused", func(t *testing.T) {
		_, srv := e.node(Options{SingleUseTokens: true})
		c := wstoken.Claims{ProjectID: pid, ChannelID: cid, Topic: wstoken.Topic(pid, cid),
			RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
		token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		if status, body := dialBody(t, wsURL(srv, token)); status != http.StatusForbidden || !strings.Contains(body, "jti") {
			t.Fatalf("HTTP %d %s, want 403 naming the missing jti", status, body)
		}
	})
	t.Run("a node that refuses with 503 does not use the token up", func(t *testing.T) {
		_, full := e.node(Options{SingleUseTokens: true, MaxConns: 1})
		_, other := e.node(Options{SingleUseTokens: true})
		first, _ := e.tokens.Issue(pid, cid)
		dial(t, full, first) // the node is now full
		token, _ := e.tokens.Issue(pid, cid)
		if status, body := dialBody(t, wsURL(full, token)); status != http.StatusServiceUnavailable {
			t.Fatalf("full node: HTTP %d %s, want 503", status, body)
		}
		if status, body := dialBody(t, wsURL(other, token)); status != http.StatusSwitchingProtocols {
			t.Fatalf("after the 503, on another node: HTTP %d %s, want 101", status, body)
		}
	})
}
