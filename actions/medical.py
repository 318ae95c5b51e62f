"""Medical appointments: department and day, then real free slots, a choice, a read-back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.choices import pick
from actions.common import (
    answering,
    api,
    create_order,
    now,
    parse_time,
    say_day,
    say_moment,
)
from actions.family import forget, whom
from actions.residents import ResidentFormValidation
from workorders.client import ApiError, ApiUnavailable

OFFER = 4  # how many slots an elder can keep in mind when they are read out
WHAT_TO_BRING = "请带好身份证和医保卡，提前一刻钟到社区卫生服务中心。"


def _offered(tracker: Tracker) -> list[dict[str, Any]]:
    return tracker.get_slot("offered_slots") or []


class ValidateMedicalForm(ResidentFormValidation):
    def name(self) -> str:
        return "validate_medical_form"

    async def validate_department(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        try:
            known = await api().departments()
        except ApiUnavailable:
            dispatcher.utter_message(
                text="医院预约系统暂时连不上，请稍后再试，或者我请工作人员帮您约。"
            )
            return {"department": None}
        name = "全科" if value in ("家庭医生", "全科/家庭医生") else value
        if name in known:
            return {"department": name}
        dispatcher.utter_message(text=f"社区卫生服务中心没有{value}。可以约：{'、'.join(known)}。")
        return {"department": None}

    async def validate_date(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        day = parse_time(value)
        department = tracker.get_slot("department")
        if day is None or day.date() < now().date():
            dispatcher.utter_message(text="这个日子已经过去了，请说一个今天以后的日子。")
            return {"date": None}
        reset = {"date": value, "slot_choice": None, "booking_confirmed": None}
        if not department:
            return reset
        offered = await find_slots(
            dispatcher, department, day, parse_time(tracker.get_slot("time"))
        )
        if not offered:
            return {"date": None, "offered_slots": []}
        return {**reset, "offered_slots": offered}

    async def extract_slot_choice(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "slot_choice"):
            return {}
        spoken = next(
            tracker.get_latest_entity_values("choice"), None
        ) or tracker.latest_message.get("text", "")
        return {"slot_choice": spoken or None}

    def validate_slot_choice(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if isinstance(value, dict):
            return {"slot_choice": value}
        offered = _offered(tracker)
        index = pick(str(value), [parse_time(s["start"]) for s in offered])
        if index is None:
            dispatcher.utter_message(text="没听清您要哪一个，请说“第一个”“第二个”这样。")
            return {"slot_choice": None}
        return {"slot_choice": offered[index]}

    async def extract_booking_confirmed(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return confirmation(tracker, "booking_confirmed")

    def validate_booking_confirmed(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if value:
            return {"booking_confirmed": True}
        return {"booking_confirmed": None, "slot_choice": None}


async def find_slots(
    dispatcher: CollectingDispatcher, department: str, day: datetime, after: datetime | None
) -> list[dict[str, Any]]:
    """Free slots that day (from `after`'s hour when a time was said), else the nearest ones."""
    try:
        slots = await api().free_slots(department, day.date(), days=1, limit=40)
        if after is not None:
            slots = [s for s in slots if parse_time(s["start"]).hour >= after.hour] or slots
        if slots:
            return slots[:OFFER]
        slots = await api().free_slots(
            department, day.date() + timedelta(days=1), days=7, limit=OFFER
        )
    except ApiUnavailable:
        dispatcher.utter_message(text="医院预约系统暂时连不上，请稍后再试。")
        return []
    except ApiError as exc:
        dispatcher.utter_message(text=exc.message)
        return []
    if slots:
        dispatcher.utter_message(
            text=f"{say_day(day)}的{department}已经约满了，给您找了最近的时间。"
        )
    else:
        dispatcher.utter_message(
            text=f"{department}最近一个礼拜都约满了，您可以说“转人工”请工作人员帮忙。"
        )
    return slots


def confirmation(tracker: Tracker, slot: str) -> dict[str, Any]:
    """Yes or no to the question the form just asked (other intents leave it unanswered)."""
    if not answering(tracker, slot):
        return {}
    intent = tracker.get_intent_of_latest_message()
    if intent == "affirm":
        return {slot: True}
    if intent == "deny":
        return {slot: False}
    return {}


def describe(slot: dict[str, Any]) -> str:
    doctor = f"，{slot['practitioner']}医生" if slot.get("practitioner") else ""
    return f"{say_moment(parse_time(slot['start']))}{doctor}"


class ActionAskSlotChoice(Action):
    def name(self) -> str:
        return "action_ask_slot_choice"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        offered = _offered(tracker)
        items = "；".join(f"第{i}个，{describe(s)}" for i, s in enumerate(offered, start=1))
        dispatcher.utter_message(
            text=f"{tracker.get_slot('department')}有这几个时间：{items}。您要第几个？",
            json_message={"expect": "choice", "options": len(offered)},
        )
        return []


class ActionAskBookingConfirmed(Action):
    def name(self) -> str:
        return "action_ask_booking_confirmed"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        slot = tracker.get_slot("slot_choice") or {}
        person = tracker.get_slot("person")
        found = await whom(tracker)
        to = f"给{person}" if person and person not in ("我", "我自己", "自己") else "给您"
        if found.for_elder:
            to = f"给{found.name}"
        dispatcher.utter_message(
            text=f"{to}约{describe(slot)}的{tracker.get_slot('department')}，对吗？",
            json_message={"expect": "yes_no"},
        )
        return []


_FORM_SLOTS = (
    "department",
    "date",
    "time",
    "slot_choice",
    "offered_slots",
    "booking_confirmed",
    "person",
)


class ActionBookMedical(Action):
    def name(self) -> str:
        return "action_book_medical"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        slot = tracker.get_slot("slot_choice") or {}
        details = {"department": tracker.get_slot("department"), "slot_id": slot.get("slot_id")}
        if tracker.get_slot("person"):
            details["person"] = tracker.get_slot("person")
        found = await whom(tracker)
        try:
            order = await create_order(
                tracker, dispatcher, "medical_appointment", details, found=found
            )
        except ApiError as exc:
            if exc.code == "slot_unavailable":
                dispatcher.utter_message(text="不巧，这个号刚刚被别人约走了，我再给您找找。")
                day = parse_time(tracker.get_slot("date")) or now()
                offered = await find_slots(dispatcher, details["department"], day, None)
                return [
                    SlotSet("offered_slots", offered),
                    SlotSet("slot_choice", None),
                    SlotSet("booking_confirmed", None),
                    ActiveLoop("medical_form"),
                    FollowupAction("medical_form"),
                ]
            dispatcher.utter_message(text=exc.message)
            return [*(SlotSet(s, None) for s in _FORM_SLOTS), *forget(exc)]
        if order is not None:
            done = "约好了" if not found.for_elder else f"已经替{found.name}约好了"
            dispatcher.utter_message(
                text=f"{done}：{describe(slot)}，{details['department']}。{WHAT_TO_BRING}",
                json_message={"order_id": order["id"]},
            )
        return [SlotSet(s, None) for s in _FORM_SLOTS]
