/**
 * On every console page, for supervisors: a hand-over nobody claimed in time (the scheduler's
 * `conversation.unclaimed`, repeated while it waits) is shown at the top with a chirp and a
 * link to take it on, until someone claims it. A page opened later still shows those already
 * alerted (`alerts_sent` on the waiting ones), so navigating loses nothing.
 */
import { api } from "./api.js";
import { me } from "./context.js";
import { fill, h } from "./dom.js";
import * as live from "./live.js";
import { siren } from "./siren.js";

const box = document.getElementById("handoff-alert");
const late = new Map(); // conversation key -> {alert, waited}
const ENDED = ["conversation.claimed", "conversation.handed_back", "conversation.closed"];

function render() {
  box.hidden = late.size === 0;
  const worst = [...late.entries()].sort((a, b) => b[1].waited - a[1].waited);
  fill(
    box,
    late.size ? `${late.size} 个居民转人工后还没有人接手：` : "",
    h(
      "ul",
      {},
      worst.map(([key, { alert, waited }]) =>
        h(
          "li",
          { dataset: { conversation: key, alert: String(alert) } },
          `已等待 ${Math.max(1, Math.round(waited / 60))} 分钟（第 ${alert} 次提醒） `,
          h("a", { href: `/console/conversations?c=${encodeURIComponent(key)}` }, "去安排接手"),
        ),
      ),
    ),
  );
}

async function alerted(event) {
  late.set(event.data.conversation, {
    alert: event.data.alert,
    waited: event.data.waited_seconds ?? 0,
  });
  render();
  await siren.chirp();
  box.dataset.sounded = "true";
}

async function start() {
  if (!box || !["supervisor", "admin"].includes(me?.role)) return;
  live.on("conversation.unclaimed", alerted);
  for (const type of ENDED) {
    live.on(type, (event) => {
      if (late.delete(event.data.conversation)) render();
    });
  }
  await live.ready();
  const waiting = await api("/conversations?state=waiting&limit=200");
  for (const conversation of waiting.items) {
    const handoff = conversation.handoff;
    if (handoff?.alerts_sent > 0) {
      late.set(conversation.key, {
        alert: handoff.alerts_sent,
        waited: (Date.now() - new Date(handoff.opened_at).getTime()) / 1000,
      });
    }
  }
  render();
  live.start();
}

start().catch((error) => console.error("hand-over alerts unavailable", error));
