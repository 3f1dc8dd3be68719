package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

// A project whose slow endpoints hold every attempt slot of the node does
// not keep another project waiting: the other project starts within its
// fair share, at once, and the node stays within twice its slots.
func TestProjectsShareTheNodeFairly(t *testing.T) {
	t.Parallel()
	var release atomic.Bool
	slow := newRelReceiver(t, func(rc *relReceiver, _ int, w http.ResponseWriter, r *http.Request) {
		for !release.Load() {
			select {
			case <-r.Context().Done():
				return
			case <-rc.quit:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	fast := newRelReceiver(t, relStatus(http.StatusOK))
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	var heavy []project.Webhook
	for i := range 10 {
		heavy = append(heavy, relHook(fmt.Sprintf("wh_a%d", i), slow.URL))
	}
	hooks.set("pa", heavy...)
	hooks.set("pb", relHook("wh_b", fast.URL))
	const slots = 8
	e := newRelEngine(t, c, prefix, hooks, Options{Concurrency: slots, Timeout: 20 * time.Second})
	e.Start()
	ctx := context.Background()
	for i := range 100 {
		if err := e.Enqueue(ctx, relEvent("pa", fmt.Sprintf("a-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	slow.waitCount(t, slots, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := slow.count(); n != slots {
		t.Fatalf("project A alone has %d attempts in flight, want all %d slots", n, slots)
	}
	for i := range 3 {
		if err := e.Enqueue(ctx, relEvent("pb", fmt.Sprintf("b-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// A's attempts hang until released: B must not wait for them.
	fast.waitCount(t, 3, 5*time.Second)
	if n := slow.count(); n != slots {
		t.Errorf("project A got %d attempts while holding its slots, want still %d", n, slots)
	}
	release.Store(true)
	for i := range 100 {
		relWaitStatus(t, e, "pa", DeliveryID("task.completed", fmt.Sprintf("a-%d", i), "wh_a"+fmt.Sprint(i%10)), "succeeded", 20*time.Second)
	}
	slow.mu.Lock()
	peak := slow.maxInFlight
	slow.mu.Unlock()
	if peak > 2*slots {
		t.Errorf("peak in flight %d, want at most twice the slots (%d)", peak, 2*slots)
	}
}

// One claim serves projects round robin: a project's backlog of due
// deliveries does not stand before another project's one.
func TestClaimIsRoundRobinAcrossProjects(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("pa", relHook("wh_a", "http://127.0.0.1:9/a"))
	hooks.set("pb", relHook("wh_b", "http://127.0.0.1:9/b"))
	e := newRelEngine(t, c, prefix, hooks, Options{})
	ctx := context.Background()
	for i := range 2000 {
		if err := e.Enqueue(ctx, relEvent("pa", fmt.Sprintf("a-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	if err := e.Enqueue(ctx, relEvent("pb", "b-0")); err != nil {
		t.Fatal(err)
	}
	ds, err := claimUpTo(e, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b int
	for _, d := range ds {
		if d.projectID == "pb" {
			b++
		}
	}
	if len(ds) != 10 || b != 1 {
		t.Fatalf("claimed %d with %d of project B; want 10 with B's one delivery among them", len(ds), b)
	}
	// A project over its share on this node is skipped.
	if err := e.Enqueue(ctx, relEvent("pb", "b-1")); err != nil {
		t.Fatal(err)
	}
	ds, err = claimUpTo(e, 10, []string{"pa"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].projectID != "pb" {
		t.Fatalf("with project A skipped, claimed %v; want B's one delivery", ds)
	}
}

// A claim that skips a project (the node full, the project holding its
// share) does not hide that project's due deliveries from the claim made
// once the project is no longer skipped (an attempt of its ended): they
// are taken at once, not when the schedule is next looked at anyway (up to
// maxIdle later, which held the claimer idle for half of
// BenchmarkDeliveryThroughput). The engine's clock stands still, so the
// look maxIdle later never comes.
func TestClaimAfterASkippingClaimTakesWhatIsDue(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("pa", relHook("wh_a", "http://127.0.0.1:9/a"))
	t0 := time.Now()
	e := newRelEngine(t, c, prefix, hooks, Options{Now: func() time.Time { return t0 }})
	ctx := context.Background()
	for i := range 3 {
		if err := e.Enqueue(ctx, relEvent("pa", fmt.Sprintf("a-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// An attempt of pa runs, and a claim skips pa (the skip given here as
	// admit gives it when pa holds its share: the whole node).
	e.begin([]claimed{{projectID: "pa"}})
	ds, err := claimUpTo(e, 10, []string{"pa"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 0 {
		t.Fatalf("with its only project skipped, the claim took %d deliveries", len(ds))
	}
	e.end("pa") // it ends: admit skips pa no more
	n, skip := e.admit()
	if len(skip) != 0 {
		t.Fatalf("admit still skips %v", skip)
	}
	if ds, err = claimUpTo(e, n, skip); err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("the claim after the skipped project's attempt ended took %d of the 3 due deliveries", len(ds))
	}
}

// Claims that skip the only project with something due, across many
// partitions, stop once each partition was looked at: they do not go round
// the partitions again and again finding nothing, nor again when an
// attempt of the project ends while it is still over its cap. Once it is
// under its cap, the next claims take its deliveries in every partition.
func TestSkippingClaimsStopAcrossPartitions(t *testing.T) {
	t.Parallel()
	const parts = 16
	e := spreadEngine(t, Options{Partitions: parts, ProjectConcurrency: 1})
	e.begin([]claimed{{projectID: "pa"}, {projectID: "pa"}}) // two attempts: over its cap of one
	sweep := func(when string) {
		t.Helper()
		rounds := 0
		for more := true; more; {
			if rounds++; rounds > parts {
				t.Fatalf("%s: %d claims and still more to look at (%d partitions)", when, rounds-1, parts)
			}
			n, skip := e.admit()
			if !slices.Equal(skip, []string{"pa"}) {
				t.Fatalf("%s: admit skips %v, want pa", when, skip)
			}
			ds, m, err := e.claim(min(n, 2), skip)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 0 {
				t.Fatalf("%s: a claim skipping the only project took %d deliveries", when, len(ds))
			}
			more = m
		}
		if ds, more, err := e.claim(2, []string{"pa"}); err != nil || len(ds) != 0 || more {
			t.Fatalf("%s: after the sweep a claim still looked at a partition (%d taken, more %v, %v)", when, len(ds), more, err)
		}
	}
	sweep("the project over its cap")
	e.end("pa") // one attempt left: still at its cap, still skipped
	n, skip := e.admit()
	if !slices.Equal(skip, []string{"pa"}) {
		t.Fatalf("with the project at its cap, admit skips %v", skip)
	}
	if ds, more, err := e.claim(min(n, 2), skip); err != nil || len(ds) != 0 || more {
		t.Fatalf("an attempt ended with the project still at its cap, and the partitions were looked at again (%d taken, more %v, %v)",
			len(ds), more, err)
	}
	e.end("pa")
	if n, skip = e.admit(); len(skip) != 0 {
		t.Fatalf("admit still skips %v", skip)
	}
	ds, err := claimUpTo(e, n, skip)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != spreadHooks {
		t.Fatalf("once the project was under its cap, the claims took %d of its %d deliveries", len(ds), spreadHooks)
	}
}

// A project back under its cap has its held partitions released a
// claim's worth at a time: once that claim has taken its work and it is
// over its cap again, the claims after it do not go round the other
// partitions it was seen due in, finding nothing (they wait for its next
// release, or their look maxIdle later).
func TestReleaseIsAClaimsWorth(t *testing.T) {
	t.Parallel()
	e := spreadEngine(t, Options{Partitions: 16, Concurrency: 3, ProjectConcurrency: 2})
	e.begin([]claimed{{projectID: "pa"}, {projectID: "pa"}}) // at its cap
	for more, rounds := true, 0; more; rounds++ {
		if rounds > 16 {
			t.Fatal("the skipping claims did not stop")
		}
		n, skip := e.admit()
		if n == 0 || !slices.Equal(skip, []string{"pa"}) {
			t.Fatalf("admit: %d slots, skipping %v; want some, skipping pa", n, skip)
		}
		ds, m, err := e.claim(n, skip)
		if err != nil || len(ds) != 0 {
			t.Fatalf("a claim skipping the only project: %d taken, %v", len(ds), err)
		}
		more = m
	}
	e.end("pa") // under its cap: two slots free
	n, skip := e.admit()
	if n != 2 || len(skip) != 0 {
		t.Fatalf("admit: %d slots, skipping %v; want 2, none", n, skip)
	}
	ds, _, err := e.claim(n, skip)
	if err != nil || len(ds) == 0 {
		t.Fatalf("the claim after the release took %d deliveries (%v)", len(ds), err)
	}
	e.begin(ds) // over its cap again, the node full
	if n, skip = e.admit(); n == 0 {
		t.Fatal("admit gave the full node's look no slots") // its first look: lastLook is zero
	}
	if ds, more, err := e.claim(n, skip); err != nil || len(ds) != 0 || more {
		t.Fatalf("the look after the release went on to the partitions not released (%d taken, more %v, %v)", len(ds), more, err)
	}
}

// spreadHooks is how many endpoints spreadEngine's project has.
const spreadHooks = 32

// spreadEngine is an engine (with o; not started, its clock standing
// still) whose project pa has spreadHooks endpoints, spread over the
// partitions, and one event due for them all.
func spreadEngine(t *testing.T, o Options) *Engine {
	t.Helper()
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	var ws []project.Webhook
	for i := range spreadHooks {
		ws = append(ws, relHook(fmt.Sprintf("wh_%d", i), "http://127.0.0.1:9/"))
	}
	hooks.set("pa", ws...)
	t0 := time.Now()
	o.Now = func() time.Time { return t0 }
	e := newRelEngine(t, c, prefix, hooks, o)
	if err := e.Enqueue(context.Background(), relEvent("pa", "a-0")); err != nil {
		t.Fatal(err)
	}
	return e
}

// claimUpTo claims as the claimer does, round after round while the
// partitions have more, until it holds n deliveries. (With one partition,
// one round.)
func claimUpTo(e *Engine, n int, skip []string) ([]claimed, error) {
	var out []claimed
	for len(out) < n {
		ds, more, err := e.claim(n-len(out), skip)
		if err != nil {
			return out, err
		}
		out = append(out, ds...)
		if len(ds) == 0 && !more {
			break
		}
	}
	return out, nil
}

// Deliveries an earlier version scheduled in its single due set are moved
// into their projects' schedules and delivered.
func TestLegacyScheduleIsMigrated(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, relStatus(http.StatusOK))
	e, _, c := relOneEndpoint(t, rc.URL, Options{})
	ctx := context.Background()
	id := DeliveryID("task.completed", "old", "wh_1")
	body := `{"type":"task.completed","channel_id":"old","status":"success","data":{}}`
	// (in partition 0, whatever the endpoint's partition)
	if err := c.HSet(ctx, e.parts[0].dKey(id), "project_id", "p1", "webhook_id", "wh_1", "channel_id", "old", "event", "task.completed",
		"body", body, "attempts", 0, "tries", 0, "replays", 0, "status", "pending").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, e.parts[0].legacyDueKey, redis.Z{Score: float64(time.Now().UnixMilli()), Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	e.Start()
	relWaitStatus(t, e, "p1", id, "succeeded", 5*time.Second)
	if n, _ := c.Exists(ctx, e.parts[0].legacyDueKey).Result(); n != 0 {
		t.Errorf("the legacy due set still exists")
	}
}

// The fair share is max-min: what projects with few attempts leave unused
// goes to the others.
func TestFairShareIsMaxMin(t *testing.T) {
	e := &Engine{o: Options{Concurrency: 512}, perProj: map[string]int{"big": 300}}
	for i := range 10 {
		e.perProj[fmt.Sprint("small", i)] = 1
	}
	if got := e.fairShare(); got != 512 {
		t.Errorf("share with ten projects at 1 attempt and nobody else waiting = %d, want 512: none is held back", got)
	}
	e.dueProjs = 12 // and one more project waits with nothing running here
	if got := e.fairShare(); got != 251 {
		t.Errorf("share with one more project waiting = %d, want 251 ((512-10)/2)", got)
	}
	e = &Engine{o: Options{Concurrency: 512}, perProj: map[string]int{"a": 400}}
	if got := e.fairShare(); got != 512 {
		t.Errorf("share of a project alone = %d, want all 512", got)
	}
}

// Disabling an endpoint whose circuit is open dead-letters its waiting
// deliveries at once, not one probe at a time.
func TestDisabledEndpointReleasesItsWaitingDeliveries(t *testing.T) {
	t.Parallel()
	rc := newRelReceiver(t, relStatus(http.StatusInternalServerError))
	e, hooks, c := relOneEndpoint(t, rc.URL, Options{BreakerThreshold: 2, BreakerCooldown: 200 * time.Millisecond,
		Schedule: []time.Duration{0, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}})
	e.Start()
	ctx := context.Background()
	const n = 20
	relEnqueueN(t, e, "p1", "ch", n)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if k, _ := c.ZCard(ctx, e.partOf("wh_1").waitKey("wh_1")).Result(); k > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery waits for the open endpoint")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = hooks.DisableWebhook(ctx, "p1", "wh_1", "disabled by the test")
	for i := range n {
		d := relWaitStatus(t, e, "p1", DeliveryID("task.completed", fmt.Sprintf("ch%02d", i), "wh_1"), "dead", 5*time.Second)
		if d.LastError != "endpoint disabled" && d.Attempts == 0 {
			t.Errorf("delivery %d: dead with %q after %d attempts", i, d.LastError, d.Attempts)
		}
	}
	if k, _ := c.ZCard(ctx, e.partOf("wh_1").waitKey("wh_1")).Result(); k != 0 {
		t.Errorf("%d deliveries still wait for the disabled endpoint", k)
	}
}

// While a claim is in flight, an enqueue takes none of the slots the claim
// may fill, and once the claim has started what it took, the enqueue takes
// what is left: the node never runs more attempts than its Concurrency.
func TestEnqueueTakesNoSlotOfAClaimInFlight(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	hooks := &relHooks{}
	hooks.set("pa", relHook("wh_a", "http://127.0.0.1:1"))
	const slots = 4
	e := newRelEngine(t, c, prefix, hooks, Options{Concurrency: slots})
	e.claiming.Store(true) // as Start does, without its loops
	taken := 0
	take := func() bool {
		if !e.take("pa", "wh_a") {
			return false
		}
		taken++
		return true
	}
	defer func() {
		for range taken {
			e.end("pa")
			e.attempts.Done()
		}
	}()

	n, _ := e.admit()
	if n != slots {
		t.Fatalf("admit on an idle node = %d, want every slot (%d)", n, slots)
	}
	if take() || e.canTakeNow() {
		t.Fatal("an enqueue took a slot while the claim that may fill it was in flight")
	}
	e.begin([]claimed{{projectID: "pa"}}) // the claim found one delivery
	for take() {
	}
	e.mu.Lock()
	running, inClaim := e.running, e.inClaim
	e.mu.Unlock()
	if taken != slots-1 || running != slots || inClaim != 0 {
		t.Errorf("after a claim of 1: the enqueue took %d, running %d, held %d; want %d, %d, 0", taken, running, inClaim, slots-1, slots)
	}
	e.end("pa") // the claimed attempt ends
	if !take() {
		t.Error("an enqueue took no slot freed by an attempt")
	}
}
