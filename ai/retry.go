package ai

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// statusError is a provider's non-2xx answer: its status, its explanation
// and what its headers say about when to come back.
type statusError struct {
	code int
	msg  string
	// after is how long the provider asked to wait (Retry-After,
	// retry-after-ms, or the reset header of an exhausted rate limit);
	// negative when it said nothing.
	after time.Duration
	// should is the provider's own verdict (x-should-retry): +1 retry,
	// -1 do not, 0 not given.
	should int
}

func (e *statusError) Error() string {
	if e.msg != "" {
		return "status " + strconv.Itoa(e.code) + ": " + e.msg
	}
	return "status " + strconv.Itoa(e.code)
}

// retryableError marks a failure worth trying again on the same target: a
// transport error or an attempt timeout.
type retryableError struct{ error }

func (e retryableError) Unwrap() error { return e.error }

// failure classifies an attempt's error.
type failure struct {
	retry bool          // worth another try of the same target
	after time.Duration // the provider's requested wait; negative: none
	sick  bool          // counts toward the target's cooldown (5xx, timeout, transport)
	code  int           // HTTP status, 0 when there was none
}

func classify(err error) failure {
	var se *statusError
	if errors.As(err, &se) {
		f := failure{after: se.after, code: se.code}
		switch {
		case se.code == http.StatusRequestTimeout, se.code == http.StatusConflict, se.code == http.StatusTooManyRequests:
			f.retry = true
		case se.code >= 500:
			f.retry, f.sick = true, true
		}
		if se.should != 0 {
			f.retry = se.should > 0
		}
		return f
	}
	var re retryableError
	if errors.As(err, &re) {
		return failure{retry: true, sick: true, after: -1}
	}
	return failure{after: -1}
}

// retryAfter reads when a provider wants to be called again: the
// retry-after-ms and Retry-After headers, or, on a 429 that has neither,
// the latest reset time among its exhausted rate limits (OpenAI's
// x-ratelimit-* durations, Anthropic's anthropic-ratelimit-* times).
// It returns a negative duration when the answer says nothing.
func retryAfter(h http.Header, code int, now time.Time) time.Duration {
	if v := h.Get("retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
			return time.Duration(s * float64(time.Second))
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(t.Sub(now), 0)
		}
	}
	if code != http.StatusTooManyRequests {
		return -1
	}
	wait := time.Duration(-1)
	for _, kind := range [...]string{"requests", "tokens"} {
		if h.Get("x-ratelimit-remaining-"+kind) == "0" {
			if d, err := time.ParseDuration(h.Get("x-ratelimit-reset-" + kind)); err == nil {
				wait = max(wait, d)
			}
		}
	}
	for _, kind := range [...]string{"requests", "tokens", "input-tokens", "output-tokens"} {
		if h.Get("anthropic-ratelimit-"+kind+"-remaining") == "0" {
			if t, err := time.Parse(time.RFC3339, h.Get("anthropic-ratelimit-"+kind+"-reset")); err == nil {
				wait = max(wait, t.Sub(now), 0)
			}
		}
	}
	return wait
}

func shouldRetry(h http.Header) int {
	switch strings.ToLower(h.Get("x-should-retry")) {
	case "true":
		return 1
	case "false":
		return -1
	}
	return 0
}

// backoff is the wait before retry n (0, 1, ...) when the provider named
// none: base doubling up to 8 s, less up to a quarter at random so that
// tasks failed together do not come back together.
func backoff(base time.Duration, n int) time.Duration {
	d := base << min(n, 16)
	d = min(d, 8*time.Second)
	return d - time.Duration(rand.Int64N(int64(d)/4+1))
}

// cooldowns tracks, per credential on this node, consecutive failures
// that mean the provider is unwell, and the time until which it is
// skipped when the chain has somewhere else to go.
type cooldowns struct {
	after int           // consecutive failures that start a cooldown; 0: never
	span  time.Duration // how long it lasts
	mu    sync.Mutex
	m     map[string]*health
	// failing is len(m): while no credential has failed, as on every
	// healthy task, neither check takes the lock.
	failing atomic.Int32
}

type health struct {
	fails int
	until time.Time
}

// cooling reports whether key is in its cooldown at now.
func (c *cooldowns) cooling(key string, now time.Time) bool {
	if c.after <= 0 || c.failing.Load() == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.m[key]
	return h != nil && now.Before(h.until)
}

// record notes an attempt's outcome: success clears the count; a sick
// failure counts, and the after-th in a row (and every one after it,
// such as the probe that follows a cooldown) starts a cooldown.
func (c *cooldowns) record(key string, ok, sick bool, now time.Time) {
	if c.after <= 0 || (!ok && !sick) || (ok && c.failing.Load() == 0) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.m[key]
	if ok {
		if h != nil {
			delete(c.m, key)
			c.failing.Add(-1)
		}
		return
	}
	if h == nil {
		h = &health{}
		c.m[key] = h
		c.failing.Add(1)
	}
	h.fails++
	if h.fails >= c.after {
		h.until = now.Add(c.span)
	}
}
