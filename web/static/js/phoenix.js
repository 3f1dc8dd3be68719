// A small Phoenix Channels client (protocol vsn 2.0.0), enough to follow
// one riverhub channel: frames are JSON arrays
// [join_ref, ref, topic, event, payload]; a heartbeat goes to topic
// "phoenix" every 30 s; the server replays the channel's history on join,
// so a reconnect misses nothing (repeats are dropped by their JSON text),
// and ends the join with phx_close after the channel's final message,
// after which there is nothing to wait for: the socket stops for good.

const HEARTBEAT_MS = 30000;
const RECONNECT_MS = [1000, 2000, 5000, 10000];

export class ChannelSocket {
  // url: the socket endpoint without /websocket; onMessage(event, payload);
  // onState(state, detail) with state connecting | joined | refused |
  // disconnected | closed | ended (the channel's final message came);
  // freshToken() (optional) resolves to a new token
  // for reconnects.
  constructor({ url, token, topic, onMessage, onState, freshToken }) {
    Object.assign(this, { url, token, topic, onMessage, onState, freshToken });
    this.ref = 0;
    this.tries = 0;
    this.closed = false;
    this.seen = new Set();
    this.pendingHeartbeat = null;
  }

  open() {
    this.closed = false;
    const u = new URL(this.url.replace(/\/+$/, "") + "/websocket");
    u.searchParams.set("vsn", "2.0.0");
    u.searchParams.set("token", this.token);
    this.state("connecting");
    let ws;
    try {
      ws = new WebSocket(u.toString());
    } catch (e) {
      this.state("disconnected", String(e?.message || e));
      this.retry();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.joinRef = this.nextRef();
      this.send([this.joinRef, this.joinRef, this.topic, "phx_join", {}]);
      this.timer = setInterval(() => this.heartbeat(), HEARTBEAT_MS);
    });
    ws.addEventListener("message", (ev) => this.receive(ev.data));
    ws.addEventListener("close", (ev) => {
      clearInterval(this.timer);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      this.state("disconnected", ev.reason || `connection closed (${ev.code})`);
      this.retry();
    });
  }

  nextRef() {
    this.ref += 1;
    return String(this.ref);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  heartbeat() {
    if (this.pendingHeartbeat) {
      // The last one was never answered: the connection is dead.
      this.pendingHeartbeat = null;
      this.ws?.close(4000, "heartbeat timeout");
      return;
    }
    this.pendingHeartbeat = this.nextRef();
    this.send([null, this.pendingHeartbeat, "phoenix", "heartbeat", {}]);
  }

  receive(data) {
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (!Array.isArray(f) || f.length !== 5) return;
    const [joinRef, ref, topic, event, payload] = f;
    if (event === "phx_reply") {
      if (ref === this.pendingHeartbeat) {
        this.pendingHeartbeat = null;
      } else if (ref === this.joinRef) {
        if (payload?.status === "ok") {
          this.tries = 0;
          this.state("joined");
        } else {
          const reason = payload?.response?.reason || "join refused";
          this.close(true);
          this.state("refused", reason);
        }
      }
      return;
    }
    if (topic !== this.topic) return;
    if (event === "phx_close") {
      // Our join's close follows the channel's final message; a stale
      // join's is no news.
      if (joinRef === this.joinRef) this.end();
      return;
    }
    if (event === "phx_error") {
      this.ws?.close(4001, event);
      return;
    }
    const key = event + "\u0000" + JSON.stringify(payload);
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.onMessage?.(event, payload);
  }

  // retry reconnects after a delay, with a fresh token when freshToken is
  // given (a deployment with single-use tokens refuses the spent one).
  retry() {
    if (this.closed) return;
    const wait = RECONNECT_MS[Math.min(this.tries, RECONNECT_MS.length - 1)];
    this.tries += 1;
    this.retryTimer = setTimeout(async () => {
      if (this.freshToken) {
        try {
          this.token = await this.freshToken();
        } catch {
          // keep the old one; the next retry asks again
        }
      }
      if (!this.closed) this.open();
    }, wait);
  }

  state(s, detail) {
    this.onState?.(s, detail);
  }

  // end stops without a leave or a reconnect: the server has ended the
  // channel, and a rejoin would only replay it and be ended again.
  end() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.timer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "channel ended");
    this.state("ended");
  }

  // close leaves the channel; quiet skips the "closed" state report.
  close(quiet) {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify([this.joinRef, this.nextRef(), this.topic, "phx_leave", {}]));
      }
      ws.close(1000, "closed by the console");
    }
    if (!quiet) this.state("closed");
  }
}
