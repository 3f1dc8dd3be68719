// API keys of the project: list, create (the key is shown once), delete.
import { all, api, enc, getKey } from "../api.js";
import {
  badge, busy, clear, confirmDialog, copyButton, emptyState, errorBox, field, h, loading, mono, pageHeader, table,
  timeEl, toast,
} from "../dom.js";

export async function render(view) {
  const name = h("input", { type: "text", name: "name", placeholder: "e.g. backend-production", maxlength: 128, required: true });
  const create = h("button", { type: "submit", class: "btn btn-primary" }, "Create key");
  const msg = h("div", {});
  const form = h("form", { class: "inline-form card", novalidate: true, "aria-label": "Create an API key" },
    field("New key name", name, "A label to recognise it later; the key itself is shown only once."), create);
  const flash = h("div", {});
  const listSlot = h("div", {}, loading());
  view.append(pageHeader("API keys", "Keys of this project. Only a hash is stored: a lost key cannot be shown again, create a new one."),
    form, msg, flash, listSlot);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clear(msg);
    if (!name.value.trim()) {
      msg.append(errorBox({ message: "Give the key a name." }, "Creating the key"));
      return;
    }
    busy(create, async () => {
      try {
        const k = await api.post("api/console/keys", { name: name.value.trim() });
        name.value = "";
        flash.replaceChildren(h("div", { class: "secret alert alert-info", role: "note" },
          h("strong", {}, `Key “${k.name}” created. Copy it now: it will not be shown again.`),
          h("div", { class: "secret-row" }, h("code", { class: "mono secret-value new-key" }, k.key), copyButton(k.key, "Copy key"))));
        load();
      } catch (err) {
        msg.append(errorBox(err, "Creating the key"));
      }
    });
  });

  const mine = getKey();
  async function load() {
    let items;
    try {
      items = await all("api/console/keys");
    } catch (err) {
      listSlot.replaceChildren(errorBox(err, "Loading keys"));
      return;
    }
    if (!items.length) {
      listSlot.replaceChildren(emptyState("No keys", "Create a key for each backend that calls riverhub."));
      return;
    }
    const cols = [{ label: "Name" }, { label: "Starts with" }, { label: "Created" }, { label: "", cls: "col-actions" }];
    listSlot.replaceChildren(table(cols, items, (k) => {
      const current = mine.startsWith(k.prefix);
      const del = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
      del.addEventListener("click", async () => {
        const warn = current ? " This looks like the key this console is signed in with: you will be signed out." : "";
        if (!(await confirmDialog(`Delete key “${k.name}”?`, `Requests with it will be refused at once.${warn}`))) return;
        await busy(del, async () => {
          try {
            await api.del("api/console/keys/" + enc(k.id));
            toast(`Key “${k.name}” deleted.`);
            load();
          } catch (err) {
            listSlot.prepend(errorBox(err, "Deleting the key"));
          }
        });
      });
      return [
        h("span", { class: "stack" }, h("span", { class: "ellipsis strong", title: k.name }, k.name),
          h("span", {}, k.admin ? badge("info", "admin") : null, current ? badge("ok", "this console") : null)),
        mono(k.prefix + "…"), timeEl(k.created_at), h("span", { class: "row-actions" }, del),
      ];
    }, { cls: "keys" }));
  }
  await load();
}
