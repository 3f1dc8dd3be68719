package ai

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// sequence answers the n-th request with handlers[n], and every request
// after the last with the last.
func sequence(handlers ...http.HandlerFunc) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		i := min(int(n.Add(1))-1, len(handlers)-1)
		handlers[i](w, r)
	}
}

// withHeaders adds headers to what h answers.
func withHeaders(h http.HandlerFunc, kv ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(kv); i += 2 {
			w.Header().Set(kv[i], kv[i+1])
		}
		h(w, r)
	}
}

// OpenAI's and Anthropic's own bodies for a rate limit and an overload.
const (
	openAIRateLimited = `{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
	anthropicLimited  = `{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`
	anthropicOverload = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
)

func retryRunner(tb testing.TB, openai, anthropic *fakeProvider, retry Config) *Runner {
	tb.Helper()
	cfg := testConfig(openai, anthropic, time.Second)
	cfg.Retries, cfg.RetryWait, cfg.RetryBase = retry.Retries, retry.RetryWait, retry.RetryBase
	cfg.CooldownAfter, cfg.Cooldown = retry.CooldownAfter, retry.Cooldown
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 20 * time.Millisecond
	}
	return NewRunner(cfg)
}

var (
	openAIThenAnthropic = []Target{{Provider: "openai", Model: "gpt"}, {Provider: "anthropic", Model: "claude"}}
	hi                  = []Message{{Role: "user", Content: "hi"}}
)

func TestRateLimitIsWaitedOutThenSucceeds(t *testing.T) {
	tests := []struct {
		name     string
		openai   http.HandlerFunc
		wantWait time.Duration
	}{
		{"Retry-After seconds", sequence(
			withHeaders(reply(429, openAIRateLimited), "Retry-After", "1"),
			openAIReply("ok", 1, 1)), time.Second},
		{"retry-after-ms", sequence(
			withHeaders(reply(429, openAIRateLimited), "retry-after-ms", "300", "Retry-After", "1"),
			openAIReply("ok", 1, 1)), 300 * time.Millisecond},
		{"x-ratelimit reset of the exhausted limit", sequence(
			withHeaders(reply(429, openAIRateLimited), "x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "400ms",
				"x-ratelimit-remaining-tokens", "9000", "x-ratelimit-reset-tokens", "6m0s"),
			openAIReply("ok", 1, 1)), 400 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary := newFakeProvider(t, tt.openai)
			r := retryRunner(t, primary, nil, Config{})
			res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			assertAttempts(t, res.Attempts, []Attempt{
				{Provider: "openai", Model: "gpt", Error: "openai: status 429: Rate limit reached"},
				{Provider: "openai", Model: "gpt", Success: true},
			})
			if res.Attempts[0].Status != 429 {
				t.Errorf("first attempt status = %d, want 429", res.Attempts[0].Status)
			}
			got := time.Duration(res.Attempts[1].WaitMS) * time.Millisecond
			if got < tt.wantWait-5*time.Millisecond || got > tt.wantWait+250*time.Millisecond {
				t.Errorf("second attempt waited %v, want the %v the provider asked for", got, tt.wantWait)
			}
			if n := len(primary.requests()); n != 2 {
				t.Errorf("provider saw %d requests, want 2", n)
			}
		})
	}
}

func TestAnthropicOverloadAndResetHeaders(t *testing.T) {
	reset := time.Now().Add(700 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	fake := newFakeProvider(t, sequence(
		reply(529, anthropicOverload), // no header: backoff
		withHeaders(reply(429, anthropicLimited), "anthropic-ratelimit-input-tokens-remaining", "0",
			"anthropic-ratelimit-input-tokens-reset", reset, "anthropic-ratelimit-requests-remaining", "49"),
		anthropicReply([]map[string]any{textBlock("fine")}, 2, 2)))
	r := retryRunner(t, nil, fake, Config{})
	start := time.Now()
	res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "anthropic", Model: "claude"}}, Messages: hi})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "anthropic", Model: "claude", Error: "anthropic: status 529: Overloaded"},
		{Provider: "anthropic", Model: "claude", Error: "anthropic: status 429: Number of request tokens"},
		{Provider: "anthropic", Model: "claude", Success: true},
	})
	if el := time.Since(start); el < 600*time.Millisecond {
		t.Errorf("Run took %v: it did not wait for the input-token limit's reset", el)
	}
}

func TestRateLimitBeyondTheCapFallsBack(t *testing.T) {
	primary := newFakeProvider(t, withHeaders(reply(429, openAIRateLimited), "Retry-After", "30"))
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
	r := retryRunner(t, primary, fallback, Config{RetryWait: 2 * time.Second})
	start := time.Now()
	res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "openai", Model: "gpt", Error: "openai: status 429"},
		{Provider: "anthropic", Model: "claude", Success: true},
	})
	if el := time.Since(start); el > time.Second {
		t.Errorf("Run took %v; a 30 s Retry-After beyond the 2 s cap should move on at once", el)
	}
}

func TestRateLimitedTooOftenFallsBack(t *testing.T) {
	primary := newFakeProvider(t, withHeaders(reply(429, openAIRateLimited), "retry-after-ms", "10"))
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
	r := retryRunner(t, primary, fallback, Config{Retries: 2})
	res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "openai", Model: "gpt", Error: "openai: status 429"},
		{Provider: "openai", Model: "gpt", Error: "openai: status 429"},
		{Provider: "openai", Model: "gpt", Error: "openai: status 429"},
		{Provider: "anthropic", Model: "claude", Success: true},
	})
}

func TestNotRetried(t *testing.T) {
	tests := []struct {
		name   string
		handle http.HandlerFunc
		want   string
	}{
		{"400", reply(400, `{"error":{"message":"Invalid model","type":"invalid_request_error"}}`), "openai: status 400: Invalid model"},
		{"401", reply(401, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`), "openai: status 401"},
		{"403", reply(403, `{"error":{"message":"forbidden"}}`), "openai: status 403"},
		{"404", reply(404, `{"error":{"message":"The model does not exist"}}`), "openai: status 404"},
		{"invalid output", openAIReply("", 1, 1), "openai: empty response"},
		{"5xx the provider says not to retry", withHeaders(reply(500, `{}`), "x-should-retry", "false"), "openai: status 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary := newFakeProvider(t, tt.handle)
			fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
			r := retryRunner(t, primary, fallback, Config{})
			res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			assertAttempts(t, res.Attempts, []Attempt{
				{Provider: "openai", Model: "gpt", Error: tt.want},
				{Provider: "anthropic", Model: "claude", Success: true},
			})
			if n := len(primary.requests()); n != 1 {
				t.Errorf("primary saw %d requests, want 1", n)
			}
		})
	}
}

func TestServerErrorsBackOffThenSucceed(t *testing.T) {
	primary := newFakeProvider(t, sequence(
		reply(500, `{"error":{"message":"The server had an error"}}`),
		reply(503, `upstream unavailable`),
		openAIReply("ok", 1, 1)))
	r := retryRunner(t, primary, nil, Config{RetryBase: 50 * time.Millisecond})
	res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "gpt"}}, Messages: hi})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Attempts) != 3 || !res.Attempts[2].Success {
		t.Fatalf("attempts = %+v, want two failures then success", res.Attempts)
	}
	// Backoff: ~50 ms then ~100 ms, each less up to a quarter of jitter.
	if w := res.Attempts[1].WaitMS; w < 37 || w > 50+100 {
		t.Errorf("first backoff = %d ms, want 37-50", w)
	}
	if w := res.Attempts[2].WaitMS; w < 75 || w > 100+100 {
		t.Errorf("second backoff = %d ms, want 75-100", w)
	}
}

func TestSyncWaitBoundMovesOn(t *testing.T) {
	primary := newFakeProvider(t, withHeaders(reply(429, openAIRateLimited), "Retry-After", "2"))
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
	r := retryRunner(t, primary, fallback, Config{})
	var told atomic.Int32
	start := time.Now()
	res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi,
		MaxWait: time.Second, OnWait: func(Wait) { told.Add(1) }})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Attempts) != 2 || res.Attempts[1].Provider != "anthropic" {
		t.Fatalf("attempts = %+v, want the primary once then the fallback", res.Attempts)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("Run took %v: a 2 s wait beyond the 1 s bound should move on at once", el)
	}
	if told.Load() != 0 {
		t.Errorf("OnWait called %d times, though nothing waited", told.Load())
	}

	// Within the bound it waits, and says so once.
	primary2 := newFakeProvider(t, sequence(
		withHeaders(reply(429, openAIRateLimited), "retry-after-ms", "50"),
		withHeaders(reply(429, openAIRateLimited), "retry-after-ms", "50"),
		openAIReply("ok", 1, 1)))
	r2 := retryRunner(t, primary2, nil, Config{})
	res, err = r2.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "gpt"}}, Messages: hi,
		MaxWait: time.Second, OnWait: func(Wait) { told.Add(1) }})
	if err != nil || len(res.Attempts) != 3 {
		t.Fatalf("Run: %v, attempts %+v", err, res.Attempts)
	}
	if told.Load() != 1 {
		t.Errorf("OnWait called %d times, want once", told.Load())
	}
}

func TestCooldownSkipsAFailingProvider(t *testing.T) {
	primary := newFakeProvider(t, reply(500, `{"error":{"message":"down"}}`))
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
	r := retryRunner(t, primary, fallback, Config{Retries: -1, CooldownAfter: 2, Cooldown: time.Minute})
	run := func() Result {
		t.Helper()
		res, err := r.Run(testContext(t), Request{Chain: openAIThenAnthropic, Messages: hi})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return res
	}
	run()
	run() // the second failure in a row starts the cooldown
	res := run()
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "openai", Model: "gpt", Error: "openai: skipped: cooling down after failing 2 times in a row"},
		{Provider: "anthropic", Model: "claude", Success: true},
	})
	if !res.Attempts[0].Skipped {
		t.Errorf("first attempt = %+v, want skipped", res.Attempts[0])
	}
	if n := len(primary.requests()); n != 2 {
		t.Errorf("primary saw %d requests, want 2 (none while cooling down)", n)
	}

	// A chain with nowhere else to go still tries it.
	res, _ = r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "gpt"}}, Messages: hi})
	if len(res.Attempts) != 1 || res.Attempts[0].Skipped {
		t.Errorf("attempts = %+v, want one real try", res.Attempts)
	}
}

func TestCooldownEndsWithASuccessfulProbe(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	primary := newFakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			reply(503, `{}`)(w, r)
			return
		}
		openAIReply("back", 1, 1)(w, r)
	})
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 1, 1))
	r := retryRunner(t, primary, fallback, Config{Retries: -1, CooldownAfter: 1, Cooldown: 100 * time.Millisecond})
	req := Request{Chain: openAIThenAnthropic, Messages: hi}
	if res, _ := r.Run(testContext(t), req); res.Provider != "anthropic" {
		t.Fatalf("first run succeeded on %q", res.Provider)
	}
	if res, _ := r.Run(testContext(t), req); !res.Attempts[0].Skipped {
		t.Fatalf("second run attempts = %+v, want the primary skipped", res.Attempts)
	}
	down.Store(false)
	time.Sleep(150 * time.Millisecond)
	if res, _ := r.Run(testContext(t), req); res.Provider != "openai" {
		t.Fatalf("after the cooldown, attempts = %+v, want the primary to answer", res.Attempts)
	}
}

func TestRetryAfterHeaders(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		x := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			x.Set(kv[i], kv[i+1])
		}
		return x
	}
	tests := []struct {
		name string
		h    http.Header
		code int
		want time.Duration
	}{
		{"none", h(), 429, -1},
		{"seconds", h("Retry-After", "3"), 503, 3 * time.Second},
		{"fractional seconds", h("Retry-After", "0.5"), 429, 500 * time.Millisecond},
		{"http date", h("Retry-After", now.Add(7*time.Second).Format(http.TimeFormat)), 429, 7 * time.Second},
		{"date in the past", h("Retry-After", now.Add(-time.Minute).Format(http.TimeFormat)), 429, 0},
		{"ms wins", h("retry-after-ms", "250", "Retry-After", "3"), 429, 250 * time.Millisecond},
		{"garbage", h("Retry-After", "soon"), 503, -1},
		{"openai reset of exhausted tokens", h("x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "1m2s",
			"x-ratelimit-remaining-requests", "10", "x-ratelimit-reset-requests", "5h"), 429, 62 * time.Second},
		{"openai reset on a 500 is ignored", h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "2s"), 500, -1},
		{"anthropic reset", h("anthropic-ratelimit-requests-remaining", "0",
			"anthropic-ratelimit-requests-reset", now.Add(4*time.Second).Format(time.RFC3339)), 429, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.h, tt.code, now); got != tt.want {
				t.Errorf("retryAfter = %v, want %v", got, tt.want)
			}
		})
	}
}
