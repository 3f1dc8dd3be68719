// Package channels owns the life of one AI request, a "channel": its record
// in Redis, the state machine, the task queue and its workers, the provider
// call with fallbacks, and the audit timeline.
//
// # States
//
// The Status constants, and the scripts that move a channel between them:
//
//	pending ──start──▶ generating ──complete──▶ success | error
//	                        │
//	                        └──complete──▶ ai_generated ──callback {data}──▶ completed
//	                                       (event-driven) ──callback {error}─▶ error
//	                                                      ──deadline───────▶ error (callback_timeout)
//	                                                      (playground: ────▶ completed, simulated)
//
// A synchronous run (RunSync) is recorded as generating. A task whose
// lease ran out goes back to its queue still generating, and start.lua
// runs it again (at most five runs, then it is failed). Once a channel
// has left pending and generating, complete.lua changes nothing: a second
// run's completion adopts the first's outcome. The event-driven states
// are callback.go's. A channel's keys share the hash tag {channel_id}, so
// every change to one channel is one Lua script on one Cluster slot.
// Records and timelines expire after the retention (an awaiting channel's,
// the retention after its callback deadline).
//
// # Queue
//
// The queue is at-least-once and fair across projects. Submission appends
// the channel id to its project's ready list (and the project to a ring of
// projects with ready tasks), unless the project's or the deployment's
// queue is full or the project is over its rate (a GCRA timed by Redis);
// a node's claimer moves a batch of tasks into a lease sorted set (scored
// by lease deadline) in one script, taking one task per project per turn
// round the ring, and heartbeats extend the leases of the tasks it runs.
// On one Redis with one partition, a submission to a node that claims
// (between Start and StopClaiming) and has a worker slot free takes its
// task itself when no other task is ready (the take, submit.lua): the
// submit script leases it to this node and starts it, instead of queueing
// it, and the node runs it as soon as the submission is answered, with no
// claim round trip and no wait for the claimer. A take overtakes no task:
// with anything ready, the submission queues (and a node asks for takes
// only while its last claim left nothing ready). A take's round trip sent
// again (its answer lost) is answered with the start again, while the
// lease is untouched; a take whose submission failed is taken back like a
// pending submission (unrecord.lua), the lease with it. When that fails
// too (Redis not answering), the node asks Redis again until it answers
// (settleTake, which holds the slot and counts as a running task;
// settletake.lua creates nothing): a take that ran, its lease untouched, is
// leased again and runs here then; without a record the channel is marked
// withdrawn, so the submission, should Redis run it later, writes nothing.
// A take still unsettled when Shutdown cancels the running tasks, or
// answered after that cancellation (Shutdown waits for that round trip,
// bounded by the Redis timeouts), or settled with a second or less of its
// lease left, or answered with an error Redis will give again, leaves its
// task leased to nobody until the lease runs out and the reclaimer puts
// it back: delayed, not lost.
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
// # Concurrency contract
//
// New starts two goroutines, the batchers: the ack batcher (ackLoop), to
// which finished tasks' lease releases go, with their room publishes and
// log-index moves, and which sends what has piled up in one round trip;
// and the settler (settleLoop), to which answered callbacks hand their
// settlement (final message, unless callback.lua published it with the
// outcome: ScriptPublisher; index move, webhook retries cancelled,
// deadline entry removed), sent the same way. On one Redis a settlement's
// last steps (its deadline entry removed) are held for the next one's round
// trip, or sent by a timer's goroutine after 10 ms (tidying); Shutdown
// sends what is held, after the batchers. Submissions, completions and
// callbacks also share round trips with concurrent ones (rdb.Shared), which
// Shutdown closes last. Start, called once,
// runs a first reclaim on the caller's goroutine, then starts five more:
//
//   - the claimer (claimLoop), which leases up to a batch of tasks for the
//     free worker slots (Options.Workers, shared with the submissions'
//     takes: reserve) and runs each claimed task on a
//     goroutine of its own (one kept from an earlier task, internal/gopool,
//     so its stack is already grown); a task that waits for a provider gives its
//     slot back (at most Options.MaxWaiting tasks at once), so up to
//     Workers + MaxWaiting tasks may be running;
//   - the heartbeat, every Lease/3, extending the leases of the tasks this
//     node runs;
//   - the reclaimer, every Lease/4 (at least 50 ms), putting back tasks
//     whose lease ran out on any node;
//   - the deadline poller, every 100 ms and at once when this node sets a
//     callback deadline less than that away, settling the due deadlines it
//     claims (any node's);
//   - the index removals, every second: on a Cluster, a submission whose
//     outcome is unknown (its answer was lost), or a refused one whose log
//     index entries could not be taken out at once, and anywhere a sync
//     run whose record failed, is noted in Redis
//     (unindexLater), and a second later any node's round takes the
//     entries out if the channel's record is not in Redis; the notes this
//     node could not write yet are written first. A channel moved to the
//     archive is noted the same way, due a few leases after its move
//     (sweepMoved), and taken out of every index a late write could
//     list it in.
//
// Start is called once, before StopClaiming and Shutdown. Every other
// exported method may be called from any goroutine, concurrently, before
// Start as after it (Submit queues, unless its node, claiming, takes the
// task itself: see Queue). RunSync runs its task on the caller's goroutine and its side
// effects on one of its own, which Shutdown waits for like a claimed
// task. A RunSync whose provider answers after Shutdown has cancelled the
// running tasks records nothing and leaves its task to its lease (another
// node runs it again), which is why the server drains its requests before
// it calls Shutdown. Callback and the deadline poller may race for one
// channel: the scripts decide (callback.go). Internal state is guarded by
// mu (the tasks in flight and their lease members, the closing flag) and
// ackMu (sends to the batchers against their closing).
//
// StopClaiming closes the claimer and waits for it to return; running
// tasks go on, and so do the heartbeat, the reclaimer and the deadline
// poller. Shutdown calls StopClaiming, then, in order: stops RunSync from
// starting side-effect goroutines (they run on the caller's instead);
// waits for running tasks until ctx ends, and if it ends first, notes the
// leases of the tasks still running and cancels them (their provider
// calls and Redis commands), waiting for them to return; stops the
// heartbeat, the reclaimer and the deadline poller (heartbeats ran until
// no task ran, so no lease ran out under a running task); lets the
// batchers send what they hold and stop (later acks and settlements go
// straight to Redis);
// and last gives the noted leases back, at the head of their projects'
// queues, so another node runs those tasks at once rather than after
// their leases run out. Both are safe to call twice, and without Start.
//
// # Keys
//
// P is the configured prefix.
//
//	P:ch:{cid}        HASH  project_id, workflow, event_name, status, created_at, updated_at, task,
//	                        metadata, runs, result, message; event-driven: deadline, hook or sim,
//	                        due_status, due_msg, cb_parts (the pieces of a callback's final
//	                        message that the generation fixes: callbackParts), and announced
//	                        (when, ms) once the generation's messages reached the room; once
//	                        settled outcome, and cb_fp if by a callback;
//	                        room_seq, the final message's seq in the room (written by the hub, or
//	                        by the completion for an answer alone in its room, LonePublisher);
//	                        tl, the timeline: channels' own entries (JSON), oldest first, one
//	                        per line, appended by the scripts that change the record (tl.lua;
//	                        the dispatcher keeps its entries in its own log, merged in when a
//	                        timeline is read, Service.Timeline);
//	                        kept, set by a repeat of its Idempotency-Key that found it standing
//	                        once the reservation ran out (idemsettle.lua): a take-back of its
//	                        submission landing after leaves it;
//	                        a settled channel drops its live fields (liveFields: task, result,
//	                        runs, hook, sim, due_*, deadline, announced, cb_parts, kept) with the
//	                        step that settles it
//	P:ch:{cid}:tl     LIST  timeline entries of earlier versions, and of a channel whose record
//	                        has left Redis for the archive (a late note); read before the
//	                        record's
//	P:ch:{cid}:w      STRING the withdrawn mark of a submission taken back, or found
//	                        missing by a repeat of its Idempotency-Key past the reservation
//	                        (10 min): a submission Redis runs after it writes nothing
//	P:{tasks}:q:<pid> LIST  a project's channel ids waiting for a worker, FIFO
//	P:{tasks}:rr      LIST  the ring: each project with waiting tasks, once
//	P:{tasks}:n       STRING tasks waiting in the project lists (all projects)
//	P:{tasks}:lease   ZSET  "<pid>/<cid>" → lease deadline (unix ms); on a
//	                        Cluster also a submission's intent, until queued
//	P:{tasks}:claim:<token> LIST what one claim leased, so that the same
//	                        claim sent again returns it (for a lease)
//	P:{tasks}:rl:<pid> STRING a project's submission rate (GCRA arrival time, µs)
//	P:{tasks}:ready   LIST  the single-queue layout's list, drained after an
//	                        upgrade as the ring entry "~legacy" (its leases
//	                        are bare channel ids)
//	P:{cb}:due        ZSET  callback deadlines (callback.go)
//	P:rl:{pid}        STRING a project's rate with several partitions
//
// With Options.Partitions = N > 1 the {tasks} and {cb} keys exist once per
// partition: partition 0 is as listed, partition k > 0 has the tag
// {tasks.<s>} / {cb.<s>} of rdb.NewPartitions. A task and its deadline are
// in the partition of their channel id (queue.go, docs/layout.md).
//
//	P:logs:{pid}...   ZSET  the request logs' indexes (logs.go)
//	P:unindex, P:unindex:moved ZSET notes of channels to take out of the
//	                        indexes if their record is not in Redis (logs.go)
//	P:ch:{cid}:z      STRING a folded channel's document (fold.go)
//	P:{fold}:due      ZSET  settled channels → end of their hot window (fold.go)
//	P:idem:{pid}:<h>  STRING first answer to an Idempotency-Key (24 h);
//	                        <h>:lease, while its request is being accepted
package channels
