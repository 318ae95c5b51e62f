"""Handing a conversation to a person: a record on the Redis handoff queue, a callback order,
and the conversation waiting for staff (`handoff_form`) until they hand it back.

While it waits the bot relays what the resident says to staff and otherwise keeps quiet; it
is never paused, because a paused conversation predicts nothing, and an emergency said while
waiting must still raise the alarm (the form rejects `emergency`, so its rules run)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import redis.asyncio as aioredis
from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import channel, create_order, identity
from actions.settings import settings
from workorders.client import ApiError
from workorders.crypto import mask_text


def queue() -> str:
    return f"{settings().redis_prefix}:handoff:queue"


def messages_key(conversation: str) -> str:
    """What the resident said while waiting, oldest first, for the staff who take it on."""
    return f"{settings().redis_prefix}:handoff:messages:{conversation}"


def active_key(conversation: str) -> str:
    """Set while a conversation has an open handoff: one queue entry per handoff."""
    return f"{settings().redis_prefix}:handoff:active:{conversation}"


SUMMARY_TURNS = 6
MESSAGES_KEPT_SECONDS = 7 * 24 * 3600  # a week: long enough for the slowest callback


def summary(tracker: Tracker) -> str:
    """The last few turns, numbers masked: enough for staff to pick up without asking again."""
    lines = []
    for event in tracker.events:
        if event.get("event") == "user" and event.get("text"):
            lines.append(f"居民：{event['text']}")
        elif event.get("event") == "bot" and event.get("text"):
            lines.append(f"助手：{event['text']}")
    return mask_text("\n".join(lines[-SUMMARY_TURNS:])) or ""


async def hand_over(
    tracker: Tracker, dispatcher: CollectingDispatcher, reason: str
) -> list[EventType]:
    text = summary(tracker)
    resident_id = tracker.get_slot("resident_id")
    order_id = None
    details: dict[str, Any] = {
        "reason": {
            "request_human": "居民要求人工服务",
            "not_understood": "助手多次没听懂",
            "complaint": "居民投诉",
        }.get(reason, reason),
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
        order_id = order["id"] if order else None
    except ApiError:
        order_id = None  # a person still gets the queue entry below
    client = aioredis.Redis.from_url(settings().redis_url)
    try:
        if await client.set(active_key(tracker.sender_id), "1", nx=True):
            await client.rpush(
                queue(),
                json.dumps(
                    {
                        "conversation_id": tracker.sender_id,
                        "channel": channel(tracker).value,
                        "reason": reason,
                        "summary": text,
                        "resident_id": resident_id,
                        "order_id": order_id,
                        "at": datetime.now(timezone.utc).isoformat(),
                    },
                    ensure_ascii=False,
                ),
            )
    finally:
        await client.close()
    dispatcher.utter_message(response="utter_handed_over", json_message={"handoff": reason})
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
    """Each message while waiting goes to staff; the first one is acknowledged, once."""

    def name(self) -> str:
        return "validate_handoff_form"

    async def validate_handoff_note(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        client = aioredis.Redis.from_url(settings().redis_url)
        key = messages_key(tracker.sender_id)
        said = {"text": mask_text(str(value)), "at": datetime.now(timezone.utc).isoformat()}
        try:
            await client.rpush(key, json.dumps(said, ensure_ascii=False))
            await client.expire(key, MESSAGES_KEPT_SECONDS)
        finally:
            await client.close()
        if tracker.get_slot("handoff_acknowledged"):
            return {"handoff_note": None}
        dispatcher.utter_message(response="utter_relayed_to_staff")
        return {"handoff_note": None, "handoff_acknowledged": True}
