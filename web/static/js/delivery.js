// One webhook delivery as the console shows it (channel detail and dead
// letters): status, every attempt, the payload and, per attempt, the
// headers as sent, and a copy-as-curl that sends that attempt again.
import { api, enc } from "./api.js";
import {
  badge, busy, card, copyText, errorBox, h, jsonView, mono, preciseTime, route, select, table, timeEl, toast, truncate,
} from "./dom.js";

// shellQuote quotes s for a POSIX shell.
export function shellQuote(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

function hex(buf) {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function b64(buf) {
  let s = "";
  for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
  return btoa(s);
}

async function hmac(keyBytes, text) {
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text));
}

// standardKey: the base64 part of a whsec_ secret, decoded (else the bytes).
function standardKey(secret) {
  if (secret.startsWith("whsec_")) {
    try {
      return Uint8Array.from(atob(secret.slice(6)), (c) => c.charCodeAt(0));
    } catch {
      // not base64: the whole string, as the server does
    }
  }
  return new TextEncoder().encode(secret);
}

// body is the exact bytes riverhub sent: its bodies are written so that
// JSON.stringify(JSON.parse(body)) reproduces them.
export function sentBody(d) {
  return JSON.stringify(d.payload);
}

function lastURL(d) {
  const h = d.history || [];
  return h.length ? h[h.length - 1].url : "";
}

// The headers riverhub sets, in the order it sets them; others (none
// today) follow, sorted.
const HEADER_ORDER = ["content-type", "mr-signature", "mr-timestamp", "mr-channel-id", "webhook-id", "webhook-timestamp",
  "webhook-signature", "x-modelriver-signature", "x-modelriver-timestamp", "user-agent"];

export function orderedHeaders(stored) {
  const keys = Object.keys(stored || {});
  const known = HEADER_ORDER.filter((k) => keys.includes(k));
  return [...known, ...keys.filter((k) => !HEADER_ORDER.includes(k)).sort()].map((k) => [k, String(stored[k])]);
}

function curlCommand(url, headers, body) {
  return [`curl -X POST ${shellQuote(url || "https://your-endpoint.example/webhook")}`,
    ...headers.map(([k, v]) => `  -H ${shellQuote(`${k}: ${v}`)}`),
    `  --data-binary ${shellQuote(body)}`].join(" \\\n");
}

// curlFor builds the command that sends attempt a of the delivery again.
// An attempt that carries its request_headers is repeated exactly: its
// URL, its headers (timestamps and signatures included) and the stored
// body. An older attempt without them gets fresh signatures, computed with
// the endpoint's current secret when the browser can compute HMACs (a
// secure context); otherwise the signature headers are placeholders.
export async function curlFor(d, a) {
  const body = sentBody(d);
  if (a?.request_headers && Object.keys(a.request_headers).length) {
    return { cmd: curlCommand(a.url || lastURL(d), orderedHeaders(a.request_headers), body), exact: true };
  }
  let url = a?.url || lastURL(d);
  let secret = "";
  try {
    const w = await api.get("api/console/webhook/" + enc(d.webhook_id));
    secret = w.secret || "";
    url = url || w.url;
  } catch {
    // endpoint deleted: placeholders below
  }
  const ts = Math.floor(Date.now() / 1000);
  let mrSig = "$MR_SIGNATURE";
  let stdSig = "$WEBHOOK_SIGNATURE";
  let hostedSig = "$X_MODELRIVER_SIGNATURE";
  if (secret && globalThis.crypto?.subtle) {
    try {
      const key = new TextEncoder().encode(secret);
      mrSig = hex(await hmac(key, body));
      stdSig = "v1," + b64(await hmac(standardKey(secret), `${d.id}.${ts}.${body}`));
      // The hosted service's scheme: JSON.stringify(body.data), or the
      // body when data is absent or null. The browser's JSON.stringify is
      // the very function its receivers run.
      const data = d.payload?.data;
      hostedSig = hex(await hmac(key, `${ts}.${data === undefined || data === null ? body : JSON.stringify(data)}`));
    } catch {
      // keep the placeholders
    }
  }
  return { cmd: curlCommand(url, [
    ["content-type", "application/json"],
    ["mr-channel-id", d.channel_id],
    ["mr-timestamp", String(ts)],
    ["mr-signature", mrSig],
    ["webhook-id", d.id],
    ["webhook-timestamp", String(ts)],
    ["webhook-signature", stdSig],
    ["x-modelriver-timestamp", String(ts)],
    ["x-modelriver-signature", hostedSig],
  ], body), exact: false };
}

function kvTable(rows, valueClass) {
  return h("div", { class: "table-wrap" }, h("table", { class: "kv headers" },
    h("tbody", {}, rows.map(([k, v]) => h("tr", { dataset: { header: k } }, h("th", { scope: "row", class: "mono" }, k),
      h("td", { class: valueClass(k) }, v))))));
}

// headersView shows attempt a's headers as sent; for an attempt recorded
// without them (an older server), what riverhub sends and how the
// per-attempt values are made.
export function headersView(d, a) {
  if (!a) return h("p", { class: "muted" }, "No attempt yet: the headers are recorded when the delivery is sent.");
  if (a.request_headers && Object.keys(a.request_headers).length) {
    return h("div", { class: "sent-headers", dataset: { attempt: String(a.attempt) } },
      kvTable(orderedHeaders(a.request_headers), () => "mono"),
      h("p", { class: "muted small" }, `Exactly as attempt ${a.attempt} sent them: the timestamps and signatures change with every attempt.`));
  }
  const rows = [
    ["content-type", "application/json"],
    ["user-agent", "riverhub-webhooks/1"],
    ["mr-channel-id", d.channel_id],
    ["webhook-id", d.id],
    ["mr-timestamp", "Unix seconds of each attempt (set when sent)"],
    ["webhook-timestamp", "same as mr-timestamp"],
    ["mr-signature", "hex HMAC-SHA256 of the body, keyed with the endpoint secret (per attempt)"],
    ["webhook-signature", "v1,<base64 HMAC-SHA256 of \"webhook-id.timestamp.body\"> (per attempt; two during a rotation)"],
    ["x-modelriver-signature", "hex HMAC-SHA256 of \"timestamp.JSON.stringify(data)\", or \"timestamp.body\" without data (per attempt; the new secret during a rotation)"],
    ["x-modelriver-timestamp", "same as mr-timestamp"],
  ];
  return h("div", { class: "sent-headers", dataset: { attempt: String(a.attempt), stored: "false" } },
    kvTable(rows, (k) => (k === "mr-channel-id" || k === "webhook-id" || k.endsWith("type") || k === "user-agent" ? "mono" : "muted small")),
    h("p", { class: "muted small" }, `Attempt ${a.attempt} was recorded without its headers (by an older version of riverhub): the timestamps and signatures are described, not shown.`));
}

function attemptLabel(a) {
  return `Attempt ${a.attempt} · ${a.status_code || (a.success ? "ok" : "failed")} · ${preciseTime(a.at)}`;
}

export function attemptsTable(history) {
  if (!history?.length) return h("p", { class: "muted" }, "No attempt yet.");
  const cols = [{ label: "#" }, { label: "Sent" }, { label: "Result" }, { label: "Duration" }, { label: "Detail" }];
  return table(cols, history, (a) => [
    String(a.attempt),
    timeEl(a.at, true),
    badge(a.success ? "success" : "error", a.status_code ? String(a.status_code) : (a.success ? "ok" : "failed")),
    `${a.duration_ms ?? 0} ms`,
    h("span", { class: "stack" },
      a.error ? h("span", { class: "text-bad" }, a.error) : null,
      a.response_excerpt ? h("code", { class: "mono small excerpt", title: truncate(a.response_excerpt, 1000) }, truncate(a.response_excerpt, 200)) : null,
      a.next_attempt_at ? h("span", { class: "muted small" }, "next attempt ", timeEl(a.next_attempt_at, true)) : null),
  ], { cls: "attempts", rowClass: (a) => "attempt attempt-" + (a.success ? "ok" : "bad") });
}

// deliveryCard shows d; onChange runs after a replay; extra are more
// action buttons.
export function deliveryCard(d, { onChange, showChannel = false, extra = [] } = {}) {
  const slot = h("div", {});
  const history = d.history || [];
  let chosen = history.at(-1);
  const headersSlot = h("div", {}, headersView(d, chosen));
  const curlNote = h("p", { class: "muted small curl-note", hidden: true });
  const curlPre = h("pre", { class: "curl", hidden: true });
  let picker = null;
  if (history.length > 1) {
    const sel = select(history.map((a, i) => [String(i), attemptLabel(a)]), String(history.length - 1));
    sel.name = "attempt";
    sel.classList.add("attempt-select");
    sel.addEventListener("change", () => {
      chosen = history[Number(sel.value)];
      headersSlot.replaceChildren(headersView(d, chosen));
      curlPre.hidden = true; // it was another attempt's
      curlNote.hidden = true;
    });
    sel.setAttribute("aria-label", "Attempt whose headers to show");
    picker = h("span", { class: "attempt-pick" }, sel);
  }
  const curlBtn = h("button", { type: "button", class: "btn btn-small" }, "Copy as curl");
  curlBtn.addEventListener("click", () => busy(curlBtn, async () => {
    const { cmd, exact } = await curlFor(d, chosen);
    curlPre.textContent = cmd;
    curlPre.hidden = false;
    curlNote.textContent = exact
      ? `Attempt ${chosen.attempt} as sent: the same URL, body and headers, signatures included. A receiver that checks the timestamp's age (usually 5 minutes) refuses it once that has passed.`
      : "Signed now with the endpoint's current secret: this attempt was recorded without its headers.";
    curlNote.hidden = false;
    const ok = await copyText(cmd);
    toast(ok ? "curl command copied to the clipboard." : "The curl command is below: copy it by hand.", ok ? "ok" : "info");
  }));
  const actions = h("div", { class: "actions wrap" }, curlBtn, extra);
  if (d.status === "dead") {
    const replay = h("button", { type: "button", class: "btn btn-small btn-primary" }, "Replay");
    replay.addEventListener("click", () => busy(replay, async () => {
      try {
        await api.post("api/console/dlq/" + enc(d.id) + "/replay");
        toast("Replayed: the delivery is sent again now.");
        onChange?.();
      } catch (err) {
        slot.replaceChildren(errorBox(err, "Replay"));
      }
    }));
    actions.prepend(replay);
  }
  const url = lastURL(d);
  return card(
    h("div", { class: "card-head" }, badge(d.status), h("h3", {}, d.event || "delivery"), h("span", { class: "spacer" }),
      h("span", { class: "muted small" }, `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`, d.replays ? ` · ${d.replays} replay${d.replays === 1 ? "" : "s"}` : "")),
    h("dl", { class: "facts" },
      h("dt", {}, "Delivery (webhook-id)"), h("dd", {}, mono(d.id)),
      h("dt", {}, "Endpoint"), h("dd", {}, mono(d.webhook_id), url ? h("span", {}, " → ", mono(url, "url")) : null),
      showChannel ? [h("dt", {}, "Channel"), h("dd", {}, h("a", { href: route("logs", d.channel_id) }, mono(d.channel_id)))] : null,
      h("dt", {}, "Created"), h("dd", {}, timeEl(d.created_at)),
      d.dead_at ? [h("dt", {}, "Dead-lettered"), h("dd", {}, timeEl(d.dead_at))] : null,
      d.next_attempt_at ? [h("dt", {}, "Next attempt"), h("dd", {}, timeEl(d.next_attempt_at))] : null,
      d.last_error ? [h("dt", {}, "Last error"), h("dd", { class: "text-bad" }, d.last_error)] : null),
    h("h4", {}, "Attempts"), attemptsTable(history),
    h("h4", {}, "Payload as sent"), jsonView(d.payload, { label: "body" }),
    h("div", { class: "headers-head" }, h("h4", {}, "Headers as sent"), picker),
    headersSlot,
    actions, curlNote, curlPre, slot);
}
