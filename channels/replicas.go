package channels

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riverhub/riverhub/internal/rdb"
)

// replicated marks ctx so that the writes made with it wait for
// Options.WaitReplicas replicas before the caller answers (rdb.WaitReplicas:
// a WAIT on each connection that wrote). done, given the operation's
// outcome, counts and logs a shortfall of an operation that succeeded: the
// answer is not changed by it, since the master has the writes and a
// refusal would invite a retry of what was done. Without WaitReplicas both
// do nothing.
func (s *Service) replicated(ctx context.Context, op string) (context.Context, func(error)) {
	if s.o.WaitReplicas <= 0 {
		return ctx, func(error) {}
	}
	ctx, r := rdb.WaitReplicas(ctx, s.o.WaitReplicas, s.o.WaitTimeout)
	return ctx, func(err error) {
		if err != nil {
			return
		}
		if err := r.Err(); err != nil {
			s.shortfalls.WithLabelValues(op).Inc()
			s.waitLog.Warn().Err(err).Str("op", op).
				Msg("answered before enough replicas confirmed the writes: a failover now could lose them")
		}
	}
}

func newShortfalls(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riverhub_redis_wait_shortfalls_total",
		Help: "Submissions (submit, sync) and callbacks answered although fewer replicas than RIVERHUB_REDIS_WAIT_REPLICAS confirmed their writes within RIVERHUB_REDIS_WAIT_TIMEOUT."},
		[]string{"op"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// waitLogPeriod spaces the shortfall warnings: while a replica is away,
// every answer falls short.
const waitLogPeriod = 10 * time.Second
