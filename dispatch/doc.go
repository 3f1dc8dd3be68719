// Package dispatch delivers webhooks: one delivery per (event, channel,
// endpoint), signed, sent, retried on the schedule and dead-lettered after
// the last attempt, where an operator can inspect, replay or discard it.
//
// Guarantees: at-least-once. A delivery's id is its webhook-id, the same on
// every attempt and replay, so receivers can dedupe. Enqueue is idempotent
// (the id is derived from the event type, channel and endpoint), so a
// completion that is finished twice creates one delivery.
//
// Scheduling lives in Redis sorted sets. Due deliveries wait in their
// project's set scored by due time; a node claims a batch in one script,
// round robin across the projects with something due, that moves them
// into a lease set (scored by lease deadline, longer than the attempt
// timeout) and stamps each with a claim token. Recording an attempt checks
// the token, so an attempt is recorded once even if a lease ran out and
// another node sent it again. A lease that runs out (the node died
// mid-attempt) makes the delivery due again. Idle nodes sleep until the
// earliest due time, at most 100 ms. A node that schedules deliveries due
// sooner than that (an enqueue, a replay, a delivery put back or retried
// soon) publishes, with the writes, a nudge carrying the earliest due time,
// and every node's claimer wakes for it; without one (a nudge lost while
// a node reconnects, deliveries a lease reclaim makes due, which the
// reclaiming node claims itself) the 100 ms look finds them. Attempt
// outcomes and their log entries are written in batches, one round trip
// per batch.
//
// The engine keeps, per channel, a log of what it did with the channel's
// events (attempts, dead letters, cancellations, pauses, replays): its own
// list, which channels merges into the channel's timeline when it is read
// (ChannelLog). The engine depends on nothing of channels.
//
// Cancellation: when an event-driven channel is settled (its callback
// came, or its deadline passed), the retries of its task.ai_generated
// deliveries are cancelled (Cancel): a waiting delivery stops at once, one
// being attempted ends with that attempt; status "cancelled".
//
// Isolation: a node runs at most Options.Concurrency attempts at once and
// at most Options.PerEndpoint against one healthy endpoint (fewer against
// a failing one: the limit adapts, see health.go); a delivery whose
// endpoint is busy goes back to the schedule for a moment without an
// attempt, so one slow endpoint cannot starve the others. An endpoint
// that keeps failing opens its circuit, shared by all nodes: its
// deliveries wait in its waiting set, without attempts, while one probe
// at a time tests it (health.go, claim.lua, record.lua).
//
// Keys (P = prefix; every key but the channel logs carries the {dq} hash
// tag, so each script runs on one Cluster slot):
//
//	P:{dq}:due:<pid>           ZSET a project's deliveries → due time (unix ms)
//	P:{dq}:projects            ZSET project → earliest due time of its set (a lower bound)
//	P:{dq}:due                 ZSET the single schedule of earlier versions, drained into the above
//	P:{dq}:lease               ZSET delivery id → lease deadline (unix ms)
//	P:{dq}:d:<id>              HASH the delivery (project, endpoint, channel, event, body, counters, status)
//	P:{dq}:d:<id>:att          LIST attempts (JSON), in order
//	P:{dq}:ep:<whid>           HASH endpoint health: state (closed, open, probing), fails, failing_since, open_until, probe, recent, epoch, reason
//	P:{dq}:ep:<whid>:wait      ZSET deliveries waiting for the endpoint's circuit → their due time
//	P:{dq}:epwake              ZSET endpoint id → when its waiting deliveries need attention (probe, release)
//	P:{dq}:unhealthy           HASH endpoint id → degraded | open | probing (metrics)
//	P:{dq}:dlq:<pid>           ZSET dead deliveries of a project → dead time
//	P:{dq}:dlq:<pid>:<whid>    ZSET the same, per endpoint
//	P:dl:{cid}                 LIST a channel's delivery log (JSON entries, oldest first), on the channel's slot
//	P:{dq}:nudge               pub/sub channel: the earliest due time (unix ms) of entries just scheduled to be due within 100 ms
//
// # Concurrency contract
//
// New starts one goroutine, the recorder (recordLoop). Attempt outcomes,
// deliveries put back without an attempt, and delivery-log notes are
// queued to it (4096 at most: an attempt waits when it is that far
// behind); it writes what has piled up, up to 256, in one round trip,
// retrying through a Redis outage for up to a lease, and acts on the
// endpoint health changes the writes report (an opened circuit gets back
// the deliveries parked for it). Start, called once, starts three more:
//
//   - the claimer (claimLoop), which claims as many due deliveries as this
//     node has free slots for (Concurrency, shared fairly across projects:
//     admit) and attempts each on a goroutine of its own. An attempt whose
//     endpoint is at its limit on this node parks (up to PerEndpoint per
//     endpoint) and is sent by the goroutine of the next attempt to that
//     endpoint to end (handOff), or goes back to the schedule. The claimer
//     sleeps until the earliest due time, at most 100 ms; an Enqueue, a
//     retry scheduled here, an attempt that ends or a nudge wakes it
//     early.
//   - the reclaimer (reclaimLoop), every second: it moves deliveries of the
//     earlier versions' single schedule into the projects' schedules, and
//     makes due again the deliveries whose lease ran out on any node.
//   - the listener (listen), which holds the engine's one subscription
//     (a go-redis PubSub, on a connection of its own, made again by
//     go-redis after a lost connection) to the nudge channel and wakes
//     the claimer for each nudge, at its due time.
//
// Every exported method but Start, StopClaiming and Shutdown (Enqueue,
// SendTest, Cancel, ChannelLog, Get, DeadLetters, Replay, ReplayAll,
// Discard, Stats, Health, Restart) may be called from any goroutine,
// concurrently, before Start as after Shutdown: each talks to Redis and at
// most wakes the claimers (this node's, and the others' by a nudge). The
// subscription is set by Start and closed by StopClaiming, which the
// caller orders (Start first). The scheduling state in memory (attempts in
// flight by endpoint and project, parked and put-off deliveries, the
// claimer's wake time) is guarded by Engine.mu; the endpoints' adaptive
// limits by the limiter's own mutex.
//
// StopClaiming closes the claimer and the reclaimer, closes the
// subscription (which ends the listener) and waits for the three to
// return; attempts in flight go on, and hand their endpoint on to parked
// deliveries. Shutdown calls StopClaiming, then, in order: waits for the
// attempts until ctx ends, and if it ends first cancels them (their
// requests are cut off; they go back to the schedule with no attempt
// counted) and waits for them to return; puts the deliveries still parked
// for a busy endpoint back on the schedule; and last closes the recorder's
// queue and waits until everything queued is written. Both are safe to
// call twice. The channels service is shut down first (internal/app), so
// tasks that finish meanwhile still enqueue their deliveries.
package dispatch
