package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// joinRoom opens a socket on node n, joins the channel's topic and returns
// a function that waits for the next `response` payload (or a read error,
// e.g. the node closing the socket). A join refused as `unavailable` (Redis
// did not answer the node, e.g. during a failover) is sent again, as
// clients do (docs/api.md), every 200 ms, 50 times at most.
func joinRoom(t *testing.T, n *node, ans map[string]any) (*websocket.Conn, func(time.Duration) (map[string]any, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws://" + strings.TrimPrefix(n.base, "http://") + "/socket/websocket?vsn=2.0.0&token=" + ans["ws_token"].(string)
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", n.base, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	join, _ := json.Marshal([]any{"1", "1", ans["websocket_channel"], "phx_join", map[string]any{}})
	if err := c.Write(ctx, websocket.MessageText, join); err != nil {
		t.Fatal(err)
	}
	rejoins := 0
	next := func(within time.Duration) (map[string]any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return nil, err
			}
			var f []json.RawMessage
			if json.Unmarshal(b, &f) != nil || len(f) != 5 {
				t.Fatalf("frame %s", b)
			}
			if string(f[3]) == `"phx_reply"` && !strings.Contains(string(f[4]), `"ok"`) {
				if rejoins++; !strings.Contains(string(f[4]), `"unavailable"`) || rejoins > 50 {
					t.Fatalf("join refused (%d times): %s", rejoins, b)
				}
				time.Sleep(200 * time.Millisecond)
				if err := c.Write(ctx, websocket.MessageText, join); err != nil {
					return nil, err
				}
				continue
			}
			if string(f[3]) == `"response"` {
				var p map[string]any
				_ = json.Unmarshal(f[4], &p)
				return p, nil
			}
		}
	}
	return c, next
}

// Three nodes on one Redis: a socket on node C receives the final message
// of a task submitted on node A; a socket on node B, stopped before the
// task completes, reconnects to node A and still receives it.
func TestThreeNodesFanOut(t *testing.T) {
	t.Parallel()
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	env := testEnv(t, url, prefix)
	a, b, c := startNode(t, env), startNode(t, env), startNode(t, env)
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "slow", "provider": "mock",
		"mock": map[string]any{"delay_ms": 1500, "response": map[string]any{"ok": true}}})
	ans := a.submit(t, "slow", nil)

	_, onC := joinRoom(t, c, ans)
	_, onB := joinRoom(t, b, ans)
	time.Sleep(200 * time.Millisecond) // both joined
	b.stop()                           // node B goes away before the result exists
	if _, err := onB(5 * time.Second); err == nil {
		t.Fatal("node B's socket still delivered after B stopped")
	}
	// The client reconnects elsewhere (its SDK would do this by itself).
	_, onA := joinRoom(t, a, ans)

	for name, next := range map[string]func(time.Duration) (map[string]any, error){"node C": onC, "node A after B stopped": onA} {
		p, err := next(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p["status"] != "success" || p["channel_id"] != ans["channel_id"] {
			t.Errorf("%s received %v", name, p)
		}
	}
}
