// Overview: what the project holds, whether the server is ready, and how
// to submit a first task.
import { api, serverURL } from "../api.js";
import { badge, card, copyButton, h, pageHeader } from "../dom.js";

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
  view.append(pageHeader("Overview", "Your project at a glance."), grid);

  const origin = serverURL("").toString().replace(/\/$/, "");
  const snippet = [
    `curl -s -X POST ${origin}/v1/ai/async \\`,
    `  -H "Authorization: Bearer $RIVERHUB_KEY" -H 'Content-Type: application/json' \\`,
    `  -d '{"workflow": "<workflow name>", "messages": [{"role": "user", "content": "Hello"}]}'`,
  ].join("\n");
  view.append(
    card(h("h2", {}, "Server"), h("p", {}, "Redis: ", health), h("p", { class: "muted small" },
      "Health endpoints: /healthz (process alive), /readyz (Redis answers), /metrics (Prometheus).")),
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

  const [counts, r] = await Promise.all([Promise.all(tiles.map((t) => count(t[2]))), ready()]);
  counts.forEach((c, i) => { values[i].textContent = c; });
  health.replaceChildren(badge(r === "ready" ? "ready" : "error", r));
}
