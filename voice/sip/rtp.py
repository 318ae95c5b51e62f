"""RTP media for one call (RFC 3550, RFC 3551 G.711, RFC 4733 DTMF), on asyncio UDP.

Sending: one 20 ms G.711 packet every 20 ms on a wall-clock schedule for the whole call —
playback when there is some, silence otherwise — so sequence numbers and timestamps run on
without gaps and PBXs with an RTP timeout keep the call up while the caller is talking.

Receiving: a small reorder buffer (packets in order are released at once; a gap waits for up
to `REORDER_DEPTH` later packets or `REORDER_WAIT` seconds, then is filled with silence),
G.711 decoding, and re-chunking into 20 ms frames of 8 kHz linear PCM whatever the far end's
ptime. RFC 4733 events are turned into digits once per event, however many times the end
packet is repeated.

Source pinning: packets are taken only from the negotiated address (`remote`: the far end's
SDP connection address and port, set by the endpoint from each offer/answer); anything from
elsewhere — injected audio, a stray stream — is dropped and counted (`foreign_packets`, the
endpoint's `rtp_foreign_dropped`), never decoded. There is no latching onto where the first
packet came from: behind NAT the far end must put its public address in its SDP (or a PBX/SBC
anchors the media).

SRTP (`srtp`, set for RTP/SAVP calls): packets are sealed on send and opened after the source
check on receipt; one that fails authentication (forged, corrupted, replayed) is dropped and
counted (`srtp_rejected`).

Not implemented: RTCP reports (the RTCP port is bound and drained only), SRTCP, comfort noise
generation, RTP header extensions on send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from voice.audio import SAMPLE_WIDTH, TELEPHONE_RATE, Codec, decode_g711, encode_g711
from voice.sip.srtp import SrtpContext, SrtpError

log = logging.getLogger(__name__)

FRAME_SAMPLES = TELEPHONE_RATE // 50  # 20 ms at 8 kHz
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH  # one 20 ms frame of linear PCM
SILENCE_FRAME = bytes(FRAME_BYTES)
FRAME_SECONDS = 0.02
REORDER_DEPTH = 3
REORDER_WAIT = 0.1
FILL_AFTER = 0.2  # seconds without received audio before silence frames stand in
MAX_GAP = 100  # a jump of more packets than this is a new stream, not loss
COMFORT_NOISE_PT = 13
DTMF_DIGITS = "0123456789*#ABCD"
DTMF_LOST_END_WAIT = 1.0
RECEIVE_QUEUE_FRAMES = 1500  # 30 s; the oldest frames are dropped if nobody reads


@dataclass
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise ValueError("short RTP packet")
        first, second, sequence, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
        if first >> 6 != 2:
            raise ValueError("not RTP version 2")
        offset = 12 + 4 * (first & 0x0F)  # CSRC list
        if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
            if len(data) < offset + 4:
                raise ValueError("truncated RTP extension")
            (words,) = struct.unpack("!H", data[offset + 2 : offset + 4])
            offset += 4 + 4 * words
        end = len(data)
        if first & 0x20:  # padding: the last byte says how much
            end -= data[-1]
        if offset > end:
            raise ValueError("truncated RTP packet")
        return cls(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80))

    def encode(self) -> bytes:
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        header = struct.pack(
            "!BBHII", 0x80, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        return header + self.payload


@dataclass
class DtmfEvent:
    """An RFC 4733 telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> DtmfEvent:
        if len(payload) < 4:
            raise ValueError("short telephone-event payload")
        event, flags, duration = struct.unpack("!BBH", payload[:4])
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def encode(self) -> bytes:
        return struct.pack(
            "!BBH", self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration
        )

    @property
    def digit(self) -> str | None:
        return DTMF_DIGITS[self.event] if self.event < len(DTMF_DIGITS) else None


class ReorderBuffer:
    """Puts packets back in sequence order; fills what is lost with `None` gaps.

    `push` returns what can be released now, in order: the item, or `LOST` for a packet given up.
    """

    LOST = object()

    def __init__(self, depth: int = REORDER_DEPTH) -> None:
        self.depth = depth
        self._next: int | None = None
        self._pending: dict[int, object] = {}

    def reset(self) -> None:
        self._next = None
        self._pending.clear()

    def push(self, sequence: int, item: object) -> list[object]:
        if self._next is None:
            self._next = sequence
        distance = (sequence - self._next) & 0xFFFF
        released: list[object] = []
        if distance >= 0x8000:
            return released  # late or duplicate: already released or given up
        if distance > MAX_GAP:
            released += self.flush()
            self._next = sequence
        self._pending[sequence] = item
        released += self._release_in_order()
        while len(self._pending) > self.depth:
            released.append(self.LOST)
            self._next = (self._next + 1) & 0xFFFF
            released += self._release_in_order()
        return released

    def flush(self) -> list[object]:
        """Give up on every gap: release all pending packets, gaps as `LOST`."""
        released: list[object] = []
        while self._pending and self._next is not None:
            if self._next in self._pending:
                released.append(self._pending.pop(self._next))
            else:
                released.append(self.LOST)
            self._next = (self._next + 1) & 0xFFFF
        return released

    @property
    def waiting(self) -> bool:
        return bool(self._pending)

    def _release_in_order(self) -> list[object]:
        released: list[object] = []
        while self._next is not None and self._next in self._pending:
            released.append(self._pending.pop(self._next))
            self._next = (self._next + 1) & 0xFFFF
        return released


class _Playback:
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = deque(frames)
        self.started = False
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finish(self, completed: bool) -> None:
        if not self.done.done():
            self.done.set_result(completed)


class RtpSession(asyncio.DatagramProtocol):
    """The media of one call: a paced G.711 sender and a reordering, decoding receiver."""

    def __init__(
        self,
        codec: Codec,
        payload_type: int,
        dtmf_payload_type: int | None,
        on_dtmf: Callable[[str], None],
        *,
        counters: Counter[str] | None = None,
    ) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.on_dtmf = on_dtmf
        # Where the far end's media is, as negotiated: packets from anywhere else are dropped.
        self.remote: tuple[str, int] | None = None
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.foreign_packets = 0  # dropped: not from `remote`
        self.srtp: SrtpContext | None = None  # set for RTP/SAVP: every packet sealed/opened
        self.sending = True  # False while the far end holds the call (sendonly/inactive)
        self.audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.forward_to: RtpSession | None = None  # bridged: received frames go straight there
        self.packets_received = 0
        self.packets_sent = 0
        self._send_failures = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._marker = True
        self._playbacks: deque[_Playback] = deque()
        self._live: deque[bytes] = deque(maxlen=10)
        self._sender: asyncio.Task[None] | None = None
        self._reorder = ReorderBuffer()
        self._remote_ssrc: int | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._partial = bytearray()
        self._frame_bytes = FRAME_BYTES
        self._last_frame_at: float | None = None  # loop time of the last frame handed on
        self._dtmf_finished: deque[int] = deque(maxlen=8)  # timestamps of events already emitted
        self._dtmf_pending: tuple[int, str] | None = None
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._closed = False

    # --- set-up --------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector datagram transport does not subclass DatagramTransport (3.10).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def start(self, remote: tuple[str, int]) -> None:
        if remote[0] != "0.0.0.0":
            self.remote = remote
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    def update(
        self,
        codec: Codec,
        payload_type: int,
        dtmf_payload_type: int | None,
        remote: tuple[str, int],
        sending: bool,
    ) -> None:
        """A new offer/answer (re-INVITE, hold, unhold) changed the media parameters."""
        self.codec, self.payload_type = codec, payload_type
        self.dtmf_payload_type = dtmf_payload_type
        if remote[0] != "0.0.0.0":
            self.remote = remote
        self.sending = sending

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for timer in (self._flush_timer, self._dtmf_timer):
            if timer is not None:
                timer.cancel()
        self._emit_pending_dtmf()
        self.stop_playing()
        self._deliver(self._reorder.flush())
        if self._partial:
            self._put_frame(bytes(self._partial).ljust(FRAME_BYTES, b"\0"))
            self._partial.clear()
        self.audio.put_nowait(None)
        for transport in (self._transport, self._rtcp):
            if transport is not None:
                transport.close()

    # --- sending -------------------------------------------------------------------------

    async def play(self, pcm: bytes) -> bool:
        """Queue 8 kHz linear PCM; True when all of it was sent, False if stopped or closed."""
        if self._closed:
            return False
        frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\0")
        if not frames:
            return True
        playback = _Playback(frames)
        self._playbacks.append(playback)
        try:
            return await asyncio.shield(playback.done)
        except asyncio.CancelledError:
            if playback in self._playbacks:
                self._playbacks.remove(playback)
            playback.finish(False)
            raise

    def stop_playing(self) -> None:
        """Barge-in: drop everything queued by `play` now; those `play` calls return False."""
        while self._playbacks:
            self._playbacks.popleft().finish(False)

    @property
    def playing(self) -> bool:
        return bool(self._playbacks)

    def write_frame(self, pcm: bytes) -> None:
        """Live audio (a bridged leg): sent after any playback; a short queue, oldest dropped."""
        self._live.append(pcm[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0"))

    def _next_frame(self) -> tuple[bytes, bool]:
        """The frame for this 20 ms tick and whether it starts a talkspurt (marker bit)."""
        if self._playbacks:
            playback = self._playbacks[0]
            starting = not playback.started
            playback.started = True
            frame = playback.frames.popleft()
            if not playback.frames:
                self._playbacks.popleft()
                playback.finish(True)
            return frame, starting
        if self._live:
            return self._live.popleft(), False
        return SILENCE_FRAME, False

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            frame, starting = self._next_frame()
            if self.sending and self.remote is not None and self._transport is not None:
                packet = RtpPacket(
                    self.payload_type,
                    self._sequence,
                    self._timestamp,
                    self._ssrc,
                    encode_g711(frame, self.codec),
                    marker=self._marker or starting,
                )
                self._marker = False
                self._sequence = (self._sequence + 1) & 0xFFFF
                try:
                    data = packet.encode()
                    if self.srtp is not None:
                        data = self.srtp.protect(data)
                    self._transport.sendto(data, self.remote)
                    self.packets_sent += 1
                except (OSError, ValueError, SrtpError) as exc:
                    # An SDP address we cannot reach from our socket (the endpoint replaces
                    # one of the other IP family by the signalling host): drop the frame.
                    self._send_failures += 1
                    if self._send_failures == 1:
                        log.warning("RTP to %s failed: %s", self.remote, exc)
            self._timestamp = (self._timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
            self._fill_silence(loop.time())
            next_at += FRAME_SECONDS
            delay = next_at - loop.time()
            if delay < -0.2:  # the machine stalled: do not burst, start a new schedule
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    # --- receiving -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed or len(data) < 12:
            return
        if 200 <= data[1] <= 204:
            return  # RTCP multiplexed on the RTP port
        if self.remote is None or (addr[0], addr[1]) != self.remote:
            self._drop_foreign(addr)
            return
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpError:
                self.counters["srtp_rejected"] += 1  # forged, corrupted or replayed
                return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        self.packets_received += 1
        if self._remote_ssrc != packet.ssrc:
            self._remote_ssrc = packet.ssrc  # a new source (e.g. after a transfer): start afresh
            self._deliver(self._reorder.flush())
            self._reorder.reset()
        item: bytes | None
        if packet.payload_type == self.dtmf_payload_type:
            self._on_dtmf_packet(packet)
            item = None
            if self._last_frame_at is not None:  # a key press replaces audio, not silence
                self._last_frame_at = asyncio.get_running_loop().time()
        elif packet.payload_type == self.payload_type:
            item = decode_g711(packet.payload, self.codec)
            self._frame_bytes = len(item) or FRAME_BYTES
        elif packet.payload_type == COMFORT_NOISE_PT:
            item = None
        else:
            return
        self._deliver(self._reorder.push(packet.sequence, item))
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._reorder.waiting:
            self._flush_timer = asyncio.get_running_loop().call_later(
                REORDER_WAIT, self._flush_reorder
            )

    def _drop_foreign(self, addr: tuple[str, int]) -> None:
        """Injected or stray RTP (not from the negotiated address): never heard, counted."""
        self.foreign_packets += 1
        self.counters["rtp_foreign_dropped"] += 1
        if self.foreign_packets == 1:
            log.warning("RTP from %s dropped: not the negotiated %s", addr[0], self.remote)

    def _flush_reorder(self) -> None:
        self._flush_timer = None
        self._deliver(self._reorder.flush())

    def _deliver(self, items: list[object]) -> None:
        for item in items:
            if item is ReorderBuffer.LOST:
                self._partial += bytes(self._frame_bytes)
            elif isinstance(item, bytes):
                self._partial += item
            while len(self._partial) >= FRAME_BYTES:
                self._put_frame(bytes(self._partial[:FRAME_BYTES]))
                del self._partial[:FRAME_BYTES]

    def _fill_silence(self, now: float) -> None:
        """RTP stopped coming: hand on silence for the time it has been away."""
        if self._last_frame_at is None or self._reorder.waiting:
            return
        last = self._last_frame_at
        if now - last >= FILL_AFTER:
            count = int((now - last) / FRAME_SECONDS)
            for _ in range(count):
                self._put_frame(SILENCE_FRAME)
            self._last_frame_at = last + count * FRAME_SECONDS

    def _put_frame(self, frame: bytes) -> None:
        self._last_frame_at = asyncio.get_running_loop().time()
        if self.forward_to is not None:
            self.forward_to.write_frame(frame)
            return
        if self.audio.qsize() >= RECEIVE_QUEUE_FRAMES:
            self.audio.get_nowait()
        self.audio.put_nowait(frame)

    def _on_dtmf_packet(self, packet: RtpPacket) -> None:
        try:
            event = DtmfEvent.parse(packet.payload)
        except ValueError:
            return
        digit = event.digit
        if digit is None or packet.timestamp in self._dtmf_finished:
            return  # the repeated end packets of an event already reported
        if self._dtmf_pending is not None and self._dtmf_pending[0] != packet.timestamp:
            self._emit_pending_dtmf()  # the previous event's end packets were all lost
        if event.end:
            self._dtmf_pending = None
            self._dtmf_finished.append(packet.timestamp)
            self.on_dtmf(digit)
        else:
            self._dtmf_pending = (packet.timestamp, digit)
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        if self._dtmf_pending is not None:
            self._dtmf_timer = asyncio.get_running_loop().call_later(
                DTMF_LOST_END_WAIT, self._emit_pending_dtmf
            )

    def _emit_pending_dtmf(self) -> None:
        if self._dtmf_pending is not None:
            timestamp, digit = self._dtmf_pending
            self._dtmf_pending = None
            self._dtmf_finished.append(timestamp)
            self.on_dtmf(digit)


class _RtcpSink(asyncio.DatagramProtocol):
    """Binds the RTCP port (RTP port + 1) so peers' reports are not bounced; reads nothing."""


async def open_rtp_session(
    host: str,
    factory: Callable[[], RtpSession],
    port_range: tuple[int, int] | None = None,
) -> RtpSession:
    """Bind an RTP session on an even port with the odd port above it free for RTCP."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(64):
        if port_range:
            low, high = port_range
            port = low + 2 * secrets.randbelow(max((high - low) // 2, 1))
            port += port % 2
        else:
            port = 0
        try:
            transport, session = await loop.create_datagram_endpoint(
                factory, local_addr=(host, port), family=family
            )
        except OSError:
            continue
        bound = transport.get_extra_info("sockname")[1]
        if bound % 2:
            transport.close()
            continue
        try:
            rtcp, _ = await loop.create_datagram_endpoint(
                _RtcpSink, local_addr=(host, bound + 1), family=family
            )
        except OSError:
            transport.close()
            continue
        session._rtcp = rtcp
        return session
    raise OSError(f"no free RTP port pair on {host}")
