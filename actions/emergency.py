"""Emergencies, in every state of a conversation: the advice for the danger at hand first, the
P0 order and the staff alarm at once, then who and where, one short question at a time, each
answer on the open order the moment it is given (staff see it live).

- `action_emergency` runs whenever the NLU hears an emergency: rules send it there from any
  form, and from the wait for a person (actions/handoff.py). While staff have a written
  conversation the gateway forwards only emergencies, with `takeover` in the metadata: the
  order says so (`during_takeover`), for the staff member who owns the conversation.
- `emergency_form` asks what staff need to reach the person: for a sender we do not know,
  where they are and a number (the caller's number on the telephone is already known); a
  resident we know is asked only whether they are at home, and a home terminal nothing.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import api, channel, create_order, identity, metadata, turn_key
from actions.dangers import catalogue
from nlu.numerals import find_addresses, find_phones
from workorders.client import ApiError, ApiUnavailable
from workorders.contract import Channel, IdentityKind, Status

WHEREABOUTS = ("emergency_at_home", "emergency_location", "emergency_phone")
DONE = frozenset({Status.resolved, Status.closed, Status.cancelled})
# Unanswered questions before we stop asking: a person in danger is never held in a loop.
MAX_UNANSWERED = 2
# Words that show an answer is about a place, even when the NLU heard something else in it.
PLACE_WORDS = ("楼", "单元", "室", "门口", "路", "街", "小区", "家", "旁边", "附近", "里", "院")
NOT_A_PLACE = frozenset(
    {"emergency", "request_human", "complain", "greet", "thank", "goodbye", "repeat", "stop"}
)
# "不在家" / "我不在" said before where they are, or "我在" alone: no place in those words.
NOT_AT_HOME = re.compile(r"^[我俺]?(现在)?(不|没)(在家|在|是)(里|呢|啊)?[，,。！!\s]*|[我俺]?在$")


def _said(tracker: Tracker) -> str:
    return (tracker.latest_message.get("text") or "").strip()


def _set_this_turn(tracker: Tracker, slot: str) -> bool:
    """Was `slot` set since the latest user message (Rasa running an action again)?"""
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return False
        if event.get("event") == "slot" and event.get("name") == slot:
            return True
    return False


def advise(dispatcher: CollectingDispatcher, tracker: Tracker) -> str | None:
    """Say the advice for the danger in the words (or the one said before); its id."""
    known = catalogue()
    danger = known.recognise(_said(tracker))
    if danger is None and tracker.get_slot("danger"):
        danger = next((d for d in known.dangers if d.id == tracker.get_slot("danger")), None)
    dispatcher.utter_message(
        text=known.advice(danger),
        json_message={
            "urgent": True,
            "danger": danger.id if danger else None,
            "call": known.number(danger),
        },
    )
    return danger.id if danger else None


async def raise_alarm(
    tracker: Tracker, dispatcher: CollectingDispatcher, danger: str | None, **extra: Any
) -> dict[str, Any] | None:
    """The P0 order (or the resident's open one, joined); idempotent per turn. A sender we
    do not know has no resident to join on, so this conversation's open emergency is kept."""
    said = (_said(tracker) or "紧急求助")[:1000]
    previous = tracker.get_slot("emergency_order_id")
    if previous:
        with contextlib.suppress(ApiError, ApiUnavailable):
            order = await api().order(int(previous))
            if order["status"] not in DONE:
                if not _set_this_turn(tracker, "emergency_order_id"):  # else a re-run
                    await api().note(order["id"], f"再次求助：{said}"[:1000])
                return order
    details: dict[str, Any] = {"description": said, **extra}
    if danger:
        details["danger"] = danger
    kind, value = identity(tracker)
    if kind is IdentityKind.phone:
        details["caller_phone"] = value
    try:
        return await create_order(tracker, dispatcher, "emergency", details)
    except ApiError as exc:
        dispatcher.utter_message(text=exc.message)
        return None


class ActionEmergency(Action):
    def name(self) -> str:
        return "action_emergency"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        danger = advise(dispatcher, tracker)
        takeover = {"during_takeover": True} if metadata(tracker).get("takeover") else {}
        order = await raise_alarm(tracker, dispatcher, danger, **takeover)
        if order is not None:  # else the outbox has said honestly that it is only noted
            dispatcher.utter_message(
                response="utter_emergency_raised",
                json_message={"urgent": True, "order_id": order["id"]},
            )
        # Kept in the outbox, a known resident's order gets the address on file when it is made.
        address_known = bool(order["details"].get("address")) if order else True
        events: list[EventType] = [
            ActiveLoop(None),
            SlotSet("requested_slot", None),
            SlotSet("emergency_unanswered", None),
        ]
        if danger:
            events.append(SlotSet("danger", danger))
        at_home = tracker.get_slot("emergency_at_home")
        if order is not None and order["id"] != tracker.get_slot("emergency_order_id"):
            at_home = None  # a new emergency: where they were last time is not where they are
            events += [SlotSet(slot, None) for slot in WHEREABOUTS]
        events.append(SlotSet("emergency_address_known", address_known))
        if order is not None:
            events += [
                SlotSet("emergency_outbox_key", None),
                SlotSet("emergency_order_id", order["id"]),
            ]
        else:  # kept in the outbox: what the person says next follows it there
            events.append(SlotSet("emergency_outbox_key", turn_key(tracker, "emergency")))
        # A form that would ask nothing is not started: it would end in the same turn.
        asked = questions(tracker, address_known, at_home)
        if order is not None and order["id"] == tracker.get_slot("emergency_order_id"):
            asked = [slot for slot in asked if tracker.get_slot(slot) is None]
        if asked:
            return [*events, FollowupAction("emergency_form")]
        return events + located(dispatcher, tracker, gave_up=False)


def questions(tracker: Tracker, address_known: bool, at_home: bool | None) -> list[str]:
    """What staff still need to reach the person, in the order it is asked."""
    known = bool(tracker.get_slot("resident_id"))
    if known and channel(tracker) is Channel.terminal:
        return []  # a home terminal is at home, and its resident is on file
    slots: list[str] = []
    if known and address_known:
        slots.append("emergency_at_home")
        if at_home is False:
            slots.append("emergency_location")
    else:
        slots.append("emergency_location")
    if not known and identity(tracker)[0] is not IdentityKind.phone:
        slots.append("emergency_phone")
    return slots


def located(
    dispatcher: CollectingDispatcher, tracker: Tracker, *, gave_up: bool
) -> list[EventType]:
    """Asking is over: say what happens next; back to waiting for a person if we were."""
    dispatcher.utter_message(
        response="utter_emergency_gave_up" if gave_up else "utter_emergency_located",
        json_message={"urgent": True},
    )
    events: list[EventType] = [SlotSet("emergency_unanswered", None)]
    if tracker.get_slot("handoff_reason"):
        events.append(FollowupAction("handoff_form"))
    return events


def _location(tracker: Tracker) -> dict[str, Any] | None:
    """Where the answer says the person is, as the whereabouts to add: their own words, and
    the address when it has a building and a room (and the unit, where there is one)."""
    text = _said(tracker)
    addresses = [a for a in find_addresses(text) if a.building and a.room]
    if addresses:
        a = addresses[0]
        address = {"building": a.building, "unit": a.unit, "room": a.room}
        return {"location": text[:200], "address": address}
    if tracker.get_intent_of_latest_message() in NOT_A_PLACE and not any(
        w in text for w in PLACE_WORDS
    ):
        return None
    # "不在家" alone says where they are not: no answer yet.
    return {"location": text[:200]} if len(NOT_AT_HOME.sub("", text)) >= 2 else None


async def _keep_for_later(tracker: Tracker, body: dict[str, Any]) -> None:
    """The API is down while we ask: the answer waits in the outbox behind the order."""
    from actions import outbox

    key = turn_key(tracker, f"whereabouts-{'-'.join(sorted(body))}")
    order_id = tracker.get_slot("emergency_order_id")
    path = "/work-orders/{order_id}/whereabouts"
    if order_id:
        await outbox.keep("PATCH", path.format(order_id=order_id), body, key, tracker.sender_id)
    elif tracker.get_slot("emergency_outbox_key"):
        order_of = str(tracker.get_slot("emergency_outbox_key"))
        await outbox.keep("PATCH", path, body, key, tracker.sender_id, order_of=order_of)


class ValidateEmergencyForm(FormValidationAction):
    """Every message while the form runs is taken as an attempt to answer: a person in danger
    may say anything, and the form must neither lose it nor fall back to "没听明白"."""

    def name(self) -> str:
        return "validate_emergency_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        if (tracker.get_slot("emergency_unanswered") or 0) >= MAX_UNANSWERED:
            return []
        return questions(
            tracker,
            bool(tracker.get_slot("emergency_address_known")),
            tracker.get_slot("emergency_at_home"),
        )

    async def _add(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, body: dict[str, Any]
    ) -> bool:
        """Put an answer on the open emergency now; False if it could not be kept there."""
        order_id = tracker.get_slot("emergency_order_id")
        if not order_id:  # the order itself waits in the outbox: this follows it there
            await _keep_for_later(tracker, body)
            return False
        try:
            await api().whereabouts(int(order_id), body)
        except ApiUnavailable:
            await _keep_for_later(tracker, body)
            return False
        except ApiError as exc:
            dispatcher.utter_message(text=exc.message)
            return False
        return True

    def _unanswered(self, tracker: Tracker, slot: str) -> dict[str, Any]:
        """Not an answer: the form asks again, at most MAX_UNANSWERED times in all."""
        count = (tracker.get_slot("emergency_unanswered") or 0) + 1
        return {slot: None, "emergency_unanswered": count}

    async def _more_about_it(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> None:
        """A new cry for help while we ask: it goes onto the order, with advice if new."""
        order_id = tracker.get_slot("emergency_order_id")
        if tracker.get_intent_of_latest_message() != "emergency" or not order_id:
            return
        danger = catalogue().recognise(_said(tracker))
        if danger and danger.id != tracker.get_slot("danger"):
            advise(dispatcher, tracker)
        with contextlib.suppress(ApiError, ApiUnavailable):  # staff are alerted already
            await api().note(int(order_id), f"居民又说：{_said(tracker)}"[:1000])

    async def extract_emergency_at_home(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("requested_slot") != "emergency_at_home":
            return {}
        text, intent = _said(tracker), tracker.get_intent_of_latest_message()
        if "不在" in text or intent == "deny":
            at_home: bool | None = False
        elif "在家" in text or intent == "affirm" or text in ("在", "在呢", "对"):
            at_home = True
        else:
            await self._more_about_it(dispatcher, tracker)
            return self._unanswered(tracker, "emergency_at_home")
        body: dict[str, Any] = {"at_home": at_home}
        where = None if at_home else _location(tracker)
        if where:  # 不在，我在菜市场: where then
            body.update(where)
        await self._add(dispatcher, tracker, body)
        result: dict[str, Any] = {"emergency_at_home": at_home}
        if "location" in body:
            result["emergency_location"] = body["location"]
        return result

    async def extract_emergency_location(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("requested_slot") != "emergency_location":
            return {}
        where = _location(tracker)
        if where is None:
            await self._more_about_it(dispatcher, tracker)
            return self._unanswered(tracker, "emergency_location")
        await self._add(dispatcher, tracker, where)
        result: dict[str, Any] = {"emergency_location": where["location"]}
        phones = find_phones(_said(tracker))
        if phones and tracker.get_slot("emergency_phone") is None:  # said both at once
            await self._add(dispatcher, tracker, {"phone": phones[0].value})
            result["emergency_phone"] = phones[0].value
        return result

    async def extract_emergency_phone(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("requested_slot") != "emergency_phone":
            return {}
        phones = find_phones(_said(tracker))
        if not phones:
            if any(ch.isdigit() for ch in _said(tracker)):
                dispatcher.utter_message(
                    text="这个号码好像不对。手机号是十一位，座机请带上区号，请再说一遍。"
                )
            else:
                await self._more_about_it(dispatcher, tracker)
            return self._unanswered(tracker, "emergency_phone")
        await self._add(dispatcher, tracker, {"phone": phones[0].value})
        return {"emergency_phone": phones[0].value}


class ActionEmergencyLocated(Action):
    """The form is done (answered, or asked often enough): what happens next."""

    def name(self) -> str:
        return "action_emergency_located"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        gave_up = (tracker.get_slot("emergency_unanswered") or 0) >= MAX_UNANSWERED
        return located(dispatcher, tracker, gave_up=gave_up)
