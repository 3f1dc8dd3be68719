// Command riverhub is a self-hosted server for asynchronous AI requests:
// REST task submission, provider calls with fallbacks, signed webhooks,
// backend callbacks and WebSocket channels. See README.md; the program is
// assembled in internal/app.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/riverhub/riverhub/internal/app"
)

// openAPI is the description of the HTTP API that every node serves.
//
//go:embed openapi.yaml
var openAPI []byte

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	if err := app.Run(ctx, app.Env{Args: args, Getenv: os.Getenv, Stdout: os.Stdout, OpenAPI: openAPI}); err != nil {
		fmt.Fprintln(os.Stderr, "riverhub:", err)
		os.Exit(1)
	}
}
