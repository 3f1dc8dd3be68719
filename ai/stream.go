package ai

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Streaming: a Request with OnDelta set asks its providers to stream
// their answer, and OnDelta is handed each piece of text as it arrives
// (Delta.Text), in order. The final Result is the same as without
// streaming (the whole text, parsed and validated); with a schema, what
// streams is the raw text of the output as the model writes it. When an
// attempt fails after it streamed something, the next attempt (a retry or
// a fallback) starts with a Delta{Reset: true}: what came before is void.
//
//	OpenAI-compatible: "stream": true, "stream_options": {"include_usage": true};
//	                   server-sent events "data: {chunk}", ending with "data: [DONE]"
//	Anthropic:         "stream": true; the Messages streaming events
//	                   (message_start … content_block_delta … message_stop)
//	mock:              its text in pieces of Mock.StreamChunkChars characters,
//	                   Mock.StreamIntervalMS apart
//
// A stream that ends before its end event, or holds an event that cannot
// be read, fails the attempt like a failed request (it is retried or falls
// back); so does an error event, with the provider's message.

// Delta is a piece of a streamed answer (Request.OnDelta).
type Delta struct {
	Text  string // the text that follows what came before
	Reset bool   // what came before is void: another attempt starts over
}

// maxEventBytes bounds one server-sent event's line.
const maxEventBytes = 1 << 20

// sse reads server-sent events: the event name (empty: "message") and
// its data lines joined.
type sse struct {
	sc *bufio.Scanner
}

func newSSE(r io.Reader) *sse {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	return &sse{sc: sc}
}

// errTruncated: the stream ended before its end event.
var errTruncated = errors.New("stream ended before the answer was complete")

// next returns the next event; io.EOF when the stream ends between events.
func (s *sse) next() (event string, data []byte, err error) {
	var buf bytes.Buffer
	seen := false
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			if seen {
				return event, buf.Bytes(), nil
			}
			continue
		}
		if line[0] == ':' { // a comment (keep-alive)
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			event, seen = string(value), true
		case "data":
			if buf.Len() > 0 {
				buf.WriteByte('\n')
			}
			buf.Write(value)
			seen = true
		}
	}
	if err := s.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return "", nil, fmt.Errorf("stream event larger than %d KiB", maxEventBytes>>10)
		}
		return "", nil, retryableError{fmt.Errorf("reading stream: %w", err)}
	}
	if seen { // the last event was not closed by a blank line
		return event, buf.Bytes(), nil
	}
	return "", nil, io.EOF
}

// postStream sends body to endpoint and returns the event stream of a 2xx
// response (the caller closes it).
func (r *Runner) postStream(ctx context.Context, endpoint string, body any, setHeaders func(http.Header)) (io.ReadCloser, error) {
	resp, err := r.post(ctx, endpoint, body, func(h http.Header) {
		h.Set("Accept", "text/event-stream")
		setHeaders(h)
	})
	if err != nil {
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		// A server that does not stream (or answers an error with 200).
		defer closeBody(resp.Body)
		b, _ := readBody(resp.Body)
		if msg := providerMessage(b); msg != "" {
			return nil, fmt.Errorf("no event stream (%s): %s", truncate(ct, 64), msg)
		}
		return nil, fmt.Errorf("no event stream (%s)", truncate(ct, 64))
	}
	return resp.Body, nil
}

type openAIStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type openAIChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
			Refusal string `json:"refusal"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// openAIStream is openAI, streamed.
func (r *Runner) openAIStream(ctx context.Context, model string, req *Request, sch *compiledSchema, emit func(string)) (completion, error) {
	body := r.openAIBody(model, req, sch)
	body.Stream, body.StreamOptions = true, &openAIStreamOptions{IncludeUsage: true}
	rc, err := r.postStream(ctx, r.openAIURL, body, r.openAIHeaders)
	if err != nil {
		return completion{}, err
	}
	defer closeBody(rc)
	events := newSSE(io.LimitReader(rc, maxResponseBytes))
	var text, refusal strings.Builder
	var tokens Tokens
	finish := ""
	for {
		_, data, err := events.next()
		if errors.Is(err, io.EOF) {
			return completion{}, retryableError{errTruncated}
		}
		if err != nil {
			return completion{}, err
		}
		if string(bytes.TrimSpace(data)) == "[DONE]" {
			break
		}
		var c openAIChunk
		if err := json.Unmarshal(data, &c); err != nil {
			return completion{}, fmt.Errorf("unreadable stream event: %s", truncate(err.Error(), maxProviderMessageLen))
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			return completion{}, fmt.Errorf("error in stream: %s", providerMessage(data))
		}
		if c.Usage != nil {
			tokens = Tokens{Prompt: c.Usage.PromptTokens, Completion: c.Usage.CompletionTokens, Total: c.Usage.TotalTokens}
		}
		for _, ch := range c.Choices[:min(len(c.Choices), 1)] {
			if d := ch.Delta.Content; d != "" {
				text.WriteString(d)
				emit(d)
			}
			refusal.WriteString(ch.Delta.Refusal)
			if ch.FinishReason != "" {
				finish = ch.FinishReason
			}
		}
	}
	if refusal.Len() > 0 {
		return completion{}, fmt.Errorf("refused: %s", truncate(oneLine(refusal.String()), maxProviderMessageLen))
	}
	if strings.TrimSpace(text.String()) == "" {
		return completion{}, fmt.Errorf("empty response (finish_reason %q)", truncate(finish, 32))
	}
	if tokens.Total == 0 {
		tokens.Total = tokens.Prompt + tokens.Completion
	}
	return completion{text: []byte(text.String()), tokens: tokens}, nil
}

type anthropicEvent struct {
	Type    string `json:"type"`
	Index   int    `json:"index"`
	Message struct {
		Usage struct {
			InputTokens int `json:"input_tokens"`
		} `json:"usage"`
	} `json:"message"`
	ContentBlock struct {
		Type string `json:"type"`
		Name string `json:"name"`
	} `json:"content_block"`
	Delta struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		PartialJSON string `json:"partial_json"`
		StopReason  string `json:"stop_reason"`
	} `json:"delta"`
	Usage struct {
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

// anthropicStream is anthropic, streamed: the text blocks' text, or with a
// schema the forced tool's input JSON as it is written.
func (r *Runner) anthropicStream(ctx context.Context, model string, req *Request, sch *compiledSchema, emit func(string)) (completion, error) {
	body, toolName := r.anthropicBody(model, req, sch)
	body.Stream = true
	rc, err := r.postStream(ctx, r.anthropicURL, body, r.anthropicHeaders)
	if err != nil {
		return completion{}, err
	}
	defer closeBody(rc)
	events := newSSE(io.LimitReader(rc, maxResponseBytes))
	var out strings.Builder
	var tokens Tokens
	stop := ""
	blocks := map[int]string{} // index → "text", or "tool" for the forced tool's
	for done := false; !done; {
		name, data, err := events.next()
		if errors.Is(err, io.EOF) {
			return completion{}, retryableError{errTruncated}
		}
		if err != nil {
			return completion{}, err
		}
		var e anthropicEvent
		if err := json.Unmarshal(data, &e); err != nil {
			return completion{}, fmt.Errorf("unreadable stream event: %s", truncate(err.Error(), maxProviderMessageLen))
		}
		if e.Type == "" {
			e.Type = name
		}
		switch e.Type {
		case "error":
			return completion{}, retryableError{fmt.Errorf("error in stream: %s", providerMessage(data))}
		case "message_start":
			tokens.Prompt = e.Message.Usage.InputTokens
		case "content_block_start":
			switch {
			case sch == nil && e.ContentBlock.Type == "text":
				blocks[e.Index] = "text"
			case sch != nil && e.ContentBlock.Type == "tool_use" && e.ContentBlock.Name == toolName:
				blocks[e.Index] = "tool"
			}
		case "content_block_delta":
			d := ""
			switch {
			case blocks[e.Index] == "text" && e.Delta.Type == "text_delta":
				d = e.Delta.Text
			case blocks[e.Index] == "tool" && e.Delta.Type == "input_json_delta":
				d = e.Delta.PartialJSON
			}
			if d != "" {
				out.WriteString(d)
				emit(d)
			}
		case "message_delta":
			tokens.Completion = e.Usage.OutputTokens
			if e.Delta.StopReason != "" {
				stop = e.Delta.StopReason
			}
		case "message_stop":
			done = true
		}
	}
	tokens.Total = tokens.Prompt + tokens.Completion
	if sch == nil {
		if strings.TrimSpace(out.String()) == "" {
			return completion{}, anthropicEmpty(stop, "no text in response")
		}
		return completion{text: []byte(out.String()), tokens: tokens}, nil
	}
	input := json.RawMessage(out.String())
	if len(bytes.TrimSpace(input)) == 0 {
		return completion{}, anthropicEmpty(stop, "no tool_use block in response")
	}
	if !json.Valid(input) {
		return completion{}, errors.New("tool input in the stream is not JSON")
	}
	if input, err = toolOutput(input, sch); err != nil {
		return completion{}, err
	}
	return completion{text: input, tokens: tokens}, nil
}

// Mock streaming defaults.
const (
	mockChunkChars = 8
	mockIntervalMS = 20
)

// mockStream is mock, streamed: its text in pieces, at its pace; with
// Mock.StreamFailAfter, it fails after that many characters (with
// Mock.Error's message, or as a stream cut short).
func (r *Runner) mockStream(ctx context.Context, req *Request, emit func(string)) (completion, error) {
	m := req.Mock
	if m != nil && m.DelayMS > 0 {
		if err := r.mockWait(ctx, time.Duration(m.DelayMS)*time.Millisecond); err != nil {
			return completion{}, err
		}
	}
	if m != nil && m.Error != "" && m.StreamFailAfter <= 0 {
		return completion{}, errors.New(m.Error)
	}
	text, err := mockText(m)
	if err != nil {
		return completion{}, err
	}
	chunk, every := mockChunkChars, mockIntervalMS*time.Millisecond
	if m != nil && m.StreamChunkChars > 0 {
		chunk = m.StreamChunkChars
	}
	if m != nil && m.StreamIntervalMS > 0 {
		every = time.Duration(m.StreamIntervalMS) * time.Millisecond
	}
	sent := 0 // characters
	for rest := text; len(rest) > 0; {
		n, i := 0, 0
		for i < len(rest) && n < chunk {
			_, size := utf8.DecodeRune(rest[i:])
			i += size
			n++
		}
		if m != nil && m.StreamFailAfter > 0 && sent+n > m.StreamFailAfter {
			if m.Error != "" {
				return completion{}, errors.New(m.Error)
			}
			return completion{}, retryableError{errTruncated}
		}
		if sent > 0 {
			if err := r.mockWait(ctx, every); err != nil {
				return completion{}, err
			}
		}
		emit(string(rest[:i]))
		rest, sent = rest[i:], sent+n
	}
	return completion{text: text, tokens: estimateTokens(req, text)}, nil
}
