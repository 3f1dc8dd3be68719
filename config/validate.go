package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Minimum lengths of secrets: short keys fall to guessing, and an HMAC key
// shorter than its 32-byte hash output weakens it.
const (
	minAdminKeyLen    = 16
	minTokenSecretLen = 32
	maxKeyPrefixLen   = 64
	maxWorkers        = 100000
	// MaxPartitions bounds RIVERHUB_PARTITIONS.
	MaxPartitions = 256
	// maxProviderRetries: beyond it a task mostly waits on a provider
	// that will not answer, which the fallback chain is for.
	maxProviderRetries = 10
	// maxWaitReplicas: more replicas than any deployment runs per master.
	maxWaitReplicas = 16
)

// Validate checks every field and returns the first problem found, as one
// line naming the variable. Load calls it after parsing; tests may call it
// after editing a Config.
func (c *Config) Validate() error {
	if c.Env != Development && c.Env != Production {
		return fmt.Errorf("RIVERHUB_ENV: unknown value %q (want %s or %s)", c.Env, Development, Production)
	}
	if err := validateAddr(c.Addr); err != nil {
		return fmt.Errorf("RIVERHUB_ADDR: %w", err)
	}
	if err := c.validatePublicURL(); err != nil {
		return fmt.Errorf("RIVERHUB_PUBLIC_URL: %w", err)
	}

	if c.RedisURL == "" {
		if c.Production() {
			return errors.New("REDIS_URL: required in production (the embedded Redis keeps nothing across restarts)")
		}
	} else if _, err := ParseRedisURL(c.RedisURL); err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}

	if c.ArchiveURL != "" && !strings.HasPrefix(c.ArchiveURL, "postgres://") && !strings.HasPrefix(c.ArchiveURL, "postgresql://") {
		return errors.New("RIVERHUB_ARCHIVE_URL: want a postgres:// URL") // not echoed: it may hold a password
	}

	if err := validateKeyPrefix(c.KeyPrefix); err != nil {
		return fmt.Errorf("RIVERHUB_KEY_PREFIX: %w", err)
	}
	if c.AdminKey != "" && len(c.AdminKey) < minAdminKeyLen {
		return fmt.Errorf("RIVERHUB_ADMIN_KEY: too short (%d characters, want at least %d)", len(c.AdminKey), minAdminKeyLen)
	}
	switch {
	case c.TokenSecret == "" && c.Production():
		return fmt.Errorf("RIVERHUB_TOKEN_SECRET: required in production (at least %d bytes, shared by every node)", minTokenSecretLen)
	case c.TokenSecret != "" && len(c.TokenSecret) < minTokenSecretLen:
		return fmt.Errorf("RIVERHUB_TOKEN_SECRET: too short (%d bytes, want at least %d)", len(c.TokenSecret), minTokenSecretLen)
	}

	if n := len(c.RetrySchedule); n == 0 || n > maxScheduleEntries {
		return fmt.Errorf("RIVERHUB_RETRY_SCHEDULE: %d entries (want 1 to %d)", n, maxScheduleEntries)
	}
	for i, d := range c.RetrySchedule {
		if d < 0 {
			return fmt.Errorf("RIVERHUB_RETRY_SCHEDULE: entry %d %q: negative", i+1, d)
		}
	}

	for _, r := range []struct {
		name string
		d    time.Duration
		min  time.Duration
		zero bool // whether 0 is allowed (min is then 0)
	}{
		{"RIVERHUB_WEBHOOK_TIMEOUT", c.WebhookTimeout, 0, false},
		{"RIVERHUB_CALLBACK_TIMEOUT", c.CallbackTimeout, 0, false},
		{"RIVERHUB_PLAYGROUND_CALLBACK_DELAY", c.PlaygroundCallbackDelay, 0, true},
		{"RIVERHUB_PROVIDER_TIMEOUT", c.ProviderTimeout, 0, false},
		{"RIVERHUB_PROVIDER_RETRY_WAIT", c.ProviderRetryWait, 0, false},
		{"RIVERHUB_PROVIDER_COOLDOWN", c.ProviderCooldown, 0, false},
		{"RIVERHUB_SYNC_WAIT", c.SyncWait, 0, false},
		{"RIVERHUB_TASK_LEASE", c.TaskLease, 100 * time.Millisecond, false},
		{"RIVERHUB_REDIS_TIMEOUT", c.RedisTimeout, 10 * time.Millisecond, false},
		{"RIVERHUB_RETENTION", c.Retention, time.Minute, false},
		{"RIVERHUB_DLQ_RETENTION", c.DLQRetention, time.Minute, false},
		{"RIVERHUB_ARCHIVE_RETENTION", c.ArchiveRetention, time.Minute, false},
		// A completion redone after a lost lease release comes a lease (and
		// a reclaim) later, and must still find its deliveries' records.
		{"RIVERHUB_HOT_WINDOW", c.HotWindow, 4 * c.TaskLease, false},
		{"RIVERHUB_TOKEN_TTL", c.TokenTTL, 0, false},
		{"RIVERHUB_WS_IDLE_TIMEOUT", c.WSIdleTimeout, time.Second, false},
		{"RIVERHUB_STREAM_WINDOW", c.StreamWindow, 0, true},
		{"RIVERHUB_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 0, true},
	} {
		switch {
		case r.zero && r.d < 0:
			return fmt.Errorf("%s: must not be negative, got %v", r.name, r.d)
		case !r.zero && r.min == 0 && r.d <= 0:
			return fmt.Errorf("%s: must be greater than 0, got %v", r.name, r.d)
		case r.d < r.min:
			return fmt.Errorf("%s: must be at least %v, got %v", r.name, r.min, r.d)
		}
	}

	if err := validateBaseURL(c.OpenAIBaseURL); err != nil {
		return fmt.Errorf("OPENAI_BASE_URL: %w", err)
	}
	if err := validateBaseURL(c.AnthropicBaseURL); err != nil {
		return fmt.Errorf("ANTHROPIC_BASE_URL: %w", err)
	}

	if c.Workers < 1 || c.Workers > maxWorkers {
		return fmt.Errorf("RIVERHUB_WORKERS: must be between 1 and %d, got %d", maxWorkers, c.Workers)
	}
	if c.Partitions < 0 || c.Partitions > MaxPartitions {
		return fmt.Errorf("RIVERHUB_PARTITIONS: must be between 0 (auto) and %d, got %d", MaxPartitions, c.Partitions)
	}
	if c.MaxQueue < 1 {
		return fmt.Errorf("RIVERHUB_MAX_QUEUE: must be at least 1, got %d", c.MaxQueue)
	}
	for _, r := range []struct {
		name   string
		n, min int
	}{
		{"RIVERHUB_PROJECT_MAX_QUEUE", c.ProjectMaxQueue, 1},
		{"RIVERHUB_PROJECT_RATE", c.ProjectRate, 0},
		{"RIVERHUB_WEBHOOK_CONCURRENCY", c.WebhookConcurrency, 1},
		{"RIVERHUB_ENDPOINT_CONCURRENCY", c.EndpointConcurrency, 1},
		{"RIVERHUB_PROJECT_CONCURRENCY", c.ProjectConcurrency, 0},
		{"RIVERHUB_BREAKER_THRESHOLD", c.BreakerThreshold, 1},
		{"RIVERHUB_PROVIDER_RETRIES", c.ProviderRetries, 0},
		{"RIVERHUB_PROVIDER_COOLDOWN_AFTER", c.ProviderCooldownAfter, 0},
	} {
		if r.n < r.min {
			return fmt.Errorf("%s: must be at least %d, got %d", r.name, r.min, r.n)
		}
	}
	if c.StreamBytes < 1 || c.StreamBytes > 65536 {
		return fmt.Errorf("RIVERHUB_STREAM_BYTES: must be between 1 and 65536, got %d", c.StreamBytes)
	}
	switch {
	case c.RedisWaitReplicas < 0 || c.RedisWaitReplicas > maxWaitReplicas:
		return fmt.Errorf("RIVERHUB_REDIS_WAIT_REPLICAS: must be between 0 and %d, got %d", maxWaitReplicas, c.RedisWaitReplicas)
	case c.RedisWaitReplicas > 0 && c.RedisURL == "":
		return errors.New("RIVERHUB_REDIS_WAIT_REPLICAS: needs REDIS_URL (the embedded Redis has no replicas)")
	case c.RedisWaitReplicas == 0:
	case c.RedisWaitTimeout < time.Millisecond:
		// WAIT with 0 ms would block for ever.
		return fmt.Errorf("RIVERHUB_REDIS_WAIT_TIMEOUT: must be at least 1ms, got %v", c.RedisWaitTimeout)
	case c.RedisWaitTimeout >= c.RedisTimeout:
		// The request's bound would cut the WAIT and answer 503.
		return fmt.Errorf("RIVERHUB_REDIS_WAIT_TIMEOUT: must be less than RIVERHUB_REDIS_TIMEOUT (%v), got %v", c.RedisTimeout, c.RedisWaitTimeout)
	}
	if c.ProviderRetries > maxProviderRetries {
		return fmt.Errorf("RIVERHUB_PROVIDER_RETRIES: must be at most %d, got %d", maxProviderRetries, c.ProviderRetries)
	}
	if c.EndpointDisableAfter < 0 {
		return fmt.Errorf("RIVERHUB_ENDPOINT_DISABLE_AFTER: must not be negative, got %v", c.EndpointDisableAfter)
	}
	if c.WSMaxConns < 1 {
		return fmt.Errorf("RIVERHUB_WS_MAX_CONNS: must be at least 1, got %d", c.WSMaxConns)
	}
	if c.WSMaxChannels < 1 {
		return fmt.Errorf("RIVERHUB_WS_MAX_CHANNELS: must be at least 1, got %d", c.WSMaxChannels)
	}
	if c.MaxBodyBytes < 1 {
		return fmt.Errorf("RIVERHUB_MAX_BODY_BYTES: must be at least 1, got %d", c.MaxBodyBytes)
	}

	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("RIVERHUB_LOG_LEVEL: unknown level %q (want debug, info, warn or error)", c.LogLevel)
	}

	for i, p := range c.AllowCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("RIVERHUB_ALLOW_CIDRS: entry %d is not a valid prefix", i+1)
		}
	}
	return nil
}

func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	// Port 0 (any free port) is allowed for tests; they must then set
	// PublicURL themselves.
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || port[0] == '+' {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// validatePublicURL requires an absolute http(s) URL without query,
// fragment or trailing slash, since other URLs are built by appending paths.
// In production an explicit URL must be https because clients receive
// tokens in it; the value derived from Addr is exempt, as it only ever
// names this machine.
func (c *Config) validatePublicURL() error {
	if c.PublicURL == "" {
		return errors.New("empty (leave the variable unset to derive it from RIVERHUB_ADDR)")
	}
	u, err := checkHTTPURL(c.PublicURL)
	if err != nil {
		return err
	}
	if u.RawQuery != "" || u.ForceQuery {
		return fmt.Errorf("%q: must not have a query", c.PublicURL)
	}
	if strings.HasSuffix(c.PublicURL, "/") {
		return fmt.Errorf("%q: must not end with '/'", c.PublicURL)
	}
	if c.Production() && u.Scheme != "https" {
		// A derived http://localhost URL would hand clients callback and
		// socket URLs that only work on the server itself.
		return fmt.Errorf("%q: must be set to the public https URL in production", c.PublicURL)
	}
	return nil
}

func validateBaseURL(s string) error {
	_, err := checkHTTPURL(s)
	return err
}

// checkHTTPURL parses s and requires an absolute http or https URL with a
// host and no user info or fragment.
func checkHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	if u.User != nil {
		// Credentials in a URL end up in logs; refuse, and do not echo them.
		return nil, errors.New("must not contain user info (credentials)")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: want an absolute http:// or https:// URL", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q: missing host", s)
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return nil, fmt.Errorf("%q: must not have a fragment", s)
	}
	return u, nil
}

func validateKeyPrefix(p string) error {
	if p == "" || len(p) > maxKeyPrefixLen {
		return fmt.Errorf("%q: want 1 to %d characters", p, maxKeyPrefixLen)
	}
	for _, r := range p {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case r == '_', r == '.', r == ':', r == '-':
		case r == '{', r == '}':
			return fmt.Errorf("%q: braces would make a Redis Cluster hash tag", p)
		default:
			return fmt.Errorf("%q: character %q not allowed (want A-Z a-z 0-9 _ . : -)", p, r)
		}
	}
	return nil
}
