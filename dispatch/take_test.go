package dispatch

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// A delivery enqueued on a node with room for it is claimed by the enqueue
// itself (no claim script runs for it: no claim list is written) and sent
// at once; one for an endpoint whose circuit is open, or enqueued when the
// node has no free slot, goes to the schedule as before.
func TestEnqueueTakesWhatItHasRoomFor(t *testing.T) {
	t.Parallel()
	held := newRelReceiver(t, func(rc *relReceiver, _ int, _ http.ResponseWriter, r *http.Request) { rc.hang(r) })
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", held.URL))
	hooks.set("p2", relHook("wh_2", held.URL))
	e := newRelEngine(t, c, prefix, hooks, Options{Concurrency: 2})
	e.Start()
	ctx := context.Background()
	state := func(pid, cid, whid string) (status string, due, leased bool, claims int) {
		t.Helper()
		pt := e.partOf(whid)
		id := DeliveryID("task.completed", cid, whid)
		status = c.HGet(ctx, pt.dKey(id), "status").Val()
		due = c.ZScore(ctx, pt.dueOf(pid), id).Err() == nil
		leased = c.ZScore(ctx, pt.leaseKey, id).Err() == nil
		keys, _, err := c.Scan(ctx, 0, pt.claimPrefix+"*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		return status, due, leased, len(keys)
	}

	// Room: taken by the enqueue, in flight at once. (Not while a claim
	// round is under way: it holds the free slots. Right after one, the
	// next is up to maxIdle away.)
	betweenRounds(t, e)
	if err := e.Enqueue(ctx, relEvent("p1", "ch-taken")); err != nil {
		t.Fatal(err)
	}
	if st, due, leased, claims := state("p1", "ch-taken", "wh_1"); st != "delivering" || due || !leased || claims != 0 {
		t.Fatalf("enqueued with room: status %q, due %v, leased %v, %d claim lists; want delivering, leased by the enqueue", st, due, leased, claims)
	}
	held.waitCount(t, 1, 5*time.Second)

	// An open circuit: scheduled, not sent.
	pt := e.partOf("wh_2")
	if err := c.HSet(ctx, pt.epKey("wh_2"), "state", "open", "open_until", strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.Enqueue(ctx, relEvent("p2", "ch-open")); err != nil {
		t.Fatal(err)
	}
	if st, _, leased, _ := state("p2", "ch-open", "wh_2"); st != "pending" || leased {
		t.Fatalf("enqueued for an open circuit: status %q, leased %v; want pending, not leased", st, leased)
	}

	// No free slot (Concurrency 2: one held above, one more taken here):
	// the next is scheduled.
	if err := e.Enqueue(ctx, relEvent("p1", "ch-second")); err != nil {
		t.Fatal(err)
	}
	held.waitCount(t, 2, 5*time.Second)
	if err := e.Enqueue(ctx, relEvent("p1", "ch-full")); err != nil {
		t.Fatal(err)
	}
	if st, due, leased, _ := state("p1", "ch-full", "wh_1"); st != "pending" || !due || leased {
		t.Fatalf("enqueued with no free slot: status %q, due %v, leased %v; want pending in the schedule", st, due, leased)
	}
	time.Sleep(200 * time.Millisecond)
	if n := held.count(); n != 2 {
		t.Fatalf("the receiver got %d requests, want 2 (the open circuit's and the full node's wait)", n)
	}
}

// The same taking enqueue sent again (its answer was lost) answers taken
// again, so its node attempts the delivery rather than leave it leased by
// nobody; another token finds it taken.
func TestTakingEnqueueSentAgain(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	e := newRelEngine(t, c, prefix, &relHooks{}, Options{})
	ctx := context.Background()
	pt := e.partOf("wh_1")
	run := func(token string) int64 {
		t.Helper()
		n, err := enqueueScript.Run(ctx, c, []string{pt.dKey("d1"), pt.dueOf("p1"), pt.projectsKey, pt.leaseKey, pt.epKey("wh_1")},
			"d1", time.Now().UnixMilli(), "p1", time.Now().Add(time.Minute).UnixMilli(), token, "project_id", "p1", "status", "pending").Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := run("tok1"); n != 2 {
		t.Fatalf("first taking enqueue = %d, want 2 (taken)", n)
	}
	if n := run("tok1"); n != 2 {
		t.Errorf("the same enqueue sent again = %d, want 2 (taken by it)", n)
	}
	if n := run("tok2"); n != 0 {
		t.Errorf("another token's enqueue = %d, want 0 (it exists)", n)
	}
}

// betweenRounds waits until a claim round of e has just ended.
func betweenRounds(t *testing.T, e *Engine) {
	t.Helper()
	inRound := func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.inClaim > 0
	}
	seen := false
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		if inRound() {
			seen = true
		} else if seen {
			return
		}
	}
	t.Fatal("no claim round within 5 s")
}

// An enqueue sent in a completion's round trip (Prepare, In, Done) writes
// its deliveries only while the guard hash's message is the event's body:
// a completion that lost to another run's, whose message differs, writes
// none and gives its slots back; the winner's is sent, and a delivery that
// exists keeps its body.
func TestGuardedEnqueue(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	if rdb.IsCluster(c) {
		t.Skip("the guard is another slot's key: one Redis only (channels uses it only there)")
	}
	rx := newRelReceiver(t, relStatus(http.StatusOK))
	hooks := &relHooks{}
	hooks.set("p1", relHook("wh_1", rx.URL))
	e := newRelEngine(t, c, prefix, hooks, Options{Concurrency: 4})
	e.Start()
	ctx := context.Background()
	record := prefix + ":record"
	run := func(ev Event) bool {
		t.Helper()
		q, err := e.Prepare(ctx, ev)
		if err != nil || q == nil {
			t.Fatalf("Prepare = %v, %v; want an Enqueueing", q, err)
		}
		err = rdb.Pipelined(ctx, c, func(p redis.Pipeliner) { q.In(ctx, p, record) })
		guarded, err := q.Done(err)
		if err != nil {
			t.Fatal(err)
		}
		return guarded
	}
	won, lost := relEvent("p1", "ch-1"), relEvent("p1", "ch-1")
	lost.Body = json.RawMessage(`{"type":"task.completed","channel_id":"ch-1","status":"error"}`)
	id := DeliveryID("task.completed", "ch-1", "wh_1")
	pt := e.partOf("wh_1")

	// No record: nothing written.
	if !run(won) {
		t.Fatal("enqueue guarded by a missing record: written, want guarded")
	}
	// The record holds the winner's message: the loser's writes nothing.
	if err := c.HSet(ctx, record, "message", string(won.Body)).Err(); err != nil {
		t.Fatal(err)
	}
	if !run(lost) {
		t.Fatal("the losing completion's enqueue: written, want guarded")
	}
	if n := c.Exists(ctx, pt.dKey(id)).Val(); n != 0 {
		t.Fatalf("a guarded enqueue wrote the delivery")
	}
	// The winner's goes, and is sent.
	if run(won) {
		t.Fatal("the winning completion's enqueue: guarded, want written")
	}
	rx.waitCount(t, 1, 5*time.Second)
	if got := string(rx.requests()[0].body); got != string(won.Body) {
		t.Fatalf("sent %s, want the winner's body %s", got, won.Body)
	}
	// Sent again after a crash, with the record as it is: it exists, and
	// keeps its body.
	if run(won) {
		t.Fatal("the same enqueue again: guarded, want found")
	}
	if got := c.HGet(ctx, pt.dKey(id), "body").Val(); got != string(won.Body) {
		t.Fatalf("the delivery's body became %s", got)
	}
	// Every slot was given back (the guarded ones at once, the sent one
	// when its attempt ended).
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		running := e.running
		e.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held", running)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := rx.count(); n != 1 {
		t.Fatalf("the receiver got %d requests, want 1", n)
	}

	// The winner wrote the delivery of one endpoint only (it saw one): the
	// loser, seeing two, finds one and is kept from writing the other, and
	// says so, so that its caller enqueues the winner's for both.
	hooks.set("p2", relHook("wh_a", rx.URL), relHook("wh_b", rx.URL))
	won2, lost2 := relEvent("p2", "ch-2"), relEvent("p2", "ch-2")
	lost2.Body = lost.Body
	won2.WebhookIDs = []string{"wh_a"}
	if err := c.HSet(ctx, record, "message", string(won2.Body)).Err(); err != nil {
		t.Fatal(err)
	}
	if run(won2) {
		t.Fatal("the winner's enqueue for one endpoint: guarded, want written")
	}
	if !run(lost2) {
		t.Fatal("the loser's enqueue, one delivery found and one refused: not guarded, want guarded")
	}
	idB := DeliveryID("task.completed", "ch-2", "wh_b")
	if n := c.Exists(ctx, e.partOf("wh_b").dKey(idB)).Val(); n != 0 {
		t.Fatal("the loser wrote its delivery for the second endpoint")
	}
}

// An event no endpoint subscribes to is prepared as nothing to send: no
// command goes in the caller's round trip, and Done reports it done, so a
// completion does not look its endpoints up again (Enqueue).
func TestPrepareWithNoEndpoint(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	e := newRelEngine(t, c, prefix, &relHooks{}, Options{})
	ctx := context.Background()
	q, err := e.Prepare(ctx, relEvent("p-none", "ch-1"))
	if err != nil || q == nil {
		t.Fatalf("Prepare = %v, %v; want an empty Enqueueing", q, err)
	}
	p := c.Pipeline()
	q.In(ctx, p, prefix+":record")
	if n := p.Len(); n != 0 {
		t.Fatalf("In queued %d commands, want none", n)
	}
	if guarded, err := q.Done(nil); guarded || err != nil {
		t.Fatalf("Done = %v, %v; want done (false, nil)", guarded, err)
	}
}
