package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// dashboardPath is the Grafana dashboard operators import.
const dashboardPath = "deploy/grafana/riverhub.json"

// dashboardAllowlist names the metrics the dashboard queries that a node
// in a short test cannot be made to expose, and why. Each must still be
// registered somewhere in the Go source under that exact name (checked),
// so renaming one fails the test all the same.
var dashboardAllowlist = map[string]string{
	// A *Vec that appears only once a socket is closed for not keeping up:
	// its 64-message queue must fill, or a write time out, which takes a
	// reader stalled long enough for the kernel's socket buffers to fill.
	"riverhub_hub_slow_client_closes_total": "needs a socket too slow to keep up",
}

type grafanaDashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// loadDashboard reads the dashboard and checks what Grafana needs to
// import it and draw every panel: a Prometheus data source variable that
// every panel uses, unique ids, a place on the 24-column grid that no
// other panel takes, and a titled, described panel with PromQL targets
// whose $variables are defined.
func loadDashboard(tb testing.TB) grafanaDashboard {
	tb.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		tb.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		tb.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	if dec.More() {
		tb.Fatalf("%s has data after its JSON object", dashboardPath)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 {
		tb.Errorf("title %q, uid %q, schemaVersion %d: want a title, a uid and schemaVersion >= 36", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]bool{}
	dsVar := ""
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		tb.Fatal("no template variable of type datasource for prometheus")
	}
	varRef := regexp.MustCompile(`\$\{?(\w+)`)
	ids := map[int]string{}
	var cells [][4]int // x, y, w, h of every panel placed so far
	for _, p := range d.Panels {
		name := p.Title
		if name == "" {
			name = "panel " + p.Type
			tb.Errorf("panel id %d has no title", p.ID)
		}
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			tb.Errorf("%q: id %d is not positive or is also %q's", name, p.ID, prev)
		}
		ids[p.ID] = name
		g := p.GridPos
		switch {
		case g == nil:
			tb.Errorf("%q has no gridPos", name)
			continue
		case g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24:
			tb.Errorf("%q: gridPos %+v does not fit the 24-column grid", name, *g)
		}
		for _, c := range cells {
			if g.X < c[0]+c[2] && c[0] < g.X+g.W && g.Y < c[1]+c[3] && c[1] < g.Y+g.H {
				tb.Errorf("%q: gridPos %+v overlaps another panel at %v", name, *g, c)
			}
		}
		cells = append(cells, [4]int{g.X, g.Y, g.W, g.H})
		if p.Type == "row" {
			continue
		}
		if p.Description == "" {
			tb.Errorf("%q has no description", name)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${"+dsVar+"}" {
			tb.Errorf("%q: datasource %+v, want prometheus ${%s}", name, p.Datasource, dsVar)
		}
		if len(p.Targets) == 0 {
			tb.Errorf("%q has no targets", name)
		}
		refs := map[string]bool{}
		for _, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" || t.RefID == "" || refs[t.RefID] {
				tb.Errorf("%q: target %q has no expr, or no or a repeated refId", name, t.RefID)
			}
			refs[t.RefID] = true
			for _, m := range varRef.FindAllStringSubmatch(t.Expr, -1) {
				if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
					tb.Errorf("%q: %s uses $%s, which is not a template variable", name, t.Expr, m[1])
				}
			}
		}
	}
	return d
}

// dashboardMetrics returns every riverhub_ series name the dashboard's
// queries read, as written (histograms as name_bucket and the like).
func dashboardMetrics(d grafanaDashboard) []string {
	re := regexp.MustCompile(`\briverhub_[a-zA-Z0-9_:]*`)
	set := map[string]bool{}
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			for _, m := range re.FindAllString(t.Expr, -1) {
				set[m] = true
			}
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// exposed reports whether a series name belongs to a family of the
// scrape: the family itself, or a histogram's or summary's _bucket,
// _sum or _count.
func exposed(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		if typ := families[base]; typ == "histogram" || (typ == "summary" && suf != "_bucket") {
			return true
		}
	}
	return false
}

// scrapeFamilies reads GET /metrics and returns each family's type from
// its # TYPE line.
func scrapeFamilies(tb testing.TB, n *node) map[string]string {
	tb.Helper()
	res, err := http.Get(n.base + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		tb.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// registeredInSource returns the metric names the Go source registers
// (Name: "…" in prometheus options, or prometheus.NewDesc("…"), tests
// left out).
func registeredInSource(tb testing.TB) map[string]bool {
	tb.Helper()
	re := regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(riverhub_[a-zA-Z0-9_:]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (strings.HasPrefix(e.Name(), ".") || e.Name() == "node_modules" || e.Name() == "testdata") && path != "." {
			return filepath.SkipDir
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return names
}

// The dashboard imports: valid JSON, a Prometheus data source variable,
// and panels Grafana can place and query.
func TestDashboardImports(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	if len(dashboardMetrics(d)) == 0 {
		t.Fatal("the dashboard queries no riverhub_ metric")
	}
}

// Every metric the dashboard queries is one a node exposes: the test runs
// the flows the dashboard shows (a task through a provider that asks for a
// retry, webhooks to a healthy and a failing endpoint, a socket joining a
// channel, an event-driven channel whose callback deadline fires) and
// then finds each name on GET /metrics. A metric renamed or removed in the
// code, or misspelt on the dashboard, fails it.
func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	want := dashboardMetrics(d)
	inSource := registeredInSource(t)
	for name, why := range dashboardAllowlist {
		if !slices.ContainsFunc(want, func(w string) bool { return w == name || strings.HasPrefix(w, name+"_") }) {
			t.Errorf("allowlisted %s is not on the dashboard any more: drop it from dashboardAllowlist", name)
		}
		if !inSource[name] {
			t.Errorf("allowlisted %s (%s) is registered nowhere in the Go source", name, why)
		}
	}

	// An OpenAI-compatible provider that answers the first request 429
	// with a 50 ms retry-after-ms: a retry wait, by provider and reason.
	var calls atomic.Int64
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if calls.Add(1) == 1 {
			w.Header().Set("retry-after-ms", "50")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"fine"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`))
	}))
	t.Cleanup(provider.Close)

	// A provider with limits registers riverhub_provider_limit_waiting; a
	// threshold of one failure opens the failing endpoint's circuit.
	n := newNode(t, "OPENAI_BASE_URL", provider.URL+"/v1", "OPENAI_API_KEY", "sk-test",
		"RIVERHUB_PROVIDER_LIMITS", "openai:concurrency=4,rpm=600",
		"RIVERHUB_RETRY_SCHEDULE", fastSchedule, "RIVERHUB_BREAKER_THRESHOLD", "1")
	ok := newReceiver(t, func(int) int { return 200 })
	failing := newReceiver(t, func(int) int { return 500 })
	for _, rc := range []*receiver{ok, failing} {
		body := map[string]any{"url": rc.URL + "/hook"}
		if rc == failing {
			body["events"] = []string{"task.completed"}
		}
		wh := n.must(t, 201, "POST", "/api/console/webhook", body)
		rc.mu.Lock()
		rc.secret = wh["secret"].(string)
		rc.mu.Unlock()
	}
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "mocked", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"answer": 42}}})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "remote", "provider": "openai", "model": "gpt-test"})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "event", "provider": "mock",
		"event_name": "dashboard_event", "callback_timeout_seconds": 1,
		"mock": map[string]any{"response": map[string]any{"answer": 1}}})

	// The event-driven channel first: its deadline runs while the rest go.
	event := n.submit(t, "event", nil)["channel_id"].(string)
	mocked := n.submit(t, "mocked", nil)
	remote := n.submit(t, "remote", nil)["channel_id"].(string)
	n.waitFinal(t, n.key, mocked["channel_id"].(string), 5*time.Second)
	if v := n.waitFinal(t, n.key, remote, 5*time.Second); v["status"] != "success" {
		t.Fatalf("the task through the provider: %v", v)
	}

	// A socket joins the finished channel: the join, the replayed final
	// message and the phx_close after it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws://" + strings.TrimPrefix(n.base, "http://") + "/socket/websocket?vsn=2.0.0&token=" + mocked["ws_token"].(string)
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	join, _ := json.Marshal([]any{"1", "1", mocked["websocket_channel"].(string), "phx_join", map[string]any{}})
	if err := c.Write(ctx, websocket.MessageText, join); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read before phx_close: %v", err)
		}
		if strings.Contains(string(b), `"phx_close"`) {
			break
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")

	// Deliveries and the callback deadline finish in the background: scrape
	// until every name is there.
	var missing []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := scrapeFamilies(t, n)
		missing = missing[:0]
		for _, name := range want {
			if !exposed(fams, name) && dashboardAllowlist[name] == "" {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(missing) > 0 {
		st := n.must(t, 200, "GET", "/api/v1/channels/"+event, nil)["status"]
		t.Errorf("the dashboard queries metrics GET /metrics does not expose: %s\n(ok endpoint got %d requests, failing endpoint %d; event channel %v)",
			strings.Join(missing, ", "), ok.count(), failing.count(), st)
	}
	t.Logf("%d metric names on the dashboard, %d allowlisted", len(want), len(dashboardAllowlist))
}
