"""Emergencies: a P0 order with address and health notes at once, then advice; the
conversation stays with the resident (no pause: staff join it, the resident is not alone)."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import create_order, identity
from workorders.client import ApiError


class ActionEmergency(Action):
    def name(self) -> str:
        return "action_emergency"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        details = {"description": (tracker.latest_message.get("text") or "紧急求助")[:1000]}
        kind, value = identity(tracker)
        if kind.value == "phone":
            details["caller_phone"] = value
        order = None
        try:
            order = await create_order(tracker, dispatcher, "emergency", details)
        except ApiError as exc:
            dispatcher.utter_message(text=exc.message)
        dispatcher.utter_message(
            response="utter_emergency_advice",
            json_message={"urgent": True, "order_id": order["id"] if order else None},
        )
        return [ActiveLoop(None), SlotSet("requested_slot", None)]
