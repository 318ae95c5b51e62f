/**
 * 报警: open emergencies, live. A new one sounds (Web Audio beeps, until a person accepts it)
 * and flashes red; the card shows who, where, health notes and family contacts (revealed:
 * the emergency justifies it, and the API audits every reveal), the time since the press
 * against the 60 s target and the escalation so far. "我来处理" accepts it for oneself.
 */
import { api } from "../js/api.js";
import { me, staffName, statusLabel } from "../js/context.js";
import { announce, fill, h } from "../js/dom.js";
import { duration, formatTime, secondsSince } from "../js/format.js";
import * as live from "../js/live.js";
import { siren } from "../js/siren.js";

const TARGET_SECONDS = 60;
// Why the board reveals a resident's health notes and family numbers (the audit log keeps it).
const PURPOSE = "报警台：紧急求助，需联系家属和告知救援";
const OPEN = ["new", "accepted", "in_progress", "on_hold"];
const NOTES = { mobility: "行动", hearing: "听力", chronic_illness: "慢性病", other: "其他" };
const NEXT_TO = { contact: "电话通知下一位紧急联系人", supervisor: "通知值班主管" };
const FINISHED = {
  acknowledged: "已停止：已有人受理",
  closed: "已停止：工单已结束",
  exhausted: "已通知完所有人",
};

const board = document.getElementById("alarm-board");
const list = document.getElementById("alarm-list");
const summary = document.getElementById("alarm-summary");
const announcer = document.getElementById("alarm-announcer");
const soundButton = document.getElementById("sound-enable");

/** order id -> {order, escalation, resident, repeated} */
const alarms = new Map();
const residents = new Map();
const pending = new Map();

// --- sound -------------------------------------------------------------------------------


async function updateSound() {
  const waiting = [...alarms.values()].filter((a) => a.order.status === "new").length;
  const state = await siren.set(waiting > 0);
  board.dataset.alarmSounding = state;
  soundButton.hidden = state !== "blocked";
  document.title = waiting
    ? `（${waiting}）紧急求助 · 报警 · 邻里助手工作台`
    : "报警 · 邻里助手工作台";
}

soundButton.addEventListener("click", async () => {
  await siren.unlock();
  await updateSound();
});

// --- data --------------------------------------------------------------------------------

async function fetchResident(id) {
  if (!residents.has(id)) {
    residents.set(
      id,
      api(`/residents/${id}?reveal=true&purpose=${encodeURIComponent(PURPOSE)}`).catch((error) => {
        residents.delete(id);
        throw error;
      }),
    );
  }
  return residents.get(id);
}

/** Fetch an order's state again; concurrent asks for the same order share one round. */
function refresh(id) {
  const running = pending.get(id);
  if (running) {
    running.again = true;
    return running.promise;
  }
  const entry = { again: false };
  entry.promise = (async () => {
    try {
      do {
        entry.again = false;
        await load(id);
      } while (entry.again);
    } finally {
      pending.delete(id);
    }
  })();
  pending.set(id, entry);
  return entry.promise;
}

async function load(id) {
  const [order, escalation] = await Promise.all([
    api(`/work-orders/${id}?reveal=true`),
    api(`/work-orders/${id}/escalation`),
  ]);
  if (order.kind !== "emergency" || !OPEN.includes(order.status)) {
    remove(id);
    return;
  }
  const resident = order.resident_id
    ? await fetchResident(order.resident_id).catch(() => null)
    : null;
  const known = alarms.get(id);
  const alarm = { ...known, order, escalation, resident };
  alarms.set(id, alarm);
  render(alarm);
  if (!known && order.status === "new") {
    const where = addressText(order, resident);
    announce(
      announcer,
      `紧急求助：${resident?.name ?? "未登记的居民"}${where ? `，${where}` : ""}。请立即处理。`,
    );
  }
  await updateSound();
}

function remove(id) {
  alarms.get(id)?.element?.remove();
  alarms.delete(id);
  updateSummary();
  updateSound();
}

// --- rendering ---------------------------------------------------------------------------

function addressText(order, resident) {
  const a = order.details?.address;
  if (a?.building) return `${a.building}号楼${a.unit}单元${a.room}`;
  if (order.details?.at_home === false) return "";
  return resident?.address?.text ?? "";
}

function addressFact(order, resident) {
  if (order.details?.at_home === false && !order.details?.address) return "不在家（见现在位置）";
  return addressText(order, resident) || "未登记";
}

function healthText(order, resident) {
  const notes = resident?.service_notes ?? order.details?.service_notes;
  if (!notes) return "没有登记";
  const parts = Object.entries(NOTES)
    .filter(([key]) => notes[key])
    .map(([key, label]) => `${label}：${notes[key]}`);
  return parts.length ? parts.join("；") : "没有登记";
}

function contacts(resident) {
  if (!resident) return "无法读取居民档案";
  if (!resident.contacts.length) return "没有登记紧急联系人";
  return h(
    "ul",
    { class: "plain" },
    resident.contacts.map((c) =>
      h(
        "li",
        {},
        `${c.name}（${c.relation}） `,
        h("a", { href: `tel:${c.phone}` }, c.phone),
        c.notify_on_emergency ? "" : "（不自动通知）",
      ),
    ),
  );
}

function fact(label, value) {
  return value ? [h("dt", {}, label), h("dd", {}, value)] : null;
}

function acceptedBy(order) {
  const entry = order.history.find((e) => e.action === "status" && e.to_status === "accepted");
  return entry ? entry.actor_id : order.assignee_id;
}

function timerText(order) {
  if (order.first_response_at) {
    const took = (new Date(order.first_response_at) - new Date(order.created_at)) / 1000;
    return `已受理，用时 ${duration(took * 1000)}`;
  }
  const seconds = secondsSince(order.created_at);
  return seconds <= TARGET_SECONDS
    ? `已过 ${seconds} 秒（须在 ${TARGET_SECONDS} 秒内受理）`
    : `已超时 ${duration((seconds - TARGET_SECONDS) * 1000)}（目标 ${TARGET_SECONDS} 秒）`;
}

function escalationView(escalation) {
  const steps = escalation.steps.map((s) =>
    h("li", {}, h("span", { class: "when" }, formatTime(s.at)), " ", s.text ?? s.action),
  );
  let state;
  if (escalation.running && escalation.next_due_at) {
    const left = Math.max(0, Math.ceil((new Date(escalation.next_due_at) - Date.now()) / 1000));
    state = `下一步：约 ${left} 秒后${NEXT_TO[escalation.next_to] ?? "通知下一位"}`;
  } else if (escalation.chain) {
    state = FINISHED[escalation.finish_reason] ?? "已停止：已有人受理";
  } else {
    state = "此求助没有逐级通知（不是一键呼叫终端发起的）";
  }
  return [
    steps.length ? h("ol", { class: "steps" }, steps) : h("p", {}, "还没有通知任何人。"),
    h("p", { class: "escalation-state" }, state),
  ];
}

function render(alarm) {
  const { order, resident, escalation } = alarm;
  const id = order.id;
  const waiting = order.status === "new";
  const name = resident?.name ?? "未登记的居民";
  const titleId = `alarm-${id}-title`;
  const button = waiting
    ? h(
        "button",
        {
          type: "button",
          class: "button-alarm",
          "aria-describedby": titleId,
          onclick: (event) => acknowledge(id, event.currentTarget),
        },
        "我来处理",
      )
    : null;
  const handler = acceptedBy(order);
  const element = h(
    "li",
    {
      id: `alarm-${id}`,
      class: `alarm ${waiting ? "alarm--waiting" : "alarm--taken"}`,
      "aria-labelledby": titleId,
      dataset: { orderId: String(id), status: order.status },
    },
    h(
      "article",
      {},
      h(
        "header",
        { class: "alarm-head" },
        h(
          "h3",
          { id: titleId },
          h("span", { class: "alarm-icon", "aria-hidden": "true" }, "⚠"),
          ` 紧急求助：${name}`,
        ),
        h(
          "p",
          { class: "alarm-status" },
          waiting ? "无人受理" : `${statusLabel(order.status)} · 由 ${staffName(handler)} 负责`,
          alarm.repeated ? h("strong", { class: "repeat" }, " · 居民再次求助") : null,
        ),
      ),
      h("p", { class: "alarm-timer", dataset: { created: order.created_at } }, timerText(order)),
      h(
        "dl",
        { class: "facts" },
        fact("地址", addressFact(order, resident)),
        fact("现在位置", order.details?.location),
        fact("回拨电话", order.details?.caller_phone),
        fact("情况", order.details?.description),
        fact("健康情况", healthText(order, resident)),
        [h("dt", {}, "紧急联系人"), h("dd", {}, contacts(resident))],
        fact("求助时间", formatTime(order.created_at)),
        fact("工单号", `#${id}`),
      ),
      h(
        "section",
        { class: "escalation", "aria-labelledby": `alarm-${id}-esc` },
        h("h4", { id: `alarm-${id}-esc` }, "逐级通知"),
        escalationView(escalation),
      ),
      h(
        "div",
        { class: "actions" },
        button,
        h("a", { href: `/console/orders?order=${id}` }, "在工单页查看和处理"),
      ),
      h("p", { class: "form-error", role: "alert", id: `alarm-${id}-error` }),
    ),
  );
  // Keep keyboard focus on the card's button if it had it (a refresh must not steal it).
  const hadFocus = alarm.element?.contains(document.activeElement);
  if (alarm.element?.isConnected) alarm.element.replaceWith(element);
  alarm.element = element;
  place(alarm);
  if (hadFocus) (element.querySelector("button, a") ?? element).focus();
  updateSummary();
}

/** Waiting ones first (longest wait on top), then those taken on, newest first. */
function place(alarm) {
  const sorted = [...alarms.values()].sort((a, b) => {
    const wa = a.order.status === "new" ? 0 : 1;
    const wb = b.order.status === "new" ? 0 : 1;
    if (wa !== wb) return wa - wb;
    const ta = new Date(a.order.created_at).getTime();
    const tb = new Date(b.order.created_at).getTime();
    return wa === 0 ? ta - tb : tb - ta;
  });
  const index = sorted.indexOf(alarm);
  const next = sorted.slice(index + 1).find((a) => a.element?.isConnected);
  list.insertBefore(alarm.element, next?.element ?? null);
}

function updateSummary() {
  const all = [...alarms.values()];
  const waiting = all.filter((a) => a.order.status === "new").length;
  if (!all.length) {
    summary.textContent = "目前没有未结束的紧急求助。";
  } else if (waiting) {
    summary.textContent = `${waiting} 个紧急求助无人受理！共 ${all.length} 个未结束。`;
  } else {
    summary.textContent = `${all.length} 个紧急求助正在处理，均已有人负责。`;
  }
  summary.dataset.waiting = String(waiting);
}

function tick() {
  for (const alarm of alarms.values()) {
    const timer = alarm.element?.querySelector(".alarm-timer");
    if (timer) timer.textContent = timerText(alarm.order);
    const state = alarm.element?.querySelector(".escalation-state");
    if (state && alarm.escalation?.running) {
      fill(state, escalationView(alarm.escalation)[1].textContent);
    }
    alarm.element?.classList.toggle(
      "alarm--late",
      alarm.order.status === "new" && secondsSince(alarm.order.created_at) > TARGET_SECONDS,
    );
  }
}

// --- acknowledging -----------------------------------------------------------------------

async function acknowledge(id, button) {
  const error = document.getElementById(`alarm-${id}-error`);
  button.disabled = true;
  button.textContent = "正在受理……";
  error.textContent = "";
  try {
    const order = await api(`/work-orders/${id}/transitions`, {
      method: "POST",
      body: { to: "accepted", reason: "在报警台点击“我来处理”" },
    });
    const taker = acceptedBy(order);
    if (taker === me.id && order.assignee_id !== me.id) {
      await api(`/work-orders/${id}/assignment`, {
        method: "POST",
        body: { assignee_id: me.id },
      });
    }
    announce(
      announcer,
      taker === me.id ? `已由您受理工单 #${id}。` : `工单 #${id} 已由${staffName(taker)}受理。`,
    );
  } catch (failure) {
    error.textContent = failure.message;
    button.disabled = false;
    button.textContent = "我来处理";
  }
  await refresh(id).catch(() => {});
}

// --- live updates ------------------------------------------------------------------------

live.on("*", (event) => {
  if (event.data?.kind !== "emergency" || !event.order_id) return;
  const id = event.order_id;
  if (event.type === "emergency.repeated" && alarms.has(id)) {
    alarms.get(id).repeated = true;
    announce(announcer, `工单 #${id} 的居民再次求助。`);
    siren.chirp();
  }
  refresh(id).catch((error) => console.warn("alarm refresh failed", id, error));
});

async function start() {
  try {
    await live.ready();
    const query = OPEN.map((s) => `status=${s}`).join("&");
    const page = await api(`/work-orders?kind=emergency&${query}&limit=100`);
    await Promise.all(page.items.map((o) => refresh(o.id).catch(() => {})));
    updateSummary();
  } catch (error) {
    summary.textContent = `加载失败：${error.message}`;
  }
  live.start();
  setInterval(tick, 1000);
}

start();
