"""Home care (居家养老): service, for whom, day and time window, the profile address confirmed."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import (
    TZ,
    answering,
    api,
    now,
    parse_time,
    say_clock,
    say_day,
    submit,
)
from actions.family import whom
from actions.medical import confirmation
from actions.residents import ResidentFormValidation, parse_address
from workorders.client import ApiError, ApiUnavailable
from workorders.crypto import format_address

SELF = ("我", "我自己", "自己", "本人")
DEFAULT_HOURS = 2  # a visit is booked as a two-hour window unless the resident said one


def window(tracker: Tracker) -> tuple[datetime, datetime]:
    day = parse_time(tracker.get_slot("date")) or now()
    start = parse_time(tracker.get_slot("time"))
    if start is None:
        start = datetime.combine(day.date(), time(9), TZ)
    else:
        start = datetime.combine(day.date(), start.timetz().replace(tzinfo=None), TZ)
    return start, start + timedelta(hours=DEFAULT_HOURS)


async def profile_address(tracker: Tracker) -> dict[str, str | None] | None:
    resident_id = (await whom(tracker)).resident_id  # the elder's, when acting for one
    if not resident_id:
        return None
    try:
        resident = await api().request("GET", f"/residents/{int(resident_id)}")
    except (ApiError, ApiUnavailable):
        return None
    address = resident.get("address")
    return {k: address.get(k) for k in ("building", "unit", "room")} if address else None


class ValidateHomeCareForm(ResidentFormValidation):
    def name(self) -> str:
        return "validate_home_care_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        slots = await super().required_slots(domain_slots, dispatcher, tracker, domain)
        # "No" to the profile address: ask where instead. address_confirmed stays in the
        # list (False counts as filled), or rasa-sdk would drop the "no" it just extracted.
        if tracker.get_slot("address_confirmed") is False:
            slots = [*slots, "care_address"]
        return slots

    def validate_date(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        day = parse_time(value)
        if day is None or day.date() < now().date():
            dispatcher.utter_message(text="这个日子已经过去了，请说一个今天以后的日子。")
            return {"date": None}
        return {"date": value}

    async def extract_person(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "person") or tracker.get_slot("person"):
            return {}
        text = tracker.latest_message.get("text", "")
        if tracker.get_intent_of_latest_message() == "affirm" or any(
            w in text for w in ("自己", "我的", "本人")
        ):
            return {"person": "本人"}
        return {}

    async def extract_address_confirmed(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return confirmation(tracker, "address_confirmed")

    async def extract_care_address(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "care_address"):
            return {}
        spoken = next(
            tracker.get_latest_entity_values("address"), None
        ) or tracker.latest_message.get("text")
        return {"care_address": spoken}

    def validate_care_address(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if value and parse_address(str(value)):
            return {"care_address": str(value)}
        dispatcher.utter_message(text="没听清地址，请按“几号楼几单元几号”说。")
        return {"care_address": None}


class ActionAskAddressConfirmed(Action):
    def name(self) -> str:
        return "action_ask_address_confirmed"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        address = await profile_address(tracker)
        if address is None:
            return [SlotSet("address_confirmed", False)]
        where = format_address(address["building"], address["unit"], address["room"])
        dispatcher.utter_message(text=f"是到{where}吗？", json_message={"expect": "yes_no"})
        return []


_FORM_SLOTS = ("care_service", "person", "date", "time", "address_confirmed", "care_address")


class ActionBookHomeCare(Action):
    def name(self) -> str:
        return "action_book_home_care"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        start, end = window(tracker)
        details: dict[str, Any] = {
            "service": tracker.get_slot("care_service"),
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
        }
        person = tracker.get_slot("person")
        if person and person not in SELF:
            details["person"] = person
        if tracker.get_slot("care_address"):
            details["address"] = parse_address(tracker.get_slot("care_address"))
        found = await whom(tracker)
        when = f"{details['service']}约在{say_day(start)}{say_clock(start)}到{say_clock(end)}"
        done = f"好了，{when}，服务人员上门前会先给您打电话。"
        if found.for_elder:
            done = f"已经替{found.name}约好了：{when}，服务人员上门前会先给老人打电话。"
        return await submit(
            tracker,
            dispatcher,
            "home_care",
            details,
            done=done,
            form_slots=_FORM_SLOTS,
            found=found,
        )
