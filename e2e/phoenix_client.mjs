#!/usr/bin/env node
// A browser stand-in: the official phoenix client joins one riverhub channel
// and prints every "response" payload it receives, one JSON line each on
// stdout, exactly as received (replays included; deduping is the caller's
// job). Progress goes to stderr as JSON lines: {"event":"joined","joins":N},
// {"event":"dropped"}, {"event":"join_error","reason":...}, {"event":"done"}.
//
//   node phoenix_client.mjs --url ws://127.0.0.1:8080/socket --token T \
//        --topic ai_response:P:C [--count N] [--timeout-ms MS] \
//        [--drop-after K] [--reconnect-ms MS] [--unique-key KEY]
//
// --url is the socket endpoint without /websocket (the client appends it);
// url, token and topic may also come from RIVERHUB_WS_URL, RIVERHUB_WS_TOKEN
// and RIVERHUB_WS_TOPIC.
// --count N       exit 0 once N distinct payloads have arrived (distinct by
//                 the value of --unique-key if given, else by their JSON text)
// --timeout-ms    exit 2 if that has not happened in time (default 15000)
// --drop-after K  after the K-th payload, drop the connection once, as a
//                 network failure would (the client does not know it is
//                 coming: it reconnects and rejoins on its own)
// --reconnect-ms  the client's reconnect delay (default 1000)
// --resume        rejoin with {"last_seq": <the ref of the last push>}, as an
//                 app that wants exactly the messages it missed does (the
//                 channel's params are a function, read at every join)
//
// Install once: cd e2e && npm ci
import { Socket } from "phoenix";
import WebSocket from "ws";
import { args } from "./args.mjs";


const opt = args(process.argv.slice(2));
const url = opt.url ?? process.env.RIVERHUB_WS_URL;
const token = opt.token ?? process.env.RIVERHUB_WS_TOKEN;
const topic = opt.topic ?? process.env.RIVERHUB_WS_TOPIC;
if (!url || !token || !topic) {
  console.error("usage: phoenix_client.mjs --url WS_URL --token TOKEN --topic TOPIC [options]");
  process.exit(64);
}
const count = opt.count ? Number(opt.count) : Infinity;
const timeoutMs = Number(opt["timeout-ms"] ?? 15000);
const dropAfter = opt["drop-after"] ? Number(opt["drop-after"]) : 0;
const reconnectMs = Number(opt["reconnect-ms"] ?? 1000);
const uniqueKey = opt["unique-key"];
const resume = opt.resume === "true" || opt.resume === "1";

const status = (o) => process.stderr.write(JSON.stringify(o) + "\n");

// Node 20 has no global WebSocket: hand the client the ws package's.
const socket = new Socket(url, {
  transport: WebSocket,
  params: { token },
  reconnectAfterMs: () => reconnectMs,
  rejoinAfterMs: () => 200,
});
socket.connect();

// Each push's ref is its message's seq; with --resume a rejoin asks only
// for what came after the last one received.
let lastSeq = 0;
const channel = socket.channel(topic, () => (resume && lastSeq > 0 ? { last_seq: lastSeq } : {}));
const seen = new Set();
let received = 0;
let joins = 0;
let dropped = false;

function finish(code) {
  status({ event: code === 0 ? "done" : "timeout", received, distinct: seen.size });
  socket.disconnect(() => process.exit(code), 1000, "done");
  setTimeout(() => process.exit(code), 500).unref();
}

channel.on("response", (payload, ref) => {
  received++;
  if (ref) lastSeq = Number(ref);
  process.stdout.write(JSON.stringify(payload) + "\n");
  seen.add(uniqueKey ? JSON.stringify(payload?.[uniqueKey]) : JSON.stringify(payload));
  if (dropAfter && !dropped && received >= dropAfter) {
    dropped = true;
    // Close the transport under the client's feet: to the phoenix client
    // this is a lost connection, which it reconnects and rejoins.
    socket.conn.close(4000, "test drop");
    status({ event: "dropped" });
  }
  if (seen.size >= count) finish(0);
});

channel
  .join()
  .receive("ok", () => status({ event: "joined", joins: ++joins }))
  .receive("error", (resp) => status({ event: "join_error", reason: resp?.reason }))
  .receive("timeout", () => status({ event: "join_timeout" }));

setTimeout(() => finish(2), timeoutMs).unref();
// Keep the process alive until finish (the timer above is unref'd so that a
// clean finish is not held up by it).
const keepAlive = setInterval(() => {}, 1 << 30);
process.on("exit", () => clearInterval(keepAlive));
