"""Residents hear back on WeChat when their order moves: accepted, resolved or cancelled.

The gateway's event tail (channels/gateway/delivery.py) hands each `order.*` event here. For an
`order.status_changed` to one of those statuses, of a resident who wrote to the account through
this gateway, the notifier reads the order and sends one message in the dialogue's own words
(workorders/words.py `plain`, as "我的工单" reads it out), e.g.
"报修：水管，工作人员已经接单，时间是5月6号星期三上午9点":

- a template message (`WECHAT_STATUS_TEMPLATE_ID`; no 48 h window): `first` the words,
  `keyword1` what the order is about, `keyword2` the status in words, `remark` where to ask;
- without a template, a customer-service text, only while the resident's 48 h window is open
  (45015 and other refusals are logged, not retried).

Whom: the openid is learnt when a WeChat conversation is linked to a resident (kept under
`<prefix>:gateway:wechat:resident:<resident id>`, no expiry). Residents who never wrote to the
account through this gateway (the hotline's, the web chat's) hear nothing here.

Once: a Redis `SET NX` on `<prefix>:gateway:wechat:notified:<order id>:<status>` (kept 30 days)
before sending, so a replayed event sends nothing twice; it is let go when WeChat or the API
did not answer, so a replay tries again. A failure here never stops the event tail.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.gateway.store import Store
from channels.gateway.wechat_push import Reach
from channels.wechat.api import WeChatApi, WeChatError, WeChatUnavailable
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.words import plain, progress, subject

log = logging.getLogger(__name__)

TOLD = frozenset({"accepted", "resolved", "cancelled"})
REMARK = "有问题请在公众号里留言，或打社区热线。"
NOTIFIED_TTL = 30 * 24 * 3600


class Notifier:
    def __init__(
        self,
        api: WeChatApi,
        workorders: WorkOrdersClient,
        store: Store,
        template_id: str | None,
    ) -> None:
        self.api, self.workorders, self.store = api, workorders, store
        self.template_id = template_id or None
        self.redis = store.redis
        self.reach = Reach(store)

    def resident_key(self, resident_id: int | str) -> str:
        return self.store._key("wechat", "resident", str(resident_id))

    async def learned(self, resident_id: int | str, openid: str) -> None:
        """A WeChat conversation is linked to this resident: status messages go to `openid`."""
        await self.redis.set(self.resident_key(resident_id), openid)

    async def on_order_event(self, item: dict[str, Any]) -> None:
        """One event of the tail; never raises (a notification must not stop the tail)."""
        try:
            await self._on_order_event(item)
        except Exception:
            log.exception("wechat: status message for event %s failed", item.get("id"))

    async def _on_order_event(self, item: dict[str, Any]) -> None:
        data = item.get("data") or {}
        status = data.get("to_status")
        if item.get("type") != "order.status_changed" or status not in TOLD:
            return
        order_id, resident_id = item.get("order_id"), data.get("resident_id")
        if not order_id or not resident_id:
            return
        openid = await self.redis.get(self.resident_key(resident_id))
        if not openid:
            return  # never wrote on WeChat through this gateway
        guard = self.store._key("wechat", "notified", str(order_id), str(status))
        if not await self.redis.set(guard, "1", nx=True, ex=NOTIFIED_TTL):
            return  # told already (a replayed event)
        try:
            order = await self.workorders.order(int(order_id))
            # The words of this event's status, even if the order has moved on since.
            await self._send(openid, {**order, "status": status})
        except (ApiError, ApiUnavailable, WeChatUnavailable) as exc:
            await self.redis.delete(guard)  # a replay of the event tries again
            log.warning("wechat: order %s %s not told (%s)", order_id, status, exc)
        except WeChatError as exc:  # refused (window closed, unfollowed …): not retried
            log.info("wechat: order %s %s not told: WeChat refused (%s)", order_id, status, exc)

    async def _send(self, openid: str, order: dict[str, Any]) -> None:
        words = plain(order)
        if self.template_id:
            data = {
                "first": words,
                "keyword1": subject(order),
                "keyword2": progress(order["status"]),
                "remark": REMARK,
            }
            await self.api.send_template(openid, self.template_id, data)
            return
        if (await self.reach.left(openid))["open_until"] is None:
            log.info("wechat: order %s %s not told: window closed", order["id"], order["status"])
            return
        # One short text: one part, counted against the window's quota once WeChat took it.
        await self.reach.used(openid, await self.api.send_text(openid, words))
