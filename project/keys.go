package project

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/wire"
)

// KeyPrefix starts every API key riverhub issues.
const KeyPrefix = "mr_live_"

// DefaultProject is the name of the project RIVERHUB_ADMIN_KEY belongs to.
const DefaultProject = "default"

// Project is a tenant: every other object belongs to exactly one.
type Project struct {
	ID        string    `json:"project_id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// APIKey is a key's public record; the key itself is never stored.
type APIKey struct {
	ID        string    `json:"id"`
	ProjectID string    `json:"project_id"`
	Name      string    `json:"name"`
	Prefix    string    `json:"prefix"` // first characters, to recognise a key in a list
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
	Hash      string    `json:"hash,omitempty"` // never sent to clients: the server drops it
}

// Principal is who a request authenticated as.
type Principal struct {
	ProjectID string
	KeyID     string
	Admin     bool
}

// ErrUnauthorized is a missing or unknown key.
var ErrUnauthorized = apperr.New(apperr.Unauthorized, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)")

func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return KeyPrefix + hex.EncodeToString(b)
}

func (s *Store) apiKeyKey(hash string) string { return s.prefix + ":apikey:" + hash }

// Authenticate resolves a bearer key to its project.
func (s *Store) Authenticate(ctx context.Context, key string) (Principal, error) {
	if key == "" || len(key) > 256 {
		return Principal{}, ErrUnauthorized
	}
	h := hashKey(key)
	if p, ok := s.principals.get(h); ok {
		return p, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.apiKeyKey(h), "hash", "project_id", "id", "admin").Result()
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate: %w", err)
	}
	stored, _ := vals[0].(string)
	// The lookup is by hash already; comparing in constant time as well
	// keeps the check honest if the storage layout ever changes.
	if stored == "" || subtle.ConstantTimeCompare([]byte(stored), []byte(h)) != 1 {
		return Principal{}, ErrUnauthorized
	}
	pid, _ := vals[1].(string)
	id, _ := vals[2].(string)
	admin, _ := vals[3].(string)
	p := Principal{ProjectID: pid, KeyID: id, Admin: admin == "1"}
	s.principals.put(h, p)
	return p, nil
}

// displayPrefix is the start of key shown in lists: enough to recognise a
// key, never more than half of it (an admin key from the environment can be
// short), so the listed prefix never gives the key away.
func displayPrefix(key string) string {
	n := 4
	if strings.HasPrefix(key, KeyPrefix) {
		n = len(KeyPrefix) + 6
	}
	return key[:min(n, len(key)/2)]
}

// storeKey records a key for a project.
func (s *Store) storeKey(ctx context.Context, pid, name, key string, admin bool) (APIKey, error) {
	h := hashKey(key)
	k := APIKey{
		ID: randomID("key_"), ProjectID: pid, Name: name, Prefix: displayPrefix(key),
		Admin: admin, CreatedAt: s.now().UTC(), Hash: h,
	}
	adminFlag := "0"
	if admin {
		adminFlag = "1"
	}
	// Two slots (the lookup key and the project's list), so two writes: the
	// lookup first, so a listed key always works.
	if err := s.rdb.HSet(ctx, s.apiKeyKey(h), "hash", h, "project_id", pid, "id", k.ID, "admin", adminFlag).Err(); err != nil {
		return APIKey{}, fmt.Errorf("store key: %w", err)
	}
	if err := s.rdb.HSet(ctx, s.projKey(pid, "keys"), k.ID, wire.MustJSON(k)).Err(); err != nil {
		return APIKey{}, fmt.Errorf("store key: %w", err)
	}
	return k, nil
}

// CreateKey issues a new key for the project; the key is returned once.
func (s *Store) CreateKey(ctx context.Context, pid, name string) (APIKey, string, error) {
	if err := checkName("name", name, 128, true); err != nil {
		return APIKey{}, "", err
	}
	key := newKey()
	k, err := s.storeKey(ctx, pid, name, key, false)
	return k, key, err
}

// ListKeys lists the project's keys, oldest first.
func (s *Store) ListKeys(ctx context.Context, pid string, p ListParams) (Page[APIKey], error) {
	return listHash(ctx, s, s.projKey(pid, "keys"), p, func(k *APIKey) string { return createdKey(k.CreatedAt, k.ID) })
}

// DeleteKey revokes a key. The admin key is managed by RIVERHUB_ADMIN_KEY
// and cannot be deleted through the API.
func (s *Store) DeleteKey(ctx context.Context, pid, id string) error {
	var k APIKey
	if err := s.getJSON(ctx, s.projKey(pid, "keys"), id, "key", &k); err != nil {
		return err
	}
	if k.Admin {
		return apperr.New(apperr.Conflict, "admin_key", "the admin key is set by RIVERHUB_ADMIN_KEY; change it there")
	}
	if err := s.rdb.Del(ctx, s.apiKeyKey(k.Hash)).Err(); err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	s.principals.drop(k.Hash)
	return s.rdb.HDel(ctx, s.projKey(pid, "keys"), id).Err()
}

// CreateProject makes a project and its first key (returned once).
func (s *Store) CreateProject(ctx context.Context, name string) (Project, string, error) {
	if err := checkName("name", name, 128, true); err != nil {
		return Project{}, "", err
	}
	p := Project{ID: uuid.NewString(), Name: name, CreatedAt: s.now().UTC()}
	ok, err := s.rdb.HSetNX(ctx, s.prefix+":projects:byname", name, p.ID).Result()
	if err != nil {
		return Project{}, "", fmt.Errorf("create project: %w", err)
	}
	if !ok {
		return Project{}, "", apperr.New(apperr.Conflict, "project_exists", "a project named %q already exists", name)
	}
	if err := s.rdb.HSet(ctx, s.prefix+":projects", p.ID, wire.MustJSON(p)).Err(); err != nil {
		return Project{}, "", fmt.Errorf("create project: %w", err)
	}
	key := newKey()
	if _, err := s.storeKey(ctx, p.ID, "first key", key, false); err != nil {
		return Project{}, "", err
	}
	return p, key, nil
}

// ListProjects lists every project, oldest first.
func (s *Store) ListProjects(ctx context.Context, p ListParams) (Page[Project], error) {
	return listHash(ctx, s, s.prefix+":projects", p, func(pr *Project) string { return createdKey(pr.CreatedAt, pr.ID) })
}

// Bootstrap makes sure the default project exists and that adminKey (if
// not empty) is its admin key, replacing a previous admin key. With an
// empty adminKey and generate set (development), it generates one the
// first time only and returns it (the caller prints it once); later starts
// return "". Without generate nothing is generated: production never prints
// a secret into its logs.
func (s *Store) Bootstrap(ctx context.Context, adminKey string, generate bool) (Project, string, error) {
	pid, err := s.rdb.HGet(ctx, s.prefix+":projects:byname", DefaultProject).Result()
	var p Project
	switch {
	case errors.Is(err, redis.Nil):
		// The record is written before the name is claimed, so a node
		// that finds the name (another starting at the same moment)
		// always finds the record; the loser of the claim removes its
		// own record and takes the winner's.
		p = Project{ID: uuid.NewString(), Name: DefaultProject, CreatedAt: s.now().UTC()}
		if err := s.rdb.HSet(ctx, s.prefix+":projects", p.ID, wire.MustJSON(p)).Err(); err != nil {
			return Project{}, "", fmt.Errorf("bootstrap: %w", err)
		}
		ok, err := s.rdb.HSetNX(ctx, s.prefix+":projects:byname", DefaultProject, p.ID).Result()
		if err != nil {
			return Project{}, "", fmt.Errorf("bootstrap: %w", err)
		}
		if !ok { // another node created it a moment ago
			if err := s.rdb.HDel(ctx, s.prefix+":projects", p.ID).Err(); err != nil {
				return Project{}, "", fmt.Errorf("bootstrap: %w", err)
			}
			return s.Bootstrap(ctx, adminKey, generate)
		}
	case err != nil:
		return Project{}, "", fmt.Errorf("bootstrap: %w", err)
	default:
		if err := s.getJSON(ctx, s.prefix+":projects", pid, "project", &p); err != nil {
			return Project{}, "", fmt.Errorf("bootstrap: %w", err)
		}
	}
	if adminKey == "" {
		return s.generateAdminKey(ctx, p, generate)
	}
	h := hashKey(adminKey)
	// The key is stored before it is named the admin key, and the old one
	// revoked last: a failure half-way leaves a working admin key, and the
	// next start completes the change.
	if n, err := s.rdb.Exists(ctx, s.apiKeyKey(h)).Result(); err != nil {
		return Project{}, "", fmt.Errorf("bootstrap: %w", err)
	} else if n == 0 {
		if _, err := s.storeKey(ctx, p.ID, "admin", adminKey, true); err != nil {
			return Project{}, "", err
		}
	}
	old, err := s.rdb.GetSet(ctx, s.prefix+":admin", h).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Project{}, "", fmt.Errorf("bootstrap: %w", err)
	}
	if old != "" && old != h {
		if err := s.revokeHash(ctx, p.ID, old); err != nil {
			return Project{}, "", err
		}
	}
	return p, "", nil
}

// generateAdminKey makes a development admin key when there is none.
// Nodes starting together each store a key, and one names it the admin key
// (SETNX): the others revoke theirs and print nothing, so the key printed
// is the one that works.
func (s *Store) generateAdminKey(ctx context.Context, p Project, generate bool) (Project, string, error) {
	n, err := s.rdb.Exists(ctx, s.prefix+":admin").Result()
	if err != nil {
		return Project{}, "", fmt.Errorf("bootstrap: %w", err)
	}
	if n > 0 || !generate {
		return p, "", nil
	}
	key := newKey()
	h := hashKey(key)
	if _, err := s.storeKey(ctx, p.ID, "admin", key, true); err != nil {
		return Project{}, "", err
	}
	ok, err := s.rdb.SetNX(ctx, s.prefix+":admin", h, 0).Result()
	if err != nil {
		return Project{}, "", fmt.Errorf("bootstrap: %w", err)
	}
	if !ok {
		if err := s.revokeHash(ctx, p.ID, h); err != nil {
			return Project{}, "", err
		}
		return p, "", nil
	}
	return p, key, nil
}

func (s *Store) revokeHash(ctx context.Context, pid, hash string) error {
	id, err := s.rdb.HGet(ctx, s.apiKeyKey(hash), "id").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("revoke old admin key: %w", err)
	}
	if err := s.rdb.Del(ctx, s.apiKeyKey(hash)).Err(); err != nil {
		return fmt.Errorf("revoke old admin key: %w", err)
	}
	s.principals.drop(hash)
	if id != "" {
		return s.rdb.HDel(ctx, s.projKey(pid, "keys"), id).Err()
	}
	return nil
}
