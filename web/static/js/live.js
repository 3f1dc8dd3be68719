// A live view of one channel's room: opens the Phoenix socket with a
// ws_token and lists every message as it arrives; a streamed answer's
// pieces (chunk, chunk_reset: docs/realtime.md, "Streamed answers") grow
// in a box of their own above the list.
import { api, socketURL } from "./api.js";
import { badge, h, jsonView } from "./dom.js";
import { ChannelSocket } from "./phoenix.js";

const describe = {
  ai_generated: "AI generated. Waiting for the backend callback…",
  simulating_callback: "Simulating backend callback…",
  completed: "Completed: the callback's result.",
  success: "Success: the final result.",
  error: "Error.",
};

// liveMessage renders one pushed message; simulated marks the playground.
export function liveMessage(event, payload, opts = {}) {
  const status = payload && typeof payload === "object" ? payload.status : undefined;
  let text = describe[status] || `Event “${event}”.`;
  if (status === "ai_generated" && opts.playground) text = "AI generated. The playground simulates your backend's callback.";
  if (status === "error" && payload?.error?.message) text = "Error: " + payload.error.message;
  if (status === "completed" && payload?.simulated) text = "Completed with a simulated callback.";
  return h("li", { class: ["live-msg", "live-" + (status || "other")], dataset: { status: status || "" } },
    h("div", { class: "live-head" }, badge(status || "info", status || event),
      h("span", { class: "live-text" }, text),
      h("span", { class: "spacer" }),
      h("time", { class: "muted small" }, new Date().toLocaleTimeString())),
    jsonView(payload, { label: "payload" }));
}

// The messages after which no chunk comes: the answer is whole.
const FINAL = new Set(["success", "error", "ai_generated", "completed"]);

// streamAnswer is the box a streamed answer grows in: each chunk's delta is
// appended, in order, as text (a text node: never parsed as HTML), and a
// chunk_reset clears it with a note (an attempt failed; a retry or the
// fallback starts over). finish(payload) marks it whole when the final
// message comes. waiting: show it before the first chunk.
export function streamAnswer({ waiting = false } = {}) {
  const text = document.createTextNode("");
  const out = h("pre", { class: "stream-text", "aria-label": "Streamed answer", "aria-busy": "true" }, text);
  const state = h("span", { class: "stream-state muted small" }, "waiting for the first chunk…");
  const size = h("span", { class: "stream-size muted small" });
  const note = h("p", { class: "stream-note alert alert-warn small", role: "note", hidden: true });
  const el = h("div", { class: "stream-answer", dataset: { state: "waiting" }, hidden: !waiting },
    h("div", { class: "stream-head" }, h("strong", {}, "Answer"), state, h("span", { class: "spacer" }), size),
    note, out);
  let resets = 0;
  let chunks = 0;
  let done = false;
  const show = (s, label) => {
    el.hidden = false;
    el.dataset.state = s;
    state.textContent = label;
    size.textContent = `${[...text.data].length} characters`;
  };
  const say = (s) => {
    note.textContent = s;
    note.hidden = false;
  };
  return {
    el,
    text: () => text.data,
    chunk(p) {
      if (done || typeof p?.delta !== "string") return;
      chunks += 1;
      text.appendData(p.delta);
      show("streaming", "streaming…");
    },
    reset() {
      if (done) return;
      text.data = "";
      resets += 1;
      say("The attempt stopped: starting over with a retry or the fallback…" + (resets > 1 ? ` (restart ${resets})` : ""));
      show("streaming", "starting over…");
    },
    finish(payload) {
      const status = payload?.status;
      if (done || !FINAL.has(status)) return;
      done = true;
      out.setAttribute("aria-busy", "false");
      if (el.hidden) return; // nothing streamed, and nothing was waited for
      // The final message holds the whole answer: a plain-text one of which
      // the chunks spell only the start (the rest never came) replaces them.
      const d = payload?.data;
      const whole = d && typeof d === "object" && Object.keys(d).length === 1 && typeof d.content === "string" ? d.content : null;
      if ((status === "success" || status === "ai_generated") && whole !== null && whole !== text.data &&
        (!chunks || whole.startsWith(text.data))) {
        text.data = whole;
        say(chunks ? "Some chunks did not arrive: this is the answer from the final message." : "No chunk came: this is the answer from the final message.");
      }
      show(status === "error" ? "error" : "done", status === "error" ? "stopped: the task failed" : "complete");
    },
  };
}

// openLive joins answer.websocket_channel with answer.ws_token and appends
// each message to list; onMessage(payload) runs after. A streamed answer's
// chunks go to stream (a streamAnswer), or to one put above list at the
// first chunk; they are not listed and do not call onMessage. Returns the
// socket.
export function openLive(answer, { list, stateEl, onMessage, playground = false, stream = null }) {
  let box = stream;
  const streamBox = () => {
    if (!box) {
      box = streamAnswer();
      list.before(box.el);
    }
    return box;
  };
  const sock = new ChannelSocket({
    url: socketURL(),
    token: answer.ws_token,
    topic: answer.websocket_channel,
    // A reconnect asks for a fresh token: it works with single-use tokens too.
    freshToken: async () => (await api.post("api/v1/ai/reconnect", { channel_id: answer.channel_id })).ws_token,
    onState: (s, detail) => {
      if (!stateEl) return;
      const label = { connecting: "connecting…", joined: "live", refused: "refused", disconnected: "reconnecting…", closed: "closed", ended: "ended" }[s] || s;
      stateEl.replaceChildren(badge(s, label));
      if (detail) stateEl.append(h("span", { class: "muted small" }, " ", detail));
    },
    onMessage: (event, payload) => {
      if (event === "chunk") return streamBox().chunk(payload);
      if (event === "chunk_reset") return streamBox().reset(payload);
      list.append(liveMessage(event, payload, { playground }));
      box?.finish(payload);
      onMessage?.(payload, event);
    },
  });
  sock.open();
  return sock;
}
