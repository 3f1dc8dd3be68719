package channels

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
)

// legacyEntry names the single-queue layout's ready list on the ring. It
// cannot be a project id (those are UUIDs).
const legacyEntry = "~legacy"

// queueKeys are the task queue's keys, all of the {tasks} tag.
type queueKeys struct {
	ring, lease, count, legacy string
	qPrefix, rlPrefix          string
	claimPrefix                string // + a claim's token: what it claimed
}

func newQueueKeys(prefix string) queueKeys {
	tag := prefix + ":{tasks}:"
	return queueKeys{ring: tag + "rr", lease: tag + "lease", count: tag + "n", legacy: tag + "ready",
		qPrefix: tag + "q:", rlPrefix: tag + "rl:", claimPrefix: tag + "claim:"}
}

func (k queueKeys) queue(pid string) string { return k.qPrefix + pid }
func (k queueKeys) rate(pid string) string  { return k.rlPrefix + pid }

// requeueKeys are the keys of the reclaim and release scripts.
func (k queueKeys) requeueKeys() []string {
	return []string{k.lease, k.ring, k.count, k.legacy, k.qPrefix}
}

// leaseMember names a claimed task in the lease set: its project and
// channel, so that reclaim and release know whose queue it goes back to.
// A channel without a project (one leased from the legacy list) is its
// bare id, as the single-queue layout named it.
func leaseMember(pid, cid string) string {
	if pid == "" {
		return cid
	}
	return pid + "/" + cid
}

// splitMember is leaseMember's inverse.
func splitMember(m string) (pid, cid string) {
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		return m[:i], m[i+1:]
	}
	return "", m
}

// ErrProjectQueueFull answers a submission of a project that has
// Options.ProjectMaxQueue tasks waiting; like ErrQueueFull, its code is
// queue_full.
var ErrProjectQueueFull = &apperr.Error{Kind: apperr.RateLimited, Code: "queue_full",
	Message: "too many tasks of this project are waiting; retry later", RetryAfter: 1}

// rateLimited answers a submission over its project's rate.
func rateLimited(rate, waitMS int64) *apperr.Error {
	return &apperr.Error{Kind: apperr.RateLimited, Code: "rate_limited",
		Message:    fmt.Sprintf("this project submits more than %d tasks per second; retry later", rate),
		RetryAfter: int(max(1, (waitMS+999)/1000))}
}

// IsRateLimited reports whether err is a refusal for the project's rate.
func IsRateLimited(err error) bool {
	e := apperr.As(err)
	return e != nil && e.Code == "rate_limited"
}

// admit checks a synchronous run against its project's rate, in one call.
func (s *Service) admit(ctx context.Context, pid string) error {
	if s.o.ProjectRate <= 0 {
		return nil
	}
	wait, err := limitScript.Run(ctx, s.rdb, []string{s.q.rate(pid)}, s.o.ProjectRate, 2*s.o.ProjectRate).Int64()
	if err != nil {
		return fmt.Errorf("check rate: %w", err)
	}
	if wait > 0 {
		s.m.limited.Inc()
		return rateLimited(int64(s.o.ProjectRate), wait)
	}
	return nil
}

// QueueDepth is the number of tasks waiting for a worker, all projects.
func (s *Service) QueueDepth(ctx context.Context) (int64, error) {
	var n *redis.StringCmd
	var legacy *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		n, legacy = p.Get(ctx, s.q.count), p.LLen(ctx, s.q.legacy)
		return nil
	})
	if err != nil && err != redis.Nil {
		return 0, err
	}
	c, _ := n.Int64()
	return c + legacy.Val(), nil
}

// ProjectQueueDepth is the number of one project's tasks waiting for a
// worker (tasks still in the legacy list not counted).
func (s *Service) ProjectQueueDepth(ctx context.Context, pid string) (int64, error) {
	return s.rdb.LLen(ctx, s.q.queue(pid)).Result()
}
