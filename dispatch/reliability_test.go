package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/internal/netguard"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
	"github.com/riverhub/riverhub/verify"
)

// relHooks is the Endpoints of a test: webhooks per project, changeable
// while the engine runs.
type relHooks struct {
	mu    sync.Mutex
	hooks map[string][]project.Webhook
}

func (h *relHooks) ProjectWebhooks(_ context.Context, pid string) ([]project.Webhook, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.hooks[pid]), nil
}

func (h *relHooks) set(pid string, ws ...project.Webhook) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hooks == nil {
		h.hooks = make(map[string][]project.Webhook)
	}
	h.hooks[pid] = ws
}

const relSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func relHook(id, url string) project.Webhook {
	return project.Webhook{ID: id, URL: url, Events: []string{"task.completed", "task.ai_generated"},
		Enabled: true, Secret: relSecret}
}

// relLog is the types of a channel's delivery log entries, in order.
func relLog(t *testing.T, e *Engine, cid string) []string {
	t.Helper()
	entries, err := e.ChannelLog(context.Background(), cid)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		var m struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(en, &m); err != nil {
			t.Fatalf("log entry %s: %v", en, err)
		}
		out = append(out, m.Type)
	}
	return out
}

// testPartitions is how many partitions the tests' engines split the
// delivery schedule into, unless a test says: RIVERHUB_TEST_PARTITIONS, or
// 1. The whole suite runs either way:
//
//	RIVERHUB_TEST_PARTITIONS=4 go test ./dispatch/
func testPartitions() int {
	n, _ := strconv.Atoi(os.Getenv("RIVERHUB_TEST_PARTITIONS"))
	return max(n, 1)
}

// newRelEngine builds an engine on the test's Redis prefix and shuts it
// down when the test ends (before the receivers close, since cleanups run
// last-registered first). Its partitions are testPartitions' unless o
// sets them.
func newRelEngine(t *testing.T, c redis.UniversalClient, prefix string, hooks Endpoints, o Options) *Engine {
	t.Helper()
	if o.Partitions == 0 {
		o.Partitions = testPartitions()
	}
	o.Prefix = prefix
	o.Endpoints = hooks
	o.Log = zerolog.Nop()
	if o.Schedule == nil {
		o.Schedule = []time.Duration{0, 20 * time.Millisecond, 20 * time.Millisecond}
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	e := New(c, o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e
}

// relReceiver is a webhook endpoint that records requests, their
// concurrency, and answers with handle.
type relReceiver struct {
	*httptest.Server
	quit chan struct{}

	mu          sync.Mutex
	reqs        []relRequest
	inFlight    int
	maxInFlight int
	handle      relHandler
}

// relHandler answers the n-th request (0-based) of rc.
type relHandler func(rc *relReceiver, n int, w http.ResponseWriter, r *http.Request)

type relRequest struct {
	at     time.Time
	header http.Header
	body   []byte
}

func newRelReceiver(t *testing.T, handle relHandler) *relReceiver {
	t.Helper()
	rc := &relReceiver{quit: make(chan struct{}), handle: handle}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.reqs)
		rc.reqs = append(rc.reqs, relRequest{at: time.Now(), header: r.Header.Clone(), body: body})
		rc.inFlight++
		rc.maxInFlight = max(rc.maxInFlight, rc.inFlight)
		rc.mu.Unlock()
		defer func() {
			rc.mu.Lock()
			rc.inFlight--
			rc.mu.Unlock()
		}()
		if err := verify.StandardWebhooks(body, r.Header, relSecret, time.Minute); err != nil {
			t.Errorf("delivery does not verify: %v", err)
		}
		rc.handle(rc, n, w, r)
	}))
	t.Cleanup(func() { close(rc.quit); rc.Close() })
	return rc
}

// relStatus answers every request with code.
func relStatus(code int) relHandler {
	return func(_ *relReceiver, _ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// hang holds the request until the client gives up or the test ends.
func (rc *relReceiver) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-rc.quit:
	}
}

func (rc *relReceiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *relReceiver) requests() []relRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

func (rc *relReceiver) waitCount(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for rc.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("receiver got %d requests within %v, want %d", rc.count(), within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func relEvent(pid, cid string) Event {
	return Event{Type: "task.completed", ProjectID: pid, ChannelID: cid,
		Body: json.RawMessage(`{"type":"task.completed","channel_id":"` + cid + `","status":"success","data":{"ok":true}}`)}
}

// relWaitStatus polls the delivery until it has the status.
func relWaitStatus(t *testing.T, e *Engine, pid, id, want string, within time.Duration) Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d, err := e.Get(context.Background(), pid, id)
		if err == nil && d.Status == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery %s: status %q (err %v) after %v, want %q", id, d.Status, err, within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func relInDLQ(t *testing.T, e *Engine, pid, id string) bool {
	t.Helper()
	page, err := e.DeadLetters(context.Background(), pid, "", project.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range page.Items {
		if d.ID == id {
			return true
		}
	}
	return false
}

// Production mode checks the address of every attempt: a receiver on
// loopback is refused on each of them and the delivery is dead-lettered,
// unless the operator allows the range.
func TestProductionGuardRefusesLoopbackUnlessAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		host     string // how the webhook URL names the receiver
		allow    []netip.Prefix
		want     string // final status
		wantHits int
	}{
		{name: "refused", host: "127.0.0.1", want: "dead", wantHits: 0},
		{name: "refused by name", host: "localhost", want: "dead", wantHits: 0},
		{name: "allowed", host: "127.0.0.1", allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, want: "succeeded", wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := newRelReceiver(t, relStatus(200))
			c, prefix := rdbtest.New(t)
			hooks := &relHooks{}
			port := rc.URL[strings.LastIndex(rc.URL, ":")+1:]
			hooks.set("p1", relHook("wh_1", "http://"+tt.host+":"+port+"/hook"))
			e := newRelEngine(t, c, prefix, hooks, Options{Production: true, Guard: &netguard.Guard{Allow: tt.allow}})
			e.Start()
			if err := e.Enqueue(context.Background(), relEvent("p1", "ch1")); err != nil {
				t.Fatal(err)
			}
			id := DeliveryID("task.completed", "ch1", "wh_1")
			d := relWaitStatus(t, e, "p1", id, tt.want, 5*time.Second)
			time.Sleep(100 * time.Millisecond) // nothing more may come
			if got := rc.count(); got != tt.wantHits {
				t.Errorf("receiver got %d requests, want %d", got, tt.wantHits)
			}
			if tt.want != "dead" {
				return
			}
			if d.Attempts != 3 || len(d.History) != 3 {
				t.Errorf("dead delivery has %d attempts (%d in history), want the whole schedule of 3", d.Attempts, len(d.History))
			}
			for i, a := range d.History {
				if !strings.Contains(a.Error, "not allowed") || a.Success {
					t.Errorf("attempt %d: error %q, success %v; want a refusal saying 'not allowed'", i+1, a.Error, a.Success)
				}
			}
			if !relInDLQ(t, e, "p1", id) {
				t.Errorf("delivery %s is not in the dead-letter list", id)
			}
			want := "delivery_attempt,delivery_attempt,delivery_attempt,dead_lettered"
			if got := strings.Join(relLog(t, e, "ch1"), ","); got != want {
				t.Errorf("timeline = %s, want %s", got, want)
			}
		})
	}
}

// A receiver that redirects is a failed attempt: the redirect target never
// sees the delivery (a redirect must not carry a signed body past the
// address checks).
func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	target := newRelReceiver(t, relStatus(200))
	rc := newRelReceiver(t, func(_ *relReceiver, _ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusFound)
	})
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", rc.URL+"/hook"))
	e := newRelEngine(t, c, prefix, hooks, Options{Schedule: []time.Duration{0, 20 * time.Millisecond}})
	e.Start()
	if err := e.Enqueue(context.Background(), relEvent("p1", "ch1")); err != nil {
		t.Fatal(err)
	}
	d := relWaitStatus(t, e, "p1", DeliveryID("task.completed", "ch1", "wh_1"), "dead", 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := target.count(); n != 0 {
		t.Errorf("the redirect target got %d requests, want none", n)
	}
	if n := rc.count(); n != 2 {
		t.Errorf("receiver got %d requests, want 2 (the schedule)", n)
	}
	if d.LastStatus == nil || *d.LastStatus != 302 {
		t.Errorf("last status = %v, want 302", d.LastStatus)
	}
	for i, a := range d.History {
		if a.Success || a.StatusCode != 302 || !strings.Contains(a.Error, "302") {
			t.Errorf("attempt %d = %+v, want a failure with status 302", i+1, a)
		}
	}
}

// Enqueueing the same event again (a completion finished twice, a retry of
// enqueue after a crash) does not send it twice, before or after it was
// delivered.
func TestEnqueueTwiceDeliversOnce(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, relStatus(204))
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", rc.URL))
	e := newRelEngine(t, c, prefix, hooks, Options{})
	ctx := context.Background()
	ev := relEvent("p1", "ch1")
	for range 2 {
		if err := e.Enqueue(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	e.Start()
	id := DeliveryID("task.completed", "ch1", "wh_1")
	relWaitStatus(t, e, "p1", id, "succeeded", 5*time.Second)
	if err := e.Enqueue(ctx, ev); err != nil { // once more, after the success
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	if got := reqs[0].header.Get("webhook-id"); got != id {
		t.Errorf("webhook-id = %s, want %s", got, id)
	}
	d, err := e.Get(ctx, "p1", id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != "succeeded" || d.Attempts != 1 {
		t.Errorf("delivery is %s after %d attempts, want succeeded after 1", d.Status, d.Attempts)
	}
}

// One endpoint that hangs holds at most PerEndpoint attempts; deliveries
// to another endpoint keep arriving at once.
func TestSlowEndpointDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	slow := newRelReceiver(t, func(rc *relReceiver, _ int, _ http.ResponseWriter, r *http.Request) { rc.hang(r) })
	fast := newRelReceiver(t, relStatus(200))
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p_slow", relHook("wh_slow", slow.URL))
	hooks.set("p_fast", relHook("wh_fast", fast.URL))
	// Few slots: a delivery waiting for its busy endpoint must not hold one.
	e := newRelEngine(t, c, prefix, hooks, Options{PerEndpoint: 1, Concurrency: 3, Timeout: 10 * time.Second})
	e.Start()
	ctx := context.Background()
	for i := range 5 {
		if err := e.Enqueue(ctx, relEvent("p_slow", fmt.Sprintf("slow-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	slow.waitCount(t, 1, 3*time.Second)
	time.Sleep(300 * time.Millisecond) // the other slow deliveries bounce off the limit meanwhile

	const n = 5
	start := time.Now()
	for i := range n {
		if err := e.Enqueue(ctx, relEvent("p_fast", fmt.Sprintf("fast-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	fast.waitCount(t, n, 2*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("deliveries to the healthy endpoint took %v", took)
	}
	for i := range n {
		relWaitStatus(t, e, "p_fast", DeliveryID("task.completed", fmt.Sprintf("fast-%d", i), "wh_fast"), "succeeded", 2*time.Second)
	}
	slow.mu.Lock()
	got, maxIn := len(slow.reqs), slow.maxInFlight
	slow.mu.Unlock()
	if got != 1 || maxIn != 1 {
		t.Errorf("hanging endpoint got %d requests, %d at once; want 1 (PerEndpoint)", got, maxIn)
	}
	// The slow deliveries waiting for the endpoint were not charged an attempt.
	for i := 1; i < 5; i++ {
		d, err := e.Get(ctx, "p_slow", DeliveryID("task.completed", fmt.Sprintf("slow-%d", i), "wh_slow"))
		if err != nil {
			t.Fatal(err)
		}
		if d.Attempts != 0 {
			t.Errorf("waiting delivery slow-%d has %d attempts, want 0", i, d.Attempts)
		}
	}
}

// A delivery whose endpoint was disabled or deleted after it was enqueued
// is dead-lettered at once, saying why, without a request.
func TestGoneEndpointDeadLetters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(h *relHooks, w project.Webhook)
		want   string
	}{
		{name: "disabled", change: func(h *relHooks, w project.Webhook) { w.Enabled = false; h.set("p1", w) }, want: "endpoint disabled"},
		{name: "deleted", change: func(h *relHooks, _ project.Webhook) { h.set("p1") }, want: "endpoint deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := newRelReceiver(t, relStatus(200))
			c, prefix := rdbtest.New(t)
			hooks := &relHooks{}
			w := relHook("wh_1", rc.URL)
			hooks.set("p1", w)
			e := newRelEngine(t, c, prefix, hooks, Options{})
			if err := e.Enqueue(context.Background(), relEvent("p1", "ch1")); err != nil {
				t.Fatal(err)
			}
			tt.change(hooks, w)
			e.Start()
			id := DeliveryID("task.completed", "ch1", "wh_1")
			d := relWaitStatus(t, e, "p1", id, "dead", 5*time.Second)
			if !strings.Contains(d.LastError, tt.want) {
				t.Errorf("last error = %q, want it to say %q", d.LastError, tt.want)
			}
			if d.Attempts != 1 {
				t.Errorf("attempts = %d, want 1 (no retries against a gone endpoint)", d.Attempts)
			}
			if !relInDLQ(t, e, "p1", id) {
				t.Errorf("delivery %s is not in the dead-letter list", id)
			}
			if n := rc.count(); n != 0 {
				t.Errorf("receiver got %d requests, want none", n)
			}
		})
	}
}

// Shutdown cuts an attempt that hangs once its context ends; the delivery
// goes back to the schedule uncharged, and the next node sends it at once
// with the same webhook-id.
func TestShutdownGivesHangingAttemptBack(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, func(rc *relReceiver, n int, w http.ResponseWriter, r *http.Request) {
		if n == 0 {
			rc.hang(r)
			return
		}
		w.WriteHeader(200)
	})
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", rc.URL))
	e := newRelEngine(t, c, prefix, hooks, Options{Timeout: 10 * time.Second})
	e.Start()
	ctx := context.Background()
	if err := e.Enqueue(ctx, relEvent("p1", "ch1")); err != nil {
		t.Fatal(err)
	}
	rc.waitCount(t, 1, 3*time.Second)

	const bound = 300 * time.Millisecond
	sctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	_ = e.Shutdown(sctx)
	if took := time.Since(start); took > bound+time.Second {
		t.Fatalf("Shutdown took %v with a %v bound", took, bound)
	}

	id := DeliveryID("task.completed", "ch1", "wh_1")
	d, err := e.Get(ctx, "p1", id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != "pending" || d.Attempts != 0 || len(d.History) != 0 {
		t.Errorf("after shutdown: status %s, %d attempts, history %v; want pending, 0, none", d.Status, d.Attempts, d.History)
	}
	if _, err := c.ZScore(ctx, e.partOf("wh_1").dueOf("p1"), id).Result(); err != nil {
		t.Errorf("delivery is not in the due set: %v", err)
	}
	if _, err := c.ZScore(ctx, e.partOf("wh_1").leaseKey, id).Result(); err != redis.Nil {
		t.Errorf("delivery is still leased (err %v)", err)
	}

	// The next node takes it up without waiting for a lease.
	e2 := newRelEngine(t, c, prefix, hooks, Options{Timeout: 10 * time.Second})
	restart := time.Now()
	e2.Start()
	rc.waitCount(t, 2, 3*time.Second)
	if took := time.Since(restart); took > 2*time.Second {
		t.Errorf("the next node sent it after %v", took)
	}
	reqs := rc.requests()
	if reqs[1].header.Get("webhook-id") != id {
		t.Errorf("webhook-id = %s on the resend, want %s", reqs[1].header.Get("webhook-id"), id)
	}
	d = relWaitStatus(t, e2, "p1", id, "succeeded", 3*time.Second)
	if d.Attempts != 1 {
		t.Errorf("attempts = %d, want 1", d.Attempts)
	}
}

// relClaims reads riverhub_deliveries_claimed_total from the registry.
func relClaims(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "riverhub_deliveries_claimed_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no riverhub_deliveries_claimed_total")
	return 0
}

// A backlog for one hanging endpoint must neither load Redis nor delay the
// deliveries of other endpoints. Each backlogged delivery whose endpoint is
// at its limit is claimed and put back every busyDelay, so the claimer
// spends its rounds on the backlog (Redis runs two scripts per delivery
// every 100ms) and a delivery due for a healthy endpoint waits behind every
// backlogged one due before it.
func TestSlowEndpointBacklogDoesNotDelayOthers(t *testing.T) {
	t.Parallel()
	const backlog = 3000
	slow := newRelReceiver(t, func(rc *relReceiver, _ int, _ http.ResponseWriter, r *http.Request) { rc.hang(r) })
	fast := newRelReceiver(t, relStatus(200))
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p_slow", relHook("wh_slow", slow.URL))
	const n = 5 // healthy endpoints, one delivery each
	var healthy []project.Webhook
	for i := range n {
		healthy = append(healthy, relHook(fmt.Sprintf("wh_fast%d", i), fast.URL))
	}
	hooks.set("p_fast", healthy...)
	reg := prometheus.NewRegistry()
	e := newRelEngine(t, c, prefix, hooks, Options{PerEndpoint: 1, Timeout: 10 * time.Second, Registerer: reg})
	ctx := context.Background()
	for i := range backlog {
		if err := e.Enqueue(ctx, relEvent("p_slow", fmt.Sprintf("slow-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.Start()
	slow.waitCount(t, 1, 5*time.Second)
	// The backlog settles: every delivery has been claimed once and parked
	// (on this node or back in the schedule a timeout later). On a slow
	// machine the first pass over 3,000 takes a while; that is not churn.
	settle := time.Now().Add(20 * time.Second)
	for {
		n, err := c.ZCount(context.Background(), e.partOf("wh_slow").dueOf("p_slow"), "-inf", strconv.FormatInt(time.Now().UnixMilli(), 10)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(settle) {
			t.Fatalf("%d deliveries still due after 20s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	// While the one allowed attempt hangs, the backlog waits quietly.
	before := relClaims(t, reg)
	time.Sleep(time.Second)
	if churn := relClaims(t, reg) - before; churn > backlog/10 {
		t.Errorf("%v deliveries claimed in one second while the only allowed attempt hangs (backlog %d)", churn, backlog)
	}

	start := time.Now()
	if err := e.Enqueue(ctx, relEvent("p_fast", "fast")); err != nil {
		t.Fatal(err)
	}
	fast.waitCount(t, n, 15*time.Second)
	// Behind the backlog they would wait for the hanging attempt (10 s);
	// 1 s leaves room for a loaded machine and a Cluster's round trips
	// (394 ms seen once in CI's cluster pass).
	if took := time.Since(start); took > time.Second {
		t.Errorf("with %d deliveries waiting for a hanging endpoint, deliveries to healthy ones took %v", backlog, took)
	}
}

// DisableWebhook turns an endpoint off, as project.Store does.
func (h *relHooks) DisableWebhook(_ context.Context, pid, id, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.hooks[pid] {
		if h.hooks[pid][i].ID == id {
			h.hooks[pid][i].Enabled = false
			h.hooks[pid][i].DisabledReason = reason
		}
	}
	return nil
}

// relOneEndpoint is an engine on the test's Redis whose project "p1" has
// one endpoint, "wh_1", at url.
func relOneEndpoint(t *testing.T, url string, o Options) (*Engine, *relHooks, redis.UniversalClient) {
	t.Helper()
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", url))
	return newRelEngine(t, c, prefix, hooks, o), hooks, c
}

// relEnqueueN enqueues the task.completed events of channels <cid>00,
// <cid>01, … for project pid.
func relEnqueueN(t *testing.T, e *Engine, pid, cid string, n int) {
	t.Helper()
	for i := range n {
		if err := e.Enqueue(context.Background(), relEvent(pid, fmt.Sprintf("%s%02d", cid, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// Put-offs remembered for an endpoint that have come due are forgotten,
// not brought forward (they have been claimed again): a take passes them,
// and a full list drops them to make room.
func TestDueDeferredAreForgotten(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	now := time.Now()
	e := newRelEngine(t, c, prefix, &relHooks{}, Options{Now: func() time.Time { return now }})
	e.mu.Lock()
	defer e.mu.Unlock()
	at := func(d time.Duration) time.Time { return now.Add(d) }
	e.deferred["wh"] = []claimed{{id: "a", at: at(-time.Millisecond)}, {id: "b", at: at(time.Second)}, {id: "c", at: at(-time.Second)}, {id: "d", at: at(2 * time.Second)}}
	ids := func(ds []claimed) (out []string) {
		for _, d := range ds {
			out = append(out, d.id)
		}
		return out
	}
	if got := ids(e.takeDeferred("wh", 1)); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("took %v, want [b]", got)
	}
	if got := ids(e.takeDeferred("wh", 5)); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("took %v, want [d]", got)
	}
	if _, ok := e.deferred["wh"]; ok {
		t.Fatalf("left %v", ids(e.deferred["wh"]))
	}
	for i := range maxDeferred {
		e.deferred["wh"] = append(e.deferred["wh"], claimed{id: fmt.Sprint(i), at: at(-time.Duration(i+1) * time.Millisecond)})
	}
	e.deferred["wh"] = append(e.deferred["wh"], claimed{id: "later", at: at(time.Second)})
	e.pruneDeferred("wh", now)
	if got := ids(e.deferred["wh"]); !slices.Equal(got, []string{"later"}) {
		t.Fatalf("after pruning %d entries: %d left", maxDeferred+1, len(got))
	}
}
