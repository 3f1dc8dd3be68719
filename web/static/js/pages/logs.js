// Request logs: the list of channels (filters, cursor pagination, newest
// first) and one channel's detail: its status, one ordered timeline of
// everything that happened, every webhook delivery with its payload and
// headers, and a live view of its socket room.
import { all, api, enc, notImplemented } from "../api.js";
import { deliveryCard } from "../delivery.js";
import {
  badge, busy, card, clear, copyButton, emptyState, errorBox, field, fromNow, h, jsonView, loading, mono, notice,
  pageHeader, route, select, table, tableRow, timeEl,
} from "../dom.js";
import { openLive } from "../live.js";

const STATUSES = ["", "pending", "generating", "ai_generated", "success", "completed", "error"];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function render(view, params, query) {
  if (params[0]) return renderDetail(view, params[0]);
  return renderList(view, query);
}

function openChannelForm() {
  const input = h("input", { type: "text", name: "channel_id", placeholder: "channel_id (a UUID)", spellcheck: "false", autocomplete: "off" });
  const msg = h("div", {});
  const form = h("form", { class: "inline-form", novalidate: true, role: "search", "aria-label": "Open a channel" },
    field("Open a channel by id", input, "From a submission's channel_id, a webhook's mr-channel-id header, or a dead letter."),
    h("button", { type: "submit", class: "btn" }, "Open"), msg);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clear(msg);
    const id = input.value.trim();
    if (!UUID.test(id)) {
      msg.append(errorBox({ message: "A channel id is a UUID such as 550e8400-e29b-41d4-a716-446655440000." }, "Opening"));
      return;
    }
    location.hash = route("logs", id.toLowerCase());
  });
  return form;
}

// The time filters are datetime-local inputs (the browser's local time, to
// the minute); the API and the page's address take RFC 3339 in UTC. "to"
// covers its whole minute, as a user picking 12:34 means.
export function localToRFC3339(value, endOfMinute = false) {
  if (!value) return "";
  const d = new Date(value); // a date-time without an offset is local time
  if (Number.isNaN(d.getTime())) return "";
  if (endOfMinute && value.length <= 16) d.setSeconds(59, 999);
  return d.toISOString().replace(".000Z", "Z");
}

export function rfc3339ToLocal(iso) {
  const d = new Date(iso || "");
  if (!iso || Number.isNaN(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function zoneName() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "this device's zone";
  } catch {
    return "this device's zone";
  }
}

async function renderList(view, query) {
  view.append(pageHeader("Request logs", "Every request, newest first. Open one to see its timeline and webhook deliveries."));
  view.append(card(openChannelForm()));

  const wfSel = select([["", "Any workflow"]], query.get("workflow") || "");
  const evIn = h("input", { type: "text", name: "event_name", value: query.get("event_name") || "", placeholder: "any", spellcheck: "false" });
  const stSel = select(STATUSES.map((s) => [s, s || "Any status"]), query.get("status") || "");
  const fromIn = h("input", { type: "datetime-local", name: "from", value: rfc3339ToLocal(query.get("from")) });
  const toIn = h("input", { type: "datetime-local", name: "to", value: rfc3339ToLocal(query.get("to")) });
  const filterMsg = h("div", { class: "filter-msg" });
  const filters = h("form", { class: "filters", novalidate: true, "aria-label": "Filter request logs" },
    field("Workflow", wfSel), field("Event name", evIn), field("Status", stSel),
    field("Created from", fromIn), field("Created to", toIn),
    h("div", { class: "filter-actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
      h("a", { class: "btn", href: "#/logs" }, "Reset")),
    h("p", { class: "filter-note muted small" }, `Times are your local time (${zoneName()}), sent as UTC; “Created to” includes its whole minute.`),
    filterMsg);
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    clear(filterMsg);
    const from = localToRFC3339(fromIn.value);
    const to = localToRFC3339(toIn.value, true);
    if (from && to && new Date(from) > new Date(to)) {
      filterMsg.append(errorBox({ message: "“Created from” is after “Created to”: swap them or clear one." }, "Filtering"));
      return;
    }
    const q = new URLSearchParams();
    if (wfSel.value) q.set("workflow", wfSel.value);
    if (evIn.value.trim()) q.set("event_name", evIn.value.trim());
    if (stSel.value) q.set("status", stSel.value);
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    const next = "#/logs" + (q.toString() ? "?" + q : "");
    if (location.hash === next) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = next;
  });
  all("api/console/workflow").then((ws) => {
    const cur = query.get("workflow") || "";
    for (const w of ws) wfSel.append(h("option", { value: w.name, selected: w.name === cur }, w.name));
    if (cur && !ws.some((w) => w.name === cur)) wfSel.append(h("option", { value: cur, selected: true }, cur));
  }).catch(() => {});
  view.append(card(filters));

  const results = h("div", {}, loading());
  view.append(results);
  const params = { workflow: query.get("workflow"), event_name: query.get("event_name"), status: query.get("status"),
    from: query.get("from"), to: query.get("to"), limit: 50 };
  let first;
  try {
    first = await api.get("api/console/logs", params);
  } catch (err) {
    if (notImplemented(err)) {
      results.replaceChildren(notice("The request log list is not available on this server yet (it answers not_implemented). " +
        "Open a channel by its id above: its timeline, deliveries and live messages work.", "warn"));
    } else {
      results.replaceChildren(errorBox(err, "Loading request logs"));
    }
    return;
  }
  const items = first?.items || [];
  if (!items.length) {
    const filtered = params.workflow || params.event_name || params.status || params.from || params.to;
    results.replaceChildren(emptyState(filtered ? "No request matches these filters" : "No requests yet",
      filtered ? "Change or reset the filters." : "Submit a task to POST /v1/ai/async (or try the Playground); it shows here at once.",
      filtered ? h("a", { class: "btn", href: "#/logs" }, "Reset filters") : h("a", { class: "btn btn-primary", href: "#/playground" }, "Open the playground")));
    return;
  }
  const cols = [{ label: "Created" }, { label: "Status" }, { label: "Workflow" }, { label: "Event" }, { label: "Channel" }];
  const rowFn = (c) => [
    timeEl(c.created_at), badge(c.status),
    c.workflow ? h("span", { class: "ellipsis", title: c.workflow }, c.workflow) : "—",
    c.event_name ? mono(c.event_name) : h("span", { class: "muted" }, "—"),
    h("a", { href: route("logs", c.channel_id), class: "mono" }, c.channel_id),
  ];
  const tbl = table(cols, items, rowFn, { cls: "logs" });
  const tbody = tbl.querySelector("tbody");
  const more = h("button", { type: "button", class: "btn" }, "Load more");
  const moreMsg = h("div", {});
  let cursor = first.next_cursor;
  more.hidden = !cursor;
  more.addEventListener("click", () => busy(more, async () => {
    clear(moreMsg);
    try {
      const page = await api.get("api/console/logs", { ...params, cursor });
      for (const c of page.items || []) tbody.append(tableRow(cols, rowFn(c)));
      cursor = page.next_cursor;
    } catch (err) {
      moreMsg.append(errorBox(err, "Loading more"));
    }
  }).then(() => { more.hidden = !cursor; }));
  results.replaceChildren(tbl, h("div", { class: "load-more" }, more, moreMsg));
}

// --- detail -----------------------------------------------------------------

const FINAL = new Set(["success", "completed", "error"]);
const STATUS_TEXT = {
  pending: "Waiting for a worker",
  generating: "The model is generating",
  ai_generated: "AI step done; waiting for the backend's callback",
  success: "Done: the final result was delivered",
  completed: "Completed with the backend's callback",
  error: "Failed (generation, backend error or callback timeout)",
};
const SETTLED = new Set(["succeeded", "dead", "cancelled"]);

function entryTone(e) {
  switch (e.type) {
    case "ai_attempt":
    case "delivery_attempt":
      if (e.skipped) return "wait";
      return e.success === false || (e.error && e.success !== true) ? "bad" : "ok";
    case "callback":
      return e.status === "error" ? "bad" : "ok";
    case "ai_generated":
      return "info";
    case "callback_rejected":
    case "delivery_cancelled":
      return "wait";
    case "completed":
    case "success":
      return "ok";
    case "failed":
    case "dead_lettered":
    case "timeout":
    case "error":
      return "bad";
    case "replayed":
    case "requeued":
    case "waiting":
    case "delivery_paused":
      return "wait";
    case "endpoint_opened":
    case "endpoint_disabled":
      return "bad";
    case "delivery_resumed":
      return "info";
    case "endpoint_closed":
      return "ok";
    default:
      return "muted";
  }
}

function titleCase(s) {
  return String(s || "event").replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function entryText(e) {
  switch (e.type) {
    case "request":
      return [h("strong", {}, "Request received"), e.workflow ? ` for workflow ${e.workflow}` : "", requestDelivery(e)];
    case "generating":
      return [h("strong", {}, "Generating")];
    case "requeued":
      return [h("strong", {}, "Requeued"), " — a node's lease ran out; another node took the task"];
    case "ai_attempt":
      return [h("strong", {}, e.skipped ? "AI attempt skipped" : `AI attempt ${e.success ? "succeeded" : "failed"}`),
        ` — ${e.provider}/${e.model}`, e.status_code ? ` → ${e.status_code}` : "",
        !e.skipped && e.duration_ms !== undefined ? ` in ${e.duration_ms} ms` : "",
        e.wait_ms ? ` after waiting ${e.wait_ms} ms` : "", e.error ? h("div", { class: "text-bad" }, e.error) : null];
    case "waiting":
      return [h("strong", {}, "Waiting"), ` — ${e.provider}/${e.model}: `,
        e.reason === "rate_limit" ? "for a permit of the provider's rate limits" : "to retry after a failure the provider may recover from"];
    case "completed":
      return [h("strong", {}, "Completed")];
    case "failed":
      return [h("strong", {}, "Failed"), e.error ? h("div", { class: "text-bad" }, e.error) : null];
    case "delivery_attempt":
      return [h("strong", {}, `Webhook attempt ${e.attempt ?? ""} → ${e.status_code || (e.success ? "ok" : "failed")}`),
        ` ${e.event || ""}`, e.duration_ms !== undefined ? ` in ${e.duration_ms} ms` : "",
        e.url ? h("div", {}, mono(e.url, "url small")) : null,
        e.error ? h("div", { class: "text-bad" }, e.error) : null,
        e.next_attempt_at ? h("div", { class: "muted small" }, "retry at ", timeEl(e.next_attempt_at, true)) : null];
    case "dead_lettered":
      return [h("strong", {}, "Dead-lettered"), ` — ${e.event || "delivery"} gave up after its last attempt`];
    case "delivery_cancelled":
      return [h("strong", {}, "Delivery cancelled"), ` — ${e.event || "delivery"}`, e.reason ? h("div", { class: "muted" }, e.reason) : null];
    case "ai_generated":
      return [h("strong", {}, "AI generated"), e.simulated ? " — the playground simulates the backend callback" : " — waiting for the backend callback",
        e.deadline ? h("div", { class: "muted small" }, "deadline ", timeEl(e.deadline, true)) : null];
    case "callback":
      return [h("strong", {}, e.simulated ? "Simulated callback" : "Callback received"), e.status ? ` — ${e.status}` : "",
        e.callback !== undefined ? jsonView(e.callback, { label: "callback body" }) : null];
    case "callback_rejected":
      return [h("strong", {}, "Callback refused"), e.code ? ` — ${e.code}` : "", e.error ? h("div", { class: "text-bad" }, e.error) : null];
    case "timeout":
      return [h("strong", {}, "Callback timed out"), e.code ? ` — ${e.code}` : ""];
    case "replayed":
      return [h("strong", {}, "Replayed"), ` — ${e.event || "delivery"} sent again from the dead-letter queue`];
    // Endpoint health: why a delivery waited, and until when.
    case "endpoint_opened":
      return [h("strong", {}, "Endpoint circuit opened"), endpointOf(e), reasonOf(e)];
    case "delivery_paused":
      return [h("strong", {}, "Delivery waiting"), ` — ${e.event || "delivery"}`,
        // "in 4 s" while it still waits; afterwards the time says it all.
        e.until ? [" until ", timeEl(e.until, true), new Date(e.until) > Date.now() ? ` (${fromNow(e.until)})` : ""] : "",
        endpointOf(e), reasonOf(e)];
    case "delivery_resumed":
      return [h("strong", {}, "Delivery resumed"), ` — ${e.event || "delivery"}`, endpointOf(e), reasonOf(e)];
    case "endpoint_closed":
      return [h("strong", {}, "Endpoint recovered"), endpointOf(e), reasonOf(e)];
    case "endpoint_disabled":
      return [h("strong", {}, "Endpoint disabled"), endpointOf(e), reasonOf(e, "text-bad")];
    default:
      return [h("strong", {}, titleCase(e.type)), e.error ? h("div", { class: "text-bad" }, e.error) : null];
  }
}

// requestDelivery is what the request asked of its webhooks (webhook_id or
// webhook_url, events, delivery_method), when it asked anything.
function requestDelivery(e) {
  const parts = [];
  if (e.webhook_ids?.length) parts.push(["webhooks to ", e.webhook_ids.map((id, i) => [i ? ", " : "", mono(id)])]);
  if (e.events?.length) parts.push(["events ", e.events.map((ev, i) => [i ? ", " : "", mono(ev)])]);
  if (e.delivery_method) parts.push(["delivery_method ", mono(e.delivery_method)]);
  return parts.length ? h("div", { class: "muted small" }, parts.map((p, i) => [i ? " · " : "", p])) : null;
}

function endpointOf(e) {
  return e.webhook_id ? [" — endpoint ", h("a", { href: route("webhooks"), title: "Webhooks" }, mono(e.webhook_id))] : "";
}

function reasonOf(e, cls = "muted") {
  return e.reason ? h("div", { class: ["tl-reason", cls] }, e.reason) : null;
}

// orderedTimeline sorts by time; entries of the same millisecond keep the
// server's order (Array.prototype.sort is stable).
function orderedTimeline(tl) {
  return [...(tl || [])].sort((a, b) => (a.at || "").localeCompare(b.at || ""));
}

function timelineList(tl) {
  if (!tl.length) return h("p", { class: "muted" }, "Nothing recorded yet.");
  return h("ol", { class: "timeline" }, tl.map((e) => h("li", { class: ["tl-entry", "tl-" + entryTone(e)], dataset: { type: e.type || "" } },
    h("span", { class: "tl-dot", "aria-hidden": "true" }),
    h("div", { class: "tl-body" },
      h("div", { class: "tl-line" }, h("span", { class: "tl-text" }, entryText(e)), h("span", { class: "spacer" }), timeEl(e.at, true)),
      e.delivery_id ? h("div", { class: "muted small" }, "delivery ", mono(e.delivery_id)) : null,
      e.response_excerpt ? h("details", { class: "sub" }, h("summary", {}, "Response excerpt"), h("pre", {}, e.response_excerpt)) : null,
      h("details", { class: "sub" }, h("summary", {}, "Entry"), jsonView(e))))));
}

async function renderDetail(view, cid) {
  const refresh = h("button", { type: "button", class: "btn" }, "Refresh");
  const liveBtn = h("button", { type: "button", class: "btn" }, "Watch live");
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/logs" }, "Request logs"), " / ", mono(cid)));
  view.append(pageHeader("Channel", null, liveBtn, refresh));
  const summary = h("div", {}, loading());
  const liveSlot = h("div", {});
  const tlSlot = h("div", {});
  const dlSlot = h("div", {});
  const msgSlot = h("div", {});
  view.append(summary, liveSlot, msgSlot, card(h("h2", {}, "Timeline"), tlSlot), h("h2", { class: "section-title" }, "Webhook deliveries"), dlSlot);

  let timer = null;
  let sock = null;
  let last = "";
  let left = false;

  async function load() {
    let log;
    try {
      log = await api.get("api/console/logs/" + enc(cid));
    } catch (err) {
      summary.replaceChildren(err.status === 404
        ? emptyState("Channel not found", "No channel with this id in your project: it may have expired (records are kept for RIVERHUB_RETENTION) or belong to another project.",
          h("a", { class: "btn", href: "#/logs" }, "Back to request logs"))
        : errorBox(err, "Loading the channel"));
      return false;
    }
    const ch = log.channel || {};
    const tl = orderedTimeline(log.timeline);
    const ids = [...new Set(tl.filter((e) => e.delivery_id).map((e) => e.delivery_id))];
    const deliveries = await Promise.all(ids.map((id) => api.get("api/console/dlq/" + enc(id)).catch((err) => ({ id, err }))));
    const sig = JSON.stringify([ch.status, ch.updated_at, tl.length, deliveries.map((d) => [d.status, d.attempts, d.replays])]);
    if (sig !== last && !left) {
      last = sig;
      summary.replaceChildren(card(
        h("div", { class: "status-head" }, badge(ch.status, ch.status), h("span", { class: "status-label" }, STATUS_TEXT[ch.status] || (ch.status ? `Status: ${ch.status}` : ""))),
        h("dl", { class: "facts" },
          h("dt", {}, "Channel"), h("dd", {}, mono(ch.channel_id || cid), " ", copyButton(ch.channel_id || cid, "Copy id")),
          h("dt", {}, "Workflow"), h("dd", {}, ch.workflow ? h("a", { href: route("workflows", "edit", ch.workflow) }, ch.workflow) : "—"),
          h("dt", {}, "Event name"), h("dd", {}, ch.event_name ? mono(ch.event_name) : h("span", { class: "muted" }, "— (standard workflow)")),
          h("dt", {}, "Created"), h("dd", {}, timeEl(ch.created_at)),
          h("dt", {}, "Updated"), h("dd", {}, timeEl(ch.updated_at)),
          h("dt", {}, "Metadata"), h("dd", {}, ch.metadata != null
            ? jsonView(ch.metadata, { label: "metadata" })
            : h("span", { class: "muted" }, "— (the request sent none)")))));
      msgSlot.replaceChildren(ch.message && ch.message !== null
        ? card(h("h2", {}, "Latest message"), h("p", { class: "muted small" }, "The last payload pushed to the channel's room (what the browser SDK received)."), jsonView(ch.message, { label: "message" }))
        : h("div", {}));
      tlSlot.replaceChildren(timelineList(tl));
      dlSlot.replaceChildren(deliveries.length
        ? h("div", { class: "cards" }, deliveries.map((d) => (!d.err ? deliveryCard(d, { onChange: load })
          : d.err.status === 404 ? card(h("div", { class: "card-head" }, badge("closed", "gone"), mono(d.id)),
            h("p", { class: "muted" }, "This delivery is no longer stored: it was discarded from the dead-letter queue, or it expired. Its attempts stay on the timeline above."))
            : errorBox(d.err, `Loading delivery ${d.id}`))))
        : emptyState("No webhook delivery", tl.some((e) => e.simulated)
          ? "A playground run sends no webhook: its callback is simulated."
          : "This request sent no webhook: no enabled endpoint (of those it named) was subscribed to its events, its events left them out, or it has not finished yet."));
    }
    return !FINAL.has(ch.status) || deliveries.some((d) => !d.err && !SETTLED.has(d.status));
  }

  // Follow the channel while it or its deliveries are still moving.
  const started = Date.now();
  let settledSeen = false;
  async function poll() {
    let moving = await load();
    if (left) return;
    // The timeline is read before the deliveries: one that settled in
    // between reads as settled while the timeline lacks its last entries.
    // So look once more after everything first reads as settled.
    if (!moving && !settledSeen) {
      settledSeen = true;
      moving = true;
    }
    const age = Date.now() - started;
    // Every second at first (retries of a short schedule), then gently: a
    // channel can wait minutes for its callback.
    if (moving && age < 10 * 60 * 1000) timer = setTimeout(poll, age < 30000 ? 1000 : 5000);
  }
  refresh.addEventListener("click", () => busy(refresh, async () => {
    last = "";
    clearTimeout(timer);
    await poll();
  }));

  liveBtn.addEventListener("click", () => busy(liveBtn, async () => {
    if (sock) {
      sock.close();
      sock = null;
      liveSlot.replaceChildren();
      liveBtn.textContent = "Watch live";
      return;
    }
    try {
      const ans = await api.post("api/v1/ai/reconnect", { channel_id: cid });
      const list = h("ol", { class: "live-list" });
      const state = h("span", {});
      liveSlot.replaceChildren(card(h("div", { class: "card-head" }, h("h2", {}, "Live messages"), h("span", { class: "spacer" }), state),
        h("p", { class: "muted small" }, "The channel's WebSocket room: messages it already had are replayed first, new ones appear as they arrive."), list));
      sock = openLive(ans, { list, stateEl: state, onMessage: () => { last = ""; load(); } });
      setTimeout(() => { liveBtn.textContent = "Stop watching"; });
    } catch (err) {
      liveSlot.replaceChildren(errorBox(err, "Opening the live view"));
    }
  }));

  await poll();
  return () => {
    left = true;
    clearTimeout(timer);
    sock?.close();
  };
}
