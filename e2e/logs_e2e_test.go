package e2e

import (
	"fmt"
	"net/url"
	"testing"
	"time"
)

// GET /api/console/logs over HTTP: filters, cursor pages, bad input, and
// another project's key seeing none of it.
func TestLogsAPI(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	for _, wf := range []map[string]any{
		{"name": "ok", "provider": "mock", "mock": map[string]any{"response": map[string]any{"a": 1}}},
		{"name": "bad", "provider": "mock", "mock": map[string]any{"error": "provider down"}},
		{"name": "ev", "provider": "mock", "event_name": "thing", "mock": map[string]any{"response": map[string]any{"a": 1}}},
	} {
		n.must(t, 201, "POST", "/api/console/workflow", wf)
	}
	var ids []string
	for i := range 9 {
		ans := n.submit(t, []string{"ok", "bad", "ev"}[i%3], nil)
		ids = append(ids, ans["channel_id"].(string))
	}
	for i, id := range ids {
		want := []string{"success", "error", "ai_generated"}[i%3]
		deadline := time.Now().Add(5 * time.Second)
		for n.must(t, 200, "GET", "/api/v1/channels/"+id, nil)["status"] != want {
			if time.Now().After(deadline) {
				t.Fatalf("channel %s never reached %s", id, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // the status indexes move with the batched acks
	page := func(q url.Values) map[string]any {
		return n.must(t, 200, "GET", "/api/console/logs?"+q.Encode(), nil)
	}
	collect := func(q url.Values) []string {
		var out []string
		for {
			p := page(q)
			for _, it := range p["items"].([]any) {
				out = append(out, it.(map[string]any)["channel_id"].(string))
			}
			c, _ := p["next_cursor"].(string)
			if c == "" {
				return out
			}
			q.Set("cursor", c)
		}
	}
	newest := func(keep func(i int) bool) string {
		var want []string
		for i := len(ids) - 1; i >= 0; i-- {
			if keep(i) {
				want = append(want, ids[i])
			}
		}
		return fmt.Sprint(want)
	}
	for name, tc := range map[string]struct {
		q    url.Values
		keep func(int) bool
	}{
		"all, 2 a page": {url.Values{"limit": {"2"}}, func(int) bool { return true }},
		"workflow":      {url.Values{"workflow": {"ok"}}, func(i int) bool { return i%3 == 0 }},
		"status":        {url.Values{"status": {"error"}, "limit": {"1"}}, func(i int) bool { return i%3 == 1 }},
		"event_name":    {url.Values{"event_name": {"thing"}, "status": {"ai_generated"}}, func(i int) bool { return i%3 == 2 }},
		"future":        {url.Values{"from": {time.Now().Add(time.Hour).Format(time.RFC3339)}}, func(int) bool { return false }},
	} {
		if got := fmt.Sprint(collect(tc.q)); got != newest(tc.keep) {
			t.Errorf("%s: got %s, want %s", name, got, newest(tc.keep))
		}
	}
	item := page(url.Values{"limit": {"1"}})["items"].([]any)[0].(map[string]any)
	if item["channel_id"] != ids[8] || item["workflow"] != "ev" || item["event_name"] != "thing" || item["status"] != "ai_generated" {
		t.Errorf("newest item = %v", item)
	}
	for _, q := range []string{"status=done", "from=yesterday", "cursor=%21%21", "limit=0"} {
		if r := n.do(t, "GET", "/api/console/logs?"+q, n.key, nil); r.status != 400 || r.json(t)["error"] != "invalid_request" {
			t.Errorf("?%s: %d %s", q, r.status, r.body)
		}
	}
	other := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "other"})["key"].(string)
	r := n.do(t, "GET", "/api/console/logs", other, nil)
	if items := r.json(t)["items"].([]any); r.status != 200 || len(items) != 0 {
		t.Errorf("another project sees %d channels (%d)", len(items), r.status)
	}
}
