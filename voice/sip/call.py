"""One telephone call as the hotline application sees it.

    async def on_call(call: Call) -> None:
        await call.play(greeting_pcm, rate=16000)   # returns False if interrupted or hung up
        async for frame in call:                     # 20 ms of 8 kHz 16-bit mono PCM each
            ...                                      # feed ASR; call.stop_playing() on barge-in
        # the loop ends when the caller hangs up (call.end_reason says why)

Digits pressed by the caller (RFC 4733 events and SIP INFO alike) arrive in `call.dtmf`.
`call.caller` is the full number for looking up the resident; log `call.caller_masked`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from voice.audio import TELEPHONE_RATE, Codec, resample
from voice.sip.dialog import Dialog
from voice.sip.message import (
    Address,
    SipParseError,
    SipRequest,
    mask_digits,
    mask_number,
)
from voice.sip.rtp import RtpSession
from voice.sip.sdp import LocalSession, MediaChoice
from voice.sip.srtp import SdesKey
from voice.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from voice.sip.endpoint import SipEndpoint

log = logging.getLogger(__name__)


class CallState(str, enum.Enum):
    RINGING = "ringing"  # inbound, not answered yet
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(str, enum.Enum):
    REMOTE_HANGUP = "remote-hangup"  # BYE from the far end
    LOCAL_HANGUP = "local-hangup"  # we called hangup()
    CANCELLED = "cancelled"  # the caller gave up before we answered
    NO_ACK = "no-ack"  # our 200 OK was never acknowledged
    TRANSFERRED = "transferred"  # REFER succeeded
    REJECTED = "rejected"  # outbound call refused or unanswered
    SHUTDOWN = "shutdown"  # the endpoint closed


def caller_number(request: SipRequest) -> str:
    """P-Asserted-Identity (the PBX's word, RFC 3325) when present, else the From user."""
    for value in request.get_all("P-Asserted-Identity"):
        try:
            uri = Address.parse(value).uri
        except SipParseError:
            continue
        if uri.user:
            return uri.user.partition(";")[0]
    return request.from_.uri.user


class Call:
    """A call leg: its state, its media and the operations the application may do on it."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        dialog: Dialog,
        rtp: RtpSession,
        sdp: LocalSession,
        *,
        direction: str,
        caller: str,
        called: str,
        state: CallState,
        peer_host: str,
    ) -> None:
        self.endpoint = endpoint
        self.peer_host = peer_host  # where the INVITE came from or went: signalling's address
        self.flow_address: tuple[str, int] | None = None  # its TLS connection, if over TLS
        self.rtp_key: SdesKey | None = None  # the far end's SRTP key in force
        self.dialog = dialog
        self.direction = direction  # "inbound" or "outbound"
        self.caller = caller  # the full number: for look-ups only, never for logs
        self.called = called
        self.state = state
        self.end_reason: EndReason | None = None
        self.ended = asyncio.Event()
        self.dtmf: asyncio.Queue[str] = asyncio.Queue()
        self.rtp = rtp
        self._sdp = sdp
        self.media: MediaChoice | None = None
        self._invite_transaction: ServerTransaction | None = None
        self._notifications: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.bridged_to: Call | None = None
        rtp.on_dtmf = self._on_digit

    # --- what the call is ----------------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    @property
    def codec(self) -> Codec:
        return self.rtp.codec

    @property
    def caller_masked(self) -> str:
        return mask_number(self.caller)

    @property
    def party(self) -> str:
        """The other end's user: who called us, or whom we called (a number, terminal-…)."""
        return self.caller if self.direction == "inbound" else self.called

    @property
    def on_hold(self) -> bool:
        return self.media is not None and self.media.on_hold

    def __repr__(self) -> str:
        return f"<Call {self.direction} {self.caller_masked} {self.state.value}>"

    # --- audio ---------------------------------------------------------------------------

    async def receive_audio(self, timeout: float | None = None) -> bytes | None:
        """The next 20 ms frame (320 bytes of 8 kHz linear PCM); None once the call has ended.

        Raises asyncio.TimeoutError when nothing arrived within `timeout` seconds.
        """
        frame = await asyncio.wait_for(self.rtp.audio.get(), timeout)
        if frame is None:
            self.rtp.audio.put_nowait(None)  # keep answering None to later callers
        return frame

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        while (frame := await self.receive_audio()) is not None:
            yield frame

    async def play(self, pcm: bytes, rate: int = TELEPHONE_RATE) -> bool:
        """Send linear PCM to the caller in real time; waits until it has been sent.

        Returns True when all of it was played, False when `stop_playing()` interrupted it or
        the call ended. Calls made while something is playing queue up behind it.
        """
        if self.state is CallState.ENDED:
            return False
        return await self.rtp.play(resample(pcm, rate, TELEPHONE_RATE))

    def send_frame(self, pcm: bytes) -> None:
        """Live audio (a microphone): one 20 ms frame of 8 kHz linear PCM, sent on the next
        tick after anything `play` queued; a late or bursty source loses its oldest frames,
        never its latency. Call it on the endpoint's event loop."""
        if self.state is not CallState.ENDED:
            self.rtp.write_frame(pcm)

    def stop_playing(self) -> None:
        """Barge-in: silence at once; every pending `play()` returns False."""
        self.rtp.stop_playing()

    @property
    def playing(self) -> bool:
        return self.rtp.playing

    # --- digits --------------------------------------------------------------------------

    async def receive_dtmf(self, timeout: float | None = None) -> str | None:
        """The next digit ("0"-"9", "*", "#", "A"-"D"); None on timeout or when the call ended."""
        if not self.dtmf.empty():
            return self.dtmf.get_nowait()
        getter = asyncio.ensure_future(self.dtmf.get())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({getter, ended}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            ended.cancel()
            if not getter.done():
                getter.cancel()
        return getter.result() if getter.done() and not getter.cancelled() else None

    def _on_digit(self, digit: str) -> None:
        log.debug("call %s: a DTMF digit", self.caller_masked)  # digits may spell an ID number
        self.dtmf.put_nowait(digit)

    def _on_info(self, request: SipRequest) -> None:
        """SIP INFO DTMF: application/dtmf-relay ("Signal=5") or application/dtmf ("5")."""
        body = request.body.decode("utf-8", "replace").strip()
        digit: str | None = None
        if request.content_type == "application/dtmf-relay":
            for line in body.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()
        elif request.content_type == "application/dtmf":
            digit = body
        if digit:
            digit = {"10": "*", "11": "#"}.get(digit, digit.upper()[:1])
            if digit in "0123456789*#ABCD":
                self._on_digit(digit)

    # --- ending --------------------------------------------------------------------------

    async def wait_ended(self) -> EndReason:
        await self.ended.wait()
        assert self.end_reason is not None
        return self.end_reason

    async def hangup(self) -> None:
        """Send BYE and wait (up to 32 s on a lossy network) for its answer."""
        if self.state is CallState.ENDED:
            return
        await self.endpoint.send_bye(self, EndReason.LOCAL_HANGUP)

    async def _finish(self, reason: EndReason) -> None:
        """Mark the call over and release its media (no signalling; the endpoint did that)."""
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.end_reason = reason
        if self._invite_transaction is not None:
            self._invite_transaction.cancel_timers()
        try:
            await self.rtp.close()
        except Exception:  # the call is over whatever its media did
            log.exception("closing RTP of %s failed", self.caller_masked)
        self.ended.set()
        log.info("call %s ended: %s", self.caller_masked, reason.value)
        if self.endpoint.on_ended is not None:
            try:
                self.endpoint.on_ended(self)
            except Exception:
                log.exception("on_ended failed")
        other, self.bridged_to = self.bridged_to, None
        if other is not None:
            other.bridged_to = None
            other.rtp.forward_to = self.rtp.forward_to = None
            await other.hangup()

    # --- handing the caller on -----------------------------------------------------------

    async def transfer(self, target: str, timeout: float = 30.0) -> bool:
        """Blind transfer with REFER (RFC 3515): True once the far end reports the new call up.

        `target` is a SIP URI or a bare extension, which is asked of the PBX the call came
        from. On success we hang up our leg (RFC 5589); on failure (REFER refused, the target
        busy or unanswered within `timeout`) the caller stays with us. A phone that hangs up
        on us after accepting the REFER, before reporting the outcome, also counts as success:
        the caller has left us either way.
        """
        if self.state is not CallState.ACTIVE:
            return False
        uri = self.endpoint.target_uri(target, self)
        self.stop_playing()
        while not self._notifications.empty():
            self._notifications.get_nowait()
        response = await self.endpoint.send_in_dialog(
            self,
            "REFER",
            headers=[
                ("Refer-To", f"<{uri}>"),
                ("Referred-By", f"<{self.dialog.local.uri}>"),
            ],
        )
        if response.status >= 300:
            log.info("call %s: REFER refused (%d)", self.caller_masked, response.status)
            return False
        try:
            succeeded = await asyncio.wait_for(self._await_transfer_outcome(), timeout)
        except asyncio.TimeoutError:
            succeeded = False
        log.info("call %s: transfer %s", self.caller_masked, "done" if succeeded else "failed")
        if succeeded and self.state is not CallState.ENDED:
            await self.endpoint.send_bye(self, EndReason.TRANSFERRED)
        return succeeded

    async def _await_transfer_outcome(self) -> bool:
        """Read NOTIFY message/sipfrag bodies until a final status (RFC 3515 section 2.4.5)."""
        while True:
            getter = asyncio.ensure_future(self._notifications.get())
            ended = asyncio.ensure_future(self.ended.wait())
            try:
                await asyncio.wait({getter, ended}, return_when="FIRST_COMPLETED")
            finally:
                ended.cancel()
                notified = getter.done()
                if not notified:
                    getter.cancel()
            if not notified:
                return self.end_reason is EndReason.REMOTE_HANGUP
            notify = getter.result()
            status = _sipfrag_status(notify.body)
            terminated = (notify.get("Subscription-State") or "").lower().startswith("terminated")
            if status is not None and status >= 200:
                return 200 <= status < 300
            if terminated:
                return False

    def _on_notify(self, request: SipRequest) -> None:
        self._notifications.put_nowait(request)

    async def bridge(self, target: str, timeout: float = 30.0) -> bool:
        """Call `target` (staff extension) and relay audio both ways; True once it answered.

        For PBXs or phones that do not follow REFER. Received frames go straight from one
        leg's RTP to the other's (our audio queue stays empty), until either side hangs up,
        which hangs up the other. On False the caller is still ours.
        """
        if self.state is not CallState.ACTIVE:
            return False
        self.stop_playing()
        other = await self.endpoint.dial(target, caller=self.caller, timeout=timeout)
        if other is None:
            return False
        if self.state is CallState.ENDED:
            await other.hangup()
            return False
        self.bridged_to, other.bridged_to = other, self
        self.rtp.forward_to, other.rtp.forward_to = other.rtp, self.rtp
        log.info("call %s: bridged to %s", self.caller_masked, mask_digits(other.called))
        return True


def _sipfrag_status(body: bytes) -> int | None:
    """`SIP/2.0 200 OK` (the first line of a message/sipfrag body) -> 200."""
    first = body.decode("utf-8", "replace").strip().splitlines()[:1]
    if not first:
        return None
    parts = first[0].split()
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None
