package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/verify"
)

// nodeMetric reads one sample of a node's /metrics, 0 when absent.
func nodeMetric(t testing.TB, n *node, sample string) float64 {
	t.Helper()
	r := n.do(t, "GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d", r.status)
	}
	for line := range strings.SplitSeq(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

// Two nodes share one schedule: thousands of deliveries, claimed by both
// at once, reach the receiver exactly once each.
func TestTwoNodesNeverSendTheSameAttemptTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("thousands of tasks")
	}
	t.Parallel()
	// 3,000 against a real Redis; the embedded one runs every script in a
	// fresh Lua state, which under -race makes 2,000 as long as 3,000 real.
	tasks := 3000
	if os.Getenv("REDIS_URL") == "" {
		tasks = 2000
	}
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	env := testEnv(t, url, prefix, "RIVERHUB_MAX_QUEUE", "1000000", "RIVERHUB_PROJECT_RATE", "0")
	a := startNode(t, env)
	b := startNode(t, env)
	rc := newReceiver(t, func(int) int { return 200 })
	setupWebhook(t, a, rc)

	client := oasClient(t, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second})
	t.Cleanup(client.CloseIdleConnections)
	body := []byte(`{"workflow":"w","messages":[{"role":"user","content":"hello"}]}`)
	// A 503 (the embedded Redis, under -race, can be that slow) is
	// retried under the task's Idempotency-Key, as a client should.
	run := rdbtest.Prefix()
	submit := func(n *node, i int) (string, error) {
		cid, _, err := submitUntilAccepted(client, n.base, n.key, body, fmt.Sprintf("%s-%d", run, i))
		return cid, err
	}

	const workers = 32
	start := time.Now()
	var (
		mu       sync.Mutex
		channels = make(map[string]bool, tasks)
		errs     []error
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < tasks; i += workers {
				n := a
				if i%2 == 1 {
					n = b
				}
				cid, err := submit(n, i)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					channels[cid] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d submissions failed, first: %v", len(errs), errs[0])
	}
	if len(channels) != tasks {
		t.Fatalf("%d distinct channels for %d submissions", len(channels), tasks)
	}

	t.Logf("%d tasks submitted in %v", tasks, time.Since(start).Round(time.Millisecond))
	// Wait until every channel has had its delivery, then a little more
	// for any duplicate still on its way.
	seen := func() int {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		s := make(map[string]bool, len(rc.hits))
		for _, h := range rc.hits {
			s[h.header.Get("mr-channel-id")] = true
		}
		return len(s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for seen() < tasks {
		if time.Now().After(deadline) {
			t.Fatalf("receiver saw deliveries for %d of %d channels", seen(), tasks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all delivered %v after the first submission", time.Since(start).Round(time.Millisecond))
	time.Sleep(1500 * time.Millisecond)

	rc.mu.Lock()
	hits := append([]hit(nil), rc.hits...)
	rc.mu.Unlock()
	byID := make(map[string]int, len(hits))
	byChannel := make(map[string]int, len(hits))
	for _, h := range hits {
		byID[h.id]++
		byChannel[h.header.Get("mr-channel-id")]++
	}
	dups := 0
	for id, n := range byID {
		if n != 1 {
			dups++
			if dups <= 5 {
				t.Errorf("webhook-id %s received %d times", id, n)
			}
		}
	}
	if dups > 0 {
		t.Errorf("%d webhook-ids received more than once", dups)
	}
	if len(hits) != tasks || len(byID) != tasks {
		t.Errorf("receiver got %d requests with %d distinct webhook-ids, want %d of each", len(hits), len(byID), tasks)
	}
	for cid := range channels {
		if byChannel[cid] != 1 {
			t.Errorf("channel %s: %d deliveries, want 1", cid, byChannel[cid])
			break
		}
	}
	// Every delivery is stored with exactly one attempt, succeeded: the
	// record is the authority (a node whose record batch outlasted its
	// wait on a slow embedded Redis may not have counted it in its
	// metrics, though Redis applied it).
	pending := make(map[string]string, len(byID)) // delivery id → last answer
	for id := range byID {
		pending[id] = ""
	}
	for deadline := time.Now().Add(2 * time.Minute); len(pending) > 0 && time.Now().Before(deadline); {
		for id := range pending {
			d := a.do(t, "GET", "/api/console/dlq/"+id, a.key, nil)
			var v struct {
				Status   string `json:"status"`
				Attempts int    `json:"attempts"`
			}
			if d.status == 200 && json.Unmarshal(d.body, &v) == nil && v.Status == "succeeded" && v.Attempts == 1 {
				delete(pending, id)
				continue
			}
			pending[id] = fmt.Sprintf("%d %s", d.status, d.body)
		}
		if len(pending) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	wrong := 0
	for id, last := range pending {
		if wrong++; wrong <= 5 {
			t.Errorf("delivery %s: %s; want succeeded after exactly one attempt", id, last)
		}
	}
	// Both nodes did part of the work (their counts of recorded
	// successful attempts, which lag the records under load).
	const okSample = `riverhub_delivery_attempts_total{verdict="ok"}`
	oa, ob := nodeMetric(t, a, okSample), nodeMetric(t, b, okSample)
	for deadline := time.Now().Add(30 * time.Second); (oa == 0 || ob == 0) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		oa, ob = nodeMetric(t, a, okSample), nodeMetric(t, b, okSample)
	}
	if oa == 0 || ob == 0 || int(oa+ob) > tasks {
		t.Errorf("successful attempts counted: node A %v, node B %v; want both > 0, at most %d together", oa, ob, tasks)
	}
}

// A node killed with SIGKILL in the middle of an attempt: once the lease
// runs out another node sends the delivery again with the same webhook-id
// and records it as succeeded.
func TestKilledNodeMidAttemptLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	const (
		timeout = 3 * time.Second
		lease   = 2*timeout + 5*time.Second // dispatch: 2 × attempt timeout + 5s
		tasks   = 3
	)
	bin := buildBinary(t)
	url := testRedisURL(t)
	prefix := rdbtest.Prefix()
	t.Cleanup(func() { dropPrefix(t, url, prefix) })
	env := func() map[string]string {
		return testEnv(t, url, prefix, "RIVERHUB_WEBHOOK_TIMEOUT", timeout.String(), "RIVERHUB_LOG_LEVEL", "info")
	}

	rc := newReceiver(t, func(int) int { return 200 })
	// Hold the first request of each webhook-id open; answer the others.
	rc.hang = func(n int) bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, h := range rc.hits[:n] {
			if h.id == rc.hits[n].id {
				return false
			}
		}
		return true
	}
	a := startProcess(t, bin, env())
	setupWebhook(t, a.node, rc)
	channels := make(map[string]bool)
	for range tasks {
		channels[a.submit(t, "w", nil)["channel_id"].(string)] = true
	}
	first := rc.waitHits(t, tasks, 5*time.Second)
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()
	killed := time.Now()
	firstAt := make(map[string]time.Time)
	for _, h := range first {
		if !channels[h.header.Get("mr-channel-id")] {
			t.Fatalf("delivery for unknown channel %s", h.header.Get("mr-channel-id"))
		}
		firstAt[h.id] = h.at
	}
	if len(firstAt) != tasks {
		t.Fatalf("node A held %d distinct deliveries, want %d", len(firstAt), tasks)
	}

	b := startProcess(t, bin, env())
	hits := rc.waitHits(t, 2*tasks, lease+8*time.Second)
	t.Logf("re-sent %v after the kill", time.Since(killed).Round(time.Millisecond))
	perID := make(map[string][]hit)
	for _, h := range hits {
		perID[h.id] = append(perID[h.id], h)
	}
	for id, hs := range perID {
		if len(hs) != 2 {
			t.Errorf("webhook-id %s sent %d times, want twice (held, then re-sent)", id, len(hs))
			continue
		}
		if hs[0].header.Get("mr-channel-id") != hs[1].header.Get("mr-channel-id") || !bytes.Equal(hs[0].body, hs[1].body) {
			t.Errorf("webhook-id %s: the re-send differs from the first attempt", id)
		}
		// Not before the dead node's attempt could have timed out: the
		// lease outlives the attempt it guards.
		if gap := hs[1].at.Sub(hs[0].at); gap < timeout || gap > lease+5*time.Second {
			t.Errorf("webhook-id %s re-sent %v after the first attempt, want after the lease (%v)", id, gap, lease)
		}
	}
	for id := range firstAt {
		deadline := time.Now().Add(5 * time.Second)
		for {
			d := b.must(t, 200, "GET", "/api/console/dlq/"+id, nil)
			if d["status"] == "succeeded" {
				h, _ := d["history"].([]any)
				if len(h) == 0 || get(t, h[len(h)-1], "success") != true || get(t, h[len(h)-1], "status_code") != 200.0 {
					t.Errorf("delivery %s history = %v, want a last attempt that succeeded with 200", id, h)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("delivery %s is %v", id, d["status"])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := rc.count(); n != 2*tasks {
		t.Errorf("receiver got %d requests in all, want %d (each delivery held once, then sent once)", n, 2*tasks)
	}
}

// After a secret rotation both secrets sign (Standard Webhooks), so
// receivers that still have the old one keep verifying; mr-signature and
// X-ModelRiver-Signature, which hold one signature each, use the new one.
func TestSecretRotationSignsWithBoth(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(int) int { return 200 })
	n := newNode(t)
	whID := setupWebhook(t, n, rc)
	rc.mu.Lock()
	oldSecret := rc.secret
	rc.mu.Unlock()
	rot := n.must(t, 200, "POST", "/api/console/webhook/"+whID+"/rotate-secret", nil)
	newSecret, _ := rot["secret"].(string)
	if newSecret == "" || newSecret == oldSecret {
		t.Fatalf("rotate-secret answered secret %q (old %q)", newSecret, oldSecret)
	}
	rc.mu.Lock()
	rc.secret = newSecret
	rc.mu.Unlock()

	n.submit(t, "w", nil)
	h := rc.waitHits(t, 1, 5*time.Second)[0]
	sigs := strings.Fields(h.header.Get("webhook-signature"))
	if len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
		t.Fatalf("webhook-signature = %q, want two space-separated v1 signatures", h.header.Get("webhook-signature"))
	}
	for _, s := range []struct{ name, secret string }{{"old", oldSecret}, {"new", newSecret}} {
		if err := verify.StandardWebhooks(h.body, h.header, s.secret, time.Minute); err != nil {
			t.Errorf("webhook-signature does not verify with the %s secret: %v", s.name, err)
		}
		// Each of the two signatures is a different secret's.
		matches := 0
		for _, sig := range sigs {
			one := h.header.Clone()
			one.Set("webhook-signature", sig)
			if verify.StandardWebhooks(h.body, one, s.secret, 0) == nil {
				matches++
			}
		}
		if matches != 1 {
			t.Errorf("%d of the signatures verify with the %s secret, want 1", matches, s.name)
		}
	}
	if !verify.MRSignature(h.body, h.header.Get("mr-signature"), newSecret) {
		t.Errorf("mr-signature does not verify with the new secret")
	}
	// X-ModelRiver-Signature holds one signature too: the new secret's.
	if err := verify.ModelRiver(h.body, h.header, newSecret, time.Minute); err != nil {
		t.Errorf("X-ModelRiver-Signature does not verify with the new secret: %v", err)
	}
	if verify.ModelRiver(h.body, h.header, oldSecret, time.Minute) == nil {
		t.Errorf("X-ModelRiver-Signature verifies with the old secret")
	}
}

// nodeVerifier checks deliveries the way the spec's Express snippet does:
// HMAC-SHA256 of JSON.stringify(JSON.parse(body)). It also compares the
// delivered data with the mock response, as JavaScript values.
const nodeVerifier = `
const crypto = require('crypto');
const fs = require('fs');
const cases = JSON.parse(fs.readFileSync(process.argv[1], 'utf8'));
const canon = (v) => Array.isArray(v) ? v.map(canon)
  : (v !== null && typeof v === 'object') ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]))
  : v;
const out = cases.map((c) => {
  const payload = JSON.parse(Buffer.from(c.body, 'base64').toString('utf8'));
  const expected = crypto.createHmac('sha256', c.secret).update(JSON.stringify(payload)).digest('hex');
  const sigOK = expected.length === c.signature.length &&
    crypto.timingSafeEqual(Buffer.from(c.signature), Buffer.from(expected));
  const dataOK = JSON.stringify(canon(payload.data)) === JSON.stringify(canon(JSON.parse(c.wantData)));
  const customerOK = JSON.stringify(canon(payload.customer_data)) === JSON.stringify(canon(JSON.parse(c.wantCustomer)));
  return {sigOK, dataOK, customerOK, restringified: JSON.stringify(payload)};
});
process.stdout.write(JSON.stringify(out));
`

// The spec's Node verifier accepts every delivery, whatever JSON the model
// output and customer_data hold.
func TestNodeVerifierAcceptsEveryDelivery(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH")
	}
	t.Parallel()
	tests := []struct {
		name     string
		response string // the workflow's mock.response, raw
		mockErr  string // the workflow's mock.error, raw JSON string
		wantData string // the delivered data, as JSON; default response
		customer string // customer_data, raw
	}{
		{
			name:     "html and separators",
			response: `{"html":"<script>alert('x')</script> & \u003c\u003e\u0026","seps":"a\u2028b\u2029c","emoji":"😀 \ud83d\ude00 é","slash":"a\/b\/c","ctl":"tab\there\u0001"}`,
			customer: `{"note":"<b>&amp;</b>\u2028","path":"\/x\/y"}`,
		},
		{
			name:     "numbers",
			response: `{"one":1.0,"big":1e21,"tenth":0.1,"int64":12345678901234567890,"huge":123456789012345678901234567890,"negzero":-0,"exp":1E+2,"tiny":5e-7,"frac":2.50}`,
			customer: `{"amount":10.00,"id":9007199254740993,"rate":1e-7}`,
		},
		{
			name:     "integer-like keys out of order",
			response: `{"b":1,"10":"ten","a":2,"2":"two","1e1":"x","-1":"neg","01":"lead","0":"zero"}`,
			customer: `{"z":1,"3":"c","1":"a","y":{"20":1,"4":2}}`,
		},
		{
			name:     "nested arrays",
			response: `{"nested":[[1,[2.50,[3e0,[]]]],{"z":[{"10":1,"2":2}]},[],[null,true,false,""]],"dup":1,"dup":2}`,
			customer: `{"rows":[[1.0],[[]],{"a":[{"1":1.10}]}]}`,
		},
		{
			name:     "edge values",
			response: `{"inf":1e400,"lone":"\ud800x\udc00","proto":{"__proto__":{"a":1}},"dupnested":{"a":1,"a":{"b":2}},"esc":"\u0041\u00e9\u007f\u001f","deep":[[[[[[[[[[{"k":[1e-7,1e+300]}]]]]]]]]]]}`,
			customer: `{"__proto__":{"x":1},"lone":"\udfff","inf":-1e999,"k":{"0":0,"00":1}}`,
		},
		{
			name:     "text answer",
			response: `"plain text <tags> & \u2028 \/ 😀"`,
			wantData: `{"content":"plain text <tags> & \u2028 / 😀"}`,
			customer: `{"s":"just a string \u2029"}`,
		},
		{
			name:     "failed generation",
			response: `null`,
			mockErr:  `"model said <no> & \u2028 \/ 😀"`,
			wantData: `null`,
			customer: `{"n":1.50}`,
		},
	}

	rc := newReceiver(t, func(int) int { return 200 })
	n := newNode(t)
	setupWebhook(t, n, rc)
	rc.mu.Lock()
	secret := rc.secret
	rc.mu.Unlock()
	cids := make([]string, len(tests))
	for i, tt := range tests {
		wf := fmt.Sprintf("tricky-%d", i)
		mock := `{"response":` + tt.response + `}`
		if tt.mockErr != "" {
			mock = `{"response":` + tt.response + `,"error":` + tt.mockErr + `}`
		}
		r := n.do(t, "POST", "/api/console/workflow", n.key, `{"name":"`+wf+`","provider":"mock","mock":`+mock+`}`)
		if r.status != 201 {
			t.Fatalf("%s: create workflow: %d %s", tt.name, r.status, r.body)
		}
		r = n.do(t, "POST", "/v1/ai/async", n.key,
			`{"workflow":"`+wf+`","messages":[{"role":"user","content":"hi"}],"customer_data":`+tt.customer+`}`)
		if r.status != 200 {
			t.Fatalf("%s: submit: %d %s", tt.name, r.status, r.body)
		}
		cids[i] = r.json(t)["channel_id"].(string)
	}
	hits := rc.waitHits(t, len(tests), 10*time.Second)
	byChannel := make(map[string]hit)
	for _, h := range hits {
		byChannel[h.header.Get("mr-channel-id")] = h
	}

	type nodeCase struct {
		Body         string `json:"body"`
		Secret       string `json:"secret"`
		Signature    string `json:"signature"`
		WantData     string `json:"wantData"`
		WantCustomer string `json:"wantCustomer"`
	}
	cases := make([]nodeCase, len(tests))
	for i, tt := range tests {
		h, ok := byChannel[cids[i]]
		if !ok {
			t.Fatalf("%s: no delivery for channel %s", tt.name, cids[i])
		}
		wantStatus := "success"
		if tt.mockErr != "" {
			wantStatus = "error"
		}
		if st := h.payload["status"]; st != wantStatus {
			t.Fatalf("%s: delivery status %v, want %s: %s", tt.name, st, wantStatus, h.body)
		}
		if tt.mockErr != "" {
			var msg string
			_ = json.Unmarshal([]byte(tt.mockErr), &msg)
			if got, _ := get(t, h.payload, "error", "message").(string); !strings.Contains(got, msg) {
				t.Errorf("%s: error message %q, want it to hold %q", tt.name, got, msg)
			}
		}
		want := tt.wantData
		if want == "" {
			want = tt.response
		}
		cases[i] = nodeCase{Body: base64.StdEncoding.EncodeToString(h.body), Secret: secret,
			Signature: h.header.Get("mr-signature"), WantData: want, WantCustomer: tt.customer}
	}
	in, _ := json.Marshal(cases)
	file := filepath.Join(t.TempDir(), "cases.json")
	if err := os.WriteFile(file, in, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(nodeBin, "-e", nodeVerifier, file).Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var res []struct {
		SigOK, DataOK, CustomerOK bool
		Restringified             string
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(tests) {
		t.Fatalf("node answered %s (%v)", out, err)
	}
	for i, tt := range tests {
		body := byChannel[cids[i]].body
		if !res[i].SigOK {
			t.Errorf("%s: the spec's Node verifier rejects the delivery\n body:      %s\n stringify: %s", tt.name, body, res[i].Restringified)
		}
		if !res[i].DataOK {
			t.Errorf("%s: data differs from the mock response %s: %s", tt.name, tt.response, body)
		}
		if !res[i].CustomerOK {
			t.Errorf("%s: customer_data differs from %s: %s", tt.name, tt.customer, body)
		}
	}
}
