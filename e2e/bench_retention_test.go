package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/pgtest"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// BenchmarkRetainedBytes measures what a finished task keeps in Redis
// once its hot window has passed: the bytes of every key its tasks added
// (MEMORY USAGE, every key of the node's prefix, after minus before),
// per task, for a standard task, an event-driven one (its backend calls
// back) and a standard one with one webhook endpoint; and, apart, the
// bytes of the request logs' indexes. BENCH_TASKS sets the tasks per kind
// (default 300). The node runs with a hot window of 2 s (and a task lease
// of 500 ms: the hot window must be at least four leases). With
// BENCH_ARCHIVE set, the node has the archive on (PostgreSQL, a schema of
// its own): settled tasks move out of Redis instead of folding.
func BenchmarkRetainedBytes(b *testing.B) {
	tasks := 300
	if v, err := strconv.Atoi(os.Getenv("BENCH_TASKS")); err == nil && v > 0 {
		tasks = v
	}
	for _, kind := range []string{"standard", "event_driven", "webhook"} {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				retained(b, kind, tasks)
			}
		})
	}
}

const hotWindow = 2 * time.Second

func retained(b *testing.B, kind string, tasks int) {
	url, prefix := testRedisURL(b), rdbtest.Prefix()
	b.Cleanup(func() { dropPrefix(b, url, prefix) })
	env := []string{"RIVERHUB_LOG_LEVEL", "error", "RIVERHUB_PROJECT_RATE", "1000000",
		"RIVERHUB_HOT_WINDOW", hotWindow.String(), "RIVERHUB_TASK_LEASE", (hotWindow / 4).String()}
	if os.Getenv("BENCH_ARCHIVE") != "" { // settled tasks move to PostgreSQL instead of folding
		env = append(env, "RIVERHUB_ARCHIVE_URL", pgtest.URL(b))
	}
	n := startNode(b, testEnv(b, url, prefix, env...))
	rc, err := rdbtest.Client(url)
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()

	var settled atomic.Int64 // webhooks received (webhook), callbacks answered (event_driven)
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusOK)
		if kind != "event_driven" {
			settled.Add(1)
			return
		}
		var p struct {
			ChannelID   string `json:"channel_id"`
			CallbackURL string `json:"callback_url"`
		}
		_ = json.Unmarshal(body, &p)
		go func() {
			u, _ := neturlPath(p.CallbackURL)
			res := n.do(b, "POST", u, n.key, map[string]any{"data": map[string]any{"id": "mov_123", "title": "Inception", "year": 2010},
				"task_id": "movie_123", "metadata": map[string]any{"sources_checked": 3}})
			if res.status != 200 {
				b.Errorf("callback answered %d %s", res.status, res.body)
			}
			settled.Add(1)
		}()
	}))
	defer rx.Close()
	wf := map[string]any{"name": "m", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"title": "Inception", "year": 2010}}}
	if kind == "event_driven" {
		wf["event_name"] = "new_movie_suggestion"
	}
	n.must(b, 201, "POST", "/api/console/workflow", wf)
	if kind != "standard" {
		n.must(b, 201, "POST", "/api/console/webhook", map[string]any{"url": rx.URL + "/hook"})
	}
	before, _ := prefixBytes(b, rc, prefix)

	body, _ := json.Marshal(map[string]any{"workflow": "m", "messages": userMessages("Suggest a movie like Inception"),
		"customer_data": map[string]any{"user_id": "u1"}})
	cids := make([]string, tasks)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < tasks; i = int(next.Add(1)) - 1 {
				cid, err := submitAsync(benchClient, n.base, n.key, body)
				if err != nil {
					b.Errorf("submit: %v", err)
					return
				}
				cids[i] = cid
			}
		})
	}
	wg.Wait()
	for _, cid := range cids {
		n.waitFinal(b, n.key, cid, 30*time.Second)
	}
	deadline := time.Now().Add(30 * time.Second)
	for kind != "standard" && settled.Load() < int64(tasks) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := settled.Load(); kind != "standard" && got < int64(tasks) {
		b.Fatalf("%d of %d tasks settled", got, tasks)
	}
	if kind == "event_driven" {
		for _, cid := range cids {
			final := n.waitFinal(b, n.key, cid, 30*time.Second)
			if final["status"] != "completed" {
				b.Fatalf("channel %s: %v, want completed", cid, final["status"])
			}
		}
	}
	time.Sleep(hotWindow + time.Second)

	after, byKind := prefixBytes(b, rc, prefix)
	var index int64
	for k, v := range byKind {
		if strings.HasPrefix(k, ":logs:") {
			index += v
		}
	}
	b.ReportMetric(float64(after-before-index)/float64(tasks), "B/task")
	b.ReportMetric(float64(index)/float64(tasks), "index-B/task")
	var parts []string
	for k, v := range byKind {
		parts = append(parts, fmt.Sprintf("%s=%.0f", k, float64(v)/float64(tasks)))
	}
	sort.Strings(parts)
	b.Logf("%s: bytes per task by key kind (the whole prefix): %s", kind, strings.Join(parts, " "))

	// Nothing is lost to the compaction: the channel API and its timeline
	// still answer for every task.
	for _, cid := range cids[:min(20, len(cids))] {
		v := n.must(b, 200, "GET", "/api/console/logs/"+cid, nil)
		if get(b, v, "channel", "status") == nil || len(v["timeline"].([]any)) < 4 {
			b.Fatalf("log of %s: %v", cid, v)
		}
	}
}

// prefixBytes sums MEMORY USAGE over every key of prefix, and by kind: the
// key's name after the prefix, up to its first ':' or '{' (ch, dl, logs, …).
func prefixBytes(b *testing.B, c redis.UniversalClient, prefix string) (int64, map[string]int64) {
	b.Helper()
	ctx := context.Background()
	var total int64
	byKind := map[string]int64{}
	err := rdbtest.Nodes(ctx, c, func(ctx context.Context, node redis.UniversalClient) error {
		var mu sync.Mutex
		iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			n, err := node.MemoryUsage(ctx, k, 0).Result()
			if err != nil {
				continue // expired meanwhile
			}
			kind := keyKind(strings.TrimPrefix(k, prefix))
			mu.Lock()
			total += n
			byKind[kind] += n
			mu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		b.Fatal(err)
	}
	return total, byKind
}

var (
	kindTag = regexp.MustCompile(`\{[^}]*\}`)
	kindID  = regexp.MustCompile(`(msg|wh)_[0-9a-f]+|[0-9a-f]{8}-[0-9a-f-]{27}|:claim:.*|:stats:.*`)
)

// keyKind is a key's name with its ids and hash tags blanked: ":ch:{}:tl",
// ":{dq}:d:<>:att", ":logs:{}:wf:m".
func keyKind(k string) string {
	return kindID.ReplaceAllString(kindTag.ReplaceAllString(k, "{}"), "<>")
}

func neturlPath(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	return u.Path, nil
}
