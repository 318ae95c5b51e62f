"""Where are my requests? Open orders read out in plain words."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import api, parse_time, say_moment
from workorders.client import ApiError, ApiUnavailable
from workorders.contract import KIND_LABELS, Kind

OPEN = ["new", "accepted", "in_progress", "on_hold", "resolved"]
PROGRESS = {
    "new": "已经收到，正在安排",
    "accepted": "工作人员已经接单",
    "in_progress": "正在办理",
    "on_hold": "在等配件或等您回复",
    "resolved": "已经办好了，请您评价一下",
}


def subject(order: dict[str, Any]) -> str:
    details = order.get("details", {})
    what = details.get("category") or details.get("service") or details.get("department") or ""
    return f"{KIND_LABELS[Kind(order['kind'])]}{'：' + what if what else ''}"


def plain(order: dict[str, Any]) -> str:
    text = f"{subject(order)}，{PROGRESS.get(order['status'], order['status'])}"
    when = parse_time(order.get("scheduled_at") or order.get("details", {}).get("window_start"))
    if when is not None and order["status"] != "resolved":
        text += f"，时间是{say_moment(when)}"
    return text


class ActionCheckStatus(Action):
    def name(self) -> str:
        return "action_check_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        resident_id = tracker.get_slot("resident_id")
        if not resident_id:
            dispatcher.utter_message(
                text="我还不知道您是哪一位，先办一件事或者转人工，我就能帮您查了。"
            )
            return []
        try:
            orders = await api().orders_of(int(resident_id), OPEN)
        except (ApiError, ApiUnavailable):
            dispatcher.utter_message(text="系统暂时查不了，请稍后再问我。")
            return []
        if not orders:
            dispatcher.utter_message(text="您现在没有正在办的事。")
            return []
        lines = "；".join(plain(o) for o in orders[:5])
        dispatcher.utter_message(text=f"您有{len(orders)}件事在办：{lines}。")
        return []
