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

// Idempotent is what an Idempotency-Key stands for: the request's
// fingerprint, its channel, and whether that request was accepted (Done)
// or is still being accepted.
type Idempotent struct {
	Fingerprint string `json:"fingerprint"`
	ChannelID   string `json:"channel_id"`
	Done        bool   `json:"done"`
}

func (s *Service) idemKey(pid, key string) string {
	h := sha256.Sum256([]byte(key))
	return s.o.Prefix + ":idem:{" + pid + "}:" + hex.EncodeToString(h[:])
}

// ClaimIdempotency reserves (project, key) for a request with the given
// fingerprint and channel. It returns nil when the caller goes ahead (then
// it must call ConfirmIdempotency or ReleaseIdempotency), the earlier
// request's record when the key was used before with the same fingerprint,
// and a conflict when it was used with a different one.
func (s *Service) ClaimIdempotency(ctx context.Context, pid, key, fingerprint, channelID string) (*Idempotent, error) {
	rec, _ := json.Marshal(Idempotent{Fingerprint: fingerprint, ChannelID: channelID})
	k := s.idemKey(pid, key)
	ok, err := s.rdb.SetNX(ctx, k, rec, IdempotencyTTL).Result()
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	if ok {
		return nil, nil
	}
	raw, err := s.rdb.Get(ctx, k).Bytes()
	if errors.Is(err, redis.Nil) { // released or expired between the two calls
		return s.ClaimIdempotency(ctx, pid, key, fingerprint, channelID)
	}
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	var prev Idempotent
	if err := json.Unmarshal(raw, &prev); err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	if prev.Fingerprint != fingerprint {
		return nil, apperr.New(apperr.Conflict, "idempotency_key_reused",
			"this Idempotency-Key was used with a different request body")
	}
	return &prev, nil
}

// ConfirmIdempotency marks the claimed key's request as accepted: repeats
// now get its answer.
func (s *Service) ConfirmIdempotency(ctx context.Context, pid, key, fingerprint, channelID string) {
	rec, _ := json.Marshal(Idempotent{Fingerprint: fingerprint, ChannelID: channelID, Done: true})
	if err := s.rdb.SetArgs(context.WithoutCancel(ctx), s.idemKey(pid, key), rec, redis.SetArgs{Mode: "XX", KeepTTL: true}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		s.o.Log.Warn().Err(err).Msg("confirm idempotency key; repeats will be told the request is in progress")
	}
}

// ErrInProgress answers a repeat of a request that is still being accepted.
var ErrInProgress = apperr.New(apperr.Conflict, "request_in_progress",
	"the first request with this Idempotency-Key is still in progress; retry shortly")

// ReleaseIdempotency forgets a claimed key whose request then failed, so
// the client's retry is not answered with an answer that never held.
func (s *Service) ReleaseIdempotency(ctx context.Context, pid, key string) {
	s.rdb.Del(context.WithoutCancel(ctx), s.idemKey(pid, key))
}
