package ai

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFallbackAfterProviderFailure(t *testing.T) {
	closed := newFakeProvider(t, reply(200, `{}`))
	closed.Close() // connection refused

	tests := []struct {
		name    string
		primary *fakeProvider
		want    string // prefix of the primary attempt's error
	}{
		{"status 500", newFakeProvider(t, reply(500, `{"error":{"message":"boom","type":"server_error"}}`)), "openai: status 500: boom"},
		{"status 429", newFakeProvider(t, reply(429, `{"error":{"message":"Rate limit reached","type":"requests"}}`)), "openai: status 429: Rate limit reached"},
		{"status 400", newFakeProvider(t, reply(400, `{"error":{"message":"bad model","type":"invalid_request_error"}}`)), "openai: status 400: bad model"},
		{"status 404 without body", newFakeProvider(t, reply(404, ``)), "openai: status 404"},
		{"transport error", closed, "openai: request failed: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fallback := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("from fallback")}, 3, 2))
			r := newTestRunner(t, tt.primary, fallback, time.Second)

			res, err := r.Run(testContext(t), Request{
				Chain:    []Target{{Provider: "openai", Model: "primary"}, {Provider: "anthropic", Model: "fallback"}},
				Messages: []Message{{Role: "user", Content: "hi"}},
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			assertJSONEqual(t, "Data", res.Data, `{"content":"from fallback"}`)
			if res.Provider != "anthropic" || res.Model != "fallback" {
				t.Errorf("succeeded on %s/%s, want anthropic/fallback", res.Provider, res.Model)
			}
			if want := (Tokens{Prompt: 3, Completion: 2, Total: 5}); res.Tokens != want {
				t.Errorf("Tokens = %+v, want the fallback's %+v", res.Tokens, want)
			}
			assertAttempts(t, res.Attempts, []Attempt{
				{Provider: "openai", Model: "primary", Error: tt.want},
				{Provider: "anthropic", Model: "fallback", Success: true},
			})
		})
	}
}

func TestSchemaFailureFallsBack(t *testing.T) {
	schema := `{"type":"object","properties":{"score":{"type":"integer","minimum":0}},"required":["score"],"additionalProperties":false}`
	primary := newFakeProvider(t, openAIReply(`{"score":"high"}`, 10, 5))
	fallback := newFakeProvider(t, anthropicReply([]map[string]any{toolUseBlock("rating", `{"score":7}`)}, 10, 5))
	r := newTestRunner(t, primary, fallback, time.Second)

	res, err := r.Run(testContext(t), Request{
		Chain:      []Target{{Provider: "openai", Model: "a"}, {Provider: "anthropic", Model: "b"}},
		Messages:   []Message{{Role: "user", Content: "rate it"}},
		Schema:     json.RawMessage(schema),
		SchemaName: "rating",
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := string(res.Data); got != `{"score":7}` {
		t.Errorf("Data = %s", got)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "openai", Model: "a", Error: "output does not match schema: at '/score': got string, want integer"},
		{Provider: "anthropic", Model: "b", Success: true},
	})
}

func TestPerAttemptTimeoutMovesOn(t *testing.T) {
	primary := newFakeProvider(t, hang)
	fallback := newFakeProvider(t, openAIReply("late but fine", 1, 1))
	r := NewRunner(Config{
		Retries:          -1,
		OpenAIBaseURL:    fallback.URL,
		AnthropicBaseURL: primary.URL,
		Timeout:          100 * time.Millisecond,
	})

	start := time.Now()
	res, err := r.Run(testContext(t), Request{
		Chain: []Target{{Provider: "anthropic", Model: "slow"}, {Provider: "openai", Model: "fast"}},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("Run took %v, want about the 100ms timeout", elapsed)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "anthropic", Model: "slow", Error: "anthropic: timeout after 100ms"},
		{Provider: "openai", Model: "fast", Success: true},
	})
	if got := res.Attempts[0].Error; got != "anthropic: timeout after 100ms" {
		t.Errorf("timeout error = %q", got)
	}
	if res.Attempts[0].DurationMS < 100 {
		t.Errorf("timed out attempt lasted %dms, want >= 100", res.Attempts[0].DurationMS)
	}
	if res.DurationMS < res.Attempts[0].DurationMS {
		t.Errorf("total %dms shorter than first attempt %dms", res.DurationMS, res.Attempts[0].DurationMS)
	}
}

func TestParentCancelStopsChain(t *testing.T) {
	primary := newFakeProvider(t, hang)
	r := newTestRunner(t, primary, nil, 10*time.Second)
	var hook []Attempt
	r.OnAttempt = func(a Attempt) { hook = append(hook, a) }

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)

	start := time.Now()
	res, err := r.Run(ctx, Request{Chain: []Target{{Provider: "openai", Model: "slow"}, {Provider: "mock", Model: "never"}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrAllFailed) {
		t.Errorf("a cancelled run must not report ErrAllFailed")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Run took %v after cancel", elapsed)
	}
	assertAttempts(t, res.Attempts, []Attempt{{Provider: "openai", Model: "slow", Error: "openai: canceled"}})
	if len(hook) != 1 {
		t.Errorf("OnAttempt called %d times, want 1", len(hook))
	}
	if res.Data != nil {
		t.Errorf("Data = %s, want nil", res.Data)
	}
}

func TestParentCancelDuringLastAttempt(t *testing.T) {
	primary := newFakeProvider(t, hang)
	r := newTestRunner(t, primary, nil, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)

	res, err := r.Run(ctx, Request{Chain: []Target{{Provider: "openai", Model: "only"}}})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrAllFailed) {
		t.Fatalf("err = %v, want context.Canceled and not ErrAllFailed", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{{Provider: "openai", Model: "only", Error: "openai: canceled"}})
}

func TestParentDeadlineIsNotAnAttemptTimeout(t *testing.T) {
	primary := newFakeProvider(t, hang)
	r := newTestRunner(t, primary, nil, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	res, err := r.Run(ctx, Request{Chain: []Target{{Provider: "openai", Model: "slow"}, {Provider: "mock", Model: "never"}}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{{Provider: "openai", Model: "slow", Error: "openai: canceled"}})
}

func TestCancelledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := NewRunner(Config{}).Run(ctx, Request{Chain: []Target{{Provider: "mock", Model: "m"}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(res.Attempts) != 0 {
		t.Errorf("attempts = %+v, want none", res.Attempts)
	}
}

func TestAllFail(t *testing.T) {
	oa := newFakeProvider(t, reply(500, `{"error":{"message":"down"}}`))
	an := newFakeProvider(t, reply(503, `{"type":"error","error":{"type":"api_error","message":"unavailable"}}`))
	r := newTestRunner(t, oa, an, time.Second)
	var mu sync.Mutex
	var hook []Attempt
	r.OnAttempt = func(a Attempt) {
		mu.Lock()
		defer mu.Unlock()
		hook = append(hook, a)
	}

	res, err := r.Run(testContext(t), Request{
		Chain: []Target{{Provider: "openai", Model: "a"}, {Provider: "anthropic", Model: "b"}, {Provider: "mock", Model: "c"}},
		Mock:  &Mock{Error: "boom"},
	})
	if !errors.Is(err, ErrAllFailed) {
		t.Fatalf("err = %v, want ErrAllFailed", err)
	}
	if err.Error() != "mock: boom" {
		t.Errorf("err = %q, want the last attempt's error", err)
	}
	want := []Attempt{
		{Provider: "openai", Model: "a", Error: "openai: status 500: down"},
		{Provider: "anthropic", Model: "b", Error: "anthropic: status 503: unavailable"},
		{Provider: "mock", Model: "c", Error: "mock: boom"},
	}
	assertAttempts(t, res.Attempts, want)
	mu.Lock()
	assertAttempts(t, hook, want)
	mu.Unlock()
	if res.Data != nil || res.Provider != "" {
		t.Errorf("failed run has Data %s, Provider %q", res.Data, res.Provider)
	}
}

func TestEmptyChain(t *testing.T) {
	res, err := NewRunner(Config{}).Run(testContext(t), Request{})
	if !errors.Is(err, ErrAllFailed) {
		t.Fatalf("err = %v, want ErrAllFailed", err)
	}
	if len(res.Attempts) != 0 {
		t.Errorf("attempts = %+v", res.Attempts)
	}
}

func TestUnknownProviderFallsBack(t *testing.T) {
	res, err := NewRunner(Config{}).Run(testContext(t), Request{
		Chain: []Target{{Provider: "gemini", Model: "x"}, {Provider: "mock", Model: "m"}},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertAttempts(t, res.Attempts, []Attempt{
		{Provider: "gemini", Model: "x", Error: `unknown provider "gemini"`},
		{Provider: "mock", Model: "m", Success: true},
	})
}

func TestInvalidSchemaFailsBeforeAnyCall(t *testing.T) {
	srv := newFakeProvider(t, openAIReply("{}", 1, 1))
	r := newTestRunner(t, srv, nil, time.Second)
	res, err := r.Run(testContext(t), Request{
		Chain:  []Target{{Provider: "openai", Model: "m"}},
		Schema: json.RawMessage(`{"type": 12}`),
	})
	if !errors.Is(err, ErrInvalidSchema) {
		t.Fatalf("err = %v, want ErrInvalidSchema", err)
	}
	if len(res.Attempts) != 0 || len(srv.requests()) != 0 {
		t.Errorf("attempts %+v, %d requests; want none", res.Attempts, len(srv.requests()))
	}
}

func TestAPIKeysNeverInErrors(t *testing.T) {
	// Providers sometimes echo the credential they rejected.
	oa := newFakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		reply(401, `{"error":{"message":"Incorrect API key provided: `+key+`","type":"invalid_request_error"}}`)(w, r)
	})
	an := newFakeProvider(t, func(w http.ResponseWriter, r *http.Request) {
		reply(401, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key `+r.Header.Get("x-api-key")+`"}}`)(w, r)
	})
	r := newTestRunner(t, oa, an, time.Second)

	res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "a"}, {Provider: "anthropic", Model: "b"}}})
	if !errors.Is(err, ErrAllFailed) {
		t.Fatalf("err = %v, want ErrAllFailed", err)
	}
	msgs := []string{err.Error()}
	for _, a := range res.Attempts {
		msgs = append(msgs, a.Error)
	}
	for _, m := range msgs {
		for _, key := range []string{testOpenAIKey, testAnthropicKey} {
			if strings.Contains(m, key) {
				t.Errorf("error %q leaks an API key", m)
			}
		}
	}
	if got, want := res.Attempts[0].Error, "openai: status 401: Incorrect API key provided: [redacted]"; got != want {
		t.Errorf("openai error = %q, want %q", got, want)
	}
	if got, want := res.Attempts[1].Error, "anthropic: status 401: invalid x-api-key [redacted]"; got != want {
		t.Errorf("anthropic error = %q, want %q", got, want)
	}
}

func TestBaseURLCredentialsNotLeaked(t *testing.T) {
	closed := newFakeProvider(t, reply(200, `{}`))
	closed.Close()
	u := strings.Replace(closed.URL, "http://", "http://user:hunter2@", 1)
	r := NewRunner(Config{OpenAIBaseURL: u, Timeout: time.Second, Retries: -1})
	res, _ := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "m"}}})
	if len(res.Attempts) != 1 || !strings.HasPrefix(res.Attempts[0].Error, "openai: request failed: ") {
		t.Fatalf("attempts = %+v", res.Attempts)
	}
	if msg := res.Attempts[0].Error; strings.Contains(msg, "hunter2") || strings.Contains(msg, "user") || strings.Contains(msg, "http://") {
		t.Errorf("error %q leaks the base URL", msg)
	}
}

func TestKnownProvider(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"openai", true},
		{"anthropic", true},
		{"mock", true},
		{"OpenAI", false},
		{"", false},
		{"gemini", false},
	}
	for _, tt := range tests {
		if got := KnownProvider(tt.name); got != tt.want {
			t.Errorf("KnownProvider(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestConcurrentRuns(t *testing.T) {
	srv := newFakeProvider(t, openAIReply(`{"ok":true}`, 1, 1))
	r := newTestRunner(t, srv, nil, time.Second)
	schema := json.RawMessage(`{"type":"object","required":["ok"]}`)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			target := Target{Provider: "openai", Model: "m"}
			if i%2 == 0 {
				target = Target{Provider: "mock", Model: "m"}
			}
			res, err := r.Run(testContext(t), Request{Chain: []Target{target}, Schema: schema, Mock: &Mock{Response: json.RawMessage(`{"ok":true}`)}})
			if err == nil && string(res.Data) != `{"ok":true}` {
				err = errors.New("unexpected data " + string(res.Data))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{60 * time.Second, "60s"},
		{100 * time.Millisecond, "100ms"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
