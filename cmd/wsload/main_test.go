package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/riverhub/riverhub/hub"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/internal/wstoken"
)

const testSecret = "wsload-test-secret-0123456789abcdef"

// testNode is a hub on the test Redis behind an HTTP server that also
// answers the two API calls -tokens submit makes, and records the source
// address of every socket.
type testNode struct {
	srv *httptest.Server

	mu      sync.Mutex
	sources map[string]int
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	c, prefix := rdbtest.New(t)
	tokens := wstoken.NewIssuer(testSecret, time.Hour)
	h := hub.New(c, hub.Options{Prefix: prefix, Tokens: tokens, HeartbeatTimeout: 2 * time.Second})
	h.Start()
	n := &testNode{sources: make(map[string]int)}
	pid := uuid.NewString()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/console/workflow", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{}`))
	})
	mux.HandleFunc("POST /v1/ai/async", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer test-key" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		cid := uuid.NewString()
		tok, _ := tokens.Issue(pid, cid)
		_ = json.NewEncoder(w).Encode(map[string]string{"channel_id": cid, "ws_token": tok, "websocket_channel": wstoken.Topic(pid, cid)})
	})
	mux.HandleFunc("GET /socket/websocket", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		n.mu.Lock()
		n.sources[host]++
		n.mu.Unlock()
		h.ServeHTTP(w, r)
	})
	n.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		n.srv.Close()
	})
	return n
}

func runTool(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, args, func(k string) string { return env[k] }, &out); err != nil {
		t.Fatalf("wsload %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// sourcesOr returns the loopback range when this machine can bind it, so
// the test also runs where only 127.0.0.1 is configured.
func sourcesOr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.4:0")
	if err != nil {
		t.Logf("127.0.0.2-127.0.0.4 not usable here (%v): one source address", err)
		return ""
	}
	_ = ln.Close()
	return "127.0.0.2-127.0.0.4"
}

var doneLine = regexp.MustCompile(`done: joined (\d+), open (\d+), failed or closed (\d+)`)

func TestOpensJoinsAndKeepsSockets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"minted tokens", map[string]string{"RIVERHUB_TOKEN_SECRET": testSecret}, []string{"-tokens", "mint"}},
		{"submitted tasks", map[string]string{"RIVERHUB_API_KEY": "test-key"}, []string{"-tokens", "submit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newTestNode(t)
			src := sourcesOr(t)
			// Heartbeats every 100 ms against a 2 s idle timeout (room for a machine loaded by other
			// suites, under -race), held for 3 s: sockets that did not heartbeat would be closed.
			out := runTool(t, tc.env, append(tc.args, "-nodes", n.srv.URL, "-n", "50", "-sources", src,
				"-concurrency", "8", "-heartbeat", "100ms", "-hold", "3s")...)
			if !strings.Contains(out, "ramp: 50 of 50 sockets joined") || strings.Contains(out, "failed:") {
				t.Fatalf("not every socket joined:\n%s", out)
			}
			m := doneLine.FindStringSubmatch(out)
			if m == nil || m[2] != "50" || m[3] != "0" {
				t.Fatalf("sockets did not stay open through the hold:\n%s", out)
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			if src != "" && len(n.sources) != 3 {
				t.Errorf("sockets came from %v, want 3 source addresses", n.sources)
			}
		})
	}
}

func TestReportsRefusedSockets(t *testing.T) {
	t.Parallel()
	n := newTestNode(t)
	out := runTool(t, map[string]string{"RIVERHUB_TOKEN_SECRET": "not-the-nodes-secret-0123456789abcdef"},
		"-nodes", n.srv.URL, "-n", "5", "-sources", "", "-hold", "1ms", "-quiet")
	if !strings.Contains(out, "ramp: 0 of 5 sockets joined") || !strings.Contains(out, "failed: 5 × handshake HTTP 403") {
		t.Fatalf("refusals not reported:\n%s", out)
	}
}

func TestParseSources(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     []string
		wantErr  bool
	}{
		{"none", "", nil, false},
		{"range", "127.0.0.2-127.0.0.4", []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}, false},
		{"range across an octet", "127.0.0.255-127.0.1.0", []string{"127.0.0.255", "127.0.1.0"}, false},
		{"list", "127.0.0.2, 127.0.0.7", []string{"127.0.0.2", "127.0.0.7"}, false},
		{"backwards range", "127.0.0.9-127.0.0.2", nil, true},
		{"not an address", "localhost", nil, true},
	} {
		got, err := parseSources(tc.in)
		if (err != nil) != tc.wantErr || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: parseSources(%q) = %v, %v; want %v, error %v", tc.name, tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestFlagsNeedTheirSecret(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if _, err := parse([]string{"-tokens", "mint"}, func(string) string { return "" }, &out); err == nil || !strings.Contains(err.Error(), "RIVERHUB_TOKEN_SECRET") {
		t.Errorf("mint without a secret: %v", err)
	}
	if _, err := parse([]string{"-tokens", "submit"}, func(string) string { return "" }, &out); err == nil || !strings.Contains(err.Error(), "RIVERHUB_API_KEY") {
		t.Errorf("submit without a key: %v", err)
	}
}
