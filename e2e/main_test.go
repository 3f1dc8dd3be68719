package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/riverhub/riverhub/internal/app"
	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

const testAdminKey = "mr_live_test_admin_key_0123456789"

// testRedisURL is the Redis the test's nodes share: REDIS_URL when set
// (CI), else an embedded server started for this test.
func testRedisURL(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	m := miniredis.RunT(tb)
	// Aged as the server's own embedded default is, so that leases kept
	// by a TTL (an Idempotency-Key's reservation, say) run out here as
	// they do on a real Redis.
	tb.Cleanup(rdb.Age(m))
	return "redis://" + m.Addr()
}

// node is one riverhub started with app.Run on :0.
type node struct {
	base string
	key  string
	stop func()
}

// testEnv returns the environment of a test node: its own key prefix on
// the shared Redis, the admin key, and overrides.
func testEnv(tb testing.TB, redisURL, prefix string, kv ...string) map[string]string {
	tb.Helper()
	env := map[string]string{
		"RIVERHUB_ADDR":         "127.0.0.1:0",
		"REDIS_URL":             redisURL,
		"RIVERHUB_KEY_PREFIX":   prefix,
		"RIVERHUB_ADMIN_KEY":    testAdminKey,
		"RIVERHUB_TOKEN_SECRET": "test-token-secret-0123456789abcdef0123",
		"RIVERHUB_LOG_LEVEL":    "warn",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

func startNode(tb testing.TB, env map[string]string) *node {
	tb.Helper()
	return startNodeSkewed(tb, env, 0)
}

// startNodeSkewed starts a node whose own clock runs skew ahead of the
// real one (behind when negative).
func startNodeSkewed(tb testing.TB, env map[string]string, skew time.Duration) *node {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	local := func() time.Time { return time.Now().Add(skew) }
	go func() {
		done <- app.Run(ctx, app.Env{Getenv: func(k string) string { return env[k] }, Ready: ready, Local: local, OpenAPI: openAPIDoc})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		tb.Fatalf("node did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		tb.Fatal("node did not start within 10s")
	}
	var once sync.Once
	n := &node{base: "http://" + addr, key: testAdminKey}
	n.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("node stopped with: %v", err)
			}
		})
	}
	tb.Cleanup(n.stop)
	return n
}

// newNode starts a node on its own prefix of the test Redis.
func newNode(tb testing.TB, kv ...string) *node {
	tb.Helper()
	url := testRedisURL(tb)
	prefix := rdbtest.Prefix()
	tb.Cleanup(func() { dropPrefix(tb, url, prefix) })
	return startNode(tb, testEnv(tb, url, prefix, kv...))
}

func dropPrefix(tb testing.TB, url, prefix string) {
	c, _ := rdbtest.Client(url)
	if c != nil {
		rdbtest.Drop(c, prefix)
		_ = c.Close()
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		tb.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// do sends a request with the node's key (key "" = no Authorization).
func (n *node) do(tb testing.TB, method, path, key string, body any, headers ...string) response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, n.base+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := oasClient(tb, nil).Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// must sends a request as the admin and requires the status.
func (n *node) must(tb testing.TB, want int, method, path string, body any, headers ...string) map[string]any {
	tb.Helper()
	r := n.do(tb, method, path, n.key, body, headers...)
	if r.status != want {
		tb.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r.json(tb)
}

// waitFinal polls the channel until it has a final status (success,
// completed or error).
func (n *node) waitFinal(tb testing.TB, key, cid string, within time.Duration) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		r := n.do(tb, "GET", "/api/v1/channels/"+cid, key, nil)
		if r.status != 200 {
			tb.Fatalf("GET channel %s: %d %s", cid, r.status, r.body)
		}
		v := r.json(tb)
		if st := v["status"]; st == "success" || st == "completed" || st == "error" {
			return v
		}
		if time.Now().After(deadline) {
			tb.Fatalf("channel %s still %v after %v", cid, v["status"], within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func userMessages(s string) []map[string]string {
	return []map[string]string{{"role": "user", "content": s}}
}

// submit submits an async task and returns the answer.
func (n *node) submit(tb testing.TB, workflow string, extra map[string]any) map[string]any {
	tb.Helper()
	body := map[string]any{"workflow": workflow, "messages": userMessages("hello")}
	for k, v := range extra {
		body[k] = v
	}
	return n.must(tb, 200, "POST", "/v1/ai/async", body)
}

func get(tb testing.TB, m any, path ...string) any {
	tb.Helper()
	cur := m
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			var i int
			fmt.Sscan(p, &i)
			if i >= len(c) {
				tb.Fatalf("index %s out of range in %v", p, path)
			}
			cur = c[i]
		default:
			tb.Fatalf("path %v: %T at %q", path, cur, p)
		}
	}
	return cur
}

// nodeTool returns the node binary for a test that drives Node.js, after
// checking that each npm package it needs is installed in e2e/. Without
// them the test skips, unless RIVERHUB_E2E_NODE=require (CI), which makes
// that a failure: those tests cannot silently stop running there.
func nodeTool(t *testing.T, why string, packages ...string) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("RIVERHUB_E2E_NODE") == "require" {
		skip = t.Fatalf
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node is not on PATH; %s needs Node.js 20+", why)
	}
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join("e2e", "node_modules", p, "package.json")); err != nil {
			skip("the %s npm package is not installed: run `cd e2e && npm ci`", p)
		}
	}
	return node
}

// submitAsync posts an async task with client (safe to call from any
// goroutine: no testing.TB) and returns its channel id. A request that
// was answered but not accepted returns a *refusal; one that got no
// answer returns the client's error.
func submitAsync(client *http.Client, base, key string, body []byte, headers ...string) (string, error) {
	status, header, raw, err := postJSON(client, base+"/v1/ai/async", key, body, headers...)
	if err != nil {
		return "", err
	}
	return answerChannel(&refusal{base: base, status: status, header: header, body: raw})
}

// postJSON POSTs body to url with the API key and the header pairs given,
// and returns the answer.
func postJSON(client *http.Client, url, key string, body []byte, headers ...string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, raw, err
}

// answerChannel is the channel a submission's answer names, or the answer as
// a refusal.
func answerChannel(r *refusal) (string, error) {
	var v struct {
		ChannelID string `json:"channel_id"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &v) != nil || v.ChannelID == "" {
		return "", r
	}
	return v.ChannelID, nil
}

// refusal is a submission answered without a channel.
type refusal struct {
	base   string
	status int
	header http.Header
	body   []byte
}

func (r *refusal) Error() string { return fmt.Sprintf("submit to %s: %d %s", r.base, r.status, r.body) }

// openLoop calls send(i) at rate calls per second, each on its own
// goroutine (open loop: a slow answer does not slow the sender), until
// count calls are made (count 0: until ctx ends), and waits for them.
func openLoop(ctx context.Context, rate float64, count int, send func(i int)) {
	tick := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	defer wg.Wait()
	t0 := time.Now()
	for i := 0; count == 0 || i < count; i++ {
		t := time.NewTimer(time.Until(t0.Add(time.Duration(i) * tick)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wg.Go(func() { send(i) })
	}
}
