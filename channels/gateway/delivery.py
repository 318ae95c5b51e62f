"""Staff replies and the takeover's changes, from the work-order API to the resident.

The event tail long-polls the API's `/events` (its cursor in Redis, so a restarted gateway goes
on where it stopped) and, for conversations this gateway carries:

- keeps the takeover state (`waiting`, `claimed`, `handed_back`, `closed`) for open pages;
- wakes the conversation's open pages (Redis pub/sub: every gateway instance hears it) on a
  staff reply and on each change, so they fetch the replies at once;
- resumes the bot once a hand-over ends (channels/gateway/resume.py; the first message after
  the hand-back does the same, whichever comes first);
- records what the API could not take while it was down (channels/gateway/service.py);
- hands a staff reply on WeChat to its pusher (channels/gateway/wechat_push.py), which sends
  it as a customer-service message;
- hands every `order.*` event to the order listeners (WeChat's status messages,
  channels/gateway/wechat_notify.py); a listener's failure is logged, the tail goes on.

A staff reply counts as delivered only when the page has shown it (`delivered`), or when
WeChat took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from channels.gateway.dialogue import DialogueUnavailable
from channels.gateway.resume import Resumer
from channels.gateway.service import Gateway
from channels.gateway.store import Store
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient

log = logging.getLogger(__name__)

STATE_AFTER = {
    "conversation.waiting": "waiting",
    "conversation.claimed": "staff",
    "conversation.handed_back": "bot",
    "conversation.closed": "bot",
}
ENDED = ("conversation.handed_back", "conversation.closed")
WAKES = frozenset(STATE_AFTER) | {"conversation.reply"}
MAX_PAUSE_SECONDS = 30.0
OrderListener = Callable[[dict[str, Any]], Awaitable[None]]


class Pusher(Protocol):
    """A channel that delivers staff replies by itself (WeChat), rather than an open page."""

    async def deliver_pending(self, key: str) -> None: ...


class Delivery:
    def __init__(
        self,
        api: WorkOrdersClient,
        events_api: WorkOrdersClient,  # its own client: a long poll needs a longer time-out
        gateway: Gateway,
        store: Store,
        resumer: Resumer,
        wait_ms: int,
        pushers: dict[str, Pusher] | None = None,  # by channel
        order_listeners: list[OrderListener] | None = None,
    ) -> None:
        self.api, self.events_api, self.gateway = api, events_api, gateway
        self.store, self.resumer, self.wait_ms = store, resumer, wait_ms
        self.pushers = pushers or {}
        self.order_listeners = order_listeners or []

    # --- what an open page shows -------------------------------------------------------------

    async def pending(self, key: str) -> list[dict[str, Any]]:
        """Staff replies not delivered yet (none for a conversation the API does not know)."""
        try:
            replies = await self.api.outbound(key)
        except ApiError as exc:
            if exc.status == 404:
                return []
            raise
        authors = [r["author"] for r in replies if r.get("author")]
        if authors:
            await self.store.remember(key, staff=authors[-1])
        return replies

    async def delivered(self, key: str, message_id: int) -> None:
        await self.api.delivered(key, message_id)

    async def state(self, key: str) -> tuple[str, str | None]:
        known = await self.store.conversation(key)
        return known.get("state", "bot"), known.get("staff")

    # --- the event tail ------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever; when the API or Redis is away, try again after 1, 2, 4 … 30 s."""
        pause = 1.0
        while True:
            try:
                await self.flush_unrecorded()
                await self.poll()
                pause = 1.0
            except (ApiError, ApiUnavailable, RedisError, OSError) as exc:
                log.warning("event tail: %s; again in %.0f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)

    async def poll(self) -> None:
        """One long poll; the cursor moves past each event once it is handled."""
        cursor = await self.store.cursor() or "$"  # first start: from now on
        page = await self.events_api.events(cursor, wait_ms=self.wait_ms)
        for item in page["items"]:
            kind = str(item.get("type", ""))
            if kind.startswith("conversation."):
                await self.on_event(item)
            elif kind.startswith(("order.", "notification.", "proxy.")):
                await self.on_order_event(item)
            await self.store.set_cursor(item["id"])
        if page["last_id"] != cursor:
            await self.store.set_cursor(page["last_id"])

    async def on_event(self, item: dict[str, Any]) -> None:
        key = (item.get("data") or {}).get("conversation")
        known = await self.store.conversation(key) if key else {}
        if not key or not known:
            return  # not a conversation this gateway carries (the hotline's, say)
        kind = item["type"]
        if kind in STATE_AFTER:
            handoff_id = int(item["data"].get("handoff_id") or 0)
            await self.store.set_state(key, handoff_id, STATE_AFTER[kind])
        if kind == "conversation.claimed":  # the page names who has it
            with contextlib.suppress(ApiError, ApiUnavailable):
                await self.gateway.refresh(key)
        if kind in WAKES:
            await self.store.wake(key)
        pusher = self.pushers.get(known.get("channel", ""))
        if kind == "conversation.reply" and pusher is not None:
            await pusher.deliver_pending(key)
        if kind in ENDED:
            await self._resume(key)

    async def on_order_event(self, item: dict[str, Any]) -> None:
        for listener in self.order_listeners:
            try:
                await listener(item)
            except Exception:  # a notification never stops the tail
                log.exception("event %s: an order listener failed", item.get("id"))

    async def _resume(self, key: str) -> None:
        try:
            recorded = await self.gateway.refresh(key)
            handback = (recorded or {}).get("last_handback")
            if handback and recorded and recorded["state"] == "bot":
                await self.resumer.resume_once(key, handback)
        except (DialogueUnavailable, ApiUnavailable, ApiError) as exc:
            log.info("%s: bot not resumed yet (%s); the next message resumes it", key, exc)

    async def flush_unrecorded(self) -> None:
        """Record what waited for the API (idempotent by client_id, so a repeat is harmless)."""
        while (entry := await self.store.first_unrecorded()) is not None:
            try:
                await self.api.record_messages(entry["key"], entry["body"])
            except ApiError as exc:  # refused as it is: it never will be taken
                log.warning("%s: kept messages refused by the API (%s)", entry["key"], exc.code)
            await self.store.drop_first_unrecorded()
