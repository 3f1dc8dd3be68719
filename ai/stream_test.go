package ai

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseReply streams events (each written and flushed on its own, as a
// server does) and then ends the response.
func sseReply(events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for _, e := range events {
			_, _ = fmt.Fprint(w, e)
			w.(http.Flusher).Flush()
		}
	}
}

// openAIEvents is an OpenAI chat completions stream of pieces, with the
// usage chunk stream_options asks for, and [DONE] when done.
func openAIEvents(done bool, pieces ...string) []string {
	var out []string
	out = append(out, `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n")
	for _, p := range pieces {
		out = append(out, fmt.Sprintf(`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`+"\n\n", p))
	}
	if done {
		out = append(out, `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
			": keep-alive comment\n\n",
			`data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`+"\n\n",
			"data: [DONE]\n\n")
	}
	return out
}

// anthropicEvents is a Messages stream: a text block of pieces, or (tool
// set) the forced tool's input in pieces; message_stop when done.
func anthropicEvents(done bool, tool string, pieces ...string) []string {
	ev := func(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }
	out := []string{ev("message_start", `{"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":11,"output_tokens":1}}}`)}
	if tool == "" {
		out = append(out, ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`))
	} else {
		out = append(out, ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t1","name":"`+tool+`","input":{}}}`))
	}
	out = append(out, ev("ping", `{"type": "ping"}`))
	for _, p := range pieces {
		if tool == "" {
			out = append(out, ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, p)))
		} else {
			out = append(out, ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":%q}}`, p)))
		}
	}
	if done {
		out = append(out, ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
			ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}`),
			ev("message_stop", `{"type":"message_stop"}`))
	}
	return out
}

// deltas records what OnDelta was handed: text pieces, and "|" for a reset.
type deltas struct {
	mu  sync.Mutex
	got []string
}

func (d *deltas) on(x Delta) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if x.Reset {
		d.got = append(d.got, "|")
		return
	}
	d.got = append(d.got, x.Text)
}

func (d *deltas) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.got, "")
}

func (d *deltas) pieces() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

func TestOpenAIStreams(t *testing.T) {
	t.Parallel()
	oa := newFakeProvider(t, sseReply(openAIEvents(true, "Incep", "tion", " (2010)")...))
	r := newTestRunner(t, oa, nil, time.Second)
	var d deltas
	res, err := r.Run(testContext(t), Request{Chain: []Target{{ProviderOpenAI, "gpt-x"}},
		Messages: []Message{{Role: "user", Content: "a film"}}, OnDelta: d.on})
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != "Inception (2010)" || d.pieces() != 3 {
		t.Errorf("deltas %q in %d pieces", d.String(), d.pieces())
	}
	assertJSONEqual(t, "data", res.Data, `{"content":"Inception (2010)"}`)
	if res.Tokens != (Tokens{Prompt: 9, Completion: 4, Total: 13}) {
		t.Errorf("tokens %+v: the usage chunk was not read", res.Tokens)
	}
	req := oa.onlyRequest(t)
	if string(req.Body["stream"]) != "true" || string(req.Body["stream_options"]) != `{"include_usage":true}` {
		t.Errorf("request asked stream=%s stream_options=%s", req.Body["stream"], req.Body["stream_options"])
	}
}

func TestAnthropicStreams(t *testing.T) {
	t.Parallel()
	an := newFakeProvider(t, sseReply(anthropicEvents(true, "", "Hello", ", ", "world")...))
	r := newTestRunner(t, nil, an, time.Second)
	var d deltas
	res, err := r.Run(testContext(t), Request{Chain: []Target{{ProviderAnthropic, "claude-x"}},
		Messages: []Message{{Role: "user", Content: "hi"}}, OnDelta: d.on})
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != "Hello, world" {
		t.Errorf("deltas %q", d.String())
	}
	assertJSONEqual(t, "data", res.Data, `{"content":"Hello, world"}`)
	if res.Tokens != (Tokens{Prompt: 11, Completion: 7, Total: 18}) {
		t.Errorf("tokens %+v", res.Tokens)
	}
	if string(an.onlyRequest(t).Body["stream"]) != "true" {
		t.Error("stream not asked for")
	}
}

// With a schema, the forced tool's input JSON streams as it is written;
// the result is the validated object as without streaming.
func TestAnthropicStreamsStructuredOutput(t *testing.T) {
	t.Parallel()
	an := newFakeProvider(t, sseReply(anthropicEvents(true, "film", `{"tit`, `le":"Incep`, `tion"}`)...))
	r := newTestRunner(t, nil, an, time.Second)
	var d deltas
	res, err := r.Run(testContext(t), Request{Chain: []Target{{ProviderAnthropic, "claude-x"}}, SchemaName: "film",
		Schema:   []byte(`{"type":"object","properties":{"title":{"type":"string"}},"required":["title"]}`),
		Messages: []Message{{Role: "user", Content: "a film"}}, OnDelta: d.on})
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != `{"title":"Inception"}` {
		t.Errorf("deltas %q", d.String())
	}
	assertJSONEqual(t, "data", res.Data, `{"title":"Inception"}`)
}

// Broken streams fail the attempt with a clear error, and nothing hangs:
// cut short (no end event), an unreadable event, an error event, an
// answer that is not an event stream.
func TestBrokenStreams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		provider string
		handle   http.HandlerFunc
		want     string
	}{
		{"openai cut short", ProviderOpenAI, sseReply(openAIEvents(false, "Incep")...), "stream ended before the answer was complete"},
		{"openai unreadable", ProviderOpenAI, sseReply("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n", "data: {not json\n\n"), "unreadable stream event"},
		{"openai error event", ProviderOpenAI, sseReply(`data: {"error":{"message":"overloaded, try later","type":"server_error"}}` + "\n\n"), "overloaded, try later"},
		{"openai not a stream", ProviderOpenAI, reply(200, `{"error":{"message":"streaming is not supported"}}`), "streaming is not supported"},
		{"anthropic cut short", ProviderAnthropic, sseReply(anthropicEvents(false, "", "Hel")...), "stream ended before the answer was complete"},
		{"anthropic error event", ProviderAnthropic, sseReply(anthropicEvents(false, "", "Hel")[0],
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"), "Overloaded"},
		{"anthropic unreadable", ProviderAnthropic, sseReply("event: message_start\ndata: {\"type\":\n\n"), "unreadable stream event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := newFakeProvider(t, tc.handle)
			var r *Runner
			if tc.provider == ProviderOpenAI {
				r = newTestRunner(t, fake, nil, time.Second)
			} else {
				r = newTestRunner(t, nil, fake, time.Second)
			}
			var d deltas
			// A stream that hung would end in the attempt timeout's error,
			// not in the one expected.
			_, err := r.Run(testContext(t), Request{Chain: []Target{{tc.provider, "m"}},
				Messages: []Message{{Role: "user", Content: "hi"}}, OnDelta: d.on})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// A provider failing mid-stream: the fallback's stream follows a reset, and
// the result is the fallback's.
func TestFallbackAfterAPartialStream(t *testing.T) {
	t.Parallel()
	oa := newFakeProvider(t, sseReply(openAIEvents(false, "Half an ans")...))
	an := newFakeProvider(t, sseReply(anthropicEvents(true, "", "Whole ", "answer")...))
	r := newTestRunner(t, oa, an, time.Second)
	var d deltas
	res, err := r.Run(testContext(t), Request{Chain: []Target{{ProviderOpenAI, "a"}, {ProviderAnthropic, "b"}},
		Messages: []Message{{Role: "user", Content: "hi"}}, OnDelta: d.on})
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != "Half an ans|Whole answer" {
		t.Errorf("deltas %q, want the partial stream, a reset, the fallback's", d.String())
	}
	assertJSONEqual(t, "data", res.Data, `{"content":"Whole answer"}`)
	if len(res.Attempts) != 2 || res.Attempts[0].Success || !strings.Contains(res.Attempts[0].Error, "stream ended") {
		t.Errorf("attempts %+v", res.Attempts)
	}
}

// The mock streams its text in pieces at its pace (and can fail partway,
// for tests and the playground).
func TestMockStreams(t *testing.T) {
	t.Parallel()
	r := NewRunner(Config{Timeout: time.Second})
	var d deltas
	start := time.Now()
	res, err := r.Run(testContext(t), Request{Chain: []Target{{ProviderMock, "m"}},
		Mock:    &Mock{Response: []byte(`"Ünïcode streams in pieces"`), StreamChunkChars: 5, StreamIntervalMS: 10},
		OnDelta: d.on})
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != "Ünïcode streams in pieces" || d.pieces() != 5 { // 25 characters
		t.Errorf("deltas %q in %d pieces", d.String(), d.pieces())
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Errorf("5 pieces 10 ms apart took %v", took)
	}
	assertJSONEqual(t, "data", res.Data, `{"content":"Ünïcode streams in pieces"}`)

	// Failing after 10 characters, then a fallback to a mock that does not.
	var f deltas
	_, err = r.Run(testContext(t), Request{Chain: []Target{{ProviderMock, "m"}},
		Mock: &Mock{Response: []byte(`"abcdefghijklmnop"`), StreamChunkChars: 4, StreamFailAfter: 10, Error: "mock broke"}, OnDelta: f.on})
	if err == nil || !strings.Contains(err.Error(), "mock broke") || f.String() != "abcdefgh" {
		t.Errorf("failing mock: %v, deltas %q", err, f.String())
	}
}
