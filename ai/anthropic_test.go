package ai

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestAnthropicText(t *testing.T) {
	srv := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("Hello, "), textBlock("world")}, 20, 4))
	r := newTestRunner(t, nil, srv, time.Second)

	res, err := r.Run(testContext(t), Request{
		Chain:        []Target{{Provider: "anthropic", Model: "claude-test"}},
		SystemPrompt: "Be kind.",
		Messages: []Message{
			{Role: "system", Content: "Answer in English."},
			{Role: "user", Content: "Hi"},
			{Role: "assistant", Content: "Hello"},
			{Role: "user", Content: "Greet the world"},
		},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertJSONEqual(t, "Data", res.Data, `{"content":"Hello, world"}`)
	if want := (Tokens{Prompt: 20, Completion: 4, Total: 24}); res.Tokens != want {
		t.Errorf("Tokens = %+v, want %+v", res.Tokens, want)
	}

	req := srv.onlyRequest(t)
	if req.Method != http.MethodPost || req.Path != "/v1/messages" {
		t.Errorf("request = %s %s, want POST /v1/messages", req.Method, req.Path)
	}
	for header, want := range map[string]string{
		"X-Api-Key":         testAnthropicKey,
		"Anthropic-Version": "2023-06-01",
		"Content-Type":      "application/json",
	} {
		if got := req.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	if got := req.Header.Get("Authorization"); got != "" {
		t.Errorf("Authorization = %q, want none", got)
	}
	assertJSONEqual(t, "model", req.Body["model"], `"claude-test"`)
	assertJSONEqual(t, "max_tokens", req.Body["max_tokens"], `4096`)
	assertJSONEqual(t, "system", req.Body["system"], `"Be kind.\n\nAnswer in English."`)
	assertJSONEqual(t, "messages", req.Body["messages"], `[
		{"role":"user","content":"Hi"},
		{"role":"assistant","content":"Hello"},
		{"role":"user","content":"Greet the world"}]`)
	for _, field := range []string{"tools", "tool_choice"} {
		if _, ok := req.Body[field]; ok {
			t.Errorf("%s sent without a schema", field)
		}
	}
}

func TestAnthropicOmitsEmptySystem(t *testing.T) {
	srv := newFakeProvider(t, anthropicReply([]map[string]any{textBlock("ok")}, 1, 1))
	r := newTestRunner(t, nil, srv, time.Second)
	if _, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "anthropic", Model: "m"}}}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	req := srv.onlyRequest(t)
	if sys, ok := req.Body["system"]; ok {
		t.Errorf("system = %s, want omitted", sys)
	}
	assertJSONEqual(t, "messages", req.Body["messages"], `[]`)
}

func TestAnthropicForcedTool(t *testing.T) {
	schema := `{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`
	srv := newFakeProvider(t, anthropicReply([]map[string]any{
		textBlock("Let me answer."),
		toolUseBlock("place", `{"city": "Lyon"}`),
	}, 30, 12))
	r := newTestRunner(t, nil, srv, time.Second)

	res, err := r.Run(testContext(t), Request{
		Chain:      []Target{{Provider: "anthropic", Model: "claude-test"}},
		Messages:   []Message{{Role: "user", Content: "Where?"}},
		Schema:     []byte(schema),
		SchemaName: "place",
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := string(res.Data); got != `{"city":"Lyon"}` {
		t.Errorf("Data = %s, want the tool input", got)
	}
	if want := (Tokens{Prompt: 30, Completion: 12, Total: 42}); res.Tokens != want {
		t.Errorf("Tokens = %+v, want %+v", res.Tokens, want)
	}

	req := srv.onlyRequest(t)
	assertJSONEqual(t, "tools", req.Body["tools"],
		`[{"name":"place","description":"Respond with the structured output","input_schema":`+schema+`}]`)
	assertJSONEqual(t, "tool_choice", req.Body["tool_choice"], `{"type":"tool","name":"place"}`)
}

func TestAnthropicWrapsNonObjectSchema(t *testing.T) {
	schema := `{"type":"array","items":{"$ref":"#/$defs/tag"},"$defs":{"tag":{"type":"string"}}}`
	srv := newFakeProvider(t, anthropicReply([]map[string]any{toolUseBlock("output", `{"value":["a","b"]}`)}, 1, 1))
	r := newTestRunner(t, nil, srv, time.Second)

	res, err := r.Run(testContext(t), Request{
		Chain:  []Target{{Provider: "anthropic", Model: "m"}},
		Schema: []byte(schema),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := string(res.Data); got != `["a","b"]` {
		t.Errorf("Data = %s, want the unwrapped value", got)
	}
	assertJSONEqual(t, "tools", srv.onlyRequest(t).Body["tools"], `[{
		"name":"output",
		"description":"Respond with the structured output",
		"input_schema":{
			"type":"object",
			"properties":{"value":`+schema+`},
			"required":["value"],
			"$defs":{"tag":{"type":"string"}}}}]`)
}

func TestAnthropicFailures(t *testing.T) {
	schema := []byte(`{"type":"object"}`)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		schema  []byte
		want    string
	}{
		{
			name:    "rate limited",
			handler: reply(429, `{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}`),
			want:    "anthropic: status 429: Number of requests has exceeded your rate limit",
		},
		{
			name:    "rate limited without body",
			handler: reply(429, ``),
			want:    "anthropic: status 429",
		},
		{
			name:    "overloaded",
			handler: reply(529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`),
			want:    "anthropic: status 529: Overloaded",
		},
		{
			name:    "no tool_use with schema",
			handler: anthropicReply([]map[string]any{textBlock("I'd rather chat.")}, 1, 1),
			schema:  schema,
			want:    `anthropic: no tool_use block in response (stop_reason "end_turn")`,
		},
		{
			name:    "refusal",
			handler: reply(200, `{"content":[],"stop_reason":"refusal","usage":{"input_tokens":1,"output_tokens":0}}`),
			want:    "anthropic: refused",
		},
		{
			name:    "wrapped input without value",
			handler: anthropicReply([]map[string]any{toolUseBlock("output", `{"other":1}`)}, 1, 1),
			schema:  []byte(`{"type":"string"}`),
			want:    `anthropic: tool input has no "value"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeProvider(t, tt.handler)
			r := newTestRunner(t, nil, srv, time.Second)
			res, err := r.Run(testContext(t), Request{Chain: []Target{{Provider: "anthropic", Model: "m"}}, Schema: tt.schema})
			if !errors.Is(err, ErrAllFailed) {
				t.Fatalf("err = %v, want ErrAllFailed", err)
			}
			if got := res.Attempts[0].Error; got != tt.want {
				t.Errorf("error = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAnthropicConversation(t *testing.T) {
	msgs := []Message{{Role: "user", Content: "a"}}
	sys, got := anthropicConversation("S", msgs)
	if sys != "S" || &got[0] != &msgs[0] {
		t.Errorf("without system messages the slice must be reused: %q %v", sys, got)
	}
	sys, got = anthropicConversation("", []Message{{Role: "system", Content: "x"}, {Role: "user", Content: "a"}, {Role: "system", Content: "y"}})
	if sys != "x\n\ny" || len(got) != 1 || got[0].Content != "a" {
		t.Errorf("got system %q messages %v", sys, got)
	}
}
