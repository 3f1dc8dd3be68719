// Package channels owns the life of one AI request, a "channel": its record
// in Redis, the state machine, the task queue and its workers, the provider
// call with fallbacks, and the audit timeline.
//
// States: pending → generating → success | error. A channel's keys share the
// hash tag {channel_id}, so every change to one channel is one Lua script on
// one Cluster slot. Records and timelines expire after the retention.
//
// The queue is at-least-once and fair across projects. Submission appends
// the channel id to its project's ready list (and the project to a ring of
// projects with ready tasks), unless the project's or the deployment's
// queue is full or the project is over its rate (a GCRA timed by Redis);
// a node's claimer moves a batch of tasks into a lease sorted set (scored
// by lease deadline) in one script, taking one task per project per turn
// round the ring, and heartbeats extend the leases of the tasks it runs.
// If a node dies, its leases run out and any node puts the tasks back at
// the head of their project's list. Within a project tasks start in
// submission order; across projects, a task waits for at most one task of
// each other project per turn, not for their backlogs. A task run twice
// (a stalled node came back) completes once: completion is a
// compare-and-set on the status, and the loser adopts the winner's message.
// A task whose completion was recorded but whose side effects (webhook
// enqueue, room publish) may not have run is finished again on reclaim;
// those side effects are idempotent.
//
// Keys (P = the configured prefix):
//
//	P:ch:{cid}        HASH  project_id, workflow, event_name, status, created_at, updated_at, task, result, message
//	P:ch:{cid}:tl     LIST  timeline entries (JSON), in order
//	P:{tasks}:q:<pid> LIST  a project's channel ids waiting for a worker, FIFO
//	P:{tasks}:rr      LIST  the ring: each project with waiting tasks, once
//	P:{tasks}:n       STRING tasks waiting in the project lists (all projects)
//	P:{tasks}:lease   ZSET  "<pid>/<cid>" → lease deadline (unix ms)
//	P:{tasks}:rl:<pid> STRING a project's submission rate (GCRA arrival time, µs)
//	P:{tasks}:ready   LIST  the single-queue layout's list, drained after an
//	                        upgrade as the ring entry "~legacy" (its leases
//	                        are bare channel ids)
//	P:idem:{pid}:<h>  STRING first answer to an Idempotency-Key (24 h)
package channels
