package e2e

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// A backend written the way the hosted service's public sample backends
// are (e2e/sample_backend.mjs: express.json()-style parsing, the
// X-ModelRiver-Signature check over JSON.stringify(body.data), submissions
// with webhook_url, delivery_method, events and metadata, a callback to
// callback_url) completes a standard and an event-driven flow against
// riverhub, watched by the official phoenix client; the project's other
// endpoint gets nothing, since webhook_url routes the request's webhooks.
func TestHostedSampleBackend(t *testing.T) {
	t.Parallel()
	e2eScript(t, "phoenix_app.mjs")
	n := newNode(t)
	var other atomic.Int32
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { other.Add(1) }))
	t.Cleanup(decoy.Close)
	n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": decoy.URL + "/other"})

	be := startJS(t, "sample_backend.mjs", "--api", n.base, "--key", n.key)
	url := be.await("listening", nil)["url"].(string)
	wh := n.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": url})
	be.send("secret " + wh["secret"].(string))
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "chat", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"reply": "Try Inception — “a dream within a dream”", "score": 0.1}}})
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "movie", "provider": "mock",
		"event_name": "new_movie_suggestion", "mock": map[string]any{"response": map[string]any{"title": "Inception", "year": 2010}}})

	submit := func(workflow string) (cid string, ans map[string]any) {
		t.Helper()
		be.send("submit " + workflow)
		sub := be.await("submitted", func(ev map[string]any) bool { return ev["workflow"] == workflow })
		ans, _ = sub["answer"].(map[string]any)
		if sub["status"] != float64(200) || ans["channel_id"] == nil {
			t.Fatalf("the sample backend's submission of %s was answered %v: %v", workflow, sub["status"], ans)
		}
		return ans["channel_id"].(string), ans
	}
	webhook := func(cid, typ string) {
		t.Helper()
		ev := be.await("webhook", func(ev map[string]any) bool { return ev["channel_id"] == cid && ev["type"] == typ })
		if ev["verified"] != true {
			t.Fatalf("the sample backend rejected %s of %s: X-ModelRiver-Signature did not verify", typ, cid)
		}
	}

	// Standard: the final message in the room, the webhook verified.
	cid, ans := submit("chat")
	msgs := roomMessages(t, n, ans, 1)
	if got := statusesOf(msgs); got != "success" {
		t.Fatalf("room got %s, want success: %v", got, msgs)
	}
	webhook(cid, "task.completed")
	ch := n.must(t, 200, "GET", "/api/v1/channels/"+cid, nil)
	if get(t, ch, "metadata", "conversation_id") != "conv-1" {
		t.Errorf("the channel does not keep the request's metadata: %v", ch["metadata"])
	}

	// Event-driven: ai_generated, the backend's callback, completed with
	// its enriched data.
	cid, ans = submit("movie")
	msgs = roomMessages(t, n, ans, 2)
	if got := statusesOf(msgs); got != "ai_generated,completed" {
		t.Fatalf("room got %s, want ai_generated,completed: %v", got, msgs)
	}
	webhook(cid, "task.ai_generated")
	cb := be.await("callback", func(ev map[string]any) bool { return ev["channel_id"] == cid })
	if cb["status"] != float64(200) {
		t.Fatalf("the callback was answered %v: %v", cb["status"], cb["body"])
	}
	if get(t, msgs[1], "data", "enriched") != true || get(t, msgs[1], "data", "title") != "Inception" {
		t.Errorf("completed message does not carry the backend's data: %v", msgs[1])
	}

	if rejected := len(be.all("webhook")) - countVerified(be.all("webhook")); rejected != 0 {
		t.Errorf("%d webhooks failed the sample backend's signature check", rejected)
	}
	if n := other.Load(); n != 0 {
		t.Errorf("the project's other endpoint got %d webhooks; webhook_url routes them to the sample backend only", n)
	}
}

func countVerified(evs []map[string]any) int {
	n := 0
	for _, ev := range evs {
		if ev["verified"] == true {
			n++
		}
	}
	return n
}
