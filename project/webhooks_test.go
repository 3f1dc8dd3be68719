package project_test

import (
	"context"
	"encoding/base64"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/netguard"
	"github.com/riverhub/riverhub/project"
)

// wantSecret fails unless s is "whsec_" + standard base64 of at least 24 bytes.
func wantSecret(tb testing.TB, s string) {
	tb.Helper()
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		tb.Fatalf("secret %q does not start with whsec_", s)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		tb.Fatalf("secret %q: not standard base64 after whsec_: %v", s, err)
	}
	if len(raw) < 24 {
		tb.Fatalf("secret %q holds %d bytes, want >= 24", s, len(raw))
	}
}

func TestCreateWebhook(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")

	tests := []struct {
		name       string
		in         project.WebhookInput
		wantEvents []string // nil = rejected
		mention    string
	}{
		{"events default to all", project.WebhookInput{URL: "https://example.com/hook"},
			[]string{project.EventTaskCompleted, project.EventTaskAIGenerated}, ""},
		{"empty events list means all", project.WebhookInput{URL: "https://example.com/hook", Events: []string{}},
			[]string{project.EventTaskCompleted, project.EventTaskAIGenerated}, ""},
		{"one event", project.WebhookInput{URL: "http://localhost:9000/hook", Events: []string{"task.ai_generated"}},
			[]string{"task.ai_generated"}, ""},
		{"duplicate events collapse", project.WebhookInput{URL: "https://example.com/h", Events: []string{"task.completed", "task.completed"}},
			[]string{"task.completed"}, ""},
		{"unknown event", project.WebhookInput{URL: "https://example.com/hook", Events: []string{"task.completed", "task.started"}},
			nil, "task.started"},
		{"relative url", project.WebhookInput{URL: "/hook"}, nil, "absolute"},
		{"ftp url", project.WebhookInput{URL: "ftp://example.com/hook"}, nil, "scheme"},
		{"no host", project.WebhookInput{URL: "https:///hook"}, nil, "absolute"},
		{"empty url", project.WebhookInput{}, nil, "url"},
		{"credentials in url", project.WebhookInput{URL: "https://user:pw@example.com/hook"}, nil, "credentials"},
		{"url too long", project.WebhookInput{URL: "https://example.com/" + strings.Repeat("a", 2048)}, nil, "2048"},
		{"description too long", project.WebhookInput{URL: "https://example.com/", Description: strings.Repeat("d", 1025)}, nil, "description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := e.store.CreateWebhook(ctx, pid, tt.in)
			if tt.wantEvents == nil {
				wantAppErr(t, err, apperr.Invalid, "", tt.mention)
				return
			}
			mustOK(t, err, "CreateWebhook")
			wantSecret(t, w.Secret)
			if !strings.HasPrefix(w.ID, "wh_") || w.URL != tt.in.URL || !w.Enabled || w.CreatedAt.IsZero() {
				t.Errorf("CreateWebhook = %+v", w)
			}
			got, err := e.store.GetWebhook(ctx, pid, w.ID)
			mustOK(t, err, "GetWebhook")
			if !slices.Equal(got.Events, tt.wantEvents) {
				t.Errorf("events = %q, want %q", got.Events, tt.wantEvents)
			}
			if got.Secret != w.Secret {
				t.Errorf("stored secret %q differs from the one returned %q", got.Secret, w.Secret)
			}
			for _, ev := range tt.wantEvents {
				if !got.Subscribes(ev) {
					t.Errorf("webhook does not subscribe to %s", ev)
				}
			}
		})
	}
}

func TestWebhookSecretsAreUnique(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	pid := e.project(t, "acme")
	seen := map[string]bool{}
	for range 5 {
		w, err := e.store.CreateWebhook(context.Background(), pid, project.WebhookInput{URL: "https://example.com/"})
		mustOK(t, err, "CreateWebhook")
		if seen[w.Secret] {
			t.Fatalf("secret %q issued twice", w.Secret)
		}
		seen[w.Secret] = true
	}
}

func TestUpdateWebhook(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	ptr := func(s string) *string { return &s }
	f := false

	tests := []struct {
		name    string
		patch   project.WebhookPatch
		check   func(project.Webhook) bool
		wantErr string // "" = accepted; otherwise a word the message must contain
	}{
		{"url", project.WebhookPatch{URL: ptr("https://new.example.com/h")},
			func(w project.Webhook) bool { return w.URL == "https://new.example.com/h" }, ""},
		{"description", project.WebhookPatch{Description: ptr("orders")},
			func(w project.Webhook) bool { return w.Description == "orders" }, ""},
		{"events", project.WebhookPatch{Events: &[]string{"task.completed"}},
			func(w project.Webhook) bool { return slices.Equal(w.Events, []string{"task.completed"}) }, ""},
		{"enabled false", project.WebhookPatch{Enabled: &f},
			func(w project.Webhook) bool { return !w.Enabled && !w.Subscribes("task.completed") }, ""},
		{"empty patch changes nothing", project.WebhookPatch{},
			func(w project.Webhook) bool { return w.URL == "https://example.com/hook" && w.Enabled }, ""},
		{"bad url", project.WebhookPatch{URL: ptr("ftp://example.com")}, nil, "scheme"},
		{"unknown event", project.WebhookPatch{Events: &[]string{"task.deleted"}}, nil, "task.deleted"},
		{"description too long", project.WebhookPatch{Description: ptr(strings.Repeat("d", 1025))}, nil, "description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, err := e.store.CreateWebhook(ctx, pid, project.WebhookInput{URL: "https://example.com/hook", Description: "first"})
			mustOK(t, err, "CreateWebhook")
			upd, err := e.store.UpdateWebhook(ctx, pid, orig.ID, tt.patch)
			got, gerr := e.store.GetWebhook(ctx, pid, orig.ID)
			mustOK(t, gerr, "GetWebhook")
			if tt.wantErr != "" {
				wantAppErr(t, err, apperr.Invalid, "", tt.wantErr)
				if got.URL != orig.URL || got.Description != orig.Description || !slices.Equal(got.Events, orig.Events) || !got.UpdatedAt.Equal(orig.UpdatedAt) {
					t.Errorf("a rejected patch changed the webhook: %+v → %+v", orig, got)
				}
				return
			}
			mustOK(t, err, "UpdateWebhook")
			if !tt.check(got) {
				t.Errorf("stored webhook after patch = %+v", got)
			}
			if got.Secret != orig.Secret || got.ID != orig.ID || !got.CreatedAt.Equal(orig.CreatedAt) {
				t.Errorf("patch changed secret, id or created_at: %+v → %+v", orig, got)
			}
			if upd.URL != got.URL || upd.Description != got.Description || upd.Enabled != got.Enabled {
				t.Errorf("UpdateWebhook returned %+v, stored %+v", upd, got)
			}
			// Fields the patch did not name stay as they were.
			if tt.patch.Description == nil && got.Description != "first" {
				t.Errorf("description changed to %q without being patched", got.Description)
			}
		})
	}

	_, err := e.store.UpdateWebhook(ctx, pid, "wh_missing", project.WebhookPatch{Description: ptr("x")})
	wantAppErr(t, err, apperr.NotFound, "not_found")
}

func TestRotateSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	w, err := e.store.CreateWebhook(ctx, pid, project.WebhookInput{URL: "https://example.com/hook"})
	mustOK(t, err, "CreateWebhook")
	old := w.Secret

	rotated, err := e.store.RotateSecret(ctx, pid, w.ID)
	mustOK(t, err, "RotateSecret")
	rotatedAt := e.clock.Now()
	wantSecret(t, rotated.Secret)
	if rotated.Secret == old {
		t.Fatal("rotation kept the same secret")
	}
	got, err := e.store.GetWebhook(ctx, pid, w.ID)
	mustOK(t, err, "GetWebhook")
	if got.Secret != rotated.Secret || got.PreviousSecret != old {
		t.Fatalf("stored secrets = %q / previous %q, want %q / %q", got.Secret, got.PreviousSecret, rotated.Secret, old)
	}

	tests := []struct {
		name  string
		after time.Duration
		want  []string
	}{
		{"right after", 0, []string{rotated.Secret, old}},
		{"after 23h59m", 23*time.Hour + 59*time.Minute, []string{rotated.Secret, old}},
		{"after 24h", 24 * time.Hour, []string{rotated.Secret}},
		{"after a week", 7 * 24 * time.Hour, []string{rotated.Secret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s := got.Secrets(rotatedAt.Add(tt.after)); !slices.Equal(s, tt.want) {
				t.Errorf("Secrets = %q, want %q", s, tt.want)
			}
		})
	}

	// A second rotation retires the first secret at once: only the last
	// two ever sign.
	again, err := e.store.RotateSecret(ctx, pid, w.ID)
	mustOK(t, err, "RotateSecret again")
	if s := again.Secrets(e.clock.Now()); !slices.Equal(s, []string{again.Secret, rotated.Secret}) {
		t.Errorf("after two rotations Secrets = %q, want [new, previous]", s)
	}

	_, err = e.store.RotateSecret(ctx, pid, "wh_missing")
	wantAppErr(t, err, apperr.NotFound, "not_found")
}

func TestDeleteWebhook(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	w, err := e.store.CreateWebhook(ctx, pid, project.WebhookInput{URL: "https://example.com/hook"})
	mustOK(t, err, "CreateWebhook")
	mustOK(t, e.store.DeleteWebhook(ctx, pid, w.ID), "DeleteWebhook")
	_, err = e.store.GetWebhook(ctx, pid, w.ID)
	wantAppErr(t, err, apperr.NotFound, "not_found")
	wantAppErr(t, e.store.DeleteWebhook(ctx, pid, w.ID), apperr.NotFound, "not_found")
	// A patch must not resurrect a deleted endpoint.
	_, err = e.store.RotateSecret(ctx, pid, w.ID)
	wantAppErr(t, err, apperr.NotFound, "not_found")
	all, err := e.store.AllWebhooks(ctx, pid)
	mustOK(t, err, "AllWebhooks")
	if len(all) != 0 {
		t.Errorf("AllWebhooks after delete = %+v", all)
	}
}

func TestWebhookURLProduction(t *testing.T) {
	t.Parallel()
	res := fakeResolver{
		"hooks.example.com":    addrs("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
		"internal.example.com": addrs("10.0.0.7"),
		"mixed.example.com":    addrs("93.184.215.14", "192.168.1.1"),
		"meta.example.com":     addrs("169.254.169.254"),
		"v6local.example.com":  addrs("fd00::1"),
		"localhost":            addrs("127.0.0.1", "::1"),
	}
	tests := []struct {
		name  string
		allow []string
		url   string
		ok    bool
	}{
		{"public https name", nil, "https://hooks.example.com/riverhub", true},
		{"public https literal", nil, "https://8.8.8.8/hook", true},
		{"public https ipv6 literal", nil, "https://[2606:4700::1111]:8443/hook", true},
		{"http refused", nil, "http://hooks.example.com/riverhub", false},
		{"loopback literal", nil, "https://127.0.0.1/hook", false},
		{"loopback with port", nil, "https://127.0.0.1:8443/hook", false},
		{"private 10/8", nil, "https://10.1.2.3/hook", false},
		{"private 192.168", nil, "https://192.168.0.10/hook", false},
		{"private 172.16", nil, "https://172.20.0.1/hook", false},
		{"ipv6 loopback", nil, "https://[::1]/hook", false},
		{"ipv4-mapped ipv6 loopback", nil, "https://[::ffff:127.0.0.1]/hook", false},
		{"cloud metadata", nil, "https://169.254.169.254/latest/meta-data", false},
		{"cgnat", nil, "https://100.64.0.1/hook", false},
		{"unspecified", nil, "https://0.0.0.0/hook", false},
		{"name resolving to private", nil, "https://internal.example.com/hook", false},
		{"name resolving to metadata", nil, "https://meta.example.com/hook", false},
		{"name resolving to ULA", nil, "https://v6local.example.com/hook", false},
		{"name with one private address", nil, "https://mixed.example.com/hook", false},
		{"localhost", nil, "https://localhost/hook", false},
		{"unresolvable name", nil, "https://nowhere.example.com/hook", false},
		{"allowed cidr lets private through", []string{"10.1.0.0/16"}, "https://10.1.2.3/hook", true},
		{"allowed cidr covers resolved name", []string{"10.0.0.0/24"}, "https://internal.example.com/hook", true},
		{"allowed cidr is not wider than given", []string{"10.1.0.0/16"}, "https://10.2.0.1/hook", false},
		{"allowed cidr does not allow http", []string{"10.1.0.0/16"}, "http://10.1.2.3/hook", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := &netguard.Guard{Resolver: res}
			for _, a := range tt.allow {
				g.Allow = append(g.Allow, netip.MustParsePrefix(a))
			}
			e := newEnv(t, project.Options{Production: true, Guard: g})
			ctx := context.Background()
			pid := e.project(t, "acme")
			w, err := e.store.CreateWebhook(ctx, pid, project.WebhookInput{URL: tt.url})
			if !tt.ok {
				wantAppErr(t, err, apperr.Invalid, "invalid_url")
				if all, _ := e.store.AllWebhooks(ctx, pid); len(all) != 0 {
					t.Errorf("a refused webhook was stored: %+v", all)
				}
				// PATCH checks the URL the same way.
				ok, err := e.store.CreateWebhook(ctx, pid, project.WebhookInput{URL: "https://hooks.example.com/ok"})
				mustOK(t, err, "CreateWebhook public")
				_, err = e.store.UpdateWebhook(ctx, pid, ok.ID, project.WebhookPatch{URL: &tt.url})
				wantAppErr(t, err, apperr.Invalid, "invalid_url")
				if got, _ := e.store.GetWebhook(ctx, pid, ok.ID); got.URL != "https://hooks.example.com/ok" {
					t.Errorf("a refused PATCH changed the url to %q", got.URL)
				}
				return
			}
			mustOK(t, err, "CreateWebhook")
			if w.URL != tt.url {
				t.Errorf("url = %q, want %q", w.URL, tt.url)
			}
		})
	}
}

func TestWebhookURLDevelopment(t *testing.T) {
	t.Parallel()
	// Development accepts local receivers: that is how people test.
	e := newEnv(t, project.Options{})
	pid := e.project(t, "acme")
	for _, u := range []string{"http://localhost:3000/hook", "http://127.0.0.1:9/x", "https://10.1.2.3/hook", "http://[::1]:8080/"} {
		if _, err := e.store.CreateWebhook(context.Background(), pid, project.WebhookInput{URL: u}); err != nil {
			t.Errorf("development refused %s: %v", u, err)
		}
	}
}

// EndpointURLKey: which spellings of a URL name the same endpoint.
func TestEndpointURLKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"identical", "https://api.example.com/webhooks/ai", "https://api.example.com/webhooks/ai", true},
		{"scheme case", "HTTPS://api.example.com/h", "https://api.example.com/h", true},
		{"host case", "https://API.Example.COM/h", "https://api.example.com/h", true},
		{"https default port", "https://api.example.com:443/h", "https://api.example.com/h", true},
		{"http default port", "http://api.example.com:80/h", "http://api.example.com/h", true},
		{"empty port", "https://api.example.com:/h", "https://api.example.com/h", true},
		{"trailing slash", "https://api.example.com/webhooks/ai/", "https://api.example.com/webhooks/ai", true},
		{"root with and without slash", "https://api.example.com/", "https://api.example.com", true},
		{"fragment dropped", "https://api.example.com/h#top", "https://api.example.com/h", true},
		{"empty query", "https://api.example.com/h?", "https://api.example.com/h", true},
		{"IPv6 host case and default port", "http://[FE80::1]:80/h", "http://[fe80::1]/h", true},
		{"path case", "https://api.example.com/Hook", "https://api.example.com/hook", false},
		{"other scheme", "http://api.example.com/h", "https://api.example.com/h", false},
		{"other port", "https://api.example.com:8443/h", "https://api.example.com/h", false},
		{"http on 443", "http://api.example.com:443/h", "http://api.example.com/h", false},
		{"other host", "https://api2.example.com/h", "https://api.example.com/h", false},
		{"other path", "https://api.example.com/h2", "https://api.example.com/h", false},
		{"two trailing slashes", "https://api.example.com/h//", "https://api.example.com/h", false},
		{"query", "https://api.example.com/h?tenant=1", "https://api.example.com/h", false},
		{"other query", "https://api.example.com/h?tenant=1", "https://api.example.com/h?tenant=2", false},
		{"escaped path", "https://api.example.com/a%2Fb", "https://api.example.com/a/b", false},
		{"credentials", "https://u:p@api.example.com/h", "https://api.example.com/h", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, oka := project.EndpointURLKey(tt.a)
			kb, okb := project.EndpointURLKey(tt.b)
			if !oka || !okb {
				t.Fatalf("EndpointURLKey: %q ok=%v, %q ok=%v", tt.a, oka, tt.b, okb)
			}
			if (ka == kb) != tt.same {
				t.Errorf("%q → %q, %q → %q: same = %v, want %v", tt.a, ka, tt.b, kb, ka == kb, tt.same)
			}
		})
	}
	for _, bad := range []string{"", "/h", "api.example.com/h", "ftp://api.example.com/h", "https:///h", "https://:443/h",
		"mailto:a@example.com", "https://exa mple.com/", "javascript:alert(1)"} {
		if k, ok := project.EndpointURLKey(bad); ok {
			t.Errorf("EndpointURLKey(%q) = %q, ok; want refused", bad, k)
		}
	}
}

// FuzzEndpointURLKey: never panics; a key is an absolute http(s) URL whose
// own key is itself, so comparing keys is an equivalence.
func FuzzEndpointURLKey(f *testing.F) {
	for _, s := range []string{"https://api.example.com/webhooks/ai", "HTTP://[::1]:80/a/?q#f", "https://u@h:443", "http://h/%zz", "http://h:99999/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		k, ok := project.EndpointURLKey(raw)
		if !ok {
			return
		}
		if !strings.HasPrefix(k, "http://") && !strings.HasPrefix(k, "https://") {
			t.Fatalf("key %q of %q is not an http(s) URL", k, raw)
		}
		k2, ok := project.EndpointURLKey(k)
		if !ok || k2 != k {
			t.Fatalf("key of %q is %q, whose key is %q (ok %v)", raw, k, k2, ok)
		}
	})
}

// WebhooksByURL finds every endpoint registered with a URL, enabled or
// not, in creation order, including one another node has just registered
// while this node's list of endpoints was cached.
func TestWebhooksByURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, project.Options{})
	ctx := context.Background()
	pid := e.project(t, "acme")
	other := e.project(t, "other")
	create := func(s *project.Store, pid, u string) project.Webhook {
		t.Helper()
		w, err := s.CreateWebhook(ctx, pid, project.WebhookInput{URL: u})
		mustOK(t, err, "CreateWebhook")
		return w
	}
	ids := func(ws []project.Webhook) []string {
		out := []string{}
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return out
	}
	a := create(e.store, pid, "https://api.example.com/webhooks/a")
	b1 := create(e.store, pid, "https://api.example.com/webhooks/b")
	b2 := create(e.store, pid, "https://API.example.com:443/webhooks/b/")
	create(e.store, other, "https://api.example.com/webhooks/c")
	_, err := e.store.UpdateWebhook(ctx, pid, b1.ID, project.WebhookPatch{Enabled: new(bool)})
	mustOK(t, err, "UpdateWebhook")

	for _, tt := range []struct {
		url  string
		want []string
	}{
		{"https://api.example.com/webhooks/a", []string{a.ID}},
		{"HTTPS://api.example.com/webhooks/a/", []string{a.ID}},
		{"https://api.example.com/webhooks/b", []string{b1.ID, b2.ID}},
		{"https://api.example.com/webhooks/c", []string{}}, // another project's
		{"https://api.example.com/webhooks/A", []string{}},
		{"not a url", []string{}},
	} {
		ws, err := e.store.WebhooksByURL(ctx, pid, tt.url)
		mustOK(t, err, "WebhooksByURL")
		if got := ids(ws); !slices.Equal(got, tt.want) {
			t.Errorf("WebhooksByURL(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
	ws, _ := e.store.WebhooksByURL(ctx, pid, "https://api.example.com/webhooks/b")
	if len(ws) != 2 || ws[0].Enabled || !ws[1].Enabled {
		t.Errorf("enabled flags of b = %+v", ws)
	}

	// Another node registers an endpoint while this one has the list
	// cached (the lookups above cached it): found at once all the same.
	node2 := project.New(e.rdb, project.Options{Prefix: e.prefix, Now: e.clock.Now})
	d := create(node2, pid, "https://api.example.com/webhooks/d")
	ws, err = e.store.WebhooksByURL(ctx, pid, "https://api.example.com/webhooks/d")
	mustOK(t, err, "WebhooksByURL after another node registered")
	if got := ids(ws); !slices.Equal(got, []string{d.ID}) {
		t.Errorf("WebhooksByURL(d) = %q, want %q", got, []string{d.ID})
	}
}
