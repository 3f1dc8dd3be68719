// Package channels owns the life of one AI request, a "channel": its record
// in Redis, the state machine, the task queue and its workers, the provider
// call with fallbacks, and the audit timeline.
//
// States: pending → generating → success | error. A channel's keys share the
// hash tag {channel_id}, so every change to one channel is one Lua script on
// one Cluster slot. Records and timelines expire after the retention.
//
// The queue is at-least-once. Submission appends the channel id to a ready
// list; a node's claimer moves a batch of ids into a lease sorted set
// (scored by lease deadline) in one script, and heartbeats extend the
// leases of the tasks it runs. If a node dies, its leases run out and any
// node puts the tasks back at the head of the ready list. A task run twice
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
//	P:{tasks}:ready   LIST  channel ids waiting for a worker
//	P:{tasks}:lease   ZSET  channel id → lease deadline (unix ms)
//	P:idem:{pid}:<h>  STRING first answer to an Idempotency-Key (24 h)
package channels
