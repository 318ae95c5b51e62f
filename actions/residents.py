"""Knowing who we talk to: look the sender up at session start; register a stranger once."""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import answering, api, identity, turn_key
from actions.settings import community
from nlu.numerals import find_addresses
from workorders.client import ApiError, ApiUnavailable
from workorders.contract import IdentityKind

REGISTRATION = ["resident_name", "resident_address", "resident_phone"]
_NAME_PREFIX = re.compile(r"^(我叫|我是|叫我|我姓|俺叫|俺是)")


class ActionSessionStart(Action):
    def name(self) -> str:
        return "action_session_start"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        events: list[EventType] = [SessionStarted()]
        kind, value = identity(tracker)
        meta = tracker.get_slot("session_started_metadata") or {}
        if meta.get("identity"):
            try:  # the session's first message (a hotline call: the caller's number)
                kind = IdentityKind(meta["identity"]["kind"])
                value = str(meta["identity"]["value"])
            except (KeyError, TypeError, ValueError):
                pass
        try:
            resident = await api().find_resident(kind, value)
        except (ApiError, ApiUnavailable):
            resident = None  # asked again when a form needs it
        if resident:
            events += [
                SlotSet("resident_id", resident["id"]),
                SlotSet("resident_name", resident["name"]),
            ]
        return [*events, ActionExecuted("action_listen")]


def parse_address(text: str) -> dict[str, str | None] | None:
    """The first whole address said: 3号楼2单元502, or 5号楼1201 where the building has no
    units; None when the building or the room is missing."""
    for found in find_addresses(text.replace(" ", "")):
        if found.building and found.room:
            return {"building": found.building, "unit": found.unit, "room": found.room}
    return None


def _entity(tracker: Tracker, name: str) -> str | None:
    values = list(tracker.get_latest_entity_values(name))
    return str(values[0]) if values else None


class ResidentFormValidation(FormValidationAction):
    """Base of every service form: a resident we do not know yet is asked for name, address
    and phone first (once; the resident is then created and linked to this channel)."""

    @abstractmethod
    def name(self) -> str: ...

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        from actions.family import whom

        found = await whom(tracker)
        if found.blocked:
            return []  # the submitting action says why (actions/common.py create_order)
        if found.choices:
            return ["acting_for", *domain_slots]
        if found.for_elder:  # a family member acting for an elder: the elder's own data
            return [s for s in domain_slots if s != "person"]
        if found.resident_id:
            return domain_slots
        return REGISTRATION + domain_slots

    async def extract_acting_for(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """Which of several elders the sender acts for (asked once per conversation)."""
        from actions.family import acting_slot, choose, whom

        if not answering(tracker, "acting_for"):
            return {}
        chosen = choose(tracker.latest_message.get("text", ""), (await whom(tracker)).choices)
        if chosen is None:
            dispatcher.utter_message(text="没听清是哪一位，请说“第一个”“第二个”这样。")
            return {}
        return {"acting_for": acting_slot(chosen)}

    async def extract_resident_name(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "resident_name"):
            return {}
        text = _entity(tracker, "name") or _NAME_PREFIX.sub(
            "", tracker.latest_message.get("text", "").strip()
        )
        return {"resident_name": text.strip("，。 ")[:20] or None}

    async def extract_resident_address(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "resident_address"):
            return {}
        return {
            "resident_address": _entity(tracker, "address") or tracker.latest_message.get("text")
        }

    def validate_resident_address(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if value and parse_address(str(value)):
            return {"resident_address": str(value)}
        dispatcher.utter_message(
            text="没听清楼号，请按“几号楼几单元几号”说，比如三号楼二单元五零二。"
        )
        return {"resident_address": None}

    async def extract_resident_phone(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "resident_phone"):
            return {}
        found = _entity(tracker, "phone") or re.sub(
            r"\D", "", tracker.latest_message.get("text", "")
        )
        return {"resident_phone": found or None}

    async def validate_resident_phone(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        phone = re.sub(r"\D", "", str(value or ""))
        if not re.fullmatch(r"1[3-9]\d{9}|0\d{9,11}", phone):
            dispatcher.utter_message(text="这个号码好像不对，请再说一遍，手机号是十一位。")
            return {"resident_phone": None}
        address = parse_address(tracker.get_slot("resident_address") or "")
        kind, ident = identity(tracker)
        body = {
            "name": tracker.get_slot("resident_name") or "居民",
            "phone": phone,
            "community": community(),
            "address": address,
            "identities": [{"kind": kind.value, "value": ident}],
        }
        try:
            resident = await api().create_resident(body, turn_key(tracker, "register"))
        except ApiUnavailable:
            dispatcher.utter_message(text="系统暂时连不上，您的信息没有存上，请稍后再试。")
            return {"resident_phone": None}
        except ApiError as exc:
            if exc.code in ("already_registered", "identity_taken"):
                found = await api().find_resident(kind, ident)
                if found:
                    return {"resident_phone": phone, "resident_id": found["id"]}
            dispatcher.utter_message(text=exc.message)
            return {"resident_phone": None}
        dispatcher.utter_message(text=f"好的，{resident['name']}，记住您了，下次就不用再说了。")
        return {"resident_phone": phone, "resident_id": resident["id"]}
