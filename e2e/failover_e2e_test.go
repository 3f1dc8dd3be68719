package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// The failover tests: two riverhub processes on a Redis Cluster (three
// masters, three replicas) or a Sentinel group (a master, a replica,
// three sentinels) of the test's own, under open-loop submissions with a
// webhook each and sockets joined to channels, while the master that
// holds the task queue crashes (SIGKILL: it does not wait for its replica
// to catch up, as SHUTDOWN does) and its replica is promoted. Each runs
// without and with RIVERHUB_REDIS_WAIT_REPLICAS=1. Ports: 7301-7316 for
// the clusters, 7321-7335 for the sentinel groups.
const (
	failoverRate   = 150.0 // submissions per second, alternating between the nodes
	failoverBefore = 3 * time.Second
	// failoverAfter is the load kept on after the promotion.
	failoverAfter = 5 * time.Second
	// failoverSettle is how long after the promotion the nodes may take
	// to find the new master; submissions sent later must be accepted.
	failoverSettle = 2 * time.Second
	// failoverPromotion bounds the wait for the replica's promotion.
	failoverPromotion = 20 * time.Second
	// failoverDrain bounds the wait for the webhooks after the load:
	// beyond the task lease (2 s) and the delivery lease (2 × 2 s + 5 s)
	// the nodes run with, so work that waits for a lease is not counted
	// as lost.
	failoverDrain = 25 * time.Second
)

// failoverTarget is a Redis deployment whose master can be crashed.
type failoverTarget struct {
	kind     string // cluster or sentinel
	url      string
	crash    func()        // kills the master of the task queue
	promoted func() bool   // its replica is master now and answers
	state    func() string // what the servers say, for a failure
}

func TestFailoverCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster of six processes, twice")
	}
	bin := buildBinary(t)
	for _, v := range []struct {
		wait string
		base int
	}{{"0", 7301}, {"1", 7311}} {
		t.Run("wait="+v.wait, func(t *testing.T) {
			cl := rdbtest.NewCluster(t, v.base)
			cc := cl.Client()
			// Every key of the task queue has the {tasks} tag, whatever the
			// prefix: its master holds the queue, the ring and the leases.
			m, err := cc.MasterForKey(context.Background(), "riverhub:{tasks}:rr")
			if err != nil {
				t.Fatal(err)
			}
			victim := m.Options().Addr
			replica := rdbtest.ReplicaOf(t, victim)
			replicaSynced(t, replica)
			runFailover(t, bin, v.wait, failoverTarget{
				kind:     "cluster",
				url:      cl.URL,
				crash:    func() { rdbtest.Crash(t, victim) },
				promoted: func() bool { return rdbtest.IsMaster(replica) && clusterOK(replica) },
				state: func() string {
					c := redis.NewClient(&redis.Options{Addr: replica, MaxRetries: -1})
					defer c.Close()
					ctx := context.Background()
					return fmt.Sprintf("\nreplica %s of %s:\n%s\n%s\n%s", replica, victim, c.ClusterNodes(ctx).Val(),
						c.ClusterInfo(ctx).Val(), c.Info(ctx, "replication").Val())
				},
			})
		})
	}
}

func TestFailoverSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("a Sentinel group of five processes, twice")
	}
	bin := buildBinary(t)
	for _, v := range []struct {
		wait string
		base int
	}{{"0", 7321}, {"1", 7331}} {
		t.Run("wait="+v.wait, func(t *testing.T) {
			master := rdbtest.NewServerAt(t, v.base)
			replica := rdbtest.NewServerAt(t, v.base+1, "--replicaof", "127.0.0.1", strconv.Itoa(v.base))
			url := "redis-sentinel://"
			for i := range 3 {
				port := v.base + 2 + i
				rdbtest.NewSentinel(t, port, "m", v.base)
				if i > 0 {
					url += ","
				}
				url += "127.0.0.1:" + strconv.Itoa(port)
			}
			url += "/0?master=m"
			replicaSynced(t, replica.Addr)
			runFailover(t, bin, v.wait, failoverTarget{
				kind:     "sentinel",
				url:      url,
				crash:    master.Kill,
				promoted: func() bool { return rdbtest.IsMaster(replica.Addr) },
				state: func() string {
					c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(v.base+2), MaxRetries: -1})
					defer c.Close()
					return fmt.Sprintf("\nsentinel: %v", c.Do(context.Background(), "SENTINEL", "MASTER", "m").Val())
				},
			})
		})
	}
}

// clusterOK reports whether the cluster node at addr says the cluster
// serves every slot.
func clusterOK(addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	return err == nil && strings.Contains(info, "cluster_state:ok")
}

// replicaSynced waits until the replica at addr has its master's data
// (its link up: the first sync takes a few seconds, as a master waits
// for more replicas before it sends a diskless one).
func replicaSynced(t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(c.Info(context.Background(), "replication").Val(), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s did not sync within 20s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// failoverReport is what became of the accepted submissions.
type failoverReport struct {
	delivered     int // final, with its webhook
	undelivered   int // final, no webhook
	pending       int // its record exists, not final
	missing       int // no record: the channel is not found
	duplicated    int
	unknown       int // webhooks of channels no answer named
	atRisk        int // accepted from 1 s before the crash until failoverSettle after the promotion
	lostAtRisk    int
	lostBefore    int // lost, accepted earlier than that
	lostAfter     int // lost, accepted later
	after         int // submitted after the window
	acceptedAfter int // of those, accepted
}

func (r failoverReport) lost() int { return r.undelivered + r.pending + r.missing }

func runFailover(t *testing.T, bin, wait string, target failoverTarget) {
	rx := newArrivals(t)
	client := oasClient(t, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 15 * time.Second})
	t.Cleanup(client.CloseIdleConnections)
	env := testEnv(t, target.url, rdbtest.Prefix(), "RIVERHUB_LOG_LEVEL", "error",
		"RIVERHUB_TASK_LEASE", "2s", "RIVERHUB_WEBHOOK_TIMEOUT", "2s", "RIVERHUB_PROJECT_RATE", "0",
		"RIVERHUB_REDIS_WAIT_REPLICAS", wait)
	a, b := startProcess(t, bin, maps.Clone(env)), startProcess(t, bin, maps.Clone(env))
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"ok": true}, "delay_ms": 30}})
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "slow", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"ok": true}, "delay_ms": 3000}})
	wh := a.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": rx.srv.URL + "/hook"})
	rx.setSecret(wh["secret"].(string))

	// A socket on node B joined to a channel that completes after the
	// crash: the room must still reach it.
	slow := a.submit(t, "slow", nil)
	_, before := joinRoom(t, b.node, slow)

	f := &faultTally{refused: map[int]int{}, failed: map[string]int{}}
	var sentMu sync.Mutex
	var sent []time.Time // when each submission was sent, accepted or not
	body := []byte(`{"workflow":"w","messages":[{"role":"user","content":"hello"}]}`)
	nodes := []*process{a, b}
	ctx, stop := context.WithCancel(context.Background())
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		openLoop(ctx, failoverRate, 0, func(i int) {
			n := nodes[i%2]
			at := time.Now()
			cid, err := submitAsync(client, n.base, n.key, body)
			f.record(at, cid, err)
			sentMu.Lock()
			sent = append(sent, at)
			sentMu.Unlock()
		})
	}()
	t.Cleanup(func() { stop(); <-loaded })
	time.Sleep(failoverBefore)
	crashed := time.Now()
	target.crash()
	for !target.promoted() {
		if time.Since(crashed) > failoverPromotion {
			t.Fatalf("the replica was not promoted within %v%s", failoverPromotion, target.state())
		}
		time.Sleep(50 * time.Millisecond)
	}
	promoted := time.Now()
	time.Sleep(failoverSettle)
	// After the promotion: a socket on node A joined to a channel
	// submitted on node B.
	// A client retries a 503 as it says (Retry-After): the open loop
	// above measures how many are refused; this one must get through.
	var slow2 map[string]any
	for end := time.Now().Add(failoverSettle); ; time.Sleep(200 * time.Millisecond) {
		r := b.do(t, "POST", "/v1/ai/async", b.key, map[string]any{"workflow": "slow", "messages": userMessages("hello")})
		if r.status == http.StatusOK {
			slow2 = r.json(t)
			break
		}
		if r.status != http.StatusServiceUnavailable || time.Now().After(end) {
			t.Fatalf("POST /v1/ai/async after the promotion: status %d: %s", r.status, r.body)
		}
	}
	_, after := joinRoom(t, a.node, slow2)
	time.Sleep(failoverAfter - failoverSettle)
	stop()
	<-loaded

	for name, next := range map[string]func(time.Duration) (map[string]any, error){"joined before the crash": before, "joined after the promotion": after} {
		p, err := next(20 * time.Second)
		if err != nil || p["status"] != "success" {
			t.Errorf("socket %s: %v, %v; want the final message", name, p, err)
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	rx.wait(f.accepted, time.Now().Add(failoverDrain))
	time.Sleep(500 * time.Millisecond) // duplicates still on their way
	rep := failoverCount(t, client, b, rx, f, crashed.Add(-time.Second), promoted.Add(failoverSettle),
		slow["channel_id"].(string), slow2["channel_id"].(string))
	for _, at := range sent {
		if !at.Before(promoted.Add(failoverSettle)) {
			rep.after++
		}
	}
	shortfalls := 0.0
	for _, n := range nodes {
		shortfalls += nodeMetric(t, n.node, `riverhub_redis_wait_shortfalls_total{op="submit"}`)
	}
	refused := f.refused[503] + f.refused[429] + f.refused[0]
	failed := 0
	for _, n := range f.failed {
		failed += n
	}
	line := fmt.Sprintf("failover backend=%s wait_replicas=%s rate=%.0f submitted=%d accepted=%d refused=%d failed=%d "+
		"promotion_ms=%d at_risk=%d lost=%d lost_at_risk=%d lost_missing=%d lost_pending=%d lost_undelivered=%d "+
		"delivered=%d duplicated=%d unknown=%d after=%d accepted_after=%d wait_shortfalls=%.0f",
		target.kind, wait, failoverRate, f.submitted, len(f.accepted), refused, failed,
		promoted.Sub(crashed).Milliseconds(), rep.atRisk, rep.lost(), rep.lostAtRisk, rep.missing, rep.pending, rep.undelivered,
		rep.delivered, rep.duplicated, rep.unknown, rep.after, rep.acceptedAfter, shortfalls)
	t.Log(line)
	fmt.Println(line)

	// The survivors behave: what was accepted well before the crash, and
	// everything accepted once the nodes had found the new master, ends
	// with its webhook; the loss is bounded by what was accepted around
	// the crash.
	if rep.lostBefore > 0 {
		t.Errorf("%d tasks accepted more than 1s before the crash were lost", rep.lostBefore)
	}
	if rep.lostAfter > 0 {
		t.Errorf("%d tasks accepted %v after the promotion or later were lost", rep.lostAfter, failoverSettle)
	}
	if rep.after == 0 || rep.acceptedAfter < rep.after*95/100 {
		t.Errorf("after the promotion, %d of %d submissions were accepted; want at least 95%%", rep.acceptedAfter, rep.after)
	}
	if failed > 0 {
		t.Errorf("submissions neither accepted nor refused with 503, 429 or at the connection: %v; first: %s", f.failed, f.firstFail)
	}
	if f.bad503 > 0 {
		t.Errorf("%d answers 503 without the unavailable envelope and a Retry-After; first: %s", f.bad503, f.first503)
	}
	if n := rx.bad.Load(); n > 0 {
		t.Errorf("%d deliveries did not verify", n)
	}
	if n := rx.otherID.Load(); n > 0 {
		t.Errorf("%d deliveries repeated a channel's webhook under another webhook-id", n)
	}
}

// failoverCount sorts the accepted submissions by what became of them,
// and by when they were sent: before from, in [from, to) (at risk), or
// later.
// The channels of the sockets (known) are not counted as unknown.
func failoverCount(t *testing.T, client *http.Client, n *process, rx *arrivals, f *faultTally, from, to time.Time, known ...string) failoverReport {
	t.Helper()
	first, count := rx.seen()
	var rep failoverReport
	accepted := make(map[string]bool, len(f.accepted))
	for _, cid := range known {
		accepted[cid] = true
	}
	for _, s := range f.accepted {
		accepted[s.cid] = true
		_, delivered := first[s.cid]
		if count[s.cid] > 1 {
			rep.duplicated++
		}
		lost := false
		if !delivered {
			st, err := channelStatus(client, n.base, n.key, s.cid)
			if err != nil {
				t.Errorf("status of %s: %v", s.cid, err)
			}
			switch st {
			case "":
				rep.missing++
			case "success", "completed", "error":
				rep.undelivered++
			default:
				rep.pending++
			}
			lost = true
		} else {
			rep.delivered++
		}
		switch {
		case s.at.Before(from):
			if lost {
				rep.lostBefore++
			}
		case s.at.Before(to):
			rep.atRisk++
			if lost {
				rep.lostAtRisk++
			}
		default:
			if lost {
				rep.lostAfter++
			}
		}
	}
	for cid := range first {
		if !accepted[cid] {
			rep.unknown++
		}
	}
	for _, s := range f.accepted {
		if !s.at.Before(to) {
			rep.acceptedAfter++
		}
	}
	return rep
}
