package ai

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestOpenAISuccessWithUsage(t *testing.T) {
	srv := newFakeProvider(t, openAIReply("Hello there", 11, 7))
	r := newTestRunner(t, srv, nil, time.Second)

	res, err := r.Run(testContext(t), Request{
		Chain:        []Target{{Provider: "openai", Model: "gpt-test"}},
		SystemPrompt: "Be brief.",
		Messages:     []Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Yo"}, {Role: "user", Content: "Again"}},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertJSONEqual(t, "Data", res.Data, `{"content":"Hello there"}`)
	if want := (Tokens{Prompt: 11, Completion: 7, Total: 18}); res.Tokens != want {
		t.Errorf("Tokens = %+v, want %+v", res.Tokens, want)
	}
	if res.Provider != "openai" || res.Model != "gpt-test" {
		t.Errorf("Provider/Model = %q/%q", res.Provider, res.Model)
	}
	assertAttempts(t, res.Attempts, []Attempt{{Provider: "openai", Model: "gpt-test", Success: true}})

	req := srv.onlyRequest(t)
	if req.Method != http.MethodPost || req.Path != "/v1/chat/completions" {
		t.Errorf("request = %s %s, want POST /v1/chat/completions", req.Method, req.Path)
	}
	if got := req.Header.Get("Authorization"); got != "Bearer "+testOpenAIKey {
		t.Errorf("Authorization = %q", got)
	}
	if got := req.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	assertJSONEqual(t, "model", req.Body["model"], `"gpt-test"`)
	assertJSONEqual(t, "messages", req.Body["messages"], `[
		{"role":"system","content":"Be brief."},
		{"role":"user","content":"Hi"},
		{"role":"assistant","content":"Yo"},
		{"role":"user","content":"Again"}]`)
	if _, ok := req.Body["response_format"]; ok {
		t.Errorf("response_format sent without a schema: %s", req.Body["response_format"])
	}
}

func TestOpenAIStructuredOutput(t *testing.T) {
	schema := `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}`
	srv := newFakeProvider(t, openAIReply("```json\n{ \"name\": \"Ada\", \"age\": 36 }\n```", 5, 5))
	r := newTestRunner(t, srv, nil, time.Second)

	res, err := r.Run(testContext(t), Request{
		Chain:      []Target{{Provider: "openai", Model: "gpt-test"}},
		Messages:   []Message{{Role: "user", Content: "Who?"}},
		Schema:     []byte(schema),
		SchemaName: "person record!",
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := string(res.Data), `{"name":"Ada","age":36}`; got != want {
		t.Errorf("Data = %s, want %s", got, want)
	}

	req := srv.onlyRequest(t)
	assertJSONEqual(t, "response_format", req.Body["response_format"],
		`{"type":"json_schema","json_schema":{"name":"person_record_","schema":`+schema+`,"strict":false}}`)
	assertJSONEqual(t, "messages", req.Body["messages"], `[{"role":"user","content":"Who?"}]`)
}

func TestOpenAIWithoutKeySendsNoAuthorization(t *testing.T) {
	srv := newFakeProvider(t, openAIReply("ok", 1, 1))
	r := NewRunner(Config{OpenAIBaseURL: srv.URL, Timeout: time.Second})

	if _, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "local"}}}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	req := srv.onlyRequest(t)
	if got, ok := req.Header["Authorization"]; ok {
		t.Errorf("Authorization sent without a key: %q", got)
	}
	if req.Path != "/chat/completions" {
		t.Errorf("path = %q, want /chat/completions", req.Path)
	}
	assertJSONEqual(t, "messages", req.Body["messages"], `[]`)
}

func TestOpenAIFailures(t *testing.T) {
	long := strings.Repeat("x", 500)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string // exact attempt error
	}{
		{
			name:    "server error with message",
			handler: reply(500, `{"error":{"message":"The server had an error","type":"server_error","code":null}}`),
			want:    "openai: status 500: The server had an error",
		},
		{
			name:    "long message is cut",
			handler: reply(400, `{"error":{"message":"`+long+`","type":"invalid_request_error"}}`),
			want:    "openai: status 400: " + long[:197] + "...",
		},
		{
			name:    "html error page",
			handler: reply(502, `<html><body>Bad Gateway</body></html>`),
			want:    "openai: status 502",
		},
		{
			name:    "plain text error",
			handler: reply(503, "upstream\nunavailable"),
			want:    "openai: status 503: upstream unavailable",
		},
		{
			name:    "refusal",
			handler: reply(200, `{"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}`),
			want:    "openai: refused: I can't help with that.",
		},
		{
			name:    "unparsable body",
			handler: reply(200, `not json`),
			want:    "openai: unparsable response: invalid character 'o' in literal null (expecting 'u')",
		},
		{
			name:    "no choices",
			handler: reply(200, `{"choices":[]}`),
			want:    "openai: response has no choices",
		},
		{
			name:    "error with status 200",
			handler: reply(200, `{"error":{"message":"model not loaded"}}`),
			want:    "openai: error response: model not loaded",
		},
		{
			name:    "empty content",
			handler: reply(200, `{"choices":[{"message":{"role":"assistant","content":""},"finish_reason":"length"}]}`),
			want:    `openai: empty response (finish_reason "length")`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeProvider(t, tt.handler)
			r := newTestRunner(t, srv, nil, time.Second)
			res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "m"}}})
			if !errors.Is(err, ErrAllFailed) {
				t.Fatalf("err = %v, want ErrAllFailed", err)
			}
			if len(res.Attempts) != 1 || res.Attempts[0].Error != tt.want {
				t.Fatalf("attempts = %+v, want one with error %q", res.Attempts, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("err = %q, want the last attempt's error %q", err, tt.want)
			}
		})
	}
}

func TestOpenAIContentParts(t *testing.T) {
	srv := newFakeProvider(t, reply(200, `{"choices":[{"message":{"role":"assistant","content":[{"type":"text","text":"{\"a\":"},{"type":"text","text":"1}"}]}}]}`))
	r := newTestRunner(t, srv, nil, time.Second)
	res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "m"}}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := string(res.Data); got != `{"a":1}` {
		t.Errorf("Data = %s, want {\"a\":1}", got)
	}
	if res.Tokens != (Tokens{}) {
		t.Errorf("Tokens = %+v, want zero when the server reports no usage", res.Tokens)
	}
}

func TestOversizedResponseFails(t *testing.T) {
	big := `{"choices":[{"message":{"content":"` + strings.Repeat("a", maxResponseBytes) + `"}}]}`
	srv := newFakeProvider(t, reply(200, big))
	r := newTestRunner(t, srv, nil, 5*time.Second)
	res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "openai", Model: "m"}}})
	if !errors.Is(err, ErrAllFailed) {
		t.Fatalf("err = %v, want ErrAllFailed", err)
	}
	if want := "openai: response body exceeds 4 MiB"; res.Attempts[0].Error != want {
		t.Errorf("error = %q, want %q", res.Attempts[0].Error, want)
	}
}
