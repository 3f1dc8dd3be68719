package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// openapi.yaml lints clean with Redocly's CLI: its recommended rules,
// less the exceptions redocly.yaml gives with their reasons. No errors,
// no warnings.
func TestOpenAPILintsClean(t *testing.T) {
	t.Parallel()
	node := nodeTool(t, "linting openapi.yaml", "@redocly/cli")
	cmd := exec.Command(node, filepath.Join("e2e", "node_modules", "@redocly", "cli", "bin", "cli.js"), "lint", "--format=json", "openapi.yaml")
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var report struct {
		Totals struct {
			Errors, Warnings int
		} `json:"totals"`
		Problems []struct {
			RuleID  string `json:"ruleId"`
			Message string `json:"message"`
		} `json:"problems"`
	}
	if jerr := json.Unmarshal(out, &report); jerr != nil {
		t.Fatalf("redocly lint: %v (%v)\n%s\n%s", err, jerr, out, stderr.String())
	}
	for _, p := range report.Problems {
		t.Errorf("redocly lint: %s: %s", p.RuleID, p.Message)
	}
	if err != nil || report.Totals.Errors+report.Totals.Warnings > 0 {
		t.Errorf("redocly lint: %v, %d errors, %d warnings", err, report.Totals.Errors, report.Totals.Warnings)
	}
}

// A client generated from openapi.yaml, the way people will use it: types
// from openapi-typescript, calls through openapi-fetch, a program checked
// by the TypeScript compiler against those types (so a path, parameter or
// field the document does not have fails to compile), then run against a
// node: it creates a workflow, submits a task, reads the channel until
// it is done and reads its log.
func TestTypedClientFromTheDocument(t *testing.T) {
	t.Parallel()
	node := nodeTool(t, "the typed client", "openapi-typescript", "openapi-fetch", "typescript")
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(node, args...)
		cmd.Env = append(os.Environ(), "NO_COLOR=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	mod := filepath.Join("e2e", "node_modules")
	run(filepath.Join(mod, "openapi-typescript", "bin", "cli.js"), "openapi.yaml", "--output", filepath.Join("e2e", ".gen", "riverhub.d.ts"))
	run(filepath.Join(mod, "typescript", "bin", "tsc"), "-p", filepath.Join("e2e", "tsconfig.typed.json"))

	n := newNode(t)
	out := run(filepath.Join("e2e", "typed_client.mjs"), "--base", n.base, "--key", n.key)
	var got struct {
		ChannelID string          `json:"channel_id"`
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		Timeline  []string        `json:"timeline"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("typed client printed %s: %v", out, err)
	}
	if got.Status != "success" || string(got.Data) != `{"ok":true}` || len(got.Timeline) < 3 {
		t.Errorf("typed client saw %s", out)
	}
}
