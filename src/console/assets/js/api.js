// The admin API, called with the console's session cookie; changes carry the CSRF token.

let csrf = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error ? body.error : {};
    super(err.message || (typeof body === "string" && body) || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "";
    this.field = err.field || "";
    // The whole answer: some errors carry more than `error` (a failed plugin try its usage).
    this.body = body;
  }
}

export function setCsrf(token) { csrf = token; }
export function whenSignedOut(fn) { onSignedOut = fn; }

/** Calls the admin API. `body`: a JSON value, or a Blob/ArrayBuffer sent as bytes. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers["Content-Type"] = "application/wasm";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* text */ }
  if (!r.ok) {
    const e = new ApiError(r.status, data);
    if (r.status === 401 && path.startsWith("/admin/")) onSignedOut();
    throw e;
  }
  return data;
}

/** Like `api`, but a 404 or 405 (a route this gateway does not have yet) answers `fallback`. */
export async function optional(method, path, fallback) {
  try {
    return await api(method, path);
  } catch (e) {
    if (e.status === 404 || e.status === 405) return fallback;
    throw e;
  }
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

/** Query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;
