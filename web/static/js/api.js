// The console API client. The key lives in sessionStorage (this tab only,
// gone when it closes) and travels only in the Authorization header.

const STORAGE = "riverhub.apiKey";

export function getKey() {
  try {
    return sessionStorage.getItem(STORAGE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  sessionStorage.setItem(STORAGE, key);
}

export function clearKey() {
  try {
    sessionStorage.removeItem(STORAGE);
  } catch {
    // storage disabled: nothing to clear
  }
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function notImplemented(err) {
  return err instanceof ApiError && (err.status === 501 || err.code === "not_implemented");
}

// root is the server's base URL: the console lives at <root>console/, so
// this also works behind a proxy that mounts riverhub under a path.
export const root = new URL("../", document.baseURI);

export function serverURL(path) {
  return new URL(path.replace(/^\//, ""), root);
}

// socketURL is the Phoenix endpoint on this server (the client appends
// /websocket). The console talks to the server that serves it, whatever
// RIVERHUB_PUBLIC_URL says.
export function socketURL() {
  const u = serverURL("socket");
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

const friendly = {
  401: "The API key was not accepted (unknown or deleted).",
  404: "Not found: it may have been deleted, or it belongs to another project.",
  429: "The server is busy (too many requests). Try again in a moment.",
  501: "Not available on this server yet: this version of riverhub does not serve this part of the API.",
};

// request calls the API and returns the decoded JSON answer; failures
// throw an ApiError whose message is fit to show.
export async function request(method, path, body, query) {
  const url = serverURL(path);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  const key = getKey();
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "network", "Could not reach the server. Check that riverhub is running, then try again.");
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const code = (data && typeof data.error === "string" && data.error) || `http_${res.status}`;
    let message = data && typeof data.message === "string" && data.message;
    if (res.status === 501) message = friendly[501];
    if (!message) message = friendly[res.status] || `The server answered ${res.status} ${res.statusText}.`;
    const err = new ApiError(res.status, code, message);
    if (res.status === 401) window.dispatchEvent(new CustomEvent("riverhub:unauthorized", { detail: err }));
    throw err;
  }
  return data;
}

export const api = {
  get: (path, query) => request("GET", path, undefined, query),
  post: (path, body) => request("POST", path, body === undefined ? {} : body),
  put: (path, body) => request("PUT", path, body),
  patch: (path, body) => request("PATCH", path, body),
  del: (path) => request("DELETE", path),
};

// all reads every page of a list (the console's lists are small: workflows,
// webhooks, keys), up to max items.
export async function all(path, max = 2000) {
  const items = [];
  let cursor = "";
  do {
    const page = await api.get(path, { limit: 500, cursor });
    items.push(...(page?.items || []));
    cursor = page?.next_cursor || "";
  } while (cursor && items.length < max);
  return items;
}

export const enc = encodeURIComponent;
