#!/usr/bin/env node
// A backend written the way the hosted service's public sample backends
// are: it submits with the per-request delivery fields (webhook_url,
// delivery_method, events, metadata), parses webhooks as Express's
// express.json() does (JSON.parse of the body), accepts only those whose
// X-ModelRiver-Signature verifies over `${X-ModelRiver-Timestamp}.${JSON.stringify(body.data)}`
// (the raw body when data is absent or null), answers 401 to anything else,
// and calls back via the callback_url of task.ai_generated.
//
//   node sample_backend.mjs --api http://127.0.0.1:P --key K
//
// It prints JSON lines on stderr (the e2e harness reads its events there):
//   {"event":"listening","url":"http://127.0.0.1:P/webhook/modelriver"}
//   {"event":"submitted","workflow":W,"answer":{...}}     per "submit" command
//   {"event":"webhook","type":T,"channel_id":C,"verified":true|false}
//   {"event":"callback","channel_id":C,"status":S,"body":{...}}
// and reads commands on stdin, one per line:
//   secret S         the endpoint's signing secret (from its registration)
//   submit W         submit workflow W with the delivery fields
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { args } from "./args.mjs";

const opts = args(process.argv.slice(2));
const out = (v) => process.stderr.write(JSON.stringify(v) + "\n");
let secret = "";
let webhookURL = "";

// verify is the samples' check, as they write it.
function verify(req, raw, body) {
  const sig = req.headers["x-modelriver-signature"];
  const ts = req.headers["x-modelriver-timestamp"];
  if (!sig || !ts || !secret) return false;
  const payload = body.data !== undefined && body.data !== null
    ? `${ts}.${JSON.stringify(body.data)}`
    : `${ts}.${raw}`;
  const want = createHmac("sha256", secret).update(payload).digest("hex");
  const a = Buffer.from(want);
  const b = Buffer.from(String(sig));
  return a.length === b.length && timingSafeEqual(a, b);
}

async function callBack(body) {
  // The samples enrich the AI's data and post it back to callback_url.
  const res = await fetch(body.callback_url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${opts.key}` },
    body: JSON.stringify({
      task_id: `task-${body.channel_id.slice(0, 8)}`,
      data: { ...(body.ai_response?.data ?? {}), enriched: true },
      metadata: { handled_by: "sample-backend" },
    }),
  });
  out({ event: "callback", channel_id: body.channel_id, status: res.status, body: await res.json() });
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8");
    let body;
    try {
      body = JSON.parse(raw); // express.json()
    } catch {
      res.writeHead(400).end();
      return;
    }
    const verified = verify(req, raw, body);
    out({ event: "webhook", type: body.type, channel_id: body.channel_id, verified });
    if (!verified) {
      res.writeHead(401, { "Content-Type": "application/json" }).end('{"error":"Invalid signature"}');
      return;
    }
    res.writeHead(200, { "Content-Type": "application/json" }).end('{"received":true}');
    if (body.type === "task.ai_generated" && body.callback_url) {
      callBack(body).catch((e) => out({ event: "callback_failed", channel_id: body.channel_id, message: String(e) }));
    }
  });
});

server.listen(0, "127.0.0.1", () => {
  webhookURL = `http://127.0.0.1:${server.address().port}/webhook/modelriver`;
  out({ event: "listening", url: webhookURL });
});

for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, arg] = line.trim().split(/\s+/, 2);
  if (cmd === "secret") {
    secret = arg;
  } else if (cmd === "submit") {
    const res = await fetch(`${opts.api}/api/v1/ai/async`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${opts.key}` },
      body: JSON.stringify({
        workflow: arg,
        messages: [{ role: "user", content: "Suggest a movie" }],
        webhook_url: webhookURL,
        delivery_method: "websocket",
        events: ["webhook_received"],
        metadata: { conversation_id: "conv-1", message_id: `msg-${Date.now()}` },
      }),
    });
    out({ event: "submitted", workflow: arg, status: res.status, answer: await res.json() });
  }
}
server.close();
