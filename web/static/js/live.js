// A live view of one channel's room: opens the Phoenix socket with a
// ws_token and lists every message as it arrives.
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

// openLive joins answer.websocket_channel with answer.ws_token and appends
// each message to list; onMessage(payload) runs after. Returns the socket.
export function openLive(answer, { list, stateEl, onMessage, playground = false }) {
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
      list.append(liveMessage(event, payload, { playground }));
      onMessage?.(payload, event);
    },
  });
  sock.open();
  return sock;
}
