#!/usr/bin/env node
// Sends the hub frames no Phoenix client would, one socket per case, and
// prints how the server closed each: one JSON line per case on stdout,
// {"case":NAME,"code":C,"reason":R}. The official client cannot send these,
// so this uses the ws package directly.
//
//   node raw_frames.mjs --url ws://127.0.0.1:8080/socket --token T \
//        [--topic ai_response:P:C] [--max-frame-bytes 65536]
//
// --topic            join it on each socket first (and wait for the ok), so
//                    the bad frame comes from a member of the room
// --max-frame-bytes  the server's inbound frame limit; the "oversize" case
//                    sends one byte more (default 65536)
//
// Exit 0 once every case has closed; 2 if one stays open for 5 s.
//
// Install once: cd e2e && npm ci
import WebSocket from "ws";
import { args } from "./args.mjs";


const opt = args(process.argv.slice(2));
if (!opt.url || !opt.token) {
  console.error("usage: raw_frames.mjs --url WS_URL --token TOKEN [--topic TOPIC] [--max-frame-bytes N]");
  process.exit(64);
}
const maxFrame = Number(opt["max-frame-bytes"] ?? 65536);
const endpoint = `${opt.url}/websocket?vsn=2.0.0&token=${encodeURIComponent(opt.token)}`;

// What the server must close each with is the caller's to check.
const heartbeat = (pad) => JSON.stringify([null, "9", "phoenix", "heartbeat", pad ? { pad } : {}]);
const oversize = heartbeat("x".repeat(maxFrame)); // longer than the limit by the framing
const cases = [
  { name: "not JSON", data: "hello" },
  { name: "JSON object", data: JSON.stringify({ topic: "phoenix", event: "heartbeat" }) },
  { name: "four elements", data: JSON.stringify([null, "1", "phoenix", "heartbeat"]) },
  { name: "payload not an object", data: JSON.stringify([null, "1", "phoenix", "heartbeat", []]) },
  { name: "invalid UTF-8", data: Buffer.from([0x5b, 0x22, 0xff, 0x22, 0x5d]), binary: false },
  { name: "binary frame", data: Buffer.from(heartbeat()), binary: true },
  { name: "oversize", data: oversize },
];

function run(c) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(endpoint, ["phoenix"]);
    const timer = setTimeout(() => reject(new Error(`${c.name}: still open after 5 s`)), 5000);
    ws.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`${c.name}: ${err.message}`));
    });
    ws.on("close", (code, reason) => {
      clearTimeout(timer);
      resolve({ case: c.name, code, reason: reason.toString() });
    });
    const send = () => ws.send(c.data, { binary: c.binary ?? false });
    ws.on("open", () => {
      if (!opt.topic) return send();
      ws.send(JSON.stringify(["1", "1", opt.topic, "phx_join", {}]));
      ws.once("message", (m) => {
        const [, ref, , event, payload] = JSON.parse(m.toString());
        if (ref !== "1" || event !== "phx_reply" || payload?.status !== "ok") {
          clearTimeout(timer);
          reject(new Error(`${c.name}: join refused: ${m}`));
          return;
        }
        send();
      });
    });
  });
}

try {
  for (const c of cases) process.stdout.write(JSON.stringify(await run(c)) + "\n");
} catch (err) {
  console.error(err.message);
  process.exit(2);
}
process.exit(0);
