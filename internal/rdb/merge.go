package rdb

import (
	"context"
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

// Len is how many commands Flush sends.
func (m *Merge) Len() int { return len(m.order) }

// Flush queues the merged commands on p and empties m.
func (m *Merge) Flush(ctx context.Context, p redis.Pipeliner) {
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
