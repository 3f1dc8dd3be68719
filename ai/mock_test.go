package ai

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestMockResponses(t *testing.T) {
	objSchema := json.RawMessage(`{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}`)
	tests := []struct {
		name    string
		mock    *Mock
		schema  json.RawMessage
		want    string // Data
		wantErr string // attempt error, when the run fails
	}{
		{name: "nil mock", mock: nil, want: `{"content":"mock response"}`},
		{name: "nil response", mock: &Mock{}, want: `{"content":"mock response"}`},
		{name: "null response", mock: &Mock{Response: json.RawMessage(`null`)}, want: `{"content":"mock response"}`},
		{name: "string response", mock: &Mock{Response: json.RawMessage(`"hello"`)}, want: `{"content":"hello"}`},
		{name: "escaped string", mock: &Mock{Response: json.RawMessage(`"say \"hi\"\n"`)}, want: `{"content":"say \"hi\"\n"}`},
		{name: "string holding an object", mock: &Mock{Response: json.RawMessage(`"{\"a\": 1}"`)}, want: `{"a":1}`},
		{name: "object response", mock: &Mock{Response: json.RawMessage(`{ "a": [1, 2] }`)}, want: `{"a":[1,2]}`},
		{name: "array response", mock: &Mock{Response: json.RawMessage(`[1, 2]`)}, want: `{"content":"[1,2]"}`},
		{name: "number response", mock: &Mock{Response: json.RawMessage(`42`)}, want: `{"content":"42"}`},
		{name: "object valid against schema", mock: &Mock{Response: json.RawMessage(`{"a":3}`)}, schema: objSchema, want: `{"a":3}`},
		{name: "object invalid against schema", mock: &Mock{Response: json.RawMessage(`{"a":"x"}`)}, schema: objSchema, wantErr: "output does not match schema: at '/a': got string, want integer"},
		{name: "default text against schema", mock: nil, schema: objSchema, wantErr: "output does not match schema: not valid JSON: "},
		{name: "error", mock: &Mock{Error: "simulated outage"}, wantErr: "mock: simulated outage"},
		{name: "invalid response", mock: &Mock{Response: json.RawMessage(`{nope`)}, wantErr: "mock: invalid response: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := NewRunner(Config{}).Run(testContext(t), Request{
				Chain:  []Target{{Provider: "mock", Model: "m"}},
				Mock:   tt.mock,
				Schema: tt.schema,
			})
			if tt.wantErr != "" {
				if !errors.Is(err, ErrAllFailed) {
					t.Fatalf("err = %v, want ErrAllFailed", err)
				}
				assertAttempts(t, res.Attempts, []Attempt{{Provider: "mock", Model: "m", Error: tt.wantErr}})
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := string(res.Data); got != tt.want {
				t.Errorf("Data = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestMockTokenEstimate(t *testing.T) {
	res, err := NewRunner(Config{}).Run(testContext(t), Request{
		Chain:        []Target{{Provider: "mock", Model: "m"}},
		SystemPrompt: "abcd",                                          // 4 chars
		Messages:     []Message{{Role: "user", Content: "héllo"}},     // 5 chars, 6 bytes
		Mock:         &Mock{Response: json.RawMessage(`"12345678x"`)}, // 9 chars
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := (Tokens{Prompt: 3, Completion: 3, Total: 6}); res.Tokens != want {
		t.Errorf("Tokens = %+v, want %+v", res.Tokens, want)
	}
}

func TestMockDelay(t *testing.T) {
	start := time.Now()
	res, err := NewRunner(Config{}).Run(testContext(t), Request{
		Chain: []Target{{Provider: "mock", Model: "m"}},
		Mock:  &Mock{DelayMS: 40, Response: json.RawMessage(`"done"`)},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed := time.Since(start); elapsed < 40*time.Millisecond {
		t.Errorf("Run returned after %v, want >= 40ms", elapsed)
	}
	if res.Attempts[0].DurationMS < 40 {
		t.Errorf("attempt lasted %dms, want >= 40", res.Attempts[0].DurationMS)
	}
	if got := string(res.Data); got != `{"content":"done"}` {
		t.Errorf("Data = %s", got)
	}
}

func TestMockDelayBeyondTimeout(t *testing.T) {
	r := NewRunner(Config{Timeout: 50 * time.Millisecond, Retries: -1})
	start := time.Now()
	res, err := r.Run(testContext(t), Request{
		Chain: []Target{{Provider: "mock", Model: "slow"}, {Provider: "openai", Model: "x"}},
		Mock:  &Mock{DelayMS: 60_000},
	})
	if !errors.Is(err, ErrAllFailed) {
		t.Fatalf("err = %v, want ErrAllFailed", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Run took %v, want about the 50ms timeout", elapsed)
	}
	if got := res.Attempts[0].Error; got != "mock: timeout after 50ms" {
		t.Errorf("error = %q, want mock timeout", got)
	}
}

func TestMockDelayCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	res, err := NewRunner(Config{}).Run(ctx, Request{
		Chain: []Target{{Provider: "mock", Model: "m"}, {Provider: "mock", Model: "never"}},
		Mock:  &Mock{DelayMS: 60_000},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Run took %v after cancel", elapsed)
	}
	assertAttempts(t, res.Attempts, []Attempt{{Provider: "mock", Model: "m", Error: "mock: canceled"}})
}

func BenchmarkRunMock(b *testing.B) {
	r := NewRunner(Config{})
	var attempts int
	r.OnAttempt = func(Attempt) { attempts++ }
	ctx := context.Background()
	msgs := []Message{{Role: "user", Content: "Classify this support ticket: my invoice is wrong."}}
	cases := []struct {
		name string
		req  Request
	}{
		{"default", Request{Chain: []Target{{Provider: "mock", Model: "m"}}, Messages: msgs}},
		{"string", Request{Chain: []Target{{Provider: "mock", Model: "m"}}, Messages: msgs,
			Mock: &Mock{Response: json.RawMessage(`"The ticket is about billing."`)}}},
		{"object", Request{Chain: []Target{{Provider: "mock", Model: "m"}}, Messages: msgs,
			Mock: &Mock{Response: json.RawMessage(`{"category":"billing","confidence":0.93}`)}}},
		{"schema", Request{Chain: []Target{{Provider: "mock", Model: "m"}}, Messages: msgs,
			Mock:   &Mock{Response: json.RawMessage(`{"category":"billing","confidence":0.93}`)},
			Schema: json.RawMessage(`{"type":"object","properties":{"category":{"enum":["billing","bug","other"]},"confidence":{"type":"number"}},"required":["category","confidence"]}`)}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Run(ctx, c.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	if attempts == 0 {
		b.Fatal("OnAttempt never called")
	}
}
