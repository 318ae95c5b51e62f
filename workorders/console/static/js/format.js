/** Times and durations the way staff read them, in the residents' time zone. */
import { timeZone } from "./context.js";

const timeFormat = new Intl.DateTimeFormat("zh-CN", {
  timeZone,
  month: "numeric",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

function partsOf(iso) {
  return Object.fromEntries(timeFormat.formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
}

/** 11月21日 14:03:05 */
export function formatTime(iso) {
  if (!iso) return "—";
  const parts = partsOf(iso);
  return `${parts.month}月${parts.day}日 ${parts.hour}:${parts.minute}:${parts.second}`;
}

/** 12月7日 09:30 (a deadline, to the minute) */
export function formatMinute(iso) {
  if (!iso) return "—";
  const parts = partsOf(iso);
  return `${parts.month}月${parts.day}日 ${parts.hour}:${parts.minute}`;
}

/** 45秒, 3分12秒, 2小时5分, 3天4小时. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(Math.abs(ms) / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}天${h ? `${h}小时` : ""}`;
  if (h > 0) return `${h}小时${m ? `${m}分` : ""}`;
  if (m > 0) return `${m}分${s % 60 ? `${s % 60}秒` : ""}`;
  return `${s % 60}秒`;
}

/** Seconds since `iso`, for the 60 s emergency target. */
export function secondsSince(iso, now = Date.now()) {
  return Math.max(0, Math.floor((now - new Date(iso).getTime()) / 1000));
}
