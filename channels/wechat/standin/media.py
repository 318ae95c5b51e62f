"""Media as WeChat hands it out: voice as AMR-NB (what phones record) or, when the message
says Format speex, Speex wideband in Ogg; images as JPEG.

sox resamples the WAV to 8 kHz mono; the frames are encoded with libopencore-amrnb (which
ffmpeg and sox link) with DTX off. sox's own AMR writer turns DTX on, and ffmpeg's decoder
does not implement the SID frames that makes, so a stream from sox decodes short."""

from __future__ import annotations

import asyncio
import ctypes
from functools import lru_cache
from pathlib import Path

AMR_MAGIC = b"#!AMR\n"
MODE_12_2 = 7  # MR122, 12.2 kbit/s: 32 bytes per 20 ms frame
FRAME_SAMPLES = 160
SAMPLE_JPEG = Path(__file__).with_name("sample.jpg")


@lru_cache(maxsize=1)
def _amrnb() -> ctypes.CDLL:
    lib = ctypes.CDLL("libopencore-amrnb.so.0")
    lib.Encoder_Interface_init.restype = ctypes.c_void_p
    lib.Encoder_Interface_init.argtypes = [ctypes.c_int]
    lib.Encoder_Interface_Encode.restype = ctypes.c_int
    lib.Encoder_Interface_Encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_short),
        ctypes.POINTER(ctypes.c_ubyte),
        ctypes.c_int,
    ]
    lib.Encoder_Interface_exit.argtypes = [ctypes.c_void_p]
    return lib


def encode_amr(pcm: bytes) -> bytes:
    """8 kHz mono signed 16-bit little-endian PCM → an AMR-NB file (RFC 4867 storage format)."""
    lib = _amrnb()
    state = lib.Encoder_Interface_init(0)  # 0: no DTX
    out = bytearray(AMR_MAGIC)
    frame = (ctypes.c_ubyte * 64)()
    step = FRAME_SAMPLES * 2
    try:
        for start in range(0, len(pcm), step):
            chunk = pcm[start : start + step].ljust(step, b"\0")
            samples = (ctypes.c_short * FRAME_SAMPLES).from_buffer_copy(chunk)
            size = lib.Encoder_Interface_Encode(state, MODE_12_2, samples, frame, 0)
            out += bytes(frame[:size])
    finally:
        lib.Encoder_Interface_exit(state)
    return bytes(out)


async def wav_to_amr(path: Path) -> bytes:
    """Any audio file sox reads → AMR-NB bytes."""
    proc = await asyncio.create_subprocess_exec(
        "sox", str(path), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
        "-L", "-t", "raw", "-",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    pcm, err = await proc.communicate()
    if proc.returncode != 0:
        raise ValueError(f"sox cannot read {path.name}: {err.decode(errors='replace').strip()}")
    return await asyncio.to_thread(encode_amr, pcm)


async def wav_to_speex(path: Path) -> bytes:
    """Any audio file ffmpeg reads → Speex wideband (16 kHz) in Ogg, as .spx files are."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path),
        "-ac", "1", "-ar", "16000", "-c:a", "libspeex", "-f", "ogg", "pipe:1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    spx, err = await proc.communicate()
    if proc.returncode != 0 or not spx:
        raise ValueError(f"ffmpeg cannot read {path.name}: {err.decode(errors='replace').strip()}")
    return spx


def samples(folder: Path) -> list[dict[str, str]]:
    """The sample recordings with their transcripts (transcripts.tsv: file, transcript)."""
    table = folder / "transcripts.tsv"
    if not table.is_file():
        return []
    found = []
    for line in table.read_text(encoding="utf-8").splitlines()[1:]:
        name, _, transcript = line.partition("\t")
        if name and (folder / name).is_file():
            found.append({"file": name, "transcript": transcript.strip()})
    return found
