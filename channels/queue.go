package channels

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/riverhub/riverhub/internal/apperr"
	"github.com/riverhub/riverhub/internal/rdb"
)

// legacyEntry names the single-queue layout's ready list on the ring. It
// cannot be a project id (those are UUIDs).
const legacyEntry = "~legacy"

// queueKeys are one partition's task queue keys, all of its hash tag
// ({tasks} for partition 0, the tag of earlier versions).
type queueKeys struct {
	ring, lease, count, legacy string
	qPrefix                    string
	claimPrefix                string // + a claim's token: what it claimed
}

func newQueueKeys(prefix, tag string) queueKeys {
	t := prefix + ":" + tag + ":"
	return queueKeys{ring: t + "rr", lease: t + "lease", count: t + "n", legacy: t + "ready",
		qPrefix: t + "q:", claimPrefix: t + "claim:"}
}

func (k queueKeys) queue(pid string) string { return k.qPrefix + pid }

// queue is the task queue: its partitions (Options.Partitions) and where a
// channel's task goes. With one partition every key is as in earlier
// versions; with more, a task goes to the partition of its channel id, the
// limits are shared out (share), and the rate of a project has a key of
// its own slot (rate).
type queue struct {
	prefix string
	parts  rdb.Partitions
	keys   []queueKeys
	cursor atomic.Uint32 // the partition the next claim tries first
	// noLegacy: the last reclaim found every partition's legacy list
	// empty, so a submission does not count it against the deployment's
	// limit (enqueue.lua). An upgrade's lists drain once and are not
	// written again (but for a legacy task whose lease ran out, counted
	// again from the next reclaim on).
	noLegacy atomic.Bool
}

// sawLegacy records the lengths of the legacy lists a reclaim read.
func (q *queue) sawLegacy(lens []*redis.IntCmd) {
	for _, l := range lens {
		if l.Val() > 0 {
			q.noLegacy.Store(false)
			return
		}
	}
	q.noLegacy.Store(true)
}

// legacyArg is enqueue.lua's A[8].
func (q *queue) legacyArg() string {
	if q.noLegacy.Load() {
		return "0"
	}
	return "1"
}

func newQueue(prefix string, n int) *queue {
	q := &queue{prefix: prefix, parts: rdb.NewPartitions("tasks", n)}
	for k := range q.parts.N() {
		q.keys = append(q.keys, newQueueKeys(prefix, q.parts.Tag(k)))
	}
	return q
}

// of is the partition of a channel's task.
func (q *queue) of(cid string) queueKeys { return q.keys[q.parts.Of(cid)] }

// rate is a project's rate key: in partition 0 with one partition (as
// earlier versions), else on its own slot, so no master carries every
// project's.
func (q *queue) rate(pid string) string {
	if len(q.keys) == 1 {
		return q.prefix + ":{tasks}:rl:" + pid
	}
	return q.prefix + ":rl:{" + pid + "}"
}

// share is a partition's part of a deployment-wide or per-project limit:
// the limit itself with one partition; with n, ceil(limit/n), so that the
// limit holds on average and a full queue is refused at about the limit.
func (q *queue) share(limit int) int {
	n := len(q.keys)
	return (limit + n - 1) / n
}

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

// admit checks a synchronous run (or, with partitions, a submission)
// against its project's rate: spends a permit the node holds, or takes a
// block in one call.
func (s *Service) admit(ctx context.Context, pid string) error {
	now := s.o.Now()
	if s.o.ProjectRate <= 0 {
		return nil
	}
	ask := s.permits.take(pid, now, permitBlock(s.o.ProjectRate))
	if ask == 0 {
		return nil
	}
	r, err := limitScript.Run(ctx, s.rdb, []string{s.q.rate(pid)}, s.o.ProjectRate, 2*s.o.ProjectRate, ask).Int64Slice()
	if err == nil && len(r) != 2 {
		err = fmt.Errorf("limit.lua: unknown reply %v", r)
	}
	if err != nil {
		s.permits.kept(pid, ask, 0, now)
		return fmt.Errorf("check rate: %w", err)
	}
	wait := r[0]
	s.permits.kept(pid, ask, int(r[1]), now)
	if wait > 0 {
		s.m.limited.Inc()
		return rateLimited(int64(s.o.ProjectRate), wait)
	}
	return nil
}

// QueueDepth is the number of tasks waiting for a worker, all projects.
func (s *Service) QueueDepth(ctx context.Context) (int64, error) {
	depths, err := s.depths(ctx)
	var sum int64
	for _, d := range depths {
		sum += d
	}
	return sum, err
}

// depths reads each partition's number of waiting tasks, in one round trip.
func (s *Service) depths(ctx context.Context) ([]int64, error) {
	n := make([]*redis.StringCmd, len(s.q.keys))
	legacy := make([]*redis.IntCmd, len(s.q.keys))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range s.q.keys {
			n[i], legacy[i] = p.Get(ctx, k.count), p.LLen(ctx, k.legacy)
		}
		return nil
	})
	out := make([]int64, len(n))
	for i := range n {
		c, err := n[i].Int64()
		if err != nil && err != redis.Nil { // no counter yet: none waiting
			return nil, err
		}
		l, err := legacy[i].Result()
		if err != nil {
			return nil, err
		}
		out[i] = c + l
	}
	return out, nil
}

// ProjectQueueDepth is the number of one project's tasks waiting for a
// worker (tasks still in the legacy list not counted).
func (s *Service) ProjectQueueDepth(ctx context.Context, pid string) (int64, error) {
	cmds := make([]*redis.IntCmd, len(s.q.keys))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range s.q.keys {
			cmds[i] = p.LLen(ctx, k.queue(pid))
		}
		return nil
	})
	var sum int64
	for _, c := range cmds {
		sum += c.Val()
	}
	return sum, err
}
