package e2e

import (
	"context"
	"encoding/base64"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/riverhub/riverhub/internal/pgtest"
	"github.com/riverhub/riverhub/internal/rdb"
)

// benchCount is env's integer, or def.
func benchCount(env string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkArchiveThroughput measures how fast settled channels move from
// Redis to the archive: a node runs BENCH_TASKS tasks (default 20,000;
// the mix of TestArchivedLogsAnswerTheSame) with a long hot window and
// stops; their hot window made to have passed, a second node moves them.
// archived/s counts from the first channel in PostgreSQL to the last;
// settled/s is the first node's submit-to-settled rate, for scale;
// pg-B/task is the table's size with its indexes and TOAST, per task;
// redis-µs/moved is Redis's CPU from the second node's start to the end
// of the moves' sweep, per channel (one Redis only).
func BenchmarkArchiveThroughput(b *testing.B) {
	tasks := benchCount("BENCH_TASKS", 20_000)
	for range b.N {
		r := newArchiveRig(b)
		a := startNode(b, r.env(b, "RIVERHUB_RETRY_SCHEDULE", fastSchedule))
		r.callbackTo(a)
		r.setup(b, a)
		t0 := time.Now()
		submitAll(b, a, tasks)
		r.waitSettled(b, a, tasks, 5*time.Minute)
		settled := time.Since(t0)
		a.stop()
		r.age(b)

		ctx := context.Background()
		conn, err := pgx.Connect(ctx, r.pgURL)
		if err != nil {
			b.Fatal(err)
		}
		count := func() int64 {
			var n int64
			_ = conn.QueryRow(ctx, "SELECT count(*) FROM riverhub_channels").Scan(&n)
			return n
		}
		cpu0 := redisCPU(r.rc)
		startNode(b, r.env(b, "RIVERHUB_TASK_LEASE", "1s", "RIVERHUB_HOT_WINDOW", "4s"))
		deadline := time.Now().Add(5 * time.Minute)
		var first time.Time
		var n0 int64
		for {
			n := count()
			if first.IsZero() && n > 0 {
				first, n0 = time.Now(), n
			}
			if n == int64(tasks) && r.waiting() == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d archived in 5 minutes", n, tasks)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(first)
		// The moves' sweep (3 leases after each move) is Redis work of
		// the move too: counted once its notes are all handled.
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if n, err := r.rc.ZCard(ctx, r.prefix+":unindex:moved").Result(); err == nil && n == 0 {
				break
			}
		}
		redisUS := (redisCPU(r.rc) - cpu0) * 1e6 / float64(tasks)
		var bytes int64
		_ = conn.QueryRow(ctx, "SELECT pg_total_relation_size('riverhub_channels')").Scan(&bytes)
		conn.Close(ctx)
		b.ReportMetric(float64(bytes)/float64(tasks), "pg-B/task")
		b.ReportMetric(float64(int64(tasks)-n0)/took.Seconds(), "archived/s")
		b.ReportMetric(float64(tasks)/settled.Seconds(), "settled/s")
		if !rdb.IsCluster(r.rc) {
			b.ReportMetric(redisUS, "redis-µs/moved")
		}
	}
}

// BenchmarkArchivedLogs measures request-log pages over BENCH_ARCHIVED
// (default 1,000,000) archived channels of one project, through the API:
// the first page and pages at random depths, with no filter, by workflow,
// by status, by event name, by workflow and status, by workflow and event
// name (one pair matching none), over a time range.
// Reports the latency's p50 and p99 over every page.
func BenchmarkArchivedLogs(b *testing.B) {
	rows := benchCount("BENCH_ARCHIVED", 1_000_000)
	pg := pgtest.URL(b)
	n := newNode(b, "RIVERHUB_ARCHIVE_URL", pg, "RIVERHUB_LOG_LEVEL", "error")
	proj := n.must(b, 201, "POST", "/api/console/projects", map[string]any{"name": "archived"})
	pid, key := proj["project_id"].(string), proj["key"].(string)
	// One channel every 100 ms back from now: created_ms spread over the
	// last rows/10 seconds, ids UUIDv7 of that time.
	now := time.Now().UnixMilli()
	t0 := time.Now()
	pgtest.Exec(b, pg, `INSERT INTO riverhub_channels (channel_id, project_id, workflow, event_name, status, created_ms, created_at, updated_at, doc, entries)
		SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8' || substr(r, 4, 3) || '-' || substr(r, 7, 12))::uuid,
			$1, 'wf' || (g % 5), CASE WHEN g % 50 = 0 THEN 'thing' ELSE '' END,
			CASE WHEN g % 50 = 0 THEN 'completed' WHEN g % 10 = 3 THEN 'error' ELSE 'success' END,
			ms, to_char(to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
			to_char(to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), '\x01'::bytea, 0
		FROM (SELECT g, $2::bigint - g * 100 AS ms, lpad(to_hex($2::bigint - g * 100), 12, '0') AS h, md5(g::text) AS r
			FROM generate_series(1, $3::int) g) s`, pid, now, rows)
	pgtest.Exec(b, pg, "ANALYZE riverhub_channels")
	b.Logf("%d archived channels inserted in %v", rows, time.Since(t0).Round(time.Millisecond))
	oldest := now - int64(rows)*100
	cursorAt := func() string { // a position at a random depth
		ms := oldest + rand.Int64N(now-oldest)
		return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(ms, 10) + ":ffffffff-ffff-7fff-bfff-ffffffffffff"))
	}
	stamp := func(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }
	queries := []url.Values{
		{}, {"workflow": {"wf3"}}, {"status": {"error"}}, {"event_name": {"thing"}},
		{"workflow": {"wf1"}, "status": {"success"}},
		{"workflow": {"wf0"}, "event_name": {"thing"}}, {"workflow": {"wf1"}, "event_name": {"thing"}}, // the second matches none
		{"event_name": {"thing"}, "status": {"error"}}, // none either
		{"from": {stamp(oldest + (now-oldest)/3)}, "to": {stamp(oldest + 2*(now-oldest)/3)}},
	}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for _, q := range queries {
			for _, deep := range []bool{false, true} {
				q := url.Values(cloneQuery(q))
				q.Set("limit", "50")
				if deep {
					q.Set("cursor", cursorAt())
				}
				start := time.Now()
				res := n.do(b, "GET", "/api/console/logs?"+q.Encode(), key, nil)
				lat = append(lat, time.Since(start))
				if res.status != 200 {
					b.Fatalf("logs ?%s: %d %s", q.Encode(), res.status, res.body)
				}
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.Logf("%d pages over %d archived channels", len(lat), rows)
}

func cloneQuery(q url.Values) map[string][]string {
	out := make(map[string][]string, len(q))
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}

// BenchmarkThroughputArchived is BenchmarkThroughput with the archive on
// and a hot window of 4 s (so channels move while tasks run);
// BenchmarkThroughputFolded the same hot window without an archive (they
// are folded in Redis instead): the two side by side are the archive's
// cost to the task path.
func BenchmarkThroughputArchived(b *testing.B) {
	throughput(b, "RIVERHUB_ARCHIVE_URL", pgtest.URL(b), "RIVERHUB_TASK_LEASE", "1s", "RIVERHUB_HOT_WINDOW", "4s")
}

func BenchmarkThroughputFolded(b *testing.B) {
	throughput(b, "RIVERHUB_TASK_LEASE", "1s", "RIVERHUB_HOT_WINDOW", "4s")
}
