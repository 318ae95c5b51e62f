"""Sounds of the terminal: tones made as PCM here, played by a sink; speech by a hook.

Everything is 16-bit signed little-endian mono PCM at 16 kHz. The confirmation tone is a
rising four-note chime, unlike anything else the device plays, so a resident who cannot read
the light still hears that help is coming. Speech goes to a `Speak` hook: the TTS engine lives
in voice/ and is plugged in by whoever runs the device; the default only logs the text.
"""

from __future__ import annotations

import array
import logging
import math
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

RATE = 16_000
Speak = Callable[[str], None]


def tone(notes: list[tuple[float, float]], *, rate: int = RATE, volume: float = 0.5) -> bytes:
    """PCM for (frequency Hz, seconds) notes; 0 Hz is a rest. 5 ms fades avoid clicks."""
    samples = array.array("h")
    fade = int(rate * 0.005)
    for freq, seconds in notes:
        count = int(rate * seconds)
        for i in range(count):
            if freq <= 0:
                samples.append(0)
                continue
            envelope = min(1.0, i / fade, (count - 1 - i) / fade) if fade else 1.0
            value = volume * envelope * math.sin(2 * math.pi * freq * i / rate)
            samples.append(int(value * 32767))
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


# A short tick: the press was registered.
PRESS_BEEP = tone([(880.0, 0.08)])
# Rising C6-E6-G6-C7: the server confirmed, help is coming.
CONFIRM_TONE = tone([(1046.5, 0.12), (1318.5, 0.12), (1568.0, 0.12), (2093.0, 0.30)])
# Falling, low: something did not work (not delivered after a while, self-test failed).
ERROR_TONE = tone([(440.0, 0.25), (0.0, 0.05), (330.0, 0.40)])

TONE_NAMES = {PRESS_BEEP: "按键提示音", CONFIRM_TONE: "确认提示音", ERROR_TONE: "故障提示音"}


class AudioSink(Protocol):
    def play(self, pcm: bytes, rate: int) -> None:
        """Play PCM to the end (blocking is fine: a worker thread calls it)."""


class SoundDeviceSink:
    """The speaker, through PortAudio (sounddevice); imported lazily so tests need no device."""

    def play(self, pcm: bytes, rate: int) -> None:
        import numpy as np
        import sounddevice as sd

        sd.play(np.frombuffer(pcm, dtype="<i2"), rate, blocking=True)


@dataclass
class RecordingSink:
    """Keeps what was played (tests, the simulator)."""

    played: list[tuple[bytes, int]] = field(default_factory=list)
    echo: bool = False

    def play(self, pcm: bytes, rate: int) -> None:
        self.played.append((pcm, rate))
        if self.echo:
            print(f"  ♪ {TONE_NAMES.get(pcm, '提示音')}", flush=True)


def log_speech(text: str) -> None:
    log.info("speak: %s", text)


class AudioOut:
    """One worker thread plays tones and speech in order, so callbacks never block on audio
    and a spoken sentence never talks over a tone."""

    def __init__(self, sink: AudioSink, speak: Speak | None = None) -> None:
        self.sink = sink
        self.speak = speak or log_speech
        self._items: queue.Queue[tuple[str, bytes | str | threading.Event] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sos-audio", daemon=True)
        self._thread.start()

    def tone(self, pcm: bytes) -> None:
        self._items.put(("tone", pcm))

    def say(self, text: str) -> None:
        self._items.put(("say", text))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far was played (tests, shutdown)."""
        done = threading.Event()
        self._items.put(("mark", done))
        return done.wait(timeout)

    def close(self) -> None:
        self._items.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while (item := self._items.get()) is not None:
            kind, payload = item
            try:
                if isinstance(payload, threading.Event):
                    payload.set()
                elif kind == "tone" and isinstance(payload, bytes):
                    self.sink.play(payload, RATE)
                elif kind == "say" and isinstance(payload, str):
                    self.speak(payload)
            except Exception:  # a broken speaker must not stop the terminal
                log.exception("audio output failed")
