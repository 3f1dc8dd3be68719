package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/dispatch"
)

// The per-request delivery fields, as the hosted service's sample backends
// send them (docs/api.md, "Per-request delivery").

// registerEndpoint registers rc at path as an endpoint of the node's
// project; rc verifies what it gets with that endpoint's secret.
func registerEndpoint(t *testing.T, n *node, rc *receiver, path string) string {
	t.Helper()
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": rc.URL + path})
	rc.mu.Lock()
	rc.secret = wh["secret"].(string)
	rc.mu.Unlock()
	return wh["id"].(string)
}

// waitEntry waits until the channel's timeline has an entry of type typ
// and returns the timeline. A "broadcast" entry means the completion's
// side effects ran: its webhooks were enqueued before the room heard.
func waitEntry(t *testing.T, n *node, cid, typ string) []any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tl := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)["timeline"].([]any)
		for _, e := range tl {
			if e.(map[string]any)["type"] == typ {
				return tl
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s: no %s entry on its timeline: %v", cid, typ, tl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noDelivery fails if endpoint wh was given a delivery of eventType for
// the channel (deliveries are keyed by event, channel and endpoint).
func noDelivery(t *testing.T, n *node, eventType, cid, wh string) {
	t.Helper()
	if r := n.do(t, "GET", "/api/console/dlq/"+dispatch.DeliveryID(eventType, cid, wh), n.key, nil); r.status != 404 {
		t.Errorf("endpoint %s has a %s delivery for channel %s: %d %s", wh, eventType, cid, r.status, r.body)
	}
}

// Two endpoints are registered; webhook_url names the second (spelled
// differently), which alone gets the webhook, signed with its own secret.
// The metadata is on the channel, not in the webhook. Sync submissions and
// webhook_id together with webhook_url route the same way.
func TestWebhookURLRoutesToItsEndpoint(t *testing.T) {
	t.Parallel()
	ok := func(int) int { return 200 }
	rc1, rc2 := newReceiver(t, ok), newReceiver(t, ok)
	n := newNode(t)
	wh1 := setupWebhook(t, n, rc1) // workflow "w" and rc1's endpoint at /hook
	wh2 := registerEndpoint(t, n, rc2, "/hook")
	if wh1 == wh2 {
		t.Fatal("one endpoint id for two endpoints")
	}

	// The hosted service's chatbot sample, with the URL's scheme in
	// capitals and a trailing slash.
	metadata := map[string]any{"conversation_id": "c-1", "message_id": "m-1", "timestamp": 1767616496789.0}
	ans := n.submit(t, "w", map[string]any{
		"webhook_url":     strings.Replace(rc2.URL, "http://", "HTTP://", 1) + "/hook/",
		"delivery_method": "websocket",
		"events":          []string{"webhook_received"},
		"metadata":        metadata,
	})
	cid := ans["channel_id"].(string)
	hits := rc2.waitHits(t, 1, 10*time.Second) // rc2 verified both signatures with its secret
	p := hits[0].payload
	if p["type"] != "task.completed" || p["channel_id"] != cid || p["status"] != "success" {
		t.Errorf("payload = %v", p)
	}
	if id := hits[0].header.Get("webhook-id"); id != dispatch.DeliveryID("task.completed", cid, wh2) {
		t.Errorf("webhook-id %s is not the delivery of endpoint %s", id, wh2)
	}
	// The spec's body: no metadata field; metadata stands in for the absent
	// customer_data, as the contract says.
	if _, has := p["metadata"]; has {
		t.Errorf("the webhook body has a metadata field: %s", hits[0].body)
	}
	if !jsonEqual(p["customer_data"], metadata) {
		t.Errorf("customer_data = %v, want the metadata %v", p["customer_data"], metadata)
	}
	tl := waitEntry(t, n, cid, "broadcast")
	noDelivery(t, n, "task.completed", cid, wh1)
	if got := rc1.count(); got != 0 {
		t.Errorf("the other endpoint got %d requests", got)
	}

	// The channel and the console's log show the metadata and the choice.
	v := n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)
	if !jsonEqual(v["metadata"], metadata) {
		t.Errorf("channel metadata = %v, want %v", v["metadata"], metadata)
	}
	log := n.must(t, 200, "GET", "/api/console/logs/"+cid, nil)
	if !jsonEqual(get(t, log, "channel", "metadata"), metadata) {
		t.Errorf("log channel = %v", log["channel"])
	}
	req := tl[0].(map[string]any)
	if req["type"] != "request" || !jsonEqual(req["webhook_ids"], []any{wh2}) || req["delivery_method"] != "websocket" || req["events"] != nil {
		t.Errorf("request entry = %v", req)
	}

	// Sync, with webhook_id and webhook_url naming the same endpoint, and
	// customer_data beside metadata: customer_data goes in the payload,
	// metadata only on the channel.
	msg := n.must(t, 200, "POST", "/v1/ai", map[string]any{"workflow": "w", "messages": userMessages("hi"),
		"webhook_id": wh1, "webhook_url": rc1.URL + "/hook", "customer_data": map[string]any{"user_id": "u1"},
		"metadata": map[string]any{"trace": "t-9"}})
	scid := msg["channel_id"].(string)
	h1 := rc1.waitHits(t, 1, 10*time.Second)
	if h1[0].payload["channel_id"] != scid || get(t, h1[0].payload, "customer_data", "user_id") != "u1" || strings.Contains(string(h1[0].body), "t-9") {
		t.Errorf("sync payload = %s", h1[0].body)
	}
	waitEntry(t, n, scid, "broadcast")
	noDelivery(t, n, "task.completed", scid, wh2)
	if v := n.must(t, 200, "GET", "/api/v1/channels/"+scid, nil); !jsonEqual(v["metadata"], map[string]any{"trace": "t-9"}) {
		t.Errorf("sync channel metadata = %v", v["metadata"])
	}

	// events without task.completed: a standard workflow sends no webhook,
	// and the room still gets the result.
	ecid := n.submit(t, "w", map[string]any{"webhook_url": rc2.URL + "/hook", "events": []string{"task.ai_generated"}})["channel_id"].(string)
	if v := n.waitFinal(t, n.key, ecid, 10*time.Second); v["status"] != "success" {
		t.Errorf("channel = %v", v)
	}
	waitEntry(t, n, ecid, "broadcast")
	noDelivery(t, n, "task.completed", ecid, wh1)
	noDelivery(t, n, "task.completed", ecid, wh2)
	if rc1.count() != 1 || rc2.count() != 1 {
		t.Errorf("receivers got %d and %d requests, want 1 each", rc1.count(), rc2.count())
	}
	if v := n.must(t, 200, "GET", "/api/v1/channels/"+ecid, nil); v["metadata"] != nil {
		t.Errorf("metadata without one = %v", v["metadata"])
	}
}

// A webhook_url that is not an enabled endpoint of the project, or that
// disagrees with webhook_id, is refused and leaves nothing behind (no
// channel, no Idempotency-Key reserved); the fingerprint of an
// Idempotency-Key covers the delivery fields.
func TestWebhookURLRefusals(t *testing.T) {
	t.Parallel()
	ok := func(int) int { return 200 }
	// Each receiver is one endpoint (it verifies with that one's secret);
	// rcOff's endpoint is disabled and gets nothing.
	rc, rcOther, rcOff := newReceiver(t, ok), newReceiver(t, ok), newReceiver(t, ok)
	n := newNode(t)
	wh := setupWebhook(t, n, rc) // at /hook
	off := registerEndpoint(t, n, rcOff, "/off")
	n.must(t, 200, "PATCH", "/api/console/webhook/"+off, map[string]any{"enabled": false})
	registerEndpoint(t, n, rcOther, "/other")
	proj := n.must(t, 201, "POST", "/api/console/projects", map[string]any{"name": "neighbour"})
	if r := n.do(t, "POST", "/api/console/webhook", proj["key"].(string), map[string]any{"url": rcOff.URL + "/theirs"}); r.status != 201 {
		t.Fatalf("the other project's endpoint: %d %s", r.status, r.body)
	}

	tests := []struct {
		name    string
		path    string
		fields  map[string]any
		status  int
		code    string
		mention []string
	}{
		{"unregistered URL", "/v1/ai/async", map[string]any{"webhook_url": rc.URL + "/nobody"}, 400, "invalid_request",
			[]string{rc.URL + "/nobody", "not a webhook endpoint of this project", "register it", "POST /api/console/webhook"}},
		{"unregistered URL, sync", "/v1/ai", map[string]any{"webhook_url": rc.URL + "/nobody"}, 400, "invalid_request",
			[]string{"not a webhook endpoint of this project", "register it"}},
		{"a longer path than an endpoint's", "/v1/ai/async", map[string]any{"webhook_url": rc.URL + "/hook/more"}, 400, "invalid_request",
			[]string{"not a webhook endpoint"}},
		{"another project's endpoint", "/v1/ai/async", map[string]any{"webhook_url": rcOff.URL + "/theirs"}, 400, "invalid_request",
			[]string{"not a webhook endpoint of this project"}},
		{"disabled endpoint", "/v1/ai/async", map[string]any{"webhook_url": rcOff.URL + "/off"}, 400, "invalid_request",
			[]string{off, "disabled", "enable it"}},
		{"webhook_id and webhook_url disagree", "/v1/ai/async", map[string]any{"webhook_id": wh, "webhook_url": rcOther.URL + "/other"}, 400, "invalid_request",
			[]string{"different endpoints", wh, rcOther.URL + "/other"}},
		{"webhook_id and webhook_url disagree, sync", "/v1/ai", map[string]any{"webhook_id": wh, "webhook_url": rcOther.URL + "/other"}, 400, "invalid_request",
			[]string{"different endpoints"}},
		{"webhook_id of a disabled endpoint with its URL", "/v1/ai/async", map[string]any{"webhook_id": off, "webhook_url": rcOff.URL + "/off"}, 400, "invalid_request",
			[]string{"disabled"}},
		{"unknown webhook_id with a registered URL", "/v1/ai/async", map[string]any{"webhook_id": "wh_nope", "webhook_url": rc.URL + "/hook"}, 404, "not_found",
			[]string{"wh_nope"}},
		{"webhook_url not a URL", "/v1/ai/async", map[string]any{"webhook_url": "hook"}, 400, "invalid_request", []string{"webhook_url", "absolute"}},
		{"unknown delivery_method", "/v1/ai/async", map[string]any{"delivery_method": "email"}, 400, "invalid_request", []string{"delivery_method"}},
		{"unknown event", "/v1/ai/async", map[string]any{"events": []string{"task.started"}}, 400, "invalid_request", []string{"task.started"}},
		{"metadata not an object", "/v1/ai/async", map[string]any{"metadata": []int{1}}, 400, "invalid_request", []string{"metadata"}},
	}
	accepted := 0
	for _, tt := range tests {
		body := map[string]any{"workflow": "w", "messages": userMessages("hi")}
		for k, v := range tt.fields {
			body[k] = v
		}
		key := "refused-" + tt.name
		r := n.do(t, "POST", tt.path, n.key, body, "Idempotency-Key", key)
		if r.status != tt.status {
			t.Errorf("%s: status %d, want %d: %s", tt.name, r.status, tt.status, r.body)
			continue
		}
		e := r.json(t)
		if e["error"] != tt.code {
			t.Errorf("%s: error %v, want %s", tt.name, e["error"], tt.code)
		}
		for _, m := range tt.mention {
			if msg, _ := e["message"].(string); !strings.Contains(msg, m) {
				t.Errorf("%s: message %q does not mention %q", tt.name, msg, m)
			}
		}
		// The key was not reserved: a valid request with it runs afresh.
		if tt.path == "/v1/ai/async" {
			again := n.do(t, "POST", tt.path, n.key, map[string]any{"workflow": "w", "messages": userMessages("hi")}, "Idempotency-Key", key)
			if again.status != 200 || again.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("%s: the key afterwards: %d %v %s", tt.name, again.status, again.header, again.body)
			}
			accepted++
		}
	}

	// The Idempotency-Key fingerprint covers the delivery fields.
	first := map[string]any{"workflow": "w", "messages": userMessages("hi"), "webhook_url": rc.URL + "/hook"}
	n.must(t, 200, "POST", "/v1/ai/async", first, "Idempotency-Key", "fp")
	accepted++
	for _, change := range []map[string]any{{"webhook_url": rcOther.URL + "/other"}, {"events": []string{"task.completed"}},
		{"delivery_method": "websocket"}, {"metadata": map[string]any{"a": 1}}} {
		body := map[string]any{}
		for k, v := range first {
			body[k] = v
		}
		for k, v := range change {
			body[k] = v
		}
		if r := n.do(t, "POST", "/v1/ai/async", n.key, body, "Idempotency-Key", "fp"); r.status != 409 || r.json(t)["error"] != "idempotency_key_reused" {
			t.Errorf("same key, %v changed: %d %s", change, r.status, r.body)
		}
	}
	if r := n.do(t, "POST", "/v1/ai/async", n.key, first, "Idempotency-Key", "fp"); r.status != 200 || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("same key, same body: %d %s", r.status, r.body)
	}

	if got := rcOff.count(); got != 0 {
		t.Errorf("the disabled endpoint's receiver got %d requests", got)
	}
	// Only the accepted submissions left a channel.
	logs := n.must(t, 200, "GET", "/api/console/logs?limit=500", nil)
	if items := logs["items"].([]any); len(items) != accepted {
		t.Errorf("%d channels recorded, want %d (the accepted submissions only)", len(items), accepted)
	}
}
