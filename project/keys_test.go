package project_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/project"
)

// wantUnauthorized fails unless key no longer authenticates.
func wantUnauthorized(tb testing.TB, s *project.Store, key string) {
	tb.Helper()
	p, err := s.Authenticate(context.Background(), key)
	if err == nil {
		tb.Fatalf("key %q still authenticates as %+v", key, p)
	}
	wantAppErr(tb, err, apperr.Unauthorized, "unauthorized")
}

// redisDump returns every key name and value under the test's prefix as
// text, so a test can assert that a secret appears nowhere.
func (e *env) redisDump(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	var b strings.Builder
	iter := e.rdb.Scan(ctx, 0, e.prefix+":*", 1000).Iterator()
	n := 0
	for iter.Next(ctx) {
		k := iter.Val()
		n++
		b.WriteString(k + "\n")
		typ, err := e.rdb.Type(ctx, k).Result()
		mustOK(tb, err, "TYPE "+k)
		switch typ {
		case "string":
			v, err := e.rdb.Get(ctx, k).Result()
			mustOK(tb, err, "GET "+k)
			b.WriteString(v + "\n")
		case "hash":
			m, err := e.rdb.HGetAll(ctx, k).Result()
			mustOK(tb, err, "HGETALL "+k)
			for f, v := range m {
				b.WriteString(f + "=" + v + "\n")
			}
		case "set":
			m, err := e.rdb.SMembers(ctx, k).Result()
			mustOK(tb, err, "SMEMBERS "+k)
			b.WriteString(strings.Join(m, "\n") + "\n")
		case "zset":
			m, err := e.rdb.ZRange(ctx, k, 0, -1).Result()
			mustOK(tb, err, "ZRANGE "+k)
			b.WriteString(strings.Join(m, "\n") + "\n")
		case "list":
			m, err := e.rdb.LRange(ctx, k, 0, -1).Result()
			mustOK(tb, err, "LRANGE "+k)
			b.WriteString(strings.Join(m, "\n") + "\n")
		default:
			tb.Fatalf("key %s has type %s, which this dump cannot read", k, typ)
		}
	}
	mustOK(tb, iter.Err(), "SCAN")
	if n == 0 {
		tb.Fatal("nothing stored under the test prefix: the dump would prove nothing")
	}
	return b.String()
}

func TestKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	p, first, err := e.store.CreateProject(ctx, "acme")
	mustOK(t, err, "CreateProject")

	k, key, err := e.store.CreateKey(ctx, p.ID, "ci")
	mustOK(t, err, "CreateKey")
	if !strings.HasPrefix(key, project.KeyPrefix) || len(key) < len(project.KeyPrefix)+32 {
		t.Fatalf("key = %q, want mr_live_ and at least 32 random characters", key)
	}
	if k.ProjectID != p.ID || k.Name != "ci" || k.Admin {
		t.Errorf("CreateKey record = %+v", k)
	}
	if !strings.HasPrefix(key, k.Prefix) || len(k.Prefix) >= len(key)/2 {
		t.Errorf("listed prefix %q should identify the key without revealing it", k.Prefix)
	}

	pr, err := e.store.Authenticate(ctx, key)
	mustOK(t, err, "Authenticate")
	if pr.ProjectID != p.ID || pr.KeyID != k.ID || pr.Admin {
		t.Errorf("Authenticate = %+v, want project %s key %s, not admin", pr, p.ID, k.ID)
	}

	dump := e.redisDump(t)
	for _, secret := range []string{key, first, strings.TrimPrefix(key, project.KeyPrefix)} {
		if strings.Contains(dump, secret) {
			t.Errorf("the raw key %q is stored in Redis", secret)
		}
	}

	page, err := e.store.ListKeys(ctx, p.ID, project.ListParams{})
	mustOK(t, err, "ListKeys")
	if len(page.Items) != 2 || page.Items[0].Name != "first key" || page.Items[1].ID != k.ID {
		t.Errorf("ListKeys = %+v, want the first key, then %s", page.Items, k.ID)
	}

	mustOK(t, e.store.DeleteKey(ctx, p.ID, k.ID), "DeleteKey")
	wantUnauthorized(t, e.store, key)
	if _, err := e.store.Authenticate(ctx, first); err != nil {
		t.Errorf("deleting one key revoked another: %v", err)
	}
	wantAppErr(t, e.store.DeleteKey(ctx, p.ID, k.ID), apperr.NotFound, "not_found")
	page, err = e.store.ListKeys(ctx, p.ID, project.ListParams{})
	mustOK(t, err, "ListKeys")
	if len(page.Items) != 1 {
		t.Errorf("ListKeys after delete = %+v", page.Items)
	}

	_, _, err = e.store.CreateKey(ctx, p.ID, "")
	wantAppErr(t, err, apperr.Invalid, "invalid_request", "name")
}

func TestAuthenticateRejects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	_, key, err := e.store.CreateProject(context.Background(), "acme")
	mustOK(t, err, "CreateProject")
	tests := []struct {
		name string
		key  string
	}{
		{"empty", ""},
		{"unknown", "mr_live_" + strings.Repeat("0", 64)},
		{"truncated", key[:len(key)-1]},
		{"with a trailing space", key + " "},
		{"upper-cased", strings.ToUpper(key)},
		{"huge", key + strings.Repeat("x", 300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantUnauthorized(t, e.store, tt.key) })
	}
}

func TestBootstrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("admin key", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, project.Options{})
		const admin1, admin2 = "first-admin-key-0123456789", "mr_live_second-admin-key-0123456789"
		p, gen, err := e.store.Bootstrap(ctx, admin1, true)
		mustOK(t, err, "Bootstrap")
		if gen != "" || p.Name != project.DefaultProject || p.ID == "" {
			t.Fatalf("Bootstrap = %+v, %q", p, gen)
		}
		pr, err := e.store.Authenticate(ctx, admin1)
		mustOK(t, err, "Authenticate admin")
		if !pr.Admin || pr.ProjectID != p.ID {
			t.Errorf("admin key authenticates as %+v, want admin of %s", pr, p.ID)
		}

		// Same key again (a restart): nothing changes.
		p2, gen, err := e.store.Bootstrap(ctx, admin1, true)
		mustOK(t, err, "Bootstrap again")
		if p2.ID != p.ID || gen != "" {
			t.Errorf("restart Bootstrap = %+v %q, want project %s", p2, gen, p.ID)
		}
		if _, err := e.store.Authenticate(ctx, admin1); err != nil {
			t.Errorf("restart revoked the admin key: %v", err)
		}

		// The operator changes RIVERHUB_ADMIN_KEY: the old one stops working.
		p3, _, err := e.store.Bootstrap(ctx, admin2, true)
		mustOK(t, err, "Bootstrap new key")
		if p3.ID != p.ID {
			t.Errorf("a new admin key made a new default project %s (was %s)", p3.ID, p.ID)
		}
		wantUnauthorized(t, e.store, admin1)
		pr, err = e.store.Authenticate(ctx, admin2)
		mustOK(t, err, "Authenticate new admin")
		if !pr.Admin || pr.ProjectID != p.ID {
			t.Errorf("new admin key authenticates as %+v", pr)
		}
		keys, err := e.store.ListKeys(ctx, p.ID, project.ListParams{})
		mustOK(t, err, "ListKeys")
		if len(keys.Items) != 1 || !keys.Items[0].Admin {
			t.Errorf("keys of default = %+v, want exactly one admin key", keys.Items)
		}
		wantAppErr(t, e.store.DeleteKey(ctx, p.ID, keys.Items[0].ID), apperr.Conflict, "admin_key")
		if _, err := e.store.Authenticate(ctx, admin2); err != nil {
			t.Errorf("a refused delete revoked the admin key: %v", err)
		}

		// An empty key later keeps the configured one and generates nothing.
		_, gen, err = e.store.Bootstrap(ctx, "", true)
		mustOK(t, err, "Bootstrap empty")
		if gen != "" {
			t.Errorf("Bootstrap(\"\") after a configured key generated %q", gen)
		}
		dump := e.redisDump(t)
		for _, k := range []string{admin1, admin2, "second-admin-key"} {
			if strings.Contains(dump, k) {
				t.Errorf("admin key %q is stored in Redis", k)
			}
		}
		projects, err := e.store.ListProjects(ctx, project.ListParams{})
		mustOK(t, err, "ListProjects")
		if len(projects.Items) != 1 {
			t.Errorf("projects = %+v, want only default", projects.Items)
		}
	})

	t.Run("generated key", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, project.Options{})
		p, gen, err := e.store.Bootstrap(ctx, "", true)
		mustOK(t, err, "Bootstrap")
		if !strings.HasPrefix(gen, project.KeyPrefix) {
			t.Fatalf("generated key = %q, want an mr_live_ key", gen)
		}
		pr, err := e.store.Authenticate(ctx, gen)
		mustOK(t, err, "Authenticate generated")
		if !pr.Admin || pr.ProjectID != p.ID {
			t.Errorf("generated key authenticates as %+v", pr)
		}
		p2, gen2, err := e.store.Bootstrap(ctx, "", true)
		mustOK(t, err, "Bootstrap again")
		if gen2 != "" || p2.ID != p.ID {
			t.Errorf("second Bootstrap(\"\") = %+v %q, want the same project and no key", p2, gen2)
		}
		if _, err := e.store.Authenticate(ctx, gen); err != nil {
			t.Errorf("second Bootstrap revoked the generated key: %v", err)
		}
		if strings.Contains(e.redisDump(t), gen) {
			t.Error("the generated admin key is stored in Redis")
		}
	})

	t.Run("short admin key", func(t *testing.T) {
		t.Parallel()
		// config refuses short keys, but Bootstrap must not crash or store
		// a short key in the clear in its listed prefix.
		e := newEnv(t, project.Options{})
		for _, k := range []string{"abc", "mr_live_x"} {
			_, _, err := e.store.Bootstrap(ctx, k, true)
			mustOK(t, err, "Bootstrap "+k)
			if pr, err := e.store.Authenticate(ctx, k); err != nil || !pr.Admin {
				t.Errorf("Authenticate(%q) = %+v, %v", k, pr, err)
			}
			keys, err := e.store.ListKeys(ctx, projectOf(t, e, k), project.ListParams{})
			mustOK(t, err, "ListKeys")
			for _, it := range keys.Items {
				if len(it.Prefix) > len(k)/2 && strings.HasPrefix(k, it.Prefix) {
					t.Errorf("listed prefix %q reveals most of the key %q", it.Prefix, k)
				}
			}
		}
	})
}

// projectOf returns the project id key authenticates to.
func projectOf(tb testing.TB, e *env, key string) string {
	tb.Helper()
	p, err := e.store.Authenticate(context.Background(), key)
	mustOK(tb, err, "Authenticate")
	return p.ProjectID
}

func TestProjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	a, keyA, err := e.store.CreateProject(ctx, "alpha")
	mustOK(t, err, "CreateProject alpha")
	b, keyB, err := e.store.CreateProject(ctx, "beta")
	mustOK(t, err, "CreateProject beta")
	if a.ID == b.ID || a.ID == "" {
		t.Fatalf("project ids %q and %q", a.ID, b.ID)
	}
	for key, want := range map[string]string{keyA: a.ID, keyB: b.ID} {
		p, err := e.store.Authenticate(ctx, key)
		mustOK(t, err, "Authenticate first key")
		if p.ProjectID != want || p.Admin {
			t.Errorf("first key authenticates as %+v, want non-admin of %s", p, want)
		}
	}

	_, key, err := e.store.CreateProject(ctx, "alpha")
	wantAppErr(t, err, apperr.Conflict, "project_exists", "alpha")
	if key != "" {
		t.Errorf("a refused project still handed out key %q", key)
	}
	_, _, err = e.store.CreateProject(ctx, "")
	wantAppErr(t, err, apperr.Invalid, "invalid_request", "name")

	page, err := e.store.ListProjects(ctx, project.ListParams{})
	mustOK(t, err, "ListProjects")
	if len(page.Items) != 2 || page.Items[0].ID != a.ID || page.Items[1].ID != b.ID || page.Items[0].Name != "alpha" {
		t.Errorf("ListProjects = %+v, want alpha then beta", page.Items)
	}
}

// A start that stopped half-way through an admin key change (the admin
// marker already names the new key, the key itself not stored) is
// completed by the next start: the key works.
func TestBootstrapRepairsHalfDoneChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	const key = "mr_live_half_done_admin_key_0123456789"
	sum := sha256.Sum256([]byte(key))
	if err := e.rdb.Set(ctx, e.prefix+":admin", hex.EncodeToString(sum[:]), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Bootstrap(ctx, key, false); err != nil {
		t.Fatal(err)
	}
	p, err := e.store.Authenticate(ctx, key)
	if err != nil || !p.Admin {
		t.Fatalf("admin key after repair: %+v, %v", p, err)
	}
}

// Production never generates (and so never prints) a key.
func TestBootstrapWithoutGenerate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	if _, gen, err := e.store.Bootstrap(context.Background(), "", false); err != nil || gen != "" {
		t.Fatalf("Bootstrap without generate = %q, %v", gen, err)
	}
}

// Nodes starting together on a fresh deployment all bootstrap the same
// default project, and in development exactly one prints a generated
// admin key, which works.
func TestBootstrapConcurrentStarts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for round := range 5 {
		e := newEnv(t, project.Options{})
		const nodes = 8
		var wg sync.WaitGroup
		ids := make([]string, nodes)
		gens := make([]string, nodes)
		errs := make([]error, nodes)
		for i := range nodes {
			wg.Go(func() {
				p, gen, err := e.store.Bootstrap(ctx, "", true)
				ids[i], gens[i], errs[i] = p.ID, gen, err
			})
		}
		wg.Wait()
		var printed []string
		for i := range nodes {
			if errs[i] != nil {
				t.Fatalf("round %d: node %d: %v", round, i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Fatalf("round %d: nodes bootstrapped projects %s and %s", round, ids[0], ids[i])
			}
			if gens[i] != "" {
				printed = append(printed, gens[i])
			}
		}
		if len(printed) != 1 {
			t.Fatalf("round %d: %d nodes printed an admin key, want exactly one", round, len(printed))
		}
		pr, err := e.store.Authenticate(ctx, printed[0])
		if err != nil || !pr.Admin || pr.ProjectID != ids[0] {
			t.Fatalf("round %d: the printed key authenticates as %+v, %v; want the admin of %s", round, pr, err, ids[0])
		}
		page, err := e.store.ListProjects(ctx, project.ListParams{})
		mustOK(t, err, "ListProjects")
		if len(page.Items) != 1 {
			t.Fatalf("round %d: %d projects after concurrent starts, want 1", round, len(page.Items))
		}
	}
}
