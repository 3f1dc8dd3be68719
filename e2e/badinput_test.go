package e2e

import (
	"strings"
	"testing"
	"time"
)

// Every bad request gets the documented status and envelope, and the
// project's data stays as it was.
func TestBadInput(t *testing.T) {
	t.Parallel()
	n := newNode(t, "RIVERHUB_MAX_BODY_BYTES", "65536")
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock"})
	own := n.submit(t, "w", nil)["channel_id"].(string)
	n.waitFinal(t, n.key, own, 5*time.Second)

	// A second project, whose key must not see the first one's objects.
	p := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "other"})
	otherKey := p["key"].(string)
	if p["project_id"] == "" || !strings.HasPrefix(otherKey, "mr_live_") {
		t.Fatalf("project answer = %v", p)
	}
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": "https://example.com/hook"})["id"].(string)

	big := `{"workflow":"w","messages":[{"role":"user","content":"` + strings.Repeat("x", 70000) + `"}]}`
	tests := []struct {
		name       string
		method     string
		path       string
		key        string // "admin", "other", "" or a literal key
		body       any
		wantStatus int
		wantCode   string
	}{
		{"malformed JSON", "POST", "/v1/ai/async", "admin", `{"workflow": "w", "messages": [`, 400, "invalid_request"},
		{"not an object", "POST", "/v1/ai/async", "admin", `[1,2]`, 400, "invalid_request"},
		{"empty body", "POST", "/v1/ai/async", "admin", ``, 400, "invalid_request"},
		{"wrong type", "POST", "/v1/ai/async", "admin", `{"workflow": 12, "messages": []}`, 400, "invalid_request"},
		{"wrong message type", "POST", "/v1/ai/async", "admin", `{"workflow": "w", "messages": "hi"}`, 400, "invalid_request"},
		{"missing messages", "POST", "/v1/ai/async", "admin", `{"workflow": "w"}`, 400, "invalid_request"},
		{"bad role", "POST", "/v1/ai/async", "admin", `{"workflow": "w", "messages": [{"role": "robot", "content": "x"}]}`, 400, "invalid_request"},
		{"customer_data not an object", "POST", "/v1/ai/async", "admin", `{"workflow": "w", "messages": [{"role": "user", "content": "x"}], "customer_data": [1]}`, 400, "invalid_request"},
		{"trailing data", "POST", "/v1/ai/async", "admin", `{"workflow": "w", "messages": [{"role": "user", "content": "x"}]} {}`, 400, "invalid_request"},
		{"unknown workflow", "POST", "/v1/ai/async", "admin", `{"workflow": "nope", "messages": [{"role": "user", "content": "x"}]}`, 404, "not_found"},
		{"another project's workflow", "POST", "/v1/ai/async", "other", `{"workflow": "w", "messages": [{"role": "user", "content": "x"}]}`, 404, "not_found"},
		{"another project's webhook", "POST", "/v1/ai/async", "admin", `{"workflow": "w", "messages": [{"role": "user", "content": "x"}], "webhook_id": "wh_nope"}`, 404, "not_found"},
		{"oversize body", "POST", "/v1/ai/async", "admin", big, 413, "payload_too_large"},
		{"oversize sync body", "POST", "/v1/ai", "admin", big, 413, "payload_too_large"},
		{"oversize console body", "POST", "/api/console/workflow", "admin", big, 413, "payload_too_large"},
		{"missing key", "POST", "/v1/ai/async", "", `{}`, 401, "unauthorized"},
		{"unknown key", "GET", "/api/console/workflow", "mr_live_nope", nil, 401, "unauthorized"},
		{"unknown channel", "GET", "/api/v1/channels/6f1c1a3e-8d2b-4c55-9d7e-2f6a4e1b9c00", "admin", nil, 404, "not_found"},
		{"malformed channel id", "GET", "/api/v1/channels/not-a-uuid", "admin", nil, 404, "not_found"},
		{"another project's channel", "GET", "/api/v1/channels/" + own, "other", nil, 404, "not_found"},
		{"another project's channel log", "GET", "/api/console/logs/" + own, "other", nil, 404, "not_found"},
		{"reconnect to another project's channel", "POST", "/api/v1/ai/reconnect", "other", map[string]any{"channel_id": own}, 404, "not_found"},
		{"another project's webhook", "GET", "/api/console/webhook/" + wh, "other", nil, 404, "not_found"},
		{"delete another project's webhook", "DELETE", "/api/console/webhook/" + wh, "other", nil, 404, "not_found"},
		{"another project's workflow", "GET", "/api/console/workflow/w", "other", nil, 404, "not_found"},
		{"projects need the admin key", "POST", "/api/console/projects", "other", map[string]any{"name": "x"}, 403, "forbidden"},
		{"duplicate workflow", "POST", "/api/console/workflow", "admin", map[string]any{"name": "w", "provider": "mock"}, 409, "workflow_exists"},
		{"unknown provider", "POST", "/api/console/workflow", "admin", map[string]any{"name": "z", "provider": "skynet", "model": "x"}, 400, "invalid_request"},
		{"invalid schema", "POST", "/api/console/structured-output", "admin", map[string]any{"name": "s", "schema": map[string]any{"type": 12}}, 400, "invalid_schema"},
		{"webhook url not absolute", "POST", "/api/console/webhook", "admin", map[string]any{"url": "/hook"}, 400, "invalid_url"},
		{"unknown route", "GET", "/v1/nothing", "admin", nil, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := map[string]string{"admin": n.key, "other": otherKey}[tt.key]
			if key == "" {
				key = tt.key
			}
			r := n.do(t, tt.method, tt.path, key, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			e := r.json(t)
			if e["error"] != tt.wantCode {
				t.Errorf("error = %v, want %q", e["error"], tt.wantCode)
			}
			if m, _ := e["message"].(string); m == "" {
				t.Errorf("no message: %s", r.body)
			}
		})
	}
	// Nothing above disturbed the project: the channel and workflow stand.
	if v := n.must(t, 200, "GET", "/api/v1/channels/"+own, nil); v["status"] != "success" {
		t.Errorf("channel after bad input = %v", v)
	}
	if items := n.must(t, 200, "GET", "/api/console/workflow", nil)["items"].([]any); len(items) != 1 {
		t.Errorf("workflows after bad input = %v", items)
	}
}
