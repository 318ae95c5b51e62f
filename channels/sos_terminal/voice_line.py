"""The terminal's telephone: a short press calls the hotline; the hotline's callback after an
SOS is answered by the terminal itself (the resident may be on the floor, out of reach of the
button).

The terminal is a SIP phone (voice/sip) with one number to call. It calls as
terminal-<device id> (workorders.contract TERMINAL_SIP_PREFIX), so the hotline knows the
resident without asking, and the orders the conversation makes are the terminal's. The same
user, at the address the heartbeat reports (`contact`), is where the hotline calls back. It
answers only calls from the hotline's address: a phone that answers by itself is a microphone
in someone's home. The hotline believes no `terminal-…` caller on its word: it challenges
with SIP digest, and the line answers with the password derived from the device's secret.
On networks Linli does not control the hotline URI says `;transport=tls`: SIP goes over TLS
(the hotline's certificate checked against `ca_file`) and the audio is SRTP.

Audio: the microphone and speaker are opened for a call and closed after it (privacy), at 16 kHz
(what USB sound cards take), 20 ms blocks, converted to and from the telephone's 8 kHz by soxr
(voice/audio.py `StreamResampler`: band-limited, 61 ms of delay each way). The device is assumed
to cancel its own echo (speakerphone chips do); without that the hotline would hear its own
prompts as the resident talking over them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from voice.audio import SAMPLE_WIDTH, TELEPHONE_RATE, WIDEBAND_RATE, StreamResampler
from voice.sip import Call, CallState, SipEndpoint
from voice.sip.digest import Credentials
from voice.sip.stream import client_context
from workorders.contract import TERMINAL_SIP_PREFIX
from workorders.signing import sip_password

log = logging.getLogger(__name__)

FRAME_SAMPLES = TELEPHONE_RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH

# What `on_state` hears: dialing → talking → ended; unreachable when the hotline did not answer;
# answered when the hotline called (a callback), then talking → ended.
DIALING, ANSWERED, TALKING, ENDED, UNREACHABLE = (
    "dialing",
    "answered",
    "talking",
    "ended",
    "unreachable",
)


class AudioDevice(Protocol):
    """The terminal's microphone and speaker for one call (opened for it, closed after)."""

    def open(self) -> None: ...

    def read(self) -> bytes | None:
        """The next 20 ms of the microphone as 8 kHz PCM (blocks until there); None once closed."""
        ...

    def write(self, pcm: bytes) -> None:
        """20 ms of 8 kHz PCM to the speaker (blocks while the device's buffer is full)."""
        ...

    def close(self) -> None: ...


class SoundDeviceAudio:
    """PortAudio through sounddevice: separate input and output streams, so the microphone
    thread and the speaker thread never share one."""

    def __init__(self, rate: int = WIDEBAND_RATE) -> None:
        self.rate = rate
        self._block = rate // 50
        self._closed = threading.Event()
        self._to_line = StreamResampler(rate, TELEPHONE_RATE)
        self._to_speaker = StreamResampler(TELEPHONE_RATE, rate)
        self._input: object | None = None
        self._output: object | None = None

    def open(self) -> None:
        import sounddevice as sd

        kwargs = {"samplerate": self.rate, "blocksize": self._block, "channels": 1}
        self._input = sd.RawInputStream(dtype="int16", **kwargs)
        self._output = sd.RawOutputStream(dtype="int16", **kwargs)
        self._input.start()  # type: ignore[attr-defined]
        self._output.start()  # type: ignore[attr-defined]

    def read(self) -> bytes | None:
        if self._closed.is_set() or self._input is None:
            return None
        data, _overflowed = self._input.read(self._block)  # type: ignore[attr-defined]
        return self._to_line(bytes(data))

    def write(self, pcm: bytes) -> None:
        if not self._closed.is_set() and self._output is not None:
            self._output.write(self._to_speaker(pcm))  # type: ignore[attr-defined]

    def close(self) -> None:
        self._closed.set()
        for stream in (self._input, self._output):
            if stream is not None:
                stream.stop()  # type: ignore[attr-defined]
                stream.close()  # type: ignore[attr-defined]


class RecordedAudio:
    """A terminal without a sound card (the simulator on a server; tests): the microphone plays
    what `say` was given, then silence, in real time; the speaker keeps what it got."""

    def __init__(self) -> None:
        self.heard = bytearray()  # what the speaker played, 8 kHz PCM
        self._speech = bytearray()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._next_at = 0.0

    def say(self, pcm: bytes) -> None:
        """8 kHz PCM to speak into the microphone next (after what is still queued)."""
        with self._lock:
            self._speech += pcm

    @property
    def saying(self) -> bool:
        with self._lock:
            return bool(self._speech)

    def open(self) -> None:
        self._closed.clear()
        self._next_at = time.monotonic()

    def read(self) -> bytes | None:
        self._next_at += FRAME_SAMPLES / TELEPHONE_RATE
        if self._closed.wait(max(0.0, self._next_at - time.monotonic())):
            return None
        with self._lock:
            frame = bytes(self._speech[:FRAME_BYTES])
            del self._speech[:FRAME_BYTES]
        return frame.ljust(FRAME_BYTES, b"\0")

    def write(self, pcm: bytes) -> None:
        self.heard += pcm

    def close(self) -> None:
        self._closed.set()


def has_sound_card() -> bool:
    """Whether PortAudio sees a microphone and a speaker (a simulator on a server has none)."""
    try:
        import sounddevice as sd

        sd.check_input_settings(samplerate=WIDEBAND_RATE, channels=1, dtype="int16")
        sd.check_output_settings(samplerate=WIDEBAND_RATE, channels=1, dtype="int16")
    except Exception:  # no PortAudio library, no device, or a device that cannot do 16 kHz
        return False
    return True


@dataclass(frozen=True)
class VoiceLineConfig:
    hotline: str  # the hotline's SIP URI, e.g. sip:hotline@10.0.0.5:5070
    sip_host: str = "0.0.0.0"
    sip_port: int = 5062
    advertised_host: str | None = None  # the address the hotline reaches us at (NAT, 0.0.0.0)
    dial_timeout: float = 30.0
    ca_file: Path | None = None  # verifies the hotline's TLS certificate (else system CAs)

    @property
    def encrypted(self) -> bool:
        """`sip:…;transport=tls`: SIP over TLS and SRTP media."""
        return ";transport=tls" in self.hotline.lower()

    @property
    def hotline_host(self) -> str:
        host = urlsplit(self.hotline.replace("sip:", "sip://", 1)).hostname
        if not host:
            raise ValueError(f"not a SIP URI with a host: {self.hotline!r}")
        return host


class VoiceLine:
    """One call at a time, on its own event loop thread; `talk()` is the button's hook."""

    def __init__(
        self,
        config: VoiceLineConfig,
        device_id: str,
        audio: Callable[[], AudioDevice],
        on_state: Callable[[str], None] | None = None,
        *,
        secret: str | None = None,
    ) -> None:
        self.config = config
        self.user = f"{TERMINAL_SIP_PREFIX}{device_id}"
        # The hotline challenges every terminal-… caller: the SIP password is derived from the
        # provisioned secret, so the secret itself never goes into SIP.
        self._credentials = (
            Credentials(self.user, sip_password(secret)) if secret is not None else None
        )
        self._audio = audio
        self.on_state = on_state
        self.states: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sos-voice", daemon=True
        )
        self._endpoint: SipEndpoint | None = None
        self._call: Call | None = None
        self._busy = False  # dialing or in a call

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._run(self._start_endpoint()).result(10)

    async def _start_endpoint(self) -> None:
        host = self.config.hotline_host
        try:  # a name (pbx.local) is trusted as the addresses it stands for
            found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            trusted = {str(info[4][0]) for info in found}
        except OSError:
            trusted = set()  # unresolvable: no call is answered until it resolves
        self._endpoint = SipEndpoint(
            self._answered,
            host=self.config.sip_host,
            port=self.config.sip_port,
            advertised_host=self.config.advertised_host,
            user=self.user,
            max_calls=1,  # a second call while one is up gets 486 Busy
            trusted_peers=trusted,
            credentials=self._credentials,
            tls_client=client_context(self.config.ca_file) if self.config.encrypted else None,
            user_agent="Linli-SOS-Terminal/1.0",
        )
        await self._endpoint.start()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        if self._endpoint is not None:
            try:
                self._run(self._endpoint.close()).result(10)
            except Exception:
                log.exception("closing the SIP endpoint failed")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def contact(self) -> str | None:
        """Where the hotline calls us back (the heartbeat reports it)."""
        if self._endpoint is None:
            return None
        host = self.config.advertised_host or self._endpoint.local_host(self.config.hotline_host)
        if ":" in host:
            host = f"[{host}]"
        return f"sip:{self.user}@{host}:{self._endpoint.port}"

    @property
    def in_call(self) -> bool:
        return self._busy

    # --- the button ----------------------------------------------------------------------------

    def talk(self) -> None:
        """A short press: call the hotline, or end the call that is going on."""
        if self._call is not None:
            self._run(self._call.hangup())
        elif not self._busy:
            self._busy = True  # set here, not in the loop: two quick presses dial once
            self._run(self._dial())

    def hang_up(self) -> concurrent.futures.Future[None] | None:
        call = self._call
        return self._run(call.hangup()) if call is not None else None

    def _run(self, coro: object) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    def _state(self, state: str) -> None:
        self.states.append(state)
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                log.exception("voice state hook failed")

    # --- calls -----------------------------------------------------------------------------

    async def _dial(self) -> None:
        assert self._endpoint is not None
        self._state(DIALING)
        try:
            call = await self._endpoint.dial(self.config.hotline, timeout=self.config.dial_timeout)
        except Exception:
            log.exception("calling the hotline failed")
            call = None
        if call is None:
            self._busy = False
            self._state(UNREACHABLE)
            return
        await self._converse(call)

    async def _answered(self, call: Call) -> None:
        """The hotline calls (a callback after an SOS): we are already off the hook."""
        self._busy = True
        self._state(ANSWERED)
        await self._converse(call)

    async def _converse(self, call: Call) -> None:
        """Microphone to the line, line to the speaker, until either side hangs up."""
        self._call = call
        loop = asyncio.get_running_loop()
        audio = self._audio()
        speaker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sos-speaker")
        microphone: threading.Thread | None = None
        try:
            await asyncio.to_thread(audio.open)
            self._state(TALKING)

            def listen() -> None:
                while call.state is not CallState.ENDED and (frame := audio.read()) is not None:
                    loop.call_soon_threadsafe(call.send_frame, frame)

            microphone = threading.Thread(target=listen, name="sos-microphone", daemon=True)
            microphone.start()
            async for frame in call:
                await loop.run_in_executor(speaker, audio.write, frame)
        except Exception:
            log.exception("the voice call failed")
        finally:
            await call.hangup()
            await asyncio.to_thread(audio.close)
            if microphone is not None:
                await asyncio.to_thread(microphone.join, 2)
            speaker.shutdown(wait=False)
            self._call = None
            self._busy = False
            self._state(ENDED)
