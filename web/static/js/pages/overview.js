// Overview: what the project holds, the last hour of webhook deliveries
// (by outcome and latency, refreshed every 30 s), whether the server is
// ready, and how to submit a first task.
import { api, notImplemented, serverURL } from "../api.js";
import { bucketLines, fmtMs, legend, stackedBars } from "../chart.js";
import { badge, card, copyButton, emptyState, errorBox, h, loading, notice, pageHeader } from "../dom.js";

const REFRESH_MS = 30000;
const OUTCOMES = [
  { key: "succeeded", label: "Succeeded", cls: "ok" },
  { key: "failed", label: "Failed, retried", cls: "wait" },
  { key: "dead", label: "Dead-lettered", cls: "bad" },
];
const PERCENTILES = [
  { key: "p50_ms", label: "p50", cls: "p50", r: 4.5 },
  { key: "p99_ms", label: "p99", cls: "p99", r: 2.5 },
];

async function count(path) {
  try {
    const page = await api.get(path, { limit: 500 });
    const n = page?.items?.length ?? 0;
    return page?.next_cursor ? `${n}+` : String(n);
  } catch (err) {
    return err.status === 501 ? "n/a" : "?";
  }
}

async function ready() {
  try {
    const res = await fetch(serverURL("readyz"), { cache: "no-store", credentials: "omit" });
    return res.ok ? "ready" : "not ready";
  } catch {
    return "unreachable";
  }
}

// deliveryStats is the card of delivery charts. It draws each chart for
// its container's width (again when that changes) and reloads the figures
// every 30 s until stop() is called.
function deliveryStats() {
  const body = h("div", { class: "stats-body" }, loading());
  const stamp = h("span", { class: "muted small" });
  const el = card(h("div", { class: "card-head" }, h("h2", {}, "Webhook deliveries, last hour"), h("span", { class: "spacer" }), stamp),
    body);
  let data = null;
  let plots = [];
  let drawnAt = 0;
  let timer = null;
  let stopped = false;

  function drawPlots() {
    drawnAt = body.clientWidth;
    for (const [slot, draw] of plots) slot.replaceChildren(draw(Math.max(260, Math.floor(slot.clientWidth) || 600)));
  }

  function show(st) {
    const minutes = st.minutes || [];
    const sum = (k) => minutes.reduce((a, m) => a + (m[k] || 0), 0);
    const totals = Object.fromEntries(OUTCOMES.map((o) => [o.key, sum(o.key)]));
    if (!minutes.length || OUTCOMES.every((o) => !totals[o.key])) {
      plots = [];
      body.replaceChildren(emptyState("No deliveries in the last hour",
        "Add a webhook and submit a task: each delivery attempt shows here, minute by minute, with its outcome and latency.",
        h("a", { class: "btn", href: "#/webhooks" }, "Add a webhook")));
      return;
    }
    const bounds = st.latency_bounds_ms || [];
    const slotA = h("div", { class: "chart-plot" });
    const slotB = h("div", { class: "chart-plot" });
    const pct = (v) => (v === null || v === undefined ? "—" : v === -1 ? fmtMs(v, bounds) : "≤ " + fmtMs(v, bounds));
    body.replaceChildren(h("div", { class: "charts" },
      h("figure", { class: "chart", dataset: { chart: "outcomes" } },
        h("figcaption", {}, h("h3", {}, "Delivery attempts per minute, by outcome"),
          legend(OUTCOMES.map((o) => ({ ...o, value: String(totals[o.key]) })))),
        slotA),
      h("figure", { class: "chart", dataset: { chart: "latency" } },
        h("figcaption", {}, h("h3", {}, "Delivery latency per minute"),
          legend(PERCENTILES.map((p) => ({ ...p, label: `${p.label} over the hour`, value: pct(st[p.key]) })))),
        slotB)));
    const described = `${minutes.length} minutes: ${OUTCOMES.map((o) => `${totals[o.key]} ${o.label.toLowerCase()}`).join(", ")}`;
    plots = [
      [slotA, (w) => stackedBars(w, minutes, OUTCOMES, { title: "attempts per minute", label: `Webhook delivery attempts per minute over the last ${described}.` })],
      [slotB, (w) => bucketLines(w, minutes, bounds, PERCENTILES, { title: "latency (upper bound of its bucket)",
        label: `Delivery latency per minute over the last ${minutes.length} minutes: p50 ${pct(st.p50_ms)}, p99 ${pct(st.p99_ms)} over the hour.` })],
    ];
    drawPlots();
  }

  async function load() {
    try {
      data = await api.get("api/console/stats", { minutes: 60 });
    } catch (err) {
      if (stopped) return;
      if (notImplemented(err)) {
        body.replaceChildren(notice("Delivery statistics are not available on this server yet (it answers not_implemented).", "warn"));
        return; // nothing to refresh
      }
      if (!data) body.replaceChildren(errorBox(err, "Loading delivery statistics"));
      else stamp.textContent = "refresh failed; retrying";
      timer = setTimeout(load, REFRESH_MS);
      return;
    }
    if (stopped) return;
    show(data);
    stamp.textContent = `updated ${new Date().toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })}, every 30 s`;
    timer = setTimeout(load, REFRESH_MS);
  }

  // A narrower or wider container (rotation, window resize) redraws, so
  // the text keeps its size.
  const resized = new ResizeObserver(() => {
    if (plots.length && body.clientWidth !== drawnAt) drawPlots();
  });
  resized.observe(body);

  return {
    el,
    load,
    stop() {
      stopped = true;
      clearTimeout(timer);
      resized.disconnect();
    },
  };
}

export async function render(view) {
  const tiles = [
    ["workflows", "Workflows", "api/console/workflow", "Define provider, model, fallbacks and output."],
    ["webhooks", "Webhooks", "api/console/webhook", "Endpoints that receive signed results."],
    ["dlq", "Dead letters", "api/console/dlq", "Deliveries that failed every retry."],
    ["keys", "API keys", "api/console/keys", "Keys of this project."],
  ];
  const grid = h("div", { class: "tiles" });
  const values = tiles.map(([route, label, , hint]) => {
    const v = h("span", { class: "tile-value" }, "…");
    grid.append(h("a", { class: "tile", href: "#/" + route }, h("span", { class: "tile-label" }, label), v,
      h("span", { class: "tile-hint muted small" }, hint)));
    return v;
  });
  const health = h("span", {}, badge("pending", "checking…"));
  const stats = deliveryStats();
  view.append(pageHeader("Overview", "Your project at a glance."), grid, stats.el);
  const statsLoaded = stats.load();

  const origin = serverURL("").toString().replace(/\/$/, "");
  const snippet = [
    `curl -s -X POST ${origin}/v1/ai/async \\`,
    `  -H "Authorization: Bearer $RIVERHUB_KEY" -H 'Content-Type: application/json' \\`,
    `  -d '{"workflow": "<workflow name>", "messages": [{"role": "user", "content": "Hello"}]}'`,
  ].join("\n");
  view.append(
    card(h("h2", {}, "Server"), h("p", {}, "Redis: ", health), h("p", { class: "muted small" },
      "Health endpoints: /healthz (process alive), /readyz (Redis answers), /metrics (Prometheus)."),
      h("p", { class: "small" }, "API description (OpenAPI 3.1): ",
        h("a", { href: serverURL("openapi.yaml").toString(), target: "_blank", rel: "noopener" }, "openapi.yaml"), " · ",
        h("a", { href: serverURL("openapi.json").toString(), target: "_blank", rel: "noopener" }, "openapi.json"),
        " — generate a typed client from it, or import it into Postman or Insomnia.")),
    card(h("h2", {}, "Getting started"),
      h("ol", { class: "steps" },
        h("li", {}, h("a", { href: "#/workflows/new" }, "Create a workflow"), " — the mock provider needs no model key."),
        h("li", {}, h("a", { href: "#/webhooks" }, "Add a webhook endpoint"), " and store its signing secret in your backend."),
        h("li", {}, "Submit a task from your backend:"),
      ),
      h("div", { class: "code-block" }, h("pre", {}, snippet), copyButton(snippet)),
      h("p", {}, "Then follow it in ", h("a", { href: "#/logs" }, "Request logs"), ", or try a workflow in the ",
        h("a", { href: "#/playground" }, "Playground"), ".")),
  );

  const [counts, r] = await Promise.all([Promise.all(tiles.map((t) => count(t[2]))), ready(), statsLoaded]);
  counts.forEach((c, i) => { values[i].textContent = c; });
  health.replaceChildren(badge(r === "ready" ? "ready" : "error", r));
  return () => stats.stop();
}
