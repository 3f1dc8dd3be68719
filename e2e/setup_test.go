// Package e2e holds riverhub's end-to-end tests and benchmarks: whole
// nodes started with app.Run on a real Redis, real HTTP receivers, real
// WebSocket clients (the official phoenix client, a headless Chromium), and
// the Node.js tooling they drive, which lives beside them in this folder.
package e2e

import (
	"fmt"
	"os"
	"testing"
)

// openAPIDoc is openapi.yaml, which every node of the tests serves.
var openAPIDoc []byte

// TestMain runs the tests from the module root, so that the paths they
// name (openapi.yaml, docs/, examples/, e2e/*.mjs) read as they do in the
// README, and `go build .` builds the command.
func TestMain(m *testing.M) {
	if err := os.Chdir(".."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	doc, err := os.ReadFile("openapi.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	openAPIDoc = doc
	os.Exit(m.Run())
}
