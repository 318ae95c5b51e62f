// The resident web chat (channels/gateway/webchat.py). No libraries: served as it is.
// The device's secret and the history stay in this browser (localStorage); the server only
// sees the secret, and derives the conversation key from it.
"use strict";

(function () {
  const SECRET_KEY = "linli.chat.secret";
  const HISTORY_KEY = "linli.chat.history";
  const KEPT = 200; // messages kept for redrawing after a reload
  const SECRET_FORM = /^[A-Za-z0-9_-]{32,128}$/;
  const IDLE = "助手在线，有什么事请说。";

  const list = document.getElementById("messages");
  const status = document.getElementById("status");
  const form = document.getElementById("composer");
  const input = document.getElementById("text");

  function randomHex(bytes) {
    const values = new Uint8Array(bytes);
    crypto.getRandomValues(values);
    return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function deviceSecret() {
    let secret = localStorage.getItem(SECRET_KEY);
    if (!secret || !SECRET_FORM.test(secret)) {
      secret = randomHex(32);
      localStorage.setItem(SECRET_KEY, secret);
    }
    return secret;
  }

  function loadHistory() {
    try {
      const kept = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
      return Array.isArray(kept) ? kept : [];
    } catch (e) {
      return [];
    }
  }

  const secret = deviceSecret();
  const history = loadHistory();

  function save() {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(history.slice(-KEPT)));
  }

  function label(entry) {
    if (entry.role === "resident") return "您";
    if (entry.role === "staff") return "工作人员" + (entry.author ? " " + entry.author : "");
    return "助手";
  }

  // Text only (textContent): nothing a message says can become markup.
  function draw(entry) {
    let item = document.getElementById("m-" + entry.id);
    if (!item) {
      item = document.createElement("li");
      item.id = "m-" + entry.id;
      list.appendChild(item);
    }
    item.className = entry.role + (entry.status === "failed" ? " failed" : "");
    item.replaceChildren();
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = label(entry) + (entry.status === "sending" ? "（发送中…）" : "");
    item.append(who, document.createTextNode(entry.text));
    if (entry.status === "failed") {
      const error = document.createElement("span");
      error.className = "error";
      error.textContent = entry.error || "没有发出去。";
      item.appendChild(error);
      if (entry.retry) {
        const again = document.createElement("button");
        again.type = "button";
        again.className = "retry";
        again.textContent = "重发";
        again.addEventListener("click", () => queue(entry));
        item.appendChild(again);
      }
    }
    item.scrollIntoView({ block: "end" });
  }

  function add(entry) {
    if (history.some((e) => e.id === entry.id)) return false;
    history.push(entry);
    save();
    draw(entry);
    return true;
  }

  function update(entry) {
    save();
    draw(entry);
  }

  function showState(state) {
    status.dataset.state = state.state || "bot";
    status.textContent = state.notice || IDLE;
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    return { ok: response.ok, status: response.status, data: data };
  }

  // One message at a time, in order; a retry uses the same id, so nothing is said twice.
  let pending = Promise.resolve();
  function queue(entry) {
    entry.status = "sending";
    update(entry);
    pending = pending.then(() => deliver(entry));
    return pending;
  }

  async function deliver(entry) {
    const body = { secret: secret, client_id: entry.id };
    if (entry.service) body.service = entry.service;
    else body.text = entry.text;
    let answer;
    try {
      answer = await post("/chat/api/messages", body);
    } catch (e) {
      answer = { ok: false, status: 0, data: null };
    }
    if (!answer.ok) {
      entry.status = "failed";
      entry.error = (answer.data && answer.data.message) || "网络不通，没有发出去，请稍后重发。";
      entry.retry = answer.status === 0 || answer.status >= 500 || answer.status === 409;
      update(entry);
      return;
    }
    entry.status = "sent";
    update(entry);
    answer.data.replies.forEach((text, n) => {
      add({ id: entry.id + ":bot:" + n, role: "bot", text: text });
    });
    // The stream says who answers, in order; an answer may be older than its latest word.
    if (!stream || stream.readyState !== EventSource.OPEN) showState(answer.data);
  }

  function say(text, service) {
    const entry = { id: "m" + Date.now().toString(36) + randomHex(6), role: "resident", text: text };
    if (service) entry.service = service;
    add(entry);
    return queue(entry);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) {
      input.focus();
      return;
    }
    input.value = "";
    say(text);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  document.querySelectorAll("[data-service]").forEach((button) => {
    button.addEventListener("click", () => say(button.textContent.trim(), button.dataset.service));
  });

  // Staff replies arrive on the stream; acknowledged once shown, so the server knows they
  // reached the resident (unacknowledged ones are sent again on the next connection).
  let stream = null;
  function listen() {
    stream = new EventSource("/chat/api/stream?secret=" + encodeURIComponent(secret));
    stream.addEventListener("reply", (event) => {
      const reply = JSON.parse(event.data);
      add({ id: "staff-" + reply.id, role: "staff", text: reply.text, author: reply.author });
      post("/chat/api/ack", { secret: secret, id: reply.id }).catch(() => {});
    });
    stream.addEventListener("state", (event) => showState(JSON.parse(event.data)));
    stream.addEventListener("error", () => {
      if (stream.readyState !== EventSource.OPEN) status.textContent = "连接断了，正在重新连接…";
    });
  }

  history.forEach((entry) => {
    if (entry.status === "sending") {
      entry.status = "failed";
      entry.error = "上次没有发完，请重发。";
      entry.retry = true;
    }
    draw(entry);
  });
  save();
  listen();
})();
