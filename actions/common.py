"""What every action needs: the API client, who is talking, stable idempotency keys, and
dates read out the way people say them."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from rasa_sdk import Tracker

from actions.settings import settings
from workorders.client import WorkOrdersClient
from workorders.contract import Channel, IdentityKind

# Spoken times live with the words of orders (the gateway says them too); the actions import
# them from here as before.
from workorders.words import TZ, parse_time, say_clock, say_day, say_moment  # noqa: F401


@lru_cache
def api() -> WorkOrdersClient:
    return WorkOrdersClient(settings().api_url, settings().api_token)


def _latest_user_event(tracker: Tracker) -> dict[str, Any]:
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return event
    return {}


def metadata(tracker: Tracker) -> dict[str, Any]:
    return _latest_user_event(tracker).get("metadata") or {}


def identity(tracker: Tracker) -> tuple[IdentityKind, str]:
    """The channel identity of the sender; channels put it in the message metadata.

    Without one (the REST channel in tests, a web chat), the sender id is taken as a WeChat
    openid, the most common case.
    """
    given = metadata(tracker).get("identity") or {}
    try:
        return IdentityKind(given["kind"]), str(given["value"])
    except (KeyError, ValueError):
        return IdentityKind.wechat_openid, tracker.sender_id


def channel(tracker: Tracker) -> Channel:
    name = metadata(tracker).get("channel") or tracker.get_latest_input_channel() or ""
    try:
        return Channel(name)
    except ValueError:
        return Channel.api


def turn_key(tracker: Tracker, purpose: str) -> str:
    """Same conversation, same user turn, same purpose: same key, whatever Rasa re-runs."""
    event = _latest_user_event(tracker)
    turn = event.get("message_id") or event.get("timestamp") or len(tracker.events)
    return f"{tracker.sender_id}:{turn}:{purpose}"


# Intents that are a new request rather than an answer to the question a form just asked:
# rules handle them, and the form must not take their words as the answer.
NOT_AN_ANSWER = frozenset(
    {
        "ask_policy",
        "repeat",
        "emergency",
        "request_human",
        "stop",
        "complain",
        "out_of_scope",
        "greet",
        "goodbye",
        "thank",
        "check_status",
        "nlu_fallback",
    }
)


def answering(tracker: Tracker, slot: str) -> bool:
    """Is the latest message an answer to the form's question about `slot`?"""
    return (
        tracker.get_slot("requested_slot") == slot
        and tracker.get_intent_of_latest_message() not in NOT_AN_ANSWER
    )


def now() -> datetime:
    return datetime.now(TZ)


async def create_order(
    tracker: Tracker,
    dispatcher: Any,
    kind: str,
    details: dict[str, Any],
    *,
    priority: str | None = None,
    found: Any = None,
) -> dict[str, Any] | None:
    """Create an order for the resident of this conversation (`found`: actions/family.py
    whom(), the elder when a family member acts for one), from its channel; when the API is
    down, keep it in the outbox and say so honestly. The kind doubles as the key's purpose."""
    from actions import outbox
    from actions.family import whom, withdrawn_error
    from workorders.client import ApiError, ApiUnavailable

    found = found or await whom(tracker)
    if found.blocked:
        raise ApiError(403, "proxy_not_active", found.blocked, None)
    body: dict[str, Any] = {
        "kind": kind,
        "channel": channel(tracker).value,
        "resident_id": found.resident_id,
        "details": details,
    }
    if found.proxy_id is not None:
        body["proxy_id"] = found.proxy_id
    if priority:
        body["priority"] = priority
    key = turn_key(tracker, kind)
    try:
        return await api().create_order(body, key)
    except ApiError as exc:
        if exc.code == "proxy_not_active":
            raise withdrawn_error() from exc
        raise
    except ApiUnavailable:
        await outbox.keep("POST", "/work-orders", body, key, tracker.sender_id)
        dispatcher.utter_message(
            text="您的请求已经记下了。系统正在恢复，办好后会再告诉您结果。",
            json_message={"outbox": key},
        )
        return None


async def submit(
    tracker: Tracker,
    dispatcher: Any,
    kind: str,
    details: dict[str, Any],
    *,
    done: str,
    form_slots: tuple[str, ...],
    priority: str | None = None,
    found: Any = None,
) -> list[Any]:
    """A form's last step: create the order, say `done` (or why not), clear the form's slots."""
    from rasa_sdk.events import SlotSet

    from actions.family import forget
    from workorders.client import ApiError

    try:
        order = await create_order(
            tracker, dispatcher, kind, details, priority=priority, found=found
        )
    except ApiError as exc:
        dispatcher.utter_message(text=exc.message)
        return [*(SlotSet(slot, None) for slot in form_slots), *forget(exc)]
    else:
        if order is not None:
            dispatcher.utter_message(
                text=done, json_message={"order_id": order["id"], "priority": order["priority"]}
            )
    return [SlotSet(slot, None) for slot in form_slots]
