/**
 * 审计: GET /audit page by page, newest first, filtered as the API allows (person, object type,
 * object number). Names come from GET /principals (admins have staff:manage); a reveal shows
 * the purpose the staff member gave, which the API stored as the entry's detail.
 */
import { api } from "../js/api.js";
import { can, me, timeZone } from "../js/context.js";
import { fill, h } from "../js/dom.js";

const PAGE_SIZE = 50;
const ROLE_LABELS = { agent: "工作人员", supervisor: "主管", admin: "管理员", service: "服务账号" };
const ACTIONS = {
  reveal_personal_data: "显示完整个人信息",
  read_resident: "查看居民档案",
  list_residents: "查看居民名单",
  lookup_resident: "按身份查找居民",
  update_resident: "修改居民信息",
  read_call: "查看通话记录",
  list_calls: "查看通话列表",
  read_conversation: "查看会话",
  provision_terminal: "登记一键呼叫终端",
  rotate_terminal_secret: "更换终端密钥",
  read_terminal_sip_digest: "读取终端通话凭据",
  create_principal: "创建账号",
  issue_service_token: "签发服务令牌",
};
const TYPES = {
  resident: "居民",
  order: "工单",
  call: "通话",
  conversation: "会话",
  terminal: "终端",
  principal: "账号",
};
const IDENTITY_KINDS = { phone: "电话", wechat_openid: "微信", terminal: "终端", web: "网页聊天" };

const form = document.getElementById("a-filters");
const errorBox = document.getElementById("a-error");
const tbody = document.querySelector("#a-table tbody");
const summary = document.getElementById("a-summary");
const prev = document.getElementById("a-prev");
const next = document.getElementById("a-next");
const pageLabel = document.getElementById("a-page");
const field = (name) => document.getElementById(`a-${name}`);

const names = new Map(); // principal id -> "显示名（角色）"
let offset = 0;

const timeFormat = new Intl.DateTimeFormat("zh-CN", {
  timeZone,
  year: "numeric",
  month: "numeric",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

async function loadPrincipals() {
  if (!can("staff:manage")) return;
  try {
    const select = field("principal");
    for (const p of await api("/principals")) {
      const name = `${p.display_name}（${p.username}，${ROLE_LABELS[p.role] ?? p.role}）`;
      names.set(p.id, name);
      // The URL's person may already stand there by number: name it, do not add it twice.
      const known = select.querySelector(`option[value="${p.id}"]`);
      if (known) known.textContent = name;
      else select.append(h("option", { value: String(p.id) }, name));
    }
  } catch {
    // Names are a convenience: the numbers are still shown.
  }
}

function who(id) {
  const name = names.get(id) ?? `工作人员 #${id}`;
  return me && id === me.id ? `${name}（我）` : name;
}

function target(entry) {
  const type = TYPES[entry.resource_type] ?? entry.resource_type;
  if (entry.resource_id == null) return `${type}（多条）`;
  const text = `${type} #${entry.resource_id}`;
  if (entry.resource_type === "resident") {
    return h("a", { href: `/console/residents?id=${entry.resource_id}` }, text);
  }
  if (entry.resource_type === "order") {
    return h("a", { href: `/console/orders?order=${entry.resource_id}` }, text);
  }
  return text;
}

function detailOf(entry) {
  const detail = entry.detail;
  if (entry.action === "reveal_personal_data") {
    return detail
      ? h("span", { class: "audit-purpose" }, `用途：${detail}`)
      : h("span", { class: "audit-no-purpose" }, "未说明用途");
  }
  if (!detail) return "—";
  const rows = /^(\d+) rows$/.exec(detail);
  if (rows) return `返回 ${rows[1]} 条`;
  if (entry.action === "lookup_resident") return `按${IDENTITY_KINDS[detail] ?? detail}查找`;
  const resident = /^resident (\d+)$/.exec(detail);
  if (resident)
    return h("a", { href: `/console/residents?id=${resident[1]}` }, `居民 #${resident[1]}`);
  return detail;
}

function row(entry) {
  const reveal = entry.action === "reveal_personal_data";
  return h(
    "tr",
    {
      class: reveal ? "audit-reveal" : "",
      dataset: { auditId: String(entry.id), action: entry.action },
    },
    h("td", {}, h("time", { datetime: entry.at }, timeFormat.format(new Date(entry.at)))),
    h("td", {}, who(entry.principal_id)),
    h(
      "td",
      {},
      reveal ? h("strong", {}, ACTIONS[entry.action]) : (ACTIONS[entry.action] ?? entry.action),
    ),
    h("td", {}, target(entry)),
    h("td", {}, detailOf(entry)),
  );
}

function readFilters() {
  return {
    principal_id: field("principal").value,
    resource_type: field("type").value,
    resource_id: field("id").value.trim(),
  };
}

function syncUrl() {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(readFilters())) if (value) q.set(key, value);
  if (offset) q.set("offset", String(offset));
  const query = q.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}`);
}

let latest = 0; // the newest load: an older answer arriving late must not overwrite it
let shown = []; // the entries on screen

async function load() {
  const mine = ++latest;
  errorBox.textContent = "";
  field("id").removeAttribute("aria-invalid");
  const f = readFilters();
  if (f.resource_id && !/^[1-9]\d{0,9}$/.test(f.resource_id)) {
    errorBox.textContent = "对象编号应是正整数。";
    field("id").setAttribute("aria-invalid", "true");
    field("id").focus();
    return;
  }
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(f)) if (value) q.set(key, value);
  q.set("limit", String(PAGE_SIZE));
  q.set("offset", String(offset));
  summary.textContent = "正在加载……";
  try {
    const page = await api(`/audit?${q}`);
    if (mine !== latest) return;
    shown = page.items;
    fill(tbody, shown.map(row));
    const last = offset + page.items.length;
    summary.textContent = page.total
      ? `共 ${page.total} 条记录，当前显示第 ${offset + 1}–${last} 条。`
      : "没有符合条件的审计记录。";
    const pages = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
    pageLabel.textContent = `第 ${Math.floor(offset / PAGE_SIZE) + 1} 页，共 ${pages} 页`;
    prev.disabled = offset === 0;
    next.disabled = last >= page.total;
  } catch (error) {
    if (mine !== latest) return;
    shown = [];
    fill(tbody);
    summary.textContent = "";
    errorBox.textContent = error.message;
    prev.disabled = next.disabled = true;
  }
  document.documentElement.dataset.ready = "audit";
}

/** To another page of the list (0: the first, after new filters). */
function goTo(start) {
  offset = Math.max(0, start);
  syncUrl();
  load();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  goTo(0);
});
document.getElementById("a-clear").addEventListener("click", () => {
  form.reset();
  goTo(0);
});
prev.addEventListener("click", () => goTo(offset - PAGE_SIZE));
next.addEventListener("click", () => goTo(offset + PAGE_SIZE));

async function start() {
  // The URL's filters go into the form before anything is awaited, and the list does not wait
  // for the names: what a quick user chooses meanwhile is never overwritten.
  const q = new URLSearchParams(location.search);
  const principal = /^[1-9]\d{0,9}$/.test(q.get("principal_id") ?? "") ? q.get("principal_id") : "";
  if (principal) field("principal").append(h("option", { value: principal }, `工作人员 #${principal}`));
  field("principal").value = principal;
  field("type").value = TYPES[q.get("resource_type")] ? q.get("resource_type") : "";
  field("id").value = /^[1-9]\d{0,9}$/.test(q.get("resource_id") ?? "") ? q.get("resource_id") : "";
  offset = Math.max(0, Number(q.get("offset")) || 0);
  const named = loadPrincipals();
  await load();
  await named;
  fill(tbody, shown.map(row)); // the same entries, now with names
}

start();
