// Command wsload opens many Phoenix-protocol WebSockets to one or more
// riverhub nodes, each joined to its own channel, keeps them alive with
// heartbeats and reports how the ramp went; given the server's pid it also
// reports the server's resident memory per joined socket (BENCHMARKS.md,
// "Realtime hub").
//
//	RIVERHUB_TOKEN_SECRET=… go run ./cmd/wsload -nodes http://127.0.0.1:8080 -n 15000 -rss-pid 1234
//
// Sockets are spread round-robin over the nodes and over several source
// addresses (by default 127.0.0.2 to 127.0.0.9; loopback routes all of
// 127.0.0.0/8), so the 28k ephemeral ports of one source address are never
// the limit.
//
// Each socket needs a ws token for its own channel. Two ways:
//
//   - -tokens mint (the default): the tool signs tokens itself with package
//     wstoken, for random channel ids of one project (-project). It needs
//     the nodes' RIVERHUB_TOKEN_SECRET in its environment. Nothing is
//     written to Redis apart from what the joins do, so 15,000 sockets open
//     in seconds and the server's memory holds sockets only. Each token is
//     a fresh one (its own jti), so this also works against nodes with
//     RIVERHUB_WS_TOKEN_SINGLE_USE.
//   - -tokens submit: each socket's channel is a real task submitted with
//     POST /v1/ai/async to its node, with the API key in RIVERHUB_API_KEY
//     (else RIVERHUB_ADMIN_KEY). The tool creates the mock workflow it
//     submits (-workflow) if the project does not have it. Slower, and the
//     server also runs every task, but it needs no secret.
//
// Secrets come from the environment only, never from flags (a command line
// is visible to every user of the machine).
//
// Every socket sends a Phoenix heartbeat ([null,ref,"phoenix","heartbeat",{}])
// every -heartbeat (30 s, as the phoenix client), so the server's 60 s idle
// timeout never closes it. The tool keeps the sockets open for -hold after
// the ramp (0: until interrupted) and then closes them.
//
// Every socket costs a file descriptor here as well as on the server; the
// Go runtime raises the soft RLIMIT_NOFILE to the hard limit at start, and
// the tool refuses to start when -n does not fit under it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
}

// config is what the flags and the environment say.
type config struct {
	nodes       []string // base URLs, http://host:port
	n           int
	sources     []string // source IPs; empty: the kernel chooses
	tokens      string   // "mint" or "submit"
	secret      string   // mint: RIVERHUB_TOKEN_SECRET
	project     string   // mint: the tokens' project id
	tokenTTL    time.Duration
	key         string // submit: API key
	workflow    string // submit: mock workflow submitted
	concurrency int
	timeout     time.Duration
	heartbeat   time.Duration
	hold        time.Duration
	rssPid      int
	settle      time.Duration
	quiet       bool
}

func parse(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("wsload", flag.ContinueOnError)
	fs.SetOutput(out)
	nodes := fs.String("nodes", "http://127.0.0.1:8080", "comma-separated base URLs of the riverhub nodes; sockets are spread round-robin")
	fs.IntVar(&c.n, "n", 1000, "sockets to open, each joined to its own channel")
	sources := fs.String("sources", "127.0.0.2-127.0.0.9", `source addresses, round-robin: a range "A-B" of IPv4 addresses, a comma list, or "" for the kernel's choice`)
	fs.StringVar(&c.tokens, "tokens", "mint", "where ws tokens come from: mint (sign them; needs RIVERHUB_TOKEN_SECRET) or submit (POST /v1/ai/async; needs RIVERHUB_API_KEY or RIVERHUB_ADMIN_KEY)")
	fs.StringVar(&c.project, "project", "", "mint: the tokens' project id (a UUID; default a random one)")
	fs.DurationVar(&c.tokenTTL, "token-ttl", time.Hour, "mint: lifetime of each token (a join after it expires is refused)")
	fs.StringVar(&c.workflow, "workflow", "wsload", "submit: the mock workflow submitted (created if missing)")
	fs.IntVar(&c.concurrency, "concurrency", 64, "sockets being opened at once")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound of one socket's token, handshake and join")
	fs.DurationVar(&c.heartbeat, "heartbeat", 30*time.Second, "interval of each socket's phoenix heartbeat (the server closes a socket silent for 60 s)")
	fs.DurationVar(&c.hold, "hold", 0, "how long to keep the sockets open after the ramp; 0: until interrupted")
	fs.IntVar(&c.rssPid, "rss-pid", 0, "pid of a server on this machine: report its VmRSS before the ramp and -settle after it, and the difference per joined socket")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "with -rss-pid: how long after the ramp to read the server's memory (read every 30 s meanwhile)")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines, only the summary")
	fs.Usage = func() {
		fmt.Fprint(out, "Usage: wsload [flags]\n\nOpens many joined Phoenix WebSockets to riverhub nodes; see the package doc (go doc ./cmd/wsload).\n\nEnvironment: RIVERHUB_TOKEN_SECRET (-tokens mint), RIVERHUB_API_KEY or RIVERHUB_ADMIN_KEY (-tokens submit).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, u := range strings.Split(*nodes, ",") {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return c, fmt.Errorf("-nodes: %q is not an http:// or https:// URL", u)
		}
		c.nodes = append(c.nodes, u)
	}
	var err error
	if c.sources, err = parseSources(*sources); err != nil {
		return c, fmt.Errorf("-sources: %w", err)
	}
	switch c.tokens {
	case "mint":
		if c.secret = getenv("RIVERHUB_TOKEN_SECRET"); c.secret == "" {
			return c, errors.New("-tokens mint needs RIVERHUB_TOKEN_SECRET (the nodes' secret) in the environment")
		}
	case "submit":
		if c.key = getenv("RIVERHUB_API_KEY"); c.key == "" {
			c.key = getenv("RIVERHUB_ADMIN_KEY")
		}
		if c.key == "" {
			return c, errors.New("-tokens submit needs RIVERHUB_API_KEY or RIVERHUB_ADMIN_KEY in the environment")
		}
	default:
		return c, fmt.Errorf("-tokens: %q is neither mint nor submit", c.tokens)
	}
	if c.project != "" {
		if _, err := uuid.Parse(c.project); err != nil || len(c.project) != 36 {
			return c, fmt.Errorf("-project: %q is not a UUID", c.project)
		}
	}
	switch {
	case c.n < 1:
		return c, errors.New("-n: want at least 1")
	case c.concurrency < 1:
		return c, errors.New("-concurrency: want at least 1")
	case c.timeout <= 0, c.heartbeat <= 0, c.tokenTTL <= 0:
		return c, errors.New("-timeout, -heartbeat and -token-ttl must be positive")
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parse(args, getenv, stdout)
	if err != nil {
		return err
	}
	if limit, ok := openFileLimit(); ok && uint64(cfg.n)+64 > limit {
		return fmt.Errorf("-n %d does not fit under this process's open-file limit %d (ulimit -n); raise the hard limit or split the load over several processes", cfg.n, limit)
	}
	l, err := newLoader(cfg, stdout)
	if err != nil {
		return err
	}
	defer l.closeAll()
	return l.run(ctx)
}
