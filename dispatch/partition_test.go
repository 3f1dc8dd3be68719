package dispatch

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

// hooksPerPartition returns per endpoint ids for each of n partitions of
// the delivery schedule (rdb.Partitions.Of), partition by partition.
func hooksPerPartition(n, per int) [][]string {
	ps := rdb.NewPartitions("dq", n)
	out := make([][]string, n)
	for i := 0; ; i++ {
		id := fmt.Sprintf("wh_part%03d", i)
		if k := ps.Of(id); len(out[k]) < per {
			out[k] = append(out[k], id)
		}
		full := true
		for _, ids := range out {
			full = full && len(ids) == per
		}
		if full {
			return out
		}
	}
}

func TestNudgePayload(t *testing.T) {
	due := time.UnixMilli(1_700_000_000_123)
	tests := []struct {
		name string
		set  partSet
		want string
		ks   []int
	}{
		{"one partition", partSet{true}, "1700000000123", nil},
		{"several", partSet{false, true, false, true}, "1700000000123:1,3", []int{1, 3}},
		{"none named", partSet{false, false}, "1700000000123", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := nudgePayload(due, tt.set)
			if got != tt.want {
				t.Fatalf("payload %q, want %q", got, tt.want)
			}
			at, ks, ok := parseNudge(got, len(tt.set))
			if !ok || !at.Equal(due) || !slices.Equal(ks, tt.ks) {
				t.Fatalf("parse %q = %v %v %v; want %v %v", got, at, ks, ok, due, tt.ks)
			}
		})
	}
	if _, _, ok := parseNudge("12:9", 4); ok {
		t.Errorf("a nudge naming only an unknown partition was accepted")
	}
}

// fourPartitionEngine is an engine with four partitions and project p1's
// two endpoints in each (ids, by partition; ws, all of them), answered
// 200 by rc.
func fourPartitionEngine(t *testing.T, c redis.UniversalClient, prefix string) (e *Engine, rc *relReceiver, ids [][]string, ws []project.Webhook) {
	t.Helper()
	rc = newRelReceiver(t, relStatus(http.StatusOK))
	ids = hooksPerPartition(4, 2)
	for _, part := range ids {
		for _, id := range part {
			ws = append(ws, relHook(id, rc.URL))
		}
	}
	hooks := &relHooks{}
	hooks.set("p1", ws...)
	return newRelEngine(t, c, prefix, hooks, Options{Partitions: 4}), rc, ids, ws
}

// With four partitions, deliveries to endpoints of every partition are
// delivered, each written in its endpoint's partition.
func TestPartitionsDeliverToEndpointsOfEveryPartition(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	e, rc, ids, ws := fourPartitionEngine(t, c, prefix)
	tags := map[string]bool{}
	for _, pt := range e.parts {
		tags[pt.leaseKey] = true
	}
	if len(tags) != 4 || e.parts[0].leaseKey != prefix+":{dq}:lease" {
		t.Fatalf("partitions' lease keys %v; want 4 distinct, partition 0's %s:{dq}:lease", tags, prefix)
	}
	const events = 10
	relEnqueueN(t, e, "p1", "ch", events)
	ctx := context.Background()
	for k, part := range ids {
		for _, whid := range part {
			id := DeliveryID("task.completed", "ch00", whid)
			if n, _ := c.Exists(ctx, e.parts[k].dKey(id)).Result(); n != 1 {
				t.Errorf("delivery to %s is not in partition %d", whid, k)
			}
		}
	}
	e.Start()
	rc.waitCount(t, events*len(ws), 10*time.Second)
	for i := range events {
		for _, w := range ws {
			relWaitStatus(t, e, "p1", DeliveryID("task.completed", fmt.Sprintf("ch%02d", i), w.ID), "succeeded", 5*time.Second)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := rc.count(); got != events*len(ws) {
		t.Errorf("receiver got %d requests, want %d", got, events*len(ws))
	}
	st, err := e.Stats(ctx, "p1", 2)
	if err != nil {
		t.Fatal(err)
	}
	ok := int64(0)
	for _, m := range st.Minutes {
		ok += m.Succeeded
	}
	if ok != int64(events*len(ws)) {
		t.Errorf("statistics count %d successes, want %d", ok, events*len(ws))
	}
}

// A delivery an earlier version wrote (one partition: {dq}) for an endpoint
// that is now in another partition stays in partition 0: it is sent,
// retried, dead-lettered, listed, replayed and delivered there.
func TestLegacyDeliveryInPartitionZero(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	fails := map[string]int{} // webhook-id → failures left
	rc := newRelReceiver(t, func(_ *relReceiver, _ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		id := r.Header.Get("webhook-id")
		if fails[id] > 0 {
			fails[id]--
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	c, prefix := rdbtest.New(t)
	whid := hooksPerPartition(4, 1)[2][0]
	hooks := &relHooks{}
	hooks.set("p1", relHook(whid, rc.URL))
	// Three attempts, and an open circuit only after many failures (the
	// retries here are not about the circuit).
	e := newRelEngine(t, c, prefix, hooks, Options{Partitions: 4, BreakerThreshold: 100,
		Schedule: []time.Duration{0, 20 * time.Millisecond, 20 * time.Millisecond}})
	if e.partOf(whid).k == 0 {
		t.Fatalf("endpoint %s is in partition 0", whid)
	}
	ctx := context.Background()
	// What an earlier version's enqueue.lua wrote: in {dq}.
	old := e.parts[0]
	legacy := func(cid string) string {
		t.Helper()
		id := DeliveryID("task.completed", cid, whid)
		body := `{"type":"task.completed","channel_id":"` + cid + `","status":"success","data":{}}`
		now := time.Now().UnixMilli()
		if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, old.dKey(id), "project_id", "p1", "webhook_id", whid, "channel_id", cid, "event", "task.completed",
				"body", body, "attempts", 0, "tries", 0, "replays", 0, "status", "pending", "created_at", "2026-01-01T00:00:00Z")
			p.ZAdd(ctx, old.dueOf("p1"), redis.Z{Score: float64(now), Member: id})
			p.ZAddArgs(ctx, old.projectsKey, redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(now), Member: "p1"}}})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	retried, dead := legacy("old-retried"), legacy("old-dead")
	mu.Lock()
	fails[retried], fails[dead] = 1, 3
	mu.Unlock()
	e.Start()

	d := relWaitStatus(t, e, "p1", retried, "succeeded", 5*time.Second)
	if d.Attempts != 2 {
		t.Errorf("retried legacy delivery: %d attempts, want 2", d.Attempts)
	}
	relWaitStatus(t, e, "p1", dead, "dead", 5*time.Second)
	for _, id := range []string{retried, dead} {
		if n, _ := c.Exists(ctx, e.partOf(whid).dKey(id), e.partOf(whid).attKey(id)).Result(); n != 0 {
			t.Errorf("legacy delivery %s has keys in its endpoint's partition", id)
		}
		if n, _ := c.LLen(ctx, old.attKey(id)).Result(); n == 0 {
			t.Errorf("legacy delivery %s: no attempts recorded in partition 0", id)
		}
	}
	// Partition 0's copy of the endpoint's health saw the attempts (two
	// of the retried one, three of the dead one); the endpoint's own
	// partition's none.
	if recent, _ := c.HGet(ctx, old.epKey(whid), "recent").Result(); len(recent) != 5 || strings.Count(recent, "0") != 4 {
		t.Errorf("partition 0's health of the endpoint: recent outcomes %q, want 4 failures and a success", recent)
	}
	if n, _ := c.Exists(ctx, e.partOf(whid).epKey(whid)).Result(); n != 0 {
		t.Errorf("the endpoint's own partition has a health record")
	}
	for _, hook := range []string{"", whid} {
		page, err := e.DeadLetters(ctx, "p1", hook, project.ListParams{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 1 || page.Items[0].ID != dead {
			t.Errorf("dead letters (endpoint %q) = %v; want the legacy one", hook, page.Items)
		}
	}
	if err := e.Replay(ctx, "p1", dead); err != nil {
		t.Fatal(err)
	}
	d = relWaitStatus(t, e, "p1", dead, "succeeded", 5*time.Second)
	if d.Replays != 1 || d.Attempts != 4 {
		t.Errorf("replayed legacy delivery: %d replays, %d attempts; want 1, 4", d.Replays, d.Attempts)
	}
	if types := relLog(t, e, "old-dead"); !slices.Contains(types, "dead_lettered") || !slices.Contains(types, "replayed") {
		t.Errorf("legacy delivery's log %v; want dead_lettered and replayed", types)
	}

	// Cancelling finds a legacy delivery too.
	cancelled := legacy("old-cancelled")
	mu.Lock()
	fails[cancelled] = 100
	mu.Unlock()
	relWaitStatus(t, e, "p1", cancelled, "retrying", 5*time.Second)
	if err := e.Cancel(ctx, []Cancellation{{relEvent("p1", "old-cancelled"), "test"}}); err != nil {
		t.Fatal(err)
	}
	relWaitStatus(t, e, "p1", cancelled, "cancelled", 5*time.Second)
}

// Listing a project's dead letters merges the partitions' sets, newest
// first, ties by id (descending), paging through all of them once.
func TestDeadLettersMergePartitions(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	e, _, _, ws := fourPartitionEngine(t, c, prefix)
	ctx := context.Background()
	type dl struct {
		id, whid string
		at       int64
	}
	var all []dl
	base := time.Now().Add(-time.Hour).UnixMilli()
	// 37 dead letters over the 8 endpoints, at 3 distinct times: ties
	// within and across partitions.
	for i := range 37 {
		w := ws[i%len(ws)].ID
		cid := fmt.Sprintf("dead-%02d", i)
		d := dl{id: DeliveryID("task.completed", cid, w), whid: w, at: base - int64(i%3)*1000}
		all = append(all, d)
		pt := e.partOf(w)
		if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, pt.dKey(d.id), "project_id", "p1", "webhook_id", w, "channel_id", cid, "event", "task.completed",
				"body", `{}`, "attempts", 1, "tries", 1, "replays", 0, "status", "dead", "dead_at", d.at, "created_at", "2026-01-01T00:00:00Z")
			p.ZAdd(ctx, pt.dlqKey("p1"), redis.Z{Score: float64(d.at), Member: d.id})
			p.ZAdd(ctx, pt.dlqHookKey("p1", w), redis.Z{Score: float64(d.at), Member: d.id})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// One member whose record is gone: skipped, not counted in a page.
	gone := DeliveryID("task.completed", "gone", ws[3].ID)
	c.ZAdd(ctx, e.partOf(ws[3].ID).dlqKey("p1"), redis.Z{Score: float64(base), Member: gone})

	order := func(ds []dl) []string {
		s := slices.Clone(ds)
		slices.SortFunc(s, func(a, b dl) int {
			if c := cmp.Compare(b.at, a.at); c != 0 {
				return c
			}
			return strings.Compare(b.id, a.id)
		})
		out := make([]string, len(s))
		for i, d := range s {
			out[i] = d.id
		}
		return out
	}
	list := func(hook string, limit int) []string {
		t.Helper()
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			page, err := e.DeadLetters(ctx, "p1", hook, project.ListParams{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) > limit || (page.NextCursor != nil && len(page.Items) != limit) {
				t.Fatalf("page of %d items (limit %d), next cursor %v", len(page.Items), limit, page.NextCursor != nil)
			}
			for _, d := range page.Items {
				got = append(got, d.ID)
			}
			if page.NextCursor == nil {
				return got
			}
			cursor = *page.NextCursor
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
	}
	for _, limit := range []int{1, 5, 10, 37, 100} {
		if got, want := list("", limit), order(all); !slices.Equal(got, want) {
			t.Errorf("limit %d: listed %d dead letters\n%v\nwant %d\n%v", limit, len(got), got, len(want), want)
		}
	}
	// One endpoint's.
	var one []dl
	for _, d := range all {
		if d.whid == ws[5].ID {
			one = append(one, d)
		}
	}
	if got, want := list(ws[5].ID, 2), order(one); !slices.Equal(got, want) {
		t.Errorf("endpoint's dead letters %v, want %v", got, want)
	}
	// Replaying them all replays each partition's, and each is delivered.
	n, err := e.ReplayAll(ctx, "p1", "")
	if err != nil || n != len(all) {
		t.Fatalf("ReplayAll = %d, %v; want %d", n, err, len(all))
	}
	e.Start()
	for _, d := range all {
		relWaitStatus(t, e, "p1", d.id, "succeeded", 5*time.Second)
	}
	if page, _ := e.DeadLetters(ctx, "p1", "", project.ListParams{Limit: 10}); len(page.Items) != 0 {
		t.Errorf("dead letters after replaying all: %d", len(page.Items))
	}
}
