"""A WeChat voice message (AMR or Speex) to text, when WeChat sent no `Recognition`.

ffmpeg decodes it to 16 kHz mono PCM (in memory; no audio is written anywhere) and Linli's own
recogniser hears it in a process of its own (`python -m voice.transcribe`), so a crash or the
engine's memory never touches the gateway. A process per message costs the model's loading
time (about a second); such messages are rare, since WeChat usually fills `Recognition`, and
their answer goes as a customer-service message when it comes after the passive reply's wait.
"""

from __future__ import annotations

import asyncio
import json
import sys

RATE = 16_000
MAX_AUDIO_BYTES = 2 * 1024 * 1024  # WeChat's voice messages last 60 s at most (~100 KB of AMR)
NO_MODEL = 3  # voice.transcribe's exit code
DECODE = [
    *("ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0"),
    *("-f", "s16le", "-acodec", "pcm_s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"),
]


class TranscriptionError(Exception):
    """The recording could not be decoded or recognised; the resident is asked to repeat."""


class Transcriber:
    def __init__(self, python: str = sys.executable, timeout: float = 60.0) -> None:
        self.python, self.timeout = python, timeout

    async def transcribe(self, audio: bytes, fmt: str) -> str:
        if not audio or len(audio) > MAX_AUDIO_BYTES:
            raise TranscriptionError(f"{len(audio)} bytes of {fmt}")
        pcm = await self._run(DECODE, audio, "ffmpeg")
        if not pcm:
            raise TranscriptionError(f"ffmpeg found no audio in the {fmt}")
        out = await self._run([self.python, "-m", "voice.transcribe"], pcm, "recogniser")
        return str(json.loads(out)["text"])

    async def _run(self, argv: list[str], data: bytes, what: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), self.timeout)
        except asyncio.TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise TranscriptionError(f"{what} took over {self.timeout:.0f} s") from exc
        if proc.returncode == NO_MODEL and what == "recogniser":
            raise TranscriptionError("no speech model here (VOSK_MODEL_PATH)")
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise TranscriptionError(f"{what} failed ({proc.returncode}): {tail[0]}")
        return out
