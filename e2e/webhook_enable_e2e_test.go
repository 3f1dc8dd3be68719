package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// Turning a disabled endpoint back on starts it afresh (its failures from
// before are forgotten), once the patch is checked: a patch refused for
// another field leaves them. When that fresh start fails (here Redis denies
// the HDEL it begins with), the endpoint stays disabled and the request
// fails, so that the client's retry starts it afresh; it is not left
// enabled with its old failures, which would disable it again at its
// next failure.
func TestWebhookEnableRetriedAfterAFailedFreshStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server of its own")
	}
	t.Parallel()
	srv := rdbtest.NewServer(t)
	n := startNode(t, testEnv(t, srv.URL(), rdbtest.Prefix(), "RIVERHUB_RETRY_SCHEDULE", "0s", "RIVERHUB_LOG_LEVEL", "error"))
	rc := newReceiver(t, func(int) int { return 500 })
	wh := setupWebhook(t, n, rc)
	n.submit(t, "w", nil)
	health := func() map[string]any {
		t.Helper()
		return n.must(t, 200, "GET", "/api/console/webhook/"+wh, nil)["health"].(map[string]any)
	}
	deadline := time.Now().Add(10 * time.Second)
	for health()["consecutive_failures"] != float64(1) {
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt within 10s: health %v", health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.must(t, 200, "PATCH", "/api/console/webhook/"+wh, map[string]any{"enabled": false})

	// A patch refused for another field writes nothing: no fresh start.
	n.must(t, 400, "PATCH", "/api/console/webhook/"+wh, map[string]any{"enabled": true, "description": strings.Repeat("x", 1025)})
	if h := health(); h["consecutive_failures"] != float64(1) {
		t.Errorf("a refused enable cleared the endpoint's failures: %v", h)
	}

	c := srv.Client()
	ctx := context.Background()
	if err := c.Do(ctx, "ACL", "SETUSER", "default", "-hdel").Err(); err != nil {
		t.Fatal(err)
	}
	r := n.do(t, "PATCH", "/api/console/webhook/"+wh, n.key, map[string]any{"enabled": true})
	if err := c.Do(ctx, "ACL", "SETUSER", "default", "+hdel").Err(); err != nil {
		t.Fatal(err)
	}
	if r.status == 200 {
		t.Fatalf("enable with the fresh start refused: answered 200 %s", r.body)
	}
	if got := n.must(t, 200, "GET", "/api/console/webhook/"+wh, nil); got["enabled"] != false {
		t.Fatalf("after a failed enable the endpoint is enabled: %v", got)
	}

	// The failed request's own writes may have reset some of the record
	// (Redis ran the commands it did not deny): put the failures back, so
	// that only the retry's fresh start can clear them.
	var rec string
	for _, k := range c.Keys(ctx, "*"+wh).Val() {
		if c.Type(ctx, k).Val() == "hash" && c.HExists(ctx, k, "state").Val() {
			rec = k
		}
	}
	if rec == "" {
		t.Fatalf("no endpoint record among %v", c.Keys(ctx, "*"+wh).Val())
	}
	c.HSet(ctx, rec, "fails", 3, "failing_since", time.Now().Add(-time.Minute).UnixMilli())

	n.must(t, 200, "PATCH", "/api/console/webhook/"+wh, map[string]any{"enabled": true})
	if h := health(); h["consecutive_failures"] != float64(0) || h["failing_since"] != nil {
		t.Errorf("enabled again after the retry, the endpoint keeps its failures from before: %v", h)
	}
}
