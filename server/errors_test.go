package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/apperr"
)

func TestFailEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantMsg    string // a substring of the message
		retryAfter string
	}{
		{"invalid", apperr.Invalidf("workflow is required"), 400, "invalid_request", "workflow is required", ""},
		{"unauthorized", apperr.New(apperr.Unauthorized, "unauthorized", "key"), 401, "unauthorized", "key", ""},
		{"forbidden", apperr.New(apperr.Forbidden, "forbidden", "admin only"), 403, "forbidden", "admin only", ""},
		{"not found", apperr.NotFoundf("workflow %q not found", "w"), 404, "not_found", `"w"`, ""},
		{"conflict", apperr.New(apperr.Conflict, "workflow_exists", "taken"), 409, "workflow_exists", "taken", ""},
		{"too large", tooLarge(1024), 413, "payload_too_large", "1024", ""},
		{"rate limited", &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited", Message: "slow down", RetryAfter: 3}, 429, "rate_limited", "slow down", "3"},
		{"unavailable", &apperr.Error{Kind: apperr.Unavailable, Code: "busy", Message: "queue full", RetryAfter: 1}, 503, "busy", "queue full", "1"},
		{"wrapped app error", fmt.Errorf("create: %w", apperr.New(apperr.Conflict, "project_exists", "p")), 409, "project_exists", "p", ""},
		{"max bytes error", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 99}), 413, "payload_too_large", "99", ""},
		{"internal error hides its text", errors.New("dial tcp 10.0.0.5:6379: password=hunter2"), 500, "internal", "internal error", ""},
	}
	s := &Server{Deps: Deps{Log: zerolog.Nop()}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			c, _ := gin.CreateTestContext(w)
			c.Request = httptest.NewRequest(http.MethodGet, "/x", nil)
			s.fail(c, tt.err)
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			var env map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
				t.Fatalf("body %q is not JSON: %v", w.Body, err)
			}
			if len(env) != 2 || env["error"] != tt.wantCode {
				t.Errorf("envelope = %v, want exactly {error: %q, message}", env, tt.wantCode)
			}
			if msg, _ := env["message"].(string); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
			}
			if strings.Contains(w.Body.String(), "hunter2") || strings.Contains(w.Body.String(), "10.0.0.5") {
				t.Errorf("internal error text reached the client: %s", w.Body)
			}
			if got := w.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
		})
	}
}

func TestListParamsFromQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		query     string
		wantLimit int // -1 = refused
		wantCur   string
	}{
		{"none", "", 0, ""},
		{"limit", "limit=10", 10, ""},
		{"cursor", "limit=5&cursor=abc", 5, "abc"},
		{"large limit passes to the store, which clamps", "limit=100000", 100000, ""},
		{"zero", "limit=0", -1, ""},
		{"negative", "limit=-3", -1, ""},
		{"not a number", "limit=ten", -1, ""},
		{"fraction", "limit=1.5", -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = httptest.NewRequest(http.MethodGet, "/api/console/workflow?"+tt.query, nil)
			p, err := listParams(c)
			if tt.wantLimit == -1 {
				wantInvalidRequest(t, err, "limit")
				return
			}
			if err != nil || p.Limit != tt.wantLimit || p.Cursor != tt.wantCur {
				t.Errorf("listParams = %+v, %v; want limit %d cursor %q", p, err, tt.wantLimit, tt.wantCur)
			}
		})
	}
}
