/**
 * What the server tells every page (a JSON data block, never executed): who is signed in, the
 * Chinese labels and the life cycle's allowed moves, so the pages repeat none of them.
 */
const block = document.getElementById("linli-context");

export const context = block
  ? JSON.parse(block.textContent)
  : { me: null, labels: { status: {}, kind: {}, priority: {}, channel: {} }, transitions: {} };

export const me = context.me;
export const labels = context.labels;
export const transitions = context.transitions;
export const timeZone = context.timezone || "Asia/Shanghai";

export const statusLabel = (s) => labels.status[s] ?? s;
export const kindLabel = (k) => labels.kind[k] ?? k;
export const priorityLabel = (p) => labels.priority[p] ?? p;
export const channelLabel = (c) => labels.channel[c] ?? c;

/** Whether the signed-in account has a right (the server checks again). */
export const can = (scope) => Boolean(me && me.scopes.includes(scope));

/** The session's CSRF token, from the page's meta tag. */
export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

/** "（我）" for oneself, a name when known, else the account's number (agents cannot list
 * accounts; the number may be a service such as the chat bot). */
export function staffName(id, names = new Map()) {
  if (id == null) return "系统";
  if (me && id === me.id) return `${me.display_name}（我）`;
  return names.get(id) ?? `账号 #${id}`;
}
