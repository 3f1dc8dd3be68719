package ai

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverhub/riverhub/ai/limit"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// Two runners (two nodes) with the same credential share its limits:
// the provider never sees more than the concurrency limit, every run
// succeeds, and runs that waited say so with reason rate_limit.
func TestLimitsAreSharedByNodes(t *testing.T) {
	c, prefix := rdbtest.New(t)
	var inflight, most atomic.Int64
	fake := newFakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		openAIReply("ok", 1, 1)(w, r)
	})
	nodes := make([]*Runner, 2)
	for i := range nodes {
		nodes[i] = NewRunner(Config{OpenAIBaseURL: fake.URL + "/v1", OpenAIAPIKey: testOpenAIKey, Timeout: 5 * time.Second,
			Limiter: limit.New(c, limit.Options{Prefix: prefix}), Limits: map[string]limit.Limits{"openai": {Concurrency: 3}}})
	}
	var wg sync.WaitGroup
	var waited, failed atomic.Int64
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := nodes[i%2].Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "gpt"}}, Messages: hi,
				OnWait: func(w Wait) {
					if w.Reason == WaitRateLimit && w.Provider == "openai" {
						waited.Add(1)
					}
				}})
			if err != nil || len(res.Attempts) != 1 {
				failed.Add(1)
				return
			}
			if res.Attempts[0].WaitMS > 0 && waited.Load() == 0 {
				t.Errorf("an attempt waited %d ms but OnWait was never told", res.Attempts[0].WaitMS)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d runs failed", failed.Load())
	}
	if m := most.Load(); m > 3 {
		t.Errorf("the provider saw %d requests at once, limit 3", m)
	}
	if waited.Load() == 0 {
		t.Error("30 runs against a limit of 3 and none waited")
	}
}

// A sync run (MaxWait) that cannot get a permit in time moves on to its
// fallback.
func TestNoPermitWithinMaxWaitFallsBack(t *testing.T) {
	c, prefix := rdbtest.New(t)
	lim := limit.New(c, limit.Options{Prefix: prefix})
	release := make(chan struct{})
	slow := newFakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		openAIReply("late", 1, 1)(w, r)
	})
	t.Cleanup(func() { close(release) })
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
	r := NewRunner(Config{OpenAIBaseURL: slow.URL + "/v1", AnthropicBaseURL: fallback.URL, Timeout: 5 * time.Second,
		Limiter: lim, Limits: map[string]limit.Limits{"openai": {Concurrency: 1}}})
	go func() {
		_, _ = r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "gpt"}}, Messages: hi})
	}()
	deadline := time.Now().Add(2 * time.Second)
	for len(slow.requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi, MaxWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "openai", Model: "gpt", Error: "openai: rate limit: no permit within the time this request may wait"},
		{Provider: "anthropic", Model: "claude", Success: true},
	})
	if w := res.Attempts[0].WaitMS; w < 190 {
		t.Errorf("waited %d ms for a permit, want the 200 ms allowed", w)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Run took %v", el)
	}
}
