"""Audio formats shared by recognition, synthesis and telephony.

Everything inside Linli's voice path is 16-bit signed little-endian mono PCM ("linear PCM");
conversion to and from the telephone's G.711 happens only at the RTP edge. `audioop` is in the
standard library up to Python 3.12, which covers our pinned 3.10.
"""

from __future__ import annotations

import audioop
import io
import wave
from enum import Enum

SAMPLE_WIDTH = 2  # bytes per sample, 16-bit linear PCM
TELEPHONE_RATE = 8000
WIDEBAND_RATE = 16000


class Codec(str, Enum):
    """G.711 variants with their static RTP payload types (RFC 3551)."""

    PCMU = "PCMU"  # mu-law, payload type 0
    PCMA = "PCMA"  # A-law, payload type 8

    @property
    def payload_type(self) -> int:
        return 0 if self is Codec.PCMU else 8


def encode_g711(pcm: bytes, codec: Codec) -> bytes:
    """Linear PCM (8 kHz) -> G.711 bytes, one byte per sample."""
    if codec is Codec.PCMU:
        return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)
    return audioop.lin2alaw(pcm, SAMPLE_WIDTH)


def decode_g711(payload: bytes, codec: Codec) -> bytes:
    """G.711 bytes -> linear PCM (8 kHz)."""
    if codec is Codec.PCMU:
        return audioop.ulaw2lin(payload, SAMPLE_WIDTH)
    return audioop.alaw2lin(payload, SAMPLE_WIDTH)


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample linear PCM; stateless, so call it on whole utterances or long chunks."""
    if from_rate == to_rate:
        return pcm
    converted, _ = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, from_rate, to_rate, None)
    return converted


class StreamResampler:
    """`resample` for a stream of small blocks (20 ms from a sound card): the filter state
    carries over from block to block, so block edges do not click."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self._state: tuple | None = None  # audioop's own

    def __call__(self, pcm: bytes) -> bytes:
        if self.from_rate == self.to_rate:
            return pcm
        converted, self._state = audioop.ratecv(
            pcm, SAMPLE_WIDTH, 1, self.from_rate, self.to_rate, self._state
        )
        return converted


def rms(pcm: bytes) -> int:
    """Root-mean-square level of linear PCM (0 for silence; speech is typically > 300)."""
    return audioop.rms(pcm, SAMPLE_WIDTH) if pcm else 0


def read_wav(data: bytes) -> tuple[bytes, int]:
    """WAV bytes -> (mono 16-bit PCM, sample rate); stereo is mixed down."""
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getsampwidth() != SAMPLE_WIDTH:
            raise ValueError(f"expected 16-bit WAV, got {8 * wav.getsampwidth()}-bit")
        frames = wav.readframes(wav.getnframes())
        if wav.getnchannels() == 2:
            frames = audioop.tomono(frames, SAMPLE_WIDTH, 0.5, 0.5)
        elif wav.getnchannels() != 1:
            raise ValueError(f"expected mono or stereo WAV, got {wav.getnchannels()} channels")
        return frames, wav.getframerate()


def write_wav(pcm: bytes, rate: int) -> bytes:
    """Mono 16-bit PCM -> WAV bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def lowpass(pcm: bytes, rate: int, cutoff_hz: float, taps: int = 101) -> bytes:
    """Windowed-sinc FIR low-pass (Hamming, linear phase, same length), saturating to 16 bits."""
    import numpy as np  # only the synthesis path needs it; numpy comes with Rasa

    if not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    offsets = np.arange(taps) - (taps - 1) / 2
    kernel = np.sinc(2 * cutoff_hz / rate * offsets) * np.hamming(taps)
    kernel /= kernel.sum()
    filtered = np.convolve(samples, kernel, mode="same")
    return np.clip(np.rint(filtered), -32768, 32767).astype("<i2").tobytes()


def resample_antialiased(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """`resample`, low-passed first when going down in rate.

    `audioop.ratecv` interpolates without filtering: energy above the new Nyquist frequency
    folds back into the band (a 5 kHz tone comes out of 22.05 → 8 kHz as a 3 kHz tone at 85 %
    of its level). Synthesised fricatives reach well above 4 kHz, so telephone audio made with
    `resample` alone hisses; cutting at 0.45 × the new rate first keeps the band clean.
    """
    if to_rate < from_rate:
        pcm = lowpass(pcm, from_rate, 0.45 * to_rate)
    return resample(pcm, from_rate, to_rate)
