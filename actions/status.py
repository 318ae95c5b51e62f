"""Where are my requests? Open orders read out in plain words."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import api
from workorders.client import ApiError, ApiUnavailable
from workorders.words import plain, subject  # noqa: F401 (the words; cancel.py imports them here)

OPEN = ["new", "accepted", "in_progress", "on_hold", "resolved"]


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
