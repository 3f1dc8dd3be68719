package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

var tsPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestSubmitMockWorkflow(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{
		"name": "summary", "provider": "mock", "model": "mock-1",
		"mock": map[string]any{"response": map[string]any{"summary": "refund <requested> &amp; \u2028"}, "delay_ms": 10},
	})
	ans := n.submit(t, "summary", map[string]any{
		"customer_data": map[string]any{"user_id": "user_789"},
		// Fields clients of compatible services send: delivery fields that
		// change nothing here (no endpoint is registered), and fields
		// riverhub ignores.
		"delivery_method": "webhook", "events": []string{"webhook_received"}, "inputs": map[string]any{}, "context": "c",
	})
	if ans["message"] != "success" || ans["status"] != "pending" {
		t.Fatalf("answer = %v", ans)
	}
	cid, pid := ans["channel_id"].(string), ans["project_id"].(string)
	if ans["websocket_channel"] != "ai_response:"+pid+":"+cid {
		t.Errorf("websocket_channel = %v", ans["websocket_channel"])
	}
	if tok, _ := ans["ws_token"].(string); strings.Count(tok, ".") != 2 {
		t.Errorf("ws_token is not a JWT: %q", tok)
	}
	if u, _ := ans["websocket_url"].(string); !strings.HasPrefix(u, "ws://") || !strings.HasSuffix(u, "/socket") {
		t.Errorf("websocket_url = %q", u)
	}

	v := n.waitFinal(t, n.key, cid, 5*time.Second)
	if v["status"] != "success" || v["workflow"] != "summary" || v["event_name"] != nil {
		t.Fatalf("channel = %v", v)
	}
	msg := v["message"].(map[string]any)
	for path, want := range map[string]any{
		"type": "task.completed", "status": "success", "workflow": "summary", "channel_id": cid,
		"data/summary": "refund <requested> &amp; \u2028", "meta/provider": "mock", "meta/model": "mock-1",
		"meta/attempts/0/success": true, "meta/attempts/0/provider": "mock", "customer_data/user_id": "user_789",
	} {
		if got := get(t, msg, strings.Split(path, "/")...); got != want {
			t.Errorf("message %s = %v, want %v", path, got, want)
		}
	}
	if ts, _ := msg["timestamp"].(string); !tsPattern.MatchString(ts) {
		t.Errorf("timestamp %q is not RFC 3339 UTC with milliseconds", ts)
	}
	if tok := get(t, msg, "meta", "tokens", "total").(float64); tok <= 0 {
		t.Errorf("meta.tokens.total = %v", tok)
	}

	metrics := n.do(t, "GET", "/metrics", "", nil)
	for _, name := range []string{"riverhub_http_requests_total{", "riverhub_http_request_duration_seconds_bucket{",
		"riverhub_task_queue_depth ", "riverhub_workers_busy ", `riverhub_provider_attempts_total{outcome="success",provider="mock"} 1`,
		`riverhub_tasks_completed_total{status="success"} 1`} {
		if !strings.Contains(string(metrics.body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := n.do(t, "GET", p, "", nil); r.status != 200 {
			t.Errorf("GET %s = %d", p, r.status)
		}
	}

	// The room's message is logged as a broadcast, in the batch that
	// publishes it, right after the completion.
	var types []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		log := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)
		types = types[:0]
		for _, e := range log["timeline"].([]any) {
			types = append(types, e.(map[string]any)["type"].(string))
		}
		if len(types) >= 5 {
			break
		}
	}
	if got := strings.Join(types, ","); got != "request,generating,ai_attempt,completed,broadcast" {
		t.Errorf("timeline = %s", got)
	}
}

// fakeOpenAI answers chat completions per model: "fail-500" fails, "bad-json"
// answers text that fails a schema, anything else answers want.
func fakeOpenAI(t *testing.T, want string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test" {
			http.Error(w, "bad path or key", 400)
			return
		}
		var req struct {
			Model    string `json:"model"`
			Messages []struct{ Role, Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, "bad body", 400)
			return
		}
		content := want
		switch req.Model {
		case "fail-500":
			w.WriteHeader(500)
			w.Write([]byte(`{"error":{"message":"upstream exploded","type":"server_error"}}`))
			return
		case "bad-json":
			content = `{"wrong": true}`
		}
		json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": content}}},
			"usage": map[string]any{"prompt_tokens": 245, "completion_tokens": 89, "total_tokens": 334},
		})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestOpenAIProviderAndFallbacks(t *testing.T) {
	t.Parallel()
	fake, _ := fakeOpenAI(t, `{"title":"Inception","year":2010}`)
	// Retries off: this is about the fallback chain (a 500 is retried
	// first by default; provider_limits_e2e_test.go tests that).
	n := newNode(t, "OPENAI_BASE_URL", fake.URL+"/v1", "OPENAI_API_KEY", "sk-test", "RIVERHUB_PROVIDER_RETRIES", "0")
	out := n.must(t, 201, "POST", "/api/console/structured-output", map[string]any{
		"name": "movie", "schema": map[string]any{"type": "object", "required": []string{"title"},
			"properties": map[string]any{"title": map[string]any{"type": "string"}}},
	})
	soID := out["id"].(string)
	tests := []struct {
		name         string
		workflow     map[string]any
		wantAttempts []bool
		wantError    string // substring of the first attempt's error
	}{
		{"openai", map[string]any{"provider": "openai", "model": "gpt-4o"}, []bool{true}, ""},
		{"fallback after 500", map[string]any{"provider": "openai", "model": "fail-500",
			"fallbacks": []any{map[string]any{"provider": "openai", "model": "gpt-4o"}}}, []bool{false, true}, "500"},
		{"schema failure then fallback", map[string]any{"provider": "openai", "model": "bad-json", "structured_output_id": soID,
			"fallbacks": []any{map[string]any{"provider": "openai", "model": "gpt-4o"}}}, []bool{false, true}, "schema"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wf := tt.workflow
			wf["name"] = "wf" + string(rune('a'+i))
			n.must(t, 201, "POST", "/api/console/workflow", wf)
			cid := n.submit(t, wf["name"].(string), nil)["channel_id"].(string)
			v := n.waitFinal(t, n.key, cid, 10*time.Second)
			if v["status"] != "success" {
				t.Fatalf("status = %v: %v", v["status"], v["message"])
			}
			msg := v["message"].(map[string]any)
			if got := get(t, msg, "data", "title"); got != "Inception" {
				t.Errorf("data.title = %v", got)
			}
			if got := get(t, msg, "meta", "tokens"); !jsonEqual(got, map[string]any{"prompt": 245.0, "completion": 89.0, "total": 334.0}) {
				t.Errorf("meta.tokens = %v", got)
			}
			atts := get(t, msg, "meta", "attempts").([]any)
			if len(atts) != len(tt.wantAttempts) {
				t.Fatalf("attempts = %v", atts)
			}
			for j, want := range tt.wantAttempts {
				if atts[j].(map[string]any)["success"] != want {
					t.Errorf("attempt %d = %v", j, atts[j])
				}
			}
			if tt.wantError != "" {
				if e, _ := atts[0].(map[string]any)["error"].(string); !strings.Contains(e, tt.wantError) {
					t.Errorf("first attempt error = %q, want it to mention %q", e, tt.wantError)
				}
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestAllProvidersFail(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{
		"name": "broken", "provider": "mock", "mock": map[string]any{"error": "model overloaded"},
		"fallbacks": []any{map[string]any{"provider": "mock", "model": "m2"}},
	})
	cid := n.submit(t, "broken", nil)["channel_id"].(string)
	v := n.waitFinal(t, n.key, cid, 5*time.Second)
	msg := v["message"].(map[string]any)
	if v["status"] != "error" || msg["status"] != "error" || get(t, msg, "error", "code") != "generation_failed" {
		t.Fatalf("channel = %v", v)
	}
	if e, _ := get(t, msg, "error", "message").(string); !strings.Contains(e, "model overloaded") {
		t.Errorf("error.message = %q", e)
	}
	if n := len(get(t, msg, "meta", "attempts").([]any)); n != 2 {
		t.Errorf("attempts = %d, want 2", n)
	}
}

func TestSyncSubmission(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{
		"name": "s", "provider": "mock", "mock": map[string]any{"response": "plain text answer"},
	})
	raw := n.do(t, "POST", "/v1/ai", n.key, map[string]any{"workflow": "s", "messages": userMessages("hi"), "metadata": map[string]any{"k": "v <&>"}})
	// The payload is sent as JSON.stringify would write it (no \u003c
	// escapes), so receivers that verify HMAC(JSON.stringify(body)) agree.
	if raw.status != 200 || !strings.Contains(string(raw.body), `"k":"v <&>"`) {
		t.Fatalf("sync answer: %d %s", raw.status, raw.body)
	}
	msg := raw.json(t)
	if msg["status"] != "success" || get(t, msg, "data", "content") != "plain text answer" || get(t, msg, "customer_data", "k") != "v <&>" {
		t.Fatalf("sync answer = %v", msg)
	}
	// The channel is recorded like an async one.
	v := n.must(t, 200, "GET", "/api/v1/channels/"+msg["channel_id"].(string), nil)
	if v["status"] != "success" || !jsonEqual(v["message"], msg) {
		t.Errorf("channel = %v", v)
	}
	// /api/v1/ai is the same route.
	if r := n.do(t, "POST", "/api/v1/ai", n.key, map[string]any{"workflow": "s", "messages": userMessages("hi")}); r.status != 200 {
		t.Errorf("/api/v1/ai: %d %s", r.status, r.body)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock"})
	body := map[string]any{"workflow": "w", "messages": userMessages("once")}
	first := n.must(t, 200, "POST", "/v1/ai/async", body, "Idempotency-Key", "order-42")
	again := n.do(t, "POST", "/api/v1/ai/async", n.key, body, "Idempotency-Key", "order-42")
	if again.status != 200 || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat answered %d %s", again.status, again.body)
	}
	// The first answer, with a fresh ws_token (the first one may have expired).
	replayed := again.json(t)
	for _, f := range []string{"message", "status", "channel_id", "project_id", "websocket_url", "websocket_channel"} {
		if replayed[f] != first[f] {
			t.Errorf("repeat %s = %v, first answer had %v", f, replayed[f], first[f])
		}
	}
	if tok, _ := replayed["ws_token"].(string); tok == "" {
		t.Error("repeat has no ws_token")
	}
	other := n.do(t, "POST", "/v1/ai/async", n.key, map[string]any{"workflow": "w", "messages": userMessages("other")}, "Idempotency-Key", "order-42")
	if other.status != 409 || other.json(t)["error"] != "idempotency_key_reused" {
		t.Errorf("different body with the same key: %d %s", other.status, other.body)
	}
	fresh := n.must(t, 200, "POST", "/v1/ai/async", body, "Idempotency-Key", "order-43")
	if fresh["channel_id"] == first["channel_id"] {
		t.Error("a different key returned the same channel")
	}
	n.waitFinal(t, n.key, first["channel_id"].(string), 5*time.Second)

	syncFirst := n.must(t, 200, "POST", "/v1/ai", body, "Idempotency-Key", "sync-1")
	syncAgain := n.must(t, 200, "POST", "/v1/ai", body, "Idempotency-Key", "sync-1")
	if syncAgain["channel_id"] != syncFirst["channel_id"] {
		t.Errorf("sync repeat ran a new channel: %v vs %v", syncAgain["channel_id"], syncFirst["channel_id"])
	}
}

// A project over its submission rate (RIVERHUB_PROJECT_RATE, burst twice
// that) is answered 429 rate_limited with a Retry-After, on the async and
// the sync route; another project is not.
func TestProjectRateAnswers429(t *testing.T) {
	t.Parallel()
	n := newNode(t, "RIVERHUB_PROJECT_RATE", "1")
	wf := map[string]any{"name": "m", "provider": "mock"}
	n.must(t, 201, "POST", "/api/console/workflow", wf)
	body := map[string]any{"workflow": "m", "messages": userMessages("x")}
	var limited response
	for i := range 10 {
		r := n.do(t, "POST", "/v1/ai/async", n.key, body)
		if r.status == 429 {
			limited = r
			if i < 2 {
				t.Errorf("refused after %d submissions, want a burst of 2", i)
			}
			break
		}
		if r.status != 200 {
			t.Fatalf("submit: %d %s", r.status, r.body)
		}
	}
	if limited.status != 429 || limited.json(t)["error"] != "rate_limited" {
		t.Fatalf("10 submissions at rate 1/s were all accepted, or refused otherwise: %d %s", limited.status, limited.body)
	}
	if ra, err := strconv.Atoi(limited.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", limited.header.Get("Retry-After"))
	}
	if r := n.do(t, "POST", "/v1/ai", n.key, body); r.status != 429 || r.json(t)["error"] != "rate_limited" {
		t.Errorf("sync route over the rate: %d %s", r.status, r.body)
	}
	other := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "other"})["key"].(string)
	if r := n.do(t, "POST", "/api/console/workflow", other, wf); r.status != 201 {
		t.Fatalf("workflow of the other project: %d %s", r.status, r.body)
	}
	if r := n.do(t, "POST", "/v1/ai/async", other, body); r.status != 200 {
		t.Errorf("another project was limited too: %d %s", r.status, r.body)
	}
}

func TestQueueFullAnswers429(t *testing.T) {
	t.Parallel()
	// One partition: with N, each partition admits ceil(3/N) and where the
	// refusal falls depends on how the channel ids hash (docs/layout.md).
	n := newNode(t, "RIVERHUB_WORKERS", "1", "RIVERHUB_MAX_QUEUE", "3", "RIVERHUB_PARTITIONS", "1")
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{
		"name": "slow", "provider": "mock", "mock": map[string]any{"delay_ms": 1500},
	})
	body := map[string]any{"workflow": "slow", "messages": userMessages("x")}
	var accepted []string
	var rejected response
	for range 10 {
		r := n.do(t, "POST", "/v1/ai/async", n.key, body)
		if r.status == 429 {
			rejected = r
			break
		}
		if r.status != 200 {
			t.Fatalf("submit: %d %s", r.status, r.body)
		}
		accepted = append(accepted, r.json(t)["channel_id"].(string))
	}
	if rejected.status != 429 {
		t.Fatalf("10 submissions to a 1-worker node with max queue 3 were all accepted")
	}
	// One running, three queued: a fifth is one too many.
	if len(accepted) < 3 || len(accepted) > 4 {
		t.Errorf("accepted %d before refusing, want 3 or 4", len(accepted))
	}
	if rejected.header.Get("Retry-After") == "" || rejected.json(t)["error"] != "queue_full" {
		t.Errorf("429 without Retry-After or code: %v %s", rejected.header, rejected.body)
	}
	// Nothing accepted was lost: every accepted channel exists.
	for _, cid := range accepted {
		if r := n.do(t, "GET", "/api/v1/channels/"+cid, n.key, nil); r.status != 200 {
			t.Errorf("accepted channel %s: %d", cid, r.status)
		}
	}
}

// A submission answered 503 because Redis did not answer in time may have
// been accepted all the same (Redis runs what it had read once it wakes),
// so a retry with the same Idempotency-Key must not make a second task:
// the key is kept, not released, after such a failure, and a retry is
// answered request_in_progress until the reservation's lease runs out,
// then the first answer (its channel exists) or a fresh submission (it
// does not). Where the sleep meets the submission (its key's claim, its
// record, its queueing) varies from run to run, so the test checks the
// outcome over a few submissions: each key ends with one channel.
func TestIdempotencyKeyKeptThrough503(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a private redis-server and waits out 10 s reservations")
	}
	t.Parallel()
	srv := rdbtest.NewServer(t)
	n := startNode(t, testEnv(t, srv.URL(), rdbtest.Prefix(), "RIVERHUB_REDIS_TIMEOUT", "300ms"))
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock"})
	// 16 clients submit, each key once, while Redis falls asleep: the
	// submissions in flight then are at every step.
	const keys = 400
	body := func(k int) map[string]any {
		return map[string]any{"workflow": "w", "messages": userMessages(fmt.Sprintf("once %d", k))}
	}
	slept := make(chan error, 1)
	go func() {
		time.Sleep(150 * time.Millisecond)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
		defer c.Close()
		slept <- c.Do(context.Background(), "DEBUG", "SLEEP", 1).Err()
	}()
	var refused atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for k := int(next.Add(1)) - 1; k < keys; k = int(next.Add(1)) - 1 {
				if r := n.do(t, "POST", "/v1/ai/async", n.key, body(k), "Idempotency-Key", fmt.Sprintf("k%d", k)); r.status == 503 {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := <-slept; err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
	if refused.Load() == 0 {
		t.Fatal("no submission met the sleep: nothing tested")
	}
	answered := map[string]bool{}
	for k := range keys {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			r := n.do(t, "POST", "/v1/ai/async", n.key, body(k), "Idempotency-Key", fmt.Sprintf("k%d", k))
			if r.status == 200 {
				answered[r.json(t)["channel_id"].(string)] = true
				break
			}
			if r.status != 409 && r.status != 503 || time.Now().After(deadline) {
				t.Fatalf("retry of k%d answered %d %s", k, r.status, r.body)
			}
		}
	}
	for cid := range answered {
		n.waitFinal(t, n.key, cid, 10*time.Second)
	}
	var listed []string
	for _, page := range logPages(t, n, url.Values{}, 100) {
		var items []struct {
			ChannelID string `json:"channel_id"`
		}
		_ = json.Unmarshal([]byte(page), &items)
		for _, it := range items {
			listed = append(listed, it.ChannelID)
		}
	}
	if len(answered) != keys || len(listed) != keys {
		t.Errorf("%d keys (%d answered 503 first): %d channels answered, %d in the project", keys, refused.Load(), len(answered), len(listed))
	}
	for _, cid := range listed {
		if !answered[cid] {
			t.Errorf("channel %s exists, but no answer named it: a second task", cid)
		}
	}
}
