package project_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb/rdbtest"
	"github.com/riverhub/riverhub/project"
)

// env is one test's store over its own key prefix.
type env struct {
	store  *project.Store
	rdb    redis.UniversalClient
	prefix string
	clock  *clock
}

// newEnv returns a store on a fresh prefix. o.Prefix and o.Now are filled
// in; the clock starts at a fixed instant and moves only when told to,
// except that every reading advances it by a microsecond so creation order
// is the order of the calls.
func newEnv(tb testing.TB, o project.Options) *env {
	tb.Helper()
	c, prefix := rdbtest.New(tb)
	clk := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	o.Prefix = prefix
	o.Now = clk.Now
	return &env{store: project.New(c, o), rdb: c, prefix: prefix, clock: clk}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// project creates a project and returns its id.
func (e *env) project(tb testing.TB, name string) string {
	tb.Helper()
	p, _, err := e.store.CreateProject(context.Background(), name)
	if err != nil {
		tb.Fatalf("CreateProject(%q): %v", name, err)
	}
	return p.ID
}

// wantAppErr fails unless err is an *apperr.Error of kind with code (code
// "" = any) whose message mentions every string of mention.
func wantAppErr(tb testing.TB, err error, kind apperr.Kind, code string, mention ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("err = nil, want kind %d code %q", kind, code)
	}
	e := apperr.As(err)
	if e == nil {
		tb.Fatalf("err = %v (%T), want an *apperr.Error", err, err)
	}
	if e.Kind != kind {
		tb.Errorf("kind = %d, want %d (err %v)", e.Kind, kind, err)
	}
	if code != "" && e.Code != code {
		tb.Errorf("code = %q, want %q (err %v)", e.Code, code, err)
	}
	for _, m := range mention {
		if !strings.Contains(e.Message, m) {
			tb.Errorf("message %q does not mention %q", e.Message, m)
		}
	}
}

// mustOK fails the test on err.
func mustOK(tb testing.TB, err error, what string) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// fakeResolver answers lookups from a map; unknown names fail.
type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}
