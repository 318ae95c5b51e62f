"""Complaints: recorded against the order they are about, escalated, and a person called in."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.cancel import KIND_WORDS
from actions.common import api, create_order
from actions.handoff import hand_over
from workorders.client import ApiError, ApiUnavailable


async def about(resident_id: int, text: str) -> int | None:
    """The order the complaint is about: the resident's latest one of the kind it mentions."""
    try:
        orders = await api().orders_of(resident_id)
    except (ApiError, ApiUnavailable):
        return None
    orders = [o for o in orders if o["kind"] not in ("complaint", "callback")]
    mentioned = [o for o in orders if any(w in text for w in KIND_WORDS.get(o["kind"], ()))]
    chosen = mentioned or (orders if len(orders) == 1 else [])
    return chosen[0]["id"] if chosen else None


class ActionRecordComplaint(Action):
    def name(self) -> str:
        return "action_record_complaint"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        text = (tracker.latest_message.get("text") or "居民投诉")[:1000]
        resident_id = tracker.get_slot("resident_id")
        if resident_id:
            details: dict[str, Any] = {"text": text}
            related = await about(int(resident_id), text)
            if related:
                details["about_order_id"] = related
            try:
                if await create_order(tracker, dispatcher, "complaint", details):
                    dispatcher.utter_message(
                        text="您的投诉已经记下了，会交给主管处理。给您添麻烦了。"
                    )
            except ApiError as exc:
                dispatcher.utter_message(text=exc.message)
        return await hand_over(tracker, dispatcher, "complaint")
