// The page's one way to the API: the session's key on every request, JSON errors as ApiError,
// and one prompt for a key when the server asks for one (401) or refuses this one the action
// (403: another key may do it; the user may keep the current one and drop the action).

const KEY = "depthmill.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let askForKey = null; // (reason, { mayKeep }) => Promise<string> (the key entered, or ""), set by the page
let asking = null;

export function onKeyNeeded(prompt) { askForKey = prompt; }
export function apiKey() { return sessionStorage.getItem(KEY); }
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}
export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function errorOf(status, text) {
  try {
    const body = JSON.parse(text);
    if (body.error) return new ApiError(status, body.error.code, body.error.message);
  } catch { /* not JSON: a proxy's page */ }
  return new ApiError(status, `http_${status}`, `the server answered ${status}`);
}

export const refusesKey = (status) => status === 401 || status === 403;

// Waits for a key when the server refuses the request for want of one (or of a key that may do
// it); one prompt at a time. Throws the error when the user keeps a key that may not.
export async function keyRefused(error) {
  if (!askForKey) throw error;
  if (!asking) {
    const forbidden = error.status === 403;
    const reason = forbidden ? `That key may not do this (${error.message}). Enter one that may.`
      : apiKey() ? `That key was refused (${error.message}).` : "This depthmill needs an API key.";
    asking = askForKey(reason, { mayKeep: forbidden }).then((entered) => {
      if (!entered && forbidden) return false;
      setApiKey(entered);
      return true;
    }).finally(() => { asking = null; });
  }
  if (!(await asking)) throw error;
}

export async function api(path, { method = "GET", json } = {}) {
  for (;;) {
    const headers = authHeaders();
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    const res = await fetch(path, { method, headers, body });
    if (res.ok) return res.status === 204 ? null : res.json();
    const error = await errorOf(res.status, await res.text());
    if (!refusesKey(res.status)) throw error;
    await keyRefused(error);
  }
}

// Local storage signs URLs with the address the server was configured with; the page may have
// been opened at another one (a LAN address, from a headset), so its own files are fetched from
// the page's origin.
export function sameOrigin(url) {
  if (!url) return url;
  const u = new URL(url, location.href);
  return u.pathname.startsWith("/api/files/") ? u.pathname + u.search : u.href;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
