// Package app assembles riverhub: it reads the settings, connects Redis,
// builds the channels service, the dispatch engine, the hub and the HTTP
// server, serves until its context ends, and shuts them down in order.
// The command (main.go at the module root) and the end-to-end tests (e2e/)
// both start riverhub through Run.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/ai"
	"github.com/riverhub/riverhub/ai/limit"
	"github.com/riverhub/riverhub/archive"
	"github.com/riverhub/riverhub/channels"
	"github.com/riverhub/riverhub/config"
	"github.com/riverhub/riverhub/dispatch"
	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/netguard"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/wstoken"
	"github.com/riverhub/riverhub/project"
	"github.com/riverhub/riverhub/server"
)

// Env is what riverhub takes from its surroundings.
type Env struct {
	Args   []string            // command-line flags (after "serve")
	Getenv func(string) string // the environment; nil reads none
	Stdout io.Writer           // logs and --help; nil discards them
	// Ready, when not nil, receives the listening address once the server
	// accepts connections (tests start riverhub on ":0").
	Ready chan<- string
	// Local is the node's own clock, which the Redis clock corrects
	// (tests shift it); nil is time.Now.
	Local func() time.Time
	// OpenAPI is the description of the HTTP API that every node serves
	// (openapi.yaml, embedded by the command).
	OpenAPI []byte
}

// Run starts riverhub and serves until ctx ends.
func Run(ctx context.Context, env Env) error {
	args, getenv, stdout, ready, local := env.Args, env.Getenv, env.Stdout, env.Ready, env.Local
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if local == nil {
		local = time.Now
	}
	cfg, err := config.Load(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, config.Usage())
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stdout)

	if cfg.TokenSecret == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		cfg.TokenSecret = hex.EncodeToString(b)
		log.Warn().Msg("RIVERHUB_TOKEN_SECRET is not set: using a random one; ws tokens will not work on other nodes or after a restart")
	}

	conn, err := rdb.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Every time another node compares (leases, due times, deadlines) is
	// read off Redis's clock, whatever this node's own says.
	clock := rdb.NewClock(conn, rdb.ClockOptions{Local: local, Log: log, Registerer: reg})
	if err := clock.Start(ctx); err != nil {
		log.Warn().Err(err).Msg("cannot read the Redis clock yet: using this node's own until it answers")
	}
	defer clock.Stop()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("RIVERHUB_ADDR: %w", err)
	}
	defer ln.Close()
	// A public URL derived from ":0" names the port actually bound.
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Port() == "0" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		u.Host = net.JoinHostPort(u.Hostname(), port)
		cfg.PublicURL = u.String()
	}

	guard := &netguard.Guard{Allow: cfg.AllowCIDRs}
	store := project.New(conn, project.Options{Prefix: cfg.KeyPrefix, Production: cfg.Production(), Guard: guard, Now: clock.Now})
	proj, generated, err := store.Bootstrap(ctx, cfg.AdminKey, !cfg.Production())
	if err != nil {
		return fmt.Errorf("bootstrap the default project: %w", err)
	}
	if generated != "" {
		fmt.Fprintf(stdout, "\n  riverhub admin API key (shown once; set RIVERHUB_ADMIN_KEY to choose your own):\n\n    %s\n\n", generated)
	}
	log.Info().Str("project_id", proj.ID).Msg("default project ready")

	limiter := limit.New(conn, limit.Options{Prefix: cfg.KeyPrefix, Now: clock.Now})
	limits := map[string]limit.Limits{}
	for p, l := range cfg.ProviderLimits {
		limits[p] = limit.Limits{Concurrency: l.Concurrency, RPM: l.RPM, TPM: l.TPM}
	}
	runner := ai.NewRunner(ai.Config{
		OpenAIBaseURL: cfg.OpenAIBaseURL, OpenAIAPIKey: cfg.OpenAIAPIKey,
		AnthropicBaseURL: cfg.AnthropicBaseURL, AnthropicAPIKey: cfg.AnthropicAPIKey,
		Timeout: cfg.ProviderTimeout, Retries: offIfZero(cfg.ProviderRetries), RetryWait: cfg.ProviderRetryWait,
		CooldownAfter: offIfZero(cfg.ProviderCooldownAfter), Cooldown: cfg.ProviderCooldown,
		Limiter: limiter, Limits: limits,
	})
	for _, p := range runner.LimitedProviders() {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riverhub_provider_limit_waiting",
			Help: "Tasks of this node waiting for a permit of their provider's limits.", ConstLabels: prometheus.Labels{"provider": p}},
			func() float64 { return float64(runner.LimitWaiting(p)) }))
	}
	parts := rdb.PartitionCount(cfg.Partitions, conn)
	deliveries := dispatch.New(conn, dispatch.Options{
		Prefix: cfg.KeyPrefix, Partitions: parts, Schedule: cfg.RetrySchedule, Timeout: cfg.WebhookTimeout,
		Retention: cfg.Retention, HotWindow: cfg.HotWindow, DLQRetention: cfg.DLQRetention, Production: cfg.Production(), Guard: guard,
		Concurrency: cfg.WebhookConcurrency, PerEndpoint: cfg.EndpointConcurrency, ProjectConcurrency: cfg.ProjectConcurrency,
		BreakerThreshold: cfg.BreakerThreshold, DisableAfter: cfg.EndpointDisableAfter,
		Endpoints: store, Registerer: reg, Log: log, Now: clock.Now,
	})
	tokens := wstoken.NewIssuer(cfg.TokenSecret, cfg.TokenTTL)
	tokens.Now = clock.Now
	var arch channels.Archive
	if cfg.ArchiveURL != "" {
		a, err := archive.Open(ctx, cfg.ArchiveURL, archive.Options{Retention: cfg.ArchiveRetention, Log: log, Now: clock.Now})
		if err != nil {
			return err
		}
		defer a.Close()
		a.Start()
		arch = a
	}
	var svc *channels.Service // the hub's late joins read folded channels through it
	sockets := hub.New(conn, hub.Options{Prefix: cfg.KeyPrefix, Tokens: tokens, Retention: cfg.Retention,
		HotWindow: cfg.HotWindow, Record: channels.RecordKey(cfg.KeyPrefix),
		FinalMessage: func(ctx context.Context, cid string) (string, json.RawMessage, error) {
			return svc.FinalMessage(ctx, cid)
		},
		SingleUseTokens: cfg.WSTokenSingleUse, MaxConns: cfg.WSMaxConns, MaxChannelsPerSocket: cfg.WSMaxChannels,
		IdleTimeout: cfg.WSIdleTimeout, Registerer: reg, Log: log, Now: clock.Now})
	svc = channels.New(conn, runner, channels.Options{
		Prefix: cfg.KeyPrefix, Partitions: parts, Workers: cfg.Workers, MaxQueue: cfg.MaxQueue, Lease: cfg.TaskLease,
		ProjectMaxQueue: cfg.ProjectMaxQueue, ProjectRate: cfg.ProjectRate,
		Retention: cfg.Retention, HotWindow: cfg.HotWindow, Archive: arch, Dispatcher: deliveries, Publisher: sockets, Registerer: reg, Log: log,
		PublicURL: cfg.PublicURL, CallbackTimeout: cfg.CallbackTimeout, PlaygroundDelay: cfg.PlaygroundCallbackDelay,
		SyncWait: cfg.SyncWait, Now: clock.Now, StreamWindow: cfg.StreamWindow, StreamBytes: cfg.StreamBytes,
		WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout,
	})

	srv := server.New(server.Deps{
		Console: store, Channels: svc, Deliveries: deliveries, Sockets: sockets, Tokens: tokens,
		Ready: func(ctx context.Context) error { return conn.Ping(ctx).Err() }, Registry: reg, Log: log,
		PublicURL: cfg.PublicURL, MaxBodyBytes: cfg.MaxBodyBytes, RedisTimeout: cfg.RedisTimeout,
		OpenAPI: env.OpenAPI,
	})
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 120 * time.Second}
	sockets.Start()
	svc.Start()
	deliveries.Start()
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Str("env", string(cfg.Env)).Str("public_url", cfg.PublicURL).Msg("riverhub is serving")
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		_ = sockets.Shutdown(context.Background())
		stopAll(svc, deliveries, time.Second)
		return fmt.Errorf("serve: %w", err)
	}
	// Ordered: stop claiming work, drain the HTTP requests in flight, let
	// running tasks and attempts finish within the bound (giving the rest
	// back to the queue), then the deferred Redis close. Each step has its
	// own budget.
	log.Info().Msg("shutting down")
	svc.StopClaiming()
	deliveries.StopClaiming()
	// Sockets first: hijacked connections are not closed by the HTTP
	// shutdown, and going-away sends the clients to another node, where
	// they miss nothing (history replays on join).
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	_ = sockets.Shutdown(sctx)
	cancel()
	hctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	if err := hs.Shutdown(hctx); err != nil {
		log.Warn().Err(err).Msg("http shutdown")
	}
	cancel()
	stopAll(svc, deliveries, cfg.ShutdownTimeout)
	// Provider permits released by the last tasks: free them for the
	// other nodes now rather than after they expire.
	fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	limiter.Flush(fctx)
	cancel()
	log.Info().Msg("stopped")
	return nil
}

func newLogger(cfg *config.Config, stdout io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	var w io.Writer = stdout
	if !cfg.Production() {
		w = zerolog.ConsoleWriter{Out: stdout, TimeFormat: time.TimeOnly, NoColor: !isTerminal(stdout)}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// isTerminal reports whether w is a terminal (colours only there, not in
// log files and pipes).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// stopAll shuts the task workers down, then the deliveries (tasks that
// finish meanwhile still enqueue theirs), each within bound.
func stopAll(svc *channels.Service, deliveries *dispatch.Engine, bound time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	_ = svc.Shutdown(ctx)
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), bound)
	_ = deliveries.Shutdown(ctx)
	cancel()
}

// offIfZero maps a setting's 0 (off) to the negative that switches a
// feature off where 0 means its default.
func offIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
