package channels

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/riverhub/riverhub/internal/apperr"
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

// idemLease is how long a reserved key stays "in progress" without being
// confirmed or released: a submission's own round trips take far less.
// Afterwards a repeat takes the key over (or replays the first answer if
// that request did get accepted), so a submission whose failure could not
// even release the key does not block its retries for a day.
const idemLease = 10 * time.Second

var (
	idemClaimScript  = script("idemclaim")
	idemTakeScript   = script("idemtake")
	idemSettleScript = script("idemsettle")
	idemOwnScript    = script("idemown")
)

// ClaimIdempotency reserves (project, key) for a request with the given
// fingerprint and channel. It returns nil when the caller goes ahead (then
// it must call ConfirmIdempotency or ReleaseIdempotency), the earlier
// request's record when the key was used before with the same fingerprint
// (Done false: still being accepted), and a conflict when it was used with
// a different one. A reservation left unconfirmed past its lease is
// resolved here: its request was accepted (its channel exists: the record
// is confirmed and returned) or it was not (this request takes the key).
func (s *Service) ClaimIdempotency(ctx context.Context, pid, key, fingerprint, channelID string) (*Idempotent, error) {
	rec, _ := json.Marshal(Idempotent{Fingerprint: fingerprint, ChannelID: channelID})
	k := s.idemKey(pid, key)
	keys := []string{k, k + ":lease"}
	for range 5 {
		out, err := idemClaimScript.Run(ctx, s.rdb, keys, rec, int64(IdempotencyTTL/time.Second), idemLease.Milliseconds()).Slice()
		var r idemClaimReply
		if err == nil {
			r, err = decodeIdemClaim(out)
		}
		if err != nil {
			return nil, fmt.Errorf("idempotency: %w", err)
		}
		if r.code == idemReserved {
			return nil, nil
		}
		if r.code == idemGone {
			continue
		}
		raw := r.record
		var prev Idempotent
		if err := json.Unmarshal([]byte(raw), &prev); err != nil {
			return nil, fmt.Errorf("idempotency: %w", err)
		}
		if prev.Fingerprint != fingerprint {
			return nil, apperr.New(apperr.Conflict, "idempotency_key_reused",
				"this Idempotency-Key was used with a different request body")
		}
		if r.code == idemHeld {
			return &prev, nil
		}
		// Never confirmed nor released: was the first request accepted?
		// Settled here for good (idemsettle.lua): a record standing is
		// kept, should the first request's take-back still be on its way;
		// with none, the channel is marked withdrawn, should its
		// submission be. (Its channel may have settled and moved to the
		// archive since.)
		n, err := idemSettleScript.Run(ctx, s.rdb, []string{s.chKey(prev.ChannelID), s.wKey(prev.ChannelID)},
			int64(withdrawnTTL/time.Second)).Int()
		if err != nil {
			return nil, fmt.Errorf("idempotency: %w", err)
		}
		if n == 0 && s.o.Archive != nil {
			a, err := s.o.Archive.Get(ctx, prev.ChannelID)
			if err != nil {
				return nil, fmt.Errorf("idempotency: %w", err)
			}
			if a != nil && a.ProjectID == pid {
				n = 1
			}
		}
		if n > 0 {
			s.ConfirmIdempotency(ctx, pid, key, fingerprint, prev.ChannelID)
			prev.Done = true
			return &prev, nil
		}
		took, err := idemTakeScript.Run(ctx, s.rdb, keys, raw, rec, idemLease.Milliseconds()).Int()
		if err != nil {
			return nil, fmt.Errorf("idempotency: %w", err)
		}
		if took == 1 {
			return nil, nil
		}
		// Changed meanwhile (another repeat took it): look again.
	}
	return nil, ErrInProgress
}

// ConfirmIdempotency marks the claimed key's request as accepted: repeats
// now get its answer. A key a repeat has taken over meanwhile (its
// reservation ran out) is left to that repeat (idemown.lua).
func (s *Service) ConfirmIdempotency(ctx context.Context, pid, key, fingerprint, channelID string) {
	if err := s.settleIdem(ctx, pid, key, fingerprint, channelID, true); err != nil {
		s.o.Log.Warn().Err(err).Msg("confirm idempotency key; repeats will be told the request is in progress")
	}
}

// settleIdem confirms (or releases) the key reserved for the request of
// fingerprint and channelID, if it still stands for that request.
func (s *Service) settleIdem(ctx context.Context, pid, key, fingerprint, channelID string, confirm bool) error {
	reserved, _ := json.Marshal(Idempotent{Fingerprint: fingerprint, ChannelID: channelID})
	var done []byte
	if confirm {
		done, _ = json.Marshal(Idempotent{Fingerprint: fingerprint, ChannelID: channelID, Done: true})
	}
	k := s.idemKey(pid, key)
	return idemOwnScript.Run(context.WithoutCancel(ctx), s.rdb, []string{k, k + ":lease"}, reserved, done).Err()
}

// ErrInProgress answers a repeat of a request that is still being accepted.
var ErrInProgress = apperr.New(apperr.Conflict, "request_in_progress",
	"the first request with this Idempotency-Key is still in progress; retry shortly")

// ReleaseIdempotency forgets a claimed key whose request then failed, so
// the client's retry is not answered with an answer that never held;
// unless a repeat has taken the key over meanwhile (idemown.lua). If this
// fails too (Redis is failing), the reservation's lease runs out and a
// retry resolves it (ClaimIdempotency).
func (s *Service) ReleaseIdempotency(ctx context.Context, pid, key, fingerprint, channelID string) {
	_ = s.settleIdem(ctx, pid, key, fingerprint, channelID, false)
}
