package rdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// Concurrent callers share round trips, each gets its own commands'
// results and errors (one caller's failing command fails nobody else), a
// script Redis does not know yet is resent by source for every caller
// (after the round trip's other commands, as with Pipelined), and after
// Close calls still work, alone.
func TestSharedPipeline(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	c := srv.Client()
	ctx := context.Background()
	incr := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	s := NewShared(c, 2)
	// Unknown scripts: each caller's is resent and runs.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n *redis.Cmd
			err := s.Pipelined(ctx, func(p redis.Pipeliner) { n = incr.Eval(ctx, p, []string{"s"}, 1) })
			if err != nil || n.Val() == nil {
				t.Errorf("unknown script, caller %d: %v, %v", i, n.Val(), err)
			}
		}()
	}
	wg.Wait()
	if got := c.Get(ctx, "s").Val(); got != "20" {
		t.Errorf("the unknown script ran to %s, want 20", got)
	}

	reads := redisStat(t, c, "total_reads_processed")

	const callers = 200
	errs := make(chan error, callers)
	// The callers start together: spawned one by one on a loaded machine,
	// each could find a sender free and go alone.
	start := make(chan struct{})
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key := fmt.Sprintf("k%d", i)
			var n *redis.Cmd
			var get *redis.StringCmd
			err := s.Pipelined(ctx, func(p redis.Pipeliner) {
				n = incr.Eval(ctx, p, []string{key}, i)
				if i%10 == 0 {
					p.HSet(ctx, key, "f", "v") // WRONGTYPE: key is a string
				}
				get = p.Get(ctx, key)
			})
			switch {
			case i%10 == 0 && (err == nil || !redis.HasErrorPrefix(err, "WRONGTYPE")):
				errs <- fmt.Errorf("caller %d: err %v, want its own WRONGTYPE", i, err)
			case i%10 != 0 && err != nil:
				errs <- fmt.Errorf("caller %d: %v", i, err)
			case n.Val() != int64(i) || get.Val() != fmt.Sprint(i):
				errs <- fmt.Errorf("caller %d: script %v (%v), GET %q", i, n.Val(), n.Err(), get.Val())
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Shared: Redis read fewer requests than there were callers (alone,
	// each caller's pipeline is at least one read).
	if got := redisStat(t, c, "total_reads_processed") - reads; got >= callers {
		t.Errorf("Redis read %d requests for %d callers: nothing was shared", got, callers)
	}

	s.Close()
	var get *redis.StringCmd
	if err := s.Pipelined(ctx, func(p redis.Pipeliner) { get = p.Get(ctx, "k7") }); err != nil || get.Val() != "7" {
		t.Errorf("after Close: GET = %q, %v", get.Val(), err)
	}
}

// Callers racing for the pipeline's turns (sending their own round trip,
// or waiting for a turn's next one) return only once their own commands
// have run.
func TestSharedCallerReturnsAfterItsCommands(t *testing.T) {
	t.Parallel()
	c := rdbtest.NewServer(t).Client()
	s := NewShared(c, 4)
	t.Cleanup(s.Close)
	ctx := context.Background()
	var wg sync.WaitGroup
	var early sync.Once
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				var ran bool
				var get *redis.StringCmd
				err := s.Pipelined(ctx, func(p redis.Pipeliner) {
					ran = true
					get = p.Get(ctx, "none")
				})
				if !ran || !errors.Is(err, redis.Nil) || get.Err() != redis.Nil {
					early.Do(func() { t.Errorf("caller %d, call %d: returned %v, its commands run: %v", g, i, err, ran) })
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A caller whose fill panics gives its turn back: the pipeline goes on.
func TestSharedPanicGivesTheTurnBack(t *testing.T) {
	t.Parallel()
	c, s := sharedOneSender(t)
	ctx := context.Background()
	func() {
		defer func() { _ = recover() }()
		_ = s.Pipelined(ctx, func(redis.Pipeliner) { panic("fill") })
	}()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Pipelined(wctx, func(p redis.Pipeliner) { p.Set(ctx, "after", "1", 0) }); err != nil {
		t.Fatalf("the call after a panic: %v", err)
	}
	if c.Get(ctx, "after").Val() != "1" {
		t.Fatal("the call after a panic did not run")
	}
}

// A caller whose context ends stops waiting; the others are not cancelled.
func TestSharedCallerGivesUp(t *testing.T) {
	t.Parallel()
	_, s := sharedOneSender(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Pipelined(ctx, func(p redis.Pipeliner) { p.Set(context.Background(), "a", "1", 0) })
	if !errors.Is(err, context.Canceled) && err != nil {
		t.Fatalf("cancelled caller: %v", err)
	}
	var get *redis.StringCmd
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := s.Pipelined(wctx, func(p redis.Pipeliner) { get = p.Get(wctx, "b") }); !errors.Is(err, redis.Nil) {
		t.Fatalf("next caller: GET b = %q, %v; want redis.Nil", get.Val(), err)
	}
}

// A call whose caller gives up while it waits behind another round trip
// is never sent: its commands do not land after the caller has answered.
func TestSharedCallerGivesUpBeforeItsRoundTrip(t *testing.T) {
	t.Parallel()
	c, s := sharedOneSender(t)
	ctx := context.Background()
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Pipelined(ctx, func(p redis.Pipeliner) {
			close(held)
			<-hold // the one sender is busy filling this round trip
			p.Set(ctx, "first", "1", 0)
		})
	}()
	<-held
	gctx, giveUp := context.WithCancel(ctx)
	late := make(chan error, 1)
	go func() { late <- s.Pipelined(gctx, func(p redis.Pipeliner) { p.Set(ctx, "late", "1", 0) }) }()
	time.Sleep(20 * time.Millisecond) // queued behind the first
	giveUp()
	if err := <-late; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up: %v", err)
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// A call after both: the sender has handled the late one by then.
	if err := s.Pipelined(ctx, func(p redis.Pipeliner) { p.Set(ctx, "after", "1", 0) }); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, "late").Val(); n != 0 {
		t.Error("the commands of a caller that gave up before its round trip ran")
	}
	if n := c.Exists(ctx, "first", "after").Val(); n != 2 {
		t.Errorf("%d of the other calls' keys written, want 2", n)
	}
}

// sharedOneSender is a Shared pipeline with one sender over a Redis of its
// own, and a client of that Redis.
func sharedOneSender(t *testing.T) (*redis.Client, *Shared) {
	c := rdbtest.NewServer(t).Client()
	s := NewShared(c, 1)
	t.Cleanup(s.Close)
	return c, s
}

func redisStat(t *testing.T, c redis.UniversalClient, field string) int64 {
	t.Helper()
	var n int64
	for _, line := range strings.Split(c.Info(context.Background(), "stats").Val(), "\n") {
		if _, err := fmt.Sscanf(line, field+":%d", &n); err == nil {
			return n
		}
	}
	t.Fatalf("INFO stats has no %s", field)
	return 0
}

// Callers' merged writes to one key go as one command; a merged command's
// error reaches the callers that wrote to the Merge and no one else.
func TestSharedMerge(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	c := srv.Client()
	ctx := context.Background()
	s := NewShared(c, 1)
	defer s.Close()
	zadds := func() int64 { return commandCalls(t, c, "zadd") }
	before := zadds()
	const callers = 300
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.PipelinedMerge(ctx, func(p redis.Pipeliner, m *Merge) {
				p.Set(ctx, fmt.Sprintf("own%d", i), i, 0)
				m.ZAdd("idx", redis.Z{Score: float64(i), Member: fmt.Sprint(i)})
				m.ZAdd("idx2", redis.Z{Score: float64(i), Member: fmt.Sprint(i)})
				m.Expire("idx", time.Hour)
			})
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if n := c.ZCard(ctx, "idx").Val(); n != callers {
		t.Errorf("idx has %d members, want %d", n, callers)
	}
	if n := c.ZCard(ctx, "idx2").Val(); n != callers {
		t.Errorf("idx2 has %d members, want %d", n, callers)
	}
	if ttl := c.TTL(ctx, "idx").Val(); ttl <= 0 {
		t.Errorf("idx TTL %v, want its expiry", ttl)
	}
	if got := zadds() - before; got >= 2*callers {
		t.Errorf("%d ZADDs for %d callers' %d writes: nothing was merged", got, callers, 2*callers)
	}

	// A failing merged command (WRONGTYPE) fails its writers only.
	c.Set(ctx, "str", "x", 0)
	errs := make([]error, 40)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.PipelinedMerge(ctx, func(p redis.Pipeliner, m *Merge) {
				p.Set(ctx, fmt.Sprintf("own%d", i), i, 0)
				if i%2 == 0 {
					m.ZAdd("str", redis.Z{Score: 1, Member: "a"})
				}
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && (err == nil || !redis.HasErrorPrefix(err, "WRONGTYPE")) {
			t.Errorf("writer %d: %v, want WRONGTYPE", i, err)
		}
		if i%2 == 1 && err != nil {
			t.Errorf("caller %d, no merged writes: %v", i, err)
		}
	}
}

// Calls of a batch script by callers sharing a round trip go as one
// command (the first of them by source: Redis does not know the script
// yet), each caller gets its own reply, and a batch that fails is the
// error of each of its callers.
func TestSharedBatchCall(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	c := srv.Client()
	ctx := context.Background()
	add := redis.NewScript(`local out, k, a = {}, 1, 1
while a <= #ARGV do
  if ARGV[a + 2] == 'boom' then return redis.error_reply('BOOM') end
  if ARGV[a + 2] == 'bad' then
    out[#out + 1] = redis.error_reply('NOPE')
  else
    out[#out + 1] = redis.call('INCRBY', KEYS[k], ARGV[a + 2])
  end
  k, a = k + tonumber(ARGV[a]), a + 2 + tonumber(ARGV[a + 1])
end
return out`)
	s := NewShared(c, 1)
	defer s.Close()
	run := func(callers int, arg func(i int) any) []error {
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var n *redis.Cmd
				errs[i] = s.PipelinedMerge(ctx, func(p redis.Pipeliner, m *Merge) {
					n = m.Call(ctx, add, []string{fmt.Sprintf("b%d", i)}, arg(i))
				})
				if errs[i] == nil && (n.Err() != nil || fmt.Sprint(n.Val()) != fmt.Sprint(i+1)) {
					t.Errorf("caller %d: reply %v (%v), want %d", i, n.Val(), n.Err(), i+1)
				}
				if errs[i] != nil && !errors.Is(n.Err(), errs[i]) && n.Err().Error() != errs[i].Error() {
					t.Errorf("caller %d: call error %v, round trip's %v", i, n.Err(), errs[i])
				}
			}()
		}
		wg.Wait()
		return errs
	}
	before := commandCalls(t, c, "evalsha") + commandCalls(t, c, "eval")
	const callers = 300
	for i, err := range run(callers, func(i int) any { return i + 1 }) {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if got := commandCalls(t, c, "evalsha") + commandCalls(t, c, "eval") - before; got >= callers {
		t.Errorf("%d script commands for %d callers: the calls were not batched", got, callers)
	}

	for i := range callers {
		c.Del(ctx, fmt.Sprintf("b%d", i))
	}

	// A call answered with an error fails alone.
	var m Merge
	good := m.Call(ctx, add, []string{"g"}, 1)
	bad := m.Call(ctx, add, []string{"h"}, "bad")
	err := PipelinedMerge(ctx, c, func(p redis.Pipeliner, mm *Merge) { *mm = m })
	if err != nil || good.Err() != nil || fmt.Sprint(good.Val()) != "1" || bad.Err() == nil || !strings.Contains(bad.Err().Error(), "NOPE") {
		t.Errorf("one call failing: round trip %v, calls %v (%v) and %v; want 1 and NOPE", err, good.Val(), good.Err(), bad.Err())
	}

	// A batch that fails fails every call.
	m = Merge{}
	good = m.Call(ctx, add, []string{"g"}, 1)
	bad = m.Call(ctx, add, []string{"h"}, "boom")
	err = PipelinedMerge(ctx, c, func(p redis.Pipeliner, mm *Merge) { *mm = m })
	if err == nil || good.Err() == nil || bad.Err() == nil || !strings.Contains(good.Err().Error(), "BOOM") {
		t.Errorf("a failing batch: round trip %v, calls %v and %v; want BOOM for each", err, good.Err(), bad.Err())
	}
}

// Flush sends removals before additions, and the highest trim bound.
func TestMergeFlush(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	c := srv.Client()
	ctx := context.Background()
	c.ZAdd(ctx, "z", redis.Z{Score: 1, Member: "old"}, redis.Z{Score: 5, Member: "mid"}, redis.Z{Score: 9, Member: "gone"})
	var m Merge
	m.ZAdd("z", redis.Z{Score: 10, Member: "new"})
	m.ZRem("z", "gone")
	m.TrimBelow("z", 2)
	m.TrimBelow("z", 6)
	m.TrimBelow("z", 3)
	if err := PipelinedMerge(ctx, c, func(p redis.Pipeliner, mm *Merge) { *mm = m }); err != nil {
		t.Fatal(err)
	}
	if got := c.ZRange(ctx, "z", 0, -1).Val(); fmt.Sprint(got) != "[new]" {
		t.Errorf("z = %v, want [new]", got)
	}
}

func commandCalls(t *testing.T, c redis.UniversalClient, cmd string) int64 {
	t.Helper()
	var n int64
	for _, line := range strings.Split(c.Info(context.Background(), "commandstats").Val(), "\n") {
		if _, err := fmt.Sscanf(line, "cmdstat_"+cmd+":calls=%d", &n); err == nil {
			return n
		}
	}
	return 0
}
