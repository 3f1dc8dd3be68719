#!/usr/bin/env node
// A stand-in for the hosted service's browser SDK around the official
// phoenix client: it opens a socket, joins the request's channel and, on a
// final message (status success, completed or error), drops the socket
// without closing it, as the SDK's cleanup does (it assumes the server has
// ended the request). The page lives on, so the dropped socket does too:
// whatever it does next (reconnect, rejoin) is up to the phoenix client
// and the server.
//
// Every "response" payload is printed as one JSON line on stdout, exactly
// as received. Progress goes to stderr as JSON lines:
//   {"event":"version","package":P,"version":V}  the phoenix client loaded
//   {"event":"open","opens":N}                   a connection opened
//   {"event":"close","code":C,"reason":R,"closes":N}
//   {"event":"conn_error","message":M}
//   {"event":"joined","topic":T,"joins":N}       N: ok joins of all channels
//   {"event":"join_error","topic":T,"reason":R}
//   {"event":"channel_close","topic":T}         the channel is closed (the
//                                               server's phx_close)
//   {"event":"channel_error","topic":T}
//   {"event":"dropped","status":S}              the final message arrived:
//                                               the SDK let go of the socket
//
//   node sdk_session.mjs --url ws://host/socket --token T \
//        --topics ai_response:P:C[,another spelling...] [--phoenix PKG]
//
// --topics   one channel object per topic, all on one socket, joined in
//            order (spellings of one channel, to see that they share one
//            join on the server)
// --phoenix  the npm package of the phoenix client: "phoenix" (1.8.x,
//            default) or "phoenix17" (1.7.x, installed under that alias)
// --run-ms   exit 0 after this long (default 30000); the caller usually
//            kills it sooner
//
// Install once: cd e2e && npm ci
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import { args } from "./args.mjs";

const opt = args(process.argv.slice(2));
const url = opt.url;
const token = opt.token;
const topics = (opt.topics ?? "").split(",").filter(Boolean);
const pkg = opt.phoenix ?? "phoenix";
if (!url || !token || topics.length === 0 || !["phoenix", "phoenix17"].includes(pkg)) {
  console.error("usage: sdk_session.mjs --url WS_URL --token TOKEN --topics TOPIC[,TOPIC...] [--phoenix phoenix|phoenix17]");
  process.exit(64);
}
const runMs = Number(opt["run-ms"] ?? 30000);

const status = (o) => process.stderr.write(JSON.stringify(o) + "\n");
const { Socket } = await import(pkg);
const { version } = JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url)));
status({ event: "version", package: pkg, version });

const FINAL = new Set(["success", "completed", "error"]);
let opens = 0;
let closes = 0;
let joins = 0;

// On a final message the SDK stops using the socket without calling
// socket.disconnect(); the handlers below only watch what happens to it.
// Node 20 has no global WebSocket: hand the client the ws package's.
let dropped = false;
const socket = new Socket(url, { transport: WebSocket, params: { token } });
socket.onOpen(() => status({ event: "open", opens: ++opens }));
socket.onClose((ev) => status({ event: "close", code: ev?.code, reason: ev?.reason, closes: ++closes }));
socket.onError((err) => status({ event: "conn_error", message: err?.message ?? String(err?.type ?? "error") }));
socket.connect();

for (const topic of topics) {
  const channel = socket.channel(topic, {});
  channel.onClose(() => status({ event: "channel_close", topic }));
  channel.onError(() => status({ event: "channel_error", topic }));
  channel.on("response", (payload) => {
    process.stdout.write(JSON.stringify(payload) + "\n");
    if (!dropped && FINAL.has(payload?.status)) {
      dropped = true;
      status({ event: "dropped", status: payload.status });
    }
  });
  channel
    .join()
    .receive("ok", () => status({ event: "joined", topic, joins: ++joins }))
    .receive("error", (resp) => status({ event: "join_error", topic, reason: resp?.reason }));
}

setTimeout(() => process.exit(0), runMs).unref();
// Keep the process alive, as a page that has dropped its socket is.
const keepAlive = setInterval(() => {}, 1 << 30);
process.on("exit", () => clearInterval(keepAlive));
