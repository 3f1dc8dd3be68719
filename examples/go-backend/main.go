// Command go-backend is a customer backend for riverhub's event-driven
// workflows, written with the standard library only so that it can be
// copied out of this repository as it is.
//
// It receives riverhub's webhooks on POST /webhooks/riverhub, checks the
// mr-signature over the raw body and the freshness of mr-timestamp (or,
// for code written for the hosted service, X-ModelRiver-Signature and
// X-ModelRiver-Timestamp), acknowledges at once, and then, in the
// background:
//
//   - task.ai_generated: enriches ai_response.data (an id, processed_at,
//     processed_by) and POSTs {data, task_id, metadata} to callback_url with
//     the project's API key, which completes the channel; a failure is
//     reported as {error, message} instead;
//   - task.completed: logs the result.
//
// Deliveries are at-least-once: a delivery is processed once per
// webhook-id (kept in memory for a day).
//
//	RIVERHUB_WEBHOOK_SECRET=whsec_... RIVERHUB_API_KEY=mr_live_... go run .
//
// Environment (flags override): LISTEN_ADDR / -addr (default :4000),
// PROCESSING_DELAY_MS / -delay (simulated work per task, default 0).
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	webhookPath = "/webhooks/riverhub"
	maxBody     = 10 << 20        // largest webhook body accepted
	tolerance   = 5 * time.Minute // how far mr-timestamp (or X-ModelRiver-Timestamp) may be from now
	dedupeFor   = 24 * time.Hour  // how long a webhook-id is remembered
	callbackTry = 5               // attempts of one callback
	firstRetry  = 500 * time.Millisecond
	drainFor    = 15 * time.Second // how long shutdown waits for callbacks in flight
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "go-backend:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then waits for the callbacks in flight.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var envDelay time.Duration
	if v := getenv("PROCESSING_DELAY_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return fmt.Errorf("PROCESSING_DELAY_MS: %q is not a number of milliseconds", v)
		}
		envDelay = time.Duration(ms) * time.Millisecond
	}
	fs := flag.NewFlagSet("go-backend", flag.ContinueOnError)
	addr := fs.String("addr", or(getenv("LISTEN_ADDR"), ":4000"), "listen address (env LISTEN_ADDR)")
	delay := fs.Duration("delay", envDelay, "simulated processing time per task (env PROCESSING_DELAY_MS, in milliseconds)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b := &backend{
		secret: getenv("RIVERHUB_WEBHOOK_SECRET"),
		apiKey: getenv("RIVERHUB_API_KEY"),
		delay:  *delay,
		log:    slog.New(slog.NewTextHandler(stdout, nil)),
		client: &http.Client{Timeout: 10 * time.Second},
		seen:   map[string]time.Time{},
	}
	if b.secret == "" || b.apiKey == "" {
		return errors.New("set RIVERHUB_WEBHOOK_SECRET (the webhook's secret) and RIVERHUB_API_KEY (a key of its project)")
	}
	// Background work outlives the request that started it, but not the
	// drain after a shutdown.
	var cancel context.CancelFunc
	b.ctx, cancel = context.WithCancel(context.Background())
	defer cancel()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+webhookPath, b.webhook)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	b.log.Info("listening on http://" + ln.Addr().String() + webhookPath)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	b.log.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), drainFor)
	defer scancel()
	_ = srv.Shutdown(sctx)
	drained := make(chan struct{})
	go func() { b.jobs.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-sctx.Done():
		b.log.Warn("callbacks still in flight were abandoned")
	}
	return nil
}

type backend struct {
	secret, apiKey string
	delay          time.Duration
	log            *slog.Logger
	client         *http.Client
	ctx            context.Context // background work
	jobs           sync.WaitGroup

	mu        sync.Mutex
	seen      map[string]time.Time // webhook-id → when it was first received
	lastSweep time.Time
}

// event is the part of a webhook body this backend reads.
type event struct {
	Type        string `json:"type"`
	Event       string `json:"event"`
	ChannelID   string `json:"channel_id"`
	Workflow    string `json:"workflow"`
	Status      string `json:"status"`
	CallbackURL string `json:"callback_url"`
	AIResponse  struct {
		Data json.RawMessage `json:"data"`
	} `json:"ai_response"`
	Data         json.RawMessage `json:"data"`
	CustomerData json.RawMessage `json:"customer_data"`
}

// webhook checks a delivery, acknowledges it and hands it to the
// background. riverhub waits at most 10 s for the answer, so nothing slow
// happens before it.
func (b *backend) webhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
		reply(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "payload_too_large"})
		return
	} else if err != nil {
		reply(w, http.StatusBadRequest, map[string]any{"error": "unreadable_body"})
		return
	}
	if code, why := b.authenticate(body, r.Header, time.Now()); code != "" {
		b.log.Warn("refused a webhook: "+why, "remote", r.RemoteAddr)
		reply(w, http.StatusUnauthorized, map[string]any{"error": code})
		return
	}
	var ev event
	if err := json.Unmarshal(body, &ev); err != nil {
		reply(w, http.StatusBadRequest, map[string]any{"error": "invalid_json"})
		return
	}
	id := r.Header.Get("webhook-id")
	if id == "" {
		id = ev.Type + ":" + ev.ChannelID
	}
	if !b.firstTime(id, time.Now()) {
		b.log.Info("duplicate delivery ignored", "webhook_id", id, "channel_id", ev.ChannelID)
		reply(w, http.StatusOK, ack{Received: true, Duplicate: true})
		return
	}
	b.jobs.Add(1)
	go func() {
		defer b.jobs.Done()
		b.process(ev)
	}()
	reply(w, http.StatusOK, ack{Received: true})
}

// ack is the answer to a delivery that was accepted.
type ack struct {
	Received  bool `json:"received"`
	Duplicate bool `json:"duplicate,omitempty"`
}

// authenticate checks a delivery before anything else reads it, and
// returns the error code to answer with ("" when it is genuine) and why.
//
// mr-signature covers the exact bytes received: they are verified before
// parsing, never a re-encoding of the parsed JSON. A request without it may
// carry the hosted service's X-ModelRiver-Signature instead (riverhub sends
// both), so that a backend written for that service keeps working; it
// covers only X-ModelRiver-Timestamp and the payload's data, or the whole
// body without data (docs/webhooks.md). A present mr-signature that is
// wrong is final: the other scheme covers less of the body.
func (b *backend) authenticate(body []byte, h http.Header, now time.Time) (code, why string) {
	if sig := h.Get("mr-signature"); sig != "" || h.Get("X-ModelRiver-Signature") == "" {
		if !validSignature(body, sig, b.secret) {
			return "invalid_signature", "invalid mr-signature"
		}
		// mr-signature does not cover the headers: this turns away a
		// captured request replayed as it was; the webhook-id set turns
		// away riverhub's own retries.
		if !fresh(h.Get("mr-timestamp"), now) {
			return "stale_timestamp", fmt.Sprintf("mr-timestamp %q missing or more than 5 minutes off", h.Get("mr-timestamp"))
		}
		return "", ""
	}
	ts := h.Get("X-ModelRiver-Timestamp")
	if !validModelRiverSignature(body, h.Get("X-ModelRiver-Signature"), ts, b.secret) {
		return "invalid_signature", "invalid X-ModelRiver-Signature"
	}
	if !fresh(ts, now) {
		return "stale_timestamp", fmt.Sprintf("X-ModelRiver-Timestamp %q missing or more than 5 minutes off", ts)
	}
	return "", ""
}

// validSignature compares in constant time: the hex HMAC-SHA256 of the
// body, keyed with the whole secret string (whsec_...).
func validSignature(body []byte, sig, secret string) bool {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	want := hex.EncodeToString(m.Sum(nil))
	return hmac.Equal([]byte(strings.ToLower(strings.TrimSpace(sig))), []byte(want))
}

// validModelRiverSignature checks X-ModelRiver-Signature in constant time:
// the hex HMAC-SHA256, keyed with the whole secret string, of
// "{X-ModelRiver-Timestamp}.{JSON.stringify(body.data)}", or of
// "{timestamp}.{body}" when data is absent or null. riverhub writes bodies
// that JSON.stringify(JSON.parse(body)) reproduces, so the bytes of data in
// the body, which json.RawMessage keeps as they are, are the ones
// JSON.stringify writes.
func validModelRiverSignature(body []byte, sig, ts, secret string) bool {
	signed := body
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) == nil {
		if d, ok := top["data"]; ok && string(d) != "null" {
			signed = d
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(signed)
	want := hex.EncodeToString(m.Sum(nil))
	return hmac.Equal([]byte(strings.ToLower(strings.TrimSpace(sig))), []byte(want))
}

// fresh reports whether the Unix-seconds timestamp is within tolerance of
// now, either way.
func fresh(ts string, now time.Time) bool {
	sec, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64)
	if err != nil {
		return false
	}
	d := now.Sub(time.Unix(sec, 0))
	return d <= tolerance && d >= -tolerance
}

// firstTime records id and reports whether it was new. Ids older than a
// day are forgotten (riverhub's retries span about three hours).
func (b *backend) firstTime(id string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.lastSweep) > time.Minute {
		for k, at := range b.seen {
			if now.Sub(at) > dedupeFor {
				delete(b.seen, k)
			}
		}
		b.lastSweep = now
	}
	if _, ok := b.seen[id]; ok {
		return false
	}
	b.seen[id] = now
	return true
}

func (b *backend) process(ev event) {
	switch {
	case ev.Type == "task.ai_generated" && ev.CallbackURL != "":
		b.log.Info("processing", "event", ev.Event, "channel_id", ev.ChannelID)
		b.complete(ev)
	case ev.Type == "task.completed":
		b.log.Info("task completed", "workflow", ev.Workflow, "channel_id", ev.ChannelID,
			"status", ev.Status, "data", string(ev.Data))
	default:
		b.log.Info("webhook ignored", "type", ev.Type, "channel_id", ev.ChannelID)
	}
}

// complete runs the business logic on the generated data and calls back
// with its result, or with the error that stopped it.
func (b *backend) complete(ev event) {
	start := time.Now()
	select {
	case <-time.After(b.delay): // your database, tools, approvals...
	case <-b.ctx.Done():
		return
	}
	var body any
	data, id, err := enrich(ev, time.Now())
	if err != nil {
		b.log.Warn("processing failed", "channel_id", ev.ChannelID, "err", err)
		body = map[string]any{"error": "processing_failed", "message": err.Error()}
	} else {
		body = map[string]any{
			"data":    data,
			"task_id": "task_" + id,
			"metadata": map[string]any{
				"processing_time_ms": time.Since(start).Milliseconds(),
				"processed_by":       "go-backend",
			},
		}
	}
	b.callback(ev.CallbackURL, ev.ChannelID, body)
}

// enrich adds this backend's fields to the generated data (a JSON object;
// anything else is kept under "value"). customer_data.simulate_failure
// makes it fail, to show the error callback.
func enrich(ev event, now time.Time) (map[string]json.RawMessage, string, error) {
	var cd struct {
		SimulateFailure bool `json:"simulate_failure"`
	}
	_ = json.Unmarshal(ev.CustomerData, &cd)
	if cd.SimulateFailure {
		return nil, "", errors.New("customer_data.simulate_failure is set")
	}
	raw := bytes.TrimSpace(ev.AIResponse.Data)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, "", errors.New("ai_response.data is empty")
	}
	// RawMessage values keep the generated fields byte for byte.
	var data map[string]json.RawMessage
	if json.Unmarshal(raw, &data) != nil || data == nil {
		data = map[string]json.RawMessage{"value": raw}
	}
	id := newID()
	data["id"] = mustJSON("rec_" + id)
	data["processed_at"] = mustJSON(now.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	data["processed_by"] = mustJSON("go-backend")
	return data, id, nil
}

// callback POSTs body to riverhub. Every attempt sends the same bytes, so
// an attempt that reached riverhub but whose answer was lost is accepted
// again as a repeat. Network errors, 429 and 5xx are retried with
// backoff; 409 says the channel no longer waits (callback_timeout,
// callback_already_received, not_awaiting_callback) and is final.
func (b *backend) callback(url, cid string, body any) {
	raw, err := json.Marshal(body)
	if err != nil {
		b.log.Error("encode callback", "channel_id", cid, "err", err)
		return
	}
	wait := firstRetry
	for attempt := 1; ; attempt++ {
		status, answer, err := b.post(url, raw)
		switch {
		case err == nil && status == http.StatusOK:
			b.log.Info("callback accepted", "channel_id", cid, "attempt", attempt)
			return
		case err == nil && status == http.StatusConflict:
			b.log.Warn("callback refused: the channel no longer waits", "channel_id", cid, "code", errorCode(answer))
			return
		case err == nil && status != http.StatusTooManyRequests && status < 500:
			b.log.Error("callback refused", "channel_id", cid, "status", status, "code", errorCode(answer), "answer", string(answer))
			return
		}
		if attempt == callbackTry {
			b.log.Error("callback failed, giving up", "channel_id", cid, "attempts", attempt, "status", status, "err", err)
			return
		}
		b.log.Warn("callback failed, retrying", "channel_id", cid, "attempt", attempt, "status", status, "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-b.ctx.Done():
			return
		}
		wait *= 2
	}
}

func (b *backend) post(url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := b.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	return res.StatusCode, answer, nil
}

// errorCode is the "error" of riverhub's error envelope.
func errorCode(answer []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(answer, &e)
	return e.Error
}

func reply(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
