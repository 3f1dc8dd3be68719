package config

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// setting describes one variable. The table below drives Load, Usage and
// Vars, so the documentation cannot drift from what is parsed.
type setting struct {
	env   string // environment variable
	flag  string // flag name without the dash; "" for secrets
	def   string // default as shown to people
	help  string // one-line meaning
	apply func(c *Config, v string) error
}

var settings = []setting{
	{"RIVERHUB_ADDR", "addr", ":8080", "HTTP listen address (host:port)",
		func(c *Config, v string) error { c.Addr = v; return nil }},
	{"REDIS_URL", "redis-url", "(embedded, development only)", "redis://, rediss://, redis-sentinel:// or redis-cluster:// URL",
		func(c *Config, v string) error { c.RedisURL = v; return nil }},
	{"RIVERHUB_ENV", "env", string(Development), "development or production (stricter checks)",
		func(c *Config, v string) error { c.Env = Env(v); return nil }},
	{"RIVERHUB_PUBLIC_URL", "public-url", "http://localhost:<port of addr>", "external base URL for callback_url and websocket_url; https in production",
		func(c *Config, v string) error { c.PublicURL = trimSlash(v); return nil }},
	{"RIVERHUB_KEY_PREFIX", "key-prefix", "riverhub", "prefix of every Redis key ([A-Za-z0-9_.:-], 1-64 chars)",
		func(c *Config, v string) error { c.KeyPrefix = v; return nil }},
	{"RIVERHUB_ADMIN_KEY", "", "(development: generated and printed once; production: none)", "admin API key, at least 16 chars",
		func(c *Config, v string) error { c.AdminKey = v; return nil }},
	{"RIVERHUB_TOKEN_SECRET", "", "(random per process in development)", "ws_token signing secret, at least 32 bytes; required in production",
		func(c *Config, v string) error { c.TokenSecret = v; return nil }},
	{"RIVERHUB_RETRY_SCHEDULE", "retry-schedule", "0s,5s,30s,2m,10m,30m,1h,2h", "webhook delay before each attempt (1-50 durations)",
		func(c *Config, v string) (err error) { c.RetrySchedule, err = parseSchedule(v); return err }},
	{"RIVERHUB_WEBHOOK_TIMEOUT", "webhook-timeout", "10s", "timeout of one webhook delivery attempt",
		durationField(func(c *Config) *time.Duration { return &c.WebhookTimeout })},
	{"RIVERHUB_CALLBACK_TIMEOUT", "callback-timeout", "5m", "how long a task waits for its callback",
		durationField(func(c *Config) *time.Duration { return &c.CallbackTimeout })},
	{"RIVERHUB_PLAYGROUND_CALLBACK_DELAY", "playground-callback-delay", "1.5s", "delay before the playground answers its callback",
		durationField(func(c *Config) *time.Duration { return &c.PlaygroundCallbackDelay })},
	{"OPENAI_API_KEY", "", "(none: sent without a key)", "OpenAI API key",
		func(c *Config, v string) error { c.OpenAIAPIKey = v; return nil }},
	{"OPENAI_BASE_URL", "openai-base-url", "https://api.openai.com/v1", "OpenAI-compatible API root",
		func(c *Config, v string) error { c.OpenAIBaseURL = trimSlash(v); return nil }},
	{"ANTHROPIC_API_KEY", "", "(none: sent without a key)", "Anthropic API key",
		func(c *Config, v string) error { c.AnthropicAPIKey = v; return nil }},
	{"ANTHROPIC_BASE_URL", "anthropic-base-url", "https://api.anthropic.com", "Anthropic API root",
		func(c *Config, v string) error { c.AnthropicBaseURL = trimSlash(v); return nil }},
	{"RIVERHUB_PROVIDER_TIMEOUT", "provider-timeout", "60s", "timeout of one model provider attempt",
		durationField(func(c *Config) *time.Duration { return &c.ProviderTimeout })},
	{"RIVERHUB_PROVIDER_RETRIES", "provider-retries", "3", "retries of a provider/model after a 408, 409, 429, 5xx, timeout or transport error, before the fallback",
		func(c *Config, v string) (err error) { c.ProviderRetries, err = parseInt(v); return err }},
	{"RIVERHUB_PROVIDER_RETRY_WAIT", "provider-retry-wait", "60s", "longest wait before one provider retry; a provider asking for longer (Retry-After) goes to the fallback",
		durationField(func(c *Config) *time.Duration { return &c.ProviderRetryWait })},
	{"RIVERHUB_PROVIDER_COOLDOWN_AFTER", "provider-cooldown-after", "5", "failures in a row (5xx, timeout, transport) after which a node skips a provider for the cooldown; 0: never",
		func(c *Config, v string) (err error) { c.ProviderCooldownAfter, err = parseInt(v); return err }},
	{"RIVERHUB_PROVIDER_COOLDOWN", "provider-cooldown", "30s", "how long a failing provider is skipped while its chain has a fallback",
		durationField(func(c *Config) *time.Duration { return &c.ProviderCooldown })},
	{"RIVERHUB_PROVIDER_LIMITS", "provider-limits", "(none)", "limits of each provider's credential, all nodes: openai:concurrency=20,rpm=300,tpm=90000;anthropic:rpm=50",
		func(c *Config, v string) (err error) { c.ProviderLimits, err = parseProviderLimits(v); return err }},
	{"RIVERHUB_SYNC_WAIT", "sync-wait", "30s", "longest a sync request waits in all for provider limits and retries before its fallback",
		durationField(func(c *Config) *time.Duration { return &c.SyncWait })},
	{"RIVERHUB_WORKERS", "workers", "256", "task workers on this node (1-100000)",
		func(c *Config, v string) (err error) { c.Workers, err = parseInt(v); return err }},
	{"RIVERHUB_MAX_QUEUE", "max-queue", "100000", "queued tasks above which submission answers 429",
		func(c *Config, v string) (err error) { c.MaxQueue, err = parseInt(v); return err }},
	{"RIVERHUB_PROJECT_MAX_QUEUE", "project-max-queue", "50000", "queued tasks of one project above which its submissions answer 429",
		func(c *Config, v string) (err error) { c.ProjectMaxQueue, err = parseInt(v); return err }},
	{"RIVERHUB_PARTITIONS", "partitions", "0", "parts of the task queue, delivery schedule and callback deadlines (each its own Cluster slot); 0: 16 on a Redis Cluster, else 1",
		func(c *Config, v string) (err error) { c.Partitions, err = parseInt(v); return err }},
	{"RIVERHUB_PROJECT_RATE", "project-rate", "1000", "tasks per second one project may submit (burst 2x); 0: no limit",
		func(c *Config, v string) (err error) { c.ProjectRate, err = parseInt(v); return err }},
	{"RIVERHUB_WEBHOOK_CONCURRENCY", "webhook-concurrency", "512", "webhook attempts one node runs at once",
		func(c *Config, v string) (err error) { c.WebhookConcurrency, err = parseInt(v); return err }},
	{"RIVERHUB_ENDPOINT_CONCURRENCY", "endpoint-concurrency", "64", "most attempts one node runs at once against one healthy endpoint",
		func(c *Config, v string) (err error) { c.EndpointConcurrency, err = parseInt(v); return err }},
	{"RIVERHUB_PROJECT_CONCURRENCY", "project-concurrency", "0", "fixed cap of one project's attempts on a node; 0: fair share only",
		func(c *Config, v string) (err error) { c.ProjectConcurrency, err = parseInt(v); return err }},
	{"RIVERHUB_BREAKER_THRESHOLD", "breaker-threshold", "5", "consecutive failed attempts that open an endpoint's circuit",
		func(c *Config, v string) (err error) { c.BreakerThreshold, err = parseInt(v); return err }},
	{"RIVERHUB_ENDPOINT_DISABLE_AFTER", "endpoint-disable-after", "120h", "disable an endpoint failing without a success this long; 0: never",
		durationField(func(c *Config) *time.Duration { return &c.EndpointDisableAfter })},
	{"RIVERHUB_REDIS_TIMEOUT", "redis-timeout", "2s", "how long an API request waits for Redis before answering 503 unavailable",
		durationField(func(c *Config) *time.Duration { return &c.RedisTimeout })},
	{"RIVERHUB_REDIS_WAIT_REPLICAS", "redis-wait-replicas", "0", "replicas that must have a submission's or callback's writes (Redis WAIT) before it is answered; 0: the master's",
		func(c *Config, v string) (err error) { c.RedisWaitReplicas, err = parseInt(v); return err }},
	{"RIVERHUB_REDIS_WAIT_TIMEOUT", "redis-wait-timeout", "100ms", "how long each WAIT of RIVERHUB_REDIS_WAIT_REPLICAS waits; a shortfall still answers, and is counted",
		durationField(func(c *Config) *time.Duration { return &c.RedisWaitTimeout })},
	{"RIVERHUB_TASK_LEASE", "task-lease", "30s", "how long a claimed task is hidden before it is reclaimed",
		durationField(func(c *Config) *time.Duration { return &c.TaskLease })},
	{"RIVERHUB_RETENTION", "retention", "168h", "TTL of channel records (7 days)",
		durationField(func(c *Config) *time.Duration { return &c.Retention })},
	{"RIVERHUB_HOT_WINDOW", "hot-window", "1h", "how long a settled task keeps its room history and its delivered webhooks' records before it is folded into a compressed document (at least four task leases; at most the retention)",
		durationField(func(c *Config) *time.Duration { return &c.HotWindow })},
	{"RIVERHUB_DLQ_RETENTION", "dlq-retention", "720h", "how long dead letters are kept (30 days)",
		durationField(func(c *Config) *time.Duration { return &c.DLQRetention })},
	{"RIVERHUB_ARCHIVE_URL", "", "(none: settled tasks stay in Redis, folded)", "PostgreSQL URL (postgres://…) of the archive that settled tasks move to after the hot window",
		func(c *Config, v string) error { c.ArchiveURL = v; return nil }},
	{"RIVERHUB_ARCHIVE_RETENTION", "archive-retention", "720h", "how long archived tasks are kept, from their creation (30 days)",
		durationField(func(c *Config) *time.Duration { return &c.ArchiveRetention })},
	{"RIVERHUB_MAX_BODY_BYTES", "max-body-bytes", "1048576", "request body limit in bytes (1 MiB)",
		func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			c.MaxBodyBytes = n
			return nil
		}},
	{"RIVERHUB_TOKEN_TTL", "token-ttl", "1h", "lifetime of a ws_token",
		durationField(func(c *Config) *time.Duration { return &c.TokenTTL })},
	{"RIVERHUB_WS_TOKEN_SINGLE_USE", "ws-token-single-use", "false", "each ws_token opens one socket; reconnects need a fresh token",
		func(c *Config, v string) (err error) { c.WSTokenSingleUse, err = parseBool(v); return err }},
	{"RIVERHUB_WS_MAX_CONNS", "ws-max-conns", "20000", "sockets one node holds; more are refused with 503",
		func(c *Config, v string) (err error) { c.WSMaxConns, err = parseInt(v); return err }},
	{"RIVERHUB_WS_MAX_CHANNELS", "ws-max-channels", "100", "channels one socket may join; more get too_many_channels",
		func(c *Config, v string) (err error) { c.WSMaxChannels, err = parseInt(v); return err }},
	{"RIVERHUB_WS_IDLE_TIMEOUT", "ws-idle-timeout", "60s", "a socket with no channel joined this long is closed (1000), heartbeats or not",
		durationField(func(c *Config) *time.Duration { return &c.WSIdleTimeout })},
	{"RIVERHUB_STREAM_WINDOW", "stream-window", "50ms", "a streamed answer's text goes into the room once per window (0: every piece at once)",
		durationField(func(c *Config) *time.Duration { return &c.StreamWindow })},
	{"RIVERHUB_STREAM_BYTES", "stream-bytes", "256", "or as soon as this many bytes of it are waiting (1-65536)",
		func(c *Config, v string) (err error) { c.StreamBytes, err = parseInt(v); return err }},
	{"RIVERHUB_SHUTDOWN_TIMEOUT", "shutdown-timeout", "15s", "how long shutdown waits for in-flight work",
		durationField(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{"RIVERHUB_LOG_LEVEL", "log-level", "info", "debug, info, warn or error",
		func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{"RIVERHUB_ALLOW_CIDRS", "allow-cidrs", "(none)", "private CIDRs production allows as webhook targets",
		func(c *Config, v string) (err error) { c.AllowCIDRs, err = parseCIDRs(v); return err }},
}

func durationField(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err // names the value: time: invalid duration "x"
		}
		*field(c) = d
		return nil
	}
}

// trimSlash drops trailing slashes from a base URL, since paths are
// appended to it, but leaves "https://" alone so the error names the
// missing host.
func trimSlash(v string) string {
	for strings.HasSuffix(v, "/") && !strings.HasSuffix(v, "://") {
		v = v[:len(v)-1]
	}
	return v
}

func parseInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", v)
	}
	return n, nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (want true or false)", v)
}

// Var documents one setting, for help output and the README table.
type Var struct {
	Env     string // environment variable, e.g. "RIVERHUB_WORKERS"
	Flag    string // flag with its dash, e.g. "-workers"; "" when the setting is a secret
	Default string // default as text; parenthesised when it is a description
	Help    string // one-line meaning
}

// Vars lists every setting in a stable order.
func Vars() []Var {
	out := make([]Var, len(settings))
	for i, s := range settings {
		out[i] = Var{Env: s.env, Default: s.def, Help: s.help}
		if s.flag != "" {
			out[i].Flag = "-" + s.flag
		}
	}
	return out
}

// Usage returns an aligned table of every environment variable with its
// flag, default and meaning.
func Usage() string {
	var b strings.Builder
	b.WriteString("Settings (a flag overrides its environment variable; secrets have no flag):\n\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "VARIABLE\tFLAG\tDEFAULT\tMEANING")
	for _, v := range Vars() {
		f := v.Flag
		if f == "" {
			f = "(none)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", v.Env, f, v.Default, v.Help)
	}
	w.Flush()
	return b.String()
}
