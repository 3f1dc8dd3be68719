package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// These run the official phoenix client (e2e/stream_client.mjs, a chat
// page) against a node whose tasks stream their answers: from the mock
// provider, and from fake OpenAI-compatible and Anthropic servers that
// stream in their real wire formats.

// streamAnswer is what the fake providers write, in pieces.
const streamAnswer = "Rivers carry water from the hills to the sea; along the way they carve valleys, feed towns and drift around bends."

// streamedProvider is a fake provider streaming in both wire formats
// (POST /v1/chat/completions: OpenAI server-sent events; POST /v1/messages:
// Anthropic's Messages events), its behaviour chosen by the model's name:
//
//	ok       the whole answer (for a structured output request, its JSON)
//	cut      three pieces, then the response ends without its last event
//	garbage  two pieces, then an event that is not JSON
//	stall    two pieces, then nothing until the request is given up
//
// Each request first waits at gate: until the page watching the task has
// joined (watch opens it), so that the answer streams to a page that is
// there to see it.
func streamedProvider(t *testing.T, gate *joinGate) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gate.wait(r)
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
			Tools  []struct {
				Name string `json:"name"`
			} `json:"tools"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":{"message":"unreadable request"}}`, 400)
			return
		}
		anthropic := strings.HasSuffix(r.URL.Path, "/messages")
		text := streamAnswer
		tool := ""
		if anthropic && len(req.Tools) > 0 {
			tool = req.Tools[0].Name
			b, _ := json.Marshal(map[string]string{"summary": streamAnswer})
			text = string(b)
		}
		if !req.Stream { // the whole answer at once
			w.Header().Set("Content-Type", "application/json")
			q, _ := json.Marshal(text)
			switch {
			case !anthropic:
				fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","model":%q,"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":%s}}],"usage":{"prompt_tokens":9,"completion_tokens":30,"total_tokens":39}}`, req.Model, q)
			case tool != "":
				fmt.Fprintf(w, `{"id":"m1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"t1","name":%q,"input":%s}],"stop_reason":"tool_use","usage":{"input_tokens":11,"output_tokens":30}}`, tool, text)
			default:
				fmt.Fprintf(w, `{"id":"m1","type":"message","role":"assistant","content":[{"type":"text","text":%s}],"stop_reason":"end_turn","usage":{"input_tokens":11,"output_tokens":30}}`, q)
			}
			return
		}
		var pieces []string
		for rest := text; rest != ""; {
			n := min(6, len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		send := func(event, data string) {
			if anthropic {
				fmt.Fprintf(w, "event: %s\n", event)
			}
			fmt.Fprintf(w, "data: %s\n\n", data)
			w.(http.Flusher).Flush()
		}
		delta := func(p string) {
			q, _ := json.Marshal(p)
			switch {
			case !anthropic:
				send("", `{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":`+string(q)+`},"finish_reason":null}]}`)
			case tool != "":
				send("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":`+string(q)+`}}`)
			default:
				send("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+string(q)+`}}`)
			}
		}
		if anthropic {
			send("message_start", `{"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":11,"output_tokens":1}}}`)
			block := `{"type":"text","text":""}`
			if tool != "" {
				block = `{"type":"tool_use","id":"t1","name":"` + tool + `","input":{}}`
			}
			send("content_block_start", `{"type":"content_block_start","index":0,"content_block":`+block+`}`)
		} else {
			send("", `{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`)
		}
		for i, p := range pieces {
			switch {
			case req.Model == "cut" && i == 3:
				return
			case req.Model == "garbage" && i == 2:
				send("content_block_delta", `{"choices":[{"delta":{"content":`)
				return
			case req.Model == "stall" && i == 2:
				<-r.Context().Done()
				return
			}
			delta(p)
			time.Sleep(15 * time.Millisecond)
		}
		if anthropic {
			send("content_block_stop", `{"type":"content_block_stop","index":0}`)
			send("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":30}}`)
			send("message_stop", `{"type":"message_stop"}`)
			return
		}
		send("", `{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
		send("", `{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":30,"total_tokens":39}}`)
		send("", "[DONE]")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// joinGate holds the fake provider's answers until a page has joined. It
// starts open; watch closes it before a submission and opens it once its
// page has joined. A request waits joinGateMax at most, so that a page
// that never joins fails its test instead of hanging it.
type joinGate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

// joinGateMax is how long a request waits at a closed gate; with the node's
// provider timeout (streamTimeout) it leaves the stream time to finish.
const joinGateMax = 3 * time.Second

// streamTimeout is the stream nodes' provider timeout: above joinGateMax
// plus the longest stream, short enough for the "stall" case to end soon.
const streamTimeout = "6s"

func newJoinGate() *joinGate {
	g := &joinGate{open: make(chan struct{})}
	close(g.open)
	return g
}

// close makes later requests wait until let.
func (g *joinGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default: // already closed
	}
}

// let opens the gate (idempotent).
func (g *joinGate) let() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *joinGate) wait(r *http.Request) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	t := time.NewTimer(joinGateMax)
	defer t.Stop()
	select {
	case <-open:
	case <-t.C:
	case <-r.Context().Done():
	}
}

// streamedNode is a node whose providers are a streamedProvider, and the
// provider's gate.
type streamedNode struct {
	*node
	gate *joinGate
}

// streamNode starts a node (its own prefix) whose providers are a
// streamedProvider, with retries off and a short provider timeout.
func streamNode(t *testing.T, kv ...string) streamedNode {
	t.Helper()
	e2eScript(t, "stream_client.mjs")
	gate := newJoinGate()
	fake := streamedProvider(t, gate)
	t.Cleanup(gate.let) // before the provider's Close (cleanups run last first), which waits for held requests
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	n := startNode(t, testEnv(t, url, prefix, append([]string{"OPENAI_BASE_URL", fake.URL + "/v1", "OPENAI_API_KEY", "sk-test",
		"ANTHROPIC_BASE_URL", fake.URL, "ANTHROPIC_API_KEY", "sk-ant-test",
		"RIVERHUB_PROVIDER_RETRIES", "0", "RIVERHUB_PROVIDER_TIMEOUT", streamTimeout, "RIVERHUB_STREAM_WINDOW", "20ms"}, kv...)...))
	return streamedNode{n, gate}
}

// push is one line of stream_client.mjs.
type push struct {
	Event   string          `json:"event"`
	Ref     string          `json:"ref"`
	Payload json.RawMessage `json:"payload"`
}

// watch submits a task to workflow (with extra request fields), runs
// stream_client.mjs on its channel (with args) and returns what it printed
// once the final message has arrived, and the text the page shows.
//
// The page starts after the submission (its token names the channel): on
// a loaded machine Node.js may take longer to start than the answer takes
// to stream, and a page that joins a finished channel is sent the final
// message alone, which tests nothing. So the fake provider answers only
// once the page has joined (n.gate); the mock provider cannot be held, and
// its workflows wait (delay_ms) before they stream. A run whose channel had
// settled when the page joined is done again, four times at most.
func watch(t *testing.T, n streamedNode, workflow string, extra map[string]any, args ...string) ([]push, string, *jsProc) {
	t.Helper()
	var p *jsProc
	var done map[string]any
	for try := 1; ; try++ {
		n.gate.close()
		ans := n.submit(t, workflow, extra)
		p = startJS(t, "stream_client.mjs", append([]string{"--url", socketURL(n.node), "--token", ans["ws_token"].(string),
			"--topic", ans["websocket_channel"].(string)}, args...)...)
		p.await("joined", nil)
		var log struct {
			Channel struct {
				Status string `json:"status"`
			} `json:"channel"`
		}
		if err := json.Unmarshal(n.must200(t, "/api/console/logs/"+ans["channel_id"].(string)), &log); err != nil || log.Channel.Status == "" {
			t.Fatalf("the channel's log detail has no status (%v)", err)
		}
		st := log.Channel.Status
		late := st == "success" || st == "error" || st == "completed"
		n.gate.let() // after the look: a held provider cannot have settled it
		done = p.await("done", nil)
		<-p.exited
		if !late || try == 5 {
			break
		}
		t.Logf("the page joined once the answer was complete (Node.js slow to start): run %d again", try)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []push
	for _, l := range p.lines {
		var x push
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("stream_client printed %q", l)
		}
		out = append(out, x)
	}
	text, _ := done["text"].(string)
	return out, text, p
}

// checkOrder fails unless every push's ref (its seq) is above the one
// before (nothing repeated, in order) and the chunks' indexes run 1, 2, 3,
// … with no gap (nothing missed).
func checkOrder(t *testing.T, pushes []push) (chunks int) {
	t.Helper()
	last, index := int64(0), 0
	for _, p := range pushes {
		seq, _ := strconv.ParseInt(p.Ref, 10, 64)
		if seq <= last {
			t.Fatalf("push %s with seq %d after seq %d: %v", p.Event, seq, last, pushes)
		}
		last = seq
		if p.Event == "chunk" || p.Event == "chunk_reset" {
			var c struct {
				Index int `json:"index"`
			}
			_ = json.Unmarshal(p.Payload, &c)
			if c.Index != index+1 {
				t.Fatalf("%s index %d after %d: a piece missed or repeated", p.Event, c.Index, index)
			}
			index = c.Index
			chunks++
		}
	}
	return chunks
}

// final is the last push's payload, which must be the final message.
func final(t *testing.T, pushes []push) map[string]any {
	t.Helper()
	if len(pushes) == 0 || pushes[len(pushes)-1].Event != "response" {
		t.Fatalf("the last push is not the final message: %v", pushes)
	}
	var m map[string]any
	_ = json.Unmarshal(pushes[len(pushes)-1].Payload, &m)
	return m
}

// Chunks arrive in order and concatenate to the final answer: from the
// mock, from an OpenAI-compatible server, and from Anthropic streaming a
// structured output (the raw JSON text streams; the final message has the
// validated object).
func TestStreamChunksMakeTheAnswer(t *testing.T) {
	t.Parallel()
	n := streamNode(t)
	so := n.must(t, 201, "POST", "/api/console/structured-output", map[string]any{"name": "summary", "schema": map[string]any{
		"type": "object", "required": []string{"summary"}, "properties": map[string]any{"summary": map[string]any{"type": "string"}}}})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "mock", "provider": "mock", "stream": true,
		"mock": map[string]any{"response": streamAnswer, "delay_ms": 1500, "stream_chunk_chars": 4, "stream_interval_ms": 10}})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "oai", "provider": "openai", "model": "ok", "stream": true})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ant", "provider": "anthropic", "model": "ok",
		"structured_output_id": so["id"]})
	for _, tt := range []struct {
		workflow string
		extra    map[string]any
		want     string // the page's text
		data     string // the final message's data
	}{
		{"mock", nil, streamAnswer, `{"content":` + jsonString(streamAnswer) + `}`},
		{"oai", nil, streamAnswer, `{"content":` + jsonString(streamAnswer) + `}`},
		{"ant", map[string]any{"stream": true}, `{"summary":` + jsonString(streamAnswer) + `}`, `{"summary":` + jsonString(streamAnswer) + `}`},
	} {
		t.Run(tt.workflow, func(t *testing.T) {
			pushes, text, _ := watch(t, n, tt.workflow, tt.extra)
			if chunks := checkOrder(t, pushes); chunks < 3 {
				t.Fatalf("%d chunks: the answer did not stream: %v", chunks, pushes)
			}
			if text != tt.want {
				t.Fatalf("the chunks read %q, want %q", text, tt.want)
			}
			m := final(t, pushes)
			if m["status"] != "success" || string(mustJSON(t, m["data"])) != tt.data {
				t.Fatalf("final message %v, want data %s", m, tt.data)
			}
		})
	}
	// A request's "stream": false wins over its workflow's: no chunk.
	pushes, _, _ := watch(t, n, "oai", map[string]any{"stream": false})
	if len(pushes) != 1 || final(t, pushes)["status"] != "success" {
		t.Fatalf("stream false: %v", pushes)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A page whose connection drops mid-stream reconnects and rejoins from the
// last push it had (last_seq): it misses no chunk and is sent none twice.
func TestStreamResumesMidStream(t *testing.T) {
	t.Parallel()
	n := streamNode(t)
	long := strings.Repeat("0123456789", 20)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "mock", "provider": "mock", "stream": true,
		"mock": map[string]any{"response": long, "delay_ms": 1500, "stream_chunk_chars": 2, "stream_interval_ms": 15}})
	pushes, text, p := watch(t, n, "mock", nil, "--drop-after", "5", "--resume")
	p.mu.Lock()
	var joins []string
	for _, ev := range p.events {
		if ev["event"] == "joined" || ev["event"] == "dropped" {
			joins = append(joins, fmt.Sprint(ev["event"]))
		}
	}
	p.mu.Unlock()
	if strings.Join(joins, " ") != "joined dropped joined" {
		t.Fatalf("the page did not drop and rejoin mid-stream: %v", joins)
	}
	chunks := checkOrder(t, pushes)
	if text != long || chunks < 20 {
		t.Fatalf("after a reconnect the page reads %q (%d chunks), want %q", text, chunks, long)
	}
}

// A provider failing mid-stream is followed by a chunk_reset and the
// fallback's stream; broken streams (cut short, unreadable, stalled) end
// in a clear error message, and nothing hangs.
func TestStreamFailures(t *testing.T) {
	t.Parallel()
	n := streamNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "fallback", "provider": "openai", "model": "cut",
		"fallbacks": []any{map[string]any{"provider": "anthropic", "model": "ok"}}, "stream": true})
	pushes, text, _ := watch(t, n, "fallback", nil)
	checkOrder(t, pushes)
	var events []string
	for _, p := range pushes {
		events = append(events, p.Event)
	}
	seq := strings.Join(events, " ")
	if !regexp.MustCompile(`^(chunk )+chunk_reset (chunk )+response$`).MatchString(seq) {
		t.Fatalf("pushes %s, want the first provider's chunks, chunk_reset, the fallback's chunks, the final message", seq)
	}
	if text != streamAnswer || final(t, pushes)["status"] != "success" {
		t.Fatalf("after the reset the page reads %q; final %v", text, final(t, pushes))
	}

	for _, tt := range []struct{ provider, model, want string }{
		{"openai", "cut", "stream"},
		{"anthropic", "cut", "stream"},
		{"openai", "garbage", "unreadable stream event"},
		{"anthropic", "garbage", "unreadable stream event"},
		{"anthropic", "stall", "timeout"},
	} {
		t.Run(tt.provider+"-"+tt.model, func(t *testing.T) {
			name := tt.provider + "-" + tt.model
			n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": name, "provider": tt.provider, "model": tt.model, "stream": true})
			start := time.Now()
			pushes, _, _ := watch(t, n, name, nil)
			checkOrder(t, pushes)
			m := final(t, pushes)
			msg, _ := get(t, m, "error", "message").(string)
			if m["status"] != "error" || msg == "" || !strings.Contains(msg, tt.want) {
				t.Fatalf("final message %v, want an error mentioning %q", m, tt.want)
			}
			t.Logf("%s: %s", name, msg)
			if took := time.Since(start); took > 15*time.Second {
				t.Fatalf("took %v", took)
			}
		})
	}
}

// A client that listens only for "response", as the hosted service's
// browser SDK does, sees exactly the messages it saw before streaming
// existed: the same statuses and fields, the same data.
func TestStreamLeavesResponseOnlyClientsAlone(t *testing.T) {
	t.Parallel()
	n := streamNode(t)
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "ev", "provider": "openai", "model": "ok", "event_name": "ev"})
	run := func(stream bool) []map[string]any {
		ans := n.submit(t, "ev", map[string]any{"stream": stream})
		cid := ans["channel_id"].(string)
		p := startJS(t, "sdk_session.mjs", "--url", socketURL(n.node), "--token", ans["ws_token"].(string), "--topics", ans["websocket_channel"].(string))
		p.await("joined", nil)
		deadline := time.Now().Add(10 * time.Second)
		for n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)["status"] != "ai_generated" {
			if time.Now().After(deadline) {
				t.Fatal("the task did not reach ai_generated")
			}
			time.Sleep(20 * time.Millisecond)
		}
		n.must(t, 200, "POST", "/api/v1/callback/"+cid, map[string]any{"data": map[string]any{"ok": true}, "task_id": "t1"})
		p.await("dropped", nil)
		// stdout is read apart from stderr: the final line may come later.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			p.mu.Lock()
			got := len(p.lines)
			p.mu.Unlock()
			if got >= 2 {
				break
			}
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		var out []map[string]any
		for _, l := range p.lines {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("sdk_session printed %q", l)
			}
			out = append(out, m)
		}
		return out
	}
	// Fields that differ between any two tasks.
	same := func(ms []map[string]any) string {
		b, _ := json.Marshal(ms)
		s := regexp.MustCompile(`"(channel_id|timestamp|duration_ms)":("[^"]*"|\d+)`).ReplaceAllString(string(b), `"$1":_`)
		return s
	}
	plain, streamed := run(false), run(true)
	if len(plain) != 2 || !reflect.DeepEqual(same(plain), same(streamed)) {
		t.Fatalf("a response-only client saw\n%s\nwith stream, and\n%s\nwithout", same(streamed), same(plain))
	}
}
