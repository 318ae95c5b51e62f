"""Calls the hotline makes by itself, driven by the work-order event stream (`GET /events`).

- `callback.requested` (an SOS from a terminal): call the terminal back at the SIP address its
  heartbeat reported. It answers by itself (the resident may not reach the button); they hear
  that help is coming and can talk to the assistant, so staff find what was said in the call
  record. Unanswered, it is tried again; the order says how it went either way.
- `notification.requested` for a family contact (at the SOS, and at each escalation step):
  call their phone through the SIP trunk (`HOTLINE_TRUNK`), say who pressed the button and
  where, and ask them to press 1. The result goes on the order; a 1 is a person acknowledging,
  which stops the escalation chain (workorders/services/escalation.py). There is no SMS
  gateway: notifications the API marks "via sms" are phoned as well.
- Notifications for the duty supervisor are the staff console's (the escalation's alert
  event); nothing to dial here.
- `proxy.consent_requested` with `via` "hotline" (a family member asked on WeChat to act for
  an elder, 代办): call the elder's own phone through the trunk, say who asks, 1 consents, 2
  refuses (`POST /proxies/{id}/consent`, idempotent by the stream id). `via` "console": staff
  ask; nothing to dial.
- `order.status_changed` to "resolved", for a resident without a WeChat identity (WeChat users
  rate there): a short 回访 call, "您的报修：水管已经办好了", a key 1-5 is the rating
  (`POST /work-orders/{id}/rating`, which closes the order). Never for an order rated already.

These two are follow-ups, not emergencies: they are placed in calling hours only
(`calling_hours`, local time), and kept with the stream position (`follow-ups`) rather than
holding the position back for hours: no answer, a hang-up or no key records nothing and the
call is made again `follow_up_after` later, `follow_up_attempts` times in all; then it is left
for staff (the proxy stays "requested" in the console, the order resolved and unrated) and the
log says so. Before every attempt the API is asked again whether the call is still wanted (the
proxy still requested; the order still resolved and unrated).

Every hotline host runs this; the one holding the lease places the calls, and the stream
position and the follow-ups are in Redis (voice/outbound_state.py), so when that host dies
another takes over within the lease's term (`HOTLINE_LEASE_SECONDS`) and goes on from there.

Delivery is at least once: the stream position moves past an event only when it has been
handled, so a restart or a takeover repeats a call cut off in the middle rather than losing
it; the API records each notification result once (idempotent by event id). The first hotline
ever begins with what happens from then on; events older than `max_age` are not acted on: a
hotline that was down for an hour must not ring a family about an emergency staff settled long
ago (follow-ups: `follow_up_max_age`). A follow-up is written before the stream position moves
past its event, and the next holder takes the follow-ups up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

import redis

from voice.outbound_state import SharedState
from voice.sip import Call, CallState, SipEndpoint
from voice.tts import TtsError
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.contract import IdentityKind
from workorders.crypto import format_address, mask_text
from workorders.words import TZ, subject

if TYPE_CHECKING:
    from voice.hotline import Hotline

log = logging.getLogger(__name__)

KEEP_HANDLED = 256
POLL_MS = 3000  # long-poll of GET /events (the API client's time-out is 5 s)
ACK_KEY = "1"
REPEAT_KEY = "*"
FAMILY_SOS = (
    "您好，这里是邻里社区服务中心。您的家人{name}刚刚按下了一键求助，地址是{address}。"
    "社区工作人员正在处理。收到请按1。重听请按星号键。"
)
GRANT_KEY, REFUSE_KEY = "1", "2"
CONSENT = (
    "您好，这里是邻里社区服务中心。您的{who}想在微信上替您办理社区服务，比如预约看病、报修。"
    "同意请按1，不同意请按2，重听请按星号键。"
)
CONSENT_GRANTED = "好的，已经记下您同意了。"
CONSENT_REFUSED = "好的，不会让他代办。"
SCORE_KEYS = "12345"
RATING = (
    "您好，这里是邻里社区服务中心。您的{what}已经办好了。请为这次服务打个分："
    "非常满意请按5，满意按4，一般按3，不满意按2，很不满意按1。重听请按星号键。"
)
RATING_THANKS = "谢谢您的评价。"
CONSENT_EVENT, RESOLVED_EVENT = "proxy.consent_requested", "order.status_changed"
STANDBY_SECONDS = 1.0  # how often a host without the lease tries to take it


@dataclass(frozen=True)
class Question:
    """A follow-up call: whom, what is said, the keys that answer it (→ the outcome), and
    what records an answer (→ the words said before hanging up)."""

    target: str
    text: str
    outcomes: dict[str, str]
    answered: Callable[[str], Awaitable[str]]


def follow_up_key(item: dict[str, Any]) -> str | None:
    """The follow-up an event asks for (one per proxy, one per order), or None."""
    data, kind = item["data"], item["type"]
    if kind == CONSENT_EVENT and data.get("via") == "hotline" and data.get("proxy_id"):
        return f"consent:{int(data['proxy_id'])}"
    if kind == RESOLVED_EVENT and data.get("to_status") == "resolved" and item.get("order_id"):
        return f"rating:{int(item['order_id'])}"
    return None


def who_asks(proxy: dict[str, Any]) -> str:
    """女儿王丽; the relation alone when the name came masked (王*) or not at all."""
    relation, name = proxy.get("relation") or "家人", proxy.get("name") or ""
    return relation if not name or "*" in name else f"{relation}{name}"


def phone_of(resident: dict[str, Any]) -> str | None:
    """The resident's own number: the profile's, else a linked caller number."""
    found = resident.get("phone") or next(
        (i["value"] for i in resident.get("identities", []) if i["kind"] == IdentityKind.phone),
        None,
    )
    return found if found and "*" not in found else None


def calling_time(moment: datetime, hours: tuple[time, time] | None) -> datetime:
    """`moment`, or the start of the next calling `hours` (local time) when outside them."""
    if hours is None:
        return moment
    start, end = hours
    local = moment.astimezone(TZ)
    if start <= local.time() < end:
        return moment
    day = local.date() + timedelta(days=0 if local.time() < start else 1)
    return datetime.combine(day, start, TZ)


def spoken_address(address: dict[str, Any] | None) -> str:
    """3号楼2单元502室 (voice/spoken.py reads the room digit by digit)."""
    if not address:
        return "家里"
    return f"{format_address(address['building'], address.get('unit'), address['room'])}室"


class Outbound:
    """Reads the event stream and places the calls it asks for, several at once, while this
    host holds the lease (voice/outbound_state.py); stands by while another host does."""

    def __init__(
        self,
        hotline: Hotline,
        endpoint: SipEndpoint,
        api: WorkOrdersClient,
        *,
        trunk: str | None,
        state: SharedState,
        max_age: timedelta = timedelta(minutes=10),
        ring_seconds: float = 40.0,
        callback_attempts: int = 3,
        retry_after: float = 20.0,
        follow_up_attempts: int = 3,
        follow_up_after: float = 3600.0,
        follow_up_max_age: timedelta = timedelta(days=1),
        calling_hours: tuple[time, time] | None = (time(9, 0), time(20, 0)),
    ) -> None:
        self.hotline = hotline
        self.endpoint = endpoint
        self.api = api
        self.trunk = trunk
        self.state = state
        self.renew_every = state.lease_seconds / 3
        self.max_age = max_age
        self.ring_seconds = ring_seconds
        self.callback_attempts = callback_attempts
        self.retry_after = retry_after
        self.follow_up_attempts = follow_up_attempts
        self.follow_up_after = follow_up_after
        self.follow_up_max_age = follow_up_max_age
        self.calling_hours = calling_hours  # local (Asia/Shanghai), every day; None: any time
        # Follow-ups not done yet, by follow_up_key: {"item", "tries", "due"}; in Redis too.
        self._later: dict[str, dict[str, Any]] = {}
        # (event type, what came of it), the newest KEEP_HANDLED: for tests and a debugger.
        self.handled: list[tuple[str, str]] = []
        self._pending: list[tuple[str, asyncio.Future[None]]] = []  # stream order
        self._tasks: set[asyncio.Task[None]] = set()
        self._staged = asyncio.Event()  # something for the keeper to write
        self._read_upto = "$"  # the last page's end: every event up to it is dispatched

    @property
    def holding(self) -> bool:
        """This host places the calls (as of the last renewal)."""
        return self.state.lease.held

    # --- the lease ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Place the calls while this host holds the lease; take over when its holder dies."""
        try:
            while not stop.is_set():
                if await self.state.take():
                    await self._hold(stop)
                else:
                    await _pause(stop, STANDBY_SECONDS)
        finally:
            await self.state.release()

    async def _hold(self, stop: asyncio.Event) -> None:
        """Go on from where the last holder was, until `stop` or the lease is lost. Calls in
        progress then end (cut off, their events are handled again by the next holder)."""
        try:
            after, self._later = await self.state.load()
        except redis.RedisError as exc:
            log.warning("outbound: where the calls stand is not readable (%s)", exc)
            await _pause(stop, STANDBY_SECONDS)
            return
        lost, ending = asyncio.Event(), asyncio.Event()
        keeper = asyncio.ensure_future(self._keep(lost, ending))
        for key in list(self._later):
            self._start_follow_up(key)
        follower = asyncio.ensure_future(self._follow(after))
        waits = [asyncio.ensure_future(event.wait()) for event in (stop, lost)]
        try:
            await asyncio.wait([follower, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [follower, *waits, *self._tasks]:
                task.cancel()
            await asyncio.gather(follower, *self._tasks, return_exceptions=True)
            if not follower.cancelled() and follower.exception() is not None:
                log.error("outbound: reading the stream failed", exc_info=follower.exception())
            self._pending.clear()
            ending.set()
            self._staged.set()
            await keeper  # the last write, while the lease is still ours

    async def _keep(self, lost: asyncio.Event, ending: asyncio.Event) -> None:
        """Write what was staged as soon as it is, and renew the lease; `lost` when another
        host has it."""
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.renew_every
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._staged.wait(), self.renew_every)
                self._staged.clear()
                held = await self.state.flush()
                if ending.is_set() or not held:
                    return
                if loop.time() >= renew_at:
                    if not await self.state.take():
                        return
                    renew_at = loop.time() + self.renew_every
        finally:
            lost.set()  # however the keeper ends, the calls are not this host's any more

    # --- the stream --------------------------------------------------------------------------

    async def _follow(self, after: str) -> None:
        """Read the stream and start what it asks for, until cancelled (`_hold`)."""
        self._read_upto = after
        while True:
            try:
                page = await self.api.events(after, wait_ms=POLL_MS)
            except (ApiUnavailable, ApiError) as exc:
                log.warning("outbound: events not readable (%s); retrying", exc)
                await asyncio.sleep(2.0)
                continue
            for item in page["items"]:
                self._dispatch(item)
            if page["last_id"] != after and not self._pending:
                self._save_cursor(page["last_id"])
            after = self._read_upto = page["last_id"]

    def _dispatch(self, item: dict[str, Any]) -> None:
        data, kind = item["data"], item["type"]
        later = follow_up_key(item)
        if later is not None:
            self._queue_follow_up(later, item)
            self._done_upto(item["id"])
            return
        ours = (kind == "callback.requested" and data.get("terminal_id")) or (
            kind == "notification.requested" and data.get("audience") == "family"
        )
        if not ours:
            self._done_upto(item["id"])
            return
        if datetime.now(timezone.utc) - datetime.fromisoformat(data["at"]) > self.max_age:
            log.info("outbound: %s of order %s is too old to act on", kind, item["order_id"])
            self._handled(kind, "too_old")
            self._done_upto(item["id"])
            return
        work = self.call_back(item) if kind == "callback.requested" else self.notify_family(item)
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        self._pending.append((item["id"], task))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """Move the cursor past the events handled so far, in stream order: with no call left,
        past everything read meanwhile. A call cut off by a shutdown (cancelled) holds it back:
        that event is handled again after the restart."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbound call failed", exc_info=task.exception())
        done_id = None
        while self._pending and self._pending[0][1].done():
            if self._pending[0][1].cancelled():
                break
            done_id = self._pending.pop(0)[0]
        if done_id is not None and not self._pending:
            done_id = self._read_upto
        if done_id is not None:
            self._save_cursor(done_id)

    def _done_upto(self, stream_id: str) -> None:
        if not self._pending:
            self._save_cursor(stream_id)

    def _save_cursor(self, stream_id: str) -> None:
        self.state.stage_cursor(stream_id)
        self._staged.set()

    def _save_follow_up(self, key: str) -> None:
        self.state.stage_follow_up(key, self._later.get(key))
        self._staged.set()

    def _handled(self, kind: str, outcome: str) -> None:
        self.handled.append((kind, outcome))
        del self.handled[:-KEEP_HANDLED]  # a hotline runs for months

    # --- follow-ups: consent and 回访 calls, in calling hours, tried again later -----------------

    def _queue_follow_up(self, key: str, item: dict[str, Any]) -> None:
        if key in self._later:
            return  # asked for again (a replayed event, a second resolve): one call
        if datetime.now(timezone.utc) - datetime.fromisoformat(item["data"]["at"]) > (
            self.follow_up_max_age
        ):
            log.info("outbound: %s (%s) is too old to act on", item["type"], key)
            self._handled(item["type"], "too_old")
            return
        now = datetime.now(timezone.utc).isoformat()
        self._later[key] = {"item": item, "tries": 0, "due": now}
        self._save_follow_up(key)  # staged before the stream position: written with it
        self._start_follow_up(key)

    def _start_follow_up(self, key: str) -> None:
        task = asyncio.ensure_future(self._follow_up(key))
        self._tasks.add(task)
        task.add_done_callback(self._follow_up_ended)

    def _follow_up_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbound follow-up failed", exc_info=task.exception())

    async def _follow_up(self, key: str) -> None:
        """Call (in calling hours) until it is settled or tried `follow_up_attempts` times."""
        entry = self._later[key]
        item = entry["item"]
        outcome = await self._follow_up_calls(key, entry)
        self._later.pop(key, None)
        self._save_follow_up(key)
        self._handled(item["type"], outcome)

    async def _follow_up_calls(self, key: str, entry: dict[str, Any]) -> str:
        item = entry["item"]
        ask = self.consent_question if item["type"] == CONSENT_EVENT else self.rating_question
        while True:
            try:
                question = await ask(item)
                start = calling_time(datetime.fromisoformat(entry["due"]), self.calling_hours)
                wait = (start - datetime.now(timezone.utc)).total_seconds()
                if wait > 0 and not isinstance(question, str):
                    await asyncio.sleep(wait)
                    question = await ask(item)  # hours later: still wanted?
                if isinstance(question, str):
                    return question  # nothing to ask (settled, WeChat, no phone …)
                key_pressed = await self._ask(question)
                if key_pressed is not None:
                    return question.outcomes[key_pressed]
            except ApiUnavailable as exc:
                log.warning("outbound: %s: the API did not answer (%s)", key, exc)
            except ApiError as exc:
                log.error("outbound: %s refused by the API: %s", key, exc)
                return "failed"
            entry["tries"] += 1
            if entry["tries"] >= self.follow_up_attempts:
                log.warning(
                    "outbound: %s: no answer in %d calls; left for staff in the console",
                    key,
                    entry["tries"],
                )
                return "left_for_staff"
            due = datetime.now(timezone.utc) + timedelta(seconds=self.follow_up_after)
            entry["due"] = due.isoformat()
            self._save_follow_up(key)

    async def consent_question(self, item: dict[str, Any]) -> Question | str:
        """What to ask the elder whether the family member may act for them, or why not."""
        proxy_id = int(item["data"]["proxy_id"])
        proxy = await self._retrying(self.api.proxy, proxy_id)
        if proxy["status"] != "requested":
            return "settled"  # decided meanwhile (in the console, an earlier call)
        resident = await self._retrying(self.api.resident, int(proxy["resident_id"]))
        target = self._target(resident)
        if target is None:
            log.warning("outbound: consent for proxy %s: no phone or no trunk", proxy_id)
            return "no_phone" if self.trunk else "no_trunk"

        async def decide(key: str) -> str:
            granted = key == GRANT_KEY
            try:
                await self._retrying(
                    self.api.decide_proxy, proxy_id, granted, "hotline", item["id"]
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                log.info("outbound: proxy %s was decided meanwhile (%s)", proxy_id, exc.code)
            return CONSENT_GRANTED if granted else CONSENT_REFUSED

        return Question(
            target,
            CONSENT.format(who=who_asks(proxy)),
            {GRANT_KEY: "granted", REFUSE_KEY: "refused"},
            decide,
        )

    async def rating_question(self, item: dict[str, Any]) -> Question | str:
        """The 回访 call's question (a key 1-5 rates the order), or why there is none."""
        order_id = int(item["order_id"])
        order = await self._retrying(self.api.order, order_id)
        if order.get("rating"):
            return "already_rated"
        if order["status"] != "resolved":
            return "moved_on"  # closed, reopened or cancelled since
        if order.get("resident_id") is None:
            return "no_resident"
        resident = await self._retrying(self.api.resident, int(order["resident_id"]))
        if any(i["kind"] == IdentityKind.wechat_openid for i in resident["identities"]):
            return "wechat"  # the gateway asks them to rate on WeChat
        target = self._target(resident)
        if target is None:
            log.warning("outbound: 回访 of order %s: no phone or no trunk", order_id)
            return "no_phone" if self.trunk else "no_trunk"

        async def rate(key: str) -> str:
            try:
                await self._retrying(self.api.rate, order_id, int(key))
            except ApiError as exc:
                if exc.status != 409:  # already_rated (elsewhere, meanwhile) is done too
                    raise
                log.info("outbound: order %s not rated by phone: %s", order_id, exc.code)
            return RATING_THANKS

        scores = {key: f"rated_{key}" for key in SCORE_KEYS}
        return Question(target, RATING.format(what=subject(order)), scores, rate)

    def _target(self, resident: dict[str, Any]) -> str | None:
        phone = phone_of(resident)
        return f"sip:{phone}@{self.trunk}" if phone and self.trunk else None

    async def _ask(self, question: Question) -> str | None:
        """Call, say the question (three times at most) until one of its keys is pressed;
        `question.answered(key)` records it and gives the words said before hanging up. The
        key, or None: no answer, no key, a hang-up, or the words could not be synthesised."""
        synth = self.hotline.synthesizer
        try:  # before dialling: the person who picks up hears the question at once
            said = await synth.render(question.text)
        except TtsError:
            log.error("outbound: the question could not be synthesised")
            return None
        async with self._calling(question.target) as call:
            if call is None:
                return None
            key = await self._keyed(call, said, "".join(question.outcomes))
            if key is None:
                return None
            words = await question.answered(key)
            if call.state is not CallState.ENDED:
                with contextlib.suppress(TtsError):
                    await call.play(await synth.render(words, persist=True))
            return key

    # --- the callback to a terminal ----------------------------------------------------------

    async def call_back(self, item: dict[str, Any]) -> None:
        order_id = int(item["order_id"])
        terminal = await self._retrying(self.api.terminal, int(item["data"]["terminal_id"]))
        contact = (terminal.get("status") or {}).get("sip_contact")
        if not contact:
            await self._note(order_id, "无法回拨一键呼叫终端：终端没有报告通话地址，请电话联系居民")
            self._handled("callback.requested", "no_contact")
            return
        call: Call | None = None
        for attempt in range(self.callback_attempts):
            call = await self.endpoint.dial(contact, timeout=self.ring_seconds)
            if call is not None:
                break
            if attempt + 1 < self.callback_attempts:
                await asyncio.sleep(self.retry_after)
        if call is None:
            await self._note(
                order_id, f"回拨一键呼叫终端{self.callback_attempts}次都没有接通，请上门查看"
            )
            self._handled("callback.requested", "no_answer")
            return
        began = datetime.now(timezone.utc)
        result = await self.hotline.converse(call, "callback_sos", keypad=False)
        seconds = int(((result.ended_at or began) - began).total_seconds())
        record = self.hotline.stored.get(call.call_id) or {}
        where = f"，通话记录#{record['id']}" if record.get("id") else ""
        if any(line.speaker == "caller" for line in result.transcript):
            await self._note(order_id, f"已回拨一键呼叫终端，与居民通话{seconds}秒{where}")
            self._handled("callback.requested", "talked")
        else:  # the terminal answers by itself: a silent resident may be unable to speak
            await self._note(
                order_id,
                f"已回拨一键呼叫终端（{seconds}秒），但居民没有说话：请立即上门查看{where}",
            )
            self._handled("callback.requested", "silent")

    # --- a family contact --------------------------------------------------------------------

    async def notify_family(self, item: dict[str, Any]) -> None:
        order_id, data = int(item["order_id"]), item["data"]
        resident = await self._retrying(self.api.resident, int(data["resident_id"]))
        contact = next((c for c in resident["contacts"] if c["id"] == data["contact_id"]), None)
        report: dict[str, Any] = {"event_id": int(data["event_id"]), "contact_id": None}
        if contact is None:
            report.update(outcome="failed", detail="联系人已从档案中删除")
        elif not self.trunk:
            report.update(contact_id=contact["id"], outcome="failed", detail="热线没有配置外线")
        else:
            report["contact_id"] = contact["id"]
            text = FAMILY_SOS.format(
                name=resident["name"], address=spoken_address(resident.get("address"))
            )
            report["outcome"] = await self._tell(f"sip:{contact['phone']}@{self.trunk}", text)
        await self._retrying(self.api.report_notification, order_id, report)
        self._handled("notification.requested", report["outcome"])

    async def _tell(self, target: str, text: str) -> str:
        """Say `text` (three times at most) until the person presses 1; how it went."""
        async with self._calling(target) as call:
            if call is None:
                return "no_answer"
            synth = self.hotline.synthesizer
            try:
                if await self._keyed(call, await synth.render(text), ACK_KEY) is None:
                    return "answered"
                with contextlib.suppress(TtsError):
                    await call.play(await synth.prompt("family_thanks"))
                return "acknowledged"
            except TtsError:
                log.error("outbound: the notification could not be synthesised")
                return "failed"

    @contextlib.asynccontextmanager
    async def _calling(self, target: str) -> AsyncIterator[Call | None]:
        """The call to `target` once answered (None: it was not), hung up at the end."""
        call = await self.endpoint.dial(target, timeout=self.ring_seconds)
        try:
            yield call
        finally:
            if call is not None and call.state is not CallState.ENDED:
                await call.hangup()

    async def _keyed(self, call: Call, message: bytes, keys: str) -> str | None:
        """Play `message` (three times at most) until one of `keys` is pressed: that key, or
        None when the other end hung up or pressed none of them. * or another key, or
        nothing, says it again."""
        for _ in range(3):
            playing = asyncio.ensure_future(call.play(message))
            key = await self._key_while(call, playing, keys, after=8.0)
            call.stop_playing()
            if key is not None and key in keys:
                return key
            if call.state is CallState.ENDED:
                return None
        return None

    @staticmethod
    async def _key_while(
        call: Call, playing: asyncio.Future[bool], keys: str, after: float
    ) -> str | None:
        """A key pressed while the message plays or within `after` seconds of its end."""
        while not playing.done():
            key = await call.receive_dtmf(timeout=0.2)
            if key is not None and key in keys + REPEAT_KEY:
                return key
            if call.state is CallState.ENDED:
                return None
        return await call.receive_dtmf(timeout=after)

    # --- the API -----------------------------------------------------------------------------

    async def _note(self, order_id: int, text: str) -> None:
        await self._retrying(self.api.note, order_id, mask_text(text) or text)

    @staticmethod
    async def _retrying(function: Any, *args: Any) -> Any:
        """The API may restart under us: keep trying for a minute (these calls matter)."""
        for attempt in range(8):
            try:
                return await function(*args)
            except ApiUnavailable:
                await asyncio.sleep(min(0.5 * 2**attempt, 10.0))
        return await function(*args)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """`seconds`, or less when `stop` comes first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
