// Webhooks: endpoints that receive signed task events. Create (the secret
// is shown at once), reveal, rotate (the old secret signs beside the new
// one for 24 h), enable/disable and edit with PATCH, delete. Each endpoint
// shows its health (the server's circuit state, recent failures, why it
// waits or was disabled); while one is unhealthy the page re-reads the
// health every few seconds and repaints only that part of each card.
import { all, api, enc } from "../api.js";
import {
  badge, busy, card, clear, confirmDialog, copyButton, emptyState, errorBox, field, fromNow, h, loading, mono, pageHeader,
  route, timeEl, toast,
} from "../dom.js";

const HEALTH_REFRESH_MS = 5000;
// States that change by themselves (a probe, a pause running out).
const MOVING = new Set(["degraded", "open", "probing", "paused"]);

const STATE_TEXT = {
  healthy: "Deliveries go as usual.",
  degraded: "Recent attempts failed, but deliveries still go: the circuit is closed.",
  open: "Circuit open: deliveries wait without using attempts (they keep their place and webhook-id) until one probe tests the endpoint.",
  probing: "One delivery is probing the endpoint now; the others wait for its answer.",
  paused: "The receiver asked to wait (Retry-After): deliveries wait without using attempts.",
};

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
    const cards = items.map((w) => hookCard(w, load, flash));
    painters = new Map(cards.map((c) => [c.dataset.id, c.paint]));
    listSlot.replaceChildren(h("div", { class: "cards" }, cards),
      h("p", { class: "muted small" }, "To see an endpoint receive an event, submit a task (or use the Playground); each attempt shows in the channel's timeline under Request logs."));
    schedule(items);
  }

  // Health changes without the user doing anything: follow it while an
  // endpoint is unhealthy, repainting the health only (open forms and
  // revealed secrets stay).
  let painters = new Map();
  let timer = null;
  let left = false;
  function schedule(items) {
    clearTimeout(timer);
    if (!left && items.some((w) => MOVING.has(w.health?.state))) timer = setTimeout(refreshHealth, HEALTH_REFRESH_MS);
  }
  async function refreshHealth() {
    let items;
    try {
      items = await all("api/console/webhook");
    } catch {
      return schedule([{ health: { state: "open" } }]); // try again later
    }
    if (left) return;
    if (items.length !== painters.size || items.some((w) => !painters.has(w.id))) return load();
    for (const w of items) painters.get(w.id)(w);
    schedule(items);
  }

  await load();
  return () => {
    left = true;
    clearTimeout(timer);
  };
}

function failureText(hl) {
  const n = hl.recent_attempts || 0;
  if (!n) return "No attempts yet";
  const failed = Math.round((hl.failure_rate || 0) * n);
  return `${failed} of ${n} recent attempts failed (${Math.round((hl.failure_rate || 0) * 100)}%)`;
}

// healthBlock explains an endpoint's state: the badge says what, this says
// why, since when, until when, and what to do about it.
function healthBlock(w, enable) {
  const hl = w.health || { state: w.enabled ? "healthy" : "disabled" };
  const st = w.enabled ? hl.state : "disabled";
  if (st === "disabled") {
    const auto = Boolean(w.disabled_reason);
    return h("div", { class: ["health", "alert", auto ? "alert-bad" : "alert-info"], role: "note", dataset: { state: st } },
      auto
        ? h("div", {}, h("strong", {}, "Disabled automatically"),
          w.disabled_at ? h("span", {}, " ", timeEl(w.disabled_at), ` (${fromNow(w.disabled_at)})`) : null,
          ": ", h("span", { class: "health-reason" }, w.disabled_reason))
        : h("div", {}, h("strong", {}, "Disabled by the project")),
      h("p", { class: "small" }, auto
        ? "Its pending deliveries were dead-lettered. Fix the receiver, enable the endpoint, then replay its dead letters."
        : "New deliveries are not sent to it, and pending ones are dead-lettered, until you enable it."),
      h("div", { class: "actions" }, enable,
        h("a", { class: "btn btn-small", href: route("dlq") + "?webhook_id=" + enc(w.id) }, "Its dead letters")));
  }
  const facts = h("dl", { class: "facts health-facts" },
    h("dt", {}, "Recent attempts"), h("dd", { class: "health-rate" }, failureText(hl)));
  const fact = (label, ...value) => facts.append(h("dt", {}, label), h("dd", {}, value));
  if (st !== "healthy") {
    if (hl.reason) fact("Reason", h("span", { class: "health-reason" }, hl.reason));
    if (hl.consecutive_failures) fact("Failing since", hl.failing_since ? [timeEl(hl.failing_since), ` (${fromNow(hl.failing_since)})`] : "—",
      ` · ${hl.consecutive_failures} failed in a row`);
    if (hl.open_until) {
      const due = new Date(hl.open_until) <= Date.now();
      fact(st === "paused" ? "Paused until" : "Open until", timeEl(hl.open_until),
        due ? " (over: the next delivery due goes)" : ` (${fromNow(hl.open_until)})`,
        st === "open" && !due ? "; then one delivery probes it" : "");
    }
    if (hl.last_error && !(hl.reason || "").includes(hl.last_error)) fact("Last error", h("span", { class: "text-bad" }, hl.last_error));
  }
  if (hl.last_attempt_at) fact("Last attempt", timeEl(hl.last_attempt_at), ` (${fromNow(hl.last_attempt_at)})`);
  return h("div", { class: ["health", "health-" + st], dataset: { state: st } },
    st !== "healthy" ? h("p", { class: "small health-text" }, STATE_TEXT[st] || "") : null, facts);
}

// stateBadge: the endpoint's health in one word. An endpoint disabled
// automatically is a failure; one disabled by hand is just off.
function stateBadge(w) {
  const st = w.enabled ? (w.health?.state || "healthy") : "disabled";
  const b = st === "disabled" ? badge(w.disabled_reason ? "error" : "disabled", "disabled") : badge(st, st);
  b.classList.add("health-badge");
  b.title = st === "disabled" ? (w.disabled_reason || "disabled by the project") : (STATE_TEXT[st] || "");
  return b;
}

function hookCard(w, reload, flash) {
  const slot = h("div", {});
  const head = h("div", { class: "card-head" });
  let state = stateBadge(w);
  const setEnabled = (button, on) => busy(button, async () => {
    try {
      const u = await api.patch("api/console/webhook/" + enc(w.id), { enabled: on });
      const wasAuto = Boolean(w.disabled_reason);
      w.enabled = u.enabled;
      toast(!w.enabled ? "Endpoint disabled: its deliveries are dead-lettered until you enable it."
        : wasAuto ? "Endpoint enabled. Replay its dead letters to send what it missed." : "Endpoint enabled.");
      reload();
    } catch (err) {
      slot.replaceChildren(errorBox(err, on ? "Enabling" : "Disabling"));
    }
  });
  const toggle = h("button", { type: "button", class: "btn btn-small" }, "Disable");
  toggle.addEventListener("click", () => setEnabled(toggle, false));
  const enable = h("button", { type: "button", class: "btn btn-small btn-primary" }, "Enable");
  enable.addEventListener("click", () => setEnabled(enable, true));
  let health = healthBlock(w, enable);
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
  toggle.hidden = !w.enabled; // a disabled endpoint's Enable sits with why it is off
  const c = card(
    head,
    w.description ? h("p", {}, w.description) : null,
    h("p", { class: "muted small meta" }, mono(w.id), " · ", (w.events || []).join(", "), " · created ", timeEl(w.created_at)),
    health,
    h("div", { class: "actions wrap" }, toggle, reveal, rotate, test, edit,
      h("a", { class: "btn btn-small", href: route("dlq") + "?webhook_id=" + enc(w.id) }, "Dead letters"), del),
    slot);
  c.dataset.id = w.id;
  // paint shows a fresh reading of the endpoint's health and enabled state.
  c.paint = (fresh) => {
    Object.assign(w, { enabled: fresh.enabled, health: fresh.health, disabled_reason: fresh.disabled_reason, disabled_at: fresh.disabled_at });
    const s2 = stateBadge(w);
    state.replaceWith(s2);
    state = s2;
    const h2 = healthBlock(w, enable);
    health.replaceWith(h2);
    health = h2;
    toggle.hidden = !w.enabled;
  };
  return c;
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
