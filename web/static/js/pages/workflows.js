// Workflows: list, create, edit (PUT replaces the whole workflow) and
// delete. The form has the spec's Event-Driven Workflow section
// (event_name, callback_timeout_seconds), mock settings, the structured
// output selector and up to 8 fallbacks.
import { all, api, enc } from "../api.js";
import {
  badge, busy, card, clear, confirmDialog, ellipsis, emptyState, errorBox, field, h, loading, mono,
  pageHeader, route, select, table, timeEl, toast,
} from "../dom.js";

const PROVIDERS = [["mock", "mock (no model key needed)"], ["openai", "openai (or compatible)"], ["anthropic", "anthropic"]];
const MAX_FALLBACKS = 8;

export async function render(view, params) {
  if (params[0] === "new") return renderForm(view, null);
  if (params[0] === "edit" && params[1]) return renderForm(view, params[1]);
  return renderList(view);
}

async function renderList(view) {
  const newBtn = h("a", { class: "btn btn-primary", href: "#/workflows/new" }, "New workflow");
  view.append(pageHeader("Workflows", "What a task runs: provider and model, fallbacks, output schema, and whether it waits for your callback.", newBtn));
  const body = h("div", {}, loading());
  view.append(body);
  let items;
  let outputs = [];
  try {
    [items, outputs] = await Promise.all([all("api/console/workflow"), all("api/console/structured-output").catch(() => [])]);
  } catch (err) {
    body.replaceChildren(errorBox(err, "Loading workflows"));
    return;
  }
  const outName = new Map(outputs.map((o) => [o.id, o.name]));
  if (!items.length) {
    body.replaceChildren(emptyState("No workflows yet",
      "A workflow names the model a task runs on. Create one, then submit tasks with its name.",
      h("a", { class: "btn btn-primary", href: "#/workflows/new" }, "Create your first workflow")));
    return;
  }
  const cols = [{ label: "Name" }, { label: "Model" }, { label: "Type" }, { label: "Structured output" },
    { label: "Fallbacks" }, { label: "Updated" }, { label: "", cls: "col-actions" }];
  body.replaceChildren(table(cols, items, (w) => {
    const del = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
    del.addEventListener("click", async () => {
      if (!(await confirmDialog(`Delete workflow “${w.name}”?`,
        "Tasks already accepted keep running; new submissions naming it will be refused."))) return;
      await busy(del, async () => {
        try {
          await api.del("api/console/workflow/" + enc(w.name));
          toast(`Workflow “${w.name}” deleted.`);
          window.dispatchEvent(new HashChangeEvent("hashchange")); // redraw: the list may now be empty
        } catch (err) {
          toast(`Could not delete: ${err.message}`, "bad");
        }
      });
    });
    return [
      h("a", { href: route("workflows", "edit", w.name), class: "strong" }, ellipsis(w.name)),
      h("span", {}, ellipsis(`${w.provider} / ${w.model}`)),
      w.event_name ? h("span", { class: "stack" }, badge("ai_generated", "event-driven"), mono(w.event_name, "small"))
        : h("span", { class: "muted" }, "standard"),
      w.structured_output_id ? ellipsis(outName.get(w.structured_output_id) || w.structured_output_id) : h("span", { class: "muted" }, "—"),
      (w.fallbacks || []).length ? ellipsis(w.fallbacks.map((f) => `${f.provider}/${f.model}`).join(" → ")) : h("span", { class: "muted" }, "none"),
      timeEl(w.updated_at),
      h("span", { class: "row-actions" }, h("a", { class: "btn btn-small", href: route("workflows", "edit", w.name) }, "Edit"), del),
    ];
  }, { cls: "workflows" }));
}

function fallbackRow(list, f = { provider: "openai", model: "" }) {
  const prov = select(PROVIDERS.map(([v]) => v), f.provider);
  prov.setAttribute("aria-label", "Fallback provider");
  const model = h("input", { type: "text", value: f.model || "", placeholder: "model", "aria-label": "Fallback model", spellcheck: "false" });
  const rm = h("button", { type: "button", class: "btn btn-small", "aria-label": "Remove this fallback" }, "Remove");
  const row = h("div", { class: "fallback-row" }, prov, model, rm);
  rm.addEventListener("click", () => {
    row.remove();
    list.dispatchEvent(new Event("change"));
  });
  return row;
}

async function renderForm(view, name) {
  const editing = name !== null;
  view.append(pageHeader(editing ? `Edit workflow` : "New workflow",
    editing ? "Saving replaces the whole workflow. Tasks already accepted keep the version they started with." :
      "The name is what your backend sends as \"workflow\"."));
  const body = h("div", {}, loading());
  view.append(body);
  let wf = null;
  let outputs = [];
  try {
    [wf, outputs] = await Promise.all([
      editing ? api.get("api/console/workflow/" + enc(name)) : Promise.resolve(null),
      all("api/console/structured-output").catch(() => []),
    ]);
  } catch (err) {
    body.replaceChildren(errorBox(err, "Loading the workflow"), h("a", { href: "#/workflows" }, "Back to workflows"));
    return;
  }
  wf = wf || { provider: "mock", model: "", fallbacks: [] };

  const nameIn = h("input", { type: "text", name: "name", value: wf.name || "", required: true, maxlength: 128,
    pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*", spellcheck: "false", disabled: editing, placeholder: "customer-support-summary" });
  const provider = select(PROVIDERS, wf.provider);
  provider.name = "provider";
  const model = h("input", { type: "text", name: "model", value: wf.model || "", spellcheck: "false", placeholder: "gpt-4o, claude-…; optional for mock" });
  const prompt = h("textarea", { name: "system_prompt", rows: 4, placeholder: "Optional instructions sent before the messages" });
  prompt.value = wf.system_prompt || "";
  const out = select([["", "None (free text or JSON)"], ...outputs.map((o) => [o.id, `${o.name} (${o.id})`])], wf.structured_output_id || "");
  out.name = "structured_output_id";
  if (wf.structured_output_id && !outputs.some((o) => o.id === wf.structured_output_id)) {
    out.append(h("option", { value: wf.structured_output_id, selected: true }, wf.structured_output_id));
  }

  const fbList = h("div", { class: "fallbacks" });
  for (const f of wf.fallbacks || []) fbList.append(fallbackRow(fbList, f));
  const addFb = h("button", { type: "button", class: "btn btn-small" }, "Add fallback");
  const syncFb = () => {
    addFb.disabled = fbList.children.length >= MAX_FALLBACKS;
    syncMock();
  };
  addFb.addEventListener("click", () => {
    fbList.append(fallbackRow(fbList));
    syncFb();
    fbList.lastChild.querySelector("input").focus();
  });
  fbList.addEventListener("change", syncFb);

  const eventName = h("input", { type: "text", name: "event_name", value: wf.event_name || "", spellcheck: "false",
    maxlength: 128, placeholder: "e.g. new_movie_suggestion", pattern: "[A-Za-z0-9][A-Za-z0-9_.:\\-]*" });
  const cbTimeout = h("input", { type: "number", name: "callback_timeout_seconds", min: 1, max: 86400, inputmode: "numeric",
    value: wf.callback_timeout_seconds || "", placeholder: "server default (RIVERHUB_CALLBACK_TIMEOUT, 5 min)" });

  const mock = wf.mock || {};
  const mockResp = h("textarea", { name: "mock_response", rows: 4, spellcheck: "false", class: "mono-input",
    placeholder: "{\"summary\": \"…\"} — JSON, or plain text" });
  if (mock.response !== undefined && mock.response !== null) {
    mockResp.value = typeof mock.response === "string" ? mock.response : JSON.stringify(mock.response, null, 2);
  }
  const mockHint = h("span", {});
  const mockDelay = h("input", { type: "number", name: "mock_delay_ms", min: 0, max: 600000, value: mock.delay_ms || "", placeholder: "0" });
  const mockErr = h("input", { type: "text", name: "mock_error", value: mock.error || "", placeholder: "empty: the attempt succeeds" });
  const mockChunk = h("input", { type: "number", name: "mock_stream_chunk_chars", min: 0, max: 65536, value: mock.stream_chunk_chars || "", placeholder: "8" });
  const mockEvery = h("input", { type: "number", name: "mock_stream_interval_ms", min: 0, max: 60000, value: mock.stream_interval_ms || "", placeholder: "20" });
  const mockFail = h("input", { type: "number", name: "mock_stream_fail_after", min: 0, max: 1048576, value: mock.stream_fail_after || "", placeholder: "0: never" });
  const stream = h("input", { type: "checkbox", name: "stream", checked: !!wf.stream });
  const mockBox = h("details", { class: "card details-card", open: true },
    h("summary", {}, "Mock provider settings"),
    h("p", { class: "muted small" }, "Used by the mock provider (as primary or fallback): no model key, a fixed answer."),
    field("Response", mockResp, mockHint),
    h("div", { class: "grid-2" }, field("Delay (ms)", mockDelay), field("Error", mockErr, "Makes every mock attempt fail with this message (tests fallbacks).")),
    h("div", { class: "grid-2" }, field("Streamed piece (characters)", mockChunk), field("Between pieces (ms)", mockEvery)),
    field("Streamed: fail after (characters)", mockFail, "Makes a streamed attempt fail mid-answer (with Error's message, if set): the room gets chunk_reset before the fallback's stream."));
  const describeMock = () => {
    const t = mockResp.value.trim();
    if (!t) mockHint.textContent = "Empty: the mock answers {\"content\": \"mock response\"}.";
    else {
      try {
        JSON.parse(t);
        mockHint.textContent = "Valid JSON: sent as the model's JSON answer.";
      } catch {
        mockHint.textContent = "Not JSON: sent as the model's text.";
      }
    }
  };
  mockResp.addEventListener("input", describeMock);
  describeMock();
  function syncMock() {
    const used = provider.value === "mock" || [...fbList.querySelectorAll("select")].some((s) => s.value === "mock");
    mockBox.hidden = !used && !mockResp.value.trim() && !mockErr.value && !mockDelay.value && !mockChunk.value && !mockEvery.value && !mockFail.value;
  }
  provider.addEventListener("change", syncMock);
  fbList.addEventListener("input", syncMock);
  syncMock();

  const msg = h("div", {});
  const save = h("button", { type: "submit", class: "btn btn-primary" }, editing ? "Save changes" : "Create workflow");
  const form = h("form", { class: "form", novalidate: true },
    card(h("h2", {}, "Basics"),
      field("Name", nameIn, editing ? "Names cannot be changed." : "Letters, digits, _ - . (at most 128)."),
      h("div", { class: "grid-2" }, field("Provider", provider), field("Model", model)),
      field("System prompt", prompt),
      field("Structured output", out, h("span", {}, "The answer must validate against this JSON Schema. ",
        h("a", { href: "#/outputs" }, "Manage structured outputs"))),
      h("label", { class: "check" }, stream, h("span", {}, "Stream answers into the room as they are written (chunk events; a request's stream wins)"))),
    card(h("h2", {}, "Fallbacks"),
      h("p", { class: "muted small" }, "Tried in order when an attempt fails (timeout, 429, 5xx, invalid output). At most 8."),
      fbList, addFb),
    card(h("h2", {}, "Event-driven workflow"),
      h("p", { class: "muted small" }, "With an event name, riverhub sends task.ai_generated to your webhook and waits for your backend's callback before the final response reaches the browser. Leave it empty for a standard workflow."),
      h("div", { class: "grid-2" }, field("Event name", eventName), field("Callback timeout (seconds)", cbTimeout))),
    mockBox,
    msg,
    h("div", { class: "actions form-actions" }, h("a", { class: "btn", href: "#/workflows" }, "Cancel"), save));
  body.replaceChildren(form);
  if (!editing) nameIn.focus();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(msg);
    const problems = [];
    const n = nameIn.value.trim();
    if (!editing && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(n)) problems.push("The name is required and may hold only letters, digits, _ - and . (starting with a letter or digit).");
    const ev = eventName.value.trim();
    if (ev && !/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(ev)) problems.push("The event name may hold only letters, digits, _ - . and :.");
    const cb = cbTimeout.value.trim();
    if (cb && !(Number.isInteger(Number(cb)) && Number(cb) >= 1 && Number(cb) <= 86400)) problems.push("The callback timeout is a whole number of seconds between 1 and 86400.");
    if (provider.value !== "mock" && !model.value.trim()) problems.push("A model is required for this provider.");
    const fallbacks = [...fbList.children].map((row) => ({ provider: row.querySelector("select").value, model: row.querySelector("input").value.trim() }));
    if (fallbacks.some((f) => f.provider !== "mock" && !f.model)) problems.push("Every fallback needs a model (except mock).");
    if (problems.length) {
      msg.append(h("div", { class: "alert alert-bad", role: "alert" }, h("strong", {}, "Check the form: "), h("ul", {}, problems.map((p) => h("li", {}, p)))));
      return;
    }
    let mockOut = null;
    const t = mockResp.value.trim();
    const streamFields = [["stream_chunk_chars", mockChunk], ["stream_interval_ms", mockEvery], ["stream_fail_after", mockFail]];
    if (t || mockErr.value.trim() || mockDelay.value || streamFields.some(([, el]) => el.value)) {
      mockOut = {};
      if (t) {
        try {
          mockOut.response = JSON.parse(t);
        } catch {
          mockOut.response = mockResp.value;
        }
      }
      if (mockDelay.value) mockOut.delay_ms = Number(mockDelay.value);
      if (mockErr.value.trim()) mockOut.error = mockErr.value.trim();
      for (const [k, el] of streamFields) if (el.value) mockOut[k] = Number(el.value);
    }
    const payload = {
      name: editing ? wf.name : n, provider: provider.value, model: model.value.trim(),
      system_prompt: prompt.value, structured_output_id: out.value, fallbacks,
      event_name: ev, callback_timeout_seconds: cb ? Number(cb) : 0, mock: mockOut, stream: stream.checked,
    };
    await busy(save, async () => {
      try {
        if (editing) await api.put("api/console/workflow/" + enc(wf.name), payload);
        else await api.post("api/console/workflow", payload);
        toast(editing ? `Workflow “${payload.name}” saved.` : `Workflow “${payload.name}” created.`);
        location.hash = "#/workflows";
      } catch (err) {
        msg.append(errorBox(err.code === "workflow_exists" ? { message: `A workflow named “${payload.name}” already exists: pick another name or edit that one.`, code: err.code } : err,
          editing ? "Saving" : "Creating the workflow"));
      }
    });
  });
}
