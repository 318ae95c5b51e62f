"""Audio formats shared by recognition, synthesis and telephony.

Everything inside Linli's voice path is 16-bit signed little-endian mono PCM ("linear PCM");
conversion to and from the telephone's G.711 happens only at the RTP edge. `audioop` (standard
library up to Python 3.12, which covers our pinned 3.10) does G.711, levels and WAV channels;
resampling is soxr's (libsoxr): `audioop.ratecv` interpolates without a filter, so a 5 kHz
tone came out of 16 → 8 kHz as a full-level 3 kHz one.
"""

from __future__ import annotations

import audioop
import functools
import io
import wave
from enum import Enum

import numpy as np
import soxr

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


def resample(pcm: bytes, from_rate: int, to_rate: int, quality: str = "HQ") -> bytes:
    """Resample linear PCM with soxr, band-limited: nothing above the lower rate's Nyquist
    frequency folds back into the band (a 5 kHz tone does not become a 3 kHz one at 8 kHz) and
    nothing is mirrored above it. For whole utterances; a live stream of small blocks needs
    `StreamResampler`. `quality` is soxr's (QQ, LQ, MQ, HQ, VHQ)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    return soxr.resample(samples, from_rate, to_rate, quality).astype("<i2").tobytes()


# The name callers used when `resample` (audioop.ratecv) aliased and this one low-passed first.
resample_antialiased = resample


class StreamResampler:
    """`resample` for a live stream of blocks (20 ms from a sound card or the line): soxr's
    filter state carries over from block to block, so block edges neither click nor alias.

    soxr hands its output out in bursts (every 40-60 ms at LQ, 100-120 ms at HQ); a phone
    line needs every 20 ms its 20 ms. So each call returns exactly its share of samples
    (len × to/from, fractions carried over) and the stream starts with `latency` samples of
    silence, enough that soxr's next burst always comes before the buffer runs dry. LQ by
    default: 61 ms of delay instead of HQ's 115 ms, at -0.3 dB at 3 kHz and -8 dB at 3.4 kHz,
    the edge of the telephone band.
    """

    def __init__(self, from_rate: int, to_rate: int, quality: str = "LQ") -> None:
        self.from_rate, self.to_rate, self.quality = from_rate, to_rate, quality
        self.latency: int | None = None  # output samples of silence in front of the stream
        self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality=quality)
        self._pending = np.zeros(0, dtype=np.int16)
        self._fraction = 0.0  # output owed but not yet whole

    def __call__(self, pcm: bytes) -> bytes:
        if self.from_rate == self.to_rate or not pcm:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        if self.latency is None:  # the first block says how big blocks are
            self.latency = _burst_slack(self.from_rate, self.to_rate, self.quality, samples.size)
            self._pending = np.zeros(self.latency, dtype=np.int16)
        wanted = samples.size * self.to_rate / self.from_rate + self._fraction
        count = int(wanted)
        self._fraction = wanted - count
        self._pending = np.concatenate([self._pending, self._stream.resample_chunk(samples)])
        if self._pending.size < count:  # blocks changed size: a little more delay from now on
            short = count - self._pending.size
            self._pending = np.concatenate([np.zeros(short, dtype=np.int16), self._pending])
            self.latency += short
        out, self._pending = self._pending[:count], self._pending[count:]
        return out.astype("<i2").tobytes()


@functools.lru_cache(maxsize=32)
def _burst_slack(from_rate: int, to_rate: int, quality: str, block: int) -> int:
    """How far soxr's output lags behind the samples owed, at most, for blocks of `block`
    samples (its output schedule depends on the counts alone, so silence measures it)."""
    stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality=quality)
    silence = np.zeros(block, dtype=np.int16)
    owed = produced = slack = 0.0
    for _ in range(max(1, 2 * from_rate // block)):  # two seconds: several bursts
        owed += block * to_rate / from_rate
        produced += stream.resample_chunk(silence).size
        slack = max(slack, int(owed) - produced)
    return int(slack)


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
