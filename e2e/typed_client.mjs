// @ts-check
// A riverhub client as people generate it from openapi.yaml: the types come
// from openapi-typescript (.gen/riverhub.d.ts), the calls go through
// openapi-fetch, and `tsc -p tsconfig.typed.json` checks this file against
// the types, so a path, parameter or field that the document lacks does not
// compile. Run against a node, it creates a mock workflow, submits a task,
// reads the channel until it is done and reads its log; it prints
// {channel_id, status, data, timeline} as one JSON line.
//
//   node typed_client.mjs --base http://127.0.0.1:8080 --key mr_live_…
import createClient from "openapi-fetch";

/** @typedef {import("./.gen/riverhub.js").paths} paths */

// Node's globals without @types/node: only argv is used.
const argv = /** @type {{process: {argv: string[]}}} */ (/** @type {unknown} */ (globalThis)).process.argv.slice(2);
/** @param {string} name */
const flag = (name) => argv[argv.indexOf(`--${name}`) + 1] ?? "";
const opt = { base: flag("base"), key: flag("key") };
/** @type {import("openapi-fetch").Client<paths>} */
const api = createClient({ baseUrl: opt.base, headers: { Authorization: `Bearer ${opt.key}` } });

/** @param {string} what @param {{error?: unknown, response: Response}} r */
function must(what, r) {
  if (r.error !== undefined || !r.response.ok) {
    throw new Error(`${what}: ${r.response.status} ${JSON.stringify(r.error)}`);
  }
}

const name = `typed-${Date.now()}`;
const wf = await api.POST("/api/console/workflow", {
  body: { name, provider: "mock", model: "mock-1", mock: { response: { ok: true } } },
});
must("create workflow", wf);

const sub = await api.POST("/v1/ai/async", {
  body: { workflow: name, messages: [{ role: "user", content: "hello" }], customer_data: { user: "typed" } },
});
must("submit", sub);
const channelID = sub.data?.channel_id ?? "";

/** @type {string} */
let status = "";
/** @type {unknown} */
let data = null;
for (let i = 0; i < 250 && !["success", "completed", "error"].includes(status); i++) {
  const ch = await api.GET("/api/v1/channels/{channel_id}", { params: { path: { channel_id: channelID } } });
  must("read channel", ch);
  status = ch.data?.status ?? "";
  const msg = /** @type {{data?: unknown} | null | undefined} */ (ch.data?.message);
  data = msg?.data ?? null;
  if (!["success", "completed", "error"].includes(status)) await new Promise((r) => setTimeout(r, 20));
}

const log = await api.GET("/api/console/logs/{channel_id}", { params: { path: { channel_id: channelID } } });
must("read log", log);
const timeline = (log.data?.timeline ?? []).map((e) => e.type);

console.log(JSON.stringify({ channel_id: channelID, status, data, timeline }));
