package config

import (
	"errors"
	"flag"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// envOf returns a getenv over m, so tests never touch the process
// environment and can run in parallel.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

const secret32 = "0123456789abcdef0123456789abcdef"

// prodEnv is the smallest environment production accepts.
func prodEnv() map[string]string {
	return map[string]string{
		"RIVERHUB_ENV":          "production",
		"REDIS_URL":             "redis://redis:6379/0",
		"RIVERHUB_TOKEN_SECRET": secret32,
		"RIVERHUB_PUBLIC_URL":   "https://hub.example.com",
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	got, err := Load(nil, envOf(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(got, Defaults()) {
		t.Fatalf("Load with empty env = %+v, want Defaults() %+v", got, Defaults())
	}
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("Defaults().Validate() = %v", err)
	}

	d := Defaults()
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"Addr", d.Addr, ":8080"},
		{"RedisURL", d.RedisURL, ""},
		{"Env", d.Env, Development},
		{"Production", d.Production(), false},
		{"PublicURL", d.PublicURL, "http://localhost:8080"},
		{"KeyPrefix", d.KeyPrefix, "riverhub"},
		{"AdminKey", d.AdminKey, ""},
		{"TokenSecret", d.TokenSecret, ""},
		{"RetrySchedule", d.RetrySchedule, []time.Duration{0, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour}},
		{"WebhookTimeout", d.WebhookTimeout, 10 * time.Second},
		{"CallbackTimeout", d.CallbackTimeout, 5 * time.Minute},
		{"PlaygroundCallbackDelay", d.PlaygroundCallbackDelay, 1500 * time.Millisecond},
		{"OpenAIAPIKey", d.OpenAIAPIKey, ""},
		{"OpenAIBaseURL", d.OpenAIBaseURL, "https://api.openai.com/v1"},
		{"AnthropicAPIKey", d.AnthropicAPIKey, ""},
		{"AnthropicBaseURL", d.AnthropicBaseURL, "https://api.anthropic.com"},
		{"ProviderTimeout", d.ProviderTimeout, 60 * time.Second},
		{"Workers", d.Workers, 256},
		{"MaxQueue", d.MaxQueue, 100000},
		{"TaskLease", d.TaskLease, 30 * time.Second},
		{"RedisTimeout", d.RedisTimeout, 2 * time.Second},
		{"RedisWaitReplicas", d.RedisWaitReplicas, 0},
		{"RedisWaitTimeout", d.RedisWaitTimeout, 100 * time.Millisecond},
		{"Retention", d.Retention, 168 * time.Hour},
		{"DLQRetention", d.DLQRetention, 720 * time.Hour},
		{"MaxBodyBytes", d.MaxBodyBytes, int64(1048576)},
		{"TokenTTL", d.TokenTTL, time.Hour},
		{"WSTokenSingleUse", d.WSTokenSingleUse, false},
		{"WSMaxConns", d.WSMaxConns, 20000},
		{"WSMaxChannels", d.WSMaxChannels, 100},
		{"WSIdleTimeout", d.WSIdleTimeout, 60 * time.Second},
		{"ShutdownTimeout", d.ShutdownTimeout, 15 * time.Second},
		{"LogLevel", d.LogLevel, "info"},
		{"AllowCIDRs", d.AllowCIDRs, []netip.Prefix(nil)},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("Defaults().%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
}

// The defaults shown by Usage must be the ones Defaults uses: setting each
// variable to its documented default must change nothing.
func TestDocumentedDefaultsMatch(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, v := range Vars() {
		if v.Default == "" || strings.ContainsAny(v.Default, "(<") {
			continue // a description, not a value
		}
		checked++
		got, err := Load(nil, envOf(map[string]string{v.Env: v.Default}))
		if err != nil {
			t.Errorf("%s=%q: %v", v.Env, v.Default, err)
			continue
		}
		if !reflect.DeepEqual(got, Defaults()) {
			t.Errorf("%s=%q (documented default) gives %+v, want Defaults()", v.Env, v.Default, got)
		}
	}
	if checked < 15 {
		t.Fatalf("only %d documented defaults checked", checked)
	}
}

func TestLoadEachVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want func(c *Config) // edits Defaults() into the expected Config
	}{
		{"addr", map[string]string{"RIVERHUB_ADDR": "127.0.0.1:9000"}, func(c *Config) {
			c.Addr, c.PublicURL = "127.0.0.1:9000", "http://127.0.0.1:9000"
		}},
		{"redis url", map[string]string{"REDIS_URL": "rediss://:pw@cache:6380/2"}, func(c *Config) {
			c.RedisURL = "rediss://:pw@cache:6380/2"
		}},
		{"env production", prodEnv(), func(c *Config) {
			c.Env, c.RedisURL, c.TokenSecret, c.PublicURL = Production, "redis://redis:6379/0", secret32, "https://hub.example.com"
		}},
		{"env development explicit", map[string]string{"RIVERHUB_ENV": "development"}, func(c *Config) {}},
		{"public url trailing slash trimmed", map[string]string{"RIVERHUB_PUBLIC_URL": "https://hub.example.com/base/"}, func(c *Config) {
			c.PublicURL = "https://hub.example.com/base"
		}},
		{"public url http allowed in development", map[string]string{"RIVERHUB_PUBLIC_URL": "http://10.0.0.5:8080"}, func(c *Config) {
			c.PublicURL = "http://10.0.0.5:8080"
		}},
		{"key prefix", map[string]string{"RIVERHUB_KEY_PREFIX": "prod-eu:1_a.b"}, func(c *Config) { c.KeyPrefix = "prod-eu:1_a.b" }},
		{"admin key", map[string]string{"RIVERHUB_ADMIN_KEY": "0123456789abcdef"}, func(c *Config) { c.AdminKey = "0123456789abcdef" }},
		{"token secret", map[string]string{"RIVERHUB_TOKEN_SECRET": secret32}, func(c *Config) { c.TokenSecret = secret32 }},
		{"retry schedule with spaces", map[string]string{"RIVERHUB_RETRY_SCHEDULE": " 1s , 500ms,1h30m "}, func(c *Config) {
			c.RetrySchedule = []time.Duration{time.Second, 500 * time.Millisecond, 90 * time.Minute}
		}},
		{"retry schedule single", map[string]string{"RIVERHUB_RETRY_SCHEDULE": "0s"}, func(c *Config) { c.RetrySchedule = []time.Duration{0} }},
		{"retry schedule 50 entries", map[string]string{"RIVERHUB_RETRY_SCHEDULE": strings.Repeat("1s,", 49) + "1s"}, func(c *Config) {
			c.RetrySchedule = make([]time.Duration, 50)
			for i := range c.RetrySchedule {
				c.RetrySchedule[i] = time.Second
			}
		}},
		{"webhook timeout", map[string]string{"RIVERHUB_WEBHOOK_TIMEOUT": "3s"}, func(c *Config) { c.WebhookTimeout = 3 * time.Second }},
		{"callback timeout", map[string]string{"RIVERHUB_CALLBACK_TIMEOUT": "90s"}, func(c *Config) { c.CallbackTimeout = 90 * time.Second }},
		{"playground delay zero", map[string]string{"RIVERHUB_PLAYGROUND_CALLBACK_DELAY": "0s"}, func(c *Config) { c.PlaygroundCallbackDelay = 0 }},
		{"openai key", map[string]string{"OPENAI_API_KEY": "sk-test"}, func(c *Config) { c.OpenAIAPIKey = "sk-test" }},
		{"openai base url", map[string]string{"OPENAI_BASE_URL": "http://localhost:11434/v1/"}, func(c *Config) { c.OpenAIBaseURL = "http://localhost:11434/v1" }},
		{"anthropic key", map[string]string{"ANTHROPIC_API_KEY": "ak-test"}, func(c *Config) { c.AnthropicAPIKey = "ak-test" }},
		{"anthropic base url", map[string]string{"ANTHROPIC_BASE_URL": "https://proxy.internal"}, func(c *Config) { c.AnthropicBaseURL = "https://proxy.internal" }},
		{"provider timeout", map[string]string{"RIVERHUB_PROVIDER_TIMEOUT": "2m"}, func(c *Config) { c.ProviderTimeout = 2 * time.Minute }},
		{"workers", map[string]string{"RIVERHUB_WORKERS": "8"}, func(c *Config) { c.Workers = 8 }},
		{"provider retries off", map[string]string{"RIVERHUB_PROVIDER_RETRIES": "0"}, func(c *Config) { c.ProviderRetries = 0 }},
		{"provider retry wait", map[string]string{"RIVERHUB_PROVIDER_RETRY_WAIT": "5m"}, func(c *Config) { c.ProviderRetryWait = 5 * time.Minute }},
		{"provider cooldown", map[string]string{"RIVERHUB_PROVIDER_COOLDOWN_AFTER": "2", "RIVERHUB_PROVIDER_COOLDOWN": "10s"}, func(c *Config) {
			c.ProviderCooldownAfter, c.ProviderCooldown = 2, 10*time.Second
		}},
		{"provider limits", map[string]string{"RIVERHUB_PROVIDER_LIMITS": " openai:concurrency=20, rpm=300 ,tpm=90000; anthropic:rpm=50;"}, func(c *Config) {
			c.ProviderLimits = map[string]ProviderLimit{"openai": {Concurrency: 20, RPM: 300, TPM: 90000}, "anthropic": {RPM: 50}}
		}},
		{"sync wait", map[string]string{"RIVERHUB_SYNC_WAIT": "2m"}, func(c *Config) { c.SyncWait = 2 * time.Minute }},
		{"workers max", map[string]string{"RIVERHUB_WORKERS": "100000"}, func(c *Config) { c.Workers = 100000 }},
		{"max queue", map[string]string{"RIVERHUB_MAX_QUEUE": "5"}, func(c *Config) { c.MaxQueue = 5 }},
		{"partitions", map[string]string{"RIVERHUB_PARTITIONS": "16"}, func(c *Config) { c.Partitions = 16 }},
		{"task lease minimum", map[string]string{"RIVERHUB_TASK_LEASE": "100ms"}, func(c *Config) { c.TaskLease = 100 * time.Millisecond }},
		{"retention", map[string]string{"RIVERHUB_RETENTION": "1m"}, func(c *Config) { c.Retention = time.Minute }},
		{"hot window", map[string]string{"RIVERHUB_HOT_WINDOW": "5m"}, func(c *Config) { c.HotWindow = 5 * time.Minute }},
		{"archive", map[string]string{"RIVERHUB_ARCHIVE_URL": "postgres://u:p@db/riverhub", "RIVERHUB_ARCHIVE_RETENTION": "240h"},
			func(c *Config) { c.ArchiveURL, c.ArchiveRetention = "postgres://u:p@db/riverhub", 240*time.Hour }},
		{"redis wait", map[string]string{"REDIS_URL": "redis://r", "RIVERHUB_REDIS_WAIT_REPLICAS": "1", "RIVERHUB_REDIS_WAIT_TIMEOUT": "250ms"},
			func(c *Config) {
				c.RedisURL, c.RedisWaitReplicas, c.RedisWaitTimeout = "redis://r", 1, 250*time.Millisecond
			}},
		{"redis wait off ignores its timeout", map[string]string{"RIVERHUB_REDIS_TIMEOUT": "50ms"},
			func(c *Config) { c.RedisTimeout = 50 * time.Millisecond }},
		{"dlq retention", map[string]string{"RIVERHUB_DLQ_RETENTION": "48h"}, func(c *Config) { c.DLQRetention = 48 * time.Hour }},
		{"max body bytes", map[string]string{"RIVERHUB_MAX_BODY_BYTES": "4096"}, func(c *Config) { c.MaxBodyBytes = 4096 }},
		{"token ttl", map[string]string{"RIVERHUB_TOKEN_TTL": "15m"}, func(c *Config) { c.TokenTTL = 15 * time.Minute }},
		{"ws idle timeout", map[string]string{"RIVERHUB_WS_IDLE_TIMEOUT": "5m"}, func(c *Config) { c.WSIdleTimeout = 5 * time.Minute }},
		{"ws token single use", map[string]string{"RIVERHUB_WS_TOKEN_SINGLE_USE": "true"}, func(c *Config) { c.WSTokenSingleUse = true }},
		{"ws token single use, other spelling", map[string]string{"RIVERHUB_WS_TOKEN_SINGLE_USE": "ON"}, func(c *Config) { c.WSTokenSingleUse = true }},
		{"ws token single use off", map[string]string{"RIVERHUB_WS_TOKEN_SINGLE_USE": "0"}, func(c *Config) {}},
		{"shutdown timeout zero", map[string]string{"RIVERHUB_SHUTDOWN_TIMEOUT": "0s"}, func(c *Config) { c.ShutdownTimeout = 0 }},
		{"log level", map[string]string{"RIVERHUB_LOG_LEVEL": "debug"}, func(c *Config) { c.LogLevel = "debug" }},
		{"allow cidrs masked and bare", map[string]string{"RIVERHUB_ALLOW_CIDRS": "10.1.2.3/8, 192.168.1.7 ,fd00::/8"}, func(c *Config) {
			c.AllowCIDRs = []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("192.168.1.7/32"),
				netip.MustParsePrefix("fd00::/8"),
			}
		}},
		{"surrounding space trimmed", map[string]string{"RIVERHUB_WORKERS": " 12\n", "OPENAI_API_KEY": "sk-x\n"}, func(c *Config) {
			c.Workers, c.OpenAIAPIKey = 12, "sk-x"
		}},
		{"blank counts as unset", map[string]string{"RIVERHUB_WORKERS": "  ", "RIVERHUB_ADDR": ""}, func(c *Config) {}},
		{"unknown variables ignored", map[string]string{"RIVERHUB_NOPE": "x", "PATH": "/bin"}, func(c *Config) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := Defaults()
			tc.want(want)
			got, err := Load(nil, envOf(tc.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	with := func(base map[string]string, k, v string) map[string]string {
		m := map[string]string{}
		for bk, bv := range base {
			m[bk] = bv
		}
		m[k] = v
		return m
	}
	one := func(k, v string) map[string]string { return map[string]string{k: v} }
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // the exact message: matching it whole keeps messages deliberate
	}{
		// environment and mode
		{"bad env", one("RIVERHUB_ENV", "staging"), nil, `RIVERHUB_ENV: unknown value "staging" (want development or production)`},
		{"env is case sensitive", one("RIVERHUB_ENV", "Production"), nil, `RIVERHUB_ENV: unknown value "Production" (want development or production)`},

		// production requirements
		{"production without redis", with(prodEnv(), "REDIS_URL", ""), nil, `REDIS_URL: required in production (the embedded Redis keeps nothing across restarts)`},
		{"production without token secret", with(prodEnv(), "RIVERHUB_TOKEN_SECRET", ""), nil, `RIVERHUB_TOKEN_SECRET: required in production (at least 32 bytes, shared by every node)`},
		{"production short token secret", with(prodEnv(), "RIVERHUB_TOKEN_SECRET", "short"), nil, `RIVERHUB_TOKEN_SECRET: too short (5 bytes, want at least 32)`},
		{"production http public url", with(prodEnv(), "RIVERHUB_PUBLIC_URL", "http://hub.example.com"), nil, `RIVERHUB_PUBLIC_URL: "http://hub.example.com": must be set to the public https URL in production`},

		// addresses and URLs
		{"addr without port", one("RIVERHUB_ADDR", "localhost"), nil, `RIVERHUB_ADDR: "localhost" is not host:port`},
		{"addr bad port", one("RIVERHUB_ADDR", ":http"), nil, `RIVERHUB_ADDR: port "http" is not a number from 0 to 65535`},
		{"addr port too big", one("RIVERHUB_ADDR", ":70000"), nil, `RIVERHUB_ADDR: port "70000" is not a number from 0 to 65535`},
		{"public url relative", one("RIVERHUB_PUBLIC_URL", "/hub"), nil, `RIVERHUB_PUBLIC_URL: "/hub": want an absolute http:// or https:// URL`},
		{"public url ws scheme", one("RIVERHUB_PUBLIC_URL", "ws://hub"), nil, `RIVERHUB_PUBLIC_URL: "ws://hub": want an absolute http:// or https:// URL`},
		{"public url query", one("RIVERHUB_PUBLIC_URL", "https://hub?x=1"), nil, `RIVERHUB_PUBLIC_URL: "https://hub?x=1": must not have a query`},
		{"public url fragment", one("RIVERHUB_PUBLIC_URL", "https://hub#top"), nil, `RIVERHUB_PUBLIC_URL: "https://hub#top": must not have a fragment`},
		{"public url no host", one("RIVERHUB_PUBLIC_URL", "https://"), nil, `RIVERHUB_PUBLIC_URL: "https://": missing host`},
		{"public url double slash trimmed to no host", one("RIVERHUB_PUBLIC_URL", "https:///"), nil, `RIVERHUB_PUBLIC_URL: "https://": missing host`},
		{"openai base url not http", one("OPENAI_BASE_URL", "ftp://x/v1"), nil, `OPENAI_BASE_URL: "ftp://x/v1": want an absolute http:// or https:// URL`},
		{"anthropic base url credentials", one("ANTHROPIC_BASE_URL", "https://u:hunter2@x"), nil, `ANTHROPIC_BASE_URL: must not contain user info (credentials)`},
		{"anthropic base url no host", one("ANTHROPIC_BASE_URL", "https:///v1"), nil, `ANTHROPIC_BASE_URL: "https:///v1": missing host`},

		// redis
		{"redis http scheme", one("REDIS_URL", "http://localhost:6379"), nil, `REDIS_URL: unsupported scheme "http" (want redis:// or rediss://, or redis-sentinel:// / redis-cluster://)`},
		{"redis no scheme", one("REDIS_URL", "localhost:6379"), nil, `REDIS_URL: missing scheme (want redis://host:port, rediss://, redis-sentinel:// or redis-cluster://)`},
		{"redis sentinel without master", one("REDIS_URL", "redis-sentinel://s1:26379,s2:26379/0"), nil, `REDIS_URL: sentinel URL needs exactly one ?master=<name>`},
		{"redis cluster db", one("REDIS_URL", "redis-cluster://a:7000,b:7001/3"), nil, `REDIS_URL: database 3: a cluster has only database 0`},
		{"redis bad db", one("REDIS_URL", "redis://localhost/-1"), nil, `REDIS_URL: database "-1" is not a non-negative integer`},

		// key prefix and secrets
		{"key prefix braces", one("RIVERHUB_KEY_PREFIX", "rh{1}"), nil, `RIVERHUB_KEY_PREFIX: "rh{1}": braces would make a Redis Cluster hash tag`},
		{"key prefix bad char", one("RIVERHUB_KEY_PREFIX", "a b"), nil, `RIVERHUB_KEY_PREFIX: "a b": character ' ' not allowed (want A-Z a-z 0-9 _ . : -)`},
		{"key prefix too long", one("RIVERHUB_KEY_PREFIX", strings.Repeat("k", 65)), nil, `RIVERHUB_KEY_PREFIX: "` + strings.Repeat("k", 65) + `": want 1 to 64 characters`},
		{"admin key short", one("RIVERHUB_ADMIN_KEY", "short"), nil, `RIVERHUB_ADMIN_KEY: too short (5 characters, want at least 16)`},
		{"token secret short in development", one("RIVERHUB_TOKEN_SECRET", "dev"), nil, `RIVERHUB_TOKEN_SECRET: too short (3 bytes, want at least 32)`},

		// retry schedule
		{"schedule bad unit", one("RIVERHUB_RETRY_SCHEDULE", "0s,5s,5x"), nil, `RIVERHUB_RETRY_SCHEDULE: entry 3 "5x": time: unknown unit "x" in duration "5x"`},
		{"schedule missing unit", one("RIVERHUB_RETRY_SCHEDULE", "5"), nil, `RIVERHUB_RETRY_SCHEDULE: entry 1 "5": time: missing unit in duration "5"`},
		{"schedule negative", one("RIVERHUB_RETRY_SCHEDULE", "1s,-1s"), nil, `RIVERHUB_RETRY_SCHEDULE: entry 2 "-1s": negative`},
		{"schedule empty entry", one("RIVERHUB_RETRY_SCHEDULE", "1s,,2s"), nil, `RIVERHUB_RETRY_SCHEDULE: entry 2 is empty`},
		{"schedule trailing comma", one("RIVERHUB_RETRY_SCHEDULE", "1s,"), nil, `RIVERHUB_RETRY_SCHEDULE: entry 2 is empty`},
		{"schedule too long", one("RIVERHUB_RETRY_SCHEDULE", strings.Repeat("1s,", 50)+"1s"), nil, `RIVERHUB_RETRY_SCHEDULE: 51 entries, at most 50 allowed`},
		{"schedule flag empty", nil, []string{"-retry-schedule="}, `-retry-schedule: at least one entry required`},

		// durations
		{"duration unparsable", one("RIVERHUB_WEBHOOK_TIMEOUT", "ten"), nil, `RIVERHUB_WEBHOOK_TIMEOUT: time: invalid duration "ten"`},
		{"duration without unit", one("RIVERHUB_TOKEN_TTL", "60"), nil, `RIVERHUB_TOKEN_TTL: time: missing unit in duration "60"`},
		{"webhook timeout zero", one("RIVERHUB_WEBHOOK_TIMEOUT", "0s"), nil, `RIVERHUB_WEBHOOK_TIMEOUT: must be greater than 0, got 0s`},
		{"callback timeout negative", one("RIVERHUB_CALLBACK_TIMEOUT", "-1m"), nil, `RIVERHUB_CALLBACK_TIMEOUT: must be greater than 0, got -1m0s`},
		{"playground delay negative", one("RIVERHUB_PLAYGROUND_CALLBACK_DELAY", "-1ms"), nil, `RIVERHUB_PLAYGROUND_CALLBACK_DELAY: must not be negative, got -1ms`},
		{"provider timeout zero", one("RIVERHUB_PROVIDER_TIMEOUT", "0s"), nil, `RIVERHUB_PROVIDER_TIMEOUT: must be greater than 0, got 0s`},
		{"task lease too short", one("RIVERHUB_TASK_LEASE", "99ms"), nil, `RIVERHUB_TASK_LEASE: must be at least 100ms, got 99ms`},
		{"retention too short", one("RIVERHUB_RETENTION", "59s"), nil, `RIVERHUB_RETENTION: must be at least 1m0s, got 59s`},
		{"hot window under four leases", one("RIVERHUB_HOT_WINDOW", "119s"), nil, `RIVERHUB_HOT_WINDOW: must be at least 2m0s, got 1m59s`},
		{"archive not postgres", one("RIVERHUB_ARCHIVE_URL", "mysql://u:secret@db/x"), nil, `RIVERHUB_ARCHIVE_URL: want a postgres:// URL`},
		{"redis wait negative", one("RIVERHUB_REDIS_WAIT_REPLICAS", "-1"), nil, `RIVERHUB_REDIS_WAIT_REPLICAS: must be between 0 and 16, got -1`},
		{"redis wait embedded", one("RIVERHUB_REDIS_WAIT_REPLICAS", "1"), nil, `RIVERHUB_REDIS_WAIT_REPLICAS: needs REDIS_URL (the embedded Redis has no replicas)`},
		{"redis wait timeout zero", map[string]string{"REDIS_URL": "redis://r", "RIVERHUB_REDIS_WAIT_REPLICAS": "1", "RIVERHUB_REDIS_WAIT_TIMEOUT": "0s"}, nil,
			`RIVERHUB_REDIS_WAIT_TIMEOUT: must be at least 1ms, got 0s`},
		{"redis wait timeout past the redis timeout", map[string]string{"REDIS_URL": "redis://r", "RIVERHUB_REDIS_WAIT_REPLICAS": "1", "RIVERHUB_REDIS_WAIT_TIMEOUT": "2s"}, nil,
			`RIVERHUB_REDIS_WAIT_TIMEOUT: must be less than RIVERHUB_REDIS_TIMEOUT (2s), got 2s`},
		{"no sockets", one("RIVERHUB_WS_MAX_CONNS", "0"), nil, `RIVERHUB_WS_MAX_CONNS: must be at least 1, got 0`},
		{"no channels per socket", one("RIVERHUB_WS_MAX_CHANNELS", "0"), nil, `RIVERHUB_WS_MAX_CHANNELS: must be at least 1, got 0`},
		{"dlq retention zero", one("RIVERHUB_DLQ_RETENTION", "0s"), nil, `RIVERHUB_DLQ_RETENTION: must be at least 1m0s, got 0s`},
		{"token ttl zero", one("RIVERHUB_TOKEN_TTL", "0s"), nil, `RIVERHUB_TOKEN_TTL: must be greater than 0, got 0s`},
		{"ws idle timeout too short", one("RIVERHUB_WS_IDLE_TIMEOUT", "999ms"), nil, `RIVERHUB_WS_IDLE_TIMEOUT: must be at least 1s, got 999ms`},
		{"shutdown timeout negative", one("RIVERHUB_SHUTDOWN_TIMEOUT", "-5s"), nil, `RIVERHUB_SHUTDOWN_TIMEOUT: must not be negative, got -5s`},

		// integers
		{"workers not a number", one("RIVERHUB_WORKERS", "many"), nil, `RIVERHUB_WORKERS: "many" is not an integer`},
		{"single use not a boolean", one("RIVERHUB_WS_TOKEN_SINGLE_USE", "sometimes"), nil, `RIVERHUB_WS_TOKEN_SINGLE_USE: "sometimes" is not a boolean (want true or false)`},
		{"workers zero", one("RIVERHUB_WORKERS", "0"), nil, `RIVERHUB_WORKERS: must be between 1 and 100000, got 0`},
		{"workers too many", one("RIVERHUB_WORKERS", "100001"), nil, `RIVERHUB_WORKERS: must be between 1 and 100000, got 100001`},
		{"partitions negative", one("RIVERHUB_PARTITIONS", "-1"), nil, `RIVERHUB_PARTITIONS: must be between 0 (auto) and 256, got -1`},
		{"partitions too many", one("RIVERHUB_PARTITIONS", "257"), nil, `RIVERHUB_PARTITIONS: must be between 0 (auto) and 256, got 257`},
		{"max queue zero", one("RIVERHUB_MAX_QUEUE", "0"), nil, `RIVERHUB_MAX_QUEUE: must be at least 1, got 0`},
		{"max queue float", one("RIVERHUB_MAX_QUEUE", "1e5"), nil, `RIVERHUB_MAX_QUEUE: "1e5" is not an integer`},
		{"max body bytes negative", one("RIVERHUB_MAX_BODY_BYTES", "-1"), nil, `RIVERHUB_MAX_BODY_BYTES: must be at least 1, got -1`},
		{"max body bytes not a number", one("RIVERHUB_MAX_BODY_BYTES", "1MiB"), nil, `RIVERHUB_MAX_BODY_BYTES: "1MiB" is not an integer`},

		// log level and CIDRs
		{"provider retries above 10", one("RIVERHUB_PROVIDER_RETRIES", "11"), nil, `RIVERHUB_PROVIDER_RETRIES: must be at most 10, got 11`},
		{"provider limits unknown provider", one("RIVERHUB_PROVIDER_LIMITS", "gemini:rpm=3"), nil, `RIVERHUB_PROVIDER_LIMITS: "gemini:rpm=3": unknown provider "gemini" (want openai, anthropic or mock)`},
		{"provider limits unknown limit", one("RIVERHUB_PROVIDER_LIMITS", "openai:rph=3"), nil, `RIVERHUB_PROVIDER_LIMITS: openai: unknown limit "rph" (want concurrency, rpm or tpm)`},
		{"provider limits negative", one("RIVERHUB_PROVIDER_LIMITS", "openai:rpm=-1"), nil, `RIVERHUB_PROVIDER_LIMITS: openai: "rpm=-1": want a limit=non-negative integer`},
		{"provider limits without limits", one("RIVERHUB_PROVIDER_LIMITS", "openai"), nil, `RIVERHUB_PROVIDER_LIMITS: "openai": want openai:concurrency=N,rpm=N,tpm=N`},
		{"provider limits twice", one("RIVERHUB_PROVIDER_LIMITS", "mock:rpm=1;mock:rpm=2"), nil, `RIVERHUB_PROVIDER_LIMITS: mock: given twice`},
		{"log level", one("RIVERHUB_LOG_LEVEL", "trace"), nil, `RIVERHUB_LOG_LEVEL: unknown level "trace" (want debug, info, warn or error)`},
		{"cidr bad length", one("RIVERHUB_ALLOW_CIDRS", "10.0.0.0/33"), nil, `RIVERHUB_ALLOW_CIDRS: entry 1 "10.0.0.0/33": not a CIDR`},
		{"cidr garbage", one("RIVERHUB_ALLOW_CIDRS", "10.0.0.0/8,intranet"), nil, `RIVERHUB_ALLOW_CIDRS: entry 2 "intranet": not a CIDR or IP address`},
		{"cidr empty entry", one("RIVERHUB_ALLOW_CIDRS", "10.0.0.0/8,"), nil, `RIVERHUB_ALLOW_CIDRS: entry 2 is empty`},

		// flags
		{"unknown flag", nil, []string{"-nope"}, `flag provided but not defined: -nope`},
		{"secret has no flag", nil, []string{"-token-secret", secret32}, `flag provided but not defined: -token-secret`},
		{"positional argument", nil, []string{"serve"}, `unexpected argument "serve" (settings are flags or environment variables)`},
		{"flag parse error names the flag", one("RIVERHUB_WORKERS", "4"), []string{"-workers", "x"}, `-workers: "x" is not an integer`},
		{"flag duration error", nil, []string{"-task-lease=soon"}, `-task-lease: time: invalid duration "soon"`},
		{"flag value missing", nil, []string{"-workers"}, `flag needs an argument: -workers`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(tc.args, envOf(tc.env))
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want error %q", c, tc.want)
			}
			if c != nil {
				t.Errorf("Load returned a Config with the error")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %q\nwant %q", err.Error(), tc.want)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("error spans several lines: %q", err.Error())
			}
		})
	}
}

// A secret that is too short, or a Redis password, must never appear in an
// error message: those end up in logs.
func TestErrorsDoNotLeakSecrets(t *testing.T) {
	t.Parallel()
	const pw = "s3cr3tpassw0rd"
	for _, env := range []map[string]string{
		{"RIVERHUB_TOKEN_SECRET": pw},
		{"RIVERHUB_ADMIN_KEY": pw[:10]},
		{"REDIS_URL": "redis://:" + pw + "@host:notaport"},
		{"REDIS_URL": "redis://:" + pw + "@host/x"},
		{"REDIS_URL": "redis://:" + pw + "@h1,h2"},
		{"REDIS_URL": "redis://:pa/" + pw + "@host"},
		{"REDIS_URL": "redis://:pa?" + pw + "@host"},
		{"REDIS_URL": "redis://:pa#" + pw + "@host"},
		{"REDIS_URL": "redis://:%zz" + pw + "@host"},
		{"REDIS_URL": "http://:" + pw + "@host"},
		{"OPENAI_BASE_URL": "https://u:" + pw + "@api"},
	} {
		_, err := Load(nil, envOf(env))
		if err == nil {
			t.Errorf("Load(%v) succeeded, want an error", env)
			continue
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), pw[:10]) {
			t.Errorf("error leaks the secret: %q", err.Error())
		}
	}
}

func TestFlagsOverrideEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"RIVERHUB_ADDR":       ":1111",
		"REDIS_URL":           "redis://from-env:6379",
		"RIVERHUB_KEY_PREFIX": "envprefix",
		"RIVERHUB_WORKERS":    "not-a-number", // overridden, so never parsed
		"RIVERHUB_MAX_QUEUE":  "10",
		"RIVERHUB_LOG_LEVEL":  "error",
		"RIVERHUB_TASK_LEASE": "5s",
	}
	args := []string{
		"-addr", "127.0.0.1:2222",
		"-redis-url=redis://from-flag:6380/1",
		"-key-prefix", "flagprefix",
		"-workers", "3",
		"--max-queue=20",
		"-log-level", "debug",
		"-env", "development",
		"-retry-schedule", "1s,2s",
		"-allow-cidrs", "172.16.0.0/12",
	}
	got, err := Load(args, envOf(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Defaults()
	want.Addr = "127.0.0.1:2222"
	want.PublicURL = "http://127.0.0.1:2222"
	want.RedisURL = "redis://from-flag:6380/1"
	want.KeyPrefix = "flagprefix"
	want.Workers = 3
	want.MaxQueue = 20
	want.LogLevel = "debug"
	want.TaskLease = 5 * time.Second // no flag given: the variable stands
	want.RetrySchedule = []time.Duration{time.Second, 2 * time.Second}
	want.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
	}
}

// An explicitly empty flag means empty, e.g. to drop a REDIS_URL from the
// environment for one local run.
func TestEmptyFlagClearsEnv(t *testing.T) {
	t.Parallel()
	got, err := Load([]string{"-redis-url="}, envOf(map[string]string{"REDIS_URL": "redis://x"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.RedisURL != "" {
		t.Fatalf("RedisURL = %q, want empty", got.RedisURL)
	}
}

// Every setting that is not a secret must be reachable by flag.
func TestEveryFlagParses(t *testing.T) {
	t.Parallel()
	values := map[string]string{
		"-addr": ":9", "-redis-url": "redis://r", "-env": "development", "-public-url": "https://p",
		"-key-prefix": "k", "-retry-schedule": "1s", "-webhook-timeout": "1s", "-callback-timeout": "1s",
		"-playground-callback-delay": "1s", "-openai-base-url": "https://o", "-anthropic-base-url": "https://a",
		"-provider-timeout": "1s", "-workers": "1", "-max-queue": "1", "-task-lease": "1s", "-retention": "1h",
		"-dlq-retention": "1h", "-hot-window": "5s", "-archive-retention": "2h", "-max-body-bytes": "1", "-token-ttl": "1s", "-shutdown-timeout": "1s",
		"-log-level": "warn", "-allow-cidrs": "10.0.0.0/8", "-ws-token-single-use": "true",
		"-ws-max-conns": "7", "-ws-max-channels": "3", "-ws-idle-timeout": "2s", "-stream-window": "10ms", "-stream-bytes": "64", "-project-max-queue": "5", "-project-rate": "0", "-partitions": "4",
		"-webhook-concurrency": "8", "-endpoint-concurrency": "2", "-project-concurrency": "4",
		"-breaker-threshold": "3", "-endpoint-disable-after": "1h", "-redis-timeout": "500ms",
		"-provider-retries": "0", "-provider-retry-wait": "5s", "-provider-cooldown-after": "0", "-provider-cooldown": "1m",
		"-provider-limits": "mock:rpm=1", "-sync-wait": "3s", "-redis-wait-replicas": "1", "-redis-wait-timeout": "20ms",
	}
	var args []string
	flags := 0
	for _, v := range Vars() {
		if v.Flag == "" {
			continue
		}
		flags++
		val, ok := values[v.Flag]
		if !ok {
			t.Fatalf("no test value for flag %s", v.Flag)
		}
		args = append(args, v.Flag+"="+val)
	}
	if flags != len(values) {
		t.Fatalf("%d flags, test knows %d", flags, len(values))
	}
	c, err := Load(args, envOf(nil))
	if err != nil {
		t.Fatalf("Load(%v): %v", args, err)
	}
	if c.Addr != ":9" || c.LogLevel != "warn" || c.DLQRetention != time.Hour || c.PublicURL != "https://p" || !c.WSTokenSingleUse ||
		c.WSMaxConns != 7 || c.WSMaxChannels != 3 || c.WSIdleTimeout != 2*time.Second || c.RedisTimeout != 500*time.Millisecond {
		t.Fatalf("flags not applied: %+v", c)
	}
}

func TestHelpFlag(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		c, err := Load([]string{arg}, envOf(nil))
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Load(%s) error = %v, want flag.ErrHelp", arg, err)
		}
		if c != nil {
			t.Errorf("Load(%s) returned a Config", arg)
		}
	}
}

func TestPublicURLDerivation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr, want string
	}{
		{":8080", "http://localhost:8080"},
		{"127.0.0.1:9000", "http://127.0.0.1:9000"},
		{"0.0.0.0:80", "http://localhost:80"},
		{"[::]:8080", "http://localhost:8080"},
		{"[::1]:8080", "http://[::1]:8080"},
		{"hub.internal:8443", "http://hub.internal:8443"},
	} {
		c, err := Load(nil, envOf(map[string]string{"RIVERHUB_ADDR": tc.addr}))
		if err != nil {
			t.Errorf("addr %q: %v", tc.addr, err)
			continue
		}
		if c.PublicURL != tc.want {
			t.Errorf("addr %q: PublicURL = %q, want %q", tc.addr, c.PublicURL, tc.want)
		}
	}
	// The flag's Addr wins, so the derived URL follows it, not the variable.
	c, err := Load([]string{"-addr", ":7000"}, envOf(map[string]string{"RIVERHUB_ADDR": ":6000"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.PublicURL != "http://localhost:7000" {
		t.Errorf("PublicURL = %q, want http://localhost:7000", c.PublicURL)
	}
}

func TestProduction(t *testing.T) {
	t.Parallel()
	// A derived http://localhost PublicURL is refused in production: the
	// URLs handed to clients would only work on the server itself.
	env := prodEnv()
	delete(env, "RIVERHUB_PUBLIC_URL")
	if _, err := Load(nil, envOf(env)); err == nil || !strings.Contains(err.Error(), "RIVERHUB_PUBLIC_URL") {
		t.Fatalf("production without RIVERHUB_PUBLIC_URL: %v", err)
	}
	c, err := Load(nil, envOf(prodEnv()))
	if err != nil || !c.Production() || c.PublicURL != "https://hub.example.com" {
		t.Fatalf("https public URL in production: %v, %+v", err, c)
	}
}

// Validate applies to Configs that tests build by hand.
func TestValidateEditedConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string // "" for valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"short lease for tests", func(c *Config) { c.TaskLease = 100 * time.Millisecond }, ""},
		{"empty public url", func(c *Config) { c.PublicURL = "" }, `RIVERHUB_PUBLIC_URL: empty (leave the variable unset to derive it from RIVERHUB_ADDR)`},
		{"public url trailing slash", func(c *Config) { c.PublicURL = "https://x/" }, `RIVERHUB_PUBLIC_URL: "https://x/": must not end with '/'`},
		{"production explicit http", func(c *Config) {
			c.Env, c.RedisURL, c.TokenSecret, c.PublicURL = Production, "redis://r", secret32, "http://x"
		}, `RIVERHUB_PUBLIC_URL: "http://x": must be set to the public https URL in production`},
		{"empty env", func(c *Config) { c.Env = "" }, `RIVERHUB_ENV: unknown value "" (want development or production)`},
		{"empty schedule", func(c *Config) { c.RetrySchedule = nil }, `RIVERHUB_RETRY_SCHEDULE: 0 entries (want 1 to 50)`},
		{"negative schedule entry", func(c *Config) { c.RetrySchedule = []time.Duration{time.Second, -time.Second} }, `RIVERHUB_RETRY_SCHEDULE: entry 2 "-1s": negative`},
		{"empty key prefix", func(c *Config) { c.KeyPrefix = "" }, `RIVERHUB_KEY_PREFIX: "": want 1 to 64 characters`},
		{"invalid prefix value", func(c *Config) { c.AllowCIDRs = []netip.Prefix{{}} }, `RIVERHUB_ALLOW_CIDRS: entry 1 is not a valid prefix`},
		{"bad redis url", func(c *Config) { c.RedisURL = "redis://" }, `REDIS_URL: missing host`},
		{"empty log level", func(c *Config) { c.LogLevel = "" }, `RIVERHUB_LOG_LEVEL: unknown level "" (want debug, info, warn or error)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Defaults()
			tc.edit(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate = nil, want %q", tc.want)
			case tc.want != "" && err.Error() != tc.want:
				t.Fatalf("Validate error\n got %q\nwant %q", err.Error(), tc.want)
			}
		})
	}
}

// Defaults must hand out fresh slices: one test editing its schedule must
// not change another's.
func TestDefaultsAreIndependent(t *testing.T) {
	t.Parallel()
	a := Defaults()
	a.RetrySchedule[0] = time.Hour
	if b := Defaults(); b.RetrySchedule[0] != 0 {
		t.Fatalf("Defaults shares its RetrySchedule slice: got %v", b.RetrySchedule[0])
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	u := Usage()
	lines := strings.Split(strings.TrimRight(u, "\n"), "\n")
	header := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "VARIABLE") {
			header = i
		}
	}
	if header < 0 {
		t.Fatalf("Usage has no header row:\n%s", u)
	}
	rows := lines[header+1:]
	if len(rows) != len(settings) {
		t.Fatalf("Usage has %d rows, want %d (one per setting):\n%s", len(rows), len(settings), u)
	}
	// Columns line up: every row's flag column starts where the header's does.
	col := strings.Index(lines[header], "FLAG")
	for i, v := range Vars() {
		row := rows[i]
		if !strings.HasPrefix(row, v.Env+" ") {
			t.Errorf("row %d = %q, want it to start with %s", i, row, v.Env)
		}
		if !strings.Contains(row, v.Default) || !strings.Contains(row, v.Help) {
			t.Errorf("row %q lacks default %q or help %q", row, v.Default, v.Help)
		}
		if v.Flag != "" && strings.Index(row, v.Flag+" ") != col {
			t.Errorf("row %q: flag %s not at column %d", row, v.Flag, col)
		}
	}
	for _, env := range []string{"REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "RIVERHUB_ALLOW_CIDRS", "RIVERHUB_TOKEN_SECRET"} {
		if !strings.Contains(u, env) {
			t.Errorf("Usage lacks %s", env)
		}
	}
}
