"""Handing a conversation to a person: a record on the Redis handoff queue, a callback order,
and the bot paused for that conversation until staff hand it back (ConversationResumed)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import redis.asyncio as aioredis
from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import channel, create_order, identity
from actions.settings import settings
from workorders.client import ApiError
from workorders.crypto import mask_text


def queue() -> str:
    return f"{settings().redis_prefix}:handoff:queue"


def active_key(conversation: str) -> str:
    """Set while a conversation has an open handoff: one queue entry per handoff."""
    return f"{settings().redis_prefix}:handoff:active:{conversation}"


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


async def hand_over(
    tracker: Tracker, dispatcher: CollectingDispatcher, reason: str, *, pause: bool = True
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
    events: list[EventType] = [
        ActiveLoop(None),
        SlotSet("requested_slot", None),
    ]
    return [*events, ConversationPaused()] if pause else events


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        return await hand_over(tracker, dispatcher, "request_human")
