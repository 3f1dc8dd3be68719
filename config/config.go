package config

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Env is the deployment mode. It decides how strict validation is and, in
// other packages, whether private webhook targets are refused.
type Env string

// The deployment modes RIVERHUB_ENV accepts.
const (
	Development Env = "development"
	Production  Env = "production"
)

// Config is the server's complete configuration. Load builds it; tests may
// start from Defaults, edit fields and call Validate.
type Config struct {
	// Addr is the HTTP listen address (host:port).
	// RIVERHUB_ADDR, flag -addr, default ":8080".
	Addr string

	// RedisURL names the Redis to use: redis://, rediss://,
	// redis-sentinel:// or redis-cluster:// (see ParseRedisURL).
	// REDIS_URL, flag -redis-url, default "" which means an embedded
	// in-memory Redis; development only, because it loses everything on
	// restart and cannot be shared between nodes.
	RedisURL string

	// Env is the deployment mode.
	// RIVERHUB_ENV, flag -env, default "development"; "development" or
	// "production".
	Env Env

	// PublicURL is the externally reachable base URL the server puts in
	// callback_url and websocket_url; no trailing slash.
	// RIVERHUB_PUBLIC_URL, flag -public-url, default derived from Addr:
	// "http://localhost:<port>", or "http://<host>:<port>" when Addr names
	// a host other than 0.0.0.0 or ::. Must be https in production when set.
	PublicURL string

	// KeyPrefix starts every Redis key, so several deployments can share one
	// Redis. Braces are refused because they would turn part of the prefix
	// into a Redis Cluster hash tag and pin every key to one slot.
	// RIVERHUB_KEY_PREFIX, flag -key-prefix, default "riverhub";
	// 1-64 characters from [A-Za-z0-9_.:-].
	KeyPrefix string

	// AdminKey authorises the administrative API; empty disables it.
	// RIVERHUB_ADMIN_KEY, no flag (secret), default ""; at least 16
	// characters when set.
	AdminKey string

	// TokenSecret signs ws_tokens. Every node must share it, so in
	// production it is required; in development an empty value makes the
	// process generate a random one (tokens then die with the process).
	// RIVERHUB_TOKEN_SECRET, no flag (secret), default ""; at least 32
	// bytes when set.
	TokenSecret string

	// RetrySchedule is the delay before each webhook delivery attempt: entry
	// i is the wait before attempt i+1, so its length is the attempt limit.
	// The order is free so operators can shape it as they like.
	// RIVERHUB_RETRY_SCHEDULE, flag -retry-schedule, default
	// "0s,5s,30s,2m,10m,30m,1h,2h"; comma-separated Go durations, each
	// >= 0, 1 to 50 entries.
	RetrySchedule []time.Duration

	// WebhookTimeout bounds one webhook delivery attempt.
	// RIVERHUB_WEBHOOK_TIMEOUT, flag -webhook-timeout, default 10s; > 0.
	WebhookTimeout time.Duration

	// CallbackTimeout is how long a task waits for its callback before it
	// fails.
	// RIVERHUB_CALLBACK_TIMEOUT, flag -callback-timeout, default 5m; > 0.
	CallbackTimeout time.Duration

	// PlaygroundCallbackDelay is how long the playground waits before it
	// answers its own callback, so the asynchronous flow is visible.
	// RIVERHUB_PLAYGROUND_CALLBACK_DELAY, flag -playground-callback-delay,
	// default 1.5s; >= 0.
	PlaygroundCallbackDelay time.Duration

	// OpenAIAPIKey authenticates calls to the OpenAI-compatible provider;
	// empty disables that provider.
	// OPENAI_API_KEY, no flag (secret), default "".
	OpenAIAPIKey string

	// OpenAIBaseURL is the OpenAI-compatible API root (other compatible
	// servers can be used); no trailing slash.
	// OPENAI_BASE_URL, flag -openai-base-url, default
	// "https://api.openai.com/v1"; absolute http(s) URL.
	OpenAIBaseURL string

	// AnthropicAPIKey authenticates calls to the Anthropic API; empty
	// disables that provider.
	// ANTHROPIC_API_KEY, no flag (secret), default "".
	AnthropicAPIKey string

	// AnthropicBaseURL is the Anthropic API root; no trailing slash.
	// ANTHROPIC_BASE_URL, flag -anthropic-base-url, default
	// "https://api.anthropic.com"; absolute http(s) URL.
	AnthropicBaseURL string

	// ProviderTimeout bounds one attempt at a model provider.
	// RIVERHUB_PROVIDER_TIMEOUT, flag -provider-timeout, default 60s; > 0.
	ProviderTimeout time.Duration

	// ProviderRetries is how many times a provider/model is tried again
	// after a retryable failure (408, 409, 429, 5xx, timeout, transport
	// error) before the chain moves on to its fallback.
	// RIVERHUB_PROVIDER_RETRIES, flag -provider-retries, default 3; 0 to 10.
	ProviderRetries int

	// ProviderRetryWait is the longest wait before one retry: the
	// provider's Retry-After when it sent one, else a backoff from 500 ms
	// doubling to 8 s. A provider asking for longer is moved past.
	// RIVERHUB_PROVIDER_RETRY_WAIT, flag -provider-retry-wait, default 60s; > 0.
	ProviderRetryWait time.Duration

	// ProviderCooldownAfter is how many failures in a row (5xx, timeout,
	// transport error) make a node skip a provider for ProviderCooldown
	// while a chain has another target. 0 turns cooldowns off.
	// RIVERHUB_PROVIDER_COOLDOWN_AFTER, flag -provider-cooldown-after,
	// default 5; >= 0.
	ProviderCooldownAfter int

	// ProviderCooldown is how long a failing provider is skipped.
	// RIVERHUB_PROVIDER_COOLDOWN, flag -provider-cooldown, default 30s; > 0.
	ProviderCooldown time.Duration

	// ProviderLimits are the limits of each provider's credential
	// ("openai", "anthropic", "mock"), enforced across all nodes through
	// Redis; a provider absent is not limited.
	// RIVERHUB_PROVIDER_LIMITS, flag -provider-limits, default none;
	// "openai:concurrency=20,rpm=300,tpm=90000;anthropic:rpm=50".
	ProviderLimits map[string]ProviderLimit

	// SyncWait bounds the time a sync request (POST /v1/ai) waits in all
	// for provider limits and retry delays; a wait beyond it moves on to
	// the fallback.
	// RIVERHUB_SYNC_WAIT, flag -sync-wait, default 30s; > 0.
	SyncWait time.Duration

	// Workers is the number of task workers on this node.
	// RIVERHUB_WORKERS, flag -workers, default 256; 1 to 100000.
	Workers int

	// MaxQueue is the number of queued tasks above which submission answers
	// 429, so a stalled provider cannot grow Redis without bound.
	// RIVERHUB_MAX_QUEUE, flag -max-queue, default 100000 tasks; >= 1.
	MaxQueue int

	// ProjectMaxQueue is the number of queued tasks of one project above
	// which its submissions answer 429 queue_full, so one project's flood
	// cannot fill the deployment's queue.
	// RIVERHUB_PROJECT_MAX_QUEUE, flag -project-max-queue, default 50000
	// tasks; >= 1.
	ProjectMaxQueue int

	// Partitions is how many parts the task queue, the delivery schedule
	// and the callback-deadline set are split into, each on its own Redis
	// Cluster slot, so that a cluster's masters share their load. 0 picks:
	// 16 on a Redis Cluster, 1 otherwise (one Redis gains nothing from
	// parts). Every node of a deployment must use the same number.
	// RIVERHUB_PARTITIONS, flag -partitions, default 0 (auto); 0 to 256.
	Partitions int

	// ProjectRate is how many tasks per second one project may submit,
	// deployment-wide (all nodes share the budget in Redis), with a burst
	// of twice that; more answer 429 rate_limited with Retry-After. 0 turns
	// the limit off.
	// RIVERHUB_PROJECT_RATE, flag -project-rate, default 1000; >= 0.
	ProjectRate int

	// WebhookConcurrency is how many webhook attempts one node runs at once.
	// RIVERHUB_WEBHOOK_CONCURRENCY, flag -webhook-concurrency, default 512;
	// >= 1.
	WebhookConcurrency int

	// EndpointConcurrency is the most attempts one node runs at once
	// against one endpoint (a healthy one; a failing one gets fewer).
	// RIVERHUB_ENDPOINT_CONCURRENCY, flag -endpoint-concurrency, default
	// 64; >= 1.
	EndpointConcurrency int

	// ProjectConcurrency caps the webhook attempts one project runs at once
	// on a node. 0: no fixed cap, only the fair share (a project holds at
	// most its share of WebhookConcurrency while others wait, all of it
	// when none do).
	// RIVERHUB_PROJECT_CONCURRENCY, flag -project-concurrency, default 0;
	// >= 0.
	ProjectConcurrency int

	// BreakerThreshold is how many consecutive failed attempts open an
	// endpoint's circuit: its deliveries then wait without attempts while
	// one probe at a time tests it.
	// RIVERHUB_BREAKER_THRESHOLD, flag -breaker-threshold, default 5; >= 1.
	BreakerThreshold int

	// EndpointDisableAfter disables an endpoint whose attempts have failed
	// without a success for this long. 0 never disables.
	// RIVERHUB_ENDPOINT_DISABLE_AFTER, flag -endpoint-disable-after,
	// default 120h (5 days); >= 0.
	EndpointDisableAfter time.Duration

	// RedisTimeout bounds each Redis command an API request runs (retries
	// included): when Redis does not answer within it, the request answers
	// 503 unavailable with Retry-After instead of hanging.
	// RIVERHUB_REDIS_TIMEOUT, flag -redis-timeout, default 2s; >= 10ms.
	RedisTimeout time.Duration

	// RedisWaitReplicas is how many replicas must have the writes of a
	// submission (POST /v1/ai/async, /v1/ai) or of a callback before it
	// is answered: each of its round trips of writes ends with Redis WAIT
	// on the connection that made them. 0 answers as soon as the master
	// has them (a failover in the next moment may lose them). When fewer
	// replicas confirm within RedisWaitTimeout, the answer is the same
	// (the master has the writes), and the shortfall is counted in
	// riverhub_redis_wait_shortfalls_total and logged.
	// RIVERHUB_REDIS_WAIT_REPLICAS, flag -redis-wait-replicas, default 0;
	// 0 to 16, and > 0 only with a REDIS_URL.
	RedisWaitReplicas int

	// RedisWaitTimeout bounds each WAIT of RedisWaitReplicas.
	// RIVERHUB_REDIS_WAIT_TIMEOUT, flag -redis-wait-timeout, default
	// 100ms; at least 1ms and less than RedisTimeout.
	RedisWaitTimeout time.Duration

	// TaskLease is how long a claimed task stays invisible to other nodes
	// before it is reclaimed (its worker is presumed dead). The floor is low
	// so tests can exercise reclaiming quickly.
	// RIVERHUB_TASK_LEASE, flag -task-lease, default 30s; >= 100ms.
	TaskLease time.Duration

	// Retention is the TTL of channel records (tasks, messages, results).
	// RIVERHUB_RETENTION, flag -retention, default 168h (7 days); >= 1m.
	Retention time.Duration

	// HotWindow is how long a settled task keeps what only a late join
	// or a redone side effect could need: its room's history (a socket
	// joining later is sent the final message rebuilt from the record) and
	// its delivered or cancelled webhook deliveries' records (their
	// attempts stay on the channel's timeline); after it the channel is
	// folded into one compressed document (docs/layout.md). At least four
	// task leases; one longer than the retention is the retention.
	// RIVERHUB_HOT_WINDOW, flag -hot-window, default 1h.
	HotWindow time.Duration

	// ArchiveURL, when set, is the PostgreSQL database (postgres://…) that
	// settled tasks move to once their hot window has passed, out of Redis
	// (package archive); its migrations are applied at start. It may hold a
	// password: no flag.
	// RIVERHUB_ARCHIVE_URL, default none (settled tasks stay in Redis, folded).
	ArchiveURL string

	// ArchiveRetention is how long the archive keeps a task, from its
	// creation.
	// RIVERHUB_ARCHIVE_RETENTION, flag -archive-retention, default 720h
	// (30 days); >= 1m.
	ArchiveRetention time.Duration

	// DLQRetention is how long dead-lettered deliveries are kept for
	// inspection and replay.
	// RIVERHUB_DLQ_RETENTION, flag -dlq-retention, default 720h (30 days);
	// >= 1m.
	DLQRetention time.Duration

	// MaxBodyBytes limits request bodies.
	// RIVERHUB_MAX_BODY_BYTES, flag -max-body-bytes, default 1048576 bytes
	// (1 MiB); >= 1.
	MaxBodyBytes int64

	// TokenTTL is the lifetime of a ws_token.
	// RIVERHUB_TOKEN_TTL, flag -token-ttl, default 1h; > 0.
	TokenTTL time.Duration

	// WSTokenSingleUse makes each ws_token open one socket: a second
	// connection with it, on any node, is refused with 403. A client whose
	// socket drops then needs a fresh token (POST /api/v1/ai/reconnect)
	// before it can reconnect; the phoenix client alone retries with its
	// first token. Off, a token opens sockets until it expires.
	// RIVERHUB_WS_TOKEN_SINGLE_USE, flag -ws-token-single-use, default
	// false; true or false.
	WSTokenSingleUse bool

	// WSMaxConns is how many sockets one node holds; more are refused
	// with 503 (RIVERHUB_WS_MAX_CONNS, flag -ws-max-conns, default 20000).
	WSMaxConns int
	// WSMaxChannels is how many channels one socket may join; more get the
	// join error too_many_channels (RIVERHUB_WS_MAX_CHANNELS, flag
	// -ws-max-channels, default 100).
	WSMaxChannels int
	// WSIdleTimeout closes a socket that has had no channel joined for this
	// long (since it opened, or since its last join ended), with 1000,
	// whatever heartbeats it sends: a browser SDK that drops its socket
	// after a channel's final message would otherwise hold it open.
	// RIVERHUB_WS_IDLE_TIMEOUT, flag -ws-idle-timeout, default 60s; >= 1s.
	WSIdleTimeout time.Duration

	// StreamWindow and StreamBytes coalesce a streamed answer (a task with
	// stream): its text goes into the room as one chunk event per window,
	// or as soon as StreamBytes are waiting. RIVERHUB_STREAM_WINDOW, flag
	// -stream-window, default 50ms (0: every piece as it comes);
	// RIVERHUB_STREAM_BYTES, flag -stream-bytes, default 256 (1-65536).
	StreamWindow time.Duration
	StreamBytes  int

	// ShutdownTimeout is how long a stopping server waits for in-flight
	// requests and tasks; 0 stops at once.
	// RIVERHUB_SHUTDOWN_TIMEOUT, flag -shutdown-timeout, default 15s; >= 0.
	ShutdownTimeout time.Duration

	// LogLevel is the minimum level logged.
	// RIVERHUB_LOG_LEVEL, flag -log-level, default "info"; debug, info, warn
	// or error.
	LogLevel string

	// AllowCIDRs are private networks that production mode nevertheless
	// accepts as webhook targets, for operators with internal receivers.
	// Stored masked (10.1.2.3/8 becomes 10.0.0.0/8); a bare address means
	// that one host.
	// RIVERHUB_ALLOW_CIDRS, flag -allow-cidrs, default none; comma-separated
	// CIDRs.
	AllowCIDRs []netip.Prefix
}

// Defaults returns a Config with every default filled in.
func Defaults() *Config {
	c := &Config{
		Addr:                    ":8080",
		Env:                     Development,
		KeyPrefix:               "riverhub",
		RetrySchedule:           defaultRetrySchedule(),
		WebhookTimeout:          10 * time.Second,
		CallbackTimeout:         5 * time.Minute,
		PlaygroundCallbackDelay: 1500 * time.Millisecond,
		OpenAIBaseURL:           "https://api.openai.com/v1",
		AnthropicBaseURL:        "https://api.anthropic.com",
		ProviderTimeout:         60 * time.Second,
		ProviderRetries:         3,
		ProviderRetryWait:       time.Minute,
		ProviderCooldownAfter:   5,
		ProviderCooldown:        30 * time.Second,
		SyncWait:                30 * time.Second,
		Workers:                 256,
		MaxQueue:                100000,
		ProjectMaxQueue:         50000,
		ProjectRate:             1000,
		WebhookConcurrency:      512,
		EndpointConcurrency:     64,
		BreakerThreshold:        5,
		EndpointDisableAfter:    5 * 24 * time.Hour,
		WSMaxConns:              20000,
		WSMaxChannels:           100,
		WSIdleTimeout:           time.Minute,
		StreamWindow:            50 * time.Millisecond,
		StreamBytes:             256,
		TaskLease:               30 * time.Second,
		RedisTimeout:            2 * time.Second,
		RedisWaitTimeout:        100 * time.Millisecond,
		Retention:               7 * 24 * time.Hour,
		HotWindow:               time.Hour,
		DLQRetention:            30 * 24 * time.Hour,
		ArchiveRetention:        30 * 24 * time.Hour,
		MaxBodyBytes:            1 << 20,
		TokenTTL:                time.Hour,
		ShutdownTimeout:         15 * time.Second,
		LogLevel:                "info",
	}
	c.PublicURL = derivePublicURL(c.Addr)
	return c
}

func defaultRetrySchedule() []time.Duration {
	return []time.Duration{
		0,
		5 * time.Second,
		30 * time.Second,
		2 * time.Minute,
		10 * time.Minute,
		30 * time.Minute,
		time.Hour,
		2 * time.Hour,
	}
}

// Production reports whether the server runs in production mode.
func (c *Config) Production() bool { return c.Env == Production }

// Load reads the configuration from args (flags, without the program name)
// and getenv (os.Getenv when nil; tests pass a map lookup so they need not
// touch the process environment), then validates it. Flags override
// variables; empty variables count as unset; unknown variables are ignored.
//
// -h and -help return flag.ErrHelp so the caller can print Usage.
func Load(args []string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}

	fs := flag.NewFlagSet("riverhub", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	flagVals := make(map[string]*stringFlag)
	for _, s := range settings {
		if s.flag != "" {
			v := new(stringFlag)
			flagVals[s.flag] = v
			fs.Var(v, s.flag, s.help)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err // flag.ErrHelp unchanged, the rest already one line
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are flags or environment variables)", fs.Arg(0))
	}

	c := Defaults()
	// Derived after parsing, because it follows the final Addr.
	c.PublicURL = ""
	for _, s := range settings {
		val, src := getenv(s.env), s.env
		if f, ok := flagVals[s.flag]; ok && f.set {
			// A flag given explicitly empty (-redis-url=) does mean empty.
			val, src = f.val, "-"+s.flag
		} else if strings.TrimSpace(val) == "" {
			continue
		}
		if err := s.apply(c, strings.TrimSpace(val)); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
	}
	if c.PublicURL == "" {
		c.PublicURL = derivePublicURL(c.Addr)
	}

	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// stringFlag records a flag's raw text; conversion happens later, with the
// same code that converts the environment variable.
type stringFlag struct {
	val string
	set bool
}

func (f *stringFlag) String() string { return f.val }

func (f *stringFlag) Set(s string) error {
	f.val, f.set = s, true
	return nil
}

// derivePublicURL turns a listen address into the URL a local client would
// use: wildcard hosts become localhost, a named host is kept. It returns ""
// for an address it cannot split; Validate reports that address.
func derivePublicURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return ""
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
