"""What the gateway sends to a WeChat resident by itself: the dialogue's late answers and staff
replies, as customer-service messages (客服消息), within WeChat's limits, never lost silently.

WeChat lets an account send customer-service messages to a user only within 48 hours of the
user's last message (or menu click, or subscribing), and at most 5 per message of theirs
(45015 and 45047 otherwise). `Reach` keeps both per resident in Redis: the window's end and
what is left, shown to staff in the console through the API.

A staff reply that WeChat refuses (window closed, quota used up, the resident unfollowed) is
held: the resident gets a subscription message saying staff answered (when the account has a
template for it and the resident allowed one), and the reply goes as soon as they write again;
without that, the API is told it cannot be delivered, and staff call the resident back on the
hand-over's order (the console shows why). A reply counts as delivered only when WeChat took it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from channels.gateway.store import Store
from channels.wechat.api import (
    QUOTA_EXHAUSTED,
    WINDOW_CLOSED,
    WeChatApi,
    WeChatError,
    WeChatUnavailable,
)
from channels.wechat.protocol import Inbound
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient

log = logging.getLogger(__name__)

WINDOW_SECONDS = 48 * 3600
SENDS_PER_MESSAGE = 5
# What opens the window: a message or these events (not unsubscribe, not a location report).
OPENING_EVENTS = frozenset({"subscribe", "click", "view", "scan"})


class Reach:
    """The customer-service window and quota of each resident, as WeChat counts them."""

    def __init__(self, store: Store) -> None:
        self.redis = store.redis
        self.prefix = store._key("wechat", "reach")

    async def touched(self, inbound: Inbound) -> None:
        name = f"{self.prefix}:{inbound.openid}"
        if inbound.event == "unsubscribe":
            await self.redis.delete(name)
        elif inbound.kind != "event" or inbound.event in OPENING_EVENTS:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, mapping={"since": int(time.time()), "used": 0})
                pipe.expire(name, WINDOW_SECONDS)
                await pipe.execute()

    async def used(self, openid: str, messages: int) -> None:
        await self.redis.hincrby(f"{self.prefix}:{openid}", "used", messages)

    async def left(self, openid: str) -> dict[str, Any]:
        """{"open_until": ISO time or None, "sends_left": n}: what staff may still send."""
        kept = await self.redis.hgetall(f"{self.prefix}:{openid}")
        if not kept:
            return {"open_until": None, "sends_left": 0}
        until = int(kept["since"]) + WINDOW_SECONDS
        return {
            "open_until": datetime.fromtimestamp(until, timezone.utc).isoformat(),
            "sends_left": max(SENDS_PER_MESSAGE - int(kept.get("used", 0)), 0),
        }


class Pusher:
    def __init__(
        self,
        api: WeChatApi,
        workorders: WorkOrdersClient,
        store: Store,
        reply_template: str | None,
    ) -> None:
        self.api, self.workorders, self.store = api, workorders, store
        self.reply_template = reply_template
        self.reach = Reach(store)

    async def send_answer(self, key: str, openid: str, text: str) -> None:
        """The dialogue's answer that came too late for the passive reply."""
        try:
            await self._send(key, openid, text)
        except (WeChatError, WeChatUnavailable) as exc:
            # The window opened with this very message, so this is WeChat down or refusing;
            # the conversation in the console holds the answer.
            log.error("%s: the answer could not be sent (%s)", key, exc)

    async def deliver_held(self, key: str, wrote_at: float) -> None:
        """The resident wrote (at `wrote_at`): the window is open again, held replies go now."""
        known = await self.store.conversation(key)
        if known.get("held"):
            await self.store.remember(key, held=None)
            await self._deliver(key, wrote_at)

    async def deliver_pending(self, key: str) -> None:
        """Staff replies not delivered yet (a new one, from the event tail)."""
        await self._deliver(key, None)

    def _reminded(self, message_id: int) -> str:
        return self.store._key("wechat", "reminded", str(message_id))

    async def _deliver(self, key: str, wrote_at: float | None) -> None:
        """Oldest first; the first refusal holds the rest. A reply the resident was reminded
        of waits for a message they wrote after the reminder: sending it before would only be
        refused again, and a second refusal (the reminder's grant used up) would give it up
        for a call back. (A message's turn ends up to WeChat's retries later, ~15 s: by then
        its own five sends may be the ones used up.)"""
        openid = (await self.store.conversation(key)).get("openid")
        if not openid:
            return
        try:
            pending = await self.workorders.outbound(key)
        except (ApiError, ApiUnavailable) as exc:
            log.warning("%s: staff replies not fetched (%s)", key, exc)
            await self.store.remember(key, held=1)
            return
        for reply in pending:
            reminded = await self.store.redis.get(self._reminded(reply["id"]))
            if reminded is not None:
                if wrote_at is None or wrote_at < float(reminded):
                    await self.store.remember(key, held=1)  # still waiting for that message
                    return
                await self.store.redis.delete(self._reminded(reply["id"]))
            who = reply.get("author") or "工作人员"
            # One sender per reply: the event tail and a resident's new message may both
            # find it pending before it is marked delivered.
            sending = self.store._key("wechat", "sending", str(reply["id"]))
            if not await self.store.redis.set(sending, "1", nx=True, ex=WINDOW_SECONDS):
                continue
            try:
                await self._send(key, openid, f"【{who}】{reply['text']}")
            except WeChatUnavailable as exc:
                await self.store.redis.delete(sending)
                log.warning("%s: WeChat did not answer (%s); held", key, exc)
                await self.store.remember(key, held=1)
                return
            except WeChatError as exc:  # refused: 45015, 45047, 43004, 40003 … never silently
                await self.store.redis.delete(sending)
                await self._fall_back(key, openid, reply["id"], exc.errcode)
                return
            try:
                await self.workorders.delivered(key, reply["id"])
            except (ApiError, ApiUnavailable) as exc:
                log.warning("%s: reply %s sent, not marked delivered (%s)", key, reply["id"], exc)

    async def _send(self, key: str, openid: str, text: str) -> None:
        try:
            sent = await self.api.send_text(openid, text)
        except (WeChatError, WeChatUnavailable) as exc:
            sent = exc.sent
            raise
        finally:
            if sent:
                await self.reach.used(openid, sent)
                await self.report(key, openid)

    async def report(self, key: str, openid: str) -> None:
        """Staff see in the console what they may still send (best effort: it is a hint)."""
        left = await self.reach.left(openid)
        try:
            await self.workorders.set_reach(key, left["open_until"], left["sends_left"])
        except (ApiError, ApiUnavailable) as exc:
            log.info("%s: reach not reported (%s)", key, exc)

    async def _fall_back(self, key: str, openid: str, message_id: int, code: int) -> None:
        """Refused by WeChat: remind by subscription message (the reply waits for the
        resident's next message) or, failing that, staff call back."""
        await self.store.remember(key, held=1)
        reminded = False
        if self.reply_template and code in (WINDOW_CLOSED, QUOTA_EXHAUSTED):
            try:
                await self.api.send_subscribe(
                    openid,
                    self.reply_template,
                    {
                        "thing1": {"value": "社区工作人员回复了您"},
                        "thing2": {"value": "请在公众号里回复任意一句话查看"},
                    },
                )
                reminded = True
                await self.store.redis.set(
                    self._reminded(message_id), str(time.time()), ex=WINDOW_SECONDS
                )
            except (WeChatError, WeChatUnavailable) as exc:
                log.info("%s: no subscription message either (%s)", key, exc)
        fallback = "subscribe" if reminded else "callback"
        # Held (subscribe) and later given up (callback) are two reports; each is made once.
        noted = self.store._key("wechat", "undeliverable", str(message_id), fallback)
        if not await self.store.redis.set(noted, "1", nx=True, ex=WINDOW_SECONDS):
            return  # told the API already
        try:
            await self.workorders.undeliverable(key, message_id, code, fallback)
        except (ApiError, ApiUnavailable) as exc:
            await self.store.redis.delete(noted)
            log.error("%s: reply %s refused (%s); API not told: %s", key, message_id, code, exc)
