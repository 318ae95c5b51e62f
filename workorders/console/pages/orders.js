/**
 * 工单: the queue (filters as GET /work-orders offers them; 班组 among the loaded rows, which
 * the API cannot filter), SLA countdowns with a warning before a breach, and one order's
 * detail: its actions, assignment, notes and history. A refused move is shown in the API's
 * own Chinese words, with the moves that are allowed. Live from the event stream.
 */
import { api } from "../js/api.js";
import {
  can,
  channelLabel,
  kindLabel,
  labels,
  me,
  priorityLabel,
  staffName,
  statusLabel,
  transitions,
} from "../js/context.js";
import { announce, fill, h } from "../js/dom.js";
import { duration, formatTime } from "../js/format.js";
import * as live from "../js/live.js";

const PAGE_SIZE = 50;
const OPEN = ["new", "accepted", "in_progress", "on_hold"];
const WARN_SHARE = 0.25; // warn when less than a quarter of the time is left
const WARN_AT_MOST = 30 * 60 * 1000; // ... or less than 30 minutes
const REASON = {
  on_hold: { label: "挂起原因（必填，例如：等居民在家、等配件）", required: true },
  cancelled: { label: "取消原因（必填）", required: true },
  resolved: { label: "办结说明（可不填）", required: false },
  reopen: { label: "重新打开的原因（可不填）", required: false },
};
const ACTIONS = {
  created: "创建",
  status: "状态变更",
  assigned: "派单",
  scheduled: "约定时间",
  note: "备注",
  escalated: "升级提醒主管",
  rated: "居民评价",
  whereabouts: "补充位置",
  emergency_repeated: "再次求助",
  sos_repeated: "再次按下求助键",
  family_notified: "通知家属",
  callback_requested: "请求回拨",
  escalation_step: "逐级通知",
  notification_result: "通知结果",
  escalation_stopped: "停止逐级通知",
  photo: "居民发来照片",
};
const REPAIR_PLACES = { home: "居民家中", public: "公共区域" };
const DETAIL_FIELDS = {
  description: "描述",
  category: "类别",
  place: "地点",
  service: "服务",
  person: "服务对象",
  department: "科室",
  question: "问题",
  topic: "主题",
  text: "内容",
  reason: "原因",
  summary: "摘要",
  phone: "电话",
  caller_phone: "回拨电话",
  location: "位置",
  danger: "危险",
  slot_start: "就诊时间",
  window_start: "服务开始",
  window_end: "服务结束",
};

const form = document.getElementById("filters");
const tbody = document.querySelector("#queue tbody");
const summary = document.getElementById("queue-summary");
const more = document.getElementById("more");
const detail = document.getElementById("detail");
const detailBody = document.getElementById("detail-body");
const announcer = document.getElementById("orders-announcer");
const teamList = document.getElementById("team-list");

const rows = new Map(); // order id -> {order, tr}
const names = new Map(); // staff id -> display name (admins can list accounts)
const warned = new Set();
let total = 0;
let offset = 0;
let current = null; // the order shown in the detail panel
let revealed = false;

// --- filters -------------------------------------------------------------------------------

function buildFilters() {
  const box = document.getElementById("f-status");
  for (const [value, label] of Object.entries(labels.status)) {
    const id = `f-status-${value}`;
    box.append(
      h(
        "span",
        { class: "check" },
        h("input", { type: "checkbox", id, name: "status", value }),
        h("label", { for: id }, label),
      ),
    );
  }
  const kind = document.getElementById("f-kind");
  for (const [value, label] of Object.entries(labels.kind)) {
    kind.append(h("option", { value }, label));
  }
  const priority = document.getElementById("f-priority");
  for (const [value, label] of Object.entries(labels.priority)) {
    priority.append(h("option", { value }, label));
  }
  document
    .getElementById("f-assignee")
    .append(h("option", { value: String(me.id) }, `指派给我（${me.display_name}）`));
}

async function loadStaff() {
  if (!can("staff:manage")) return;
  try {
    const staff = await api("/principals");
    const select = document.getElementById("f-assignee");
    for (const p of staff) {
      if (p.role === "service" || !p.active) continue;
      names.set(p.id, p.display_name);
      if (p.id === me.id) continue;
      // The URL's assignee may already stand there by number: name it, do not add it twice.
      const known = select.querySelector(`option[value="${p.id}"]`);
      if (known) known.textContent = p.display_name;
      else select.append(h("option", { value: String(p.id) }, p.display_name));
    }
  } catch {
    // Names are a convenience: ids still work.
  }
}

function readFilters() {
  const data = new FormData(form);
  return {
    status: data.getAll("status"),
    kind: data.get("kind") || "",
    priority: data.get("priority") || "",
    community: (data.get("community") || "").trim(),
    team: (data.get("team") || "").trim(),
    assignee: data.get("assignee") || "",
  };
}

function writeFilters(f) {
  for (const box of form.querySelectorAll('input[name="status"]')) {
    box.checked = f.status.includes(box.value);
  }
  form.kind.value = f.kind;
  form.priority.value = f.priority;
  form.community.value = f.community;
  form.team.value = f.team;
  if (f.assignee && !form.assignee.querySelector(`option[value="${CSS.escape(f.assignee)}"]`)) {
    form.assignee.append(h("option", { value: f.assignee }, `工作人员 #${f.assignee}`));
  }
  form.assignee.value = f.assignee;
}

function filtersFromUrl() {
  const q = new URLSearchParams(location.search);
  return {
    status: q.has("status") ? q.getAll("status").filter(Boolean) : [...OPEN],
    kind: q.get("kind") || "",
    priority: q.get("priority") || "",
    community: q.get("community") || "",
    team: q.get("team") || "",
    assignee: q.get("assignee") || "",
  };
}

function syncUrl() {
  const f = readFilters();
  const q = new URLSearchParams();
  f.status.forEach((s) => q.append("status", s));
  if (!f.status.length) q.append("status", "");
  for (const key of ["kind", "priority", "community", "team", "assignee"]) {
    if (f[key]) q.set(key, f[key]);
  }
  if (current) q.set("order", String(current.id));
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

function queryString(f, start) {
  const q = new URLSearchParams();
  f.status.forEach((s) => q.append("status", s));
  for (const [key, param] of [
    ["kind", "kind"],
    ["priority", "priority"],
    ["community", "community"],
    ["assignee", "assignee_id"],
  ]) {
    if (f[key]) q.set(param, f[key]);
  }
  q.set("limit", String(PAGE_SIZE));
  q.set("offset", String(start));
  return q.toString();
}

/** Whether an order (or an event's payload) belongs in the queue as filtered. */
function matches(order, f = readFilters()) {
  if (f.status.length && !f.status.includes(order.status)) return false;
  if (f.kind && order.kind !== f.kind) return false;
  if (f.priority && order.priority !== f.priority) return false;
  if (f.community && order.community !== f.community) return false;
  if (f.team && order.assignee_team !== f.team) return false;
  if (f.assignee && String(order.assignee_id) !== f.assignee) return false;
  return true;
}

// --- SLA -----------------------------------------------------------------------------------

function warnOf(remaining, window) {
  return remaining <= Math.min(window * WARN_SHARE, WARN_AT_MOST) ? "warn" : "ok";
}

/** {text, state}: state is ok, warn, breached, paused or done. */
function responseSla(order, now = Date.now()) {
  if (order.first_response_at) {
    const took = new Date(order.first_response_at) - new Date(order.created_at);
    return { text: `已响应（用时 ${duration(took)}）`, state: "done" };
  }
  if (!OPEN.includes(order.status)) return { text: "—", state: "done" };
  const due = new Date(order.sla.response_due_at).getTime();
  const remaining = due - now;
  if (remaining < 0 || order.sla.response_breached) {
    return { text: `已超时 ${duration(now - due)}`, state: "breached" };
  }
  const state = warnOf(remaining, due - new Date(order.created_at).getTime());
  return { text: `${state === "warn" ? "即将超时：" : ""}剩 ${duration(remaining)}`, state };
}

function resolutionSla(order, now = Date.now()) {
  if (["resolved", "closed"].includes(order.status)) return { text: "已办结", state: "done" };
  if (order.status === "cancelled") return { text: "已取消", state: "done" };
  const due = new Date(order.sla.resolution_due_at).getTime();
  if (order.sla.paused_since) {
    const left = due - new Date(order.sla.paused_since).getTime();
    return { text: `计时暂停（挂起中），剩 ${duration(left)}`, state: "paused" };
  }
  const remaining = due - now;
  if (remaining < 0 || order.sla.resolution_breached) {
    return { text: `已超时 ${duration(now - due)}`, state: "breached" };
  }
  const window = due - new Date(order.created_at).getTime() - order.sla.paused_seconds * 1000;
  const state = warnOf(remaining, window);
  return { text: `${state === "warn" ? "即将超时：" : ""}剩 ${duration(remaining)}`, state };
}

function slaBadge(sla) {
  return h("span", { class: `sla sla--${sla.state}` }, sla.text);
}

function warnOnce(order, which, sla) {
  if (sla.state !== "warn" && sla.state !== "breached") return;
  const key = `${order.id}:${which}:${sla.state}`;
  if (warned.has(key)) return;
  warned.add(key);
  const what = which === "response" ? "首次响应" : "办结";
  announce(announcer, `工单 #${order.id} ${what}${sla.state === "warn" ? "即将超时" : "已超时"}。`);
}

// --- the queue -----------------------------------------------------------------------------

function row(order) {
  const tr = h(
    "tr",
    {
      dataset: { orderId: String(order.id), status: order.status },
      "aria-current": current?.id === order.id ? "true" : null,
    },
    h(
      "th",
      { scope: "row" },
      h(
        "a",
        {
          href: `/console/orders?order=${order.id}`,
          onclick: (event) => {
            event.preventDefault();
            openOrder(order.id);
          },
        },
        `#${order.id}`,
      ),
    ),
    h("td", {}, kindLabel(order.kind)),
    h("td", { class: `priority priority--${order.priority}` }, priorityLabel(order.priority)),
    h("td", {}, h("span", { class: `status status--${order.status}` }, statusLabel(order.status))),
    h(
      "td",
      {},
      order.community ?? "—",
      order.resident_id ? h("span", { class: "sub" }, `居民 #${order.resident_id}`) : null,
    ),
    h(
      "td",
      {},
      order.assignee_team ?? "—",
      h(
        "span",
        { class: "sub" },
        order.assignee_id ? staffName(order.assignee_id, names) : "未指派",
      ),
    ),
    h("td", { class: "sla-cell", dataset: { sla: "response" } }, slaBadge(responseSla(order))),
    h("td", { class: "sla-cell", dataset: { sla: "resolution" } }, slaBadge(resolutionSla(order))),
    h("td", {}, formatTime(order.created_at)),
  );
  return tr;
}

function showRow(order, { top = false } = {}) {
  const known = rows.get(order.id);
  if (!matches(order)) {
    if (known) {
      known.tr.remove();
      rows.delete(order.id);
      total = Math.max(0, total - 1);
      updateSummary();
    }
    return;
  }
  const tr = row(order);
  if (known) known.tr.replaceWith(tr);
  else if (top) tbody.prepend(tr);
  else tbody.append(tr);
  rows.set(order.id, { order, tr });
  if (
    order.assignee_team &&
    !teamList.querySelector(`option[value="${CSS.escape(order.assignee_team)}"]`)
  ) {
    teamList.append(h("option", { value: order.assignee_team }));
  }
}

function updateSummary() {
  const f = readFilters();
  const shown = rows.size;
  const team = f.team ? `（其中班组“${f.team}”的 ${shown} 张）` : "";
  summary.textContent = total
    ? `共 ${total} 张工单，已显示 ${offset}${team}。`
    : "没有符合条件的工单。";
  more.hidden = offset >= total;
}

let latest = 0; // the newest load: an older answer arriving late must not mix into it

async function loadQueue({ append = false } = {}) {
  const mine = ++latest;
  const f = readFilters();
  if (!append) {
    offset = 0;
    rows.clear();
    tbody.replaceChildren();
  }
  summary.textContent = "正在加载……";
  try {
    const page = await api(`/work-orders?${queryString(f, offset)}`);
    if (mine !== latest) return;
    total = page.total;
    offset += page.items.length;
    page.items.forEach((order) => showRow(order));
    updateSummary();
  } catch (error) {
    if (mine === latest) summary.textContent = `加载失败：${error.message}`;
  }
}

function tick() {
  const now = Date.now();
  for (const { order, tr } of rows.values()) {
    const response = responseSla(order, now);
    const resolution = resolutionSla(order, now);
    fill(tr.querySelector('[data-sla="response"]'), slaBadge(response));
    fill(tr.querySelector('[data-sla="resolution"]'), slaBadge(resolution));
    warnOnce(order, "response", response);
    warnOnce(order, "resolution", resolution);
  }
  if (current) {
    const box = detailBody.querySelector("#d-sla");
    if (box) fill(box, slaView(current));
  }
}

// --- one order -----------------------------------------------------------------------------

function verb(from, to) {
  if (to === "in_progress") {
    if (from === "on_hold") return "恢复处理";
    if (from === "resolved") return "重新打开";
    return "开始处理";
  }
  return (
    { accepted: "受理", on_hold: "挂起", resolved: "办结", closed: "关闭", cancelled: "取消工单" }[
      to
    ] ?? `改为${statusLabel(to)}`
  );
}

function reasonFor(from, to) {
  if (to === "in_progress" && from === "resolved") return REASON.reopen;
  return REASON[to] ?? null;
}

function detailFields(order) {
  const out = [];
  for (const [key, label] of Object.entries(DETAIL_FIELDS)) {
    let value = order.details?.[key];
    if (value == null || value === "") continue;
    if (key === "location" && order.kind === "repair") {
      value = REPAIR_PLACES[value]; // home or public; masked, it says nothing
      if (!value) continue;
    }
    out.push(
      h("dt", {}, label),
      h(
        "dd",
        {},
        key.endsWith("_start") || key.endsWith("_end") ? formatTime(value) : String(value),
      ),
    );
  }
  const a = order.details?.address;
  if (a) {
    const unit = a.unit ? `${a.unit}单元` : ""; // towers and many older blocks have none
    out.push(h("dt", {}, "地址"), h("dd", {}, a.text ?? `${a.building}号楼${unit}${a.room}`));
  }
  return out;
}

function summaryView(order) {
  return h(
    "dl",
    { class: "facts" },
    h("dt", {}, "状态"),
    h("dd", {}, h("span", { class: `status status--${order.status}` }, statusLabel(order.status))),
    h("dt", {}, "类型"),
    h("dd", {}, kindLabel(order.kind)),
    h("dt", {}, "优先级"),
    h("dd", {}, priorityLabel(order.priority)),
    h("dt", {}, "渠道"),
    h("dd", {}, channelLabel(order.channel)),
    h("dt", {}, "社区"),
    h("dd", {}, order.community ?? "—"),
    h("dt", {}, "居民"),
    h("dd", {}, order.resident_id ? `#${order.resident_id}` : "未关联居民"),
    h("dt", {}, "班组"),
    h("dd", {}, order.assignee_team ?? "—"),
    h("dt", {}, "处理人"),
    h("dd", {}, order.assignee_id ? staffName(order.assignee_id, names) : "未指派"),
    h("dt", {}, "创建时间"),
    h("dd", {}, formatTime(order.created_at)),
    order.scheduled_at
      ? [h("dt", {}, "预约时间"), h("dd", {}, formatTime(order.scheduled_at))]
      : null,
    detailFields(order),
    order.notes ? [h("dt", {}, "备注"), h("dd", {}, order.notes)] : null,
    order.rating
      ? [
          h("dt", {}, "居民评价"),
          h("dd", {}, `${order.rating.score} 分 ${order.rating.comment ?? ""}`),
        ]
      : null,
  );
}

function slaView(order) {
  const now = Date.now();
  return [
    h("dt", {}, "首次响应"),
    h(
      "dd",
      {},
      slaBadge(responseSla(order, now)),
      h("span", { class: "sub" }, `时限 ${formatTime(order.sla.response_due_at)}`),
    ),
    h("dt", {}, "办结时限"),
    h(
      "dd",
      {},
      slaBadge(resolutionSla(order, now)),
      h("span", { class: "sub" }, `时限 ${formatTime(order.sla.resolution_due_at)}`),
    ),
    order.sla.escalated ? [h("dt", {}, "升级"), h("dd", {}, "长时间无进展，已提醒主管")] : null,
  ];
}

function historyView(order) {
  if (!order.history.length) return h("p", {}, "还没有记录。");
  return h(
    "ol",
    { class: "history" },
    [...order.history]
      .reverse()
      .map((entry) =>
        h(
          "li",
          {},
          h("span", { class: "when" }, formatTime(entry.at)),
          " ",
          h("strong", {}, ACTIONS[entry.action] ?? entry.action),
          entry.from_status || entry.to_status
            ? `：${entry.from_status ? statusLabel(entry.from_status) : "—"} → ${statusLabel(entry.to_status)}`
            : "",
          ` · ${staffName(entry.actor_id, names)}`,
          entry.reason ? h("span", { class: "reason" }, `“${entry.reason}”`) : null,
        ),
      ),
  );
}

/**
 * Thumbnails of the photos the resident sent; a click opens one full size. Drawn again only
 * when the photos change: every load of an image is a read of personal data (audited).
 */
function showPhotos(order) {
  const list = document.getElementById("d-photos");
  const ids = (order.photos ?? []).map((photo) => photo.id).join(",");
  document.getElementById("d-photos-section").hidden = !ids;
  if (list.dataset.ids === ids) return;
  list.dataset.ids = ids;
  fill(
    list,
    (order.photos ?? []).map((photo) => {
      const src = `/work-orders/${order.id}/photos/${photo.id}`;
      return h(
        "li",
        {},
        h(
          "a",
          { href: src, target: "_blank", rel: "noopener", title: "点击查看原图" },
          h("img", { src, alt: "居民发来的照片", class: "photo-thumb" }),
        ),
        h("span", { class: "when" }, formatTime(photo.created_at)),
      );
    }),
  );
}

function moveButton(order, to, primary) {
  return h(
    "button",
    {
      type: "button",
      class: primary ? "button-primary" : "",
      dataset: { to },
      onclick: () => startMove(order, to),
    },
    verb(order.status, to),
  );
}

function actionsView(order) {
  const allowed = order.allowed_transitions;
  const others = Object.keys(labels.status).filter(
    (s) => s !== order.status && s !== "new" && !allowed.includes(s),
  );
  return [
    allowed.length
      ? h(
          "div",
          { class: "buttons" },
          allowed.map((to) => moveButton(order, to, true)),
        )
      : h("p", {}, "这张工单已经结束，不能再改变状态。"),
    others.length
      ? h(
          "details",
          { class: "other-moves" },
          h("summary", {}, "其他状态变更"),
          h("p", { class: "hint" }, "这些变更现在通常不允许；系统会说明原因。"),
          h(
            "div",
            { class: "buttons" },
            others.map((to) => moveButton(order, to, false)),
          ),
        )
      : null,
  ];
}

/** The moves an error says are allowed, or the life cycle's own list. */
function allowedAfter(error, order) {
  if (Array.isArray(error.details?.allowed)) return error.details.allowed;
  return transitions[error.details?.from ?? order.status] ?? [];
}

function showError(error, order) {
  const box = document.getElementById("action-error");
  const parts = [h("p", {}, error.message)];
  if (error.code === "transition_not_allowed") {
    const allowed = allowedAfter(error, order);
    const from = error.details?.from ?? order.status;
    parts.push(
      allowed.length
        ? h(
            "div",
            { class: "buttons" },
            h("span", {}, "现在可以："),
            allowed.map((to) => moveButton({ ...order, status: from }, to, true)),
          )
        : h("p", {}, "这张工单已经结束，不能再改变状态。"),
    );
  }
  fill(box, parts);
  box.hidden = false;
  box.focus();
}

function clearError() {
  const box = document.getElementById("action-error");
  if (box) {
    box.replaceChildren();
    box.hidden = true;
  }
}

function startMove(order, to) {
  clearError();
  const need = reasonFor(order.status, to);
  if (!need) {
    move(order, to, null);
    return;
  }
  const reasonForm = document.getElementById("reason-form");
  const field = document.getElementById("reason-text");
  document.getElementById("reason-label").textContent = need.label;
  field.required = need.required;
  field.value = "";
  reasonForm.dataset.to = to;
  reasonForm.querySelector('button[type="submit"]').textContent = `确认${verb(order.status, to)}`;
  reasonForm.hidden = false;
  field.focus();
}

async function move(order, to, reason) {
  try {
    const body = reason ? { to, reason } : { to };
    const updated = await api(`/work-orders/${order.id}/transitions`, { method: "POST", body });
    document.getElementById("reason-form").hidden = true;
    show(updated);
    announce(
      announcer,
      `工单 #${order.id} 已${verb(order.status, to)}，现在是“${statusLabel(updated.status)}”。`,
    );
  } catch (error) {
    document.getElementById("reason-form").hidden = true;
    showError(error, order);
    refreshCurrent({ keepError: true });
  }
}

function buildDetail(order) {
  const reasonForm = h(
    "form",
    {
      id: "reason-form",
      class: "inline-form",
      hidden: true,
      onsubmit: (event) => {
        event.preventDefault();
        const text = document.getElementById("reason-text").value.trim();
        if (event.currentTarget.querySelector("textarea").required && !text) return;
        move(current, event.currentTarget.dataset.to, text || null);
      },
    },
    h("label", { for: "reason-text", id: "reason-label" }, "原因"),
    h("textarea", { id: "reason-text", name: "reason", rows: 2, maxlength: 500 }),
    h(
      "p",
      { class: "buttons" },
      h("button", { type: "submit", class: "button-primary" }, "确认"),
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            document.getElementById("reason-form").hidden = true;
          },
        },
        "返回",
      ),
    ),
  );
  const assignee = names.size
    ? h(
        "select",
        { id: "assign-who", name: "assignee" },
        h("option", { value: "" }, "不指派"),
        [...names].map(([id, name]) => h("option", { value: String(id) }, name)),
      )
    : h("input", {
        id: "assign-who",
        name: "assignee",
        type: "number",
        min: 1,
        inputmode: "numeric",
      });
  const assignForm = h(
    "form",
    { id: "assign-form", class: "inline-form", onsubmit: (event) => assign(event) },
    h(
      "p",
      { class: "field" },
      h("label", { for: "assign-who" }, names.size ? "处理人" : "处理人编号"),
      assignee,
    ),
    h(
      "p",
      { class: "field" },
      h("label", { for: "assign-team" }, "班组"),
      h("input", { id: "assign-team", name: "team", maxlength: 64, list: "team-list" }),
    ),
    h(
      "p",
      { class: "buttons" },
      h("button", { type: "submit", class: "button-primary" }, "派单"),
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            document.getElementById("assign-who").value = String(me.id);
            assignForm.requestSubmit();
          },
        },
        "指派给我",
      ),
    ),
  );
  const scheduleForm = h(
    "form",
    { id: "schedule-form", class: "inline-form", onsubmit: (event) => schedule(event) },
    h(
      "p",
      { class: "field" },
      h("label", { for: "schedule-at" }, "和居民约定的时间"),
      h("input", {
        id: "schedule-at",
        name: "scheduled_at",
        type: "datetime-local",
        required: true,
      }),
    ),
    h(
      "p",
      { class: "buttons" },
      h("button", { type: "submit" }, "保存时间"),
      h("span", { class: "hint" }, "居民会在微信上收到这个时间"),
    ),
  );
  const noteForm = h(
    "form",
    { id: "note-form", class: "inline-form", onsubmit: (event) => addNote(event) },
    h("label", { for: "note-text" }, "添加备注"),
    h("textarea", { id: "note-text", name: "text", rows: 3, maxlength: 1000, required: true }),
    h("p", { class: "buttons" }, h("button", { type: "submit" }, "保存备注")),
  );
  fill(
    detailBody,
    h("h3", { id: "d-title" }),
    h(
      "p",
      { class: "buttons" },
      h("button", { type: "button", id: "d-reveal", onclick: () => reveal() }, "显示完整个人信息"),
      h("button", { type: "button", onclick: () => closeDetail() }, "关闭详情"),
    ),
    h("p", { class: "hint", id: "d-masked" }),
    h("div", {
      id: "action-error",
      class: "form-error",
      role: "alert",
      tabindex: -1,
      hidden: true,
    }),
    h(
      "section",
      { "aria-labelledby": "d-actions-h" },
      h("h3", { id: "d-actions-h" }, "处理"),
      h("div", { id: "d-actions" }),
      reasonForm,
    ),
    h(
      "section",
      { "aria-labelledby": "d-sla-h" },
      h("h3", { id: "d-sla-h" }, "时限"),
      h("dl", { id: "d-sla", class: "facts" }),
    ),
    h(
      "section",
      { "aria-labelledby": "d-info-h" },
      h("h3", { id: "d-info-h" }, "基本信息"),
      h("div", { id: "d-summary" }),
    ),
    h(
      "section",
      { id: "d-photos-section", "aria-labelledby": "d-photos-h", hidden: true },
      h("h3", { id: "d-photos-h" }, "居民发来的照片"),
      h("ul", { id: "d-photos", class: "photos" }),
    ),
    h(
      "section",
      { "aria-labelledby": "d-assign-h" },
      h("h3", { id: "d-assign-h" }, "派单"),
      assignForm,
      scheduleForm,
    ),
    h(
      "section",
      { "aria-labelledby": "d-notes-h" },
      h("h3", { id: "d-notes-h" }, "备注"),
      noteForm,
    ),
    h(
      "section",
      { "aria-labelledby": "d-history-h" },
      h("h3", { id: "d-history-h" }, "处理记录"),
      h("div", { id: "d-history" }),
    ),
  );
  detailBody.dataset.orderId = String(order.id);
}

/** Show an order's state; the forms keep what staff are typing. */
function show(order) {
  if (detailBody.dataset.orderId !== String(order.id)) buildDetail(order);
  current = order;
  document.getElementById("d-title").textContent =
    `#${order.id} ${kindLabel(order.kind)} · ${statusLabel(order.status)}`;
  document.getElementById("d-masked").textContent = order.masked
    ? "电话、地址等个人信息已隐去。需要时点“显示完整个人信息”（会记入审计日志）。"
    : "正在显示完整个人信息（已记入审计日志）。";
  document.getElementById("d-reveal").hidden = !order.masked;
  fill(document.getElementById("d-actions"), actionsView(order));
  fill(document.getElementById("d-sla"), slaView(order));
  fill(document.getElementById("d-summary"), summaryView(order));
  fill(document.getElementById("d-history"), historyView(order));
  showPhotos(order);
  detail.hidden = false;
  detail.dataset.status = order.status;
  if (rows.has(order.id)) showRow(order);
  for (const { tr } of rows.values()) {
    tr.toggleAttribute("aria-current", tr.dataset.orderId === String(order.id));
  }
}

async function openOrder(id, { focus = true } = {}) {
  revealed = false;
  try {
    const order = await api(`/work-orders/${id}`);
    detailBody.dataset.orderId = "";
    show(order);
    syncUrl();
    if (focus) detail.focus();
  } catch (error) {
    detail.hidden = false;
    fill(detailBody, h("p", { class: "form-error", role: "alert" }, error.message));
  }
}

function closeDetail() {
  current = null;
  detail.hidden = true;
  detailBody.dataset.orderId = "";
  detailBody.replaceChildren();
  syncUrl();
  for (const { tr } of rows.values()) tr.removeAttribute("aria-current");
}

async function refreshCurrent({ keepError = false } = {}) {
  if (!current) return;
  try {
    const order = await api(`/work-orders/${current.id}${revealed ? "?reveal=true" : ""}`);
    if (current && order.id === current.id) {
      show(order);
      if (!keepError) clearError();
    }
  } catch {
    // The next event or action tries again.
  }
}

async function reveal() {
  revealed = true;
  await refreshCurrent();
}

async function assign(event) {
  event.preventDefault();
  const who = document.getElementById("assign-who").value;
  const team = document.getElementById("assign-team").value.trim();
  const body = { assignee_id: who ? Number(who) : null };
  if (team) body.team = team;
  try {
    show(await api(`/work-orders/${current.id}/assignment`, { method: "POST", body }));
    clearError();
    announce(announcer, `工单 #${current.id} 已派单。`);
  } catch (error) {
    showError(error, current);
  }
}

async function schedule(event) {
  event.preventDefault();
  const value = document.getElementById("schedule-at").value;
  if (!value) return;
  // datetime-local is the staff member's own clock; the API takes a zoned moment.
  const body = { scheduled_at: new Date(value).toISOString() };
  try {
    show(await api(`/work-orders/${current.id}/schedule`, { method: "POST", body }));
    clearError();
    announce(announcer, `工单 #${current.id} 的时间已约定。`);
  } catch (error) {
    showError(error, current);
  }
}

async function addNote(event) {
  event.preventDefault();
  const field = document.getElementById("note-text");
  const text = field.value.trim();
  if (!text) return;
  try {
    show(await api(`/work-orders/${current.id}/notes`, { method: "POST", body: { text } }));
    field.value = "";
    clearError();
    announce(announcer, "备注已保存。");
  } catch (error) {
    showError(error, current);
  }
}

// --- live updates --------------------------------------------------------------------------

const refreshing = new Set();

async function refreshRow(id) {
  if (refreshing.has(id)) return;
  refreshing.add(id);
  try {
    const order = await api(`/work-orders/${id}`);
    if (rows.has(id)) showRow(order);
    else if (matches(order)) {
      showRow(order, { top: true });
      total += 1;
      offset += 1;
      updateSummary();
    }
  } catch {
    // Gone or unreadable: leave the row; the next load shows the truth.
  } finally {
    refreshing.delete(id);
  }
}

live.on("*", (event) => {
  const id = event.order_id;
  if (!id) return;
  if (event.type === "order.created" && matches({ ...event.data, assignee_id: null })) {
    announce(announcer, `新工单 #${id}：${kindLabel(event.data.kind)}。`);
  }
  if (rows.has(id) || event.type === "order.created" || matches(event.data ?? {})) refreshRow(id);
  if (current?.id === id) refreshCurrent();
});

// --- start ---------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  syncUrl();
  loadQueue();
});
document.getElementById("f-clear").addEventListener("click", () => {
  writeFilters({
    status: [...OPEN],
    kind: "",
    priority: "",
    community: "",
    team: "",
    assignee: "",
  });
  syncUrl();
  loadQueue();
});
more.addEventListener("click", () => loadQueue({ append: true }));

async function start() {
  buildFilters();
  // The URL's filters first, so that what a quick user chooses while names load stays chosen.
  writeFilters(filtersFromUrl());
  await loadStaff();
  try {
    await live.ready();
  } catch {
    // The stream starts again by itself; the queue is worth showing now.
  }
  await loadQueue();
  const wanted = Number(new URLSearchParams(location.search).get("order"));
  if (wanted > 0) await openOrder(wanted, { focus: false });
  live.start();
  setInterval(tick, 1000);
}

start();
