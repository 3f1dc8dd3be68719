package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/verify"
)

// docBlock returns the fenced code block of lang in docs/webhooks.md that
// contains marker: the tests run the snippets users copy.
func docBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("docs", "webhooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?ms)^```" + lang + "\n(.*?)^```$")
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("docs/webhooks.md has no %s block with %q", lang, marker)
	return ""
}

// expressHarness runs the docs' Express snippet (%s) as it is, in a
// node:http server standing in for Express: express.json() is what it
// does for a JSON body (the verify hook gets the raw bytes, then req.body
// is JSON.parse of their UTF-8 decoding), app.post registers the handler.
// Requests to /{endpoint}/webhooks/ai run it with that endpoint's secret
// (set with POST /_secrets); GET /_results lists every request and the
// status the snippet answered.
const expressHarness = `
const http = require('http');
const handlers = {};
let jsonOptions = {};
const express = { json: (options = {}) => ({ jsonOptions: options }) };
const app = {
  use(mw) { if (mw && mw.jsonOptions) jsonOptions = mw.jsonOptions; },
  post(path, handler) { handlers[path] = handler; },
};

%s

const secrets = {};
const results = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const buf = Buffer.concat(chunks);
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/_secrets') {
      Object.assign(secrets, JSON.parse(buf.toString('utf8')));
      return res.end('{}');
    }
    if (path === '/_results') {
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify(results));
    }
    const m = /^\/([^/]+)(\/.*)$/.exec(path);
    const handler = m && handlers[m[2]];
    if (!handler) {
      res.statusCode = 404;
      return res.end();
    }
    const record = { endpoint: m[1], headers: req.headers, body: buf.toString('base64') };
    const reply = {
      code: 200,
      status(code) { this.code = code; return this; },
      json(v) {
        record.status = this.code;
        results.push(record);
        res.statusCode = this.code;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(v));
      },
    };
    try {
      if (jsonOptions.verify) jsonOptions.verify(req, reply, buf, 'utf-8');
      req.body = JSON.parse(buf.toString('utf8'));
    } catch (e) {
      return reply.status(400).json({ error: 'invalid_json' });
    }
    process.env.RIVERHUB_WEBHOOK_SECRET = secrets[m[1]] || '';
    handler(req, reply);
  });
});
server.listen(0, '127.0.0.1', () => console.log('listening on http://127.0.0.1:' + server.address().port));
`

// expressReceiver is the docs' Express snippet, running in Node.js.
type expressReceiver struct {
	url string
}

type expressResult struct {
	Endpoint string            `json:"endpoint"`
	Headers  map[string]string `json:"headers"`
	Body     []byte            `json:"body"` // base64 in the JSON
	Status   int               `json:"status"`
}

func startExpressReceiver(t *testing.T, nodeBin string) *expressReceiver {
	t.Helper()
	script := filepath.Join(t.TempDir(), "receiver.cjs")
	src := fmt.Sprintf(expressHarness, docBlock(t, "js", "function verifyModelRiverSignature"))
	if err := os.WriteFile(script, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(nodeBin, script)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("receiver output:\n%s", out)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m := listeningRE.FindStringSubmatch(out.String()); m != nil {
			return &expressReceiver{url: m[1]}
		}
		select {
		case <-exited:
			t.Fatalf("the receiver exited before listening:\n%s", out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver did not listen within 10s:\n%s", out)
		}
	}
}

func (rx *expressReceiver) post(t *testing.T, path string, body []byte, headers map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", rx.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header[k] = []string{v}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func (rx *expressReceiver) results(t *testing.T) []expressResult {
	t.Helper()
	res, err := http.Get(rx.url + "/_results")
	if err != nil {
		t.Fatalf("receiver results: %v", err)
	}
	defer res.Body.Close()
	var out []expressResult
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("receiver results: %v", err)
	}
	return out
}

func (rx *expressReceiver) waitResults(t *testing.T, n int, within time.Duration) []expressResult {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := rx.results(t)
		if len(r) >= n {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver got %d requests, want %d", len(r), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Receivers written for the hosted service verify X-ModelRiver-Signature:
// the docs' Express snippet, run by Node.js on every delivery riverhub
// sends, accepts them all (data re-serialised by JSON.stringify, or the raw
// body without data), including during a secret rotation; so do the docs'
// Python function and verify.ModelRiver.
func TestModelRiverSignatureNodeReceiver(t *testing.T) {
	t.Parallel()
	nodeBin := nodeTool(t, "the X-ModelRiver-Signature receiver test")
	rx := startExpressReceiver(t, nodeBin)
	n := newNode(t)

	// Two endpoints, so that every payload is also delivered to one whose
	// secret was rotated.
	secrets := map[string]string{}
	var mainID, oldSecret string
	for _, name := range []string{"main", "rotated"} {
		wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": rx.url + "/" + name + "/webhooks/ai"})
		secrets[name] = wh["secret"].(string)
		if name == "main" {
			mainID = wh["id"].(string)
			continue
		}
		oldSecret = secrets[name]
		rot := n.must(t, 200, "POST", "/api/console/webhook/"+wh["id"].(string)+"/rotate-secret", nil)
		secrets[name] = rot["secret"].(string)
		if secrets[name] == oldSecret || secrets[name] == "" {
			t.Fatalf("rotate-secret answered %v", rot)
		}
	}
	sec, _ := json.Marshal(secrets)
	if status := rx.post(t, "/_secrets", sec, nil); status != 200 {
		t.Fatalf("set the receiver's secrets: %d", status)
	}
	so := n.must(t, 201, "POST", "/api/console/structured-output", map[string]any{"name": "flag", "schema": map[string]any{"type": "boolean"}})

	tests := []struct {
		name     string
		workflow string // the workflow's fields besides name and provider, raw JSON
		raw      bool   // the signature covers the raw body (no data)
	}{
		{"numbers", `"mock":{"response":{"big":1e21,"bigger":1.5e300,"tenth":0.1,"negzero":-0,"one":1.0,"int64":12345678901234567890,"past_safe":9007199254740993,"tiny":5e-7,"small":1e-7,"exp":1E+2,"frac":2.50,"inf":1e400}}`, false},
		{"key order", `"mock":{"response":{"b":1,"10":"ten","a":2,"2":"two","1e1":"x","-1":"neg","01":"lead","0":"zero","nested":{"z":{"y":1,"3":[{"k":1,"1":0}]},"4294967294":"last index","4294967295":"not an index"}}}`, false},
		{"unicode and escapes", `"mock":{"response":{"html":"<script>alert('x')</script> & \u003c\u003e","seps":"a\u2028b\u2029c","emoji":"😀 \ud83d\ude00 é ü 中文","slash":"a\/b","ctl":"tab\there\u0001\u001f\u007f","quote":"\"q\" \\ back","lone":"\ud800x\udc00","\u00e9t\u00e9":"key"}}`, false},
		{"nested, duplicate keys, __proto__", `"mock":{"response":{"nested":[[1,[2.50,[3e0,[]]]],{"z":[{"10":1,"2":2}]},[],[null,true,false,""]],"dup":1,"dup":{"x":2},"__proto__":{"a":1}}}`, false},
		{"text answer", `"mock":{"response":"plain text <tags> & \u2028 \/ 😀 1e21"}`, false},
		{"false data", `"structured_output_id":"` + so["id"].(string) + `","mock":{"response":false}`, false},
		{"failed generation (data null)", `"mock":{"response":null,"error":"model said <no> & \u2028 😀"}`, true},
		{"task.ai_generated (no data)", `"event_name":"review","mock":{"response":{"big":1e21,"b":1,"1":0,"s":"\u2028é"}}`, true},
	}
	byChannel := map[string]string{} // channel id → case name
	raw := map[string]bool{}         // case name → signs the raw body
	for i, tc := range tests {
		wf := fmt.Sprintf("hosted-%d", i)
		r := n.do(t, "POST", "/api/console/workflow", n.key, `{"name":"`+wf+`","provider":"mock",`+tc.workflow+`}`)
		if r.status != 201 {
			t.Fatalf("%s: create workflow: %d %s", tc.name, r.status, r.body)
		}
		ans := n.submit(t, wf, nil)
		byChannel[ans["channel_id"].(string)] = tc.name
		raw[tc.name] = tc.raw
	}
	// webhook.test has no data either.
	n.must(t, 202, "POST", "/api/console/webhook/"+mainID+"/test", nil)
	raw["webhook.test"] = true

	want := 2*len(tests) + 1
	got := rx.waitResults(t, want, 30*time.Second)
	type pyCase struct {
		Name      string `json:"name"`
		Body      []byte `json:"body"`
		Signature string `json:"signature"`
		Timestamp string `json:"timestamp"`
		Secret    string `json:"secret"`
		Want      bool   `json:"want"`
	}
	var py []pyCase
	seen := map[string]int{}
	for _, r := range got {
		var p struct {
			Type      string          `json:"type"`
			ChannelID string          `json:"channel_id"`
			Data      json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(r.Body, &p); err != nil {
			t.Fatalf("delivery body: %v: %s", err, r.Body)
		}
		name := byChannel[p.ChannelID]
		if p.Type == "webhook.test" {
			name = "webhook.test"
		}
		what := name + " to " + r.Endpoint
		seen[what]++
		sig, ts := r.Headers["x-modelriver-signature"], r.Headers["x-modelriver-timestamp"]
		if r.Status != 200 {
			t.Errorf("%s: the docs' Express snippet answered %d\nbody %s\nX-ModelRiver-Timestamp %q X-ModelRiver-Signature %q",
				what, r.Status, r.Body, ts, sig)
		}
		if ts == "" || ts != r.Headers["mr-timestamp"] || ts != r.Headers["webhook-timestamp"] {
			t.Errorf("%s: X-ModelRiver-Timestamp %q, mr-timestamp %q, webhook-timestamp %q: want one value", what, ts, r.Headers["mr-timestamp"], r.Headers["webhook-timestamp"])
		}
		// What is signed: data alone, or the whole body.
		signsRaw := bytes.Equal(verify.ModelRiverPayload(r.Body), r.Body)
		if signsRaw != raw[name] {
			t.Errorf("%s: signs the raw body = %v, want %v (data %s)", what, signsRaw, raw[name], p.Data)
		}
		h := http.Header{}
		for k, v := range r.Headers {
			h.Set(k, v)
		}
		secret := secrets[r.Endpoint]
		if err := verify.ModelRiver(r.Body, h, secret, time.Minute); err != nil {
			t.Errorf("%s: verify.ModelRiver: %v", what, err)
		}
		py = append(py, pyCase{what, r.Body, sig, ts, secret, true})
		if r.Endpoint == "rotated" {
			// One signature, the new secret's, as mr-signature.
			if verify.ModelRiver(r.Body, h, oldSecret, time.Minute) == nil {
				t.Errorf("%s: X-ModelRiver-Signature verifies with the old secret, want the new one only", what)
			}
			if !verify.MRSignature(r.Body, r.Headers["mr-signature"], secret) {
				t.Errorf("%s: mr-signature is not the new secret's", what)
			}
			py = append(py, pyCase{what + ", old secret", r.Body, sig, ts, oldSecret, false})
		}
	}
	for _, tc := range tests {
		for _, ep := range []string{"main", "rotated"} {
			if seen[tc.name+" to "+ep] != 1 {
				t.Errorf("%s to %s: %d deliveries, want 1", tc.name, ep, seen[tc.name+" to "+ep])
			}
		}
	}
	if len(got) != want {
		t.Errorf("the receiver got %d requests, want %d (one per delivery: none refused and retried)", len(got), want)
	}

	// The snippet is not an accept-all: it refuses a delivery whose data
	// was changed, or that lacks a header.
	var sample expressResult
	for _, r := range got {
		if r.Endpoint == "main" && byChannel[channelOf(r.Body)] == "numbers" {
			sample = r
		}
	}
	if sample.Body == nil {
		t.Fatal("no delivery of the numbers case to main")
	}
	headers := map[string]string{"X-ModelRiver-Signature": sample.Headers["x-modelriver-signature"], "X-ModelRiver-Timestamp": sample.Headers["x-modelriver-timestamp"]}
	tampered := bytes.Replace(sample.Body, []byte(`"big":1e+21`), []byte(`"big":1e+22`), 1)
	if status := rx.post(t, "/main/webhooks/ai", tampered, headers); status != 401 {
		t.Errorf("data changed: the snippet answered %d, want 401", status)
	}
	py = append(py, pyCase{"data changed", tampered, headers["X-ModelRiver-Signature"], headers["X-ModelRiver-Timestamp"], secrets["main"], false})
	if status := rx.post(t, "/main/webhooks/ai", sample.Body, map[string]string{"X-ModelRiver-Signature": headers["X-ModelRiver-Signature"]}); status != 401 {
		t.Errorf("no X-ModelRiver-Timestamp: the snippet answered %d, want 401", status)
	}
	if status := rx.post(t, "/main/webhooks/ai", sample.Body, headers); status != 200 {
		t.Errorf("the same delivery again: the snippet answered %d, want 200", status)
	}

	runDocsPython(t, py)
}

func channelOf(body []byte) string {
	var p struct {
		ChannelID string `json:"channel_id"`
	}
	_ = json.Unmarshal(body, &p)
	return p.ChannelID
}

// pythonHarness runs the docs' Python functions (%s) on cases read from
// stdin and prints the names of those whose result is not the expected.
const pythonHarness = `
%s

import base64, sys
wrong = []
for c in json.load(sys.stdin):
    got = verify_modelriver_signature(base64.b64decode(c['body']), c['signature'], c['timestamp'], c['secret'])
    if got != c['want']:
        wrong.append(c['name'])
print(json.dumps(wrong))
`

// runDocsPython checks the cases with the docs' Python verifier; it skips
// without python3 (unless RIVERHUB_E2E_NODE=require, as for node).
func runDocsPython[C any](t *testing.T, cases []C) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("RIVERHUB_E2E_NODE") == "require" {
			t.Fatal("python3 is not on PATH")
		}
		t.Log("python3 is not on PATH: the docs' Python verifier is not checked")
		return
	}
	in, _ := json.Marshal(cases)
	cmd := exec.Command(python, "-c", fmt.Sprintf(pythonHarness, docBlock(t, "python", "def verify_modelriver_signature")))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var wrong []string
	if err := json.Unmarshal(out, &wrong); err != nil {
		t.Fatalf("python answered %q: %v", out, err)
	}
	for _, w := range wrong {
		t.Errorf("the docs' Python verifier got %s wrong", w)
	}
	t.Logf("the docs' Python verifier checked %d cases", len(cases))
}
