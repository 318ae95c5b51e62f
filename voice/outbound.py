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

Delivery is at least once: the stream position (`HOTLINE_EVENTS_CURSOR`) moves past an event
only when it has been handled, so a restart repeats a call rather than losing it; the API
records each notification result once (idempotent by event id). A hotline started for the
first time begins with what happens from then on; events older than `max_age` are not acted
on: a hotline that was down for an hour must not ring a family about an emergency staff
settled long ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.sip import Call, CallState, SipEndpoint
from voice.tts import TtsError
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.crypto import mask_text

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


def spoken_address(address: dict[str, Any] | None) -> str:
    """3号楼2单元502室 (voice/spoken.py reads the room digit by digit)."""
    if not address:
        return "家里"
    return f"{address['building']}号楼{address['unit']}单元{address['room']}室"


class Outbound:
    """Reads the event stream and places the calls it asks for, several at once."""

    def __init__(
        self,
        hotline: Hotline,
        endpoint: SipEndpoint,
        api: WorkOrdersClient,
        *,
        trunk: str | None,
        cursor: Path,
        max_age: timedelta = timedelta(minutes=10),
        ring_seconds: float = 40.0,
        callback_attempts: int = 3,
        retry_after: float = 20.0,
    ) -> None:
        self.hotline = hotline
        self.endpoint = endpoint
        self.api = api
        self.trunk = trunk
        self.cursor_path = cursor
        self.max_age = max_age
        self.ring_seconds = ring_seconds
        self.callback_attempts = callback_attempts
        self.retry_after = retry_after
        # (event type, what came of it), the newest KEEP_HANDLED: for tests and a debugger.
        self.handled: list[tuple[str, str]] = []
        self._pending: list[tuple[str, asyncio.Future[None]]] = []  # stream order
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the stream --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        after = self._load_cursor()
        while not stop.is_set():
            try:
                page = await self.api.events(after, wait_ms=POLL_MS)
            except (ApiUnavailable, ApiError) as exc:
                log.warning("outbound: events not readable (%s); retrying", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
                continue
            for item in page["items"]:
                self._dispatch(item)
            if page["last_id"] != after and not self._pending:
                self._save_cursor(page["last_id"])
            after = page["last_id"]
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _dispatch(self, item: dict[str, Any]) -> None:
        data, kind = item["data"], item["type"]
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
        """Move the cursor past the events handled so far, in stream order. A call cut off by
        a shutdown (cancelled) holds it back: that event is handled again after the restart."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbound call failed", exc_info=task.exception())
        done_id = None
        while self._pending and self._pending[0][1].done():
            if self._pending[0][1].cancelled():
                break
            done_id = self._pending.pop(0)[0]
        if done_id is not None:
            self._save_cursor(done_id)

    def _done_upto(self, stream_id: str) -> None:
        if not self._pending:
            self._save_cursor(stream_id)

    def _load_cursor(self) -> str:
        try:
            value = self.cursor_path.read_text().strip()
        except OSError:
            return "$"  # first start: from now on (the API answers with the concrete id)
        return value or "$"

    def _save_cursor(self, stream_id: str) -> None:
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.cursor_path.with_suffix(".tmp")
        temporary.write_text(stream_id)
        os.replace(temporary, self.cursor_path)

    def _handled(self, kind: str, outcome: str) -> None:
        self.handled.append((kind, outcome))
        del self.handled[:-KEEP_HANDLED]  # a hotline runs for months

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
        call = await self.endpoint.dial(target, timeout=self.ring_seconds)
        if call is None:
            return "no_answer"
        synth = self.hotline.synthesizer
        try:
            message = await synth.render(text)
            for _ in range(3):
                playing = asyncio.ensure_future(call.play(message))
                key = await self._key_while(call, playing, after=8.0)
                if key == ACK_KEY:
                    call.stop_playing()
                    with contextlib.suppress(TtsError):
                        await call.play(await synth.prompt("family_thanks"))
                    return "acknowledged"
                if call.state is CallState.ENDED:
                    break
                call.stop_playing()  # * or nothing: say it again
            return "answered"
        except TtsError:
            log.error("outbound: the notification could not be synthesised")
            return "failed"
        finally:
            if call.state is not CallState.ENDED:
                await call.hangup()

    @staticmethod
    async def _key_while(call: Call, playing: asyncio.Future[bool], after: float) -> str | None:
        """A key pressed while the message plays or within `after` seconds of its end."""
        while not playing.done():
            key = await call.receive_dtmf(timeout=0.2)
            if key in (ACK_KEY, REPEAT_KEY):
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
