package rdb

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Merge gathers sorted-set writes that many callers make in one round
// trip (a batch of acks, a Shared pipeline's callers) so that the writes
// of one kind to one key go as one command: a hundred channels added to
// one index are one ZADD of a hundred members, not a hundred ZADDs, and
// their key's expiry is set once. Writes are flushed removals first, then
// additions, range trims and expiries, each in the order its key first
// appeared; so the writes merged must commute (one batch never adds and
// removes the same member of one key). The zero Merge is empty and ready.
type Merge struct {
	order  []mergeKey
	groups map[mergeKey]*mergeGroup
	writes int // writes asked for since the Merge was made

	batches []*batch // Call's, by script, in the order each first appeared
	sent    []*batch // flushed, to settle
}

// batch is the calls of one batch script in a Merge.
type batch struct {
	script *redis.Script
	keys   []string
	args   []any
	calls  []*redis.Cmd // each call's reply, set by settle
	cmd    *redis.Cmd   // the one command they went as
}

type mergeOp uint8

const (
	mergeZRem mergeOp = iota
	mergeZAdd
	mergeTrim
	mergeExpire
	mergeOps
)

type mergeKey struct {
	op  mergeOp
	key string
}

type mergeGroup struct {
	zs      []redis.Z
	members []any
	below   int64         // mergeTrim: members scored below it go
	ttl     time.Duration // mergeExpire
}

func (m *Merge) group(op mergeOp, key string) *mergeGroup {
	m.writes++
	k := mergeKey{op, key}
	g := m.groups[k]
	if g == nil {
		if m.groups == nil {
			m.groups = make(map[mergeKey]*mergeGroup)
		}
		g = &mergeGroup{}
		m.groups[k] = g
		m.order = append(m.order, k)
	}
	return g
}

// ZAdd adds members to the sorted set key.
func (m *Merge) ZAdd(key string, zs ...redis.Z) {
	g := m.group(mergeZAdd, key)
	g.zs = append(g.zs, zs...)
}

// ZRem removes members from the sorted set key.
func (m *Merge) ZRem(key string, members ...any) {
	g := m.group(mergeZRem, key)
	g.members = append(g.members, members...)
}

// TrimBelow removes the members of key scored below max (exclusive);
// merged, the highest max asked for wins.
func (m *Merge) TrimBelow(key string, max int64) {
	if g := m.group(mergeTrim, key); max > g.below {
		g.below = max
	}
}

// Expire sets key's time to live; merged, the last one asked for wins.
func (m *Merge) Expire(key string, ttl time.Duration) {
	m.group(mergeExpire, key).ttl = ttl
}

// Call adds a call of the batch script s, whose calls in one Merge go as
// one command, before the Merge's other writes: its KEYS are the calls'
// keys one after another, and its ARGV, for each call in turn, the number
// of its keys, the number of its arguments, then its arguments. The script
// answers an array with a reply per call, in order (an error reply for a
// call that failed alone). The Cmd returned holds this call's reply once
// the round trip has run: Call is for the Merges of PipelinedMerge and
// Shared, which settle it; a batch command that fails is the error of each
// of its calls. One Redis only: the calls' keys span slots.
//
// A call is not a write of the Merge's: a caller that only calls finds
// its outcome in its Cmd, and the others' merged writes do not fail it.
func (m *Merge) Call(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	var b *batch
	for _, x := range m.batches {
		if x.script == s {
			b = x
		}
	}
	if b == nil {
		b = &batch{script: s}
		m.batches = append(m.batches, b)
	}
	b.keys = append(b.keys, keys...)
	b.args = append(append(b.args, len(keys), len(args)), args...)
	cmd := redis.NewCmd(ctx)
	b.calls = append(b.calls, cmd)
	return cmd
}

// settle hands each flushed call its reply (Call); failed is the round
// trip's error, for a batch command that got no reply of its own.
func (m *Merge) settle(failed error) {
	for _, b := range m.sent {
		replies, err := b.cmd.Slice()
		switch {
		case b.cmd.Err() == nil && b.cmd.Val() == nil && failed != nil:
			err = failed
		case err == nil && len(replies) != len(b.calls):
			err = fmt.Errorf("rdb: a batch script answered %d replies to %d calls", len(replies), len(b.calls))
		}
		for i, c := range b.calls {
			if err != nil {
				c.SetErr(err)
			} else if e, ok := replies[i].(error); ok {
				c.SetErr(e)
			} else {
				c.SetVal(replies[i])
			}
		}
	}
	m.sent = nil
}

// Len is how many commands Flush sends.
func (m *Merge) Len() int { return len(m.order) + len(m.batches) }

// Flush queues the merged commands on p and empties m.
func (m *Merge) Flush(ctx context.Context, p redis.Pipeliner) {
	for _, b := range m.batches {
		b.cmd = b.script.Eval(ctx, p, b.keys, b.args...)
	}
	m.sent, m.batches = append(m.sent, m.batches...), nil
	for op := range mergeOps {
		for _, k := range m.order {
			if k.op != op {
				continue
			}
			g := m.groups[k]
			switch op {
			case mergeZRem:
				p.ZRem(ctx, k.key, g.members...)
			case mergeZAdd:
				p.ZAdd(ctx, k.key, g.zs...)
			case mergeTrim:
				p.ZRemRangeByScore(ctx, k.key, "-inf", "("+strconv.FormatInt(g.below, 10))
			case mergeExpire:
				p.Expire(ctx, k.key, g.ttl)
			}
		}
	}
	m.order, m.groups = m.order[:0], nil
}
