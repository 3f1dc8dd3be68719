package e2e

import (
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/verify"
)

// isoRig is a two-node deployment with two projects: the default one
// (quiet) and project D (noisy), each with a mock workflow "w" and one
// healthy receiver; D can be given endpoints that never answer.
type isoRig struct {
	nodes          [2]*node
	quietKey       string
	noisyKey       string
	quiet, noisyOK *arrivals
	hang           *hangingEndpoints
	client         *http.Client
	closeOnce      sync.Once
	release        func()
}

// newIsoRig starts two nodes on their own prefix of the test Redis with
// the settings in kv. Teardown is ordered: the hanging endpoints let go
// first (or each node's shutdown would wait for attempts they hold), then
// the nodes stop, then the receivers close and the keys are dropped.
func newIsoRig(tb testing.TB, kv ...string) *isoRig {
	tb.Helper()
	url := testRedisURL(tb)
	prefix := rdbtest.Prefix()
	tb.Cleanup(func() { dropPrefix(tb, url, prefix) })
	r := &isoRig{
		quiet: newArrivals(tb), noisyOK: newArrivals(tb), hang: newHangingEndpoints(tb),
		client: oasClient(tb, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 30 * time.Second}),
	}
	env := testEnv(tb, url, prefix, append([]string{"RIVERHUB_LOG_LEVEL", "error"}, kv...)...)
	r.nodes[0] = startNode(tb, env)
	r.nodes[1] = startNode(tb, env)
	r.release = r.hang.release
	tb.Cleanup(r.close)

	a := r.nodes[0]
	r.quietKey = a.key
	r.noisyKey = a.must(tb, 201, "POST", "/api/console/projects", map[string]any{"name": "noisy"})["key"].(string)
	for _, p := range []struct {
		key string
		rx  *arrivals
	}{{r.quietKey, r.quiet}, {r.noisyKey, r.noisyOK}} {
		r.create(tb, p.key, "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
			"mock": map[string]any{"response": map[string]any{"ok": true}, "delay_ms": 10}})
		wh := r.create(tb, p.key, "/api/console/webhook", map[string]any{"url": p.rx.srv.URL + "/hook"})
		p.rx.setSecret(wh["secret"].(string))
	}
	return r
}

// addHanging gives project D n endpoints that accept the connection and
// never answer.
func (r *isoRig) addHanging(tb testing.TB, n int) {
	tb.Helper()
	for _, u := range r.hang.add(tb, n) {
		r.create(tb, r.noisyKey, "/api/console/webhook", map[string]any{"url": u})
	}
}

func (r *isoRig) create(tb testing.TB, key, path string, body any) map[string]any {
	tb.Helper()
	res := r.nodes[0].do(tb, "POST", path, key, body)
	if res.status != 201 {
		tb.Fatalf("POST %s: %d %s", path, res.status, res.body)
	}
	return res.json(tb)
}

func (r *isoRig) close() {
	r.closeOnce.Do(func() {
		r.release()
		for _, n := range r.nodes {
			n.stop()
		}
		r.client.CloseIdleConnections()
	})
}

// submission is one accepted task: its channel and when its submission
// was sent.
type submission struct {
	cid string
	at  time.Time
}

// paced submits tasks of workflow "w" with key at a fixed rate (open loop:
// a slow answer does not slow the sender), alternating between the nodes,
// until count are sent (count 0: until ctx ends). It returns the accepted
// submissions and how many were refused or failed, with the first error.
func (r *isoRig) paced(ctx context.Context, key string, rate float64, count int) ([]submission, int, error) {
	body := []byte(`{"workflow":"w","messages":[{"role":"user","content":"hello"}]}`)
	var (
		mu     sync.Mutex
		subs   []submission
		failed int
		first  error
	)
	openLoop(ctx, rate, count, func(i int) {
		at := time.Now()
		cid, err := r.submit(r.nodes[i%2], key, body)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
			return
		}
		subs = append(subs, submission{cid, at})
	})
	return subs, failed, first
}

func (r *isoRig) submit(n *node, key string, body []byte) (string, error) {
	return submitAsync(r.client, n.base, key, body)
}

// arrivals is a healthy receiver: it answers 200 at once, checks the
// signature, and keeps when each channel's first delivery arrived, how
// many arrived, and whether they all had its first one's webhook-id.
type arrivals struct {
	srv     *httptest.Server
	mu      sync.Mutex
	secret  string
	first   map[string]time.Time
	n       map[string]int
	id      map[string]string // each channel's first webhook-id
	bad     atomic.Int64      // deliveries whose mr-signature did not verify
	otherID atomic.Int64      // repeats of a channel under another webhook-id
}

func newArrivals(tb testing.TB) *arrivals {
	a := &arrivals{first: make(map[string]time.Time), n: make(map[string]int), id: make(map[string]string)}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(req.Body)
		a.mu.Lock()
		secret := a.secret
		if cid := req.Header.Get("mr-channel-id"); cid != "" {
			if _, ok := a.first[cid]; !ok {
				a.first[cid] = now
				a.id[cid] = req.Header.Get("webhook-id")
			} else if a.id[cid] != req.Header.Get("webhook-id") {
				a.otherID.Add(1)
			}
			a.n[cid]++
		}
		a.mu.Unlock()
		if !verify.MRSignature(body, req.Header.Get("mr-signature"), secret) {
			a.bad.Add(1)
		}
		checkWebhook(tb, req, body)
		w.WriteHeader(200)
	}))
	tb.Cleanup(a.srv.Close)
	return a
}

func (a *arrivals) setSecret(s string) {
	a.mu.Lock()
	a.secret = s
	a.mu.Unlock()
}

// seen returns a copy of when each channel's first delivery arrived and
// of how many arrived.
func (a *arrivals) seen() (first map[string]time.Time, n map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.first), maps.Clone(a.n)
}

// wait waits until every submission's webhook has arrived, at most until
// deadline, and returns the submit-to-arrival latencies of those that
// arrived and how many did not.
func (a *arrivals) wait(subs []submission, deadline time.Time) (lat []time.Duration, missing int) {
	for {
		lat, missing = lat[:0], 0
		a.mu.Lock()
		for _, s := range subs {
			if at, ok := a.first[s.cid]; ok {
				lat = append(lat, at.Sub(s.at))
			} else {
				missing++
			}
		}
		a.mu.Unlock()
		if missing == 0 || time.Now().After(deadline) {
			return lat, missing
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hangingEndpoints are receivers that accept the connection and read the
// request but never answer, until released; each is its own server (its
// own host:port), as a customer's broken endpoints would be.
type hangingEndpoints struct {
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	requests map[string]int // per endpoint path
	held     atomic.Int64   // requests held open now
	peak     atomic.Int64   // most held open at once
}

func newHangingEndpoints(tb testing.TB) *hangingEndpoints {
	h := &hangingEndpoints{done: make(chan struct{}), requests: make(map[string]int)}
	return h
}

func (h *hangingEndpoints) release() { h.once.Do(func() { close(h.done) }) }

// add starts n endpoints and returns their URLs.
func (h *hangingEndpoints) add(tb testing.TB, n int) []string {
	urls := make([]string, n)
	for i := range n {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			_, _ = io.Copy(io.Discard, req.Body)
			h.mu.Lock()
			h.requests[req.Host]++
			h.mu.Unlock()
			if now := h.held.Add(1); now > h.peak.Load() {
				h.peak.Store(now) // approximate under races; a figure for the log
			}
			select {
			case <-req.Context().Done(): // the sender's timeout
			case <-h.done:
			}
			h.held.Add(-1)
			panic(http.ErrAbortHandler) // close the connection without an answer
		}))
		tb.Cleanup(srv.Close)
		urls[i] = srv.URL + "/hook"
	}
	tb.Cleanup(h.release) // before the servers close: Close waits for the handlers
	return urls
}

// attempted is how many of the endpoints received at least one request,
// and how many requests they received in all.
func (h *hangingEndpoints) attempted() (endpoints, requests int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.requests {
		requests += n
	}
	return len(h.requests), requests
}

// TestNoisyProjectDoesNotDelayOthers: project D has endpoints that accept
// the connection and never answer, and floods tasks; the default project,
// and D's own healthy endpoint, must get their webhooks about as fast as
// when all is quiet, and all of them.
//
// The reported incident, with the attempt timeout halved to keep the test
// short: two nodes with the default attempt limits (512 per node, 64 per
// endpoint), D with 9 hanging endpoints and 1 healthy one submitting
// 15 tasks/s, the default project 10 tasks/s to its one endpoint. D's
// 135 hanging deliveries/s each hold a slot for 5 s, and again for 5 s on
// their first retry 5 s later: more than the 2 × 512 slots, and 9 × 64
// per endpoint is more than one node's 512, so without isolation they
// fill every slot and the healthy endpoints queue behind them.
//
// With every endpoint of D answering at once instead (10 attempts per
// task: more work than an engine that stops attempting hanging endpoints)
// the same load leaves both p99s where they were in the quiet phase,
// under -race on two cores: what this test measures is queueing, not CPU.
func TestNoisyProjectDoesNotDelayOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("about 25 s of paced load")
	}
	const (
		timeout    = 5 * time.Second
		hanging    = 9
		quietRate  = 10.0 // tasks/s, each project, both phases
		quietTasks = 60
		floodRate  = 15.0 // tasks/s of D in phase 2
		// A delivery that waits behind one hanging attempt waits up to a
		// timeout; 1 s is far below that, and covers what the flood costs
		// the shared CPU (15 tasks/s and their 150 deliveries/s, under
		// -race, on two cores, beside the other packages' tests) without
		// any queueing behind D. Every run of the engine without
		// isolation still fails it (phase-2 p99 1.6-8.4 s against bounds
		// of 1.07-1.13 s); the ratio itself is BenchmarkIsolation's.
		slack = time.Second
		// Until an endpoint has failed a few attempts nothing can tell it
		// hangs; measuring starts once every hanging endpoint has had two
		// attempt timeouts, and the flood goes on throughout.
		warmUp = 2*timeout + time.Second
		// Webhooks not arrived this long after the last submission count
		// as lost.
		grace = 4 * timeout
	)
	r := newIsoRig(t, "RIVERHUB_WEBHOOK_TIMEOUT", timeout.String(), "RIVERHUB_SHUTDOWN_TIMEOUT", "5s")
	ctx := context.Background()

	// Phase 1: both projects quiet, each sending to its one healthy endpoint.
	var quiet1, noisy1 []submission
	var wg sync.WaitGroup
	for _, p := range []struct {
		key  string
		into *[]submission
	}{{r.quietKey, &quiet1}, {r.noisyKey, &noisy1}} {
		wg.Go(func() {
			subs, failed, err := r.paced(ctx, p.key, quietRate, quietTasks)
			if failed > 0 {
				t.Errorf("phase 1: %d submissions failed, first: %v", failed, err)
			}
			*p.into = subs
		})
	}
	wg.Wait()
	end1 := time.Now()
	q1, qMissing1 := r.quiet.wait(quiet1, end1.Add(grace))
	d1, dMissing1 := r.noisyOK.wait(noisy1, end1.Add(grace))
	if qMissing1+dMissing1 > 0 {
		t.Fatalf("quiet phase: %d and %d webhooks did not arrive within %v", qMissing1, dMissing1, grace)
	}
	qp99, dp99 := percentile(q1, .99), percentile(d1, .99)
	t.Logf("phase 1 (quiet): default p50 %v p99 %v; D's healthy endpoint p50 %v p99 %v",
		percentile(q1, .5), qp99, percentile(d1, .5), dp99)

	// Phase 2: D gets its hanging endpoints and floods; after the warm-up
	// the default project sends as in phase 1.
	r.addHanging(t, hanging)
	floodCtx, stopFlood := context.WithCancel(ctx)
	var flood []submission
	var floodFailed int
	var floodErr error
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		flood, floodFailed, floodErr = r.paced(floodCtx, r.noisyKey, floodRate, 0)
	}()
	time.Sleep(warmUp)
	windowStart := time.Now()
	quiet2, failed, err := r.paced(ctx, r.quietKey, quietRate, quietTasks)
	stopFlood()
	<-floodDone
	end2 := time.Now()
	if failed > 0 {
		t.Errorf("phase 2: %d submissions of the default project failed, first: %v", failed, err)
	}
	if floodFailed > 0 {
		t.Errorf("phase 2: %d of D's submissions failed, first: %v", floodFailed, floodErr)
	}
	var noisy2 []submission
	for _, s := range flood {
		if !s.at.Before(windowStart) {
			noisy2 = append(noisy2, s)
		}
	}
	q2, qMissing := r.quiet.wait(quiet2, end2.Add(grace))
	d2, dMissing := r.noisyOK.wait(noisy2, end2.Add(grace))
	eps, reqs := r.hang.attempted()
	t.Logf("phase 2 (D floods %d tasks at %.0f/s, %d hanging endpoints: %d requests, at most %d held at once): "+
		"default p50 %v p99 %v max %v, %d of %d not arrived; D's healthy endpoint p50 %v p99 %v max %v, %d of %d not arrived",
		len(flood), floodRate, eps, reqs, r.hang.peak.Load(),
		percentile(q2, .5), percentile(q2, .99), percentile(q2, 1), qMissing, len(quiet2),
		percentile(d2, .5), percentile(d2, .99), percentile(d2, 1), dMissing, len(noisy2))

	// The noise reached the engine: every hanging endpoint was tried.
	if eps != hanging {
		t.Errorf("%d of the %d hanging endpoints received a request: the noise never happened", eps, hanging)
	}
	if qMissing > 0 {
		t.Errorf("default project: %d of %d webhooks did not arrive within %v of the last submission", qMissing, len(quiet2), grace)
	}
	if dMissing > 0 {
		t.Errorf("D's healthy endpoint: %d of %d webhooks did not arrive within %v of the last submission", dMissing, len(noisy2), grace)
	}
	if got, limit := percentile(q2, .99), 2*qp99+slack; got > limit {
		t.Errorf("default project's webhook p99 went from %v alone to %v beside the flood, over the bound %v (2 × p99 + %v)", qp99, got, limit, slack)
	}
	if got, limit := percentile(d2, .99), 2*dp99+slack; got > limit {
		t.Errorf("D's healthy endpoint's webhook p99 went from %v alone to %v during the flood, over the bound %v (2 × p99 + %v)", dp99, got, limit, slack)
	}
	if n := r.quiet.bad.Load() + r.noisyOK.bad.Load(); n > 0 {
		t.Errorf("%d deliveries did not verify", n)
	}
}
