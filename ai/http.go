package ai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// maxResponseBytes bounds what is read from a provider: a completion is
	// a few KiB, so anything near this is a misbehaving server.
	maxResponseBytes = 4 << 20
	// maxDrainBytes is how much of an unread body is discarded to let the
	// connection be reused; beyond that, closing is cheaper than reading.
	maxDrainBytes = 64 << 10
	// maxProviderMessageLen bounds a provider's own error message inside an
	// attempt error.
	maxProviderMessageLen = 200
)

var errResponseTooLarge = fmt.Errorf("response body exceeds %d MiB", maxResponseBytes>>20)

// postJSON sends body to endpoint and returns the body of a 2xx response.
// setHeaders adds the provider's authentication and version headers.
func (r *Runner) postJSON(ctx context.Context, endpoint string, body any, setHeaders func(http.Header)) ([]byte, error) {
	resp, err := r.post(ctx, endpoint, body, setHeaders)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	b, readErr := readBody(resp.Body)
	if readErr != nil {
		if readErr == errResponseTooLarge {
			return nil, readErr
		}
		return nil, retryableError{readErr}
	}
	return b, nil
}

// post sends body to endpoint and returns a 2xx response (the caller
// closes its body); another status is a *statusError.
func (r *Runner) post(ctx context.Context, endpoint string, body any, setHeaders func(http.Header)) (*http.Response, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encoding request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		// The URL comes from configuration; do not echo it, it may carry
		// credentials.
		return nil, errors.New("invalid base URL")
	}
	req.Header.Set("Content-Type", "application/json")
	setHeaders(req.Header)

	resp, err := r.client.Do(req)
	if err != nil {
		return nil, retryableError{transportError(err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer closeBody(resp.Body)
		b, _ := readBody(resp.Body)
		return nil, &statusError{code: resp.StatusCode, msg: providerMessage(b),
			after: retryAfter(resp.Header, resp.StatusCode, time.Now()), should: shouldRetry(resp.Header)}
	}
	return resp, nil
}

func readBody(body io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxResponseBytes+1))
	if err != nil {
		return b, fmt.Errorf("reading response: %w", err)
	}
	if len(b) > maxResponseBytes {
		return b[:maxResponseBytes], errResponseTooLarge
	}
	return b, nil
}

func closeBody(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrainBytes))
	_ = body.Close()
}

// transportError drops the request URL that net/http puts in front of its
// errors: it is long, known to the operator, and may hold credentials.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("request timed out: %w", ue.Err)
		}
		return fmt.Errorf("request failed: %w", ue.Err)
	}
	return fmt.Errorf("request failed: %w", err)
}

// providerMessage extracts a human-readable message from an error body.
// Both supported APIs use {"error": {"message": ...}}; compatible servers
// also send {"error": "..."} or {"message": "..."}, other JSON or plain
// text, of which the start is kept.
func providerMessage(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return ""
	}
	var env struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if body[0] == '{' && json.Unmarshal(body, &env) == nil {
		var msg string
		var obj struct {
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(env.Error, &msg) == nil && msg != "":
		case json.Unmarshal(env.Error, &obj) == nil && obj.Message != "":
			msg = obj.Message
		default:
			msg = env.Message
		}
		if msg != "" {
			return truncate(oneLine(msg), maxProviderMessageLen)
		}
	}
	if body[0] == '<' {
		// An HTML error page from a proxy: its markup would only be noise.
		return ""
	}
	return truncate(oneLine(string(body[:min(len(body), 4*maxProviderMessageLen)])), maxProviderMessageLen)
}

// sanitizeName makes s acceptable as an OpenAI json_schema name and an
// Anthropic tool name: [a-zA-Z0-9_-]{1,64}.
func sanitizeName(s string) string {
	const maxLen = 64
	if s == "" {
		return "output"
	}
	if len(s) <= maxLen && !strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 || !isNameByte(byte(r)) }) {
		return s
	}
	b := make([]byte, 0, min(len(s), maxLen))
	for _, r := range s {
		if len(b) == maxLen {
			break
		}
		if r < 0x80 && isNameByte(byte(r)) {
			b = append(b, byte(r))
		} else {
			b = append(b, '_')
		}
	}
	return string(b)
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}
