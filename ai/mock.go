package ai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// defaultMockText is the mock's answer when Mock.Response is unset or null.
// It is never written to, so sharing it between calls is safe.
var defaultMockText = []byte("mock response")

// mock answers from req.Mock without any I/O. It is on the hot path of
// throughput benchmarks, so it avoids allocating beyond what the output
// itself needs and enforces the attempt timeout with its single timer.
func (r *Runner) mock(ctx context.Context, req *Request) (completion, error) {
	m := req.Mock
	if m != nil && m.DelayMS > 0 {
		if err := r.mockWait(ctx, time.Duration(m.DelayMS)*time.Millisecond); err != nil {
			return completion{}, err
		}
	}
	if m != nil && m.Error != "" {
		return completion{}, errors.New(m.Error)
	}
	text, err := mockText(m)
	if err != nil {
		return completion{}, err
	}
	return completion{text: text, tokens: estimateTokens(req, text)}, nil
}

// mockWait sleeps for delay, or fails like a provider would when delay
// exceeds the attempt timeout or ctx ends first.
func (r *Runner) mockWait(ctx context.Context, delay time.Duration) error {
	wait, timesOut := delay, false
	if delay > r.timeout {
		wait, timesOut = r.timeout, true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errCanceled
	case <-t.C:
	}
	if timesOut {
		return r.timeoutError()
	}
	return nil
}

// mockText applies the Mock.Response rule: a JSON string is the text
// itself, any other JSON value is the text as compact JSON.
func mockText(m *Mock) ([]byte, error) {
	if m == nil {
		return defaultMockText, nil
	}
	resp := bytes.TrimSpace(m.Response)
	if len(resp) == 0 || string(resp) == "null" {
		return defaultMockText, nil
	}
	if resp[0] == '"' {
		// Without escapes the text is exactly what lies between the
		// quotes, so no decoding (and no copy) is needed.
		if len(resp) >= 2 && resp[len(resp)-1] == '"' && bytes.IndexByte(resp[1:len(resp)-1], '\\') < 0 &&
			bytes.IndexByte(resp[1:len(resp)-1], '"') < 0 {
			return resp[1 : len(resp)-1], nil
		}
		var s string
		if err := json.Unmarshal(resp, &s); err != nil {
			return nil, fmt.Errorf("invalid response: %s", truncate(err.Error(), maxProviderMessageLen))
		}
		return []byte(s), nil
	}
	if resp[0] == '{' && json.Valid(resp) {
		// parseOutput compacts objects anyway; compacting here too would
		// cost a copy per call.
		return resp, nil
	}
	text, err := compactJSON(resp)
	if err != nil {
		return nil, fmt.Errorf("invalid response: %s", truncate(err.Error(), maxProviderMessageLen))
	}
	return text, nil
}

// estimateTokens approximates usage at four characters per token, the usual
// rule of thumb, so that mock runs produce plausible accounting.
func estimateTokens(req *Request, text []byte) Tokens {
	chars := utf8.RuneCountInString(req.SystemPrompt)
	for _, m := range req.Messages {
		chars += utf8.RuneCountInString(m.Content)
	}
	t := Tokens{
		Prompt:     ceilDiv(chars, 4),
		Completion: ceilDiv(utf8.RuneCount(text), 4),
	}
	t.Total = t.Prompt + t.Completion
	return t
}

func ceilDiv(n, d int) int { return (n + d - 1) / d }
