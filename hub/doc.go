// Package hub is riverhub's realtime side: browsers' WebSockets speaking the
// Phoenix Channels v2 JSON protocol (so the official `phoenix` npm client
// works unchanged), rooms keyed by channel_id, each channel's message
// history, and the Redis pub/sub fan-out that lets any node publish to
// sockets held by any other.
//
// # What it owns
//
//   - The socket endpoint (ServeHTTP, mounted at GET /socket/websocket). The
//     ws token (query "token", or the phoenix client's authToken
//     subprotocol) is checked before the upgrade: missing, invalid or expired
//     is HTTP 403, and so is a token used before when Options.SingleUseTokens
//     is set (its jti is recorded in Redis, P:wstoken:used:<jti>, until it
//     expires); more than MaxConns sockets, or a node shutting down, is 503;
//     a vsn other than 2.x is 400. Any Origin is accepted: the token is the
//     credential, never a cookie. Inbound frames are limited to MaxFrameBytes
//     (larger: close 1009). Compression is not negotiated.
//   - The protocol. Frames are [join_ref, ref, topic, event, payload]; refs
//     are strings or null, topic and event non-empty strings, the payload an
//     object. Anything else closes that socket alone: 1007 for a text frame
//     that is not such an array, 1003 for a binary frame. Events:
//     phx_join (reply ok or error {reason}), phx_leave (reply ok, then
//     phx_close, for the join it names: the topic as spelled at the join
//     and, if given, its join_ref; ok and nothing else for any other, as
//     Phoenix), heartbeat on any topic (reply ok), anything else: error
//     "unmatched topic" on a topic not joined, "unknown_event" on a joined
//     one.
//   - Join checks, in order: the token (verified when the socket opened)
//     has not expired since (token_expired); the topic is ai_response:{project_id}:{channel_id} or
//     ai_response:{channel_id} (else invalid_channel_format); the ids are
//     canonical UUIDs (invalid_project_uuid, invalid_channel_uuid); the
//     project is the token's (unauthorized_project_access); the channel is
//     the token's (unauthorized_channel_access); ids compare
//     case-insensitively; fewer than MaxChannelsPerSocket channels are
//     joined (too_many_channels). "unavailable" means Redis did not answer
//     within 5 s; the phoenix client rejoins by itself.
//   - One join per channel per socket. Topics compare in canonical form
//     (lower case; the short form is the long form with the token's
//     project), so a join of a channel already joined, under any spelling,
//     replaces the old join: the old join's phx_close
//     [join_ref, join_ref, old_topic, "phx_close", {}] goes out just before
//     the new join's reply, and each live message goes to a socket once.
//   - Pushes: event "response", join_ref = the join's join_ref (its ref if
//     the client sent none), ref = the message's seq as a decimal string
//     ("1", "2", ...), payload = the published message byte
//     for byte. A streamed answer's pieces (AppendStreamIn) are pushed
//     the same way as events "chunk" and "chunk_reset", numbered with the
//     messages.
//   - The end of a channel. A message whose status is success, completed or
//     error is its channel's last (isFinal). Each node, having pushed it to
//     a join, ends the join with phx_close ([join_ref, join_ref, topic,
//     "phx_close", {}], what a Phoenix server sends when a channel process
//     stops), queued in the same batch so it cannot overtake the message.
//     A join of an ended channel gets its reply, the history, then
//     phx_close.
//   - Idle sockets. A socket with no join for IdleTimeout (since it opened
//     or its last join ended; a join counts from its arrival) is closed
//     with 1000 "idle: no channel joined", whatever heartbeats it sends.
//   - Each channel's history and the fan-out between nodes, in Redis.
//
// # Redis
//
// P is Options.Prefix; {cid} is the hash tag of the channel's record in
// package channels, so the publish script touches one Cluster slot.
//
//	P:ch:{cid}:hist  LIST    entries {"seq":N,"payload":<message>}, the last HistoryMax (none for a
//	                         final message that is the channel's first and is its record's message),
//	                         and a streamed answer's {"seq":N,"event":E,"payload":…} until the final message;
//	                         after the final message kept HotWindow, then rebuilt on join
//	                         from the channel's record (Options.Record: room_seq, message)
//	P:room:{cid}     pub/sub channel carrying each new entry (a shard channel on a Cluster)
//
// Publish runs one script: if an entry of the history already carries
// exactly this message it does nothing (a publisher re-run after a crash
// does not repeat itself, even after later messages); else RPUSH the entry
// numbered one past the history's last (no counter of its own: the history
// is never emptied, only trimmed from its head and expired whole), LTRIM,
// EXPIRE to Retention, PUBLISH (SPUBLISH on a Cluster),
// and it returns the new entry's seq (0 for a repeat). PublishIn queues the same script into the
// caller's pipeline and reports that seq once the pipeline has run; the
// hub writes nothing of its callers' (channels logs its own timeline).
// A final message that is its room's only one (a standard task's answer,
// not streamed) is written with room_seq 1 into the record by the
// completion that decides it; PublishLoneIn then sends it as one bare
// PUBLISH (SPUBLISH), no script, no history. The script, given such a
// message again (a publish redone after a crash), sends it again rather
// than nothing: a socket still waiting gets it, and one that had it has
// ended its join there. Package channels runs the same script as a Lua
// function (PublishFunc, with FinalPublishArgs) inside the script that
// settles an event-driven channel by its callback, so that the final
// message goes out with the write that decides it.
// A node SUBSCRIBEs to P:room:{cid} only while it has a socket joined to
// cid and UNSUBSCRIBEs when the room empties; on a single Redis over one
// pub/sub connection, joins and leaves that arrive together sharing one
// command.
//
// # Pub/sub on a Redis Cluster
//
// A Cluster sends each PUBLISH over its bus to every node, masters and
// replicas, whoever subscribes where, so the cost of every message grows
// with the Cluster. There the hub uses sharded pub/sub (Redis 7): the
// script SPUBLISHes, which only the slot's master (where the subscribers
// are) and its replicas see; the room channel carries the keys' hash tag,
// so the script stays on one slot. A node SSUBSCRIBEs each room on the
// master that owns its slot, one command per room (one may not span
// slots), over one pub/sub connection per such master (pubsub.go says why
// the hub, not go-redis, re-establishes them). When a slot leaves a master
// (a failover, a migration), the master ends its shard channels'
// subscriptions (sunsubscribe); when a connection fails, a PING stays
// unanswered (one is sent after 3 s of silence, and fails it 3 s later)
// or Redis refuses a command (MOVED, CLUSTERDOWN), the node drops that
// connection. Either way the rooms concerned are subscribed again on their
// slot's current master, tried again after 50 ms, doubling up to 1 s, while
// that master is not known or does not answer (a failover takes the
// Cluster's node timeout and an election), and re-read from history once
// Redis confirms (Guarantees). BENCHMARKS.md has the bus traffic before
// and after.
//
// On a single Redis (or a Sentinel group) the hub keeps PUBLISH and
// SUBSCRIBE: with one server sharded pub/sub saves nothing, and the classic
// commands also work on Redis before 7 and on the embedded Redis of
// development mode.
//
// The two are separate namespaces: during a rolling upgrade of a Cluster
// deployment from a version that published classically, sockets on nodes
// of one version do not see live messages published by nodes of the other
// (they get them from the history when they next join).
//
// # Concurrency contract
//
// Publish and ServeHTTP may be called from any goroutine, before or after
// Start (sockets can only complete a join once Start has run). Each socket
// has one reader goroutine (started by the handler, which returns once the
// socket is open: it decodes frames and handles joins, which wait on Redis
// for at most 5 s) and, only while it has frames to write or its close to
// send, one writer goroutine, the only one that writes to the connection,
// each frame within WriteTimeout. The handshake's 4 KiB buffers are
// swapped for smaller ones (buffers.go): an idle socket is one goroutine,
// a few small buffers and its rooms.
// One pub/sub goroutine subscribes rooms and fans messages out; each
// pub/sub connection has a reader goroutine that hands it what arrives,
// in order. Nothing
// that fans out ever waits on a socket: frames are handed to the socket's
// bounded queue (SendQueue messages; a join's reply plus history counts as
// one) and a full queue closes that socket with 1008 "client too slow". A
// socket that sends nothing for HeartbeatTimeout is closed with 1008
// "heartbeat timeout". A socket's joins (subs) are guarded by its own
// mutex: the reader adds and replaces them, the pub/sub loop removes those
// that a final message ends (after releasing Hub.mu), and the idle timer
// reads them. Shutdown closes every socket with 1001 "server
// shutting down", so clients reconnect to another node, then stops the
// pub/sub loop; it is safe twice.
//
// # Guarantees
//
//   - Order: a socket receives a channel's messages in publish order (seq
//     order), each at most once per join, the final one followed by
//     phx_close and nothing more.
//   - No-miss join: a join subscribes first, waits until Redis confirms the
//     subscription, then reads the history; the reply, every history entry and
//     then the live messages follow in order, live messages with a seq at or
//     below the last one sent being dropped. Nothing published after the
//     subscription is missed; nothing is sent twice.
//   - Pub/sub interruptions: when a room's subscription is re-established
//     (its connection failed, or its Cluster slot moved to another master),
//     Redis confirms it again and the node re-reads the room's history
//     before any later message, delivering what each socket has not had. If the history cannot be read (three tries), the rooms'
//     sockets are closed with 1013 so that their clients rejoin: a gap is
//     never silent.
//   - Exactly the missed messages across reconnects: a join whose payload
//     is {"last_seq": N} (the ref of the last push the client has) replays
//     only the messages after N. A join without it replays the channel's
//     whole history from the start (the official phoenix client rejoins
//     with the params it was given; an app passes a function as the
//     channel's params to send its last seq on each rejoin), and the client
//     dedupes, e.g. by the message's status. Only the last HistoryMax
//     messages are kept, and a channel's keys expire Retention after its
//     last message.
package hub
