package project

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/netguard"
)

// Store reads and writes console objects.
type Store struct {
	rdb        redis.UniversalClient
	prefix     string
	production bool
	guard      *netguard.Guard
	now        func() time.Time

	principals *ttlCache[Principal]        // by key hash
	workflows  *ttlCache[Workflow]         // by project + name
	outputs    *ttlCache[StructuredOutput] // by project + id
	hooks      *ttlCache[[]Webhook]        // a project's endpoints, by project
}

// Options configures a Store.
type Options struct {
	Prefix     string // Redis key prefix
	Production bool   // https-only, public-address-only webhook URLs
	Guard      *netguard.Guard
	// Now stamps created_at and a rotated secret's expiry (which every
	// node's deliveries compare); default time.Now. The server passes the
	// Redis clock (rdb.Clock).
	Now func() time.Time
	// CacheTTL bounds how stale this node's view of keys, workflows and
	// structured outputs may be; 0 means the default CacheTTL, negative
	// disables caching.
	CacheTTL time.Duration
}

// New returns a Store over rdb.
func New(rdb redis.UniversalClient, o Options) *Store {
	if o.Guard == nil {
		o.Guard = &netguard.Guard{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = CacheTTL
	}
	return &Store{rdb: rdb, prefix: o.Prefix, production: o.Production, guard: o.Guard, now: o.Now,
		principals: newTTLCache[Principal](o.CacheTTL, o.Now),
		workflows:  newTTLCache[Workflow](o.CacheTTL, o.Now),
		outputs:    newTTLCache[StructuredOutput](o.CacheTTL, o.Now),
		hooks:      newTTLCache[[]Webhook](o.CacheTTL, o.Now),
	}
}

func (s *Store) projKey(pid, coll string) string {
	return s.prefix + ":proj:{" + pid + "}:" + coll
}

// Page is one page of a list.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// ListParams selects a page.
type ListParams struct {
	Limit  int    // default 50, max 500
	Cursor string // opaque; empty = first page
}

// Normalize applies the limit defaults and bounds.
func (p ListParams) Normalize() (ListParams, error) {
	switch {
	case p.Limit == 0:
		p.Limit = 50
	case p.Limit < 0:
		return p, apperr.Invalidf("limit must be between 1 and 500")
	case p.Limit > 500:
		p.Limit = 500
	}
	return p, nil
}

// EncodeCursor and DecodeCursor keep cursors opaque to clients.
func EncodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func DecodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", apperr.Invalidf("cursor is malformed")
	}
	return string(b), nil
}

// listHash loads every JSON value of a hash, orders them by sortKey and
// returns one page.
func listHash[T any](ctx context.Context, s *Store, key string, p ListParams, sortKey func(*T) string) (Page[T], error) {
	p, err := p.Normalize()
	if err != nil {
		return Page[T]{}, err
	}
	after := ""
	if p.Cursor != "" {
		if after, err = DecodeCursor(p.Cursor); err != nil {
			return Page[T]{}, err
		}
	}
	vals, err := s.rdb.HVals(ctx, key).Result()
	if err != nil {
		return Page[T]{}, fmt.Errorf("list %s: %w", key, err)
	}
	items := make([]T, 0, len(vals))
	for _, v := range vals {
		var it T
		if err := json.Unmarshal([]byte(v), &it); err != nil {
			return Page[T]{}, fmt.Errorf("decode %s: %w", key, err)
		}
		items = append(items, it)
	}
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(sortKey(&a), sortKey(&b)) })
	start := 0
	if after != "" {
		start, _ = slices.BinarySearchFunc(items, after, func(it T, k string) int {
			c := strings.Compare(sortKey(&it), k)
			if c == 0 {
				return -1 // position after the cursor's own item
			}
			return c
		})
	}
	page := Page[T]{Items: items[start:]}
	if len(page.Items) > p.Limit {
		page.Items = page.Items[:p.Limit]
		c := EncodeCursor(sortKey(&page.Items[p.Limit-1]))
		page.NextCursor = &c
	}
	return page, nil
}

// getJSON reads one JSON value of a hash into v; a missing field is
// apperr not_found with the given noun.
func (s *Store) getJSON(ctx context.Context, key, field, noun string, v any) error {
	raw, err := s.rdb.HGet(ctx, key, field).Bytes()
	if errors.Is(err, redis.Nil) {
		return apperr.NotFoundf("%s %q not found", noun, field)
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", noun, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s: %w", noun, err)
	}
	return nil
}

// fieldKey is the cache key of a project's hash field (a workflow by name,
// a structured output by id).
func fieldKey(pid, field string) string { return pid + "\x00" + field }

// cachedJSON is getJSON through c: what this node read of the field within
// the cache's TTL, else Redis's.
func cachedJSON[V any](ctx context.Context, s *Store, c *ttlCache[V], pid, key, field, noun string) (V, error) {
	ck := fieldKey(pid, field)
	if v, ok := c.get(ck); ok {
		return v, nil
	}
	var v V
	if err := s.getJSON(ctx, key, field, noun, &v); err != nil {
		var zero V
		return zero, err
	}
	c.put(ck, v)
	return v, nil
}

// randomID returns prefix + 20 hex characters.
func randomID(prefix string) string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// createdKey sorts by creation time, then id.
func createdKey(t time.Time, id string) string {
	return fmt.Sprintf("%020d:%s", t.UnixNano(), id)
}
