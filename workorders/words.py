"""How an order and a moment are said to a resident, in plain words: the one place for them.

The dialogue's actions (actions/status.py, actions/cancel.py, the spoken times of
actions/common.py) and the channels that tell a resident by themselves (the gateway's WeChat
status messages, channels/gateway/wechat_notify.py) import these; nothing here needs Rasa.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from workorders.contract import KIND_LABELS, Kind

TZ = ZoneInfo("Asia/Shanghai")
WEEKDAYS = "一二三四五六日"

PROGRESS = {
    "new": "已经收到，正在安排",
    "accepted": "工作人员已经接单",
    "in_progress": "正在办理",
    "on_hold": "在等配件或等您回复",
    "resolved": "已经办好了，请您评价一下",
    "cancelled": "已经取消了",
}
# No appointment time is read out for these: it no longer matters.
NO_TIME = frozenset({"resolved", "cancelled"})


def say_day(moment: datetime) -> str:
    local = moment.astimezone(TZ)
    return f"{local.month}月{local.day}号星期{WEEKDAYS[local.weekday()]}"


def say_clock(moment: datetime) -> str:
    local = moment.astimezone(TZ)
    hour = local.hour
    part = "上午" if hour < 12 else ("中午" if hour < 13 else ("下午" if hour < 18 else "晚上"))
    shown = hour if hour <= 12 else hour - 12
    minute = "" if local.minute == 0 else ("半" if local.minute == 30 else f"{local.minute}分")
    return f"{part}{shown}点{minute}"


def say_moment(moment: datetime) -> str:
    return say_day(moment) + say_clock(moment)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=TZ)


def subject(order: dict[str, Any]) -> str:
    """报修：水管, 看病预约：内科 …"""
    details = order.get("details", {})
    what = details.get("category") or details.get("service") or details.get("department") or ""
    return f"{KIND_LABELS[Kind(order['kind'])]}{'：' + what if what else ''}"


def progress(status: str) -> str:
    return PROGRESS.get(status, status)


def plain(order: dict[str, Any]) -> str:
    """报修：水管，工作人员已经接单，时间是5月6号星期三上午9点"""
    text = f"{subject(order)}，{progress(order['status'])}"
    when = parse_time(order.get("scheduled_at") or order.get("details", {}).get("window_start"))
    if when is not None and order["status"] not in NO_TIME:
        text += f"，时间是{say_moment(when)}"
    return text
