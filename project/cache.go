package project

import (
	"sync"
	"time"
)

// CacheTTL is how long a node trusts what it read of keys, workflows and
// structured outputs. Every request needs its key and workflow; reading
// them from Redis each time doubles the round trips of a submission. The
// price: a key revoked or a workflow edited on another node takes up to
// CacheTTL to be seen here (on this node, at once).
const CacheTTL = time.Second

// ttlCache is a small map with per-entry expiry. Expired entries are
// dropped by a sweep when the map grows, so it stays bounded by what is
// used within a TTL.
type ttlCache[V any] struct {
	mu    sync.Mutex
	items map[string]cached[V]
	ttl   time.Duration
	now   func() time.Time
}

type cached[V any] struct {
	v   V
	exp time.Time
}

const cacheSweepAt = 10000

func newTTLCache[V any](ttl time.Duration, now func() time.Time) *ttlCache[V] {
	return &ttlCache[V]{items: make(map[string]cached[V]), ttl: ttl, now: now}
}

func (c *ttlCache[V]) get(k string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok || c.now().After(e.exp) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(k string, v V) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.items) >= cacheSweepAt {
		for k, e := range c.items {
			if now.After(e.exp) {
				delete(c.items, k)
			}
		}
		if len(c.items) >= cacheSweepAt {
			clear(c.items)
		}
	}
	c.items[k] = cached[V]{v: v, exp: now.Add(c.ttl)}
}

func (c *ttlCache[V]) drop(k string) {
	c.mu.Lock()
	delete(c.items, k)
	c.mu.Unlock()
}
