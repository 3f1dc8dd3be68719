package channels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/apperr"
)

// IdempotencyTTL is how long a first answer is replayed.
const IdempotencyTTL = 24 * time.Hour

type idemRecord struct {
	Fingerprint string          `json:"fingerprint"`
	Answer      json.RawMessage `json:"answer"`
}

func (s *Service) idemKey(pid, key string) string {
	h := sha256.Sum256([]byte(key))
	return s.o.Prefix + ":idem:{" + pid + "}:" + hex.EncodeToString(h[:])
}

// ClaimIdempotency stores answer as the first answer to (project, key)
// unless one exists. It returns the stored answer when the key was used
// before with the same request (fingerprint), and a conflict error when it
// was used with a different one. A nil answer means "go ahead".
func (s *Service) ClaimIdempotency(ctx context.Context, pid, key, fingerprint string, answer json.RawMessage) (json.RawMessage, error) {
	rec, _ := json.Marshal(idemRecord{Fingerprint: fingerprint, Answer: answer})
	k := s.idemKey(pid, key)
	ok, err := s.rdb.SetNX(ctx, k, rec, IdempotencyTTL).Result()
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	if ok {
		return nil, nil
	}
	raw, err := s.rdb.Get(ctx, k).Bytes()
	if errors.Is(err, redis.Nil) { // expired between the two calls
		return s.ClaimIdempotency(ctx, pid, key, fingerprint, answer)
	}
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	var prev idemRecord
	if err := json.Unmarshal(raw, &prev); err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	if prev.Fingerprint != fingerprint {
		return nil, apperr.New(apperr.Conflict, "idempotency_key_reused",
			"this Idempotency-Key was used with a different request body")
	}
	return prev.Answer, nil
}

// ReleaseIdempotency forgets a claimed key whose request then failed, so
// the client's retry is not answered with an answer that never held.
func (s *Service) ReleaseIdempotency(ctx context.Context, pid, key string) {
	s.rdb.Del(context.WithoutCancel(ctx), s.idemKey(pid, key))
}
