"""Residents hear back on WeChat when their order moves: accepted, scheduled, resolved or
cancelled.

The gateway's event tail (channels/gateway/delivery.py) hands each `order.*` event here. For an
`order.status_changed` to one of those statuses, or an `order.scheduled` (staff agreed a time),
of a resident who wrote to the account through this gateway, the notifier reads the order and
sends one message in the dialogue's own words (workorders/words.py `plain`, as "我的工单" reads
it out), e.g. "报修：水管，工作人员已经接单，时间是5月6号星期三上午9点":

- a template message (`WECHAT_STATUS_TEMPLATE_ID`; no 48 h window): `first` the words,
  `keyword1` what the order is about, `keyword2` the status in words, `remark` where to ask;
- without a template, a customer-service text, only while the resident's 48 h window is open
  and its five sends are not used up (45015, 45047 and other refusals are logged, not retried).

Whom: the openid is learnt when a WeChat conversation is linked to a resident (kept under
`<prefix>:gateway:wechat:resident:<resident id>`, no expiry). Residents who never wrote to the
account through this gateway (the hotline's, the web chat's) hear nothing here.

Family members acting for an elder (代办, channels/gateway is how they asked on WeChat):
- `proxy.decided`: they are told the elder's answer;
- an order they asked for (the event's `proxy_id`): they hear of it as the elder would
  ("您为王*英办的报修：水管，工作人员已经接单…");
- `notification.requested` with `via: "wechat"` (an SOS of the elder): an alert (who, where,
  when) by template message; replying "1" or "收到" within an hour is their acknowledgement,
  reported to the API like a family contact's key 1 on the phone (it stops the escalation
  chain); a send that fails is reported as failed, so staff see it on the order.

Once: a Redis `SET NX` on `<prefix>:gateway:wechat:notified:<order id>:<status>` (a new time:
`scheduled@<time>`; kept 30 days) before sending, so a replayed event sends nothing twice; it
is let go when WeChat or the API did not answer, so a replay tries again. A failure here never
stops the event tail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.gateway.store import Store
from channels.gateway.wechat_push import Reach
from channels.wechat.api import WeChatApi, WeChatError, WeChatUnavailable
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.words import parse_time, plain, progress, say_moment, subject

log = logging.getLogger(__name__)

TOLD = frozenset({"accepted", "resolved", "cancelled"})
REMARK = "有问题请在公众号里留言，或打社区热线。"
# Resolved: the resident's answer ("5分，师傅很好") goes to the dialogue, which rates the order.
RATE = "请直接回复1到5给这次服务打分（5分最满意），也可以说说意见。"
NOTIFIED_TTL = 30 * 24 * 3600
ACK_SECONDS = 3600  # an SOS alert can be acknowledged this long
ACKS = frozenset({"1", "收到", "收到了", "好的收到", "知道了", "1收到"})
ACKNOWLEDGED = "好的，已经告诉社区工作人员您收到了。社区正在处理，有情况会再联系您。"
CONSENTED = (
    "老人已经同意由您代办社区服务了。现在您可以在这里替老人预约看病、居家养老服务、报修，"
    "查进度和评价。"
)
REFUSED = "老人没有同意由您代办社区服务。如有需要，请直接联系社区或打社区热线。"


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
        if item.get("type") == "proxy.decided":
            await self._tell_decision(item)
            return
        if item.get("type") == "notification.requested":
            if data.get("via") == "wechat" and data.get("proxy_id"):
                await self._alert(item)
            return
        status = data.get("to_status")
        if item.get("type") == "order.scheduled":
            status = f"scheduled@{data.get('scheduled_at')}"  # told again for a new time
        elif item.get("type") != "order.status_changed" or status not in TOLD:
            return
        order_id, resident_id = item.get("order_id"), data.get("resident_id")
        if not order_id or not resident_id:
            return
        # (guard suffix, openid, words before the order's): the resident if they wrote on
        # WeChat through this gateway, and the family member who asked for it (代办).
        recipients: list[tuple[str, str, str]] = []
        openid = await self.redis.get(self.resident_key(resident_id))
        if openid:
            recipients.append(("", openid, ""))
        if data.get("proxy_id"):
            try:
                found = await self._family(int(data["proxy_id"]))
            except (ApiError, ApiUnavailable) as exc:
                log.warning("wechat: family of order %s not found (%s)", order_id, exc)
                found = None
            if found is not None:
                family, proxy = found
                recipients.append((":family", family, f"您为{proxy['resident_name']}办的"))
        for suffix, openid, before in recipients:
            await self._tell_order(int(order_id), str(status), openid, before, suffix)

    async def _tell_order(
        self, order_id: int, status: str, openid: str, before: str, suffix: str
    ) -> None:
        guard = self.store._key("wechat", "notified", str(order_id), status + suffix)
        if not await self.redis.set(guard, "1", nx=True, ex=NOTIFIED_TTL):
            return  # told already (a replayed event)
        try:
            order = await self.workorders.order(order_id)
            if not status.startswith("scheduled@"):
                # The words of this event's status, even if the order has moved on since.
                order = {**order, "status": status}
            await self._send(openid, order, before)
        except (ApiError, ApiUnavailable, WeChatUnavailable) as exc:
            await self.redis.delete(guard)  # a replay of the event tries again
            log.warning("wechat: order %s %s not told (%s)", order_id, status, exc)
        except WeChatError as exc:  # refused (window closed, unfollowed …): not retried
            log.info("wechat: order %s %s not told: WeChat refused (%s)", order_id, status, exc)

    async def _send(self, openid: str, order: dict[str, Any], before: str = "") -> None:
        words = before + plain(order)
        remark = RATE if order["status"] == "resolved" else REMARK
        if self.template_id:
            data = {
                "first": words,
                "keyword1": subject(order),
                "keyword2": progress(order["status"]),
                "remark": remark,
            }
            await self.api.send_template(openid, self.template_id, data)
            return
        reach = await self.reach.left(openid)
        if reach["open_until"] is None or reach["sends_left"] < 1:
            # WeChat would refuse it (45015, 45047); a template message is the way past both.
            log.info("wechat: order %s %s not told: %s", order["id"], order["status"], reach)
            return
        # One short text: one part, counted against the window's quota once WeChat took it.
        text = f"{words}。{RATE}" if order["status"] == "resolved" else words
        await self.reach.used(openid, await self.api.send_text(openid, text))

    # --- family members acting for an elder -----------------------------------------------------

    async def _family(self, proxy_id: int) -> tuple[str, dict[str, Any]] | None:
        """(openid, proxy) of a family member on WeChat."""
        proxy = await self.workorders.proxy(proxy_id)
        identity = proxy.get("identity") or {}
        if identity.get("kind") != "wechat_openid" or not identity.get("value"):
            return None
        return str(identity["value"]), proxy

    async def _tell_decision(self, item: dict[str, Any]) -> None:
        data = item.get("data") or {}
        guard = self.store._key("wechat", "notified", "proxy", str(data.get("proxy_id")))
        if not data.get("proxy_id") or not await self.redis.set(guard, "1", nx=True):
            return
        try:
            found = await self._family(int(data["proxy_id"]))
            if found is None:
                return
            openid, proxy = found
            granted = bool(data.get("granted"))
            words = CONSENTED if granted else REFUSED
            await self._tell(
                openid,
                words,
                f"代办授权：{proxy['resident_name']}",
                "老人已同意" if granted else "老人没有同意",
                REMARK,
            )
        except (ApiError, ApiUnavailable, WeChatUnavailable) as exc:
            await self.redis.delete(guard)
            log.warning("wechat: proxy %s decision not told (%s)", data.get("proxy_id"), exc)
        except WeChatError as exc:
            log.info("wechat: proxy %s decision not told: refused (%s)", data["proxy_id"], exc)

    async def _alert(self, item: dict[str, Any]) -> None:
        """An elder pressed the SOS button: tell the family member who acts for them."""
        data = item.get("data") or {}
        event_id, order_id = int(data["event_id"]), int(item["order_id"])
        guard = self.store._key("wechat", "notified", "alert", str(event_id))
        if not await self.redis.set(guard, "1", nx=True, ex=NOTIFIED_TTL):
            return
        try:
            found = await self._family(int(data["proxy_id"]))
            if found is None:
                return
            openid, proxy = found
            order = await self.workorders.order(order_id)
            words = alert_words(proxy, order)
            try:
                await self._tell(
                    openid,
                    words,
                    f"一键求助：{proxy['resident_name']}",
                    "社区工作人员正在处理",
                    "收到请回复1。有危险请直接拨打120。",
                )
            except WeChatError as exc:
                await self._report(order_id, event_id, int(data["proxy_id"]), "failed", exc)
                return
            pending = json.dumps({"order_id": order_id, "event_id": event_id,
                                  "proxy_id": int(data["proxy_id"])})  # fmt: skip
            await self.redis.set(self._ack_key(openid), pending, ex=ACK_SECONDS)
        except (ApiError, ApiUnavailable, WeChatUnavailable) as exc:
            await self.redis.delete(guard)  # a replay tries again
            log.warning("wechat: SOS alert of order %s not sent (%s)", order_id, exc)

    async def _tell(self, openid: str, words: str, about: str, status: str, remark: str) -> None:
        """A template message when the account has one (no 48 h window), else a text."""
        if self.template_id:
            data = {"first": words, "keyword1": about, "keyword2": status, "remark": remark}
            await self.api.send_template(openid, self.template_id, data)
        else:
            await self.api.send_text(openid, f"{words}{remark}")

    def _ack_key(self, openid: str) -> str:
        return self.store._key("wechat", "sos-ack", openid)

    async def acknowledge(self, openid: str, text: str) -> str | None:
        """The family member's "1" to an SOS alert: reported, and the words to answer with;
        None when this is not an acknowledgement (the message goes to the dialogue)."""
        if text.strip().rstrip("。！!") not in ACKS:
            return None
        pending = await self.redis.get(self._ack_key(openid))
        if pending is None:
            return None
        alert = json.loads(pending)
        await self._report(alert["order_id"], alert["event_id"], alert["proxy_id"], "acknowledged")
        await self.redis.delete(self._ack_key(openid))
        return ACKNOWLEDGED

    async def _report(
        self,
        order_id: int,
        event_id: int,
        proxy_id: int,
        outcome: str,
        why: Exception | None = None,
    ) -> None:
        body: dict[str, Any] = {"event_id": event_id, "outcome": outcome, "proxy_id": proxy_id}
        if why is not None:
            body["detail"] = str(why)[:200]
        await self.workorders.request("POST", f"/work-orders/{order_id}/notifications", json=body)


def alert_words(proxy: dict[str, Any], order: dict[str, Any]) -> str:
    """Who, where, when: "您的家人王*英（3号楼*单元***）12月5号星期六上午9点按下了一键求助…".
    The address as the gateway reads it, masked: WeChat messages pass Tencent's servers."""
    where = (order.get("details") or {}).get("address") or {}
    place = "".join(
        f"{where[k]}{unit}" for k, unit in (("building", "号楼"), ("unit", "单元"), ("room", ""))
        if where.get(k)
    )  # fmt: skip
    at = parse_time(order.get("created_at"))
    when = say_moment(at) if at else "刚刚"
    place_words = f"（{place}）" if place else ""
    who = proxy["resident_name"]
    return f"您的家人{who}{place_words}{when}按下了一键求助，社区工作人员正在处理。"
