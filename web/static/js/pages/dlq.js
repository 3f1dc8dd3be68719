// Dead letters: deliveries that failed every attempt of the retry
// schedule. Inspect one, replay one, replay the selected ones, replay all
// (optionally of one endpoint), or discard.
import { all, api, enc } from "../api.js";
import { deliveryCard } from "../delivery.js";
import {
  badge, busy, clear, confirmDialog, emptyState, errorBox, h, loading, mono, pageHeader, route, select, table,
  tableRow, timeEl, toast,
} from "../dom.js";

export async function render(view, params, query) {
  if (params[0]) return renderOne(view, params[0]);
  return renderList(view, query);
}

async function discard(d) {
  if (!(await confirmDialog("Discard this dead letter?", `Delivery ${d.id} will not be sent again and leaves the queue.`, "Discard"))) return false;
  await api.del("api/console/dlq/" + enc(d.id));
  toast("Dead letter discarded.");
  return true;
}

async function renderOne(view, id) {
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/dlq" }, "Dead letters"), " / ", mono(id)));
  view.append(pageHeader("Delivery", "Every attempt, the payload and headers as sent."));
  const slot = h("div", {}, loading());
  view.append(slot);
  async function load() {
    let d;
    try {
      d = await api.get("api/console/dlq/" + enc(id));
    } catch (err) {
      slot.replaceChildren(err.status === 404
        ? emptyState("Delivery not found", "It may have been discarded, or it expired.", h("a", { class: "btn", href: "#/dlq" }, "Back to dead letters"))
        : errorBox(err, "Loading the delivery"));
      return;
    }
    const msg = h("div", {});
    const extra = [];
    if (d.status === "dead") {
      const del = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Discard");
      del.addEventListener("click", () => busy(del, async () => {
        try {
          if (await discard(d)) location.hash = "#/dlq";
        } catch (err) {
          msg.replaceChildren(errorBox(err, "Discarding"));
        }
      }));
      extra.push(del);
    }
    slot.replaceChildren(deliveryCard(d, { onChange: load, showChannel: true, extra }), msg);
  }
  await load();
}

async function renderList(view, query) {
  const webhookID = query.get("webhook_id") || "";
  const replayAll = h("button", { type: "button", class: "btn" }, webhookID ? "Replay all of this endpoint" : "Replay all");
  const replaySel = h("button", { type: "button", class: "btn btn-primary", disabled: true }, "Replay selected");
  view.append(pageHeader("Dead letters", "Deliveries that failed every attempt. Fix the receiver, then replay them: the webhook-id stays the same, so receivers can dedupe.",
    replaySel, replayAll));
  const hookSel = select([["", "All endpoints"]], webhookID);
  hookSel.setAttribute("aria-label", "Endpoint");
  hookSel.addEventListener("change", () => {
    location.hash = "#/dlq" + (hookSel.value ? "?webhook_id=" + enc(hookSel.value) : "");
  });
  const hooks = new Map();
  view.append(h("div", { class: "toolbar" }, h("label", { class: "muted" }, "Endpoint "), hookSel));
  const msg = h("div", {});
  const results = h("div", {}, loading());
  view.append(msg, results);

  try {
    for (const w of await all("api/console/webhook")) {
      hooks.set(w.id, w);
      hookSel.append(h("option", { value: w.id, selected: w.id === webhookID }, w.description ? `${w.description} (${w.url})` : w.url));
    }
  } catch {
    // the list still works with bare ids
  }

  const selected = new Set();
  const empty = () => emptyState("No dead letters", "Every delivery reached its endpoint, or was replayed or discarded. Deliveries land here after the last retry fails.",
    h("a", { class: "btn", href: "#/webhooks" }, "Check your webhooks"));
  // removed drops a row; the last one gone leaves the empty state.
  const removed = (el) => {
    el?.closest("tr")?.remove();
    if (!results.querySelector("tbody tr")) {
      replayAll.disabled = true;
      results.replaceChildren(empty());
    }
  };
  const syncSel = () => {
    replaySel.disabled = selected.size === 0;
    replaySel.textContent = selected.size ? `Replay selected (${selected.size})` : "Replay selected";
  };

  let first;
  const q = { webhook_id: webhookID, limit: 50 };
  try {
    first = await api.get("api/console/dlq", q);
  } catch (err) {
    results.replaceChildren(errorBox(err, "Loading dead letters"));
    return;
  }
  if (!first.items?.length) {
    replayAll.disabled = true;
    results.replaceChildren(empty());
    return;
  }

  const all_ = h("input", { type: "checkbox", "aria-label": "Select all" });
  const cols = [{ label: "", cls: "col-check" }, { label: "Dead since" }, { label: "Event" }, { label: "Endpoint" },
    { label: "Channel" }, { label: "Attempts" }, { label: "Last result" }, { label: "", cls: "col-actions" }];
  const rowFn = (d) => {
    const cb = h("input", { type: "checkbox", class: "dl-check", "aria-label": `Select delivery ${d.id}`, value: d.id });
    cb.addEventListener("change", () => {
      if (cb.checked) selected.add(d.id);
      else selected.delete(d.id);
      syncSel();
    });
    const replay = h("button", { type: "button", class: "btn btn-small btn-primary" }, "Replay");
    replay.addEventListener("click", () => busy(replay, async () => {
      try {
        await api.post("api/console/dlq/" + enc(d.id) + "/replay");
        toast("Replayed: the delivery is sent again now.");
        selected.delete(d.id);
        syncSel();
        removed(replay);
      } catch (err) {
        msg.replaceChildren(errorBox(err, "Replay"));
      }
    }));
    const del = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Discard");
    del.addEventListener("click", () => busy(del, async () => {
      try {
        if (await discard(d)) {
          selected.delete(d.id);
          syncSel();
          removed(del);
        }
      } catch (err) {
        msg.replaceChildren(errorBox(err, "Discarding"));
      }
    }));
    const w = hooks.get(d.webhook_id);
    return [
      cb, timeEl(d.dead_at || d.created_at), d.event,
      h("span", { class: "stack" }, w ? mono(w.url, "url") : null, mono(d.webhook_id, "small muted")),
      h("a", { href: route("logs", d.channel_id), class: "mono", title: d.channel_id }, d.channel_id.slice(0, 8) + "…"),
      String(d.attempts),
      h("span", { class: "stack" }, badge("dead", d.last_status_code ? String(d.last_status_code) : "failed"),
        d.last_error ? h("span", { class: "small text-bad" }, d.last_error) : null),
      h("span", { class: "row-actions" }, h("a", { class: "btn btn-small", href: route("dlq", d.id) }, "Inspect"), replay, del),
    ];
  };
  const tbl = table(cols, first.items, rowFn, { cls: "dlq" });
  tbl.querySelector("th").append(all_);
  all_.addEventListener("change", () => {
    for (const cb of tbl.querySelectorAll(".dl-check")) {
      cb.checked = all_.checked;
      cb.dispatchEvent(new Event("change"));
    }
  });
  const tbody = tbl.querySelector("tbody");
  let cursor = first.next_cursor;
  const more = h("button", { type: "button", class: "btn", hidden: !cursor }, "Load more");
  more.addEventListener("click", () => busy(more, async () => {
    try {
      const page = await api.get("api/console/dlq", { ...q, cursor });
      for (const d of page.items || []) tbody.append(tableRow(cols, rowFn(d)));
      cursor = page.next_cursor;
    } catch (err) {
      msg.replaceChildren(errorBox(err, "Loading more"));
    }
  }).then(() => { more.hidden = !cursor; }));
  results.replaceChildren(tbl, h("div", { class: "load-more" }, more));

  replaySel.addEventListener("click", () => busy(replaySel, async () => {
    clear(msg);
    const ids = [...selected];
    let ok = 0;
    const failed = [];
    for (const id of ids) {
      try {
        await api.post("api/console/dlq/" + enc(id) + "/replay");
        ok++;
        selected.delete(id);
        removed(tbody.querySelector(`input.dl-check[value="${CSS.escape(id)}"]`));
      } catch (err) {
        failed.push(`${id}: ${err.message}`);
      }
    }
    if (ok) toast(`Replayed ${ok} deliver${ok === 1 ? "y" : "ies"}.`);
    if (failed.length) msg.append(errorBox({ message: failed.join("; ") }, "Replaying some deliveries"));
  }).then(syncSel));

  replayAll.addEventListener("click", async () => {
    const what = webhookID ? "every dead letter of this endpoint" : "every dead letter of the project";
    if (!(await confirmDialog("Replay all?", `This sends ${what} again now.`, "Replay all", false))) return;
    await busy(replayAll, async () => {
      try {
        const r = await api.post("api/console/dlq/replay", webhookID ? { webhook_id: webhookID } : {});
        toast(`Replayed ${r.replayed} deliver${r.replayed === 1 ? "y" : "ies"}.`);
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      } catch (err) {
        msg.replaceChildren(errorBox(err, "Replay all"));
      }
    });
  });
  return () => selected.clear();
}
