package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The console test drives the real console in headless Chromium
// (e2e/console_browser.mjs, playwright-core with the system's chromium)
// against a real node and two real webhook receivers. It needs node, the
// e2e packages (cd e2e && npm ci) and chromium; without them it skips,
// unless RIVERHUB_E2E_NODE=require (CI), where that is a failure.

// consoleTooling finds node and chromium, or skips (fails when required).
func consoleTooling(t *testing.T) (node, chromium string) {
	t.Helper()
	node = nodeTool(t, "the console test (e2e/console_browser.mjs)", "playwright-core")
	skip := t.Skipf
	if os.Getenv("RIVERHUB_E2E_NODE") == "require" {
		skip = t.Fatalf
	}
	chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if chromium, err = exec.LookPath("chromium"); err != nil {
			skip("chromium is not installed (apt-get install -y chromium); the console test needs a headless browser")
		}
	}
	return node, chromium
}

// deliveryReceiver answers each delivery (by webhook-id) per a plan over
// its attempt number, and remembers what it answered and what it got.
// GET /received?id=<webhook-id> lists the requests it got for that
// delivery, so the browser test can compare the headers the console shows
// with the ones that arrived.
type deliveryReceiver struct {
	*httptest.Server
	plan func(attempt int) int
	mu   sync.Mutex
	byID map[string][]int      // webhook-id -> statuses answered, in order
	got  map[string][]received // webhook-id -> requests, in order
}

// received is one request as the receiver got it: header names in lower
// case (first value each) and the body.
type received struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func newDeliveryReceiver(t *testing.T, plan func(attempt int) int) *deliveryReceiver {
	r := &deliveryReceiver{plan: plan, byID: map[string][]int{}, got: map[string][]received{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && req.URL.Path == "/received" {
			r.mu.Lock()
			list := append([]received{}, r.got[req.URL.Query().Get("id")]...)
			r.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(list)
			return
		}
		body, _ := io.ReadAll(req.Body)
		checkWebhook(t, req, body)
		hdr := make(map[string]string, len(req.Header))
		for k, v := range req.Header {
			hdr[strings.ToLower(k)] = v[0]
		}
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		st := r.plan(len(r.byID[id]))
		r.byID[id] = append(r.byID[id], st)
		r.got[id] = append(r.got[id], received{Headers: hdr, Body: string(body)})
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *deliveryReceiver) answers(id string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.byID[id]...)
}

func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RIVERHUB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("e2e", "artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(dir, "console"))
	if err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(dir) // this run's screenshots only
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// consoleProject creates a project on the node and returns its key.
func consoleProject(t *testing.T, n *node, name string) string {
	t.Helper()
	proj := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": name})
	key, _ := proj["key"].(string)
	if !strings.HasPrefix(key, "mr_live_") {
		t.Fatalf("project key = %q", key)
	}
	return key
}

// The console is served by every node, without a key: "/" leads to it.
func TestConsoleIsServed(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noFollow.Get(n.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/console/" {
		t.Fatalf("GET / = %d to %q, want 302 to /console/", res.StatusCode, res.Header.Get("Location"))
	}
	r := n.do(t, "GET", "/console/", "", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `src="js/app.js"`) {
		t.Fatalf("GET /console/ = %d: %.200s", r.status, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP = %q", csp)
	}
	// The API stays JSON, with or without the console.
	if r := n.do(t, "GET", "/api/console/workflow", "", nil); r.status != 401 {
		t.Errorf("GET /api/console/workflow without a key = %d, want 401", r.status)
	}
}

// Not parallel: the browser's CPU use would disturb the timing assertions
// of the webhook tests that run in parallel.
func TestConsoleInBrowser(t *testing.T) {
	node, chromium := consoleTooling(t)
	flaky := newDeliveryReceiver(t, func(attempt int) int {
		if attempt == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	// Fails every attempt of the (8-step) schedule; the replay gets through.
	dead := newDeliveryReceiver(t, func(attempt int) int {
		if attempt < 8 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	// A threshold of 100 keeps the endpoint circuits closed, so the dead
	// delivery runs the whole schedule.
	n := newNode(t, "RIVERHUB_RETRY_SCHEDULE", fastSchedule, "RIVERHUB_BREAKER_THRESHOLD", "100")
	key := consoleProject(t, n, "console-e2e")
	// Endpoint health has nodes of its own, whose settings would disturb the
	// steps above: one opens a circuit after 2 failures (and never disables),
	// the other disables an endpoint failing for 1 s (and never opens).
	failing := newDeliveryReceiver(t, func(int) int { return http.StatusInternalServerError })
	breaker := newNode(t, "RIVERHUB_RETRY_SCHEDULE", fastSchedule, "RIVERHUB_BREAKER_THRESHOLD", "2",
		"RIVERHUB_ENDPOINT_DISABLE_AFTER", "0")
	disabling := newNode(t, "RIVERHUB_RETRY_SCHEDULE", fastSchedule, "RIVERHUB_BREAKER_THRESHOLD", "100",
		"RIVERHUB_ENDPOINT_DISABLE_AFTER", "1s")
	disablingKey := consoleProject(t, disabling, "console-disabling")
	art := artifactsDir(t)

	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "console_browser.mjs"))
	cmd.Env = append(os.Environ(),
		"RIVERHUB_CONSOLE_URL="+n.base,
		"RIVERHUB_CONSOLE_KEY="+key,
		"RIVERHUB_FLAKY_URL="+flaky.URL+"/hook",
		"RIVERHUB_DEAD_URL="+dead.URL+"/hook",
		"RIVERHUB_FLAKY_RECEIVED="+flaky.URL+"/received",
		"RIVERHUB_DEAD_RECEIVED="+dead.URL+"/received",
		"RIVERHUB_BREAKER_CONSOLE_URL="+breaker.base,
		"RIVERHUB_BREAKER_CONSOLE_KEY="+consoleProject(t, breaker, "console-breaker"),
		"RIVERHUB_DISABLING_CONSOLE_URL="+disabling.base,
		"RIVERHUB_DISABLING_CONSOLE_KEY="+disablingKey,
		"RIVERHUB_FAILING_URL="+failing.URL+"/hook",
		"RIVERHUB_ARTIFACTS="+art,
		"CHROMIUM_PATH="+chromium,
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	var oks int
	var replayed, reenabled string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "FAIL "):
			t.Error(line)
		case strings.HasPrefix(line, "ok "):
			oks++
			t.Log(line)
		case strings.HasPrefix(line, "replayed "):
			replayed = strings.TrimPrefix(line, "replayed ")
		case strings.HasPrefix(line, "reenabled "):
			reenabled = strings.TrimPrefix(line, "reenabled ")
		default:
			t.Log(line)
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the browser script did not finish within 120 s; stderr:\n%s", stderr.String())
	}
	if err != nil {
		t.Errorf("the browser script failed (%v); stderr:\n%s", err, stderr.String())
	}
	if oks < 30 {
		t.Errorf("only %d browser checks passed; stderr:\n%s", oks, stderr.String())
	}
	t.Logf("browser checks took %v; screenshots in %s", time.Since(start).Round(100*time.Millisecond), art)

	// What the receivers saw confirms the clicks did what they said: the
	// replay from the dead-letter page really re-sent the delivery.
	if replayed == "" {
		t.Fatal("the script replayed no dead letter")
	}
	if got := dead.answers(replayed); len(got) != 9 || got[8] != http.StatusOK {
		t.Errorf("the replayed delivery %s was answered %v, want 8 failures then 200", replayed, got)
	}

	// The Enable button on the automatically disabled endpoint turned it on.
	if reenabled == "" {
		t.Fatal("the script enabled no automatically disabled endpoint")
	}
	// It still answers 500, so retries made after the Enable may have
	// disabled it again since, 1 s later: then it must have been disabled
	// anew, not left as it was.
	id, firstDisabled, _ := strings.Cut(reenabled, " ")
	w := disabling.do(t, "GET", "/api/console/webhook/"+id, disablingKey, nil).json(t)
	first, _ := time.Parse(time.RFC3339Nano, firstDisabled)
	again, _ := w["disabled_at"].(string)
	if at, err := time.Parse(time.RFC3339Nano, again); w["enabled"] != true && (err != nil || !at.After(first)) {
		t.Errorf("after Enable the endpoint is enabled=%v, disabled_at=%v (first disabled at %s), disabled_reason=%v",
			w["enabled"], w["disabled_at"], firstDisabled, w["disabled_reason"])
	}
}
