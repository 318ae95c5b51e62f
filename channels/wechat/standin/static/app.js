// The phone page: a resident "on WeChat". Everything goes through the stand-in, which pushes to
// the channel with WeChat's real protocol; what the resident receives is long-polled.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "wechat-standin";
const logEl = $("log");
let me = load();
let menu = null;
let samples = [];
let sampleIndex = 0;
let polling = 0; // bumped to stop an old poll loop (new user)

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) || "null");
    if (saved && saved.openid) return saved;
  } catch (e) { /* a fresh start */ }
  return null;
}

function save() {
  me.history = me.history.slice(-200);
  localStorage.setItem(STORE, JSON.stringify(me));
}

function newOpenid() {
  const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = crypto.getRandomValues(new Uint8Array(27));
  return "o" + Array.from(bytes, (b) => abc[b % 64]).join("");
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function row(mine, content) {
  const line = el("div", mine ? "row me" : "row");
  line.append(el("div", "avatar", mine ? "我" : "邻"), content);
  logEl.append(line);
  logEl.scrollTop = logEl.scrollHeight;
  return content;
}

// One entry of the history: {mine, kind, text, sub, pic, item}.
function draw(entry) {
  if (entry.item) return drawReceived(entry.item);
  const bubble = el("div", "bubble", entry.text);
  if (entry.pic) {
    const img = el("img");
    img.src = entry.pic;
    img.alt = "我发的图片";
    bubble.textContent = "";
    bubble.append(img);
  }
  if (entry.sub) bubble.append(el("span", "sub", entry.sub));
  return row(true, bubble);
}

function drawReceived(item) {
  if (item.via === "error_notice") {
    logEl.append(el("p", "notice", item.text));
    logEl.scrollTop = logEl.scrollHeight;
    return null;
  }
  if (item.via === "template" || item.via === "subscribe") {
    const card = el("article", "card");
    card.append(el("h2", null, item.via === "template" ? "服务通知" : "订阅通知"));
    const list = el("dl");
    const values = (item.data && item.data.values) || {};
    for (const [key, value] of Object.entries(values)) {
      list.append(el("dt", null, key), el("dd", null, value));
    }
    card.append(list);
    const url = item.data && (item.data.url || item.data.page);
    if (url) {
      const link = el("a", null, "详情");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      card.append(link);
    }
    return row(false, card);
  }
  const text = item.text !== null ? item.text : `［${(item.data && (item.data.MsgType || item.data.msgtype)) || "消息"}］`;
  return row(false, el("div", "bubble", text));
}

function remember(entry) {
  me.history.push(entry);
  save();
}

async function act(message, entry) {
  const bubble = entry ? draw(entry) : null;
  if (bubble) bubble.classList.add("pending");
  $("status").textContent = "发送中…";
  try {
    const result = await api(`/standin/users/${me.openid}/messages`, message);
    if (entry && result.media_id && message.type === "image") {
      entry.pic = `/standin/pic/${result.media_id}`;
      const img = el("img");
      img.src = entry.pic;
      img.alt = "我发的图片";
      bubble.textContent = "";
      bubble.append(img);
    }
    const tries = result.attempts.length;
    $("status").textContent = tries > 1 ? `微信推送了 ${tries} 次（有超时或出错）` : "";
  } catch (error) {
    if (bubble) bubble.classList.add("failed");
    $("status").textContent = `没有发出去：${error.message}`;
  } finally {
    if (bubble) bubble.classList.remove("pending");
    if (entry) remember(entry);
  }
}

async function poll() {
  const mine = ++polling;
  while (mine === polling) {
    try {
      const { items } = await api(`/standin/users/${me.openid}/inbox?after=${me.seq}&wait=25`);
      if (mine !== polling) return;
      for (const item of items) {
        me.seq = Math.max(me.seq, item.seq);
        drawReceived(item);
        remember({ item });
      }
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function drawMenu() {
  const nav = $("menu");
  nav.textContent = "";
  const buttons = (menu && menu.button) || [];
  $("toggle").hidden = buttons.length === 0;
  buttons.forEach((button, index) => {
    const subs = Array.isArray(button.sub_button) ? button.sub_button
      : (button.sub_button && button.sub_button.list) || [];
    const node = el("button", null, (subs.length ? "≡ " : "") + button.name);
    node.type = "button";
    node.addEventListener("click", () => (subs.length ? openSub(subs, index) : press(button)));
    nav.append(node);
  });
  if (!buttons.length) showKeyboard(true);
}

function openSub(subs, index) {
  const box = $("submenu");
  const same = !box.hidden && box.dataset.index === String(index);
  box.textContent = "";
  box.hidden = same;
  if (same) return;
  box.dataset.index = String(index);
  box.className = `submenu pos${index}`;
  for (const sub of subs) {
    const node = el("button", null, sub.name);
    node.type = "button";
    node.addEventListener("click", () => { box.hidden = true; press(sub); });
    box.append(node);
  }
}

function press(button) {
  if (button.type === "click") {
    act({ type: "event", event: "CLICK", key: button.key }, null);
  } else if (button.type === "view") {
    act({ type: "event", event: "VIEW", key: button.url }, null);
    window.open(button.url, "_blank", "noopener");
  } else {
    $("status").textContent = `替身不模拟这类菜单（${button.type}）`;
  }
}

function showKeyboard(keyboard) {
  $("compose").hidden = !keyboard;
  $("menu").hidden = keyboard;
  $("submenu").hidden = true;
  $("input").classList.toggle("menu-mode", !keyboard);
  $("toggle").textContent = keyboard ? "☰" : "⌨";
  $("toggle").setAttribute("aria-label", keyboard ? "切换到菜单" : "切换到键盘");
}

async function start(fresh) {
  if (fresh || !me) {
    me = { openid: newOpenid(), seq: 0, history: [] };
    save();
  }
  logEl.textContent = "";
  me.history.forEach(draw);
  $("openid").textContent = me.openid;
  if (!me.followed) {
    me.followed = true;
    save();
    act({ type: "event", event: "subscribe" }, null);
  }
  poll();
}

async function refreshMenu() {
  try {
    menu = (await api("/standin/menu")).menu;
    drawMenu();
    if (menu && menu.button && menu.button.length && !$("menu").dataset.shown) {
      $("menu").dataset.shown = "1";
      showKeyboard(false);
    }
  } catch (error) { /* try again later */ }
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const config = await api("/standin/config");
    $("account").textContent = config.account_name;
    $("callback").textContent = config.callback;
    samples = (await api("/standin/samples")).samples;
  } catch (error) { /* the page still works */ }
  $("voice").hidden = samples.length === 0;
  $("compose").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    $("text").value = "";
    act({ type: "text", content: text }, { mine: true, text });
  });
  $("voice").addEventListener("click", () => {
    const sample = samples[sampleIndex++ % samples.length];
    act(
      { type: "voice", sample: sample.file, recognition: sample.transcript },
      { mine: true, text: "▶ 语音", sub: sample.transcript },
    );
  });
  $("image").addEventListener("click", () => act({ type: "image" }, { mine: true, text: "［图片］" }));
  $("toggle").addEventListener("click", () => showKeyboard($("compose").hidden));
  $("more").addEventListener("click", () => {
    $("panel").hidden = !$("panel").hidden;
    $("more").setAttribute("aria-expanded", String(!$("panel").hidden));
  });
  $("follow").addEventListener("click", () => act({ type: "event", event: "subscribe" }, null));
  $("unfollow").addEventListener("click", () => act({ type: "event", event: "unsubscribe" }, null));
  $("newuser").addEventListener("click", () => start(true));
  start(false);
  refreshMenu();
  setInterval(refreshMenu, 30000);
});
