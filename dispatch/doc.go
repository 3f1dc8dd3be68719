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
// and every node's claimer wakes for it (an enqueue only when its own node
// does not claim or has no free slot: else that node takes them at once,
// and waking every other node per task would be work for nothing); Enqueue
// shares its round trips with concurrent ones (rdb.Shared). Without a
// nudge (one lost while a node reconnects, deliveries a lease reclaim
// makes due, which the reclaiming node claims itself) the 100 ms look
// finds them. A delivery enqueued on a node with room for it (a free slot
// within its project's share, its endpoint not saturated there) skips the
// due set: enqueue.lua claims it in the same script, straight into the
// lease set with a token of the enqueueing node, unless its endpoint's
// circuit is open, and the node attempts it once the round trip answers,
// with no claim round trip and no wait for the claimer (Engine.take).
// A completion on one Redis sends its task.completed deliveries in its own
// round trip, after the script that records it (Prepare, Enqueueing.In,
// Done): enqueue.lua then writes them only while the channel's record
// holds their body as its message, so a completion that lost to another
// run's writes none, and when the guard kept any from being written, its
// caller enqueues the winning outcome after (Enqueue).
// Attempt outcomes and their log entries are written in batches, one round
// trip per batch.
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
// Partitions: the schedule is split into Options.Partitions partitions
// (16 on a Redis Cluster by default, else 1), each under a hash tag of its
// own, T below: {dq} for partition 0 (the one tag of earlier versions, so a
// single-partition deployment's keys are exactly theirs), {dq.<s>} for the
// others, spread over the Cluster's slot ranges (rdb.Partitions). A
// delivery's partition is its endpoint's (rdb.Partitions.Of of the endpoint
// id), so an endpoint's health, waiting set, deliveries and dead letters
// share a slot, and every script that decides a circuit together with
// deliveries stays atomic. Keys that are per project or global (the
// projects' due sets, the lease set, the dead-letter sets, the statistics)
// have a copy per partition. The claimer claims from the partitions in
// rotation, in one round trip for all those due (below); the reclaimer
// reclaims every partition's leases in one round trip; a lookup by
// delivery id alone (Get, Replay, Discard) reads every partition, in one
// round trip; listing dead letters merges the partitions' sets.
//
// The trade-off: one endpoint's deliveries live in one partition, so a
// deployment whose whole load goes to a single endpoint (or to a few) does
// not spread its delivery schedule over a Cluster's masters; many endpoints
// do.
//
// Upgrading from one partition to several: the deliveries an earlier
// version (or a single-partition deployment) wrote are in partition 0
// whatever their endpoint, and stay there: a claim carries the partition it
// claimed a delivery from through its attempt to its record, retry, dead
// letter or replay, and Cancel looks in partition 0 too. An endpoint's
// circuit is per partition meanwhile: those old deliveries go by partition
// 0's copy of the endpoint's health, the new ones by its own partition's
// (Health and the console show the latter), until the old ones are done.
// The number of partitions may only go from 1 up, once: other changes move
// endpoints to partitions whose tags differ, and deliveries left in the
// old ones (but partition 0) would not be claimed.
//
// Keys (P = prefix; T a partition's tag; every key but the channel logs
// and the nudge channel carries one, so each script runs on one Cluster
// slot):
//
//	P:T:due:<pid>              ZSET a project's deliveries → due time (unix ms)
//	P:T:projects               ZSET project → earliest due time of its set (a lower bound)
//	P:{dq}:due                 ZSET the single schedule of earlier versions, drained into partition 0's sets
//	P:T:lease                  ZSET delivery id → lease deadline (unix ms)
//	P:T:claim:<token>          LIST the ids a claim took, kept a lease (the same claim sent again returns them)
//	P:T:d:<id>                 HASH the delivery (project, endpoint, channel, event, body, counters, status);
//	                           once delivered or cancelled kept Options.HotWindow (its attempts stay in
//	                           the channel's delivery log), once dead DLQRetention
//	P:T:d:<id>:att             LIST attempts (JSON), in order; expires with the delivery
//	P:T:ep:<whid>              HASH endpoint health: state (closed, open, probing), fails, failing_since, open_until, probe, recent, epoch, reason
//	P:T:ep:<whid>:wait         ZSET deliveries waiting for the endpoint's circuit → their due time
//	P:T:epwake                 ZSET endpoint id → when its waiting deliveries need attention (probe, release)
//	P:T:unhealthy              HASH endpoint id → degraded | open | probing (metrics)
//	P:T:dlq:<pid>              ZSET dead deliveries of a project → dead time
//	P:T:dlq:<pid>:<whid>       ZSET the same, per endpoint
//	P:T:stats:<pid>:<minute>   HASH attempts by outcome and duration (stats.go)
//	P:dl:{cid}                 LIST a channel's delivery log (JSON entries, oldest first), on the channel's slot
//	P:{dq}:nudge               pub/sub channel: the earliest due time (unix ms) of entries just scheduled to be due within 100 ms, and, with several partitions, which ("<ms>:<k>,<k>…")
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
//     admit) and attempts each on a goroutine of its own (reused,
//     internal/gopool). A claim round
//     sends one claim script to each partition due for a look, in one
//     pipeline, the slots split evenly among them, starting from a
//     partition that moves on by one each round; a partition is due for a
//     look at the earliest due time its last claim reported (at most 100 ms
//     on), at once when it filled its part, or when a poke or a nudge names
//     it. A claim that skipped projects (over their share or cap) leaves it
//     100 ms on and holds that due time aside: when admit no longer skips a
//     project seen due there, the next claim looks at it (release, a
//     claim's worth of partitions at a time). An attempt whose
//     endpoint is at its limit on this node parks (up to PerEndpoint per
//     endpoint) and is sent by the goroutine of the next attempt to that
//     endpoint to end (handOff), or goes back to the schedule, to be
//     brought forward when the endpoint has room. The claimer
//     sleeps until the earliest due time of any partition, at most 100 ms;
//     an Enqueue, a retry scheduled here, an attempt that ends or a nudge
//     wakes it early.
//   - the reclaimer (reclaimLoop), every second: it moves deliveries of the
//     earlier versions' single schedule into the projects' schedules, and
//     makes due again the deliveries whose lease ran out on any node, in
//     every partition.
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
// claimer's wake time and the partitions' look times) is guarded by
// Engine.mu; the endpoints' adaptive
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
