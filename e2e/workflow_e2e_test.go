package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/verify"
)

// backend is a customer's backend for event-driven workflows, as the spec
// writes one: it verifies the signature, acknowledges at once, and calls
// back from the background. What it does is chosen per request by
// customer_data.mode: success, error, twice (the same callback twice, then
// a different one), never, late (after the deadline), fail (answers 500
// and never calls back).
type backend struct {
	*httptest.Server
	t      *testing.T
	node   *node
	secret string

	work sync.WaitGroup // the background callbacks

	mu      sync.Mutex
	hooks   map[string]int           // task.ai_generated deliveries per channel
	answers map[string][]int         // callback answers per channel
	bodies  map[string]string        // the last callback answer's body per channel
	done    map[string]chan struct{} // closed when the backend has finished with a channel
}

func newBackend(t *testing.T, n *node) *backend {
	b := &backend{t: t, node: n, hooks: map[string]int{}, answers: map[string][]int{},
		bodies: map[string]string{}, done: map[string]chan struct{}{}}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close)
	// Registered after the node's, so it runs first: no callback is sent
	// to a node that has stopped.
	t.Cleanup(b.work.Wait)
	return b
}

func (b *backend) finished(cid string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done[cid] == nil {
		b.done[cid] = make(chan struct{})
	}
	return b.done[cid]
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !verify.MRSignature(body, r.Header.Get("mr-signature"), b.secret) {
		b.t.Errorf("mr-signature does not verify")
		w.WriteHeader(401)
		return
	}
	// task.ai_generated has no data: X-ModelRiver-Signature covers the body.
	if err := verify.ModelRiver(body, r.Header, b.secret, time.Minute); err != nil {
		b.t.Errorf("X-ModelRiver-Signature does not verify: %v", err)
		w.WriteHeader(401)
		return
	}
	var p struct {
		Type         string                        `json:"type"`
		Event        string                        `json:"event"`
		ChannelID    string                        `json:"channel_id"`
		CallbackURL  string                        `json:"callback_url"`
		AIResponse   struct{ Data map[string]any } `json:"ai_response"`
		CustomerData struct{ Mode string }         `json:"customer_data"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Type != "task.ai_generated" {
		b.t.Errorf("unexpected webhook %s", body)
		w.WriteHeader(400)
		return
	}
	if want := b.node.base + "/api/v1/callback/" + p.ChannelID; p.CallbackURL != want {
		b.t.Errorf("callback_url = %q, want %q", p.CallbackURL, want)
	}
	b.mu.Lock()
	b.hooks[p.ChannelID]++
	first := b.hooks[p.ChannelID] == 1
	b.mu.Unlock()
	if p.CustomerData.Mode == "fail" {
		w.WriteHeader(500)
		if first {
			b.work.Go(func() { time.Sleep(1500 * time.Millisecond); close(b.finished(p.ChannelID)) })
		}
		return
	}
	w.WriteHeader(200) // acknowledge at once, process in the background
	if !first {
		return
	}
	b.work.Go(func() {
		defer close(b.finished(p.ChannelID))
		enriched := map[string]any{"id": "mov_123"}
		for k, v := range p.AIResponse.Data {
			enriched[k] = v
		}
		ok := map[string]any{"data": enriched, "task_id": "movie_123", "metadata": map[string]any{"sources_checked": 3}}
		switch p.CustomerData.Mode {
		case "success":
			b.call(p.ChannelID, p.CallbackURL, ok)
		case "error":
			b.call(p.ChannelID, p.CallbackURL, map[string]any{"error": "processing_failed", "message": "Database connection timeout"})
		case "twice":
			b.call(p.ChannelID, p.CallbackURL, ok)
			b.call(p.ChannelID, p.CallbackURL, ok)
			b.call(p.ChannelID, p.CallbackURL, map[string]any{"data": map[string]any{"changed": true}})
		case "late":
			time.Sleep(1500 * time.Millisecond)
			b.call(p.ChannelID, p.CallbackURL, ok)
		case "never":
		}
	})
}

// call posts a callback to the node the callback_url's path names.
func (b *backend) call(cid, callbackURL string, body any) {
	u, err := url.Parse(callbackURL)
	if err != nil {
		b.t.Errorf("callback_url %q: %v", callbackURL, err)
		return
	}
	res := b.node.do(b.t, "POST", u.Path, b.node.key, body) // fails the test if the node is gone
	b.mu.Lock()
	b.answers[cid] = append(b.answers[cid], res.status)
	b.bodies[cid] = string(res.body)
	b.mu.Unlock()
}

// roomMessages joins the channel's room with the official phoenix client
// (e2e/phoenix_app.mjs), waits for want messages, then listens on so that
// a message beyond them would be seen, and returns every one received.
func roomMessages(t *testing.T, n *node, ans map[string]any, want int) []map[string]any {
	t.Helper()
	p := startJS(t, "phoenix_app.mjs", "--urls", socketURL(n), "--token", ans["ws_token"].(string),
		"--topic", ans["websocket_channel"].(string), "--count", fmt.Sprint(want), "--linger-ms", "300",
		"--timeout-ms", "15000")
	code, lines := p.wait()
	if code != 0 {
		t.Fatalf("phoenix client exited %d after %d messages: %v", code, len(lines), lines)
	}
	return payloads(t, lines)
}

func statusesOf(ms []map[string]any) string {
	var s []string
	for _, m := range ms {
		s = append(s, fmt.Sprint(m["status"]))
	}
	return strings.Join(s, ",")
}

// Event-driven workflows end to end: a real backend receives
// task.ai_generated, calls back (or not), and the official phoenix client
// in the room sees exactly the spec's messages, in order.
func TestEventDrivenWorkflows(t *testing.T) {
	t.Parallel()
	e2eScript(t, "phoenix_app.mjs") // skips here, not midway, without the phoenix client
	n := newNode(t, "RIVERHUB_RETRY_SCHEDULE", "0s,300ms,20s,30s,40s,50s,60s,70s")
	be := newBackend(t, n)
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": be.URL + "/hook"})
	be.secret = wh["secret"].(string)
	mock := map[string]any{"response": map[string]any{"title": "Inception", "year": 2010}}
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "movie", "provider": "mock",
		"event_name": "new_movie_suggestion", "mock": mock})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "movie_short", "provider": "mock",
		"event_name": "new_movie_suggestion", "callback_timeout_seconds": 1, "mock": mock})

	cases := []struct {
		mode, workflow string
		room           string // statuses the room receives, in order
		answers        []int  // the backend's callback answers
		code           string // the final error code, if it fails
	}{
		{"success", "movie", "ai_generated,completed", []int{200}, ""},
		{"error", "movie", "ai_generated,error", []int{200}, "processing_failed"},
		{"twice", "movie", "ai_generated,completed", []int{200, 200, 409}, ""},
		{"never", "movie_short", "ai_generated,error", nil, "callback_timeout"},
		{"late", "movie_short", "ai_generated,error", []int{409}, "callback_timeout"},
		{"fail", "movie_short", "ai_generated,error", nil, "callback_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			ans := n.submit(t, tc.workflow, map[string]any{"customer_data": map[string]any{"mode": tc.mode}})
			cid := ans["channel_id"].(string)
			msgs := roomMessages(t, n, ans, len(strings.Split(tc.room, ",")))
			if got := statusesOf(msgs); got != tc.room {
				t.Fatalf("room got %s, want %s: %v", got, tc.room, msgs)
			}
			gen, final := msgs[0], msgs[len(msgs)-1]
			if gen["channel_id"] != cid || gen["event_name"] != "new_movie_suggestion" ||
				get(t, gen, "meta", "workflow_name") != tc.workflow {
				t.Errorf("ai_generated message = %v", gen)
			}
			select {
			case <-be.finished(cid):
			case <-time.After(10 * time.Second):
				t.Fatal("the backend did not finish")
			}
			be.mu.Lock()
			answers, last := be.answers[cid], be.bodies[cid]
			be.mu.Unlock()
			if fmt.Sprint(answers) != fmt.Sprint(tc.answers) {
				t.Errorf("callback answers %v, want %v (last: %s)", answers, tc.answers, last)
			}
			switch tc.mode {
			case "success", "twice":
				if get(t, final, "data", "id") != "mov_123" || get(t, final, "data", "title") != "Inception" ||
					get(t, final, "ai_response", "data", "title") != "Inception" || final["task_id"] != "movie_123" ||
					get(t, final, "customer_data", "mode") != tc.mode || get(t, final, "callback_metadata", "sources_checked") != 3.0 {
					t.Errorf("completed message = %v", final)
				}
			default:
				if get(t, final, "error", "code") != tc.code {
					t.Errorf("error message = %v, want code %s", final, tc.code)
				}
			}
			if tc.mode == "twice" && !strings.Contains(last, `"callback_already_received"`) {
				t.Errorf("the different repeat got %s", last)
			}
			if tc.mode == "late" && !strings.Contains(last, `"callback_timeout"`) {
				t.Errorf("the late callback got %s", last)
			}
			v := n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)
			if want := map[bool]string{true: "error", false: "completed"}[tc.code != ""]; v["status"] != want {
				t.Errorf("channel status %v, want %s", v["status"], want)
			}
			log := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)
			tl, _ := json.Marshal(log["timeline"])
			for _, want := range map[string][]string{
				"success": {`"type":"ai_generated"`, `"type":"callback"`, `"task_id":"movie_123"`},
				"twice":   {`"type":"callback"`, `"type":"callback_rejected"`, `"code":"callback_already_received"`},
				"never":   {`"type":"timeout"`},
				"late":    {`"type":"timeout"`, `"code":"callback_timeout"`},
				"fail":    {`"type":"timeout"`, `"type":"delivery_cancelled"`},
			}[tc.mode] {
				if !bytes.Contains(tl, []byte(want)) {
					t.Errorf("timeline lacks %s: %s", want, tl)
				}
			}
			if tc.mode == "fail" {
				// The retry due 20 s later was cancelled by the timeout.
				be.mu.Lock()
				hooks := be.hooks[cid]
				be.mu.Unlock()
				if hooks != 2 {
					t.Errorf("task.ai_generated attempts = %d, want 2 (then cancelled)", hooks)
				}
				if !bytes.Contains(tl, []byte(`"next_attempt_at"`)) {
					t.Errorf("no retry was pending: %s", tl)
				}
			}
		})
	}
}

// The callback API's answers to bad input: each gets its documented error
// and changes nothing.
func TestCallbackBadInput(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
		"event_name": "e", "mock": map[string]any{"response": map[string]any{"a": 1}}})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "std", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"a": 1}}})
	ev := n.submit(t, "ev", nil)
	cid := ev["channel_id"].(string)
	deadline := time.Now().Add(5 * time.Second)
	for n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)["status"] != "ai_generated" {
		if time.Now().After(deadline) {
			t.Fatal("the channel never reached ai_generated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	std := n.submit(t, "std", nil)
	n.waitFinal(t, n.key, std["channel_id"].(string), 5*time.Second)
	other := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "other"})["key"].(string)

	path := "/v1/callback/" + cid
	for _, tc := range []struct {
		name, path, key string
		body            any
		status          int
		code            string
	}{
		{"no key", path, "", map[string]any{"data": 1}, 401, ""},
		{"another project", path, other, map[string]any{"data": 1}, 404, "not_found"},
		{"unknown channel", "/v1/callback/6f1c1f0e-0000-4000-8000-000000000000", n.key, map[string]any{"data": 1}, 404, "not_found"},
		{"not a uuid", "/v1/callback/nope", n.key, map[string]any{"data": 1}, 404, "not_found"},
		{"malformed", path, n.key, `{"data":`, 400, "invalid_request"},
		{"not an object", path, n.key, `[1]`, 400, "invalid_request"},
		{"no data", path, n.key, map[string]any{"task_id": "x"}, 400, "invalid_request"},
		{"null data", path, n.key, map[string]any{"data": nil}, 400, "invalid_request"},
		{"error not a string", path, n.key, map[string]any{"error": 5}, 400, "invalid_request"},
		{"oversize", path, n.key, map[string]any{"data": strings.Repeat("x", 2<<20)}, 413, "payload_too_large"},
		{"standard channel", "/api/v1/callback/" + std["channel_id"].(string), n.key, map[string]any{"data": 1}, 409, "not_awaiting_callback"},
	} {
		res := n.do(t, "POST", tc.path, tc.key, tc.body)
		if res.status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, res.status, res.body, tc.status)
			continue
		}
		if tc.code != "" && res.json(t)["error"] != tc.code {
			t.Errorf("%s: %s, want code %s", tc.name, res.body, tc.code)
		}
	}
	if s := n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)["status"]; s != "ai_generated" {
		t.Fatalf("bad callbacks changed the channel: %v", s)
	}
	if got := n.must(t, 200, "POST", "/api/v1/callback/"+cid, map[string]any{"data": map[string]any{"ok": true}}); got["received"] != true {
		t.Errorf("callback answer = %v", got)
	}
}

// The playground runs the workflow, sends no webhook, and completes an
// event-driven channel with a simulated callback.
func TestPlayground(t *testing.T) {
	t.Parallel()
	e2eScript(t, "phoenix_app.mjs")
	n := newNode(t, "RIVERHUB_PLAYGROUND_CALLBACK_DELAY", "300ms")
	rc := newReceiver(t, func(int) int { return 200 })
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": rc.URL + "/hook"})
	rc.secret = wh["secret"].(string)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock",
		"event_name": "e", "mock": map[string]any{"response": map[string]any{"title": "x"}}})
	ans := n.must(t, 200, "POST", "/api/console/playground", map[string]any{"workflow": "ev",
		"messages": []map[string]string{{"role": "user", "content": "hi"}}})
	msgs := roomMessages(t, n, ans, 3)
	if got := statusesOf(msgs); got != "ai_generated,simulating_callback,completed" {
		t.Fatalf("room got %s: %v", got, msgs)
	}
	final := msgs[2]
	if get(t, final, "data", "simulated") != true || get(t, final, "data", "title") != "x" ||
		get(t, final, "ai_response", "data", "title") != "x" {
		t.Errorf("simulated completion = %v", final)
	}
	log := n.must(t, 200, "GET", "/api/console/logs/"+ans["channel_id"].(string), nil)
	simulated := false
	for _, e := range log["timeline"].([]any) {
		e := e.(map[string]any)
		simulated = simulated || e["type"] == "callback" && e["status"] == "completed" && e["simulated"] == true
	}
	if !simulated {
		t.Errorf("timeline does not mark the simulated callback: %v", log["timeline"])
	}
	time.Sleep(200 * time.Millisecond)
	if rc.count() != 0 {
		t.Errorf("the playground sent %d webhooks", rc.count())
	}
}
