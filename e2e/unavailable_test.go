package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// When Redis is down, too slow or paused, every API route answers 503
// unavailable with Retry-After within RIVERHUB_REDIS_TIMEOUT (plus the
// client's quick retries), never 500 "internal" after many seconds. The
// bound is 500 ms; the test allows 5 s, for a machine loaded by other
// suites (unbounded, a paused or sleeping Redis holds a request for as long
// as it sleeps, and then answers it 200).
func TestRedisOutageAnswers503(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server of its own")
	}
	t.Parallel()
	srv := rdbtest.NewServer(t, "--appendonly", "yes", "--appendfsync", "always")
	const bound = 500 * time.Millisecond
	n := startNode(t, testEnv(t, srv.URL(), rdbtest.Prefix(), "RIVERHUB_REDIS_TIMEOUT", bound.String(), "RIVERHUB_LOG_LEVEL", "error"))
	n.must(t, 201, "POST", "/api/console/workflow", map[string]any{
		"name": "w", "provider": "mock", "mock": map[string]any{"response": map[string]any{"ok": true}},
	})
	cid := n.submit(t, "w", nil)["channel_id"].(string)
	n.waitFinal(t, n.key, cid, 10*time.Second)

	task := map[string]any{"workflow": "w", "messages": userMessages("hi")}
	requests := []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/ai/async", task},
		{"POST", "/api/v1/ai", task},
		{"GET", "/api/v1/channels/" + cid, nil},
		{"POST", "/api/v1/callback/" + cid, map[string]any{"data": map[string]any{"ok": true}}},
		{"GET", "/api/console/workflow", nil},
		{"GET", "/api/console/logs/" + cid, nil},
		{"GET", "/api/console/dlq", nil},
	}
	// check sends every request at once and wants each answered 503
	// unavailable, with Retry-After, within the bound.
	check := func(fault string, within time.Duration) {
		t.Helper()
		var wg sync.WaitGroup
		for _, r := range requests {
			wg.Go(func() {
				start := time.Now()
				res := n.do(t, r.method, r.path, n.key, r.body)
				took := time.Since(start)
				what := fmt.Sprintf("%s: %s %s", fault, r.method, r.path)
				switch {
				case res.status != 503:
					t.Errorf("%s = %d %s; want 503", what, res.status, res.body)
				case res.json(t)["error"] != "unavailable":
					t.Errorf("%s: %s; want error unavailable", what, res.body)
				case res.header.Get("Retry-After") == "":
					t.Errorf("%s: no Retry-After", what)
				case took > within:
					t.Errorf("%s answered after %v; want within %v", what, took.Round(time.Millisecond), within)
				}
			})
		}
		wg.Wait()
	}

	// Down: the connection is refused.
	srv.Kill()
	check("redis down", 5*time.Second)
	srv.Start()
	n.waitFinal(t, n.key, n.submit(t, "w", nil)["channel_id"].(string), 10*time.Second)

	// Too slow: every command would wait out the server's sleep or pause.
	c := srv.Client()
	for _, fault := range [][]any{{"DEBUG", "SLEEP", "3"}, {"CLIENT", "PAUSE", "3000", "ALL"}} {
		go func() { _ = c.Do(context.Background(), fault...).Err() }()
		time.Sleep(200 * time.Millisecond)
		check(fmt.Sprint(fault...), 5*time.Second)
		time.Sleep(3 * time.Second) // it is over
	}
	n.waitFinal(t, n.key, n.submit(t, "w", nil)["channel_id"].(string), 10*time.Second)
}
