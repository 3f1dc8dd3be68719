// Playground: run a workflow on typed messages without sending webhooks.
// POST /api/console/playground answers like an async submission; the page
// joins the channel's socket and shows each message as it arrives (for an
// event-driven workflow: ai_generated, then the simulated callback). With
// "Stream the answer" (the request's stream) the answer grows in a box as
// its chunk events arrive, before the final message.
import { all, api, notImplemented } from "../api.js";
import {
  badge, busy, card, clear, emptyState, errorBox, field, h, loading, mono, notice, pageHeader, route, select,
} from "../dom.js";
import { openLive, streamAnswer } from "../live.js";

const ROLES = ["user", "system", "assistant"];

function messageRow(list, role = "user", content = "") {
  const r = select(ROLES, role);
  r.setAttribute("aria-label", "Role");
  const c = h("textarea", { rows: 3, placeholder: "Message", "aria-label": "Message content" });
  c.value = content;
  const rm = h("button", { type: "button", class: "btn btn-small", "aria-label": "Remove this message" }, "Remove");
  const row = h("div", { class: "message-row" }, r, c, rm);
  rm.addEventListener("click", () => {
    if (list.children.length > 1) row.remove();
  });
  return row;
}

export async function render(view, params, query) {
  view.append(pageHeader("Playground", "Try a workflow: the AI step is real, no webhook is sent, and event-driven workflows get a simulated callback."));
  const body = h("div", {}, loading());
  view.append(body);
  let workflows;
  try {
    workflows = await all("api/console/workflow");
  } catch (err) {
    body.replaceChildren(errorBox(err, "Loading workflows"));
    return;
  }
  if (!workflows.length) {
    body.replaceChildren(emptyState("No workflow to try", "Create a workflow first (the mock provider needs no model key).",
      h("a", { class: "btn btn-primary", href: "#/workflows/new" }, "Create a workflow")));
    return;
  }
  const want = query.get("workflow");
  const wf = select(workflows.map((w) => [w.name, w.event_name ? `${w.name} (event: ${w.event_name})` : w.name]),
    workflows.some((w) => w.name === want) ? want : workflows[0].name);
  wf.name = "workflow";
  // The request's stream; it starts as the chosen workflow's.
  const streams = (name) => Boolean(workflows.find((w) => w.name === name)?.stream);
  const stream = h("input", { type: "checkbox", name: "stream", checked: streams(wf.value) });
  stream.setAttribute("aria-describedby", "stream-hint");
  wf.addEventListener("change", () => { stream.checked = streams(wf.value); });
  const streamField = h("div", { class: "field" },
    h("label", { class: "check" }, stream, h("span", {}, "Stream the answer")),
    h("div", { class: "hint", id: "stream-hint" }, "Sent as the request's stream: the answer grows here as the provider writes it (chunk events), " +
      "then the final message shows. It starts as the chosen workflow's setting."));
  const list = h("div", { class: "messages" });
  list.append(messageRow(list));
  const add = h("button", { type: "button", class: "btn btn-small" }, "Add message");
  add.addEventListener("click", () => {
    list.append(messageRow(list));
    list.lastChild.querySelector("textarea").focus();
  });
  const send = h("button", { type: "submit", class: "btn btn-primary" }, "Run");
  const msg = h("div", {});
  const form = h("form", { class: "form card", novalidate: true },
    field("Workflow", wf),
    streamField,
    h("div", { class: "field" }, h("div", { class: "label-row" }, h("span", { class: "label" }, "Messages"), h("span", { class: "spacer" }), add), list),
    msg, h("div", { class: "actions form-actions" }, send));
  const out = h("div", {});
  body.replaceChildren(form, out);

  let sock = null;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clear(msg);
    const messages = [...list.children].map((row) => ({ role: row.querySelector("select").value, content: row.querySelector("textarea").value }))
      .filter((m) => m.content.trim());
    if (!messages.length) {
      msg.append(errorBox({ message: "Type a message first." }, "Run"));
      return;
    }
    busy(send, async () => {
      let ans;
      try {
        ans = await api.post("api/console/playground", { workflow: wf.value, messages, stream: stream.checked });
      } catch (err) {
        msg.append(notImplemented(err)
          ? notice("The playground is not available on this server yet (POST /api/console/playground answers not_implemented). " +
            "Submit a task to POST /v1/ai/async instead and follow it under Request logs.", "warn")
          : errorBox(err, "Run"));
        return;
      }
      sock?.close();
      const live = h("ol", { class: "live-list" });
      const state = h("span", {});
      const status = h("span", { class: "channel-status" }, badge(ans.status || "pending"));
      // Shown at once when streaming was asked for; else at a first chunk.
      const answer = streamAnswer({ waiting: stream.checked });
      out.replaceChildren(card(
        h("div", { class: "card-head" }, h("h2", {}, "Responses"), h("span", { class: "spacer" }), state),
        h("p", { class: "muted small" }, "Channel ", h("a", { href: route("logs", ans.channel_id) }, mono(ans.channel_id)),
          " · ", status),
        answer.el, live));
      sock = openLive(ans, {
        list: live, stateEl: state, playground: true, stream: answer,
        onMessage: (p) => { if (p?.status) status.replaceChildren(badge(p.status)); },
      });
    });
  });
  return () => sock?.close();
}
