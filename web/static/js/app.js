// The console shell: sign-in, navigation and the fragment router
// (#/workflows, #/logs/<channel_id>, ...). Pages are modules exporting
// render(view, params, query), which may return a cleanup function
// (sockets, timers) called when the page is left.
import { api, clearKey, getKey, setKey } from "./api.js";
import { clear, errorBox, field, h, toast } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as workflows from "./pages/workflows.js";
import * as outputs from "./pages/outputs.js";
import * as webhooks from "./pages/webhooks.js";
import * as logs from "./pages/logs.js";
import * as dlq from "./pages/dlq.js";
import * as playground from "./pages/playground.js";
import * as keys from "./pages/keys.js";

const nav = [
  ["overview", "Overview", overview],
  ["workflows", "Workflows", workflows],
  ["outputs", "Structured outputs", outputs],
  ["webhooks", "Webhooks", webhooks],
  ["logs", "Request logs", logs],
  ["dlq", "Dead letters", dlq],
  ["playground", "Playground", playground],
  ["keys", "API keys", keys],
];

const app = document.getElementById("app");
let cleanup = null;
let signedIn = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, query: new URLSearchParams(qs || "") };
}

function leave() {
  if (typeof cleanup === "function") {
    try {
      cleanup();
    } catch {
      // a page's cleanup must not break navigation
    }
  }
  cleanup = null;
}

// --- sign-in ----------------------------------------------------------------

function renderSignIn(reason) {
  leave();
  signedIn = false;
  document.title = "Sign in · riverhub console";
  const input = h("input", { type: "password", name: "api-key", autocomplete: "off", spellcheck: "false",
    placeholder: "mr_live_…", required: true, autofocus: true });
  const msg = h("div", { class: "signin-msg" });
  if (reason) msg.append(errorBox({ message: reason }, "Sign-in"));
  const button = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Sign in");
  const form = h("form", { class: "signin-form", novalidate: true },
    field("API key", input, "A key of your project. It stays in this browser tab (session storage) and is sent only in the Authorization header."),
    msg, button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    clear(msg);
    if (!key) {
      msg.append(errorBox({ message: "Paste an API key first." }, "Sign-in"));
      return;
    }
    button.disabled = true;
    button.textContent = "Checking…";
    setKey(key);
    try {
      await api.get("api/console/keys", { limit: 1 });
      if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/overview";
      renderShell();
    } catch (err) {
      clearKey();
      msg.append(errorBox(err.status === 401 ? { message: "This key was not accepted: check that you copied all of it." } : err, "Sign-in"));
      button.disabled = false;
      button.textContent = "Sign in";
    }
  });
  clear(app).append(h("main", { class: "signin" },
    h("div", { class: "signin-card" },
      h("div", { class: "brand brand-large" }, h("img", { src: "icon.svg", alt: "", width: 36, height: 36 }), "riverhub"),
      h("p", { class: "muted" }, "Console: workflows, webhooks, request logs, dead letters and the playground."),
      form,
      h("p", { class: "muted small" },
        "No key yet? In development, riverhub prints an admin key when it first starts; set RIVERHUB_ADMIN_KEY to choose your own."))));
  input.focus();
}

// --- shell ------------------------------------------------------------------

let shell = null;

function renderShell() {
  signedIn = true;
  const menu = h("button", { type: "button", class: "btn menu-btn", "aria-controls": "nav", "aria-expanded": "false" },
    h("span", { class: "burger", "aria-hidden": "true" }), h("span", { class: "menu-label" }, "Menu"));
  const links = nav.map(([id, label]) => h("a", { href: "#/" + id, dataset: { route: id } }, label));
  const navEl = h("nav", { id: "nav", class: "nav", "aria-label": "Console sections" }, links);
  const key = getKey();
  const signOut = h("button", { type: "button", class: "btn btn-small" }, "Sign out");
  signOut.addEventListener("click", () => {
    clearKey();
    location.hash = "";
    renderSignIn();
  });
  menu.addEventListener("click", () => {
    const open = !app.classList.contains("nav-open");
    app.classList.toggle("nav-open", open);
    menu.setAttribute("aria-expanded", String(open));
  });
  navEl.addEventListener("click", (e) => {
    if (e.target.closest("a")) {
      app.classList.remove("nav-open");
      menu.setAttribute("aria-expanded", "false");
    }
  });
  const main = h("main", { id: "main", class: "main", tabindex: "-1" });
  const top = h("header", { class: "topbar" },
    menu,
    h("a", { class: "brand", href: "#/overview" }, h("img", { src: "icon.svg", alt: "", width: 24, height: 24 }), "riverhub"),
    h("span", { class: "spacer" }),
    h("span", { class: "who muted small", title: "The key this tab is signed in with" }, key.slice(0, 14) + "…"),
    signOut);
  clear(app).append(top, h("div", { class: "body" }, navEl, main));
  shell = { main, links, menu };
  show();
}

async function show() {
  if (!signedIn || !shell) return;
  leave();
  const { parts, query } = parseHash();
  const id = parts[0] || "overview";
  const entry = nav.find(([n]) => n === id);
  for (const a of shell.links) {
    if (a.dataset.route === id) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = h("div", { class: "view" });
  shell.main.replaceChildren(view);
  if (!entry) {
    view.append(h("h1", {}, "Page not found"), h("p", {}, "That address is not a console page. "),
      h("a", { href: "#/overview" }, "Go to the overview"));
    return;
  }
  document.title = `${entry[1]} · riverhub console`;
  try {
    const c = await entry[2].render(view, parts.slice(1), query);
    // A page left while it was still loading is cleaned up at once.
    if (shell.main.firstChild === view) cleanup = c;
    else if (typeof c === "function") c();
  } catch (err) {
    view.append(errorBox(err, "Loading this page"));
  }
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", show);
window.addEventListener("riverhub:unauthorized", () => {
  if (!signedIn) return;
  clearKey();
  renderSignIn("Your API key is no longer accepted (it is unknown or was deleted). Sign in again.");
  toast("Signed out: the key was rejected.", "bad");
});

if (getKey()) renderShell();
else renderSignIn();
