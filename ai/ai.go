package ai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Provider names accepted in a Target.
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderMock      = "mock"
)

const (
	defaultOpenAIBaseURL    = "https://api.openai.com/v1"
	defaultAnthropicBaseURL = "https://api.anthropic.com"
	defaultTimeout          = 60 * time.Second
)

// ErrAllFailed is wrapped by the error Run returns when every target of the
// chain failed (or the chain is empty).
var ErrAllFailed = errors.New("all providers failed")

// Message is one turn of the conversation sent to the model.
type Message struct {
	Role    string `json:"role"` // "system", "user", "assistant"
	Content string `json:"content"`
}

// Target is one provider/model pair of a workflow's chain.
type Target struct {
	Provider string `json:"provider"` // "openai", "anthropic", "mock"
	Model    string `json:"model"`
}

// Mock configures the mock provider (the workflow's `mock` field).
//
// Response is any JSON value: a JSON string is the model's text verbatim, any
// other value is the model's text as its compact JSON encoding. A nil
// Response makes the model answer the text "mock response", so that Data is
// {"content":"mock response"} when no schema is set.
type Mock struct {
	Response json.RawMessage `json:"response,omitempty"`
	DelayMS  int             `json:"delay_ms,omitempty"`
	Error    string          `json:"error,omitempty"` // non-empty: the attempt fails with this message
}

// Request is one AI task run.
type Request struct {
	Chain        []Target        // primary first, then fallbacks, tried in order
	SystemPrompt string          // sent before Messages
	Messages     []Message       // the conversation
	Schema       json.RawMessage // JSON Schema of the structured output; nil, empty or null = none
	SchemaName   string          // name sent to providers; sanitized to [a-zA-Z0-9_-]{1,64}, default "output"
	Mock         *Mock           // configures targets whose provider is "mock"
}

// Tokens is the token usage of the successful attempt.
type Tokens struct {
	Prompt     int `json:"prompt"`
	Completion int `json:"completion"`
	Total      int `json:"total"`
}

// Attempt records one try of one target.
type Attempt struct {
	Provider   string `json:"provider"`
	Model      string `json:"model"`
	DurationMS int64  `json:"duration_ms"`
	Success    bool   `json:"success"`
	Error      string `json:"error,omitempty"`
}

// Result is the outcome of Run.
type Result struct {
	Data       json.RawMessage // compact JSON: the structured output, or {"content": text} without a schema
	Provider   string          // of the successful attempt
	Model      string          // of the successful attempt
	Tokens     Tokens          // of the successful attempt
	DurationMS int64           // total wall time across attempts
	Attempts   []Attempt       // every try, in order, including the successful one
}

// Config configures a Runner. The zero value is usable.
type Config struct {
	OpenAIBaseURL    string        // default "https://api.openai.com/v1"
	OpenAIAPIKey     string        // empty: no Authorization header (local OpenAI-compatible servers)
	AnthropicBaseURL string        // default "https://api.anthropic.com"
	AnthropicAPIKey  string        // sent as x-api-key
	Timeout          time.Duration // per attempt; default 60s
	HTTPClient       *http.Client  // default: a shared client tuned for many concurrent requests
}

// Runner runs AI tasks. Create it with NewRunner; it is safe for concurrent
// use.
type Runner struct {
	// OnAttempt, when non-nil, is called after every attempt with the same
	// value that is appended to Result.Attempts. It lets the server count
	// attempts by outcome without inspecting every Result. Set it before the
	// first Run; it is called from the goroutines calling Run, so it must be
	// safe for concurrent use, and it should be fast.
	OnAttempt func(a Attempt)

	openAIURL       string // full chat completions endpoint
	openAIKey       string
	anthropicURL    string // full messages endpoint
	anthropicKey    string
	timeout         time.Duration
	timeoutReadable string // preformatted for the per-attempt timeout error
	client          *http.Client
}

// NewRunner returns a Runner for cfg, filling in defaults for zero fields.
func NewRunner(cfg Config) *Runner {
	r := &Runner{
		openAIURL:    endpoint(cfg.OpenAIBaseURL, defaultOpenAIBaseURL, "/chat/completions"),
		openAIKey:    cfg.OpenAIAPIKey,
		anthropicURL: endpoint(cfg.AnthropicBaseURL, defaultAnthropicBaseURL, "/v1/messages"),
		anthropicKey: cfg.AnthropicAPIKey,
		timeout:      cfg.Timeout,
		client:       cfg.HTTPClient,
	}
	if r.timeout <= 0 {
		r.timeout = defaultTimeout
	}
	r.timeoutReadable = formatDuration(r.timeout)
	if r.client == nil {
		r.client = sharedClient()
	}
	return r
}

// KnownProvider reports whether name is "openai", "anthropic" or "mock".
func KnownProvider(name string) bool {
	switch name {
	case ProviderOpenAI, ProviderAnthropic, ProviderMock:
		return true
	}
	return false
}

// Run tries req.Chain in order until one attempt succeeds, and returns its
// Result.
//
// When every attempt failed, the Result carries Attempts and DurationMS (Data
// is nil) and the error wraps ErrAllFailed; its message is the last
// attempt's error, so it can be shown as the task's error as is.
//
// When ctx is done, Run stops at once and returns an error wrapping ctx.Err()
// together with the attempts made so far; an attempt interrupted by the
// cancellation is recorded as failed.
//
// An invalid req.Schema fails the run before any provider is called, with an
// error wrapping ErrInvalidSchema: no target could ever succeed.
func (r *Runner) Run(ctx context.Context, req Request) (Result, error) {
	start := time.Now()
	var res Result

	sch, err := schemaFor(req.Schema)
	if err != nil {
		return res, fmt.Errorf("ai: %w", err)
	}
	if len(req.Chain) == 0 {
		return res, &allFailedError{msg: "no providers in chain"}
	}

	res.Attempts = make([]Attempt, 0, len(req.Chain))
	// Each attempt starts when the previous one ended: reading the clock
	// once per attempt is measurable on the mock's hot path.
	began := start
	for _, t := range req.Chain {
		if err := ctx.Err(); err != nil {
			res.DurationMS = time.Since(start).Milliseconds()
			return res, fmt.Errorf("ai: run stopped: %w", err)
		}

		data, tokens, err := r.attempt(ctx, t, &req, sch)
		ended := time.Now()
		a := Attempt{
			Provider:   t.Provider,
			Model:      t.Model,
			DurationMS: ended.Sub(began).Milliseconds(),
			Success:    err == nil,
		}
		began = ended
		res.DurationMS = ended.Sub(start).Milliseconds()
		if err != nil {
			a.Error = r.safeError(err)
		}
		res.Attempts = append(res.Attempts, a)
		if r.OnAttempt != nil {
			r.OnAttempt(a)
		}

		if err == nil {
			res.Data = data
			res.Provider = t.Provider
			res.Model = t.Model
			res.Tokens = tokens
			return res, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return res, fmt.Errorf("ai: run stopped: %w", ctxErr)
		}
	}

	return res, &allFailedError{msg: res.Attempts[len(res.Attempts)-1].Error}
}

// attempt runs one target and turns its text into Data.
func (r *Runner) attempt(ctx context.Context, t Target, req *Request, sch *compiledSchema) (json.RawMessage, Tokens, error) {
	var (
		c   completion
		err error
	)
	switch t.Provider {
	case ProviderMock:
		// The mock enforces the timeout itself: a context with a deadline
		// costs a timer per call, which the throughput benchmarks feel.
		c, err = r.mock(ctx, req)
	case ProviderOpenAI, ProviderAnthropic:
		c, err = r.callHTTP(ctx, t, req, sch)
	default:
		return nil, Tokens{}, fmt.Errorf("unknown provider %q", truncate(t.Provider, 64))
	}
	if err != nil {
		return nil, Tokens{}, fmt.Errorf("%s: %w", t.Provider, err)
	}
	data, err := parseOutput(c.text, sch)
	if err != nil {
		return nil, Tokens{}, err
	}
	return data, c.tokens, nil
}

// callHTTP bounds one provider call by the per-attempt timeout and tells a
// timeout apart from the caller giving up.
func (r *Runner) callHTTP(ctx context.Context, t Target, req *Request, sch *compiledSchema) (completion, error) {
	actx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()

	var (
		c   completion
		err error
	)
	if t.Provider == ProviderOpenAI {
		c, err = r.openAI(actx, t.Model, req, sch)
	} else {
		c, err = r.anthropic(actx, t.Model, req, sch)
	}
	if err == nil {
		return c, nil
	}
	switch {
	case ctx.Err() != nil:
		return c, errCanceled
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return c, r.timeoutError()
	}
	return c, err
}

// errCanceled replaces whatever error an attempt interrupted by the caller
// produced: the transport's wording of a cancellation is noise.
var errCanceled = errors.New("canceled")

func (r *Runner) timeoutError() error {
	return errors.New("timeout after " + r.timeoutReadable)
}

// completion is what a provider answered, before output parsing.
type completion struct {
	text   []byte
	tokens Tokens
}

// allFailedError carries the last attempt's message verbatim while still
// matching ErrAllFailed, because callers show the message to users and
// branch on the sentinel.
type allFailedError struct{ msg string }

func (e *allFailedError) Error() string { return e.msg }
func (e *allFailedError) Unwrap() error { return ErrAllFailed }

// safeError renders an attempt error for Attempt.Error: one line, bounded,
// and with API keys removed in case a provider echoed them back.
func (r *Runner) safeError(err error) string {
	s := oneLine(err.Error())
	for _, key := range [...]string{r.openAIKey, r.anthropicKey} {
		// A key of a few characters is a placeholder for a local server;
		// replacing it would mangle ordinary words in the message.
		if len(key) >= 4 && strings.Contains(s, key) {
			s = strings.ReplaceAll(s, key, "[redacted]")
		}
	}
	return truncate(s, maxErrorLen)
}

// maxErrorLen bounds Attempt.Error; provider messages inside it are cut
// shorter still.
const maxErrorLen = 512

var sharedClient = sync.OnceValue(func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 512
	// Tasks hit a handful of provider hosts at high concurrency; the default
	// of 2 idle connections per host would make most requests redial.
	tr.MaxIdleConnsPerHost = 64
	tr.IdleConnTimeout = 90 * time.Second
	// No Client.Timeout: the per-attempt context bounds each request, and
	// a client-wide timeout would be reported as a transport error instead
	// of an attempt timeout.
	return &http.Client{Transport: tr}
})

// endpoint joins a configured (or default) base URL and a path, tolerating a
// trailing slash on the base.
func endpoint(base, def, path string) string {
	if base == "" {
		base = def
	}
	return strings.TrimRight(base, "/") + path
}

// formatDuration prints whole seconds as "60s" rather than "1m0s", which
// reads better in an error message.
func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
