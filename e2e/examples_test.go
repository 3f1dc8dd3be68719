package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/jscanon"
	"github.com/riverhub/riverhub/verify"
)

// The customer backends of examples/ run as they would for a user: as
// their own processes, against a real node, with the environment their
// README gives them.
func TestExampleBackends(t *testing.T) {
	t.Parallel()
	for _, ex := range []struct {
		name    string
		command func(t *testing.T) []string
	}{
		{"go-backend", goExampleCommand},
		{"node-backend", nodeExampleCommand},
	} {
		t.Run(ex.name, func(t *testing.T) {
			t.Parallel()
			testExample(t, ex.name, ex.command(t))
		})
	}
}

// goExampleCommand builds examples/go-backend, as `go build` would for a
// user.
func goExampleCommand(t *testing.T) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	bin := filepath.Join(t.TempDir(), "go-backend")
	out, err := exec.Command(gobin, "build", "-o", bin, "./examples/go-backend").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./examples/go-backend: %v\n%s", err, out)
	}
	return []string{bin}
}

// nodeExampleCommand runs examples/node-backend with node (Node.js 20+, no
// packages). Without node the test skips, unless RIVERHUB_E2E_NODE=require
// (CI) makes that a failure.
func nodeExampleCommand(t *testing.T) []string {
	t.Helper()
	node := nodeTool(t, "the node-backend example")
	return []string{node, filepath.Join("examples", "node-backend", "server.mjs")}
}

func testExample(t *testing.T, name string, command []string) {
	// callback_url is built from the node's public URL, which names the
	// port it listens on: the node gets a fixed free port, not :0.
	n := newNode(t, "RIVERHUB_ADDR", freeAddr(t))
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": "http://127.0.0.1:9/not-yet", "description": name})
	secret, whID := wh["secret"].(string), wh["id"].(string)
	ex := startExample(t, name, command, secret, n.key)
	n.must(t, 200, "PATCH", "/api/console/webhook/"+whID, map[string]any{"url": ex.url})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "movie_suggestion", "provider": "mock",
		"event_name": "new_movie_suggestion", "mock": map[string]any{"response": map[string]any{"title": "Inception", "year": 2010}}})

	t.Run("callback completes the channel", func(t *testing.T) {
		ans := n.submit(t, "movie_suggestion", map[string]any{"customer_data": map[string]any{"user_id": "user_456"}})
		cid := ans["channel_id"].(string)
		v := n.waitFinal(t, n.key, cid, 10*time.Second)
		if v["status"] != "completed" {
			t.Fatalf("channel %v, want completed: %v\n%s", v["status"], v, ex.out)
		}
		msg := v["message"].(map[string]any)
		data := msg["data"].(map[string]any)
		id, _ := data["id"].(string)
		at, _ := data["processed_at"].(string)
		if data["title"] != "Inception" || data["year"] != 2010.0 || data["processed_by"] != name ||
			!strings.HasPrefix(id, "rec_") || msg["task_id"] != "task_"+strings.TrimPrefix(id, "rec_") {
			t.Errorf("completed message lacks the example's enrichment: %v", msg)
		}
		if ts, err := time.Parse(time.RFC3339, at); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("processed_at = %q (%v)", at, err)
		}
		if get(t, msg, "ai_response", "data", "title") != "Inception" ||
			get(t, msg, "customer_data", "user_id") != "user_456" ||
			get(t, msg, "callback_metadata", "processed_by") != name {
			t.Errorf("completed message = %v", msg)
		}
		tl, _ := json.Marshal(n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)["timeline"])
		for _, want := range []string{`"type":"ai_generated"`, `"type":"callback"`} {
			if !bytes.Contains(tl, []byte(want)) {
				t.Errorf("timeline lacks %s: %s", want, tl)
			}
		}
	})

	t.Run("processing failure is an error callback", func(t *testing.T) {
		ans := n.submit(t, "movie_suggestion", map[string]any{"customer_data": map[string]any{"simulate_failure": true}})
		v := n.waitFinal(t, n.key, ans["channel_id"].(string), 10*time.Second)
		if v["status"] != "error" || get(t, v, "message", "error", "code") != "processing_failed" {
			t.Fatalf("channel = %v, want error processing_failed", v)
		}
	})

	t.Run("refuses unsigned, forged and stale webhooks", func(t *testing.T) {
		body := []byte(`{"type":"task.completed","workflow":"w","status":"success","channel_id":"c1","data":{"a":1}}`)
		// Not what JSON.stringify writes: a verifier that signs a
		// re-encoding instead of the bytes received refuses it.
		spaced := []byte(`{"type": "task.completed", "channel_id": "c2", "data": {"a": 1.0, "b": "\u00e9"}}`)
		now := strconv.FormatInt(time.Now().Unix(), 10)
		stale := strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)
		for _, tc := range []struct {
			name      string
			body      []byte
			sig, ts   string
			status    int
			errorCode string
		}{
			{"no signature", body, "", now, 401, "invalid_signature"},
			{"wrong secret", body, verify.SignMR(body, secret+"x"), now, 401, "invalid_signature"},
			{"other body", body, verify.SignMR(append([]byte(" "), body...), secret), now, 401, "invalid_signature"},
			{"stale timestamp", body, verify.SignMR(body, secret), stale, 401, "stale_timestamp"},
			{"no timestamp", body, verify.SignMR(body, secret), "", 401, "stale_timestamp"},
			{"valid", body, verify.SignMR(body, secret), now, 200, ""},
			{"valid, not compact", spaced, verify.SignMR(spaced, secret), now, 200, ""},
		} {
			status, answer := ex.deliver(t, tc.body, tc.sig, tc.ts, "msg_sig_"+strings.ReplaceAll(tc.name, " ", "_"))
			if status != tc.status || tc.errorCode != "" && answer["error"] != tc.errorCode {
				t.Errorf("%s: %d %v, want %d %s", tc.name, status, answer, tc.status, tc.errorCode)
			}
		}
	})

	// Code written for the hosted service checks X-ModelRiver-Signature;
	// the examples accept it when mr-signature is absent.
	t.Run("accepts X-ModelRiver-Signature instead of mr-signature", func(t *testing.T) {
		// A body as riverhub writes it (what JSON.stringify writes), with
		// data that encoding/json would spell differently.
		withData, err := jscanon.Canonical([]byte(`{"type":"task.completed","workflow":"w","status":"success","channel_id":"c3",` +
			`"data":{"b":1,"10":2,"big":1e21,"tenth":0.1,"one":1.0,"s":"\u00e9\u2028<>&\/"},"customer_data":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		noData := []byte(`{"type":"task.ai_generated","event":"e","channel_id":"c4","ai_response":{"data":{"title":"x"}},"customer_data":{}}`)
		nullData := []byte(`{"type":"task.completed","workflow":"w","status":"error","channel_id":"c5","data":null,"error":{"message":"m","code":"generation_failed"}}`)
		changed := bytes.Replace(withData, []byte(`"b":1`), []byte(`"b":2`), 1)
		now, nowS := time.Now().Unix(), strconv.FormatInt(time.Now().Unix(), 10)
		staleAt := time.Now().Add(-10 * time.Minute).Unix()
		mr := func(body []byte, secret string, ts int64) map[string]string {
			return map[string]string{"X-ModelRiver-Signature": verify.SignModelRiver(ts, body, secret),
				"X-ModelRiver-Timestamp": strconv.FormatInt(ts, 10)}
		}
		with := func(h map[string]string, kv ...string) map[string]string {
			out := map[string]string{}
			for k, v := range h {
				out[k] = v
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == "" {
					delete(out, kv[i])
				} else {
					out[kv[i]] = kv[i+1]
				}
			}
			return out
		}
		for _, tc := range []struct {
			name      string
			body      []byte
			headers   map[string]string
			status    int
			errorCode string
		}{
			{"data", withData, mr(withData, secret, now), 200, ""},
			{"no data: the whole body", noData, mr(noData, secret, now), 200, ""},
			{"null data: the whole body", nullData, mr(nullData, secret, now), 200, ""},
			{"both schemes", withData, with(mr(withData, secret, now), "mr-signature", verify.SignMR(withData, secret), "mr-timestamp", nowS), 200, ""},
			{"wrong secret", withData, mr(withData, secret+"x", now), 401, "invalid_signature"},
			{"data changed", changed, mr(withData, secret, now), 401, "invalid_signature"},
			{"whole body changed, no data", bytes.Replace(noData, []byte("c4"), []byte("c6"), 1), mr(noData, secret, now), 401, "invalid_signature"},
			{"timestamp changed", withData, with(mr(withData, secret, now), "X-ModelRiver-Timestamp", strconv.FormatInt(now+1, 10)), 401, "invalid_signature"},
			{"no timestamp", withData, with(mr(withData, secret, now), "X-ModelRiver-Timestamp", ""), 401, "invalid_signature"},
			{"stale timestamp", withData, mr(withData, secret, staleAt), 401, "stale_timestamp"},
			// A wrong mr-signature is final: the scheme that covers the
			// whole body is not traded for one that covers data only.
			{"wrong mr-signature beside it", changed, with(mr(changed, secret, now), "mr-signature", verify.SignMR(withData, secret), "mr-timestamp", nowS), 401, "invalid_signature"},
		} {
			h := with(tc.headers, "webhook-id", "msg_hosted_"+strings.ReplaceAll(tc.name, " ", "_"))
			status, answer := ex.deliverHeaders(t, tc.body, h)
			if status != tc.status || tc.errorCode != "" && answer["error"] != tc.errorCode {
				t.Errorf("%s: %d %v, want %d %s", tc.name, status, answer, tc.status, tc.errorCode)
			}
		}
	})

	// Against a stand-in riverhub, the answers a real one gives rarely.
	t.Run("dedupes deliveries, retries 5xx, stops on 409", func(t *testing.T) {
		cb := newCallbackStandIn(t, n.key, map[string][]int{"/retry": {503, 200}, "/conflict": {409}})
		hook := func(path string) []byte {
			b, _ := json.Marshal(map[string]any{"type": "task.ai_generated", "event": "e", "channel_id": "ch" + path,
				"ai_response": map[string]any{"data": map[string]any{"title": "x"}}, "callback_url": cb.URL + path,
				"callback_required": true, "customer_data": map[string]any{}})
			return b
		}
		now := strconv.FormatInt(time.Now().Unix(), 10)
		for i, want := range []any{nil, true} { // the second delivery is a retry of the first
			status, answer := ex.deliver(t, hook("/retry"), verify.SignMR(hook("/retry"), secret), now, "msg_retry")
			if status != 200 || answer["received"] != true || answer["duplicate"] != want {
				t.Errorf("delivery %d: %d %v, want received, duplicate=%v", i+1, status, answer, want)
			}
		}
		calls := cb.wait(t, "/retry", 2)
		if !bytes.Equal(calls[0], calls[1]) {
			t.Errorf("the retry sent different bytes:\n%s\n%s", calls[0], calls[1])
		}
		var sent map[string]any
		if err := json.Unmarshal(calls[0], &sent); err != nil || get(t, sent, "data", "processed_by") != name ||
			get(t, sent, "data", "title") != "x" || sent["task_id"] == nil {
			t.Errorf("callback body = %s", calls[0])
		}

		ex.deliver(t, hook("/conflict"), verify.SignMR(hook("/conflict"), secret), now, "msg_conflict")
		cb.wait(t, "/conflict", 1)
		ex.waitOutput(t, regexp.MustCompile(`callback refused: the channel no longer waits.*callback_already_received`))
		time.Sleep(700 * time.Millisecond) // longer than the first retry's backoff
		if got := len(cb.calls("/conflict")); got != 1 {
			t.Errorf("a 409 was retried: %d calls", got)
		}
		if got := len(cb.calls("/retry")); got != 2 {
			t.Errorf("/retry got %d calls, want 2 (the duplicate delivery must not call back again)", got)
		}
	})
}

// example is a running example backend.
type example struct {
	url string // its webhook URL
	out *syncBuffer
}

var listeningRE = regexp.MustCompile(`listening on (http://[^\s"]+)`)

// startExample runs command with the example's environment, waits until it
// listens, and stops it (SIGINT, as Ctrl-C) when the test ends.
func startExample(t *testing.T, name string, command []string, secret, apiKey string) *example {
	t.Helper()
	ex := &example{out: &syncBuffer{}}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), "RIVERHUB_WEBHOOK_SECRET="+secret, "RIVERHUB_API_KEY="+apiKey,
		"LISTEN_ADDR=127.0.0.1:0", "PROCESSING_DELAY_MS=0")
	cmd.Stdout, cmd.Stderr = ex.out, ex.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", name, ex.out)
		}
	})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s exited with %v after an interrupt", name, err)
			}
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not stop within 5s of an interrupt", name)
		}
	})
	deadline := time.After(10 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(ex.out.String()); m != nil {
			ex.url = m[1]
			return ex
		}
		select {
		case err := <-exited:
			t.Fatalf("%s exited before listening: %v\n%s", name, err, ex.out)
		case <-deadline:
			t.Fatalf("%s did not listen within 10s:\n%s", name, ex.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deliver POSTs a webhook to the example as riverhub does ("" leaves a
// header out) and returns its answer.
func (ex *example) deliver(t *testing.T, body []byte, sig, ts, webhookID string) (int, map[string]any) {
	t.Helper()
	h := map[string]string{}
	for k, v := range map[string]string{"mr-signature": sig, "mr-timestamp": ts, "webhook-id": webhookID} {
		if v != "" {
			h[k] = v
		}
	}
	return ex.deliverHeaders(t, body, h)
}

// deliverHeaders POSTs a webhook with these headers besides Content-Type.
func (ex *example) deliverHeaders(t *testing.T, body []byte, headers map[string]string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", ex.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("deliver to the example: %v", err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var answer map[string]any
	_ = json.Unmarshal(raw, &answer)
	return res.StatusCode, answer
}

// waitOutput waits until the example's output matches re.
func (ex *example) waitOutput(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !re.MatchString(ex.out.String()); {
		if time.Now().After(deadline) {
			t.Fatalf("the example never logged %s:\n%s", re, ex.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// callbackStandIn answers callbacks with scripted statuses per path (200
// once the script runs out) and records their bodies.
type callbackStandIn struct {
	*httptest.Server
	mu     sync.Mutex
	script map[string][]int
	got    map[string][][]byte
}

func newCallbackStandIn(t *testing.T, apiKey string, script map[string][]int) *callbackStandIn {
	cb := &callbackStandIn{script: script, got: map[string][][]byte{}}
	cb.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer "+apiKey || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("callback headers: %v", r.Header)
		}
		cb.mu.Lock()
		cb.got[r.URL.Path] = append(cb.got[r.URL.Path], body)
		status := 200
		if s := cb.script[r.URL.Path]; len(s) > 0 {
			status, cb.script[r.URL.Path] = s[0], s[1:]
		}
		cb.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		switch status {
		case 200:
			_, _ = io.WriteString(w, `{"received":true}`)
		case 409:
			_, _ = io.WriteString(w, `{"error":"callback_already_received","message":"a different callback"}`)
		default:
			_, _ = io.WriteString(w, `{"error":"internal","message":"try again"}`)
		}
	}))
	t.Cleanup(cb.Close)
	return cb
}

func (cb *callbackStandIn) calls(path string) [][]byte {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return append([][]byte(nil), cb.got[path]...)
}

// wait waits for n callbacks on path.
func (cb *callbackStandIn) wait(t *testing.T, path string, n int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if c := cb.calls(path); len(c) >= n {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s got %d callbacks, want %d", path, len(cb.calls(path)), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// syncBuffer collects a subprocess's output for concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
