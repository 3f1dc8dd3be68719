// Webhooks: endpoints that receive signed task events. Create (the secret
// is shown at once), reveal, rotate (the old secret signs beside the new
// one for 24 h), enable/disable and edit with PATCH, delete.
import { all, api, enc } from "../api.js";
import {
  badge, busy, card, clear, confirmDialog, copyButton, emptyState, errorBox, field, h, loading, mono, pageHeader,
  route, timeEl, toast,
} from "../dom.js";

const EVENTS = [
  ["task.completed", "task.completed — the final result (standard workflows, and failures)"],
  ["task.ai_generated", "task.ai_generated — the AI step of an event-driven workflow, before your callback"],
];

function eventBoxes(selected) {
  const boxes = EVENTS.map(([v, label]) => {
    const cb = h("input", { type: "checkbox", value: v, checked: !selected || selected.includes(v) });
    return h("label", { class: "check" }, cb, h("span", {}, label));
  });
  const wrap = h("fieldset", { class: "field" }, h("legend", {}, "Events"), boxes);
  wrap.values = () => boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
  return wrap;
}

function secretBox(title, secret, extra) {
  return h("div", { class: "secret alert alert-info", role: "note" },
    h("strong", {}, title),
    h("div", { class: "secret-row" }, h("code", { class: "mono secret-value" }, secret), copyButton(secret, "Copy secret")),
    h("p", { class: "small" }, "Store it in your backend (for example RIVERHUB_WEBHOOK_SECRET) and verify the mr-signature header with it."),
    extra || null);
}

export async function render(view) {
  const toggle = h("button", { type: "button", class: "btn btn-primary" }, "New webhook");
  view.append(pageHeader("Webhooks", "Endpoints that receive signed task.completed and task.ai_generated events, retried until they answer 2xx.", toggle));
  const formSlot = h("div", {});
  const flash = h("div", {});
  const listSlot = h("div", {}, loading());
  view.append(formSlot, flash, listSlot);

  const openForm = () => {
    if (formSlot.firstChild) return;
    formSlot.append(createForm(() => clear(formSlot), (w) => {
      clear(formSlot);
      flash.replaceChildren(secretBox(`Webhook created. Its signing secret:`, w.secret,
        h("p", { class: "small" }, "Endpoint ", mono(w.id), " → ", mono(w.url))));
      load();
    }));
    formSlot.querySelector("input")?.focus();
  };
  toggle.addEventListener("click", openForm);

  async function load() {
    let items;
    try {
      items = await all("api/console/webhook");
    } catch (err) {
      listSlot.replaceChildren(errorBox(err, "Loading webhooks"));
      return;
    }
    if (!items.length) {
      const b = h("button", { type: "button", class: "btn btn-primary" }, "Add an endpoint");
      b.addEventListener("click", openForm);
      listSlot.replaceChildren(emptyState("No webhook endpoints yet",
        "Add the URL of your backend's webhook handler: every finished task is POSTed there, signed with the endpoint's secret.", b));
      return;
    }
    listSlot.replaceChildren(h("div", { class: "cards" }, items.map((w) => hookCard(w, load, flash))),
      h("p", { class: "muted small" }, "To see an endpoint receive an event, submit a task (or use the Playground); each attempt shows in the channel's timeline under Request logs."));
  }
  await load();
}

function hookCard(w, reload, flash) {
  const slot = h("div", {});
  const head = h("div", { class: "card-head" });
  const state = badge(w.enabled ? "enabled" : "disabled", w.enabled ? "enabled" : "disabled");
  const toggle = h("button", { type: "button", class: "btn btn-small" }, w.enabled ? "Disable" : "Enable");
  toggle.addEventListener("click", () => busy(toggle, async () => {
    try {
      const u = await api.patch("api/console/webhook/" + enc(w.id), { enabled: !w.enabled });
      w.enabled = u.enabled;
      state.replaceWith(badge(w.enabled ? "enabled" : "disabled"));
      toast(w.enabled ? "Endpoint enabled." : "Endpoint disabled: its deliveries are dead-lettered until you enable it.");
      reload();
    } catch (err) {
      slot.replaceChildren(errorBox(err, w.enabled ? "Disabling" : "Enabling"));
    }
  }));
  const reveal = h("button", { type: "button", class: "btn btn-small", "aria-expanded": "false" }, "Reveal secret");
  reveal.addEventListener("click", () => busy(reveal, async () => {
    if (slot.querySelector(".secret")) {
      clear(slot);
      reveal.setAttribute("aria-expanded", "false");
      return;
    }
    try {
      const full = await api.get("api/console/webhook/" + enc(w.id));
      slot.replaceChildren(secretBox("Signing secret", full.secret, full.previous_secret
        ? h("p", { class: "small" }, "The previous secret still signs until ", timeEl(full.previous_secret_expires_at), ".") : null));
      reveal.setAttribute("aria-expanded", "true");
    } catch (err) {
      slot.replaceChildren(errorBox(err, "Reading the secret"));
    }
  }));
  const rotate = h("button", { type: "button", class: "btn btn-small" }, "Rotate secret");
  rotate.addEventListener("click", async () => {
    if (!(await confirmDialog("Rotate the signing secret?",
      "A new secret signs every delivery from now on; the current one also keeps signing for 24 hours, so you can update your backend without dropping events.",
      "Rotate", false))) return;
    await busy(rotate, async () => {
      try {
        const r = await api.post("api/console/webhook/" + enc(w.id) + "/rotate-secret");
        slot.replaceChildren(secretBox("New signing secret (copy it now):", r.secret, r.previous_secret_expires_at
          ? h("p", { class: "small" }, "The previous secret keeps signing until ", timeEl(r.previous_secret_expires_at), ".") : null));
        toast("Secret rotated.");
      } catch (err) {
        slot.replaceChildren(errorBox(err, "Rotating the secret"));
      }
    });
  });
  const test = h("button", { type: "button", class: "btn btn-small" }, "Send test event");
  test.addEventListener("click", () => busy(test, async () => {
    try {
      const { delivery_id: id } = await api.post("api/console/webhook/" + enc(w.id) + "/test");
      const line = h("p", { class: "test-result" }, "Test delivery ", mono(id), " sent; waiting for the answer…");
      slot.replaceChildren(line);
      // Follow it until its first attempt is recorded (about 10 s at most).
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 500));
        const d = await api.get("api/console/dlq/" + enc(id));
        if (!d.attempts) continue;
        const code = d.last_status_code ? `HTTP ${d.last_status_code}` : (d.last_error || "no answer");
        line.replaceChildren(d.status === "succeeded"
          ? h("span", {}, badge("success", "passed"), " Test delivery ", mono(id), ` answered ${code}.`)
          : h("span", {}, badge("error", "failed"), " Test delivery ", mono(id), ` failed: ${code}` +
            (d.next_attempt_at ? "; it will be retried on the schedule." : ".")));
        return;
      }
      line.append(" No answer recorded yet; see the endpoint's deliveries later.");
    } catch (err) {
      slot.replaceChildren(errorBox(err, "Sending a test event"));
    }
  }));
  const edit = h("button", { type: "button", class: "btn btn-small" }, "Edit");
  edit.addEventListener("click", () => {
    if (slot.querySelector("form")) return clear(slot);
    slot.replaceChildren(editForm(w, () => clear(slot), reload));
  });
  const del = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
  del.addEventListener("click", async () => {
    if (!(await confirmDialog("Delete this webhook endpoint?", `${w.url} will receive no more events. Deliveries still pending are dead-lettered.`))) return;
    await busy(del, async () => {
      try {
        await api.del("api/console/webhook/" + enc(w.id));
        toast("Webhook deleted.");
        flash.replaceChildren();
        reload();
      } catch (err) {
        slot.replaceChildren(errorBox(err, "Deleting"));
      }
    });
  });
  head.append(h("h3", { class: "url mono" }, w.url), state);
  return card(
    head,
    w.description ? h("p", {}, w.description) : null,
    h("p", { class: "muted small meta" }, mono(w.id), " · ", (w.events || []).join(", "), " · created ", timeEl(w.created_at)),
    h("div", { class: "actions wrap" }, toggle, reveal, rotate, test, edit,
      h("a", { class: "btn btn-small", href: route("dlq") + "?webhook_id=" + enc(w.id) }, "Dead letters"), del),
    slot);
}

function createForm(close, created) {
  const url = h("input", { type: "url", name: "url", required: true, placeholder: "https://api.yourapp.com/webhooks/ai", spellcheck: "false" });
  const desc = h("input", { type: "text", name: "description", maxlength: 1024, placeholder: "optional" });
  const events = eventBoxes(null);
  const msg = h("div", {});
  const save = h("button", { type: "submit", class: "btn btn-primary" }, "Create webhook");
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
  cancel.addEventListener("click", close);
  const form = h("form", { class: "form card", novalidate: true }, h("h2", {}, "New webhook"),
    field("Endpoint URL", url, "https:// in production; private and loopback addresses are refused there."),
    field("Description", desc), events, msg, h("div", { class: "actions form-actions" }, cancel, save));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(msg);
    if (!url.value.trim()) {
      msg.append(errorBox({ message: "Enter the URL of your endpoint." }, "Creating"));
      return;
    }
    const ev = events.values();
    if (!ev.length) {
      msg.append(errorBox({ message: "Pick at least one event." }, "Creating"));
      return;
    }
    await busy(save, async () => {
      try {
        created(await api.post("api/console/webhook", { url: url.value.trim(), description: desc.value, events: ev }));
      } catch (err) {
        msg.append(errorBox(err, "Creating the webhook"));
      }
    });
  });
  return form;
}

function editForm(w, close, reload) {
  const url = h("input", { type: "url", name: "url", value: w.url, required: true, spellcheck: "false" });
  const desc = h("input", { type: "text", name: "description", value: w.description || "", maxlength: 1024 });
  const events = eventBoxes(w.events);
  const msg = h("div", {});
  const save = h("button", { type: "submit", class: "btn btn-primary" }, "Save");
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
  cancel.addEventListener("click", close);
  const form = h("form", { class: "form inset", novalidate: true }, field("Endpoint URL", url), field("Description", desc), events, msg,
    h("div", { class: "actions form-actions" }, cancel, save));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(msg);
    const ev = events.values();
    if (!ev.length) {
      msg.append(errorBox({ message: "Pick at least one event." }, "Saving"));
      return;
    }
    await busy(save, async () => {
      try {
        await api.patch("api/console/webhook/" + enc(w.id), { url: url.value.trim(), description: desc.value, events: ev });
        toast("Webhook saved.");
        reload();
      } catch (err) {
        msg.append(errorBox(err, "Saving"));
      }
    });
  });
  return form;
}
