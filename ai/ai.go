package ai

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riverhub/riverhub/ai/limit"
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
	// Streamed (Request.OnDelta): pieces of StreamChunkChars characters
	// (default 8), StreamIntervalMS apart (default 20); StreamFailAfter > 0
	// fails the attempt once that many characters have streamed (with
	// Error's message, or as a stream cut short).
	StreamChunkChars int `json:"stream_chunk_chars,omitempty"`
	StreamIntervalMS int `json:"stream_interval_ms,omitempty"`
	StreamFailAfter  int `json:"stream_fail_after,omitempty"`
}

// Request is one AI task run.
type Request struct {
	Chain        []Target        // primary first, then fallbacks, tried in order
	SystemPrompt string          // sent before Messages
	Messages     []Message       // the conversation
	Schema       json.RawMessage // JSON Schema of the structured output; nil, empty or null = none
	SchemaName   string          // name sent to providers; sanitized to [a-zA-Z0-9_-]{1,64}, default "output"
	Mock         *Mock           // configures targets whose provider is "mock"
	// MaxWait bounds the time the run spends waiting in all, for retry
	// delays and rate-limit permits; 0: no bound beyond ctx (a retry
	// delay is still at most Config.RetryWait). A wait that would pass it
	// moves on to the next target instead.
	MaxWait time.Duration
	// OnWait, when non-nil, is called once, the first time the run has
	// to wait, before it waits; a caller can give back what it holds for
	// runs that are working (a worker slot), and say why it waits.
	OnWait func(Wait)
	// OnDelta, when non-nil, makes the providers stream their answer and
	// is called with each piece, in order, on the run's goroutine
	// (stream.go).
	OnDelta func(Delta)
}

// Wait says why a run waits: for a target's retry delay ("retry") or for a
// permit of its credential's limits ("rate_limit").
type Wait struct {
	Provider string
	Model    string
	Reason   string
}

// Reasons of a Wait.
const (
	WaitRetry     = "retry"
	WaitRateLimit = "rate_limit"
)

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
	// Status is the provider's HTTP status when it answered with an error.
	Status int `json:"status,omitempty"`
	// WaitMS is how long the run waited before this try: the retry delay
	// after the previous try, plus the wait for a rate-limit permit.
	WaitMS int64 `json:"wait_ms,omitempty"`
	// Skipped: not tried, because its provider is cooling down after
	// failing again and again and the chain had another target.
	Skipped bool `json:"skipped,omitempty"`
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

	// Retries is how many times a target is tried again after a
	// retryable failure (408, 409, 429, 5xx, transport error, timeout)
	// before the chain moves on; default 3, negative: none.
	Retries int
	// RetryWait is the longest wait before one retry; a provider asking
	// for longer (Retry-After) is moved past at once. Default 60s.
	RetryWait time.Duration
	// RetryBase is the first retry delay when the provider named none,
	// doubling per retry up to 8s, with jitter. Default 500ms.
	RetryBase time.Duration
	// CooldownAfter is how many failures in a row (5xx, timeout,
	// transport error) make this node skip a provider while the chain
	// has another target; default 5, negative: never.
	CooldownAfter int
	// Cooldown is how long such a provider is skipped; default 30s.
	Cooldown time.Duration
	// Limiter enforces Limits across nodes; nil: no limits.
	Limiter *limit.Limiter
	// Limits of each provider's credential, by provider name ("openai",
	// "anthropic", "mock"); absent: unlimited.
	Limits map[string]limit.Limits
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

	retries   int
	retryWait time.Duration
	retryBase time.Duration
	cool      cooldowns
	limiter   *limit.Limiter
	creds     map[string]credential // by provider name
}

// credential names the account a provider's requests are made with: its
// limits and its health are its own, shared by every workflow using it.
type credential struct {
	key     string // limiter and cooldown key, e.g. "openai:3fa9c2d1"
	limited bool
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
	r.retries = orDefault(cfg.Retries, 3)
	r.retryWait = orDefault(cfg.RetryWait, 60*time.Second)
	r.retryBase = orDefault(cfg.RetryBase, 500*time.Millisecond)
	r.cool = cooldowns{after: orDefault(cfg.CooldownAfter, 5), span: orDefault(cfg.Cooldown, 30*time.Second),
		m: map[string]*health{}}
	r.limiter = cfg.Limiter
	r.creds = map[string]credential{
		ProviderOpenAI:    {key: credentialKey(ProviderOpenAI, r.openAIURL, r.openAIKey)},
		ProviderAnthropic: {key: credentialKey(ProviderAnthropic, r.anthropicURL, r.anthropicKey)},
		ProviderMock:      {key: ProviderMock},
	}
	for p, lim := range cfg.Limits {
		c, ok := r.creds[p]
		if !ok || lim.IsZero() || r.limiter == nil {
			continue
		}
		if lim.Hold <= 0 {
			// A permit held by a node that died frees itself once no
			// attempt could still be running under it.
			lim.Hold = r.timeout + 5*time.Second
		}
		r.limiter.Set(c.key, lim)
		c.limited = true
		r.creds[p] = c
	}
	return r
}

// credentialKey names a credential without revealing it: the provider
// and a short hash of its endpoint and key.
func credentialKey(provider, endpoint, key string) string {
	sum := sha256.Sum256([]byte(endpoint + "\n" + key))
	return provider + ":" + hex.EncodeToString(sum[:4])
}

// LimitWaiting reports how many runs of this node wait for a permit of
// provider's limits now.
func (r *Runner) LimitWaiting(provider string) int {
	c := r.creds[provider]
	if !c.limited {
		return 0
	}
	return r.limiter.Waiting(c.key)
}

// LimitedProviders lists the providers that have limits.
func (r *Runner) LimitedProviders() []string {
	var ps []string
	for p, c := range r.creds {
		if c.limited {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// CredentialKey is the key under which the limits and the cooldown of a
// provider's credential are kept ("" for an unknown provider).
func (r *Runner) CredentialKey(provider string) string { return r.creds[provider].key }

// orDefault returns def for zero, 0 for negative (switched off), else v.
func orDefault[T int | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
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
// A target that fails in a way worth retrying (408, 409, 429, 5xx, a
// transport error, a timeout) is tried again, up to Config.Retries times,
// after the wait its provider asked for (Retry-After and the like) or a
// jittered backoff; a provider asking for more than Config.RetryWait, a
// failure not worth retrying (400, 401, 403, 404, invalid output) and the
// last retry move on to the next target. A provider cooling down after
// failing again and again is skipped while the chain has another target.
// Every try, and every skip, is an entry of Result.Attempts.
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
	run := runState{r: r, req: &req, sch: sch, start: start, now: start}
	for i, t := range req.Chain {
		if err := ctx.Err(); err != nil {
			res.DurationMS = time.Since(start).Milliseconds()
			return res, fmt.Errorf("ai: run stopped: %w", err)
		}
		cred := r.creds[t.Provider]
		if r.cool.cooling(cred.key, run.now) && r.anyHealthy(req.Chain[i+1:], run.now) {
			r.record(&res, Attempt{Provider: t.Provider, Model: t.Model, Skipped: true,
				Error: t.Provider + ": skipped: cooling down after failing " + strconv.Itoa(r.cool.after) + " times in a row"})
			continue
		}
		done, err := run.target(ctx, t, cred, &res, req.Chain[i+1:])
		res.DurationMS = run.now.Sub(start).Milliseconds()
		if done {
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}

	return res, &allFailedError{msg: res.Attempts[len(res.Attempts)-1].Error}
}

// runState is one Run's progress: the clock as last read and the waiting
// done so far.
type runState struct {
	r      *Runner
	req    *Request
	sch    *compiledSchema
	start  time.Time
	now    time.Time     // when the last attempt ended (the clock is read once per attempt)
	waited time.Duration // in all, against req.MaxWait
	told   bool          // req.OnWait was called
	// streamed: the current attempt has sent OnDelta text (a next attempt
	// starts with a reset).
	streamed bool
}

// target tries t until it succeeds (true), fails in a way that moves the
// chain on (false, nil) or ctx ends (false, error).
func (s *runState) target(ctx context.Context, t Target, cred credential, res *Result, rest []Target) (bool, error) {
	r := s.r
	var delay time.Duration // waited before this try
	for try := 0; ; try++ {
		data, tokens, limitWait, err := s.attempt(ctx, t, cred)
		ended := time.Now()
		a := Attempt{Provider: t.Provider, Model: t.Model, Success: err == nil,
			DurationMS: ended.Sub(s.now.Add(limitWait)).Milliseconds(), WaitMS: (delay + limitWait).Milliseconds()}
		s.now = ended
		if err == nil {
			r.cool.record(cred.key, true, false, ended)
			r.record(res, a)
			res.Data, res.Provider, res.Model, res.Tokens = data, t.Provider, t.Model, tokens
			return true, nil
		}
		a.Error = r.safeError(err)
		f := classify(err)
		a.Status = f.code
		r.record(res, a)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return false, fmt.Errorf("ai: run stopped: %w", ctxErr)
		}
		r.cool.record(cred.key, false, f.sick, ended)
		if !f.retry || try >= r.retries || (r.cool.cooling(cred.key, ended) && r.anyHealthy(rest, ended)) {
			return false, nil
		}
		delay = f.after
		if delay < 0 {
			delay = backoff(r.retryBase, try)
		}
		if delay > r.retryWait || !s.mayWait(ctx, delay) {
			return false, nil
		}
		if !s.sleep(ctx, t, delay) {
			return false, fmt.Errorf("ai: run stopped: %w", ctx.Err())
		}
		s.now = s.now.Add(delay)
	}
}

// mayWait reports whether waiting d more stays within req.MaxWait and
// ctx's deadline.
func (s *runState) mayWait(ctx context.Context, d time.Duration) bool {
	if s.req.MaxWait > 0 && s.waited+d > s.req.MaxWait {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && s.now.Add(d).After(dl) {
		return false
	}
	return true
}

// waiting tells the caller, once, that the run waits.
func (s *runState) waiting(t Target, reason string) {
	if !s.told {
		s.told = true
		if s.req.OnWait != nil {
			s.req.OnWait(Wait{Provider: t.Provider, Model: t.Model, Reason: reason})
		}
	}
}

func (s *runState) sleep(ctx context.Context, t Target, d time.Duration) bool {
	s.waiting(t, WaitRetry)
	s.waited += d
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// attempt runs one target, under its credential's limits, and turns its
// text into Data. It returns how long it waited for a permit.
func (s *runState) attempt(ctx context.Context, t Target, cred credential) (json.RawMessage, Tokens, time.Duration, error) {
	r := s.r
	if !KnownProvider(t.Provider) {
		return nil, Tokens{}, 0, fmt.Errorf("unknown provider %q", truncate(t.Provider, 64))
	}
	var permit *limit.Permit
	var waited time.Duration
	if cred.limited {
		var err error
		if permit, waited, err = s.permit(ctx, t, cred); err != nil {
			return nil, Tokens{}, waited, fmt.Errorf("%s: %w", t.Provider, err)
		}
	}
	var (
		c   completion
		err error
	)
	var emit func(string)
	if s.req.OnDelta != nil {
		if s.streamed {
			s.req.OnDelta(Delta{Reset: true})
			s.streamed = false
		}
		emit = func(text string) {
			s.streamed = true
			s.req.OnDelta(Delta{Text: text})
		}
	}
	switch {
	case t.Provider == ProviderMock && emit != nil:
		c, err = r.mockStream(ctx, s.req, emit)
	case t.Provider == ProviderMock:
		// The mock enforces the timeout itself: a context with a deadline
		// costs a timer per call, which the throughput benchmarks feel.
		c, err = r.mock(ctx, s.req)
	default:
		c, err = r.callHTTP(ctx, t, s.req, s.sch, emit)
	}
	permit.Release(c.tokens.Total)
	if err != nil {
		return nil, Tokens{}, waited, fmt.Errorf("%s: %w", t.Provider, err)
	}
	data, err := parseOutput(c.text, s.sch)
	if err != nil {
		return nil, Tokens{}, waited, err
	}
	return data, c.tokens, waited, nil
}

// errNoPermit: the run may not wait any longer for a rate-limit permit.
var errNoPermit = errors.New("rate limit: no permit within the time this request may wait")

// permit waits for the credential's limits, within what the run may
// still wait.
func (s *runState) permit(ctx context.Context, t Target, cred credential) (*limit.Permit, time.Duration, error) {
	lctx := ctx
	if s.req.MaxWait > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, s.req.MaxWait-s.waited)
		defer cancel()
	}
	p, waited, err := s.r.limiter.Acquire(lctx, cred.key, func() { s.waiting(t, WaitRateLimit) })
	s.waited += waited
	if err != nil {
		if ctx.Err() != nil {
			return nil, waited, errCanceled
		}
		return nil, waited, errNoPermit
	}
	return p, waited, nil
}

// anyHealthy reports whether some target of ts is not cooling down.
func (r *Runner) anyHealthy(ts []Target, now time.Time) bool {
	for _, t := range ts {
		if !r.cool.cooling(r.creds[t.Provider].key, now) {
			return true
		}
	}
	return false
}

// record appends a to res.Attempts and reports it.
func (r *Runner) record(res *Result, a Attempt) {
	res.Attempts = append(res.Attempts, a)
	if r.OnAttempt != nil {
		r.OnAttempt(a)
	}
}

// callHTTP bounds one provider call by the per-attempt timeout and tells a
// timeout apart from the caller giving up.
func (r *Runner) callHTTP(ctx context.Context, t Target, req *Request, sch *compiledSchema, emit func(string)) (completion, error) {
	actx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()

	var (
		c   completion
		err error
	)
	switch {
	case t.Provider == ProviderOpenAI && emit != nil:
		c, err = r.openAIStream(actx, t.Model, req, sch, emit)
	case t.Provider == ProviderOpenAI:
		c, err = r.openAI(actx, t.Model, req, sch)
	case emit != nil:
		c, err = r.anthropicStream(actx, t.Model, req, sch, emit)
	default:
		c, err = r.anthropic(actx, t.Model, req, sch)
	}
	if err == nil {
		return c, nil
	}
	switch {
	case ctx.Err() != nil:
		return c, errCanceled
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return c, retryableError{r.timeoutError()}
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
