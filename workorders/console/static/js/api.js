/**
 * Calls to the work-order API with the session cookie (same origin). Unsafe methods carry the
 * session's CSRF token; a 401 means the session is over, so the browser goes to log in.
 */
import { csrfToken } from "./context.js";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `请求失败（${status}）`);
    this.status = status;
    this.code = body?.code || "http_error";
    this.details = body?.details || null;
  }
}

export function toLogin() {
  const back = location.pathname + location.search;
  location.assign(`/console/login?next=${encodeURIComponent(back)}`);
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = csrfToken();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (signal?.aborted && !signal.reason?.timeout) throw error; // the caller gave up
    throw new ApiError(0, { code: "network", message: "网络连接中断，请检查网络后重试。" });
  }
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, { code: "unauthorized", message: "登录已失效，请重新登录。" });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
