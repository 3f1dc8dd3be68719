package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
)

// These run e2e/sdk_session.mjs, a stand-in for the hosted service's
// browser SDK, under both phoenix client versions the SDK accepts: 1.8.x
// (npm "phoenix") and 1.7.x (installed as "phoenix17"). The SDK drops its
// socket without closing it once a channel's final message has arrived.

// phoenixPackages are the phoenix client versions the SDK accepts, by the
// npm name e2e/ installs them under.
var phoenixPackages = []struct{ pkg, version string }{{"phoenix", "1.8."}, {"phoenix17", "1.7."}}

const sdkIdle = time.Second // RIVERHUB_WS_IDLE_TIMEOUT of these nodes (its floor)

// startSDK starts sdk_session.mjs for topics on one socket and checks the
// phoenix client version it loaded.
func startSDK(t *testing.T, n *node, pkg, version, token string, topics ...string) *jsProc {
	t.Helper()
	nodeTool(t, "this test runs the official phoenix client", pkg)
	p := startJS(t, "sdk_session.mjs", "--url", socketURL(n), "--token", token,
		"--topics", strings.Join(topics, ","), "--phoenix", pkg)
	if ev := p.await("version", nil); !strings.HasPrefix(ev["version"].(string), version) {
		t.Fatalf("%s is phoenix %v, want %sx", pkg, ev["version"], version)
	}
	return p
}

// endedQuietly checks what the client does once the server has closed its
// channel and then, the socket having no join, the socket itself (1000):
// the phoenix client 1.7 does not reconnect; 1.8 reconnects after any
// close, and its new socket, joining nothing, is closed again. Either way
// the closed channel is never rejoined.
func endedQuietly(t *testing.T, p *jsProc, version string, joins int) {
	t.Helper()
	p.await("channel_close", nil)
	if ev := p.await("close", nil); ev["code"] != 1000.0 || ev["reason"] != "idle: no channel joined" {
		t.Fatalf("the socket closed with %v, want 1000 idle", ev)
	}
	if version == "1.7." {
		// Its reconnect would come within 10 ms; give it many times that.
		time.Sleep(2 * sdkIdle)
		if opens := p.all("open"); len(opens) != 1 {
			t.Fatalf("the 1.7 client opened %d sockets, want 1 (no reconnect after 1000)", len(opens))
		}
	} else {
		p.await("open", func(ev map[string]any) bool { return ev["opens"] == 2.0 })
		// A rejoin would have kept this socket open.
		if ev := p.await("close", nil); ev["code"] != 1000.0 || ev["reason"] != "idle: no channel joined" {
			t.Fatalf("the reconnected socket closed with %v, want 1000 idle", ev)
		}
	}
	if n := len(p.all("joined")); n != joins {
		t.Fatalf("the client joined %d times, want %d", n, joins)
	}
}

// socketsClosed waits until the node holds no socket.
func socketsClosed(t *testing.T, n *node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for nodeMetric(t, n, "riverhub_hub_sockets_open") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%v sockets still open, want 0", nodeMetric(t, n, "riverhub_hub_sockets_open"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The hosted SDK's flow, with each phoenix client version: a client joined
// while the task runs gets ai_generated and completed once each, then the
// server closes the channel, and later the idle socket; a client joining
// the finished channel gets its history and then the close. Neither
// rejoins: the node counts exactly one join per client.
func TestSDKChannelEnd(t *testing.T) {
	t.Parallel()
	for _, v := range phoenixPackages {
		t.Run(v.pkg, func(t *testing.T) {
			t.Parallel()
			e2eScript(t, "sdk_session.mjs")
			n := newNode(t, "RIVERHUB_WS_IDLE_TIMEOUT", sdkIdle.String())
			n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
				"event_name": "ev", "mock": map[string]any{"response": map[string]any{"title": "Dune"}}})
			ans := n.submit(t, "ev", nil)
			cid, token, topic := ans["channel_id"].(string), ans["ws_token"].(string), ans["websocket_channel"].(string)

			live := startSDK(t, n, v.pkg, v.version, token, topic)
			live.await("joined", nil)
			deadline := time.Now().Add(10 * time.Second)
			for n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)["status"] != "ai_generated" {
				if time.Now().After(deadline) {
					t.Fatal("the task did not reach ai_generated")
				}
				time.Sleep(20 * time.Millisecond)
			}
			n.must(t, 200, "POST", "/v1/callback/"+cid, map[string]any{"data": map[string]any{"title": "Dune", "id": 7}})
			if ev := live.await("dropped", nil); ev["status"] != "completed" {
				t.Fatalf("dropped on %v", ev)
			}
			endedQuietly(t, live, v.version, 1)
			if got := statusesOf(payloads(t, live.stdout())); got != "ai_generated,completed" {
				t.Fatalf("the live client received %s, want ai_generated,completed once each", got)
			}

			late := startSDK(t, n, v.pkg, v.version, token, topic)
			if ev := late.await("dropped", nil); ev["status"] != "completed" {
				t.Fatalf("dropped on %v", ev)
			}
			endedQuietly(t, late, v.version, 1)
			if got := statusesOf(payloads(t, late.stdout())); got != "ai_generated,completed" {
				t.Fatalf("the late client received %s, want the history, ai_generated,completed", got)
			}

			if got := nodeMetric(t, n, `riverhub_hub_joins_total{result="ok"}`); got != 2 {
				t.Fatalf("the node answered %v joins, want 2 (one per client, no rejoin)", got)
			}
			if got := nodeMetric(t, n, `riverhub_hub_channel_closes_total{reason="final"}`); got != 2 {
				t.Fatalf("the node closed %v joins after the final message, want 2", got)
			}
			if v.version == "1.7." {
				socketsClosed(t, n)
			}
		})
	}
}

// topicSpellings returns n different spellings of one channel's topic: the
// long and the short form, the ids' letters in varying case.
func topicSpellings(t *testing.T, pid, cid string, n int) []string {
	t.Helper()
	flip := func(id string, bits int) string {
		r := []rune(id)
		for i, k := 0, 0; i < len(r); i++ {
			if unicode.IsLetter(r[i]) {
				if bits>>k&1 == 1 {
					r[i] = unicode.ToUpper(r[i])
				}
				k++
			}
		}
		return string(r)
	}
	seen := map[string]bool{}
	var out []string
	for i := 0; len(out) < n && i < 1<<12; i++ {
		for _, tp := range []string{"ai_response:" + flip(pid, i) + ":" + flip(cid, i), "ai_response:" + flip(cid, i)} {
			if !seen[tp] && len(out) < n {
				seen[tp] = true
				out = append(out, tp)
			}
		}
	}
	if len(out) < n {
		t.Skipf("ids with too few letters for %d spellings", n)
	}
	return out
}

// gatedOpenAI is an OpenAI-compatible provider that answers {"ok":true}
// once release is closed: the test decides when a task's result comes.
func gatedOpenAI(t *testing.T) (url string, release func()) {
	t.Helper()
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": `{"ok":true}`}}},
			"usage": map[string]any{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
		})
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(srv.Close)
	t.Cleanup(release) // runs first: lets a held request go before the server closes
	return srv.URL + "/v1", release
}

// One socket joins one channel under 80 spellings of its topic (one
// channel object each, as the phoenix client allows), all before the
// task's result: every join replaces the one before, which the client
// sees closed, so the result arrives once, and the socket, no longer too
// slow for 80 copies, gets it.
func TestSDKTopicSpellings(t *testing.T) {
	t.Parallel()
	for _, v := range phoenixPackages {
		t.Run(v.pkg, func(t *testing.T) {
			t.Parallel()
			e2eScript(t, "sdk_session.mjs")
			provider, release := gatedOpenAI(t)
			n := newNode(t, "RIVERHUB_WS_IDLE_TIMEOUT", sdkIdle.String(), "OPENAI_BASE_URL", provider, "OPENAI_API_KEY", "sk-test")
			n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "gated", "provider": "openai", "model": "gpt-4o"})
			ans := n.submit(t, "gated", nil)
			cid, token := ans["channel_id"].(string), ans["ws_token"].(string)
			const count = 80
			topics := topicSpellings(t, ans["project_id"].(string), cid, count)

			p := startSDK(t, n, v.pkg, v.version, token, topics...)
			p.await("joined", func(ev map[string]any) bool { return ev["joins"] == float64(count) })
			release()
			if ev := p.await("dropped", nil); ev["status"] != "success" {
				t.Fatalf("dropped on %v", ev)
			}
			endedQuietly(t, p, v.version, count)
			if got := statusesOf(payloads(t, p.stdout())); got != "success" {
				t.Fatalf("the socket received %s, want success once", got)
			}
			closed := p.all("channel_close")
			if len(closed) != count {
				t.Fatalf("%d channels closed, want all %d", len(closed), count)
			}
			if last := closed[len(closed)-1]["topic"]; last != topics[count-1] {
				t.Fatalf("the last channel closed is %v, want the last joined, %s (it holds the join)", last, topics[count-1])
			}
			if got := nodeMetric(t, n, `riverhub_hub_joins_total{result="ok"}`); got != count {
				t.Fatalf("the node answered %v joins, want %d (no rejoin)", got, count)
			}
			if got := nodeMetric(t, n, `riverhub_hub_channel_closes_total{reason="replaced"}`); got != count-1 {
				t.Fatalf("%v joins replaced, want %d", got, count-1)
			}
			if got := nodeMetric(t, n, `riverhub_hub_slow_client_closes_total{reason="queue_full"}`); got != 0 {
				t.Fatalf("%v sockets closed as too slow", got)
			}
		})
	}
}
