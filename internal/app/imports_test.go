package app

import (
	"os/exec"
	"strings"
	"testing"
)

// The packages form a one-way stack (docs/architecture.md): channels owns
// a request's state; dispatch and hub serve it and import nothing of it;
// only this package assembles the server; the hub imports no other package
// of riverhub but the token helper.
func TestImportsPointDown(t *testing.T) {
	const mod = "github.com/riverhub/riverhub/"
	deps := func(pkg string) []string {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		var own []string
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, mod) && p != mod+pkg {
				own = append(own, strings.TrimPrefix(p, mod))
			}
		}
		return own
	}
	for _, pkg := range []string{"dispatch", "hub", "ai", "project", "channels"} {
		for _, d := range deps(pkg) {
			if d == "channels" || d == "server" || d == "internal/app" {
				t.Errorf("%s imports %s", pkg, d)
			}
		}
	}
	if got := strings.Join(deps("hub"), " "); got != "internal/wstoken" {
		t.Errorf("hub imports %s, want only internal/wstoken", got)
	}
	for _, pkg := range []string{"dispatch", "hub"} {
		for _, d := range deps(pkg) {
			if d == "hub" || d == "dispatch" {
				t.Errorf("%s imports %s: the two servants of channels do not know each other", pkg, d)
			}
		}
	}
}
