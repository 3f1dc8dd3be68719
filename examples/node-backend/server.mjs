// A customer backend for riverhub's event-driven workflows, with Node.js
// 20+ and its standard library only (node:http, node:crypto, global fetch):
// no npm packages, nothing to install.
//
// It receives riverhub's webhooks on POST /webhooks/riverhub, checks the
// mr-signature over the raw body and the freshness of mr-timestamp (or,
// for code written for the hosted service, X-ModelRiver-Signature and
// X-ModelRiver-Timestamp), acknowledges at once, and then, in the
// background:
//
//   - task.ai_generated: enriches ai_response.data (an id, processed_at,
//     processed_by) and POSTs {data, task_id, metadata} to callback_url with
//     the project's API key, which completes the channel; a failure is
//     reported as {error, message} instead;
//   - task.completed: logs the result.
//
// Deliveries are at-least-once: a delivery is processed once per
// webhook-id (kept in memory for a day).
//
//   RIVERHUB_WEBHOOK_SECRET=whsec_... RIVERHUB_API_KEY=mr_live_... node server.mjs
//
// Environment: LISTEN_ADDR (default :4000; --addr overrides), PROCESSING_DELAY_MS
// (simulated work per task, default 0).

import http from 'node:http';
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';

const WEBHOOK_PATH = '/webhooks/riverhub';
const MAX_BODY = 10 << 20; // largest webhook body accepted
const TOLERANCE_S = 5 * 60; // how far mr-timestamp (or X-ModelRiver-Timestamp) may be from now
const DEDUPE_MS = 24 * 60 * 60 * 1000; // how long a webhook-id is remembered
const CALLBACK_TRIES = 5; // attempts of one callback
const FIRST_RETRY_MS = 500;
const DRAIN_MS = 15_000; // how long shutdown waits for callbacks in flight

const { values: flags } = parseArgs({ options: { addr: { type: 'string' } } });
const addr = flags.addr || process.env.LISTEN_ADDR || ':4000';
const secret = process.env.RIVERHUB_WEBHOOK_SECRET;
const apiKey = process.env.RIVERHUB_API_KEY;
const delayMs = Number(process.env.PROCESSING_DELAY_MS || 0);
if (!secret || !apiKey) {
  console.error('node-backend: set RIVERHUB_WEBHOOK_SECRET (the webhook\'s secret) and RIVERHUB_API_KEY (a key of its project)');
  process.exit(1);
}
if (!Number.isInteger(delayMs) || delayMs < 0) {
  console.error(`node-backend: PROCESSING_DELAY_MS: ${process.env.PROCESSING_DELAY_MS} is not a number of milliseconds`);
  process.exit(1);
}

const log = (level, msg, fields = {}) =>
  console.log(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));

// The hex HMAC-SHA256 of the raw body bytes, keyed with the whole secret
// string (whsec_...), compared in constant time. Never sign
// JSON.stringify(parsed body): sign what was received.
function validSignature(raw, signature, key) {
  const want = Buffer.from(crypto.createHmac('sha256', key).update(raw).digest('hex'));
  const got = Buffer.from(String(signature || '').trim().toLowerCase());
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

// X-ModelRiver-Signature, the hosted service's scheme, compared in constant
// time: the hex HMAC-SHA256, keyed with the whole secret string, of
// `${X-ModelRiver-Timestamp}.${JSON.stringify(body.data)}`, or of
// `${timestamp}.${raw body}` when data is absent or null.
function validModelRiverSignature(raw, signature, timestamp, key) {
  let data;
  try {
    data = JSON.parse(raw.toString('utf8')).data;
  } catch {
    return false;
  }
  const mac = crypto.createHmac('sha256', key).update(`${timestamp}.`);
  mac.update(data === undefined || data === null ? raw : JSON.stringify(data));
  const want = Buffer.from(mac.digest('hex'));
  const got = Buffer.from(String(signature || '').trim().toLowerCase());
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

// Checks a delivery before anything else reads it: the error code to
// answer with and why, or null when it is genuine.
//
// mr-signature covers the exact bytes received. A request without it may
// carry the hosted service's X-ModelRiver-Signature instead (riverhub sends
// both), so that a backend written for that service keeps working; it
// covers only X-ModelRiver-Timestamp and the payload's data, or the whole
// body without data (docs/webhooks.md). A present mr-signature that is
// wrong is final: the other scheme covers less of the body.
function authenticate(raw, headers) {
  const mrSig = headers['mr-signature'];
  if (mrSig || !headers['x-modelriver-signature']) {
    if (!validSignature(raw, mrSig, secret)) return { code: 'invalid_signature', why: 'invalid mr-signature' };
    // mr-signature does not cover the headers: this turns away a captured
    // request replayed as it was; the webhook-id set turns away riverhub's
    // own retries.
    if (!fresh(headers['mr-timestamp'])) {
      return { code: 'stale_timestamp', why: `mr-timestamp ${JSON.stringify(headers['mr-timestamp'])} missing or more than 5 minutes off` };
    }
    return null;
  }
  const ts = headers['x-modelriver-timestamp'];
  if (!validModelRiverSignature(raw, headers['x-modelriver-signature'], ts, secret)) {
    return { code: 'invalid_signature', why: 'invalid X-ModelRiver-Signature' };
  }
  if (!fresh(ts)) {
    return { code: 'stale_timestamp', why: `X-ModelRiver-Timestamp ${JSON.stringify(ts)} missing or more than 5 minutes off` };
  }
  return null;
}

// Whether the Unix-seconds timestamp is within the tolerance of now.
function fresh(ts) {
  if (!/^\s*-?\d+\s*$/.test(ts || '')) return false;
  return Math.abs(Date.now() / 1000 - Number(ts)) <= TOLERANCE_S;
}

// webhook-id → when it was first received.
const seen = new Map();
let lastSweep = 0;
function firstTime(id) {
  const now = Date.now();
  if (now - lastSweep > 60_000) {
    for (const [k, at] of seen) if (now - at > DEDUPE_MS) seen.delete(k);
    lastSweep = now;
  }
  if (seen.has(id)) return false;
  seen.set(id, now);
  return true;
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// Reads the body as bytes, up to MAX_BODY; null when it is larger.
async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const jobs = new Set(); // background work in flight
const stopping = new AbortController(); // aborts it after the drain

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path !== WEBHOOK_PATH) return reply(res, 404, { error: 'not_found' });
  if (req.method !== 'POST') return reply(res, 405, { error: 'method_not_allowed' });
  let raw;
  try {
    raw = await readBody(req);
  } catch {
    return; // the connection broke
  }
  if (raw === null) return reply(res, 413, { error: 'payload_too_large' });

  const refused = authenticate(raw, req.headers);
  if (refused) {
    log('WARN', `refused a webhook: ${refused.why}`, { remote: req.socket.remoteAddress });
    return reply(res, 401, { error: refused.code });
  }
  let ev;
  try {
    ev = JSON.parse(raw.toString('utf8'));
  } catch {
    return reply(res, 400, { error: 'invalid_json' });
  }
  const id = req.headers['webhook-id'] || `${ev.type}:${ev.channel_id}`;
  if (!firstTime(id)) {
    log('INFO', 'duplicate delivery ignored', { webhook_id: id, channel_id: ev.channel_id });
    return reply(res, 200, { received: true, duplicate: true });
  }
  // Acknowledge first: riverhub waits at most 10 s for the answer.
  reply(res, 200, { received: true });
  const job = processEvent(ev).catch((err) => log('ERROR', 'processing crashed', { err: String(err) }));
  jobs.add(job);
  job.finally(() => jobs.delete(job));
});

async function processEvent(ev) {
  if (ev.type === 'task.ai_generated' && ev.callback_url) {
    log('INFO', 'processing', { event: ev.event, channel_id: ev.channel_id });
    await complete(ev);
  } else if (ev.type === 'task.completed') {
    log('INFO', 'task completed', { workflow: ev.workflow, channel_id: ev.channel_id, status: ev.status, data: ev.data });
  } else {
    log('INFO', 'webhook ignored', { type: ev.type, channel_id: ev.channel_id });
  }
}

// Runs the business logic on the generated data and calls back with its
// result, or with the error that stopped it.
async function complete(ev) {
  const start = Date.now();
  await sleep(delayMs); // your database, tools, approvals...
  if (stopping.signal.aborted) return;
  let body;
  try {
    const { data, id } = enrich(ev, new Date());
    body = {
      data,
      task_id: `task_${id}`,
      metadata: { processing_time_ms: Date.now() - start, processed_by: 'node-backend' },
    };
  } catch (err) {
    log('WARN', 'processing failed', { channel_id: ev.channel_id, err: err.message });
    body = { error: 'processing_failed', message: err.message };
  }
  await callback(ev.callback_url, ev.channel_id, body);
}

// Adds this backend's fields to the generated data (a JSON object;
// anything else is kept under "value"). customer_data.simulate_failure
// makes it fail, to show the error callback.
function enrich(ev, now) {
  if (ev.customer_data?.simulate_failure === true) {
    throw new Error('customer_data.simulate_failure is set');
  }
  const generated = ev.ai_response?.data;
  if (generated === undefined || generated === null) throw new Error('ai_response.data is empty');
  const isObject = typeof generated === 'object' && !Array.isArray(generated);
  const id = crypto.randomBytes(6).toString('hex');
  const data = {
    ...(isObject ? generated : { value: generated }),
    id: `rec_${id}`,
    processed_at: now.toISOString(),
    processed_by: 'node-backend',
  };
  return { data, id };
}

// POSTs body to riverhub. Every attempt sends the same bytes, so an
// attempt that reached riverhub but whose answer was lost is accepted
// again as a repeat. Network errors, 429 and 5xx are retried with
// backoff; 409 says the channel no longer waits (callback_timeout,
// callback_already_received, not_awaiting_callback) and is final.
async function callback(url, channelId, body) {
  const raw = JSON.stringify(body);
  let wait = FIRST_RETRY_MS;
  for (let attempt = 1; ; attempt++) {
    let status = 0;
    let answer = '';
    let error;
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: raw,
        signal: AbortSignal.timeout(10_000),
      });
      status = res.status;
      answer = (await res.text()).slice(0, 4096);
    } catch (err) {
      error = err.cause?.code || err.name || String(err);
    }
    if (error === undefined) {
      if (status === 200) {
        log('INFO', 'callback accepted', { channel_id: channelId, attempt });
        return;
      }
      if (status === 409) {
        log('WARN', 'callback refused: the channel no longer waits', { channel_id: channelId, code: errorCode(answer) });
        return;
      }
      if (status !== 429 && status < 500) {
        log('ERROR', 'callback refused', { channel_id: channelId, status, code: errorCode(answer), answer });
        return;
      }
    }
    if (attempt === CALLBACK_TRIES || stopping.signal.aborted) {
      log('ERROR', 'callback failed, giving up', { channel_id: channelId, attempts: attempt, status, err: error });
      return;
    }
    log('WARN', 'callback failed, retrying', { channel_id: channelId, attempt, status, err: error, in_ms: wait });
    await sleep(wait);
    wait *= 2;
  }
}

// The "error" of riverhub's error envelope.
function errorCode(answer) {
  try {
    return JSON.parse(answer).error;
  } catch {
    return undefined;
  }
}

function sleep(ms) {
  return new Promise((resolve) => {
    if (ms <= 0 || stopping.signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      stopping.signal.removeEventListener('abort', done);
      resolve();
    }
    stopping.signal.addEventListener('abort', done);
  });
}

// "host:port", ":port" or "[v6]:port".
function splitAddr(a) {
  const i = a.lastIndexOf(':');
  const host = a.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host: host || undefined, port: Number(a.slice(i + 1)) };
}

const { host, port } = splitAddr(addr);
server.on('error', (err) => {
  console.error(`node-backend: listen on ${addr}: ${err.message}`);
  process.exit(1);
});
server.listen(port, host, () => {
  const a = server.address();
  const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  log('INFO', `listening on http://${shown}:${a.port}${WEBHOOK_PATH}`);
});

// Stop accepting, let the callbacks in flight finish within the bound,
// then abort the rest.
async function shutdown() {
  log('INFO', 'shutting down');
  server.close();
  server.closeIdleConnections();
  const drained = Promise.allSettled([...jobs]);
  const timer = new Promise((resolve) => setTimeout(resolve, DRAIN_MS, 'timeout'));
  if ((await Promise.race([drained, timer])) === 'timeout') {
    log('WARN', 'callbacks still in flight were abandoned');
  }
  stopping.abort();
  process.exit(0);
}
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);
