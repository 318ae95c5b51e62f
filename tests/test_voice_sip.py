"""The hotline's SIP endpoint against real phones and real SIP on loopback, no mocks.

baresip and linphonec place calls with WAV files as their microphones and record what they
hear; raw SIP over UDP from the test covers what a phone cannot be told to do on purpose
(CANCEL at the right moment, retransmissions, a missing ACK, codecs nobody shares).
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.sip_clients import (
    Baresip,
    Linphonec,
    free_port,
    free_sip_port,
    have_programs,
    wav_samples,
)
from tests.support import SHARED
from voice.audio import TELEPHONE_RATE, Codec, encode_g711, read_wav, resample, rms, write_wav
from voice.sip import Call, EndReason, SipEndpoint
from voice.sip import transaction as sip_transaction
from voice.sip.echo_app import tone
from voice.sip.message import (
    SipRequest,
    SipResponse,
    make_response,
    mask_number,
    parse_message,
)
from voice.sip.rtp import DtmfEvent, RtpPacket, RtpSession, open_rtp_session
from voice.sip.sdp import LocalSession, SessionDescription, choose_media

SPEECH = SHARED / "audio" / "zh" / "BAC009S0764W0121.wav"
CALLER = "13800138000"
FRAME = 320  # bytes of one 20 ms frame of 8 kHz linear PCM


@pytest.fixture(autouse=True)
def _phones_installed() -> None:
    missing = have_programs()
    assert not missing, f"install the Debian packages for {missing} (scripts/debian-deps)"


# --- audio checks -------------------------------------------------------------------------


def microphone(path: Path, pcm: bytes, seconds: float = 25.0) -> Path:
    """A caller's microphone file: baresip hangs up when it ends, so pad it with silence."""
    padding = max(int(seconds * TELEPHONE_RATE) * 2 - len(pcm), 0)
    path.write_bytes(write_wav(pcm + bytes(padding), TELEPHONE_RATE))
    return path


def speech_8k() -> bytes:
    pcm, rate = read_wav(SPEECH.read_bytes())
    return resample(pcm, rate, TELEPHONE_RATE)


def loud_seconds(pcm: bytes, threshold: int = 1000) -> float:
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    return sum(1 for frame in frames if rms(frame) > threshold) * 0.02


def tone_power(pcm: bytes, frequency: float) -> float:
    """Goertzel power of one frequency over the first second of `pcm`'s non-silent frames."""
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    loud_pcm = b"".join(frame for frame in frames if rms(frame) > 500)[: 2 * TELEPHONE_RATE]
    loud = struct.unpack(f"<{len(loud_pcm) // 2}h", loud_pcm)
    coefficient = 2 * math.cos(2 * math.pi * frequency / TELEPHONE_RATE)
    previous = before = 0.0
    for sample in loud:
        previous, before = sample + coefficient * previous - before, previous
    return previous**2 + before**2 - coefficient * previous * before


def dominant(pcm: bytes, candidates: list[float]) -> float:
    return max(candidates, key=lambda frequency: tone_power(pcm, frequency))


def envelope(pcm: bytes) -> list[float]:
    return [float(rms(pcm[i : i + FRAME])) for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def best_correlation(reference: bytes, received: bytes) -> float:
    """Highest normalised correlation of the 20 ms loudness envelopes over all alignments."""
    ref, got = envelope(reference), envelope(received)
    best = 0.0
    for lag in range(0, max(len(got) - len(ref), 0) + 1):
        window = got[lag : lag + len(ref)]
        n = len(window)
        mean_a, mean_b = sum(ref[:n]) / n, sum(window) / n
        a = [x - mean_a for x in ref[:n]]
        b = [x - mean_b for x in window]
        norm = math.sqrt(sum(x * x for x in a) * sum(x * x for x in b)) or 1.0
        best = max(best, sum(x * y for x, y in zip(a, b, strict=True)) / norm)
    return best


# --- the application under test -----------------------------------------------------------


class Hotline:
    """A scripted `on_call`: records each call's audio and digits, plays a reply, maybe hangs up."""

    def __init__(
        self,
        reply: Callable[[Call], bytes] | bytes = b"",
        *,
        hangup_after: float | None = None,
        then: Callable[[Call], Awaitable[object]] | None = None,
    ) -> None:
        self.reply = reply
        self.hangup_after = hangup_after
        self.then = then
        self.calls: list[Call] = []
        self.audio: dict[str, bytearray] = {}
        self.played: dict[str, bool] = {}
        self.results: dict[str, object] = {}

    async def __call__(self, call: Call) -> None:
        self.calls.append(call)
        self.audio[call.call_id] = bytearray()
        recorder = asyncio.ensure_future(self._record(call))
        reply = self.reply(call) if callable(self.reply) else self.reply
        self.played[call.call_id] = await call.play(reply) if reply else True
        if self.then is not None:
            self.results[call.call_id] = await self.then(call)
        if self.hangup_after is not None:
            await asyncio.sleep(self.hangup_after)
            await call.hangup()
        await call.wait_ended()
        await recorder

    async def _record(self, call: Call) -> None:
        async for frame in call:
            self.audio[call.call_id] += frame

    def digits(self, call: Call) -> list[str]:
        return [call.dtmf.get_nowait() for _ in range(call.dtmf.qsize())]

    async def wait_calls(self, count: int, timeout: float = 10.0) -> None:
        async def enough() -> None:
            while len(self.calls) < count:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(enough(), timeout)


# --- real phones: baresip -----------------------------------------------------------------


async def test_baresip_call_speech_dtmf_and_caller_hangs_up(tmp_path: Path) -> None:
    speech = speech_8k()
    hotline = Hotline(tone(700, 1.5))
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        mic = microphone(tmp_path / "speech.wav", bytes(4000) + speech)
        async with Baresip(tmp_path / "caller", CALLER, mic) as phone:
            await phone.dial(f"sip:hotline@127.0.0.1:{endpoint.port}")
            await phone.wait_event("CALL_ESTABLISHED")
            await hotline.wait_calls(1)
            await asyncio.sleep(1.0)
            await phone.send_digits("159#", gap=0.25)
            await asyncio.sleep(len(speech) / 16000 - 0.5)
            await phone.hangup()
            await phone.wait_event("CALL_CLOSED")
            call = hotline.calls[0]
            assert await asyncio.wait_for(call.wait_ended(), 5) is EndReason.REMOTE_HANGUP

        heard = phone.received_audio()
    assert call.caller == CALLER and call.caller_masked == "138****8000"
    assert call.called == "hotline"
    assert call.codec is Codec.PCMU
    assert hotline.digits(call) == ["1", "5", "9", "#"]
    assert hotline.played[call.call_id] is True
    received = bytes(hotline.audio[call.call_id])
    assert loud_seconds(received, 300) >= 0.9 * loud_seconds(speech, 300) > 1.0, "no speech"
    assert best_correlation(speech, received) > 0.9, "what we got is not the caller's speech"
    assert 1.25 <= loud_seconds(heard) <= 1.75, "the caller did not hear our 1.5 s reply"
    assert dominant(heard, [440, 700, 1000]) == 700


async def test_pcma_when_offered_first_and_we_hang_up(tmp_path: Path) -> None:
    hotline = Hotline(tone(700, 1.0), hangup_after=0.3)
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        mic = microphone(tmp_path / "mic.wav", tone(440, 3.0))
        async with Baresip(tmp_path / "caller", "13912345678", mic, codecs="PCMA,PCMU") as phone:
            await phone.dial(f"sip:8000@127.0.0.1:{endpoint.port}")
            await phone.wait_event("CALL_ESTABLISHED")
            await phone.wait_event("CALL_CLOSED", timeout=8)
        heard = phone.received_audio()
    call = hotline.calls[0]
    assert call.codec is Codec.PCMA, "the offer listed PCMA first"
    assert call.end_reason is EndReason.LOCAL_HANGUP
    assert call.caller == "13912345678" and call.called == "8000"
    assert 0.75 <= loud_seconds(heard) <= 1.25
    assert dominant(heard, [440, 700]) == 700
    assert dominant(bytes(hotline.audio[call.call_id]), [440, 700]) == 440


async def test_baresip_gets_488_without_a_common_codec(tmp_path: Path) -> None:
    hotline = Hotline()
    async with SipEndpoint(hotline, host="127.0.0.1", port=0, codecs=(Codec.PCMU,)) as endpoint:
        mic = microphone(tmp_path / "mic.wav", b"", 5)
        async with Baresip(tmp_path / "caller", CALLER, mic, codecs="PCMA") as phone:
            await phone.dial(f"sip:hotline@127.0.0.1:{endpoint.port}")
            closed = await phone.wait_event("CALL_CLOSED")
    assert "488" in closed.get("param", ""), closed
    assert hotline.calls == [] and endpoint.calls == {}


async def test_concurrent_calls_are_independent(tmp_path: Path) -> None:
    callers = {f"1380013800{i}": (500 + 150 * i, 1200 + 200 * i, str(i)) for i in range(1, 5)}
    hotline = Hotline(lambda call: tone(callers[call.caller][1], 1.0))
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        phones = [
            Baresip(tmp_path / user, user, microphone(tmp_path / f"{user}.wav", tone(mic, 3.0)))
            for user, (mic, _, _) in callers.items()
        ]
        try:
            await asyncio.gather(*(phone.start() for phone in phones))
            await asyncio.gather(
                *(phone.dial(f"sip:hotline@127.0.0.1:{endpoint.port}") for phone in phones)
            )
            await asyncio.gather(*(phone.wait_event("CALL_ESTABLISHED") for phone in phones))
            await hotline.wait_calls(4)
            await asyncio.sleep(1.0)
            await asyncio.gather(*(phone.send_digits(callers[phone.user][2]) for phone in phones))
            await asyncio.sleep(1.0)
            await asyncio.gather(*(phone.hangup() for phone in phones))
            await asyncio.gather(*(phone.wait_event("CALL_CLOSED") for phone in phones))
            await asyncio.wait_for(
                asyncio.gather(*(call.wait_ended() for call in hotline.calls)), 5
            )
        finally:
            await asyncio.gather(*(phone.stop() for phone in phones))
    mics = [mic for mic, _, _ in callers.values()]
    replies = [reply for _, reply, _ in callers.values()]
    assert sorted(call.caller for call in hotline.calls) == sorted(callers)
    assert len({call.call_id for call in hotline.calls}) == 4
    for call in hotline.calls:
        mic, _, digit = callers[call.caller]
        assert dominant(bytes(hotline.audio[call.call_id]), mics) == mic, call.caller_masked
        assert hotline.digits(call) == [digit]
    for phone in phones:
        heard = phone.received_audio()
        assert dominant(heard, replies) == callers[phone.user][1], phone.user
        assert 0.75 <= loud_seconds(heard) <= 1.25


# --- real phones: linphonec ---------------------------------------------------------------


async def test_linphonec_call_with_sip_info_dtmf(tmp_path: Path) -> None:
    """linphone's stack as a second opinion; it sends digits as SIP INFO (dtmf-relay).

    The endpoint leaves telephone-event out of its answer, so the digits cannot have come by
    RFC 4733.
    """
    speech = speech_8k()
    hotline = Hotline(tone(700, 2.0))
    async with SipEndpoint(hotline, host="127.0.0.1", port=0, dtmf_events=False) as endpoint:
        mic = microphone(tmp_path / "speech.wav", speech, seconds=len(speech) / 16000 + 0.5)
        async with Linphonec(tmp_path / "linphone", free_port(), user="13700137000") as phone:
            phone.send("soundcard use files")
            await phone.wait_for("Using wav files")
            phone.send(f"call sip:hotline@127.0.0.1:{endpoint.port}")
            await phone.wait_for(r"Call \d+ with .* connected")
            phone.send(f"record {tmp_path / 'heard.wav'}")
            phone.send(f"play {mic}")
            await hotline.wait_calls(1)
            await asyncio.sleep(1.0)
            for digit in "42":
                phone.send(digit)
                await asyncio.sleep(0.4)
            await asyncio.sleep(2.5)
            phone.send("terminate")
            await phone.wait_for(r"Call \d+ with .* ended")
            call = hotline.calls[0]
            assert await asyncio.wait_for(call.wait_ended(), 15) is EndReason.REMOTE_HANGUP
    assert call.caller == "13700137000"
    assert call.rtp.dtmf_payload_type is None
    assert hotline.digits(call) == ["4", "2"]
    received = bytes(hotline.audio[call.call_id])
    assert loud_seconds(received, 300) >= 0.9 * loud_seconds(speech, 300)
    assert best_correlation(speech, received) > 0.9, "what we got is not linphone's speech"
    heard = wav_samples((tmp_path / "heard.wav").read_bytes())
    assert 1.5 <= loud_seconds(heard, 300) <= 2.3, "linphone did not hear our 2 s reply"
    assert dominant(heard, [440, 700, 1000]) == 700


# --- handing the caller on: REFER and bridge ----------------------------------------------


async def test_refer_transfer_to_staff_extension(tmp_path: Path) -> None:
    staff_port = free_sip_port()

    async def transfer(call: Call) -> bool:
        return await call.transfer(f"sip:staff@127.0.0.1:{staff_port}")

    hotline = Hotline(tone(700, 0.5), then=transfer)
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        caller_mic = microphone(tmp_path / "caller.wav", tone(440, 20.0))
        staff_mic = microphone(tmp_path / "staff.wav", tone(900, 20.0))
        async with (
            Baresip(tmp_path / "caller", CALLER, caller_mic) as phone,
            Baresip(
                tmp_path / "staff", "staff", staff_mic, sip_port=staff_port, answermode="auto"
            ) as staff,
        ):
            await phone.dial(f"sip:hotline@127.0.0.1:{endpoint.port}")
            await hotline.wait_calls(1)
            call = hotline.calls[0]
            assert await asyncio.wait_for(call.wait_ended(), 10) is EndReason.TRANSFERRED
            answered = await staff.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(1.5)  # the caller and staff talk
            await phone.hangup()
            await staff.wait_event("CALL_CLOSED")
        staff_heard = staff.received_audio()
    assert hotline.results[call.call_id] is True
    assert CALLER in answered["peeruri"], "staff should see the resident, not the hotline"
    assert loud_seconds(staff_heard) >= 1.0 and dominant(staff_heard, [440, 700, 900]) == 440


async def test_bridge_to_staff_extension(tmp_path: Path) -> None:
    staff_port = free_sip_port()

    async def bridge(call: Call) -> bool:
        return await call.bridge(f"sip:staff@127.0.0.1:{staff_port}")

    hotline = Hotline(tone(700, 0.5), then=bridge)
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        caller_mic = microphone(tmp_path / "caller.wav", tone(440, 20.0))
        staff_mic = microphone(tmp_path / "staff.wav", tone(900, 20.0))
        async with (
            Baresip(tmp_path / "caller", CALLER, caller_mic) as phone,
            Baresip(
                tmp_path / "staff", "staff", staff_mic, sip_port=staff_port, answermode="auto"
            ) as staff,
        ):
            await phone.dial(f"sip:hotline@127.0.0.1:{endpoint.port}")
            answered = await staff.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(2.0)
            await phone.hangup()
            await staff.wait_event("CALL_CLOSED")  # the hotline hung up the staff leg
            call = hotline.calls[0]
            assert await asyncio.wait_for(call.wait_ended(), 5) is EndReason.REMOTE_HANGUP
        staff_heard = staff.received_audio()
        caller_heard = phone.received_audio()
    assert hotline.results[call.call_id] is True
    assert CALLER in answered["peeruri"]
    assert endpoint.calls == {}
    assert loud_seconds(staff_heard) >= 1.5 and dominant(staff_heard, [440, 700, 900]) == 440
    tail = caller_heard[int(0.8 * 16000) :]  # after our own 0.5 s greeting
    assert loud_seconds(tail) >= 1.0 and dominant(tail, [440, 700, 900]) == 900


async def busy_extension(peer: RawPeer, invites: list[SipRequest]) -> None:
    """A staff phone that is always busy: 486 to every INVITE (ACKs ignored)."""
    while True:
        message = await peer.inbox.get()
        if isinstance(message, SipRequest) and message.method == "INVITE":
            invites.append(message)
            peer.reply(message, 486)


async def test_transfer_and_bridge_fail_when_staff_is_busy(tmp_path: Path) -> None:
    """Both ways of handing over report failure and leave the caller with us, audio working."""
    staff = await RawPeer.open()
    invites: list[SipRequest] = []
    answering = asyncio.ensure_future(busy_extension(staff, invites))
    target = f"sip:staff@127.0.0.1:{staff.port}"

    async def hand_over(call: Call) -> tuple[bool, bool, bool]:
        transferred = await call.transfer(target, timeout=8)
        bridged = await call.bridge(target, timeout=8)
        return transferred, bridged, await call.play(tone(700, 0.5))

    hotline = Hotline(tone(700, 0.5), then=hand_over, hangup_after=0.2)
    try:
        async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
            mic = microphone(tmp_path / "caller.wav", tone(440, 20.0))
            async with Baresip(tmp_path / "caller", CALLER, mic) as phone:
                await phone.dial(f"sip:hotline@127.0.0.1:{endpoint.port}")
                await phone.wait_event("CALL_ESTABLISHED")
                await hotline.wait_calls(1)
                call = hotline.calls[0]
                assert await asyncio.wait_for(call.wait_ended(), 15) is EndReason.LOCAL_HANGUP
                await phone.wait_event("CALL_CLOSED")
            heard = phone.received_audio()
    finally:
        answering.cancel()
        staff.close()
    assert hotline.results[call.call_id] == (False, False, True)
    assert [invite.from_.uri.user for invite in invites] == [CALLER, CALLER]
    assert "baresip" in (invites[0].get("User-Agent") or ""), "REFER: the phone calls staff"
    assert "Linli" in (invites[1].get("User-Agent") or ""), "bridge: we call staff"
    assert 0.75 <= loud_seconds(heard) <= 1.25, "greeting and the after-failure message"


# --- raw SIP from the test ----------------------------------------------------------------


class RawPeer(asyncio.DatagramProtocol):
    """A SIP peer typed by hand: sends text, receives parsed messages."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.sources: dict[int, tuple[str, int]] = {}

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> RawPeer:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        peer.transport = transport  # type: ignore[assignment]
        peer.port = transport.get_extra_info("sockname")[1]
        return peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        self.sources[id(message)] = addr
        self.inbox.put_nowait(message)

    def reply(self, request: SipRequest, status: int) -> None:
        assert self.transport is not None
        response = make_response(request, status, to_tag="raw-tag")
        self.transport.sendto(response.encode(), self.sources[id(request)])

    def send(self, text: str, port: int, body: str = "") -> None:
        assert self.transport is not None
        head = text.strip().replace("\n", "\r\n")
        payload = f"{head}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
        self.transport.sendto(payload.encode(), ("127.0.0.1", port))

    async def receive(self, timeout: float = 3.0) -> SipRequest | SipResponse:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def response(self, status: int, timeout: float = 3.0) -> SipResponse:
        """The next response with this status, skipping others (e.g. 100, 180)."""
        while True:
            message = await self.receive(timeout)
            if isinstance(message, SipResponse) and message.status == status:
                return message

    async def quiet(self, seconds: float) -> list[SipRequest | SipResponse]:
        await asyncio.sleep(seconds)
        return [self.inbox.get_nowait() for _ in range(self.inbox.qsize())]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def offer_sdp(rtp_port: int, formats: str = "8 0 101", direction: str = "sendrecv") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {formats}\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        f"a={direction}\r\n"
    )


def invite(peer: RawPeer, port: int, call_id: str, branch: str, cseq: int = 1) -> str:
    return f"""INVITE sip:hotline@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={branch};rport
Max-Forwards: 70
From: "Resident" <sip:{CALLER}@127.0.0.1>;tag=raw1
To: <sip:hotline@127.0.0.1:{port}>
Call-ID: {call_id}
CSeq: {cseq} INVITE
Contact: <sip:{CALLER}@127.0.0.1:{peer.port}>
P-Asserted-Identity: <tel:+8613800138000>
Content-Type: application/sdp"""


def in_dialog(
    method: str, peer: RawPeer, port: int, call_id: str, to_tag: str, cseq: int, branch: str
) -> str:
    return f"""{method} sip:hotline@127.0.0.1:{port} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={branch};rport
From: <sip:{CALLER}@127.0.0.1>;tag=raw1
To: <sip:hotline@127.0.0.1:{port}>;tag={to_tag}
Call-ID: {call_id}
CSeq: {cseq} {method}
Contact: <sip:{CALLER}@127.0.0.1:{peer.port}>"""


async def answered_call(peer: RawPeer, endpoint: SipEndpoint, call_id: str) -> SipResponse:
    peer.send(invite(peer, endpoint.port, call_id, "z9hG4bKinv1"), endpoint.port, offer_sdp(40000))
    ok = await peer.response(200)
    peer.send(
        in_dialog("ACK", peer, endpoint.port, call_id, ok.to.tag or "", 1, "z9hG4bKack1"),
        endpoint.port,
    )
    return ok


async def test_options_keepalive_with_compact_headers() -> None:
    async with SipEndpoint(Hotline(), host="127.0.0.1", port=0) as endpoint:
        peer = await RawPeer.open()
        try:
            peer.send(
                f"""OPTIONS sip:hotline@127.0.0.1:{endpoint.port} SIP/2.0
v: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKopt1;rport
v: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream, SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKx
f: <sip:pbx@127.0.0.1>;tag=pbx1
t: <sip:hotline@127.0.0.1>
i: keepalive-1
CSeq: 7 OPTIONS
Max-Forwards: 70""",
                endpoint.port,
            )
            ok = await peer.response(200)
        finally:
            peer.close()
    allowed = {method.strip() for method in (ok.get("Allow") or "").split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO"} <= allowed
    assert ok.cseq == (7, "OPTIONS") and ok.call_id == "keepalive-1"
    vias = ok.vias
    assert [via.branch for via in vias] == ["z9hG4bKopt1", "z9hG4bKupstream", "z9hG4bKx"]
    assert vias[0].params["rport"] == str(peer.port)
    assert ok.to.tag


async def test_cancel_before_answer() -> None:
    hotline = Hotline()
    ended: list[Call] = []
    async with SipEndpoint(
        hotline, on_ended=ended.append, host="127.0.0.1", port=0, ring_seconds=5
    ) as endpoint:
        peer = await RawPeer.open()
        try:
            peer.send(
                invite(peer, endpoint.port, "cancel-1", "z9hG4bKc1"),
                endpoint.port,
                offer_sdp(40002),
            )
            assert (await peer.response(100)).cseq == (1, "INVITE")
            ringing = await peer.response(180)
            peer.send(
                f"""CANCEL sip:hotline@127.0.0.1:{endpoint.port} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKc1;rport
From: "Resident" <sip:{CALLER}@127.0.0.1>;tag=raw1
To: <sip:hotline@127.0.0.1:{endpoint.port}>
Call-ID: cancel-1
CSeq: 1 CANCEL
Max-Forwards: 70""",
                endpoint.port,
            )
            responses = [await peer.receive(), await peer.receive()]
            by_method = {message.cseq[1]: message for message in responses}
            assert isinstance(by_method["CANCEL"], SipResponse)
            assert by_method["CANCEL"].status == 200
            terminated = by_method["INVITE"]
            assert isinstance(terminated, SipResponse) and terminated.status == 487
            assert terminated.to.tag == ringing.to.tag
            peer.send(
                f"""ACK sip:hotline@127.0.0.1:{endpoint.port} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKc1;rport
From: "Resident" <sip:{CALLER}@127.0.0.1>;tag=raw1
To: <sip:hotline@127.0.0.1:{endpoint.port}>;tag={terminated.to.tag}
Call-ID: cancel-1
CSeq: 1 ACK""",
                endpoint.port,
            )
            assert await peer.quiet(1.2) == [], "487 must stop once ACKed"
        finally:
            peer.close()
    assert hotline.calls == [], "a cancelled call never reaches the application"
    assert [(call.caller, call.end_reason) for call in ended] == [
        ("+8613800138000", EndReason.CANCELLED)
    ], "but it is reported as abandoned"
    assert endpoint.calls == {}


async def test_retransmitted_invite_absorbed_and_200_repeated_until_ack() -> None:
    hotline = Hotline()
    async with SipEndpoint(hotline, host="127.0.0.1", port=0, send_ringing=False) as endpoint:
        peer = await RawPeer.open()
        try:
            request = invite(peer, endpoint.port, "retx-1", "z9hG4bKr1")
            peer.send(request, endpoint.port, offer_sdp(40004))
            ok = await peer.response(200)
            peer.send(request, endpoint.port, offer_sdp(40004))  # as if our 200 was lost
            again = await peer.response(200, timeout=0.4)
            assert again.to.tag == ok.to.tag and again.body == ok.body
            # No ACK yet: the 200 comes again after T1 and 2*T1.
            repeats = [await peer.response(200, timeout=1.5) for _ in range(2)]
            assert all(message.to.tag == ok.to.tag for message in repeats)
            peer.send(
                in_dialog("ACK", peer, endpoint.port, "retx-1", ok.to.tag or "", 1, "z9hG4bKa"),
                endpoint.port,
            )
            assert await peer.quiet(2.2) == [], "200 OK must stop once ACKed"
            assert len(hotline.calls) == 1, "the repeated INVITE must not make a second call"
            peer.send(
                in_dialog("BYE", peer, endpoint.port, "retx-1", ok.to.tag or "", 2, "z9hG4bKb"),
                endpoint.port,
            )
            assert (await peer.response(200)).cseq == (2, "BYE")
            call = hotline.calls[0]
            assert await asyncio.wait_for(call.wait_ended(), 2) is EndReason.REMOTE_HANGUP
        finally:
            peer.close()
    assert call.caller == "+8613800138000", "P-Asserted-Identity wins over From"
    assert SessionDescription.parse(ok.body).media[0].formats == ["8", "101"]


async def test_unanswered_200_gives_up_with_bye(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sip_transaction, "TIMEOUT", 1.6)  # 64*T1 is 32 s on a real network
    hotline = Hotline()
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        peer = await RawPeer.open()
        try:
            peer.send(
                invite(peer, endpoint.port, "noack-1", "z9hG4bKn1"),
                endpoint.port,
                offer_sdp(40006),
            )
            while True:
                message = await peer.receive(4.0)
                if isinstance(message, SipRequest):
                    break
            assert message.method == "BYE" and message.call_id == "noack-1"
            assert message.uri == f"sip:{CALLER}@127.0.0.1:{peer.port}", "BYE goes to Contact"
        finally:
            peer.close()
        assert hotline.calls[0].end_reason is EndReason.NO_ACK


async def test_delayed_offer_answer_in_ack() -> None:
    """An INVITE without SDP: we offer in the 200, the caller answers in the ACK."""
    hotline = Hotline(tone(700, 1.0))
    loop = asyncio.get_running_loop()
    media: asyncio.Queue[bytes] = asyncio.Queue()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            media.put_nowait(data)

    rtp, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    rtp_port = rtp.get_extra_info("sockname")[1]
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        peer = await RawPeer.open()
        try:
            text = invite(peer, endpoint.port, "late-1", "z9hG4bKl1").replace(
                "\nContent-Type: application/sdp", ""
            )
            peer.send(text, endpoint.port)
            ok = await peer.response(200)
            offer = SessionDescription.parse(ok.body)
            assert offer.media[0].formats == ["0", "8", "101"], "our preference order"
            peer.send(
                in_dialog("ACK", peer, endpoint.port, "late-1", ok.to.tag or "", 1, "z9hG4bKl2")
                + "\nContent-Type: application/sdp",
                endpoint.port,
                offer_sdp(rtp_port, formats="8"),
            )
            packet = RtpPacket.parse(await asyncio.wait_for(media.get(), 2))
            await hotline.wait_calls(1)
            assert hotline.calls[0].codec is Codec.PCMA
            assert packet.payload_type == 8
            peer.send(
                in_dialog("BYE", peer, endpoint.port, "late-1", ok.to.tag or "", 2, "z9hG4bKl3"),
                endpoint.port,
            )
            await peer.response(200)
        finally:
            peer.close()
            rtp.close()


async def test_no_common_codec_is_488() -> None:
    hotline = Hotline()
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        peer = await RawPeer.open()
        try:
            peer.send(
                invite(peer, endpoint.port, "g722-1", "z9hG4bKg1"),
                endpoint.port,
                offer_sdp(40008, formats="9 101").replace(
                    "a=rtpmap:101", "a=rtpmap:9 G722/8000\r\na=rtpmap:101"
                ),
            )
            rejected = await peer.response(488)
            assert "305" in (rejected.get("Warning") or "")
            peer.send(
                f"""ACK sip:hotline@127.0.0.1:{endpoint.port} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKg1;rport
From: "Resident" <sip:{CALLER}@127.0.0.1>;tag=raw1
To: <sip:hotline@127.0.0.1:{endpoint.port}>;tag={rejected.to.tag}
Call-ID: g722-1
CSeq: 1 ACK""",
                endpoint.port,
            )
            assert await peer.quiet(1.0) == []
        finally:
            peer.close()
    assert hotline.calls == []


async def test_reinvite_hold_unhold_and_info_digits() -> None:
    hotline = Hotline()
    async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
        peer = await RawPeer.open()
        try:
            ok = await answered_call(peer, endpoint, "hold-1")
            tag = ok.to.tag or ""
            answer = SessionDescription.parse(ok.body)
            await hotline.wait_calls(1)
            call = hotline.calls[0]
            held = []
            for cseq, direction in ((2, "sendonly"), (3, "sendrecv")):
                peer.send(
                    in_dialog("INVITE", peer, endpoint.port, "hold-1", tag, cseq, f"z9hG4bKh{cseq}")
                    + "\nContent-Type: application/sdp",
                    endpoint.port,
                    offer_sdp(40010, direction=direction),
                )
                reply = await peer.response(200)
                peer.send(
                    in_dialog("ACK", peer, endpoint.port, "hold-1", tag, cseq, f"z9hG4bKk{cseq}"),
                    endpoint.port,
                )
                sdp = SessionDescription.parse(reply.body)
                held.append((call.on_hold, sdp.direction(sdp.media[0])))
                assert sdp.media[0].port == answer.media[0].port, "same RTP port"
                assert sdp.media[0].formats == answer.media[0].formats, "same codec"
            assert held == [(True, "recvonly"), (False, "sendrecv")]
            for cseq, (kind, body) in enumerate(
                [
                    ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
                    ("application/dtmf", "#"),
                ],
                start=4,
            ):
                peer.send(
                    in_dialog("INFO", peer, endpoint.port, "hold-1", tag, cseq, f"z9hG4bKi{cseq}")
                    + f"\nContent-Type: {kind}",
                    endpoint.port,
                    body,
                )
                assert (await peer.response(200)).cseq == (cseq, "INFO")
            assert [await call.receive_dtmf(1), await call.receive_dtmf(1)] == ["5", "#"]
            peer.send(
                in_dialog("BYE", peer, endpoint.port, "other", tag, 9, "z9hG4bKx9"), endpoint.port
            )
            assert (await peer.response(481)).cseq == (9, "BYE"), "unknown dialog"
        finally:
            peer.close()


# --- parsing and media units (pure functions and a real UDP socket) ------------------------


def test_parse_folded_compact_and_multi_via_message() -> None:
    raw = (
        b"INVITE sip:8001@pbx.local SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1,SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP [fd00::5]:5070;branch=z9hG4bK3;received=fd00::5\r\n"
        b'f: "Zhang, San" <sip:13800138000@pbx.local;user=phone>;tag=a1\r\n'
        b"t: <sip:8001@pbx.local>\r\n"
        b"i: abc@10.0.0.1\r\n"
        b"CSeq: 12 INVITE\r\n"
        b"Subject: a folded\r\n  header line\r\n"
        b"m: <sip:13800138000@10.0.0.1:5060>, <sip:other@10.0.0.3>\r\n"
        b"l: 4\r\n\r\nbodyEXTRA"
    )
    message = parse_message(raw)
    assert isinstance(message, SipRequest) and message.method == "INVITE"
    assert [via.host for via in message.vias] == ["10.0.0.1", "10.0.0.2", "fd00::5"]
    assert message.vias[2].port == 5070
    assert message.from_.display == "Zhang, San" and message.from_.tag == "a1"
    assert message.from_.uri.user == "13800138000" and message.from_.uri.params["user"] == "phone"
    assert message.call_id == "abc@10.0.0.1" and message.cseq == (12, "INVITE")
    assert message.get("Subject") == "a folded header line"
    assert len(message.get_all("Contact")) == 2
    assert message.body == b"body"
    again = parse_message(message.encode())
    assert again.headers == message.headers and again.body == b"body"
    assert mask_number("13800138000") == "138****8000" and "0138" not in mask_number(
        "+8613800138000"
    )


def test_sdp_follows_the_offer_order_and_refuses_video() -> None:
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 18 8 0 96\r\na=rtpmap:96 TELEPHONE-EVENT/8000\r\n"
        "m=video 4002 RTP/AVP 97\r\n"
    )
    index, choice = choose_media(offer, (Codec.PCMU, Codec.PCMA)) or (None, None)
    assert index == 0 and choice is not None
    assert (choice.codec, choice.payload_type, choice.dtmf_payload_type) == (Codec.PCMA, 8, 96)
    assert (choice.remote_host, choice.remote_port) == ("10.0.0.1", 4000)
    assert choose_media(offer, (Codec.PCMU,)) is not None
    assert choose_media(offer, (Codec.PCMU,))[1].codec is Codec.PCMU  # type: ignore[index]
    answer = SessionDescription.parse(LocalSession("10.0.0.9", 30000).answer(offer, 0, choice))
    assert [(m.media, m.port, m.formats) for m in answer.media] == [
        ("audio", 30000, ["8", "96"]),
        ("video", 0, ["97"]),
    ]
    assert "a=ptime:20" in LocalSession("10.0.0.9", 30000).answer(offer, 0, choice).decode()


async def test_rtp_reorders_decodes_and_dedupes_dtmf() -> None:
    digits: list[str] = []
    session = await open_rtp_session(
        "127.0.0.1", lambda: RtpSession(Codec.PCMU, 0, 101, digits.append)
    )
    assert session.local_port % 2 == 0
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    session.start(sender.getsockname())  # the negotiated address: RTP only from there
    try:
        frames = [tone(300 + 100 * i, 0.02) for i in range(6)]
        packets = [
            RtpPacket(0, 65533 + i, 160 * i, 1234, encode_g711(frame, Codec.PCMU)).encode()
            for i, frame in enumerate(frames)
        ]
        order = [0, 2, 1, 3, 5, 4, 4]  # swapped pairs, one duplicate, across the seq wrap
        for index in order:
            sender.sendto(packets[index], ("127.0.0.1", session.local_port))
        event_ts = 99999
        events = [(0, False, 160), (1, False, 320), (2, True, 480), (2, True, 480), (2, True, 480)]
        for offset, end, duration in events:
            payload = DtmfEvent(7, end, 10, duration).encode()
            sender.sendto(
                RtpPacket(101, (65539 + offset) & 0xFFFF, event_ts, 1234, payload).encode(),
                ("127.0.0.1", session.local_port),
            )
        received = [await asyncio.wait_for(session.audio.get(), 2) for _ in range(6)]
        await asyncio.sleep(0.2)
    finally:
        sender.close()
        await session.close()
    assert [dominant(frame or b"", [300 + 100 * i for i in range(6)]) for frame in received] == [
        300 + 100 * i for i in range(6)
    ]
    assert digits == ["7"], "three end packets, one digit"
    assert session.packets_received == len(order) + len(events)


async def test_rtp_stream_has_no_holes_when_packets_stop() -> None:
    """Silence stands in for RTP that stopped (hold, DTX), so end-pointing still sees time pass."""
    digits: list[str] = []
    session = await open_rtp_session(
        "127.0.0.1", lambda: RtpSession(Codec.PCMA, 8, None, digits.append)
    )
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    try:
        session.start(sender.getsockname())
        loud = encode_g711(tone(440, 0.02), Codec.PCMA)
        for burst in range(2):
            for i in range(5):
                packet = RtpPacket(8, burst * 5 + i, 160 * (burst * 30 + i), 77, loud)
                sender.sendto(packet.encode(), ("127.0.0.1", session.local_port))
            if burst == 0:
                await asyncio.sleep(0.6)
        await asyncio.sleep(0.04)  # less than FILL_AFTER: no silence after the second burst
        frames = [session.audio.get_nowait() for _ in range(session.audio.qsize())]
        outgoing = sender.recv(2048)
    finally:
        sender.close()
        await session.close()
    levels = [rms(frame or b"") for frame in frames]
    assert levels[:5] == [levels[0]] * 5 and levels[0] > 3000
    assert 20 <= levels.count(0) <= 32, "about 0.5 s of stand-in silence"
    assert levels[-5:] == [levels[0]] * 5, "the second burst follows the silence"
    assert RtpPacket.parse(outgoing).payload_type == 8, "and we send PCMA back all along"
