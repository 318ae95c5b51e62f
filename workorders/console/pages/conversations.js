/**
 * 会话: the hand-overs waiting for a person (longest first) and those staff own. One is open at
 * a time (?c=<key> in the address): the whole conversation, claim, reply, hand back, close.
 * Next to the reply box, how far a reply reaches the resident (WeChat: customer-service messages
 * for 48 h after the resident's last message, a few per message), with a warning to call when it
 * does not; a reply the channel refused is marked on the reply itself.
 * Everything follows the event stream, so two consoles see the same owner within a poll (the
 * alert about a hand-over nobody claimed is on every page: ../js/handoff_alerts.js).
 */
import { api } from "../js/api.js";
import { can, channelLabel, me } from "../js/context.js";
import { fill, h } from "../js/dom.js";
import { duration, formatMinute, formatTime } from "../js/format.js";
import * as live from "../js/live.js";

const REASONS = {
  request_human: "居民要求人工服务",
  not_understood: "助手多次没听懂",
  complaint: "居民投诉",
};
const ROLES = { resident: "居民", bot: "助手", staff: "工作人员", system: "记录" };
const SPEAKERS = { caller: "来电人", bot: "助手", staff: "工作人员" };
const CALL_OUTCOMES = {
  completed: "已办完",
  transferred: "已转人工",
  callback: "需回拨",
  abandoned: "对方挂断",
  failed: "未接通",
};
const CALLED = ["hotline", "terminal"];
const SUPERVISING = ["supervisor", "admin"].includes(me?.role);

const list = document.getElementById("conv-list");
const summary = document.getElementById("conv-summary");
const detail = document.getElementById("conv-detail");
const facts = document.getElementById("conv-facts");
const notice = document.getElementById("conv-notice");
const errorBox = document.getElementById("conv-error");
const claimButton = document.getElementById("conv-claim");
const log = document.getElementById("conv-log");
const reachBox = document.getElementById("conv-reach");
const replyForm = document.getElementById("conv-reply");
const replyText = document.getElementById("conv-reply-text");
const endBox = document.getElementById("conv-end");
const handbackForm = document.getElementById("conv-handback");
const closeForm = document.getElementById("conv-close");

let rows = [];
let selected = new URLSearchParams(location.search).get("c");
let current = null; // the open conversation's detail
let reachShown = ""; // what the reach box says now, so the clock redraws it only on a change

function waited(conversation) {
  const since = conversation.handoff?.opened_at;
  return since ? duration(Date.now() - new Date(since).getTime()) : "";
}

function owner(conversation) {
  const handoff = conversation.handoff;
  if (!handoff) return "助手接待中";
  if (!handoff.claimed_by) return "等待接手";
  return handoff.claimed_by === me?.id ? "我在处理" : `${handoff.claimed_by_name} 处理中`;
}

function row(conversation) {
  const handoff = conversation.handoff;
  const late = handoff && !handoff.claimed_by && handoff.alerts_sent > 0;
  const link = h(
    "a",
    {
      href: `?c=${encodeURIComponent(conversation.key)}`,
      "aria-current": conversation.key === selected ? "true" : null,
      onclick: (event) => {
        event.preventDefault();
        select(conversation.key);
      },
    },
    h("strong", {}, REASONS[handoff?.reason] ?? "会话"),
    " · ",
    channelLabel(conversation.channel),
    conversation.resident_name ? ` · ${conversation.resident_name}` : "",
  );
  return h(
    "li",
    {
      class: `conv-item conv-item--${conversation.state}${late ? " conv-item--late" : ""}`,
      dataset: { key: conversation.key, state: conversation.state },
    },
    link,
    h("p", { class: "conv-owner" }, owner(conversation)),
    handoff
      ? h(
          "p",
          { class: "conv-wait" },
          "已等待 ",
          h("span", { class: "conv-waited" }, waited(conversation)),
        )
      : null,
    handoff?.summary ? h("p", { class: "conv-summary" }, handoff.summary.split("\n").at(-1)) : null,
  );
}

async function loadList() {
  const page = await api("/conversations?state=open&limit=200");
  rows = page.items;
  fill(list, rows.map(row));
  const waiting = rows.filter((c) => c.state === "waiting").length;
  summary.textContent = `${waiting} 个会话等待接手，${rows.length - waiting} 个正在处理。`;
}

function factsOf(conversation) {
  const items = [
    ["渠道", channelLabel(conversation.channel)],
    ["居民", conversation.resident_name ?? "未登记"],
    ["状态", owner(conversation)],
  ];
  const handoff = conversation.handoff ?? conversation.handoffs[0];
  if (handoff) {
    items.push(["原因", REASONS[handoff.reason] ?? handoff.reason]);
    items.push(["转人工时间", formatTime(handoff.opened_at)]);
    if (handoff.order_id) {
      items.push([
        "回拨工单",
        h("a", { href: `/console/orders?order=${handoff.order_id}` }, `#${handoff.order_id}`),
      ]);
    }
  }
  return items.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
}

/** A staff reply the channel refused: held for the resident's next message, or given up. */
const REFUSED = {
  subscribe: {
    look: "held",
    label: "暂未送达",
    says: (reason) => `：${reason}。已发订阅消息提醒居民，居民回消息后会自动送达。`,
  },
  callback: {
    look: "failed",
    label: "未送达",
    says: (reason) => `：没能发到居民的微信（${reason}）。请打电话联系居民。`,
  },
};

/** Where a staff reply is: delivered, waiting for the channel, held or given up (marked). */
function delivery(message, channel) {
  if (message.delivered_at) return [null, h("p", { class: "msg-delivery" }, "已送达")];
  const fallback = message.undelivered?.fallback;
  const refused = REFUSED[fallback];
  if (refused) {
    const { look, label, says } = refused;
    return [
      fallback,
      h(
        "p",
        { class: `msg-delivery msg-delivery--${look}` },
        h("strong", {}, label),
        says(message.undelivered.reason),
      ),
    ];
  }
  const waiting = channel === "web" ? "等待居民打开页面后送达" : "等待送达";
  return [null, h("p", { class: "msg-delivery" }, waiting)];
}

function line(message, channel) {
  const who =
    message.role === "staff" && message.author
      ? `${ROLES.staff} ${message.author}`
      : ROLES[message.role];
  const [undelivered, status] =
    message.role === "staff" ? delivery(message, channel) : [null, null];
  return h(
    "li",
    {
      class: `msg msg--${message.role}${undelivered ? ` msg--undelivered msg--${undelivered}` : ""}`,
      dataset: { role: message.role, ...(undelivered ? { undelivered } : {}) },
    },
    h(
      "p",
      { class: "msg-who" },
      who,
      " · ",
      h("time", { datetime: message.at }, formatTime(message.at)),
    ),
    h("p", { class: "msg-text" }, message.text),
    status,
  );
}

/**
 * How far a reply reaches the resident, as the channel last reported it (null: no limits). Open
 * with sends left: how many, until when. Otherwise a warning: a reply will not reach them on
 * the channel now, call them (the number is on the callback order, else in the resident's file).
 */
function reachNotice(conversation) {
  const reach = conversation.reach;
  if (!reach || !conversation.handoff || !conversation.can_push) return null;
  const wechat = conversation.channel === "wechat";
  const what = wechat ? "微信客服消息" : `${channelLabel(conversation.channel)}消息`;
  const until = reach.open_until ? new Date(reach.open_until).getTime() : 0;
  if (until > Date.now() && reach.sends_left > 0) {
    const left = `还能发 ${reach.sends_left} 条，${formatMinute(reach.open_until)} 前有效`;
    return { key: `open ${left}`, warn: false, children: [`${what}：${left}`] };
  }
  let why = "这次能发的条数已用完，居民再发消息后才能再发";
  if (!reach.open_until) why = "现在不能发";
  else if (until <= Date.now()) {
    why = `${formatMinute(reach.open_until)} 起已不能再发（居民超过48小时没有发消息）`;
  }
  const orderId = conversation.handoff.order_id;
  const residentId = conversation.resident_id;
  let call = ["请打电话联系居民。"];
  if (orderId) {
    const link = h("a", { href: `/console/orders?order=${orderId}` }, `#${orderId}`);
    call = ["请打电话联系居民，电话在回拨工单 ", link, " 上。"];
  } else if (residentId) {
    const link = h("a", { href: `/console/residents?id=${residentId}` }, "居民资料");
    call = ["请打电话联系居民，电话在", link, "里。"];
  }
  return {
    key: `closed ${why} ${orderId}`,
    warn: true,
    children: [
      h("strong", {}, `${what}：${why}。`),
      `回复现在不会通过${wechat ? "微信" : channelLabel(conversation.channel)}送到居民那里，`,
      ...call,
    ],
  };
}

function renderReach() {
  const notice = current ? reachNotice(current) : null;
  const key = notice ? notice.key : "";
  if (key === reachShown) return;
  reachShown = key;
  reachBox.hidden = !notice;
  reachBox.className = `conv-reach${notice?.warn ? " conv-reach--closed" : ""}`;
  reachBox.dataset.reach = notice ? (notice.warn ? "closed" : "open") : "";
  fill(reachBox, notice ? notice.children : []);
}

function render() {
  const conversation = current;
  detail.hidden = !conversation;
  if (!conversation) return;
  const handoff = conversation.handoff;
  const mine = handoff?.claimed_by === me?.id;
  document.getElementById("conv-title").textContent =
    `会话 · ${channelLabel(conversation.channel)}${conversation.resident_name ? ` · ${conversation.resident_name}` : ""}`;
  detail.dataset.state = conversation.state;
  fill(facts, factsOf(conversation));
  fill(log, conversation.messages.map((m) => line(m, conversation.channel)));
  log.scrollTop = log.scrollHeight; // the newest at the bottom, in view
  const open = Boolean(handoff);
  claimButton.hidden = !open || Boolean(handoff.claimed_by) || !can("conversations:reply");
  replyForm.hidden = !mine || !conversation.can_push;
  reachShown = null; // redraw: another conversation, or the same one changed
  renderReach();
  endBox.hidden =
    !open || !can("conversations:reply") || (handoff.claimed_by && !mine && !SUPERVISING);
  if (!open) notice.textContent = "这个会话现在由助手接待。";
  else if (mine && !conversation.can_push)
    notice.textContent =
      "这个渠道不能把文字送到居民那里：请按回拨工单给居民打电话，处理完后结束会话。";
  else if (handoff.claimed_by && !mine)
    notice.textContent = `这个会话由${handoff.claimed_by_name}处理。`;
  else notice.textContent = "";
}

async function loadDetail() {
  if (!selected) {
    current = null;
    render();
    return;
  }
  current = await api(`/conversations/${encodeURIComponent(selected)}`);
  render();
  await showCall(current);
}

/**
 * A telephone hand-over: the call it came from, found by its callback order among the calls of
 * the hour before (the record is written when the call ends, listing the orders it made).
 */
async function showCall(conversation) {
  const box = document.getElementById("conv-call");
  const handoff = conversation?.handoff ?? conversation?.handoffs[0];
  box.hidden = true;
  if (!conversation || !CALLED.includes(conversation.channel) || !handoff?.order_id) return;
  const opened = new Date(handoff.opened_at).getTime();
  const query = new URLSearchParams({
    channel: conversation.channel,
    from: new Date(opened - 3600_000).toISOString(),
    to: new Date(opened + 60_000).toISOString(),
    limit: "100",
  });
  const calls = await api(`/calls?${query}`);
  const call = calls.items.find((c) => c.order_ids.includes(handoff.order_id));
  if (!call || conversation !== current) return;
  const detail = await api(`/calls/${call.id}`);
  fill(
    document.getElementById("conv-call-facts"),
    `${formatTime(detail.started_at)} 起，${duration(detail.duration_seconds * 1000)}，`,
    `来电 ${detail.caller ?? "未显示号码"}，${CALL_OUTCOMES[detail.outcome] ?? detail.outcome}`,
  );
  fill(
    document.getElementById("conv-call-log"),
    detail.transcript.map((turn) =>
      h(
        "li",
        { class: `msg msg--${turn.speaker === "caller" ? "resident" : turn.speaker}` },
        h("p", { class: "msg-who" }, SPEAKERS[turn.speaker] ?? turn.speaker),
        h("p", { class: "msg-text" }, turn.text),
      ),
    ),
  );
  box.hidden = false;
}

function select(key) {
  selected = key;
  history.replaceState(null, "", `?c=${encodeURIComponent(key)}`);
  errorBox.hidden = true;
  for (const item of list.querySelectorAll("a[aria-current]")) item.removeAttribute("aria-current");
  list.querySelector(`li[data-key="${CSS.escape(key)}"] a`)?.setAttribute("aria-current", "true");
  loadDetail().catch(showError);
}

function showError(error) {
  errorBox.hidden = false;
  errorBox.textContent = error.message;
}

async function act(path, body, done) {
  errorBox.hidden = true;
  try {
    await api(`/conversations/${encodeURIComponent(selected)}/${path}`, { method: "POST", body });
    done?.();
  } catch (error) {
    showError(error);
  }
  await Promise.all([loadList(), loadDetail()]).catch(showError);
}

claimButton.addEventListener("click", () => act("claim", undefined, () => replyText.focus()));
replyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  act("replies", { text: replyText.value }, () => {
    replyText.value = "";
  });
});
handbackForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const note = document.getElementById("conv-handback-note");
  act("handback", { note: note.value || null }, () => {
    note.value = "";
  });
});
closeForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const outcome = document.getElementById("conv-close-outcome");
  act("close", { outcome: outcome.value }, () => {
    outcome.value = "";
  });
});

let reload = null;
function refreshSoon(key) {
  clearTimeout(reload);
  reload = setTimeout(() => {
    loadList().catch(showError);
    if (key && key === selected) loadDetail().catch(showError);
  }, 150);
}

live.on("*", (event) => {
  if (!event.type.startsWith("conversation.")) return;
  refreshSoon(event.data.conversation);
});

setInterval(() => {
  for (const item of list.querySelectorAll("li[data-key]")) {
    const conversation = rows.find((c) => c.key === item.dataset.key);
    const span = item.querySelector(".conv-waited");
    if (conversation && span) span.textContent = waited(conversation);
  }
  renderReach(); // the window closes while staff look at it
}, 1000);

await live.ready();
await Promise.all([loadList(), loadDetail()]).catch(showError);
live.start();
