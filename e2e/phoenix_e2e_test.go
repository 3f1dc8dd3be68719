package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wstoken"
)

// These run the official phoenix client (e2e/phoenix_app.mjs) against the
// real server; see e2eScript for what they need.

// phoenixNode starts a node on its own prefix with a mock workflow "w"
// (answering {"answer":42}) and an event-driven one "ev", submits a task
// to "w", waits for its result and returns the node, its environment and
// the submission's answer.
func phoenixNode(t *testing.T, kv ...string) (*node, map[string]string, map[string]any) {
	t.Helper()
	e2eScript(t, "phoenix_app.mjs")
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	env := testEnv(t, url, prefix, kv...)
	n := startNode(t, env)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"answer": 42}}})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
		"event_name": "ev", "mock": map[string]any{"response": map[string]any{"answer": 42}}})
	ans := n.submit(t, "w", nil)
	n.waitFinal(t, n.key, ans["channel_id"].(string), 5*time.Second)
	return n, env, ans
}

// openChannel submits a task to the event-driven workflow "ev" of a
// phoenixNode and waits until it awaits its callback: a channel that has
// a message (ai_generated) and has not ended.
func openChannel(t *testing.T, n *node) map[string]any {
	t.Helper()
	ans := n.submit(t, "ev", nil)
	deadline := time.Now().Add(10 * time.Second)
	for n.must(t, 200, "GET", "/api/v1/channels/"+ans["channel_id"].(string), nil)["status"] != "ai_generated" {
		if time.Now().After(deadline) {
			t.Fatal("the task did not reach ai_generated")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ans
}

// dialStatus tries a raw WebSocket handshake and returns the HTTP status
// (101 when it opened; the socket is then closed) and a refusal's body.
func dialStatus(t *testing.T, n *node, token string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, socketURL(n)+"/websocket?vsn=2.0.0&token="+token, nil)
	if err == nil {
		_ = c.CloseNow()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A token that is not the deployment's, or has expired, never opens a
// socket: the client's connection attempts fail (403) and it never joins.
func TestPhoenixClientRefusedTokens(t *testing.T) {
	t.Parallel()
	n, env, ans := phoenixNode(t)
	pid, cid, topic := ans["project_id"].(string), ans["channel_id"].(string), ans["websocket_channel"].(string)
	foreign, _ := wstoken.NewIssuer("another-deployment-secret-0123456789", time.Hour).Issue(pid, cid)
	expired, _ := wstoken.NewIssuer(env["RIVERHUB_TOKEN_SECRET"], -time.Minute).Issue(pid, cid)

	for _, tt := range []struct{ name, token string }{
		{"signed with another secret", foreign},
		{"expired", expired},
		{"garbage", "not-a-token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startJS(t, "phoenix_app.mjs", "--urls", socketURL(n), "--token", tt.token, "--topic", topic,
				"--give-up-after", "2", "--reconnect-ms", "100")
			code, lines := p.wait()
			if code != 3 || len(lines) != 0 {
				t.Fatalf("exit %d with %d messages; want 3 (gave up) and none", code, len(lines))
			}
			if opened, joined := p.all("open"), p.all("joined"); len(opened)+len(joined) != 0 {
				t.Fatalf("the socket opened (%v) or joined (%v)", opened, joined)
			}
			errs := p.all("conn_error")
			if len(errs) < 2 {
				t.Fatalf("%d failed connection attempts, want 2", len(errs))
			}
			for _, ev := range errs {
				if !strings.Contains(ev["message"].(string), "403") {
					t.Errorf("connection attempt failed with %v, want HTTP 403", ev)
				}
			}
		})
	}
	t.Run("the answer's own token (control)", func(t *testing.T) {
		t.Parallel()
		p := startJS(t, "phoenix_app.mjs", "--urls", socketURL(n), "--token", ans["ws_token"].(string), "--topic", topic, "--count", "1")
		if code, lines := p.wait(); code != 0 || len(lines) != 1 {
			t.Fatalf("exit %d with %q", code, lines)
		}
	})
}

// Joining a topic the token does not grant gets the documented reason.
func TestPhoenixClientJoinErrors(t *testing.T) {
	t.Parallel()
	n, _, ans := phoenixNode(t)
	mine := ans["ws_token"].(string)
	sibling := n.submit(t, "w", nil) // another channel of the same project

	// A channel of another project.
	otherKey := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "other"})["key"].(string)
	if r := n.do(t, "POST", "/api/console/workflow", otherKey, map[string]any{"name": "w", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{}}}); r.status != 201 {
		t.Fatalf("workflow in the other project: %d %s", r.status, r.body)
	}
	r := n.do(t, "POST", "/v1/ai/async", otherKey, map[string]any{"workflow": "w", "messages": userMessages("hi")})
	if r.status != 200 {
		t.Fatalf("submit in the other project: %d %s", r.status, r.body)
	}
	foreign := r.json(t)

	for _, tt := range []struct{ name, topic, reason string }{
		{"another project's channel", foreign["websocket_channel"].(string), "unauthorized_project_access"},
		{"another channel of the project", sibling["websocket_channel"].(string), "unauthorized_channel_access"},
		{"not a channel topic", "room:lobby", "invalid_channel_format"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startJS(t, "phoenix_app.mjs", "--urls", socketURL(n), "--token", mine, "--topic", tt.topic, "--count", "1")
			code, lines := p.wait()
			errs := p.all("join_error")
			if code != 4 || len(lines) != 0 || len(errs) != 1 || errs[0]["reason"] != tt.reason {
				t.Fatalf("exit %d, messages %q, join errors %v; want exit 4 and one join_error %s", code, lines, errs, tt.reason)
			}
		})
	}
}

// Malformed and oversize frames (sent by a raw ws client: the official one
// cannot) close only their own socket: a phoenix client joined to the same
// channel on the same node stays connected and receives the next message.
func TestPhoenixClientUndisturbedByBadFrames(t *testing.T) {
	t.Parallel()
	n, env, _ := phoenixNode(t)
	ans := openChannel(t, n)
	pid, cid := ans["project_id"].(string), ans["channel_id"].(string)
	token, topic := ans["ws_token"].(string), ans["websocket_channel"].(string)

	p := startJS(t, "phoenix_app.mjs", "--urls", socketURL(n), "--token", token, "--topic", topic,
		"--count", "2", "--linger-ms", "300")
	p.await("joined", nil)

	// Each bad socket joins the same channel first, then misbehaves.
	raw := startJS(t, "raw_frames.mjs", "--url", socketURL(n), "--token", token, "--topic", topic,
		"--max-frame-bytes", "65536") // the hub's default limit, which app.Run keeps
	code, lines := raw.wait()
	if code != 0 {
		t.Fatalf("raw_frames.mjs exited %d", code)
	}
	want := map[string]float64{"not JSON": 1007, "JSON object": 1007, "four elements": 1007,
		"payload not an object": 1007, "invalid UTF-8": 1007, "binary frame": 1003, "oversize": 1009}
	for _, l := range lines {
		var res struct {
			Case   string
			Code   float64
			Reason string
		}
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			t.Fatalf("result %q: %v", l, err)
		}
		if w, ok := want[res.Case]; !ok || res.Code != w || res.Reason == "" {
			t.Errorf("%s: closed with %v %q, want %v and a reason", res.Case, res.Code, res.Reason, w)
		}
		delete(want, res.Case)
	}
	if len(want) != 0 {
		t.Fatalf("cases without a result: %v", want)
	}

	// Another node's publish, now that every bad socket is gone.
	c, err := rdbtest.Client(env["REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pub := hub.New(c, hub.Options{Prefix: env["RIVERHUB_KEY_PREFIX"]})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, pid, cid, json.RawMessage(`{"status":"after_bad_frames"}`)); err != nil {
		t.Fatal(err)
	}

	code, lines = p.wait()
	if code != 0 || len(lines) != 2 {
		t.Fatalf("phoenix client: exit %d, messages %q; want ai_generated and the later message", code, lines)
	}
	if got := payloads(t, lines); got[0]["status"] != "ai_generated" || got[1]["status"] != "after_bad_frames" {
		t.Fatalf("phoenix client received %q", lines)
	}
	if opens, closes := p.all("open"), p.all("close"); len(opens) != 1 || len(closes) != 0 {
		t.Fatalf("the phoenix client's socket was disturbed: opens %v, closes %v", opens, closes)
	}
}

// With RIVERHUB_WS_TOKEN_SINGLE_USE the phoenix client's own reconnect,
// which reuses its token, is refused; the app fetches a fresh token from
// POST /api/v1/ai/reconnect and the client's next reconnect gets through
// and replays the channel (one awaiting its callback: an ended channel is
// not rejoined). Without the option the same reconnect just works.
func TestPhoenixClientSingleUseToken(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		name := map[bool]string{true: "on", false: "off"}[on]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n, _, _ := phoenixNode(t, "RIVERHUB_WS_TOKEN_SINGLE_USE", strconv.FormatBool(on))
			ans := openChannel(t, n)
			cid, token := ans["channel_id"].(string), ans["ws_token"].(string)
			p := startJS(t, "phoenix_app.mjs", "--urls", socketURL(n), "--token", token,
				"--topic", ans["websocket_channel"].(string), "--count", "2", "--linger-ms", "300",
				"--drop-after", "1", "--refresh-token", "--refusals", "2")
			p.await("joined", nil)
			p.await("dropped", nil)
			if !on {
				p.await("joined", nil)
				if code, lines := p.wait(); code != 0 || len(lines) != 2 || len(p.all("need_token")) != 0 {
					t.Fatalf("exit %d, messages %q, asked for a token %d times", code, lines, len(p.all("need_token")))
				}
				return
			}

			p.await("need_token", nil)
			refused := p.all("conn_error")
			if len(refused) < 2 {
				t.Fatalf("%d refused reconnects before asking for a token, want 2", len(refused))
			}
			for _, ev := range refused {
				if !strings.Contains(ev["message"].(string), "403") {
					t.Fatalf("reconnect failed with %v, want HTTP 403", ev)
				}
			}
			if status, body := dialStatus(t, n, token); status != 403 || !strings.Contains(body, "already used") {
				t.Fatalf("the used token: HTTP %d %s, want 403 saying it was used", status, body)
			}

			// What the app's backend does for its browser.
			fresh := n.must(t, 200, "POST", "/api/v1/ai/reconnect", map[string]any{"channel_id": cid})["ws_token"].(string)
			if fresh == token {
				t.Fatal("reconnect answered the same token")
			}
			p.send(fresh)
			p.await("joined", nil)
			code, lines := p.wait()
			if code != 0 || len(lines) != 2 {
				t.Fatalf("exit %d with %q; want the result before the drop and again from the replay", code, lines)
			}
			for _, m := range payloads(t, lines) {
				if m["status"] != "ai_generated" || m["channel_id"] != cid {
					t.Fatalf("received %q", lines)
				}
			}
			if opens := p.all("open"); len(opens) != 2 {
				t.Fatalf("%d connections opened, want 2 (first token, fresh token)", len(opens))
			}
			if status, _ := dialStatus(t, n, fresh); status != 403 {
				t.Fatalf("the fresh token, once used: HTTP %d, want 403", status)
			}
		})
	}
}
