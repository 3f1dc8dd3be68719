// Structured outputs: JSON Schemas a workflow's answer must match. The
// editor checks the JSON as you type; the server checks the schema itself.
import { all, api, enc } from "../api.js";
import {
  busy, card, clear, confirmDialog, copyButton, emptyState, errorBox, field, h, jsonView, loading, mono,
  pageHeader, timeEl, toast,
} from "../dom.js";

const EXAMPLE = {
  type: "object",
  properties: {
    summary: { type: "string" },
    sentiment: { type: "string", enum: ["positive", "neutral", "negative"] },
  },
  required: ["summary", "sentiment"],
  additionalProperties: false,
};

// checkJSON reports where the text stops being JSON, in words.
export function checkJSON(text) {
  if (!text.trim()) return { ok: false, message: "The schema is empty." };
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" && typeof v !== "boolean") return { ok: false, message: "A JSON Schema is an object (or true/false)." };
    if (Array.isArray(v) || v === null) return { ok: false, message: "A JSON Schema is an object (or true/false), not an array or null." };
    return { ok: true, value: v };
  } catch (e) {
    let message = String(e.message || e);
    const m = /position (\d+)/.exec(message);
    if (m) {
      const pos = Number(m[1]);
      const before = text.slice(0, pos);
      const line = before.split("\n").length;
      const col = pos - before.lastIndexOf("\n");
      message = `Invalid JSON at line ${line}, column ${col}: ${message.replace(/\s*in JSON at position \d+.*$/, "")}`;
    } else {
      message = "Invalid JSON: " + message;
    }
    return { ok: false, message };
  }
}

export async function render(view) {
  const toggle = h("button", { type: "button", class: "btn btn-primary", "aria-expanded": "false" }, "New structured output");
  view.append(pageHeader("Structured outputs", "JSON Schemas (drafts 4 to 2020-12) that a workflow's answer is validated against.", toggle));
  const formSlot = h("div", {});
  const listSlot = h("div", {}, loading());
  view.append(formSlot, listSlot);

  const openForm = () => {
    if (formSlot.firstChild) return;
    toggle.setAttribute("aria-expanded", "true");
    formSlot.append(createForm(() => {
      clear(formSlot);
      toggle.setAttribute("aria-expanded", "false");
    }, load));
    formSlot.querySelector("input")?.focus();
  };
  toggle.addEventListener("click", openForm);

  async function load() {
    let items;
    try {
      items = await all("api/console/structured-output");
    } catch (err) {
      listSlot.replaceChildren(errorBox(err, "Loading structured outputs"));
      return;
    }
    if (!items.length) {
      const b = h("button", { type: "button", class: "btn btn-primary" }, "Create a structured output");
      b.addEventListener("click", openForm);
      listSlot.replaceChildren(emptyState("No structured outputs yet",
        "Add a JSON Schema, then pick it in a workflow: answers that do not match it count as failed attempts.", b));
      return;
    }
    listSlot.replaceChildren(h("div", { class: "cards" }, items.map((o) => outputCard(o, load))));
  }
  await load();
}

function outputCard(o, reload) {
  const del = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
  const slot = h("div", {});
  del.addEventListener("click", async () => {
    if (!(await confirmDialog(`Delete structured output “${o.name}”?`, "Workflows that use it must be changed first."))) return;
    await busy(del, async () => {
      try {
        await api.del("api/console/structured-output/" + enc(o.id));
        toast(`Structured output “${o.name}” deleted.`);
        reload();
      } catch (err) {
        slot.replaceChildren(errorBox(err.code === "output_in_use"
          ? { message: "A workflow still uses this schema: pick another structured output in that workflow first.", code: err.code } : err, "Deleting"));
      }
    });
  });
  return card(
    h("div", { class: "card-head" }, h("h3", { class: "ellipsis", title: o.name }, o.name), h("span", { class: "spacer" }),
      copyButton(o.id, "Copy id"), del),
    h("p", { class: "muted small" }, mono(o.id), " · created ", timeEl(o.created_at)),
    jsonView(o.schema, { label: "Schema" }),
    slot);
}

function createForm(close, reload) {
  const name = h("input", { type: "text", name: "name", required: true, placeholder: "movie_suggestion", spellcheck: "false" });
  const schema = h("textarea", { name: "schema", rows: 14, spellcheck: "false", class: "mono-input", placeholder: "{ \"type\": \"object\", … }" });
  const status = h("div", { class: "hint", "aria-live": "polite" });
  const check = () => {
    const r = checkJSON(schema.value);
    status.textContent = r.ok ? "Valid JSON." : r.message;
    status.className = "hint " + (r.ok ? "hint-ok" : schema.value.trim() ? "hint-bad" : "");
    schema.setAttribute("aria-invalid", String(!r.ok && !!schema.value.trim()));
    return r;
  };
  schema.addEventListener("input", check);
  const fmt = h("button", { type: "button", class: "btn btn-small" }, "Format");
  fmt.addEventListener("click", () => {
    const r = check();
    if (r.ok) schema.value = JSON.stringify(r.value, null, 2);
  });
  const example = h("button", { type: "button", class: "btn btn-small" }, "Insert example");
  example.addEventListener("click", () => {
    schema.value = JSON.stringify(EXAMPLE, null, 2);
    check();
  });
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
  cancel.addEventListener("click", close);
  const save = h("button", { type: "submit", class: "btn btn-primary" }, "Create");
  const msg = h("div", {});
  const form = h("form", { class: "form card", novalidate: true },
    h("h2", {}, "New structured output"),
    field("Name", name),
    h("div", { class: "field" }, h("div", { class: "label-row" }, h("label", { for: "schema-editor" }, "JSON Schema"),
      h("span", { class: "spacer" }), example, fmt), schema, status),
    msg, h("div", { class: "actions form-actions" }, cancel, save));
  schema.id = "schema-editor";
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(msg);
    const r = check();
    if (!name.value.trim()) {
      msg.append(errorBox({ message: "Give the structured output a name." }, "Creating"));
      return;
    }
    if (!r.ok) {
      msg.append(errorBox({ message: r.message }, "Creating"));
      schema.focus();
      return;
    }
    await busy(save, async () => {
      try {
        const o = await api.post("api/console/structured-output", { name: name.value.trim(), schema: r.value });
        toast(`Structured output “${o.name}” created (${o.id}).`);
        close();
        reload();
      } catch (err) {
        msg.append(errorBox(err, "Creating"));
      }
    });
  });
  return form;
}
