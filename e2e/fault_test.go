package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// The fault suite: two riverhub processes on a private redis-server take
// open-loop submissions while one fault is injected per scenario; every
// accepted task must end final with its webhook delivered.
const (
	faultRate = 300.0 // submissions per second, alternating between the nodes
	// faultBefore and faultAfter are the load before the fault and after
	// it ends.
	faultBefore = 3 * time.Second
	faultAfter  = 3 * time.Second
	// faultDrain is how long after the load the last webhook may arrive
	// before its task counts as lost: beyond the task lease (30 s) and
	// the delivery lease (25 s) of the defaults, so work that waits for a
	// lease shows as a long recovery, not as a loss.
	faultDrain = 45 * time.Second
	// faultRecovery bounds the recovery after a Redis fault, whose goal
	// is 5 s: loose for a noisy machine, and still caught out by work that
	// waits for a lease (30 s for tasks, 25 s for deliveries). Over it, the
	// slowest task's timeline is shown.
	faultRecovery = 15 * time.Second
)

// faultScenario is one fault and what the nodes run with.
type faultScenario struct {
	name  string
	redis []string // redis-server arguments
	env   []string // node settings, key value pairs
	// inject runs the fault once the load has run for faultBefore and
	// returns when it is over: when Redis answers again (for a node's
	// death, at once).
	inject func(t *testing.T, r *faultRig) time.Time
	// bounded says the recovery must be within faultRecovery.
	bounded bool
	// observed checks that the load met the fault.
	observed func(f *faultTally) error
}

var aof = []string{"--appendonly", "yes", "--appendfsync", "everysec"}

func faultScenarios() []faultScenario {
	refusedBy503 := func(f *faultTally) error {
		if f.refused[503] == 0 {
			return errors.New("no submission was answered 503 during the fault")
		}
		return nil
	}
	downFor := func(d time.Duration) func(*testing.T, *faultRig) time.Time {
		return func(t *testing.T, r *faultRig) time.Time {
			r.redis.Shutdown()
			time.Sleep(d)
			r.redis.Start()
			return time.Now()
		}
	}
	return []faultScenario{{
		name: "node-kill",
		// Short leases: the dead node's tasks and deliveries come back
		// after 2 s and 2 × 2 s + 5 s.
		redis: aof,
		env:   []string{"RIVERHUB_TASK_LEASE", "2s", "RIVERHUB_WEBHOOK_TIMEOUT", "2s"},
		inject: func(t *testing.T, r *faultRig) time.Time {
			r.nodes[0].kill(t)
			return time.Now()
		},
		observed: func(f *faultTally) error {
			if f.refused[0] == 0 {
				return errors.New("no submission to the killed node failed")
			}
			return nil
		},
	}, {
		name:     "redis-restart",
		redis:    aof,
		inject:   downFor(5 * time.Second),
		bounded:  true,
		observed: refusedBy503,
	}, {
		// Redis killed: with appendfsync always every write it
		// acknowledged is on disk, so nothing accepted may be lost.
		name:    "redis-crash-always",
		redis:   []string{"--appendonly", "yes", "--appendfsync", "always"},
		bounded: true,
		inject: func(t *testing.T, r *faultRig) time.Time {
			r.redis.Kill()
			time.Sleep(3 * time.Second)
			r.redis.Start()
			return time.Now()
		},
		observed: refusedBy503,
	}, {
		name:     "redis-down-10s",
		redis:    aof,
		inject:   downFor(10 * time.Second),
		bounded:  true,
		observed: refusedBy503,
	}, {
		// Redis out of memory (maxmemory with noeviction, the setting a
		// queue wants) for 3 s: every write is refused, reads still
		// answer. Submissions meet it as 503, and the work in flight
		// then (completions, acks, deliveries) is redone after it. (That
		// an ack is refused whole, its lease kept with its publish, is
		// rdb's TestInOrderOutOfMemory: what this suite counts, the final
		// status and the webhook, was written before the ack.)
		name:    "redis-oom",
		redis:   append([]string{"--maxmemory-policy", "noeviction"}, aof...),
		bounded: true,
		inject: func(t *testing.T, r *faultRig) time.Time {
			r.redis.Do("CONFIG", "SET", "maxmemory", "1")
			time.Sleep(3 * time.Second)
			r.redis.Do("CONFIG", "SET", "maxmemory", "0")
			return time.Now()
		},
		observed: refusedBy503,
	}, {
		name:    "redis-slow",
		redis:   aof,
		bounded: true,
		// A 3 s sleep is longer than RIVERHUB_REDIS_TIMEOUT (2 s):
		// submissions that meet it answer 503.
		inject: func(t *testing.T, r *faultRig) time.Time {
			c := redis.NewClient(&redis.Options{Addr: r.redis.Addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
			defer c.Close()
			if err := c.Do(context.Background(), "DEBUG", "SLEEP", 3).Err(); err != nil {
				t.Fatalf("DEBUG SLEEP: %v", err)
			}
			return time.Now()
		},
		observed: refusedBy503,
	}}
}

// TestFaults runs the fault scenarios one after another (not beside the
// package's other tests: the figures are latencies) and prints one report
// line each: submissions sent, accepted (200 with a channel), refused (503
// unavailable, 429, or no answer at the connection), failed (any other
// answer, or none within 15 s); of the accepted, completed (final status),
// delivered (webhook received), duplicated (more than one webhook), lost
// (not final, or no webhook within faultDrain); unknown (webhooks of
// channels no answer named: a refused submission that Redis ran anyway);
// and the recovery: from Redis answering again (or the node's death) until
// every task submitted before then had its webhook.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("about two minutes of load against processes and private Redis servers")
	}
	bin := buildBinary(t)
	for _, sc := range faultScenarios() {
		t.Run(sc.name, func(t *testing.T) { runFault(t, bin, sc) })
	}
}

// faultRig is two riverhub processes on a private redis-server, with a
// mock workflow "w" (30 ms) and one webhook endpoint, the receiver.
type faultRig struct {
	redis  *rdbtest.Server
	nodes  [2]*process
	rx     *arrivals
	client *http.Client
}

func newFaultRig(t *testing.T, bin string, sc faultScenario) *faultRig {
	t.Helper()
	r := &faultRig{
		redis: rdbtest.NewServer(t, sc.redis...),
		rx:    newArrivals(t),
		client: oasClient(t, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128},
			Timeout: 15 * time.Second}),
	}
	t.Cleanup(r.client.CloseIdleConnections)
	env := testEnv(t, r.redis.URL(), rdbtest.Prefix(), append([]string{"RIVERHUB_LOG_LEVEL", "error"}, sc.env...)...)
	for i := range r.nodes {
		r.nodes[i] = startProcess(t, bin, maps.Clone(env))
	}
	a := r.nodes[0]
	a.must(t, 201, "POST", "/api/console/workflow", map[string]any{"name": "w", "provider": "mock",
		"mock": map[string]any{"response": map[string]any{"ok": true}, "delay_ms": 30}})
	wh := a.must(t, 201, "POST", "/api/console/webhook", map[string]any{"url": r.rx.srv.URL + "/hook"})
	r.rx.setSecret(wh["secret"].(string))
	return r
}

// faultTally counts the submissions of a scenario by outcome.
type faultTally struct {
	mu        sync.Mutex
	submitted int
	accepted  []submission
	refused   map[int]int    // by status: 503, 429; 0: no answer (the connection failed)
	failed    map[string]int // answers that are not a refusal (e.g. "500"), and timeouts
	firstFail string
	bad503    int // 503 answers without the envelope or Retry-After
	first503  string
}

func (f *faultTally) record(at time.Time, cid string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitted++
	var ref *refusal
	var ne net.Error
	switch {
	case err == nil:
		f.accepted = append(f.accepted, submission{cid, at})
	case errors.As(err, &ref) && ref.status == 503:
		f.refused[503]++
		if why := unavailableAnswer(ref); why != "" {
			f.bad503++
			if f.first503 == "" {
				f.first503 = why
			}
		}
	case errors.As(err, &ref) && ref.status == 429:
		f.refused[429]++
	case ref != nil:
		f.fail(strconv.Itoa(ref.status), err)
	case errors.As(err, &ne) && ne.Timeout():
		f.fail("timeout", err)
	default: // refused, reset or cut at the connection
		f.refused[0]++
	}
}

func (f *faultTally) fail(kind string, err error) {
	f.failed[kind]++
	if f.firstFail == "" {
		f.firstFail = err.Error()
	}
}

// unavailableAnswer says what a 503 answer lacks, "" when it is right:
// the error envelope with code "unavailable" and a Retry-After.
func unavailableAnswer(r *refusal) string {
	var e struct{ Error, Message string }
	if json.Unmarshal(r.body, &e) != nil || e.Error != "unavailable" || e.Message == "" {
		return fmt.Sprintf("503 body %s", r.body)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		return fmt.Sprintf("503 Retry-After %q", r.header.Get("Retry-After"))
	}
	return ""
}

// faultReport is a scenario's figures.
type faultReport struct {
	completed, errored    int // accepted tasks final (errored: final with status error)
	delivered, duplicated int // accepted tasks with a webhook, with more than one
	lost                  int // accepted tasks not final, or final without a webhook
	unknown               int // webhooks of channels no submission was answered with
	recovery              time.Duration
	slowest               string // the backlog's last channel to have its webhook
	backlog               int    // tasks submitted before the fault ended
	missing               int    // of those, without a webhook
}

func runFault(t *testing.T, bin string, sc faultScenario) {
	r := newFaultRig(t, bin, sc)
	f := &faultTally{refused: map[int]int{}, failed: map[string]int{}}
	body := []byte(`{"workflow":"w","messages":[{"role":"user","content":"hello"}]}`)
	ctx, stop := context.WithCancel(context.Background())
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		openLoop(ctx, faultRate, 0, func(i int) {
			n := r.nodes[i%2]
			at := time.Now()
			cid, err := submitAsync(r.client, n.base, n.key, body)
			f.record(at, cid, err)
		})
	}()
	t.Cleanup(func() { stop(); <-loaded }) // if the fault fails the test
	time.Sleep(faultBefore)
	injected := time.Now()
	up := sc.inject(t, r)
	time.Sleep(faultAfter)
	stop()
	<-loaded

	f.mu.Lock()
	defer f.mu.Unlock()
	r.rx.wait(f.accepted, time.Now().Add(faultDrain))
	time.Sleep(time.Second) // duplicates still on their way
	rep := r.report(t, f, up)

	refused := f.refused[503] + f.refused[429] + f.refused[0]
	failed := 0
	for _, n := range f.failed {
		failed += n
	}
	recovery := rep.recovery.Round(10 * time.Millisecond).String()
	if rep.missing > 0 {
		recovery = fmt.Sprintf("none (%d of %d tasks of the backlog without a webhook)", rep.missing, rep.backlog)
	}
	t.Logf("%s: fault %v; submitted %d, accepted %d, refused %d (503 %d, 429 %d, network %d), failed %d, "+
		"completed %d, delivered %d, duplicated %d, lost %d, unknown %d; recovery %s",
		sc.name, up.Sub(injected).Round(10*time.Millisecond), f.submitted, len(f.accepted), refused,
		f.refused[503], f.refused[429], f.refused[0], failed,
		rep.completed, rep.delivered, rep.duplicated, rep.lost, rep.unknown, recovery)
	fmt.Printf("fault scenario=%s submitted=%d accepted=%d refused_503=%d refused_429=%d refused_network=%d failed=%d "+
		"completed=%d delivered=%d duplicated=%d lost=%d unknown=%d recovery_ms=%d\n",
		sc.name, f.submitted, len(f.accepted), f.refused[503], f.refused[429], f.refused[0], failed,
		rep.completed, rep.delivered, rep.duplicated, rep.lost, rep.unknown, rep.recovery.Milliseconds())

	if rep.lost > 0 {
		t.Errorf("%d accepted tasks lost: not final, or final without a webhook within %v", rep.lost, faultDrain)
	}
	if rep.errored > 0 {
		t.Errorf("%d accepted tasks ended in error (the mock workflow does not fail)", rep.errored)
	}
	if failed > 0 {
		t.Errorf("submissions neither accepted nor refused with 503, 429 or at the connection: %v; first: %s", f.failed, f.firstFail)
	}
	if f.bad503 > 0 {
		t.Errorf("%d answers 503 without the unavailable envelope and a Retry-After; first: %s", f.bad503, f.first503)
	}
	if err := sc.observed(f); err != nil {
		t.Errorf("the fault was not observed: %v", err)
	}
	if rep.missing == 0 && rep.recovery > faultRecovery {
		n := r.nodes[1]
		tl := n.do(t, "GET", "/api/console/logs/"+rep.slowest, n.key, nil)
		say := t.Logf
		if sc.bounded {
			say = t.Errorf
		}
		say("recovery took %v, over %v; Redis answered again at %s, the last webhook was channel %s's: %s",
			rep.recovery, faultRecovery, up.UTC().Format("15:04:05.000"), rep.slowest, tl.body)
	}
	if n := r.rx.bad.Load(); n > 0 {
		t.Errorf("%d deliveries did not verify", n)
	}
	if n := r.rx.otherID.Load(); n > 0 {
		t.Errorf("%d deliveries repeated a channel's webhook under another webhook-id: receivers cannot dedupe them", n)
	}
}

// report reads the receiver and every accepted channel's status. The
// recovery is the time from up until the last task submitted before up
// had its webhook.
func (r *faultRig) report(t *testing.T, f *faultTally, up time.Time) faultReport {
	t.Helper()
	first, count := r.rx.seen()
	final := r.finalStatuses(t, f.accepted)
	var rep faultReport
	accepted := make(map[string]bool, len(f.accepted))
	for _, s := range f.accepted {
		accepted[s.cid] = true
		st, done := final[s.cid]
		at, delivered := first[s.cid]
		if done {
			rep.completed++
			if st == "error" {
				rep.errored++
			}
		}
		if delivered {
			rep.delivered++
			if count[s.cid] > 1 {
				rep.duplicated++
			}
		}
		if !done || !delivered {
			rep.lost++
		}
		if s.at.Before(up) {
			rep.backlog++
			if !delivered {
				rep.missing++
			} else if d := at.Sub(up); d > rep.recovery {
				rep.recovery, rep.slowest = d, s.cid
			}
		}
	}
	for cid := range first {
		if !accepted[cid] {
			rep.unknown++
		}
	}
	return rep
}

// finalStatuses asks the surviving node for each channel's status and
// returns the final ones (success, completed, error), by channel.
func (r *faultRig) finalStatuses(t *testing.T, subs []submission) map[string]string {
	t.Helper()
	n := r.nodes[1]
	var (
		mu    sync.Mutex
		final = make(map[string]string, len(subs))
		first error
		wg    sync.WaitGroup
		next  = make(chan string)
	)
	for range 8 {
		wg.Go(func() {
			for cid := range next {
				st, err := channelStatus(r.client, n.base, n.key, cid)
				mu.Lock()
				switch {
				case err != nil && first == nil:
					first = err
				case st == "success" || st == "completed" || st == "error":
					final[cid] = st
				}
				mu.Unlock()
			}
		})
	}
	for _, s := range subs {
		next <- s.cid
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Logf("reading channel statuses: %v", first)
	}
	return final
}

// channelStatus reads a channel's status (the polling fallback); a channel
// that does not exist has status "".
func channelStatus(client *http.Client, base, key, cid string) (string, error) {
	req, _ := http.NewRequest("GET", base+"/api/v1/channels/"+cid, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode == 404 {
		return "", nil
	}
	var v struct{ Status string }
	if res.StatusCode != 200 {
		return "", fmt.Errorf("GET channel %s: %d", cid, res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		return "", fmt.Errorf("GET channel %s: %w", cid, err)
	}
	return strings.TrimSpace(v.Status), nil
}
