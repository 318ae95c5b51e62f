"""Handing a conversation to a person: a callback order and the takeover opened in the
work-order API (`POST /conversations/{id}/handoff`), which the gateway obeys: from then on the
resident's messages go to staff, not to the bot, until staff hand the conversation back.

Channels that reach Rasa directly (the hotline) still wait in `handoff_form`, which keeps quiet
after one acknowledgement and never takes an emergency (the form rejects it, so its rules run).
Outside office hours the resident is told when staff will answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import outbox
from actions.common import api, channel, create_order, identity, say_moment, turn_key
from workorders.client import ApiError, ApiUnavailable
from workorders.crypto import mask_text

REASONS = {
    "request_human": "居民要求人工服务",
    "not_understood": "助手多次没听懂",
    "complaint": "居民投诉",
}
SUMMARY_TURNS = 6


def summary(tracker: Tracker) -> str:
    """The last few turns, numbers masked: enough for staff to pick up without asking again."""
    lines = []
    for event in tracker.events:
        if event.get("event") == "user" and event.get("text"):
            lines.append(f"居民：{event['text']}")
        elif event.get("event") == "bot" and event.get("text"):
            lines.append(f"助手：{event['text']}")
    return mask_text("\n".join(lines[-SUMMARY_TURNS:])) or ""


async def _open_takeover(tracker: Tracker, body: dict[str, Any]) -> dict[str, Any] | None:
    """Open the takeover; the API down, the outbox opens it when the API is back."""
    key = turn_key(tracker, "handoff")
    path = f"/conversations/{tracker.sender_id}/handoff"
    try:
        return await api().hand_over(tracker.sender_id, body)
    except ApiUnavailable:
        await outbox.keep("POST", path, body, key, tracker.sender_id)
    except ApiError:  # refused (should not happen): a person still gets the callback order
        pass
    return None


async def hand_over(
    tracker: Tracker, dispatcher: CollectingDispatcher, reason: str
) -> list[EventType]:
    text = summary(tracker)
    resident_id = tracker.get_slot("resident_id")
    details: dict[str, Any] = {
        "reason": REASONS.get(reason, reason),
        "summary": text[:1000] or "（无对话内容）",
    }
    kind, value = identity(tracker)
    if not resident_id and kind.value == "phone":
        details["phone"] = value
    try:
        order = await create_order(
            tracker,
            dispatcher,
            "callback",
            details,
            priority="P1" if reason == "complaint" else "P2",
        )
    except ApiError:
        order = None  # a person still gets the hand-over below
    opened = await _open_takeover(
        tracker,
        {
            "channel": channel(tracker).value,
            "reason": reason,
            "summary": text or None,
            "order_id": order["id"] if order else None,
            "resident_id": resident_id,
        },
    )
    if opened is None or opened["office_open"]:
        dispatcher.utter_message(response="utter_handed_over", json_message={"handoff": reason})
    else:
        when = say_moment(datetime.fromisoformat(opened["answer_from"]))
        dispatcher.utter_message(
            response="utter_handed_over_after_hours",
            when=when,
            json_message={"handoff": reason},
        )
    return [
        ActiveLoop(None),
        SlotSet("requested_slot", None),
        SlotSet("handoff_reason", reason),
        SlotSet("handoff_acknowledged", None),
        FollowupAction("handoff_form"),
    ]


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        return await hand_over(tracker, dispatcher, "request_human")


class ActionAskHandoffNote(Action):
    """The waiting form's question is no question: the bot keeps quiet while staff come."""

    def name(self) -> str:
        return "action_ask_handoff_note"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        return []


class ValidateHandoffForm(FormValidationAction):
    """While waiting (channels that reach Rasa directly), the first message is acknowledged,
    once; what the resident says is in the channel's own record (the call record)."""

    def name(self) -> str:
        return "validate_handoff_form"

    async def validate_handoff_note(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("handoff_acknowledged"):
            return {"handoff_note": None}
        dispatcher.utter_message(response="utter_relayed_to_staff")
        return {"handoff_note": None, "handoff_acknowledged": True}
