package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/verify"
)

// receiver is a real webhook endpoint: it verifies every signature scheme
// the way receivers do, and answers per a plan.
type receiver struct {
	*httptest.Server
	t      *testing.T
	secret string
	mu     sync.Mutex
	hits   []hit
	answer func(n int) int  // status for the n-th request (0-based)
	hang   func(n int) bool // hold the request until the client gives up
}

type hit struct {
	at      time.Time
	id      string
	header  http.Header
	body    []byte
	payload map[string]any
}

func newReceiver(t *testing.T, answer func(n int) int) *receiver {
	r := &receiver{t: t, answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	n := len(r.hits)
	secret := r.secret
	h := hit{at: time.Now(), id: req.Header.Get("webhook-id"), header: req.Header.Clone(), body: body}
	_ = json.Unmarshal(body, &h.payload)
	r.hits = append(r.hits, h)
	r.mu.Unlock()
	if !verify.MRSignature(body, req.Header.Get("mr-signature"), secret) {
		r.t.Errorf("mr-signature does not verify: %s", req.Header.Get("mr-signature"))
	}
	if err := verify.StandardWebhooks(body, req.Header, secret, time.Minute); err != nil {
		r.t.Errorf("webhook-signature does not verify: %v", err)
	}
	if err := verify.ModelRiver(body, req.Header, secret, time.Minute); err != nil {
		r.t.Errorf("X-ModelRiver-Signature does not verify: %v", err)
	}
	checkWebhook(r.t, req, body)
	if r.hang != nil && r.hang(n) {
		<-req.Context().Done()
		return
	}
	w.WriteHeader(r.answer(n))
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hits)
}

func (r *receiver) waitHits(t *testing.T, n int, within time.Duration) []hit {
	t.Helper()
	deadline := time.Now().Add(within)
	for r.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("receiver got %d requests, want %d", r.count(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hit(nil), r.hits...)
}

const fastSchedule = "0s,100ms,200ms,300ms,400ms,500ms,600ms,700ms"

// setupWebhook makes a mock workflow and registers rc as an endpoint.
func setupWebhook(t *testing.T, n *node, rc *receiver) string {
	t.Helper()
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"summary": "ok <b>&</b> \u2028"}}})
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": rc.URL + "/hook"})
	rc.mu.Lock()
	rc.secret = wh["secret"].(string)
	rc.mu.Unlock()
	return wh["id"].(string)
}

func TestWebhookRetriesOnScheduleThenSucceeds(t *testing.T) {
	t.Parallel()
	const failures = 3
	rc := newReceiver(t, func(n int) int {
		if n < failures {
			return 500
		}
		return 200
	})
	n := newNode(t, "RIVERHUB_RETRY_SCHEDULE", fastSchedule)
	setupWebhook(t, n, rc)
	cid := n.submit(t, "w", map[string]any{"customer_data": map[string]any{"user_id": "u1"}})["channel_id"].(string)
	hits := rc.waitHits(t, failures+1, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // nothing more may come
	if got := rc.count(); got != failures+1 {
		t.Fatalf("receiver saw %d attempts, want exactly %d", got, failures+1)
	}
	sched := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	for i := 1; i < len(hits); i++ {
		gap := hits[i].at.Sub(hits[i-1].at)
		if gap < sched[i] || gap > sched[i]+250*time.Millisecond {
			t.Errorf("attempt %d came %v after the previous one, want about %v", i+1, gap, sched[i])
		}
		if hits[i].id != hits[0].id {
			t.Errorf("webhook-id changed between attempts: %s vs %s", hits[i].id, hits[0].id)
		}
	}
	p := hits[0].payload
	if p["type"] != "task.completed" || p["channel_id"] != cid || p["status"] != "success" ||
		get(t, p, "customer_data", "user_id") != "u1" || get(t, p, "data", "summary") != "ok <b>&</b> \u2028" {
		t.Errorf("payload = %v", p)
	}
	h := hits[0].header
	if h.Get("mr-channel-id") != cid || h.Get("content-type") != "application/json" || h.Get("mr-timestamp") == "" ||
		!strings.HasPrefix(h.Get("webhook-id"), "msg_") || h.Get("webhook-timestamp") != h.Get("mr-timestamp") {
		t.Errorf("headers = %v", h)
	}
	// Every attempt is on the channel's timeline, with its status code.
	log := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)
	var codes []float64
	for _, e := range log["timeline"].([]any) {
		if m := e.(map[string]any); m["type"] == "delivery_attempt" {
			codes = append(codes, m["status_code"].(float64))
		}
	}
	if !jsonEqual(codes, []float64{500, 500, 500, 200}) {
		t.Errorf("timeline delivery attempts = %v", codes)
	}
	// The overview's statistics counted them (this minute, or the last
	// one if the attempts straddled a minute).
	st := n.must(t, 200, "GET", "/api/console/stats?minutes=2", nil)
	var ok, failed float64
	for _, m := range st["minutes"].([]any) {
		ok += m.(map[string]any)["succeeded"].(float64)
		failed += m.(map[string]any)["failed"].(float64)
	}
	if ok != 1 || failed != failures || st["p50_ms"] == nil {
		t.Errorf("stats = %v", st)
	}
	if r := n.do(t, "GET", "/api/console/stats?minutes=0", n.key, nil); r.status != 400 {
		t.Errorf("minutes=0: %d", r.status)
	}
}

func TestWebhookDeadLetterAndReplay(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	healthy := false
	rc := newReceiver(t, func(int) int {
		mu.Lock()
		defer mu.Unlock()
		if healthy {
			return 204
		}
		return 503
	})
	// The circuit would hold the later attempts back (that is tested in
	// dispatch); here the whole schedule runs.
	n := newNode(t, "RIVERHUB_RETRY_SCHEDULE", fastSchedule, "RIVERHUB_BREAKER_THRESHOLD", "100")
	whID := setupWebhook(t, n, rc)
	n.submit(t, "w", nil)
	rc.waitHits(t, 8, 15*time.Second)
	var items []any
	deadline := time.Now().Add(5 * time.Second)
	for len(items) == 0 && time.Now().Before(deadline) {
		items = n.must(t, 200, "GET", "/api/console/dlq?webhook_id="+whID, nil)["items"].([]any)
		time.Sleep(20 * time.Millisecond)
	}
	if len(items) != 1 {
		t.Fatalf("dead letters = %v", items)
	}
	if got := rc.count(); got != 8 {
		t.Errorf("receiver saw %d attempts before the dead letter, want exactly 8", got)
	}
	dl := items[0].(map[string]any)
	if dl["status"] != "dead" || dl["attempts"] != 8.0 || dl["last_status_code"] != 503.0 {
		t.Errorf("dead letter = %v", dl)
	}
	id := dl["id"].(string)
	detail := n.must(t, 200, "GET", "/api/console/dlq/"+id, nil)
	if h := detail["history"].([]any); len(h) != 8 {
		t.Errorf("history has %d attempts", len(h))
	}
	// Each attempt keeps the headers it was sent with.
	sentTo := rc.waitHits(t, 8, time.Second)
	for i, a := range detail["history"].([]any) {
		sent, _ := a.(map[string]any)["request_headers"].(map[string]any)
		for _, k := range []string{"mr-signature", "mr-timestamp", "webhook-id", "webhook-signature", "mr-channel-id", "content-type"} {
			if sent[k] != sentTo[i].header.Get(k) {
				t.Errorf("attempt %d: request_headers[%s] = %v, the receiver got %q", i+1, k, sent[k], sentTo[i].header.Get(k))
			}
		}
	}
	mu.Lock()
	healthy = true
	mu.Unlock()
	n.must(t, 200, "POST", "/api/console/dlq/"+id+"/replay", nil)
	hits := rc.waitHits(t, 9, 5*time.Second)
	if hits[8].id != id {
		t.Errorf("replay sent webhook-id %s, want %s", hits[8].id, id)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		d := n.must(t, 200, "GET", "/api/console/dlq/"+id, nil)
		if d["status"] == "succeeded" {
			if len(d["history"].([]any)) != 9 {
				t.Errorf("history after replay = %v", d["history"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replayed delivery is %v", d["status"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if items := n.must(t, 200, "GET", "/api/console/dlq", nil)["items"].([]any); len(items) != 0 {
		t.Errorf("DLQ after replay = %v", items)
	}
}

func TestWebhookHangingReceiverIsCut(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(int) int { return 200 })
	rc.hang = func(n int) bool { return n == 0 }
	n := newNode(t, "RIVERHUB_RETRY_SCHEDULE", fastSchedule, "RIVERHUB_WEBHOOK_TIMEOUT", "300ms")
	setupWebhook(t, n, rc)
	cid := n.submit(t, "w", nil)["channel_id"].(string)
	hits := rc.waitHits(t, 2, 5*time.Second)
	if gap := hits[1].at.Sub(hits[0].at); gap < 300*time.Millisecond || gap > 900*time.Millisecond {
		t.Errorf("second attempt %v after the hanging one, want timeout 300ms + 100ms", gap)
	}
	log := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)
	found := false
	for _, e := range log["timeline"].([]any) {
		if m := e.(map[string]any); m["type"] == "delivery_attempt" && strings.Contains(fmt.Sprint(m["error"]), "timeout") {
			found = true
		}
	}
	if !found {
		t.Errorf("no timed-out attempt on the timeline: %v", log["timeline"])
	}
}

// "Send a test event": a signed webhook.test delivery to one endpoint,
// followed like any delivery; another project's endpoint is not found.
func TestWebhookTestEvent(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(int) int { return 200 })
	n := newNode(t)
	whID := setupWebhook(t, n, rc)
	ans := n.must(t, 202, "POST", "/api/console/webhook/"+whID+"/test", nil)
	id, _ := ans["delivery_id"].(string)
	hits := rc.waitHits(t, 1, 5*time.Second) // the receiver checks both signatures
	if p := hits[0].payload; p["type"] != "webhook.test" || p["webhook_id"] != whID || hits[0].id != id {
		t.Errorf("test delivery %s: %v", hits[0].id, p)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.must(t, 200, "GET", "/api/console/dlq/"+id, nil)["status"] != "succeeded" {
		if time.Now().After(deadline) {
			t.Fatal("the test delivery was not recorded as succeeded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	other := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "other"})["key"].(string)
	if r := n.do(t, "POST", "/api/console/webhook/"+whID+"/test", other, nil); r.status != 404 {
		t.Errorf("another project's test: %d %s", r.status, r.body)
	}
}
