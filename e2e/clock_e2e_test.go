package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// skew is how far ahead the skewed node's own clock runs: far more than
// any lease or deadline below, so a node that read its own clock would
// act at once.
const skew = 20 * time.Second

// skewedPair starts node A on time, lets setup run on it, then starts node
// B on the same prefix with its clock skew ahead, and returns both.
func skewedPair(t *testing.T, setup func(a *node), kv ...string) (a, b *node) {
	t.Helper()
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	a = startNode(t, testEnv(t, url, prefix, kv...))
	setup(a)
	b = startNodeSkewed(t, testEnv(t, url, prefix, kv...), skew)
	return a, b
}

// A task running on node A (longer than its lease, kept by heartbeats) is
// not reclaimed by node B, whose clock runs ahead: the provider is called
// once.
func TestSkewedNodeLeavesRunningTask(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"finish_reason":"stop",`+
			`"message":{"role":"assistant","content":"{\"ok\":true}"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	t.Cleanup(provider.Close)

	var cid string
	a, _ := skewedPair(t, func(a *node) {
		a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "slow", "provider": "openai", "model": "gpt-4o"})
		cid = a.submit(t, "slow", nil)["channel_id"].(string)
		for deadline := time.Now().Add(5 * time.Second); calls.Load() == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("node A did not call the provider")
			}
		}
	}, "RIVERHUB_TASK_LEASE", "2s", "OPENAI_BASE_URL", provider.URL+"/v1", "OPENAI_API_KEY", "sk-test")

	if v := a.waitFinal(t, a.key, cid, 10*time.Second); v["status"] != "success" {
		t.Fatalf("task ended %v", v)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the provider was called %d times, want once", n)
	}
}

// A callback deadline set by node A does not fire early on node B, whose
// clock runs ahead: a callback well within the deadline is accepted there.
func TestSkewedNodeKeepsCallbackDeadline(t *testing.T) {
	t.Parallel()
	var cid string
	_, b := skewedPair(t, func(a *node) {
		a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "mock", "event_name": "e",
			"callback_timeout_seconds": 5, "mock": map[string]any{"response": map[string]any{"ok": true}}})
		cid = a.submit(t, "ev", nil)["channel_id"].(string)
		for deadline := time.Now().Add(5 * time.Second); a.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)["status"] != "ai_generated"; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("node A did not generate the channel")
			}
		}
	})
	// Node B's deadline poller looks every 100 ms: give it time to act.
	time.Sleep(500 * time.Millisecond)
	b.must(t, 200, "POST", "/v1/callback/"+cid, map[string]any{"data": map[string]any{"enriched": true}})
	if v := b.waitFinal(t, b.key, cid, 5*time.Second); v["status"] != "completed" {
		t.Fatalf("channel ended %v", v)
	}
}

// A webhook retry that node A scheduled is sent by node B, whose clock
// runs ahead, at its due time, not early.
func TestSkewedNodeSendsRetryOnTime(t *testing.T) {
	t.Parallel()
	const retryAfter = 3 * time.Second
	rc := newReceiver(t, func(n int) int {
		if n == 0 {
			return 500
		}
		return 200
	})
	skewedPair(t, func(a *node) {
		setupWebhook(t, a, rc)
		a.submit(t, "w", nil)
		rc.waitHits(t, 1, 5*time.Second)
		a.stop() // after recording the failed attempt: the retry is node B's
	}, "RIVERHUB_RETRY_SCHEDULE", "0s,"+retryAfter.String())

	hits := rc.waitHits(t, 2, retryAfter+5*time.Second)
	if gap := hits[1].at.Sub(hits[0].at); gap < retryAfter-100*time.Millisecond {
		t.Errorf("the retry came %v after the first attempt, want %v", gap, retryAfter)
	}
}
