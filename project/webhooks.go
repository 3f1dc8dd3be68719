package project

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/wire"
)

// Event types a webhook endpoint can subscribe to.
const (
	EventTaskCompleted   = "task.completed"
	EventTaskAIGenerated = "task.ai_generated"
)

// Events lists every event type; an endpoint created without events gets
// all of them.
var Events = []string{EventTaskCompleted, EventTaskAIGenerated}

// SecretRotationOverlap is how long the previous secret keeps signing
// beside the new one after a rotation.
const SecretRotationOverlap = 24 * time.Hour

// Webhook is an endpoint that receives signed deliveries.
type Webhook struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Description string    `json:"description"`
	Events      []string  `json:"events"`
	Enabled     bool      `json:"enabled"`
	Secret      string    `json:"secret"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// PreviousSecret signs beside Secret until PreviousSecretExpiresAt.
	PreviousSecret          string     `json:"previous_secret,omitempty"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
	// DisabledReason says why riverhub disabled the endpoint on its own
	// (it failed for too long); cleared when it is enabled again.
	DisabledReason string     `json:"disabled_reason,omitempty"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
}

// Subscribes reports whether the endpoint wants events of type t.
func (w *Webhook) Subscribes(t string) bool {
	return w.Enabled && slices.Contains(w.Events, t)
}

// Secrets returns the secrets that sign a delivery at time now: the
// current one, and the previous one during its overlap.
func (w *Webhook) Secrets(now time.Time) []string {
	if w.PreviousSecret != "" && w.PreviousSecretExpiresAt != nil && now.Before(*w.PreviousSecretExpiresAt) {
		return []string{w.Secret, w.PreviousSecret}
	}
	return []string{w.Secret}
}

// WebhookInput creates an endpoint.
type WebhookInput struct {
	URL         string   `json:"url"`
	Description string   `json:"description"`
	Events      []string `json:"events"`
}

// WebhookPatch changes some fields of an endpoint; nil fields stay.
type WebhookPatch struct {
	URL         *string   `json:"url"`
	Description *string   `json:"description"`
	Events      *[]string `json:"events"`
	Enabled     *bool     `json:"enabled"`
}

func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func (s *Store) webhooksKey(pid string) string { return s.projKey(pid, "webhooks") }

func (s *Store) checkURL(ctx context.Context, u string) error {
	if len(u) > 2048 {
		return apperr.Invalidf("url is longer than 2048 characters")
	}
	if err := s.guard.CheckURL(ctx, u, s.production); err != nil {
		return apperr.New(apperr.Invalid, "invalid_url", "%v", err)
	}
	return nil
}

func checkEvents(ev []string) ([]string, error) {
	if len(ev) == 0 {
		return slices.Clone(Events), nil
	}
	out := make([]string, 0, len(ev))
	for _, e := range ev {
		if !slices.Contains(Events, e) {
			return nil, apperr.Invalidf("unknown event %q (known: task.completed, task.ai_generated)", e)
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// CreateWebhook validates the URL and stores a new enabled endpoint with a
// fresh secret.
func (s *Store) CreateWebhook(ctx context.Context, pid string, in WebhookInput) (Webhook, error) {
	if err := s.checkURL(ctx, in.URL); err != nil {
		return Webhook{}, err
	}
	if len(in.Description) > 1024 {
		return Webhook{}, apperr.Invalidf("description is longer than 1024 characters")
	}
	ev, err := checkEvents(in.Events)
	if err != nil {
		return Webhook{}, err
	}
	now := s.now().UTC()
	w := Webhook{ID: randomID("wh_"), URL: in.URL, Description: in.Description, Events: ev, Enabled: true,
		Secret: newSecret(), CreatedAt: now, UpdatedAt: now}
	if err := s.rdb.HSet(ctx, s.webhooksKey(pid), w.ID, wire.MustJSON(w)).Err(); err != nil {
		return Webhook{}, fmt.Errorf("create webhook: %w", err)
	}
	s.hooks.drop(pid)
	return w, nil
}

// GetWebhook returns one endpoint.
func (s *Store) GetWebhook(ctx context.Context, pid, id string) (Webhook, error) {
	var w Webhook
	err := s.getJSON(ctx, s.webhooksKey(pid), id, "webhook", &w)
	return w, err
}

// ListWebhooks lists endpoints, oldest first.
func (s *Store) ListWebhooks(ctx context.Context, pid string, p ListParams) (Page[Webhook], error) {
	return listHash(ctx, s, s.webhooksKey(pid), p, func(w *Webhook) string { return createdKey(w.CreatedAt, w.ID) })
}

// AllWebhooks returns every endpoint of a project (for dispatch).
func (s *Store) AllWebhooks(ctx context.Context, pid string) ([]Webhook, error) {
	var all []Webhook
	p := ListParams{Limit: 500}
	for {
		page, err := s.ListWebhooks(ctx, pid, p)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.NextCursor == nil {
			return all, nil
		}
		p.Cursor = *page.NextCursor
	}
}

// UpdateWebhook applies a patch.
func (s *Store) UpdateWebhook(ctx context.Context, pid, id string, p WebhookPatch) (Webhook, error) {
	return s.UpdateWebhookWith(ctx, pid, id, p, nil)
}

// UpdateWebhookWith is UpdateWebhook, with turnOn run when the patch turns
// a disabled endpoint on: after the patch is checked, before it is
// written. Its error stops the update, which leaves the endpoint disabled.
// It runs again if the endpoint changed meanwhile and the patch is applied
// to the newer version, so it must bear running twice.
func (s *Store) UpdateWebhookWith(ctx context.Context, pid, id string, p WebhookPatch, turnOn func(context.Context) error) (Webhook, error) {
	return s.modifyWebhook(ctx, pid, id, func(w *Webhook) error {
		if p.URL != nil {
			if err := s.checkURL(ctx, *p.URL); err != nil {
				return err
			}
			w.URL = *p.URL
		}
		if p.Description != nil {
			if len(*p.Description) > 1024 {
				return apperr.Invalidf("description is longer than 1024 characters")
			}
			w.Description = *p.Description
		}
		if p.Events != nil {
			ev, err := checkEvents(*p.Events)
			if err != nil {
				return err
			}
			w.Events = ev
		}
		if p.Enabled != nil {
			if *p.Enabled && !w.Enabled && turnOn != nil {
				if err := turnOn(ctx); err != nil {
					return err
				}
			}
			w.Enabled = *p.Enabled
			if w.Enabled {
				w.DisabledReason, w.DisabledAt = "", nil
			}
		}
		return nil
	})
}

// DisableWebhook turns an endpoint off on riverhub's own decision, keeping
// why; PATCH {"enabled": true} turns it back on. Disabling one already
// disabled changes nothing.
func (s *Store) DisableWebhook(ctx context.Context, pid, id, reason string) error {
	_, err := s.modifyWebhook(ctx, pid, id, func(w *Webhook) error {
		if !w.Enabled {
			return errUnchanged
		}
		now := s.now().UTC()
		w.Enabled, w.DisabledReason, w.DisabledAt = false, reason, &now
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

var errUnchanged = errors.New("unchanged")

// RotateSecret issues a new secret; the old one keeps signing beside it for
// SecretRotationOverlap so receivers can switch without dropping deliveries.
func (s *Store) RotateSecret(ctx context.Context, pid, id string) (Webhook, error) {
	return s.modifyWebhook(ctx, pid, id, func(w *Webhook) error {
		exp := s.now().UTC().Add(SecretRotationOverlap)
		w.PreviousSecret, w.PreviousSecretExpiresAt = w.Secret, &exp
		w.Secret = newSecret()
		return nil
	})
}

// modifyWebhook applies change as a compare-and-set on the stored JSON, so
// two concurrent changes (a rotation and a PATCH) cannot undo each other.
func (s *Store) modifyWebhook(ctx context.Context, pid, id string, change func(*Webhook) error) (Webhook, error) {
	for range 5 {
		raw, err := s.rdb.HGet(ctx, s.webhooksKey(pid), id).Bytes()
		if errors.Is(err, redis.Nil) {
			return Webhook{}, apperr.NotFoundf("webhook %q not found", id)
		}
		if err != nil {
			return Webhook{}, fmt.Errorf("update webhook: %w", err)
		}
		var w Webhook
		if err := json.Unmarshal(raw, &w); err != nil {
			return Webhook{}, fmt.Errorf("decode webhook: %w", err)
		}
		if err := change(&w); err != nil {
			return Webhook{}, err
		}
		w.UpdatedAt = s.now().UTC()
		n, err := swapScript.Run(ctx, s.rdb, []string{s.webhooksKey(pid)}, id, raw, wire.MustJSON(w)).Int()
		s.hooks.drop(pid)
		if err != nil {
			return Webhook{}, fmt.Errorf("update webhook: %w", err)
		}
		switch n {
		case 1:
			return w, nil
		case -1:
			return Webhook{}, apperr.NotFoundf("webhook %q not found", id)
		}
		// Changed meanwhile: apply the change to the newer version.
	}
	return Webhook{}, apperr.New(apperr.Conflict, "concurrent_update", "the webhook is being changed concurrently; retry")
}

// DeleteWebhook removes an endpoint.
func (s *Store) DeleteWebhook(ctx context.Context, pid, id string) error {
	n, err := s.rdb.HDel(ctx, s.webhooksKey(pid), id).Result()
	s.hooks.drop(pid)
	if err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	if n == 0 {
		return apperr.NotFoundf("webhook %q not found", id)
	}
	return nil
}

// ProjectWebhooks returns every endpoint of a project, cached for up to
// CacheTTL: the dispatch engine reads them for every event and attempt.
func (s *Store) ProjectWebhooks(ctx context.Context, pid string) ([]Webhook, error) {
	if ws, ok := s.hooks.get(pid); ok {
		return ws, nil
	}
	ws, err := s.AllWebhooks(ctx, pid)
	if err != nil {
		return nil, err
	}
	s.hooks.put(pid, ws)
	return ws, nil
}

// EndpointURLKey is the form in which a webhook URL is compared with the
// project's endpoints when a request names its endpoint by URL
// (webhook_url): scheme and host in lower case, the scheme's default port
// dropped, no fragment, and the path without its trailing slash (so ""
// and "/" are the same). The path and the query are compared as written:
// most servers tell their case and encoding apart. ok is false for
// anything but an absolute http(s) URL.
func EndpointURLKey(raw string) (key string, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", false
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	if p := u.Port(); p != "" && !(scheme == "http" && p == "80") && !(scheme == "https" && p == "443") {
		host += ":" + p
	}
	var b strings.Builder
	b.WriteString(scheme + "://")
	if u.User != nil {
		b.WriteString(u.User.String() + "@")
	}
	b.WriteString(host)
	b.WriteString(strings.TrimSuffix(u.EscapedPath(), "/"))
	if u.RawQuery != "" {
		b.WriteString("?" + u.RawQuery)
	}
	return b.String(), true
}

// WebhooksByURL returns the project's endpoints, enabled or not, whose URL
// is rawURL as EndpointURLKey compares them, oldest first. It reads the
// cached endpoints, and Redis again when none of them is an enabled match,
// so an endpoint registered a moment ago on another node is found.
func (s *Store) WebhooksByURL(ctx context.Context, pid, rawURL string) ([]Webhook, error) {
	key, ok := EndpointURLKey(rawURL)
	if !ok {
		return nil, nil
	}
	match := func(ws []Webhook) (out []Webhook, enabled bool) {
		for _, w := range ws {
			if k, ok := EndpointURLKey(w.URL); ok && k == key {
				out = append(out, w)
				enabled = enabled || w.Enabled
			}
		}
		return out, enabled
	}
	ws, err := s.ProjectWebhooks(ctx, pid)
	if err != nil {
		return nil, err
	}
	if out, enabled := match(ws); enabled {
		return out, nil
	}
	if ws, err = s.AllWebhooks(ctx, pid); err != nil {
		return nil, err
	}
	s.hooks.put(pid, ws)
	out, _ := match(ws)
	return out, nil
}
