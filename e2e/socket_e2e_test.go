package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The answer's websocket_url, ws_token and websocket_channel open the
// channel's room on the real server, and the final message arrives there,
// also when the socket joins after the task completed.
func TestSocketReceivesFinalMessage(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"answer": 42}}})
	ans := n.submit(t, "w", nil)
	n.waitFinal(t, n.key, ans["channel_id"].(string), 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if u := ans["websocket_url"].(string); !strings.HasSuffix(u, "/socket") {
		t.Fatalf("websocket_url = %q", u)
	}
	// The answer names the public URL (localhost:0 here); dial the node.
	url := "ws://" + strings.TrimPrefix(n.base, "http://") + "/socket"
	c, _, err := websocket.Dial(ctx, url+"/websocket?vsn=2.0.0&token="+ans["ws_token"].(string), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	topic := ans["websocket_channel"].(string)
	join, _ := json.Marshal([]any{"1", "1", topic, "phx_join", map[string]any{}})
	if err := c.Write(ctx, websocket.MessageText, join); err != nil {
		t.Fatal(err)
	}
	var gotReply, gotResponse bool
	for !(gotReply && gotResponse) {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (reply %v, response %v)", err, gotReply, gotResponse)
		}
		var f []json.RawMessage
		if err := json.Unmarshal(b, &f); err != nil || len(f) != 5 {
			t.Fatalf("frame %s", b)
		}
		var ev string
		_ = json.Unmarshal(f[3], &ev)
		switch ev {
		case "phx_reply":
			if !strings.Contains(string(f[4]), `"status":"ok"`) {
				t.Fatalf("join refused: %s", b)
			}
			gotReply = true
		case "response":
			var p map[string]any
			_ = json.Unmarshal(f[4], &p)
			if p["status"] != "success" || p["channel_id"] != ans["channel_id"] || get(t, p, "data", "answer") != 42.0 {
				t.Errorf("response payload = %s", f[4])
			}
			gotResponse = true
		}
	}
}

// The socket limits are settings: RIVERHUB_WS_MAX_CONNS refuses a socket
// beyond it with 503. RIVERHUB_WS_MAX_CHANNELS counts channels, not topic
// spellings: the short form of a topic joined in the long form replaces
// that join (which gets phx_close) even with a limit of 1.
func TestSocketLimitsAreConfigurable(t *testing.T) {
	t.Parallel()
	n := newNode(t, "RIVERHUB_WS_MAX_CONNS", "1", "RIVERHUB_WS_MAX_CHANNELS", "1")
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock"})
	ans := n.submit(t, "w", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws://" + strings.TrimPrefix(n.base, "http://") + "/socket/websocket?vsn=2.0.0&token=" + ans["ws_token"].(string)
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, res, err := websocket.Dial(ctx, url, nil); err == nil || res == nil || res.StatusCode != 503 {
		t.Errorf("a second socket beyond RIVERHUB_WS_MAX_CONNS=1: %v (%v)", err, res)
	}
	// The long and the short topic of the same channel: one join.
	cid := ans["channel_id"].(string)
	closes := 0
	for i, topic := range []string{ans["websocket_channel"].(string), "ai_response:" + cid} {
		ref := fmt.Sprint(i + 1)
		join, _ := json.Marshal([]any{ref, ref, topic, "phx_join", map[string]any{}})
		if err := c.Write(ctx, websocket.MessageText, join); err != nil {
			t.Fatal(err)
		}
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), `"phx_close"`) {
				closes++
			}
			if !strings.Contains(string(b), `"phx_reply"`) {
				continue
			}
			if !strings.Contains(string(b), `"status":"ok"`) {
				t.Errorf("join %d: %s, want ok", i+1, b)
			}
			break
		}
	}
	// Exactly one phx_close before the second join's reply: the first
	// join's, replaced by the second or ended by the task's result.
	if closes != 1 {
		t.Errorf("%d phx_close before the second join's reply, want 1 (the first join's)", closes)
	}
}
