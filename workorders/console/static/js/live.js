/**
 * Live updates for every page: one long poll of GET /events, dispatched by event type.
 *
 * The last stream id seen is kept in sessionStorage, so a console that loses its network (or
 * moves to another page) resumes where it stopped and misses nothing; events carry `event_id`
 * for the at-least-once delivery, so repeats are dropped here.
 */
import { api } from "./api.js";

const KEY = "linli.console.events.after";
const WAIT_MS = 25000;
const handlers = new Map();
const seen = new Set();
let cursor = null;
let running = false;
let wake = null;

/** Call `handler(event)` for events of `type` ("*": all). Returns a function to stop. */
export function on(type, handler) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(handler);
  return () => handlers.get(type).delete(handler);
}

function dispatch(event) {
  const id = event.data?.event_id;
  if (id != null) {
    if (seen.has(id)) return;
    seen.add(id);
    if (seen.size > 5000) seen.delete(seen.values().next().value);
  }
  for (const type of [event.type, "*"]) {
    for (const handler of handlers.get(type) ?? []) {
      try {
        handler(event);
      } catch (error) {
        console.error("console event handler failed", event.type, error);
      }
    }
  }
}

/**
 * Where this tab's stream resumes. A tab without one starts "now": call this before loading a
 * page's data, so nothing between the load and the first poll is lost.
 */
export function ready() {
  if (!cursor) {
    cursor = (async () => {
      const saved = sessionStorage.getItem(KEY);
      if (saved) return saved;
      const page = await api("/events?after=%24&limit=1000");
      page.items.forEach(dispatch);
      sessionStorage.setItem(KEY, page.last_id);
      return page.last_id;
    })();
    cursor.catch(() => {
      cursor = null;
    });
  }
  return cursor;
}

function status(text, state) {
  const box = document.getElementById("connection");
  if (!box) return;
  box.textContent = text;
  box.dataset.state = state;
}

function pause(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

let inFlight = null;

addEventListener("online", () => wake?.());
// The browser knows the network is gone before a long poll would time out.
addEventListener("offline", () => inFlight?.abort({ timeout: true }));

/** Start polling (once per page); handlers registered later still get every event. */
export function start() {
  if (running) return;
  running = true;
  document.documentElement.dataset.live = "starting";
  (async () => {
    let failures = 0;
    let wait = 0; // the first poll answers at once: it brings what this tab missed
    for (;;) {
      const timeout = new AbortController();
      inFlight = timeout;
      const timer = setTimeout(() => timeout.abort({ timeout: true }), WAIT_MS + 10000);
      try {
        const after = await ready();
        const page = await api(
          `/events?after=${encodeURIComponent(after)}&wait_ms=${wait}&limit=200`,
          { signal: timeout.signal },
        );
        wait = WAIT_MS;
        page.items.forEach(dispatch);
        sessionStorage.setItem(KEY, page.last_id);
        cursor = Promise.resolve(page.last_id);
        if (failures > 0) {
          status("实时更新已恢复。", "ok");
          setTimeout(() => status("", "ok"), 5000);
        }
        failures = 0;
        document.documentElement.dataset.live = "connected";
      } catch (error) {
        if (error.status === 401) return; // api() is taking the browser to the log-in page
        failures += 1;
        wait = 0;
        document.documentElement.dataset.live = "retrying";
        status("实时更新已中断，正在重新连接……页面上的信息可能不是最新的。", "down");
        await pause(Math.min(1000 * 2 ** (failures - 1), 10000));
      } finally {
        clearTimeout(timer);
      }
    }
  })();
}
