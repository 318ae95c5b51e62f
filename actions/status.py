"""Where are my requests? Open orders read out in plain words."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import api
from actions.family import WITHDRAWN, whom
from workorders.client import ApiError, ApiUnavailable
from workorders.words import plain, subject  # noqa: F401 (the words; cancel.py imports them here)

OPEN = ["new", "accepted", "in_progress", "on_hold", "resolved"]


class ActionCheckStatus(Action):
    def name(self) -> str:
        return "action_check_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        # whom this was for counts for this question only (actions/family.py)
        return [*await self._answer(dispatcher, tracker), SlotSet("person", None)]

    async def _answer(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
        found = await whom(tracker)
        if found.blocked:
            dispatcher.utter_message(text=found.blocked)
            return [SlotSet("acting_for", None)] if found.blocked == WITHDRAWN else []
        resident_id = found.resident_id
        if found.choices:  # several elders and none chosen yet: each one's
            return await self._several(dispatcher, found.choices)
        if not resident_id:
            dispatcher.utter_message(
                text="我还不知道您是哪一位，先办一件事或者转人工，我就能帮您查了。"
            )
            return []
        try:
            orders = await api().orders_of(int(resident_id), OPEN, found.proxy_id)
        except (ApiError, ApiUnavailable):
            dispatcher.utter_message(text="系统暂时查不了，请稍后再问我。")
            return []
        who = found.name if found.for_elder else "您"
        if not orders:
            dispatcher.utter_message(text=f"{who}现在没有正在办的事。")
            return []
        lines = "；".join(plain(o) for o in orders[:5])
        dispatcher.utter_message(text=f"{who}有{len(orders)}件事在办：{lines}。")
        return []

    async def _several(
        self, dispatcher: CollectingDispatcher, proxies: list[dict[str, Any]]
    ) -> list[EventType]:
        said = []
        for proxy in proxies:
            try:
                orders = await api().orders_of(int(proxy["resident_id"]), OPEN, int(proxy["id"]))
            except (ApiError, ApiUnavailable):
                dispatcher.utter_message(text="系统暂时查不了，请稍后再问我。")
                return []
            lines = "；".join(plain(o) for o in orders[:5])
            said.append(
                f"{proxy['resident_name']}有{len(orders)}件事在办：{lines}"
                if orders
                else f"{proxy['resident_name']}现在没有正在办的事"
            )
        dispatcher.utter_message(text="。".join(said) + "。")
        return []
