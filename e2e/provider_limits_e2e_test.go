package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// limitedProvider is a fake OpenAI-compatible server with an account's
// limits: it counts what it sees, and answers 429 (with Retry-After, as
// the real one does) to a request beyond them.
type limitedProvider struct {
	*httptest.Server
	rpm, concurrency int
	latency          time.Duration

	mu       sync.Mutex
	arrivals []time.Time // of every request, in order
	inflight int
	maxSeen  int // most requests in flight at once
	maxRPM   int // most requests in any 60 s window
	refused  int // requests answered 429 for a limit
	served   atomic.Int64
}

func newLimitedProvider(tb testing.TB, rpm, concurrency int, latency time.Duration) *limitedProvider {
	tb.Helper()
	p := &limitedProvider{rpm: rpm, concurrency: concurrency, latency: latency}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	tb.Cleanup(p.Close)
	return p
}

func (p *limitedProvider) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	p.mu.Lock()
	p.arrivals = append(p.arrivals, now)
	inWindow := 0
	for i := len(p.arrivals) - 1; i >= 0 && now.Sub(p.arrivals[i]) < time.Minute; i-- {
		inWindow++
	}
	p.inflight++
	p.maxSeen = max(p.maxSeen, p.inflight)
	p.maxRPM = max(p.maxRPM, inWindow)
	over := (p.rpm > 0 && inWindow > p.rpm) || (p.concurrency > 0 && p.inflight > p.concurrency)
	if over {
		p.refused++
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	if over {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`))
		return
	}
	time.Sleep(p.latency)
	p.served.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": "ok"}}},
		"usage": map[string]any{"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
	})
}

func (p *limitedProvider) stats() (maxSeen, maxRPM, refused, requests int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxSeen, p.maxRPM, p.refused, len(p.arrivals)
}

// burstResult is what a limited burst measured.
type burstResult struct {
	elapsed, minimum time.Duration
}

// limitedBurst submits tasks async tasks at once, split over two nodes
// that share the provider's limits through Redis, against a fake provider
// enforcing those limits, waits for every one and checks that all
// succeeded while the provider never saw more than its limits.
func limitedBurst(tb testing.TB, tasks, rpm, concurrency int, latency time.Duration) burstResult {
	tb.Helper()
	fake := newLimitedProvider(tb, rpm, concurrency, latency)
	url := testRedisURL(tb)
	prefix := "rhtest:burst" + fmt.Sprint(time.Now().UnixNano())
	tb.Cleanup(func() { dropPrefix(tb, url, prefix) })
	env := testEnv(tb, url, prefix, "OPENAI_BASE_URL", fake.URL+"/v1", "OPENAI_API_KEY", "sk-test",
		"RIVERHUB_PROVIDER_LIMITS", fmt.Sprintf("openai:concurrency=%d,rpm=%d", concurrency, rpm),
		"RIVERHUB_LOG_LEVEL", "error")
	a, b := startNode(tb, env), startNode(tb, env)
	a.must(tb, 201, "POST", "/api/console/workflow", map[string]any{"name": "limited", "provider": "openai", "model": "gpt-test"})
	body, _ := json.Marshal(map[string]any{"workflow": "limited", "messages": userMessages("hello")})

	start := time.Now()
	ids := make([]string, tasks)
	client := oasClient(tb, benchClient)
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := range 32 {
		n := a
		if w%2 == 1 {
			n = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < tasks; i = int(next.Add(1)) - 1 {
				id, err := submitAsync(client, n.base, n.key, body)
				if err != nil {
					tb.Errorf("submit %d: %v", i, err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
	// Latency plus the limits' waits: far longer than either alone.
	limit := time.Duration(tasks/max(rpm, 1)+2)*time.Minute + time.Minute
	for fake.served.Load() < int64(tasks) {
		if time.Since(start) > limit {
			tb.Fatalf("%d of %d tasks served after %v", fake.served.Load(), tasks, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := burstResult{elapsed: time.Since(start), minimum: burstMinimum(tasks, rpm, concurrency, latency)}

	// Every task succeeded at its first attempt, on the provider.
	for i, id := range ids {
		v := a.waitFinal(tb, a.key, id, 10*time.Second)
		if v["status"] != "success" {
			tb.Fatalf("task %d (%s): %v", i, id, v)
		}
		if atts := get(tb, v["message"], "meta", "attempts").([]any); len(atts) != 1 {
			tb.Fatalf("task %d: attempts %v, want one", i, atts)
		}
	}
	maxSeen, maxRPM, refused, requests := fake.stats()
	if refused != 0 || maxSeen > concurrency || maxRPM > rpm {
		tb.Fatalf("the provider saw %d in flight (limit %d) and %d in a minute (limit %d); %d requests refused",
			maxSeen, concurrency, maxRPM, rpm, refused)
	}
	if requests != tasks {
		tb.Errorf("the provider saw %d requests for %d tasks", requests, tasks)
	}
	tb.Logf("%d tasks, limits %d/min and %d at once: done in %v (minimum %v, %.3f×); most in flight %d, most in a minute %d",
		tasks, rpm, concurrency, res.elapsed.Round(time.Millisecond), res.minimum.Round(time.Millisecond),
		float64(res.elapsed)/float64(res.minimum), maxSeen, maxRPM)
	return res
}

// burstMinimum is the least time tasks can take under a limit of rpm
// requests in any minute and concurrency at once, each taking latency:
// full minutes of rpm requests, then the last batch in rounds of
// concurrency.
func burstMinimum(tasks, rpm, concurrency int, latency time.Duration) time.Duration {
	minutes := (tasks - 1) / rpm
	last := tasks - minutes*rpm
	rounds := (last + concurrency - 1) / concurrency
	return time.Duration(minutes)*time.Minute + time.Duration(rounds)*latency
}

// TestProviderLimitsHoldAcrossNodes: a burst of 1,000 tasks against a
// provider account allowing 300 requests a minute and 20 at once, run by
// two nodes: every task succeeds, none is refused, and the provider never
// sees more than its limits. (About three minutes: the limit's own pace.)
func TestProviderLimitsHoldAcrossNodes(t *testing.T) {
	t.Parallel()
	limitedBurst(t, 1000, 300, 20, 50*time.Millisecond)
}

// TestRateLimitedTaskWaitsThenSucceeds: a provider that answers the first
// request with 429 and Retry-After: 1 gets a second try a second later;
// the task succeeds with both attempts listed, the wait on the timeline.
func TestRateLimitedTaskWaitsThenSucceeds(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"fine"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`))
	}))
	t.Cleanup(fake.Close)
	n := newNode(t, "OPENAI_BASE_URL", fake.URL+"/v1", "OPENAI_API_KEY", "sk-test")
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "openai", "model": "gpt-test"})
	cid := n.submit(t, "w", nil)["channel_id"].(string)
	v := n.waitFinal(t, n.key, cid, 10*time.Second)
	if v["status"] != "success" {
		t.Fatalf("channel = %v", v)
	}
	atts := get(t, v["message"], "meta", "attempts").([]any)
	if len(atts) != 2 {
		t.Fatalf("attempts = %v, want two", atts)
	}
	first, second := atts[0].(map[string]any), atts[1].(map[string]any)
	if first["success"] != false || first["status"] != 429.0 || !strings.Contains(first["error"].(string), "429") {
		t.Errorf("first attempt = %v, want a failed 429", first)
	}
	if second["success"] != true || second["wait_ms"].(float64) < 990 {
		t.Errorf("second attempt = %v, want a success after waiting the 1 s asked for", second)
	}

	logs := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)
	raw, _ := json.Marshal(logs)
	for _, want := range []string{`"type":"waiting"`, `"reason":"retry"`, `"status_code":429`, `"wait_ms":`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("timeline lacks %s: %s", want, raw)
		}
	}
}
