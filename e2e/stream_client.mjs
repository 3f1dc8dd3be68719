#!/usr/bin/env node
// A chat page stand-in: the official phoenix client joins one riverhub
// channel and listens for a streamed answer (events "chunk" and
// "chunk_reset") and the messages ("response"). Every push is printed as
// one JSON line on stdout, exactly as received:
//   {"event":"chunk","ref":"7","payload":{...}}
// Progress goes to stderr as JSON lines: {"event":"joined","joins":N},
// {"event":"dropped"}, {"event":"done","text":T} once a final message
// (status success, completed or error) has arrived (T: the page's text,
// the chunks appended since the last chunk_reset), {"event":"timeout"}.
//
//   node stream_client.mjs --url ws://127.0.0.1:8080/socket --token T \
//        --topic ai_response:P:C [--drop-after K] [--resume] [--timeout-ms MS]
//
// --drop-after K  after the K-th chunk, drop the connection once, as a
//                 network failure would (the client reconnects and rejoins
//                 on its own, after --reconnect-ms, default 300)
// --resume        rejoin with {"last_seq": <the ref of the last push>}
//
// Install once: cd e2e && npm ci
import { Socket } from "phoenix";
import WebSocket from "ws";
import { args } from "./args.mjs";

const opt = args(process.argv.slice(2), ["resume"]);
if (!opt.url || !opt.token || !opt.topic) {
  console.error("usage: stream_client.mjs --url WS_URL --token TOKEN --topic TOPIC [options]");
  process.exit(64);
}
const dropAfter = Number(opt["drop-after"] ?? 0);
const resume = opt.resume === "true";
const reconnectMs = Number(opt["reconnect-ms"] ?? 300);
const timeoutMs = Number(opt["timeout-ms"] ?? 20000);
const status = (o) => process.stderr.write(JSON.stringify(o) + "\n");
const FINAL = new Set(["success", "completed", "error"]);

const socket = new Socket(opt.url, {
  transport: WebSocket,
  params: { token: opt.token },
  reconnectAfterMs: () => reconnectMs,
  rejoinAfterMs: () => 200,
});
socket.connect();

let lastSeq = 0;
const channel = socket.channel(opt.topic, () => (resume && lastSeq > 0 ? { last_seq: lastSeq } : {}));
let text = "";
let chunks = 0;
let dropped = false;
let joins = 0;

function print(event, payload, ref) {
  if (ref) lastSeq = Number(ref);
  process.stdout.write(JSON.stringify({ event, ref, payload }) + "\n");
}

channel.on("chunk", (payload, ref) => {
  print("chunk", payload, ref);
  text += payload.delta;
  chunks++;
  if (dropAfter && !dropped && chunks >= dropAfter) {
    dropped = true;
    socket.conn.close(4000, "test drop");
    status({ event: "dropped" });
  }
});
channel.on("chunk_reset", (payload, ref) => {
  print("chunk_reset", payload, ref);
  text = "";
});
channel.on("response", (payload, ref) => {
  print("response", payload, ref);
  if (FINAL.has(payload?.status)) {
    status({ event: "done", text, status: payload.status });
    socket.disconnect(() => process.exit(0), 1000, "done");
    setTimeout(() => process.exit(0), 500).unref();
  }
});
channel
  .join()
  .receive("ok", () => status({ event: "joined", joins: ++joins }))
  .receive("error", (resp) => status({ event: "join_error", reason: resp?.reason }));

setTimeout(() => {
  status({ event: "timeout", chunks });
  process.exit(2);
}, timeoutMs).unref();
const keepAlive = setInterval(() => {}, 1 << 30);
process.on("exit", () => clearInterval(keepAlive));
