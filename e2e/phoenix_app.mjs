#!/usr/bin/env node
// A browser app stand-in around the official phoenix client, for what
// phoenix_client.mjs leaves out: moving to another node when one shuts
// down, fresh tokens for reconnects (single-use tokens), and reporting
// connections the server refuses.
//
// Every "response" payload is printed as one JSON line on stdout, exactly as
// received (replays included: nothing is deduped, so a caller can count
// repeats). Progress goes to stderr as JSON lines:
//   {"event":"open","url":U,"opens":N}       a connection opened
//   {"event":"conn_error","url":U,"message":M} a connection failed; for a
//                                             refused handshake M is "Unexpected
//                                             server response: 403" (Node's ws;
//                                             a browser only sees a 1006 close)
//   {"event":"close","url":U,"code":C,"reason":R}
//   {"event":"joined","url":U,"joins":N}
//   {"event":"join_error","reason":R}         then exit 4 (but "unavailable",
//                                             which the client retries)
//   {"event":"dropped"}, {"event":"failover","from":U,"to":U2},
//   {"event":"need_token"}, {"event":"token_refreshed"},
//   {"event":"gave_up","refusals":N}          then exit 3
//   {"event":"done","received":N}            then exit 0; "timeout": exit 2
//
//   node phoenix_app.mjs --urls ws://a/socket[,ws://b/socket...] --token T \
//        --topic ai_response:P:C [options]
//
// --urls U1,U2,...  socket endpoints without /websocket. The app starts on
//                   U1. When the node closes the socket with 1001 (going
//                   away: it is shutting down) the app moves to the next URL
//                   with the same token, as an app that knows several nodes
//                   and has no load balancer in front of them would: a
//                   phoenix Socket has one fixed endpoint and by itself only
//                   reconnects to it. (Behind a load balancer none of this is
//                   needed: the client's own reconnect lands on a live node.)
// --count N         exit 0 once N payloads arrived (every payload counts)
// --linger-ms MS    then keep listening MS more and print whatever else
//                   arrives, so the caller can tell "exactly N" from "at
//                   least N" (default 0)
// --timeout-ms MS   exit 2 if not done in time (default 15000)
// --drop-after K    after the K-th payload, drop the connection once, as a
//                   network failure would; the client reconnects by itself
// --reconnect-ms MS the client's reconnect and rejoin delay (default 200)
// --refresh-token   the flow an app needs with single-use tokens: once
//                   --refusals N reconnects in a row have failed before
//                   opening (default 1), ask for a fresh token
//                   ({"event":"need_token"}) and read it as one line on
//                   stdin (in a real app: its backend calls POST
//                   /api/v1/ai/reconnect). The token reaches the server
//                   because params is a function, which the client calls
//                   at each connect; its own next reconnect then succeeds.
// --give-up-after N exit 3 after N connection attempts in a row failed
//                   before opening (a refused token never opens)
//
// Install once: cd e2e && npm ci
import { createInterface } from "node:readline";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { args } from "./args.mjs";


const opt = args(process.argv.slice(2), ["refresh-token"]);
const urls = (opt.urls ?? "").split(",").filter(Boolean);
const topic = opt.topic;
let token = opt.token;
if (urls.length === 0 || !token || !topic) {
  console.error("usage: phoenix_app.mjs --urls WS_URL[,WS_URL...] --token TOKEN --topic TOPIC [options]");
  process.exit(64);
}
const count = opt.count ? Number(opt.count) : Infinity;
const lingerMs = Number(opt["linger-ms"] ?? 0);
const timeoutMs = Number(opt["timeout-ms"] ?? 15000);
const dropAfter = opt["drop-after"] ? Number(opt["drop-after"]) : 0;
const reconnectMs = Number(opt["reconnect-ms"] ?? 200);
const refresh = opt["refresh-token"] === "true";
const refusalsBeforeRefresh = Number(opt.refusals ?? 1);
const giveUpAfter = opt["give-up-after"] ? Number(opt["give-up-after"]) : Infinity;

const status = (o) => process.stderr.write(JSON.stringify(o) + "\n");

let received = 0;
let joins = 0;
let opens = 0;
let refusals = 0; // connection attempts in a row that failed before opening
let asked = false; // a fresh token was asked for and has not arrived yet
let dropped = false;
let finishing = false;
let urlIndex = 0;
let current; // {socket, channel, url}

// The app's token store: the client reads it at every connect.
const params = () => ({ token });

if (refresh) {
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (!line.trim()) return;
    token = line.trim();
    asked = false;
    status({ event: "token_refreshed" });
  });
}

function connect(url) {
  // Node 20 has no global WebSocket: hand the client the ws package's.
  const socket = new Socket(url, {
    transport: WebSocket,
    params,
    reconnectAfterMs: () => reconnectMs,
    rejoinAfterMs: () => reconnectMs,
  });
  const self = { socket, url, channel: null };
  const live = () => current === self && !finishing;

  socket.onOpen(() => {
    if (!live()) return;
    refusals = 0;
    status({ event: "open", url, opens: ++opens });
  });
  socket.onError((err) => {
    if (!live()) return;
    const wasOpen = socket.isConnected();
    status({ event: "conn_error", url, message: err?.message ?? String(err?.type ?? "error") });
    if (wasOpen) return;
    refusals++;
    if (refusals >= giveUpAfter) {
      status({ event: "gave_up", refusals });
      finish(3);
      return;
    }
    if (refresh && !asked && refusals >= refusalsBeforeRefresh) {
      asked = true;
      status({ event: "need_token" });
    }
  });
  socket.onClose((ev) => {
    if (!live()) return;
    status({ event: "close", url, code: ev?.code, reason: ev?.reason });
    if (ev?.code === 1001 && urlIndex + 1 < urls.length) {
      const next = urls[++urlIndex];
      status({ event: "failover", from: url, to: next });
      // Leave first, so the old channel's rejoin timers stop with it.
      self.channel.leave();
      socket.disconnect();
      current = connect(next);
    }
  });
  socket.connect();

  const channel = socket.channel(topic, {});
  self.channel = channel;
  channel.on("response", (payload) => {
    if (current !== self) return;
    received++;
    process.stdout.write(JSON.stringify(payload) + "\n");
    if (dropAfter && !dropped && received >= dropAfter) {
      dropped = true;
      // Close the transport under the client's feet: to the phoenix client
      // this is a lost connection, which it reconnects and rejoins.
      socket.conn.close(4000, "test drop");
      status({ event: "dropped" });
    }
    if (received === count) finish(0);
  });
  channel
    .join()
    .receive("ok", () => live() && status({ event: "joined", url, joins: ++joins }))
    .receive("error", (resp) => {
      if (!live()) return;
      status({ event: "join_error", reason: resp?.reason });
      if (resp?.reason !== "unavailable") finish(4);
    })
    .receive("timeout", () => live() && status({ event: "join_timeout" }));
  return self;
}

let ending = false; // finish was called: the first call decides the exit code
function finish(code) {
  if (ending) return;
  ending = true;
  const end = () => {
    finishing = true;
    status({ event: code === 0 ? "done" : code === 2 ? "timeout" : "exit", code, received });
    current.socket.disconnect(() => process.exit(code), 1000, "done");
    setTimeout(() => process.exit(code), 500).unref();
  };
  if (code === 0 && lingerMs > 0) {
    // Payloads arriving meanwhile are still printed.
    setTimeout(end, lingerMs).unref();
    return;
  }
  end();
}

current = connect(urls[0]);
setTimeout(() => finish(2), timeoutMs).unref();
// Keep the process alive until finish (the timers above are unref'd so that
// a clean finish is not held up by them).
const keepAlive = setInterval(() => {}, 1 << 30);
process.on("exit", () => clearInterval(keepAlive));
