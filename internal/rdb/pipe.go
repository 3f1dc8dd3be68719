package rdb

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Pipelined runs fill's commands in one round trip and sends the Lua
// scripts among them by hash: a script queued with (*redis.Script).Eval
// goes as EVALSHA, a few dozen bytes instead of its whole source. A script
// Redis does not know yet (its first use, or a cache emptied by SCRIPT
// FLUSH; after a restart or a failover Open's clients load the known
// scripts on their new connections first, see loadScripts) answers
// NOSCRIPT and did not run; those go
// again with their source in a second round trip, and their results land
// in the commands fill was given, so callers see one outcome per command.
// (The other commands of the pipeline ran in the first round trip, so a
// script sent again runs after them. On one Redis a restart empties the
// cache, so a pipeline's scripts mostly go NOSCRIPT together and keep
// their order; but one that another caller has loaded again since runs in
// the first round trip, before those sent again: a caller whose script
// must run after another one's guards it, as Enqueueing.In's guard does
// in the dispatch package. On a Cluster each node has its own cache, and a pipeline's parts
// for different nodes run side by side anyway: callers whose commands must
// run in order across hash tags send them in separate round trips there,
// see IsCluster.)
//
// The error is the first of the commands', as go-redis reports it.
func Pipelined(ctx context.Context, c redis.UniversalClient, fill func(redis.Pipeliner)) error {
	_, err := pipelined(ctx, c, false, fill)
	return err
}

// PipelinedMerge is Pipelined with a Merge whose commands go after fill's.
func PipelinedMerge(ctx context.Context, c redis.UniversalClient, fill func(redis.Pipeliner, *Merge)) error {
	var m Merge
	err := Pipelined(ctx, c, func(p redis.Pipeliner) {
		fill(p, &m)
		m.Flush(ctx, p)
	})
	m.settle(err)
	return err
}

// InOrder runs steps so that each step's commands (its merged writes
// included) run after the step before it has run: on one Redis as one
// transaction (MULTI/EXEC), the Merge flushed after each step; on a
// Cluster, where the parts of one pipeline bound for different nodes run
// side by side, as a round trip per step, stopping at the first step that
// fails. For commands that must land in order across hash tags, so that a
// node that dies between them leaves its work for another node to redo: a
// queue entry removed only after the writes that make its redo
// unnecessary.
//
// The transaction is for a Redis out of memory (maxmemory with
// noeviction): a plain pipeline would run a step's deletions although an
// earlier step's writes were refused, and the queue entry would go
// without the writes that stand for it. Redis refuses every command queued
// in a transaction while it is out of memory, and an EXEC holding a write
// it would refuse, so the steps run together or not at all. Not so for a
// script's error at EXEC time, which is its own: the other commands run,
// as in a pipeline. A NOSCRIPT among them sends that script again by
// source after the transaction, so it runs after the later steps (see
// Pipelined). After a restart or a failover emptied the script cache that
// is rare with the clients Open makes for a real Redis, whose new
// connections load the known scripts first (loadScripts): it takes a cache
// emptied under a live connection (SCRIPT FLUSH), loads Redis refused (a
// user denied SCRIPT), or a script made with redis.NewScript that this
// process has not sent yet.
//
// The error is the first step's that failed, one whose commands Redis
// refused before one it did not run (ErrNotRun).
func InOrder(ctx context.Context, c redis.UniversalClient, steps ...func(redis.Pipeliner, *Merge)) error {
	var first error
	for _, err := range InOrderEach(ctx, c, steps...) {
		switch {
		case err == nil:
		case !errors.Is(err, ErrNotRun):
			return err
		case first == nil:
			first = err
		}
	}
	return first
}

// ErrNotRun is the error of a step InOrderEach did not run because another
// one failed: on a Cluster, one after a step that failed; on one Redis,
// every step of a transaction Redis discarded (EXECABORT), but the steps
// with a command it refused, which carry that command's error. (An EXEC
// Redis refused outright, out of memory, gives every step its error.)
var ErrNotRun = errors.New("not run: another step failed")

// InOrderEach is InOrder reporting each step's own outcome, for a caller
// that can go on when some steps fail: on one Redis, the first error among
// the commands that step queued (its merged writes included), and
// ErrNotRun for the others when Redis refused the transaction; on a
// Cluster, that step's round trip's error, and ErrNotRun for the steps
// after one that failed.
func InOrderEach(ctx context.Context, c redis.UniversalClient, steps ...func(redis.Pipeliner, *Merge)) []error {
	errs := make([]error, len(steps))
	if IsCluster(c) {
		for i, step := range steps {
			if errs[i] = PipelinedMerge(ctx, c, step); errs[i] != nil {
				for j := i + 1; j < len(steps); j++ {
					errs[j] = ErrNotRun
				}
				break
			}
		}
		return errs
	}
	var m Merge
	ends := make([]int, len(steps)) // where each step's commands end
	cmds, err := pipelined(ctx, c, true, func(p redis.Pipeliner) {
		for i, step := range steps {
			step(p, &m)
			m.Flush(ctx, p)
			ends[i] = p.Len()
		}
	})
	m.settle(err)
	if err == nil {
		return errs
	}
	found := false
	start := 0
	for i, end := range ends {
		for _, cmd := range cmds[min(start, len(cmds)):min(end, len(cmds))] {
			e := cmd.Err()
			if e == nil {
				continue
			}
			found = true
			if !redis.HasErrorPrefix(e, "EXECABORT") {
				errs[i] = e
				break
			}
			if errs[i] == nil { // queued, then discarded with the rest; a refused one of the step's wins
				errs[i] = fmt.Errorf("%w (%w)", ErrNotRun, e)
			}
		}
		start = end
	}
	if !found { // an error no command carries (go-redis marks them all on a failed connection): every step's
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

// pipelined is Pipelined, and returns the commands it ran, in fill's
// order; tx sends them as a transaction (MULTI/EXEC; one Redis only). The
// scripts sent again after a NOSCRIPT go in a plain pipeline.
func pipelined(ctx context.Context, c redis.UniversalClient, tx bool, fill func(redis.Pipeliner)) ([]redis.Cmder, error) {
	var calls []evalCall
	send := c.Pipelined
	if tx {
		send = func(ctx context.Context, fill func(redis.Pipeliner) error) ([]redis.Cmder, error) {
			return txPipelined(ctx, c, fill)
		}
	}
	cmds, err := send(ctx, func(p redis.Pipeliner) error {
		fill(&shaPipe{Pipeliner: p, calls: &calls})
		return nil
	})
	if err == nil || redis.HasErrorPrefix(err, "EXECABORT") {
		return cmds, err
	}
	var again []evalCall
	for _, call := range calls {
		if e := call.cmd.Err(); e != nil && redis.HasErrorPrefix(e, "NOSCRIPT") {
			again = append(again, call)
		}
	}
	if len(again) == 0 {
		return cmds, err
	}
	redo := make([]*redis.Cmd, len(again))
	// Its error is the first of redo's, each copied below.
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, call := range again {
			redo[i] = p.Eval(ctx, call.src, call.keys, call.args...)
		}
		return nil
	})
	for i, call := range again {
		call.cmd.SetVal(redo[i].Val())
		call.cmd.SetErr(redo[i].Err())
	}
	for _, cmd := range cmds {
		if e := cmd.Err(); e != nil {
			return cmds, e
		}
	}
	return cmds, nil
}

// txPipelined sends fill's commands as a transaction (MULTI/EXEC) on one
// Redis. With a context marked by WaitReplicas it goes on a connection
// taken for it, followed there by its WAIT: the hook that adds WAITs
// cannot follow a transaction (go-redis reads its replies up to EXEC).
func txPipelined(ctx context.Context, c redis.UniversalClient, fill func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	r := replicationOf(ctx)
	if conn, ok := c.(*Conn); ok {
		c = conn.UniversalClient
	}
	client, ok := c.(*redis.Client)
	if r == nil || !ok {
		return c.TxPipelined(ctx, fill)
	}
	conn := client.Conn()
	defer conn.Close()
	bare := context.WithValue(ctx, waitKey{}, (*Replication)(nil)) // the hook's WAIT: none
	cmds, err := conn.TxPipelined(bare, fill)
	wait := r.waitCmd(bare)
	_ = conn.Process(bare, wait)
	r.note(wait)
	return cmds, err
}

// loadScripts loads into a new connection's Redis every script made with
// NewScript (Script included) or sent by hash since that it lacks (SCRIPT
// EXISTS, then SCRIPT LOAD of those missing): Open sets it as the clients'
// OnConnect. After a restart or a failover emptied the script
// cache, the connections are new, so the scripts are back before a
// pipeline sends them, and one in a transaction of InOrder's runs in its
// place rather than after the later steps.
//
// A connection whose loads Redis could not take now fails (scriptsLoaded):
// a later one loads them. Other refusals leave NOSCRIPT to Pipelined, as
// before: a Sentinel, which has no SCRIPT command (its connections get
// this OnConnect too), a user denied it, a script that does not compile.
func loadScripts(ctx context.Context, cn *redis.Conn) error {
	var srcs, hashes []string
	shas.Range(func(src, sha any) bool {
		srcs, hashes = append(srcs, src.(string)), append(hashes, sha.(string))
		return true
	})
	if len(srcs) == 0 {
		return nil
	}
	ctx = context.WithValue(ctx, waitKey{}, (*Replication)(nil)) // no WAIT: nothing to replicate
	// Which Redis lacks first: a new connection to a Redis that has them
	// all (the usual case) costs a SCRIPT EXISTS, not every source.
	var exists *redis.BoolSliceCmd
	cmds, _ := cn.Pipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.ScriptExists(ctx, hashes...)
		return nil
	})
	if err := scriptsLoaded(cmds); err != nil || exists.Err() != nil {
		return err
	}
	var missing []string
	for i, ok := range exists.Val() {
		if !ok && i < len(srcs) {
			missing = append(missing, srcs[i])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	cmds, _ = cn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, src := range missing {
			p.ScriptLoad(ctx, src)
		}
		return nil
	})
	return scriptsLoaded(cmds)
}

// scriptsLoaded is the error that fails a connection after its SCRIPT
// LOADs: one that is not Redis's answer (a timeout or a broken connection,
// which may leave replies unread, so the connection is out of step), or
// an answer that the loads could not run now (LOADING: a restarted Redis
// reading its data; BUSY: a script running too long). Nil otherwise.
func scriptsLoaded(cmds []redis.Cmder) error {
	for _, cmd := range cmds {
		err := cmd.Err()
		switch {
		case err == nil:
		case !errors.As(err, new(redis.Error)):
			return fmt.Errorf("load scripts: %w", err)
		case redis.HasErrorPrefix(err, "LOADING"), redis.HasErrorPrefix(err, "BUSY"):
			return fmt.Errorf("load scripts: %w", err)
		}
	}
	return nil
}

// shaPipe is a pipeline whose Eval sends EVALSHA and remembers the call,
// so that Pipelined can send it again by source after a NOSCRIPT.
type shaPipe struct {
	redis.Pipeliner
	calls *[]evalCall
}

type evalCall struct {
	src  string
	keys []string
	args []any
	cmd  *redis.Cmd
}

func (p *shaPipe) Eval(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	cmd := p.Pipeliner.EvalSha(ctx, shaOf(src), keys, args...)
	*p.calls = append(*p.calls, evalCall{src: src, keys: keys, args: args, cmd: cmd})
	return cmd
}

// shas caches the hash of each script source: there are a few dozen
// scripts, each hashed once. It is also the list loadScripts loads.
var shas sync.Map // source → hex SHA-1

func shaOf(src string) string {
	if v, ok := shas.Load(src); ok {
		return v.(string)
	}
	sum := sha1.Sum([]byte(src))
	h := hex.EncodeToString(sum[:])
	shas.Store(src, h)
	return h
}
