/**
 * 居民: the list (GET /residents, masked), one resident's profile (masked unless revealed) and
 * what Linli did for them: orders, calls, conversations. Showing the profile in full needs a
 * purpose, sent as `purpose` with `reveal=true`; the API writes it into the audit entry.
 * 代办家属: family members who asked to act for the elder; staff record the elder's answer they
 * got by phone (老人已同意 / 老人不同意, confirmed first) and withdraw consent (收回同意).
 */
import { api } from "../js/api.js";
import { can, channelLabel, kindLabel, statusLabel } from "../js/context.js";
import { announce, fill, h } from "../js/dom.js";
import { duration, formatTime } from "../js/format.js";

const PAGE_SIZE = 20;
const PURPOSES = ["回访核实", "紧急联系", "上门服务", "工单办理", "核对身份", "其他"];
const PURPOSE_MAX = 100;
const IDENTITY_LABELS = {
  phone: "电话",
  wechat_openid: "微信",
  terminal: "一键呼叫终端",
  web: "网页聊天",
};
const NOTE_LABELS = { mobility: "行动", hearing: "听力", chronic_illness: "慢性病", other: "其他" };
const OUTCOME_LABELS = {
  completed: "助手办结",
  transferred: "已转人工",
  callback: "需要回拨",
  abandoned: "来电方挂断",
  failed: "技术故障",
};
const CONVERSATION_STATES = { bot: "助手接待", waiting: "等待人工", staff: "人工处理中" };
const PROXY_STATES = {
  requested: "等待老人同意",
  active: "已同意",
  refused: "已拒绝",
  withdrawn: "已收回",
};
const VIA_LABELS = { hotline: "热线电话确认", console: "工作人员电话确认" };
// What each button asks staff to confirm, what it sends, and what is announced after.
const PROXY_ACTIONS = {
  grant: {
    label: "老人已同意",
    confirm: (p) =>
      `请确认：您已经打电话和老人本人核实，老人同意由${p.name}（${p.relation}）代为办理。`,
    path: (p) => `/proxies/${p.id}/consent`,
    body: { granted: true, via: "console" },
    done: (p) => `已记录：老人同意由${p.name}（${p.relation}）代办。`,
  },
  refuse: {
    label: "老人不同意",
    confirm: (p) => `请确认：老人不同意由${p.name}（${p.relation}）代为办理。`,
    path: (p) => `/proxies/${p.id}/consent`,
    body: { granted: false, via: "console" },
    done: (p) => `已记录：老人不同意由${p.name}（${p.relation}）代办。`,
  },
  withdraw: {
    label: "收回同意",
    confirm: (p) =>
      `请确认：收回后${p.name}（${p.relation}）不能再替老人预约、报修、取消或评价。`,
    path: (p) => `/proxies/${p.id}/withdraw`,
    body: { via: "console" },
    done: (p) => `已收回${p.name}（${p.relation}）的代办授权。`,
  },
};

const form = document.getElementById("r-search");
const searchError = document.getElementById("r-search-error");
const tbody = document.querySelector("#r-table tbody");
const summary = document.getElementById("r-summary");
const prev = document.getElementById("r-prev");
const next = document.getElementById("r-next");
const detail = document.getElementById("r-detail");
const detailBody = document.getElementById("r-detail-body");
const announcer = document.getElementById("r-announcer");

let offset = 0;
let current = null; // {masked, revealed, purpose}

// --- the list ------------------------------------------------------------------------------

const field = (name) => document.getElementById(`r-${name}`);

function readFilters() {
  return {
    name: field("name").value.trim(),
    community: field("community").value.trim(),
    phone: field("phone").value.trim(),
  };
}

function syncUrl() {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(readFilters())) if (value) q.set(key, value);
  if (offset) q.set("offset", String(offset));
  if (current) q.set("id", String(current.masked.id));
  const query = q.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}`);
}

function residentRow(resident) {
  return h(
    "tr",
    { dataset: { residentId: String(resident.id) } },
    h(
      "th",
      { scope: "row" },
      h(
        "a",
        {
          href: `/console/residents?id=${resident.id}`,
          onclick: (event) => {
            event.preventDefault();
            openResident(resident.id);
          },
        },
        resident.name,
      ),
    ),
    h("td", {}, resident.community),
    h("td", {}, resident.phone ?? "—"),
    h("td", {}, resident.address?.text ?? "—"),
    h("td", {}, resident.birth_year ?? "—"),
  );
}

async function loadList() {
  searchError.textContent = "";
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(readFilters())) if (value) q.set(key, value);
  q.set("limit", String(PAGE_SIZE));
  q.set("offset", String(offset));
  summary.textContent = "正在加载……";
  try {
    const page = await api(`/residents?${q}`);
    fill(tbody, page.items.map(residentRow));
    const first = page.total ? offset + 1 : 0;
    summary.textContent = page.total
      ? `共 ${page.total} 位居民，当前显示第 ${first}–${offset + page.items.length} 位。`
      : "没有找到符合条件的居民。";
    prev.disabled = offset === 0;
    next.disabled = offset + page.items.length >= page.total;
  } catch (error) {
    fill(tbody);
    summary.textContent = "";
    searchError.textContent = error.message;
    prev.disabled = next.disabled = true;
  }
}

// --- one resident --------------------------------------------------------------------------

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function age(birthYear) {
  return new Date().getFullYear() - birthYear;
}

function facts(resident) {
  const notes = resident.service_notes
    ? Object.entries(NOTE_LABELS)
        .filter(([key]) => resident.service_notes[key])
        .map(([key, label]) =>
          h("span", { class: "sub" }, `${label}：${resident.service_notes[key]}`),
        )
    : [];
  return h(
    "dl",
    { class: "facts", id: "r-facts" },
    fact("姓名", resident.name),
    fact("社区", resident.community),
    fact("电话", h("span", { id: "r-phone-value" }, resident.phone ?? "未登记")),
    fact("身份证号", resident.id_number ?? "未登记"),
    fact("地址", resident.address?.text ?? "未登记"),
    fact(
      "出生年份",
      resident.birth_year
        ? `${resident.birth_year}年（约${age(resident.birth_year)}岁）`
        : "未登记",
    ),
    fact(
      "服务备注",
      resident.masked
        ? h("span", { class: "hint" }, "显示完整信息后可见")
        : notes.length
          ? notes
          : "无",
    ),
    fact(
      "紧急联系人",
      resident.contacts.length
        ? h(
            "ul",
            { class: "plain" },
            resident.contacts.map((c) =>
              h(
                "li",
                {},
                `${c.name}（${c.relation}）${c.phone}${c.notify_on_emergency ? " · 紧急时通知" : ""}`,
              ),
            ),
          )
        : "无",
    ),
    fact(
      "联系方式",
      resident.identities.length
        ? h(
            "ul",
            { class: "plain" },
            resident.identities.map((i) =>
              h("li", {}, `${IDENTITY_LABELS[i.kind] ?? i.kind}：${i.value}`),
            ),
          )
        : "无",
    ),
    fact("登记时间", formatTime(resident.created_at)),
  );
}

function revealForm() {
  const choices = PURPOSES.map((p) => h("option", { value: p }, p));
  return h(
    "form",
    {
      id: "r-reveal-form",
      class: "inline-form residents-reveal",
      hidden: true,
      novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        reveal();
      },
    },
    h(
      "p",
      { class: "field" },
      h("label", { for: "r-purpose" }, "查看用途（必填）"),
      h(
        "select",
        {
          id: "r-purpose",
          name: "purpose",
          required: true,
          "aria-describedby": "r-purpose-hint r-reveal-error",
        },
        h("option", { value: "" }, "请选择用途"),
        choices,
      ),
      h(
        "span",
        { id: "r-purpose-hint", class: "hint" },
        "查看完整信息会记入审计日志，包括您选择的用途。",
      ),
    ),
    h(
      "p",
      { class: "field" },
      h("label", { for: "r-purpose-note" }, "补充说明（选“其他”时必填）"),
      h("input", { id: "r-purpose-note", name: "note", maxlength: 80, autocomplete: "off" }),
    ),
    h("p", { id: "r-reveal-error", class: "form-error", role: "alert" }),
    h(
      "p",
      { class: "buttons" },
      h("button", { type: "submit", class: "button-primary" }, "确认显示"),
      h("button", { type: "button", onclick: () => toggleRevealForm(false) }, "取消"),
    ),
  );
}

function toggleRevealForm(open) {
  const revealFormEl = document.getElementById("r-reveal-form");
  const button = document.getElementById("r-reveal");
  revealFormEl.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
  document.getElementById("r-reveal-error").textContent = "";
  if (open) document.getElementById("r-purpose").focus();
  else button.focus();
}

function purposeText() {
  const choice = document.getElementById("r-purpose").value;
  const note = document.getElementById("r-purpose-note").value.trim();
  if (!choice) return { error: "请先选择查看用途。", field: "r-purpose" };
  if (choice === "其他" && !note)
    return { error: "选择“其他”时请写明用途。", field: "r-purpose-note" };
  const text = choice === "其他" ? note : note ? `${choice}：${note}` : choice;
  return { text: text.slice(0, PURPOSE_MAX) };
}

async function reveal() {
  const errorBox = document.getElementById("r-reveal-error");
  for (const id of ["r-purpose", "r-purpose-note"])
    document.getElementById(id).removeAttribute("aria-invalid");
  const purpose = purposeText();
  if (purpose.error) {
    errorBox.textContent = purpose.error;
    const input = document.getElementById(purpose.field);
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  const id = current.masked.id;
  try {
    const q = new URLSearchParams({ reveal: "true", purpose: purpose.text });
    const full = await api(`/residents/${id}?${q}`);
    if (current?.masked.id !== id) return;
    current.revealed = full;
    current.purpose = purpose.text;
    showProfile();
    section("r-proxies", "residents:read", () => proxiesOf(id));
    announce(announcer, `正在显示${full.name}的完整信息，用途“${purpose.text}”已记入审计日志。`);
    document.getElementById("r-hide").focus();
  } catch (error) {
    errorBox.textContent = error.message;
  }
}

function hideFull() {
  current.revealed = null;
  current.purpose = null;
  showProfile();
  section("r-proxies", "residents:read", () => proxiesOf(current.masked.id));
  announce(announcer, "完整信息已隐去。");
  document.getElementById("r-reveal").focus();
}

function showProfile() {
  const shown = current.revealed ?? current.masked;
  const masked = !current.revealed;
  fill(
    document.getElementById("r-profile"),
    h(
      "p",
      { class: masked ? "hint" : "form-notice", id: "r-mask-state" },
      masked
        ? "电话、身份证号、地址和联系人电话已隐去。需要时点“显示完整信息”并选择用途（会记入审计日志）。"
        : `正在显示完整信息 · 用途：${current.purpose}（已记入审计日志）`,
    ),
    h(
      "p",
      { class: "buttons" },
      masked
        ? h(
            "button",
            {
              type: "button",
              id: "r-reveal",
              "aria-expanded": "false",
              "aria-controls": "r-reveal-form",
              onclick: () => toggleRevealForm(true),
            },
            "显示完整信息",
          )
        : h("button", { type: "button", id: "r-hide", onclick: hideFull }, "隐藏完整信息"),
      h("button", { type: "button", onclick: closeDetail }, "关闭档案"),
    ),
    masked ? revealForm() : null,
    facts(shown),
  );
  document.getElementById("r-detail-title").textContent = `${shown.name} · ${shown.community}`;
}

/** A count line and a table; the first cell of each row heads it for screen readers. */
function listing(page, unit, caption, headers, cellsOf) {
  const count = page.total
    ? h(
        "p",
        { class: "summary" },
        page.total > page.items.length
          ? `共 ${page.total} 条，显示最近 ${page.items.length} 条。`
          : `共 ${page.total} 条。`,
      )
    : h("p", {}, `没有${unit}。`);
  if (!page.items.length) return count;
  const rows = page.items.map((item) => {
    const [first, ...rest] = cellsOf(item);
    return h("tr", {}, h("th", { scope: "row" }, first), rest.map((c) => h("td", {}, c)));
  });
  return [
    count,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
    ),
  ];
}

const orderLink = (id) => h("a", { href: `/console/orders?order=${id}` }, `#${id}`);

async function section(id, scope, load) {
  const box = document.getElementById(id);
  if (!can(scope)) {
    fill(box, h("p", { class: "hint" }, "您的账号不能查看这一部分。"));
    return;
  }
  fill(box, h("p", {}, "正在加载……"));
  try {
    fill(box, await load());
  } catch (error) {
    fill(box, h("p", { class: "form-error", role: "alert" }, error.message));
  }
}

async function ordersOf(residentId) {
  const page = await api(`/work-orders?resident_id=${residentId}&limit=50`);
  return listing(
    page,
    "工单",
    "这位居民的工单",
    ["工单", "类型", "状态", "渠道", "创建时间"],
    (o) => [
      orderLink(o.id),
      kindLabel(o.kind),
      h("span", { class: `status status--${o.status}` }, statusLabel(o.status)),
      channelLabel(o.channel),
      formatTime(o.created_at),
    ],
  );
}

async function callsOf(residentId) {
  const page = await api(`/calls?resident_id=${residentId}&limit=20`);
  return listing(
    page,
    "通话记录",
    "这位居民的通话",
    ["时间", "渠道", "结果", "时长", "内容摘要", "工单"],
    (c) => [
      formatTime(c.started_at),
      channelLabel(c.channel),
      OUTCOME_LABELS[c.outcome] ?? c.outcome,
      duration(c.duration_seconds * 1000),
      c.summary ?? "—",
      c.order_ids.length ? c.order_ids.map((id, i) => [i ? "、" : "", orderLink(id)]) : "—",
    ],
  );
}

async function conversationsOf(residentId) {
  const page = await api(`/conversations?state=all&resident_id=${residentId}&limit=20`);
  return listing(
    page,
    "会话",
    "这位居民的会话",
    ["渠道", "状态", "开始时间", "最近消息", "查看"],
    (c) => [
      channelLabel(c.channel),
      CONVERSATION_STATES[c.state] ?? c.state,
      formatTime(c.created_at),
      formatTime(c.last_message_at),
      h("a", { href: `/console/conversations?key=${encodeURIComponent(c.key)}` }, "打开会话"),
    ],
  );
}

// --- 代办家属: family members acting for the elder, with the elder's consent ---------------

function decidedText(p) {
  if (p.status === "requested") return "—";
  if (p.status === "withdrawn") {
    const before = p.decided_at
      ? `（${formatTime(p.decided_at)} ${VIA_LABELS[p.decided_via] ?? ""}同意）`
      : "";
    return `${formatTime(p.withdrawn_at)} 收回${before}`;
  }
  return `${formatTime(p.decided_at)} · ${VIA_LABELS[p.decided_via] ?? p.decided_via}`;
}

function proxyButtons(p, residentId) {
  const wanted =
    p.status === "requested" ? ["grant", "refuse"] : p.status === "active" ? ["withdraw"] : [];
  return wanted.map((action) =>
    h(
      "button",
      {
        type: "button",
        class: action === "grant" ? "button-primary" : null,
        dataset: { proxyAction: action },
        "aria-expanded": "false",
        "aria-controls": `r-proxy-confirm-${p.id}`,
        onclick: (event) => askToConfirm(p, action, residentId, event.currentTarget),
      },
      PROXY_ACTIONS[action].label,
    ),
  );
}

/** The confirmation under the proxy's row: nothing is sent before 确认. */
function askToConfirm(p, action, residentId, button) {
  const box = document.getElementById(`r-proxy-confirm-${p.id}`);
  const spec = PROXY_ACTIONS[action];
  for (const b of button.parentElement.querySelectorAll("button"))
    b.setAttribute("aria-expanded", String(b === button));
  box.hidden = false;
  fill(
    box,
    h("p", { id: `r-proxy-confirm-text-${p.id}` }, spec.confirm(p)),
    h("p", { class: "form-error", role: "alert", id: `r-proxy-error-${p.id}` }),
    h(
      "p",
      { class: "buttons" },
      h(
        "button",
        {
          type: "button",
          class: "button-primary",
          "aria-describedby": `r-proxy-confirm-text-${p.id}`,
          onclick: () => sendProxyAction(p, action, residentId),
        },
        `确认${spec.label}`,
      ),
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            box.hidden = true;
            box.replaceChildren();
            button.setAttribute("aria-expanded", "false");
            button.focus();
          },
        },
        "取消",
      ),
    ),
  );
  box.querySelector("button").focus();
}

async function sendProxyAction(p, action, residentId) {
  const spec = PROXY_ACTIONS[action];
  try {
    await api(spec.path(p), { method: "POST", body: spec.body });
  } catch (error) {
    document.getElementById(`r-proxy-error-${p.id}`).textContent = error.message;
    return;
  }
  if (current?.masked.id !== residentId) return;
  await section("r-proxies", "residents:read", () => proxiesOf(residentId));
  announce(announcer, spec.done(p));
  document.querySelector(`#r-proxy-list li[data-proxy-id="${p.id}"]`)?.focus();
}

async function proxiesOf(residentId) {
  const q = new URLSearchParams();
  if (current?.revealed) {
    q.set("reveal", "true");
    q.set("purpose", current.purpose);
  }
  const items = await api(`/residents/${residentId}/proxies${q.size ? `?${q}` : ""}`);
  if (!items.length) return h("p", {}, "没有家属申请代办。");
  return h(
    "ul",
    { class: "plain proxies", id: "r-proxy-list" },
    items.map((p) =>
      h(
        "li",
        {
          class: "proxy",
          tabindex: "-1",
          dataset: { proxyId: String(p.id), proxyStatus: p.status },
        },
        h(
          "dl",
          { class: "facts" },
          fact("家属", `${p.name}（${p.relation}）`),
          fact("电话", p.phone ?? "未留"),
          fact(
            "状态",
            h("span", { class: `proxy-status proxy-status--${p.status}` }, PROXY_STATES[p.status]),
          ),
          fact("申请时间", formatTime(p.requested_at)),
          fact("确认情况", decidedText(p)),
        ),
        h("p", { class: "buttons" }, proxyButtons(p, residentId)),
        h("div", { id: `r-proxy-confirm-${p.id}`, class: "inline-form", hidden: true }),
      ),
    ),
  );
}

function buildDetail(id) {
  const part = (id, title) =>
    h(
      "section",
      { "aria-labelledby": `${id}-h` },
      h("h3", { id: `${id}-h` }, title),
      h("div", { id }),
    );
  fill(
    detailBody,
    h("h3", { id: "r-detail-title" }),
    can("audit:read")
      ? h(
          "p",
          {},
          h(
            "a",
            { href: `/console/audit?resource_type=resident&resource_id=${id}` },
            "查看这位居民的审计记录",
          ),
        )
      : null,
    h("div", { id: "r-profile" }),
    part("r-proxies", "代办家属"),
    part("r-orders", "工单"),
    part("r-calls", "通话记录"),
    part("r-conversations", "会话"),
  );
}

async function openResident(id, { focus = true } = {}) {
  try {
    const resident = await api(`/residents/${id}`);
    current = { masked: resident, revealed: null, purpose: null };
    buildDetail(id);
    showProfile();
    detail.hidden = false;
    for (const tr of tbody.rows)
      tr.toggleAttribute("aria-current", tr.dataset.residentId === String(id));
    syncUrl();
    if (focus) detail.focus();
    await Promise.all([
      section("r-proxies", "residents:read", () => proxiesOf(id)),
      section("r-orders", "orders:read", () => ordersOf(id)),
      section("r-calls", "calls:read", () => callsOf(id)),
      section("r-conversations", "conversations:read", () => conversationsOf(id)),
    ]);
  } catch (error) {
    current = null;
    detail.hidden = false;
    fill(detailBody, h("p", { class: "form-error", role: "alert" }, error.message));
  }
}

function closeDetail() {
  current = null;
  detail.hidden = true;
  detailBody.replaceChildren();
  for (const tr of tbody.rows) tr.removeAttribute("aria-current");
  syncUrl();
  document.getElementById("r-name").focus();
}

// --- start ---------------------------------------------------------------------------------

/** To another page of the list (0: the first, after new filters). */
function goTo(start) {
  offset = Math.max(0, start);
  syncUrl();
  loadList();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  goTo(0);
});
document.getElementById("r-clear").addEventListener("click", () => {
  form.reset();
  goTo(0);
});
prev.addEventListener("click", () => goTo(offset - PAGE_SIZE));
next.addEventListener("click", () => goTo(offset + PAGE_SIZE));

async function start() {
  const q = new URLSearchParams(location.search);
  for (const name of ["name", "community", "phone"]) field(name).value = q.get(name) ?? "";
  offset = Math.max(0, Number(q.get("offset")) || 0);
  await loadList();
  const wanted = Number(q.get("id"));
  if (wanted > 0) await openResident(wanted, { focus: false });
  document.documentElement.dataset.ready = "residents";
}

start();
