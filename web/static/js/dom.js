// Building the page with DOM APIs only. Text is always set with textContent
// or text nodes, never parsed as HTML: whatever a payload, a name or a URL
// holds is shown as inert text. No function here takes markup.

// h creates an element. props: class, text, dataset, on<event> handlers,
// element properties (value, checked, disabled...) and attributes.
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") {
      el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    } else if (k === "text") {
      el.textContent = String(v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "href") {
      el.setAttribute("href", safeHref(v));
    } else if (k === "value" || k === "checked" || k === "disabled" || k === "selected" || k === "open") {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

// safeHref allows in-console routes and http(s) links only.
function safeHref(v) {
  const s = String(v);
  if (s.startsWith("#") || /^https?:\/\//i.test(s)) return s;
  return "#";
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// route builds a console link; the parts are encoded.
export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
}

// --- time -------------------------------------------------------------------

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const thisYear = d.getFullYear() === new Date().getFullYear();
  return d.toLocaleString(undefined, { year: thisYear ? undefined : "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function ago(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return "";
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

// fromNow says how far a time is from now, either way ("in 4 s", "2 min ago").
export function fromNow(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return "";
  const s = Math.round((d.getTime() - Date.now()) / 1000);
  if (s <= 0) return ago(iso);
  if (s < 60) return `in ${s} s`;
  if (s < 3600) return `in ${Math.round(s / 60)} min`;
  if (s < 86400) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

// preciseTime shows milliseconds: retries of a short schedule are apart by
// less than a second. Today's date is left out.
export function preciseTime(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return "—";
  const t = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 });
  if (d.toDateString() === new Date().toDateString()) return t;
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + t;
}

export function timeEl(iso, precise = false) {
  return h("time", { datetime: iso || "", title: iso || "", class: "nowrap" }, precise ? preciseTime(iso) : fmtTime(iso));
}

// --- status -----------------------------------------------------------------

const tones = {
  success: "ok", completed: "ok", succeeded: "ok", ok: "ok", enabled: "ok", ready: "ok",
  error: "bad", failed: "bad", dead: "bad", refused: "bad", disabled: "muted",
  pending: "wait", generating: "wait", delivering: "wait", retrying: "wait", joining: "wait",
  connecting: "wait", disconnected: "wait", ai_generated: "info", awaiting_callback: "info",
  joined: "ok", closed: "muted", ended: "muted", info: "info", warn: "wait", cancelled: "muted", simulating_callback: "wait",
  // endpoint health
  healthy: "ok", degraded: "wait", open: "bad", probing: "info", paused: "wait",
};

export function tone(status) {
  return tones[status] || "muted";
}

export function badge(status, label) {
  return h("span", { class: ["badge", "badge-" + tone(status)] }, label ?? status ?? "unknown");
}

// --- text helpers -----------------------------------------------------------

// mono shows an id or URL: wraps anywhere, never widens the layout.
export function mono(text, cls) {
  return h("span", { class: ["mono", cls], title: String(text ?? "") }, text ?? "—");
}

export function ellipsis(text, cls) {
  return h("span", { class: ["ellipsis", cls], title: String(text ?? "") }, text ?? "—");
}

export function truncate(s, n) {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

// --- copy -------------------------------------------------------------------

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection copy
  }
  const ta = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

export function copyButton(getText, label = "Copy", cls = "btn-small") {
  const b = h("button", { type: "button", class: ["btn", cls] }, label);
  b.addEventListener("click", async () => {
    const text = typeof getText === "function" ? await getText() : getText;
    const ok = await copyText(text);
    toast(ok ? "Copied to the clipboard." : "Could not copy: select the text and copy it by hand.", ok ? "ok" : "bad");
  });
  return b;
}

// --- JSON -------------------------------------------------------------------

function compact(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

// jsonView shows a value collapsed to one line, pretty-printed on demand.
export function jsonView(value, opts = {}) {
  const text = value === undefined ? "null" : compact(value);
  const wrap = h("div", { class: "json" });
  const summary = h("code", { class: "json-summary mono", title: truncate(text, 2000) }, truncate(text, 240));
  const pre = h("pre", { class: "json-pretty", hidden: true });
  const size = new Blob([text]).size;
  const toggle = h("button", { type: "button", class: "btn btn-small", "aria-expanded": "false" }, "Pretty-print");
  toggle.addEventListener("click", () => {
    const open = pre.hidden;
    if (open && !pre.textContent) pre.textContent = JSON.stringify(value, null, 2);
    pre.hidden = !open;
    summary.hidden = open;
    toggle.textContent = open ? "Collapse" : "Pretty-print";
    toggle.setAttribute("aria-expanded", String(open));
  });
  const bar = h("div", { class: "json-bar" },
    opts.label ? h("span", { class: "json-label" }, opts.label) : null,
    h("span", { class: "muted small" }, formatBytes(size)),
    h("span", { class: "spacer" }),
    toggle, copyButton(() => JSON.stringify(value, null, 2)));
  append(wrap, [bar, summary, pre]);
  if (opts.open) toggle.click();
  return wrap;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// --- feedback ---------------------------------------------------------------

export function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: ["toast", "toast-" + kind] }, message);
  while (box.children.length >= 2) box.firstChild.remove(); // the newest matter
  box.append(t);
  setTimeout(() => t.remove(), kind === "bad" ? 8000 : 4000);
}

// errorBox explains an error in words (an ApiError carries the server's
// message and code).
export function errorBox(err, what) {
  const box = h("div", { class: "alert alert-bad", role: "alert" });
  const title = what ? `${what} failed` : "Something went wrong";
  append(box, [h("strong", {}, title + ": "), err?.message || String(err)]);
  if (err?.code && err.code !== "network") append(box, [" ", h("span", { class: "muted small mono" }, `(${err.code})`)]);
  return box;
}

export function notice(text, kind = "info") {
  return h("div", { class: ["alert", "alert-" + kind], role: kind === "bad" ? "alert" : "note" }, text);
}

export function loading(text = "Loading…") {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), text);
}

export function emptyState(title, text, action) {
  return h("div", { class: "empty" }, h("h3", {}, title), h("p", {}, text), action || null);
}

// confirmDialog asks before something that cannot be undone.
export function confirmDialog(title, text, confirmLabel = "Delete", danger = true) {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: ["btn", danger ? "btn-danger" : "btn-primary"] }, confirmLabel);
    const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
    const dlg = h("dialog", { class: "dialog", "aria-label": title },
      h("h2", {}, title), h("p", {}, text), h("div", { class: "actions" }, cancel, ok));
    const done = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dlg.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

// busy disables a button while fn runs.
export async function busy(button, fn) {
  const label = button.textContent;
  button.disabled = true;
  button.classList.add("is-busy");
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.classList.remove("is-busy");
    button.textContent = label;
  }
}

// --- forms ------------------------------------------------------------------

let seq = 0;

export function field(label, input, hint) {
  if (!input.id) input.id = "f" + ++seq;
  const hintEl = hint ? h("div", { class: "hint", id: input.id + "-hint" }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hintEl);
}

export function select(options, value) {
  const s = h("select");
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    s.append(h("option", { value: v, selected: v === value }, label));
  }
  return s;
}

// table renders rows responsively: a table on wide screens, labelled
// blocks on narrow ones (the labels come from cols, never from data).
export function table(cols, rows, rowFn, opts = {}) {
  const head = h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", class: c.cls }, c.label))));
  const body = h("tbody");
  for (const r of rows) body.append(tableRow(cols, rowFn(r), opts.rowClass?.(r)));
  return h("div", { class: "table-wrap" }, h("table", { class: ["rt", opts.cls] }, head, body));
}

export function tableRow(cols, cells, cls) {
  const tr = h("tr", { class: cls });
  cells.forEach((cell, i) => tr.append(h("td", { dataset: { label: cols[i]?.label || "" }, class: cols[i]?.cls }, cell)));
  return tr;
}

export function pageHeader(title, subtitle, ...actions) {
  return h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", { class: "muted" }, subtitle) : null),
    actions.length ? h("div", { class: "actions" }, actions) : null);
}

export function card(...children) {
  return h("section", { class: "card" }, children);
}
