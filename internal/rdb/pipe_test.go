package rdb

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
)

// Scripts in a pipeline go by hash; one Redis does not know (first use,
// or after its script cache was emptied) is sent again by source, and
// every command of the pipeline ends with its own result.
func TestPipelinedSendsScriptsByHash(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t)
	c := srv.Client()
	ctx := context.Background()
	incr := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	calls := func(cmd string) int {
		t.Helper()
		info := c.Info(ctx, "commandstats").Val()
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
				n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				return n
			}
		}
		return 0
	}
	run := func(want int64) {
		t.Helper()
		var a, b *redis.Cmd
		var set *redis.StatusCmd
		err := Pipelined(ctx, c, func(p redis.Pipeliner) {
			a = incr.Eval(ctx, p, []string{"n"}, 1)
			set = p.Set(ctx, "plain", "v", 0)
			b = incr.Eval(ctx, p, []string{"n"}, 1)
		})
		if err != nil {
			t.Fatalf("Pipelined: %v", err)
		}
		if set.Err() != nil {
			t.Errorf("SET in the pipeline: %v", set.Err())
		}
		if got, _ := a.Int64(); got != want-1 {
			t.Errorf("first script = %d (%v), want %d", got, a.Err(), want-1)
		}
		if got, _ := b.Int64(); got != want {
			t.Errorf("second script = %d (%v), want %d", got, b.Err(), want)
		}
	}

	run(2) // unknown to Redis: NOSCRIPT, then by source
	evals := calls("eval")
	if evals != 2 {
		t.Errorf("EVAL calls = %d after the first pipeline, want 2 (the two resent)", evals)
	}
	run(4) // known now: by hash only
	if calls("eval") != evals {
		t.Errorf("EVAL calls = %d after a pipeline of known scripts, want still %d", calls("eval"), evals)
	}
	if n := calls("evalsha"); n != 4 {
		t.Errorf("EVALSHA calls = %d, want 4", n)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	run(6) // the cache was emptied (as by a restart): by source again
	if got := calls("eval"); got != evals+2 {
		t.Errorf("EVAL calls = %d after SCRIPT FLUSH, want %d", got, evals+2)
	}
}

// InOrder runs a step's commands, its merged writes included, after the
// step before it; on a Cluster it stops at the first step that fails.
func TestInOrder(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	k := prefix + ":{inorder}:set"
	var card *redis.IntCmd
	err := InOrder(ctx, c, func(_ redis.Pipeliner, m *Merge) {
		m.ZAdd(k, redis.Z{Score: 1, Member: "a"})
	}, func(p redis.Pipeliner, _ *Merge) {
		card = p.ZCard(ctx, k)
	})
	if err != nil || card.Val() != 1 {
		t.Fatalf("the second step saw %d members (%v), want the first step's merged write", card.Val(), err)
	}

	other := prefix + ":{inorder-other}:n"
	err = InOrder(ctx, c, func(p redis.Pipeliner, _ *Merge) {
		p.Eval(ctx, `return redis.error_reply('ERR refused')`, []string{k})
	}, func(p redis.Pipeliner, _ *Merge) {
		p.Incr(ctx, other)
	})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("InOrder = %v, want the first step's error", err)
	}
	ran := c.Exists(ctx, other).Val() == 1
	if IsCluster(c) && ran {
		t.Error("on a Cluster the step after a failed one ran")
	}
	if !IsCluster(c) && !ran {
		t.Error("on one Redis the steps are one transaction, whose scripts fail alone: the second step did not run")
	}
}

func TestInOrderEach(t *testing.T) {
	t.Parallel()
	c, prefix := rdbtest.New(t)
	ctx := context.Background()
	a, b := prefix+":{each-a}:n", prefix+":{each-b}:n"
	var incr *redis.IntCmd
	errs := InOrderEach(ctx, c, func(p redis.Pipeliner, m *Merge) {
		m.ZAdd(a+":z", redis.Z{Score: 1, Member: "x"})
		p.Incr(ctx, a)
	}, func(p redis.Pipeliner, _ *Merge) {
		p.Eval(ctx, `return redis.error_reply('ERR refused')`, []string{b})
	}, func(p redis.Pipeliner, _ *Merge) {
		incr = p.Incr(ctx, b)
	})
	if errs[0] != nil {
		t.Errorf("the first step reported %v: it ran", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "refused") {
		t.Errorf("the failed step reported %v, want its own error", errs[1])
	}
	if IsCluster(c) {
		if !errors.Is(errs[2], ErrNotRun) || c.Exists(ctx, b).Val() != 0 {
			t.Errorf("on a Cluster the step after a failed one: %v, want ErrNotRun and nothing written", errs[2])
		}
	} else if errs[2] != nil || incr.Val() != 1 {
		t.Errorf("on one Redis the step after a failed script ran in the same transaction: %v, %d", errs[2], incr.Val())
	}
	if n := c.ZCard(ctx, a+":z").Val(); n != 1 {
		t.Errorf("the first step's merged write: %d members", n)
	}

	// A refused connection fails every step.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	for i, err := range InOrderEach(ctx, dead, func(p redis.Pipeliner, _ *Merge) { p.Incr(ctx, a) },
		func(p redis.Pipeliner, _ *Merge) { p.Incr(ctx, b) }) {
		if err == nil {
			t.Errorf("step %d on a refused connection reported no error", i)
		}
	}
}

// On one Redis out of memory (maxmemory, noeviction), InOrder's steps run
// together or not at all: a step's deletions never run when an earlier
// step's writes were refused, so a queue entry never goes without the
// writes that stand for it.
func TestInOrderOutOfMemory(t *testing.T) {
	t.Parallel()
	srv := rdbtest.NewServer(t, "--maxmemory-policy", "noeviction")
	c := srv.Client()
	ctx := context.Background()
	if err := c.ZAdd(ctx, "{a}:lease", redis.Z{Score: 1, Member: "task"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, "{b}:record", "live", "x").Err(); err != nil {
		t.Fatal(err)
	}
	steps := []func(redis.Pipeliner, *Merge){func(_ redis.Pipeliner, m *Merge) {
		m.ZAdd("{c}:queue", redis.Z{Score: 1, Member: "task"})
	}, func(p redis.Pipeliner, _ *Merge) {
		p.HDel(ctx, "{b}:record", "live")
		p.ZRem(ctx, "{a}:lease", "task")
	}}
	setMax := func(v string) {
		t.Helper()
		if err := c.ConfigSet(ctx, "maxmemory", v).Err(); err != nil {
			t.Fatal(err)
		}
	}
	setMax("1") // every write is over the limit from here on

	errs := InOrderEach(ctx, c, steps...)
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "OOM") {
		t.Errorf("the refused step reported %v, want Redis's OOM error", errs[0])
	}
	if errs[1] == nil { // refused too: Redis queues nothing while out of memory
		t.Error("the step after the refused one reported no error")
	}
	if err := InOrder(ctx, c, steps...); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Errorf("InOrder = %v, want the OOM error", err)
	}
	setMax("0")
	if n := c.ZCard(ctx, "{a}:lease").Val(); n != 1 {
		t.Error("the lease entry was removed although the queueing before it was refused")
	}
	if c.HExists(ctx, "{b}:record", "live").Val() != true {
		t.Error("the record's field was deleted although the queueing before it was refused")
	}

	// A transaction refused for one command alone (here ZREM, the second
	// of its step, denied to the user): the others did not run either, and
	// say so; the step with the refused command reports its refusal.
	acl := func(rule string) {
		t.Helper()
		if err := c.Do(ctx, "ACL", "SETUSER", "default", rule).Err(); err != nil {
			t.Fatal(err)
		}
	}
	acl("-zrem")
	errs = InOrderEach(ctx, c, steps...)
	if !errors.Is(errs[0], ErrNotRun) {
		t.Errorf("the step before the denied one reported %v, want ErrNotRun", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "NOPERM") {
		t.Errorf("the denied step reported %v, want Redis's NOPERM error", errs[1])
	}
	if err := InOrder(ctx, c, steps...); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("InOrder = %v, want the refusal, not the first step's ErrNotRun", err)
	}
	if c.ZCard(ctx, "{c}:queue").Val() != 0 || !c.HExists(ctx, "{b}:record", "live").Val() {
		t.Error("a transaction with a denied command ran some of its steps")
	}
	acl("+zrem")

	if err := InOrder(ctx, c, steps...); err != nil {
		t.Fatalf("InOrder with memory again: %v", err)
	}
	if c.ZCard(ctx, "{c}:queue").Val() != 1 || c.ZCard(ctx, "{a}:lease").Val() != 0 || c.HExists(ctx, "{b}:record", "live").Val() {
		t.Error("with memory again the steps did not all run")
	}
}

// fakeRedisErr is an error as Redis answers it.
type fakeRedisErr string

func (e fakeRedisErr) Error() string { return string(e) }
func (fakeRedisErr) RedisError()     {}

// A new connection fails after its script loads only when Redis could not
// take them now or the connection may be out of step; a refusal of the
// command itself (a Sentinel, a user denied it, a bad script) leaves
// NOSCRIPT to Pipelined.
func TestScriptsLoadedFailsOnlyAConnectionToRetry(t *testing.T) {
	for _, tt := range []struct {
		err  error
		fail bool
	}{
		{nil, false},
		{fakeRedisErr("ERR unknown command 'SCRIPT', with args beginning with: 'LOAD'"), false},
		{fakeRedisErr("NOPERM User u has no permissions to run the 'script|load' command"), false},
		{fakeRedisErr("ERR Error compiling script (new function): user_script:1: syntax error"), false},
		{fakeRedisErr("LOADING Redis is loading the dataset in memory"), true},
		{fakeRedisErr("BUSY Redis is busy running a script."), true},
		{io.EOF, true},
		{context.DeadlineExceeded, true},
	} {
		ok := redis.NewStringCmd(context.Background(), "script", "load", "return 1")
		cmd := redis.NewStringCmd(context.Background(), "script", "load", "return 2")
		if tt.err != nil {
			cmd.SetErr(tt.err)
		}
		if err := scriptsLoaded([]redis.Cmder{ok, cmd}); (err != nil) != tt.fail {
			t.Errorf("scriptsLoaded after %v = %v, want failing %v", tt.err, err, tt.fail)
		}
	}
}
