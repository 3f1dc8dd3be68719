package channels

import (
	"context"
	"time"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb"
)

// persist runs write until it succeeds: the writes that follow a provider
// call (the completion, its side effects, a lease given back) must not be
// dropped for a Redis blip, or the task waits out its lease and the
// provider is called again. While Redis is unreachable it retries until
// ctx ends (the task stays on this node, whose heartbeat keeps its lease
// once Redis is back); other errors are retried for at most one lease, so
// a write that can never succeed hands the task to the reclaimer rather
// than holding it forever. An application error (e.g. the channel
// expired) is an answer, not a failure: it is returned at once.
func (s *Service) persist(ctx context.Context, what string, write func() error) error {
	var giveUp time.Time
	for n := 0; ; n++ {
		err := write()
		if err == nil || apperr.As(err) != nil || ctx.Err() != nil {
			if err == nil && n > 0 {
				s.o.Log.Info().Int("retries", n).Str("write", what).Msg("written after Redis came back")
			}
			return err
		}
		if !rdb.Unavailable(err) {
			if giveUp.IsZero() {
				giveUp = time.Now().Add(s.o.Lease)
			} else if time.Now().After(giveUp) {
				return err
			}
		}
		if n == 0 {
			s.o.Log.Warn().Err(err).Str("write", what).Msg("write failed; retrying until Redis answers")
		}
		s.m.writeRetries.Inc()
		if !rdb.Backoff(ctx, n) {
			return err
		}
	}
}
