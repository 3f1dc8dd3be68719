package ai

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testOpenAIKey    = "sk-test-openai-0123456789abcdef"
	testAnthropicKey = "sk-ant-test-9876543210fedcba"
)

// recordedRequest is what a fake provider received, kept for assertions
// made after Run returns (a handler must not call t.Fatal).
type recordedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   map[string]json.RawMessage
}

// fakeProvider is an httptest server speaking a provider's wire format
// through handle, recording every request.
type fakeProvider struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recordedRequest
}

func newFakeProvider(tb testing.TB, handle http.HandlerFunc) *fakeProvider {
	tb.Helper()
	f := &fakeProvider{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		rec := recordedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
		_ = json.Unmarshal(raw, &rec.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, rec)
		f.mu.Unlock()
		handle(w, r)
	}))
	tb.Cleanup(f.Close)
	return f
}

func (f *fakeProvider) requests() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.reqs...)
}

// onlyRequest returns the single request the fake received.
func (f *fakeProvider) onlyRequest(tb testing.TB) recordedRequest {
	tb.Helper()
	reqs := f.requests()
	if len(reqs) != 1 {
		tb.Fatalf("provider received %d requests, want 1", len(reqs))
	}
	return reqs[0]
}

// reply answers every request with status and body.
func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hang blocks until the client gives up, like a provider that never answers.
func hang(w http.ResponseWriter, r *http.Request) {
	<-r.Context().Done()
}

func openAIReply(content string, prompt, completionTokens int) http.HandlerFunc {
	body, _ := json.Marshal(map[string]any{
		"id":     "chatcmpl-1",
		"object": "chat.completion",
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": content, "refusal": nil},
			"finish_reason": "stop",
		}},
		"usage": map[string]any{
			"prompt_tokens":     prompt,
			"completion_tokens": completionTokens,
			"total_tokens":      prompt + completionTokens,
		},
	})
	return reply(http.StatusOK, string(body))
}

func anthropicReply(content []map[string]any, in, out int) http.HandlerFunc {
	body, _ := json.Marshal(map[string]any{
		"id":          "msg_1",
		"type":        "message",
		"role":        "assistant",
		"model":       "claude-test",
		"content":     content,
		"stop_reason": "end_turn",
		"usage":       map[string]any{"input_tokens": in, "output_tokens": out},
	})
	return reply(http.StatusOK, string(body))
}

func textBlock(s string) map[string]any { return map[string]any{"type": "text", "text": s} }

func toolUseBlock(name, input string) map[string]any {
	return map[string]any{"type": "tool_use", "id": "toolu_1", "name": name, "input": json.RawMessage(input)}
}

// newTestRunner points a Runner at fake providers (either may be nil).
func newTestRunner(tb testing.TB, openai, anthropic *fakeProvider, timeout time.Duration) *Runner {
	tb.Helper()
	return NewRunner(testConfig(openai, anthropic, timeout))
}

// testConfig is the Config of newTestRunner, for tests that change more.
func testConfig(openai, anthropic *fakeProvider, timeout time.Duration) Config {
	cfg := Config{
		OpenAIAPIKey:    testOpenAIKey,
		AnthropicAPIKey: testAnthropicKey,
		Timeout:         timeout,
		// Unreachable defaults make a test fail loudly instead of
		// calling a real provider when a fake is missing.
		OpenAIBaseURL:    "http://127.0.0.1:1/v1",
		AnthropicBaseURL: "http://127.0.0.1:1",
		// Fallback tests want one try per target; retry_test.go turns
		// retries on where it tests them.
		Retries: -1,
	}
	if openai != nil {
		cfg.OpenAIBaseURL = openai.URL + "/v1/" // trailing slash must be tolerated
	}
	if anthropic != nil {
		cfg.AnthropicBaseURL = anthropic.URL
	}
	return cfg
}

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// assertJSONEqual compares JSON documents semantically.
func assertJSONEqual(tb testing.TB, what string, got []byte, want string) {
	tb.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		tb.Fatalf("%s: got invalid JSON %q: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		tb.Fatalf("%s: bad want %q: %v", what, want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		tb.Errorf("%s = %s, want %s", what, got, want)
	}
}

// assertAttempts checks each attempt's target, outcome and error prefix.
func assertAttempts(tb testing.TB, got []Attempt, want []Attempt) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d attempts %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Provider != w.Provider || g.Model != w.Model || g.Success != w.Success {
			tb.Errorf("attempt %d = %+v, want provider %q model %q success %v", i, g, w.Provider, w.Model, w.Success)
		}
		if !strings.HasPrefix(g.Error, w.Error) || (w.Error == "") != (g.Error == "") {
			tb.Errorf("attempt %d error = %q, want prefix %q", i, g.Error, w.Error)
		}
		if g.DurationMS < 0 {
			tb.Errorf("attempt %d duration = %d", i, g.DurationMS)
		}
	}
}
