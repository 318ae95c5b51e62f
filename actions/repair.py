"""Repairs: what, where, how; dangerous cases become P1 with safety advice straight away."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import answering, submit
from actions.dangers import catalogue
from actions.family import whom
from actions.residents import ResidentFormValidation

HOME_WORDS = ("家", "屋", "厨房", "卫生间", "厕所", "卧室", "客厅", "阳台")


def hazard(tracker: Tracker) -> bool:
    if tracker.get_slot("hazard"):
        return True
    return any(
        e.get("entity") == "hazard" or e.get("dangerous")
        for e in tracker.latest_message.get("entities", [])
    )


class ValidateRepairForm(ResidentFormValidation):
    def name(self) -> str:
        return "validate_repair_form"

    def validate_repair_category(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"repair_category": value}
        if hazard(tracker) and not tracker.get_slot("hazard"):
            dispatcher.utter_message(
                text=catalogue().repair_advice(str(value)), json_message={"urgent": True}
            )
            result["hazard"] = True
        if (
            not tracker.get_slot("repair_description")
            and tracker.get_intent_of_latest_message() == "report_repair"
        ):
            result["repair_description"] = tracker.latest_message.get("text")
        return result

    async def extract_place(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("place"):
            return {}
        spoken = next(tracker.get_latest_entity_values("place"), None)
        if spoken:
            return {"place": spoken}
        text = tracker.latest_message.get("text", "")
        if any(word in text for word in HOME_WORDS):
            return {"place": "home"}
        if answering(tracker, "place") and text:
            return {"place": text}
        return {}

    async def extract_repair_description(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "repair_description"):
            return {}
        return {"repair_description": tracker.latest_message.get("text") or None}


_FORM_SLOTS = ("repair_category", "place", "repair_description", "hazard", "person")


class ActionReportRepair(Action):
    def name(self) -> str:
        return "action_report_repair"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        place = tracker.get_slot("place") or "home"
        details: dict[str, Any] = {
            "category": tracker.get_slot("repair_category"),
            "location": "home" if place == "home" else "public",
            "description": (tracker.get_slot("repair_description") or "")[:1000] or "居民报修",
        }
        if place != "home":
            details["place"] = place[:200]
        urgent = bool(tracker.get_slot("hazard"))
        found = await whom(tracker)
        you = "老人" if found.for_elder else "您"
        when = "师傅会尽快赶到" if urgent else f"维修师傅会在两小时内联系{you}"
        done = f"报修记下了：{details['category']}。{when}。"
        if found.for_elder:
            done = f"已经替{found.name}报修：{details['category']}。{when}。"
        return await submit(
            tracker,
            dispatcher,
            "repair",
            details,
            priority="P1" if urgent else "P2",
            done=done,
            form_slots=_FORM_SLOTS,
            found=found,
        )
