"""Measure the trained Rasa NLU model on the held-out sets, next to a simple baseline.

Loads the model (default models/current.tar.gz, made by `make model`; --model PATH for another),
parses every utterance of eval/data/heldout.yml and eval/data/heldout_asr.yml, and prints per
intent precision/recall/F1, macro and weighted averages, accuracy, nlu_fallback counts (wrong,
but counted separately), the most frequent confusions with examples, and entity F1 per type
(span level: exact type and span; value level: after canonicalisation, for entity types whose
gold annotations carry a value different from the text). In the same run it trains a character
1-3-gram TF-IDF + logistic regression baseline on data/nlu/*.yml and reports it alongside.
The figures go to var/eval/nlu.json. It measures and does not assert: exit 0 unless the model
is missing (exit 1).

Usage (from the repo root): .venv/bin/python eval/nlu_eval.py [--model PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
import time
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "current.tar.gz"
DEFAULT_OUT = ROOT / "var" / "eval" / "nlu.json"
TRAIN_DIR = ROOT / "data" / "nlu"
HELDOUT_SETS: dict[str, Path] = {
    "heldout": ROOT / "eval" / "data" / "heldout.yml",
    "heldout_asr": ROOT / "eval" / "data" / "heldout_asr.yml",
}
# Goal: Rasa's intent accuracy on each held-out set (issue 12: 0.95 typed and recognised alike).
GOALS: dict[str, float] = {"heldout": 0.95, "heldout_asr": 0.95}
FALLBACK = "nlu_fallback"
TOP_CONFUSIONS = 12
EXAMPLES_PER_CONFUSION = 3


@dataclass(frozen=True)
class Entity:
    """An entity span; value is the canonical value (the text itself when none is given)."""

    type: str
    start: int
    end: int
    text: str
    value: str
    explicit_value: bool


@dataclass(frozen=True)
class Example:
    """A gold utterance."""

    text: str
    intent: str
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class Prediction:
    """What a model said about one utterance."""

    intent: str
    confidence: float
    entities: tuple[Entity, ...] = ()


# ---------------------------------------------------------------- loading


def quiet_libraries() -> None:
    """Keep TensorFlow, Rasa and structlog from flooding the report."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("rasa", "tensorflow", "absl", "jieba", "matplotlib", "sanic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_examples(path: Path) -> list[Example]:
    """Read a Rasa NLU YAML file (or folder) into gold examples."""
    from rasa.shared.nlu.training_data.loading import load_data

    examples = []
    for message in load_data(str(path)).training_examples:
        text = message.get("text") or ""
        entities = []
        for e in message.get("entities") or []:
            span = text[e["start"] : e["end"]]
            value = str(e.get("value", span))
            entities.append(Entity(e["entity"], e["start"], e["end"], span, value, value != span))
        examples.append(Example(text, message.get("intent") or "", tuple(entities)))
    return examples


def shown(path: Path) -> str:
    """A path relative to the repo root when it is inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path.resolve())


def sha256(path: Path) -> str:
    """Hex digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- models


async def rasa_predict(model: Path, texts: Sequence[str]) -> tuple[list[Prediction], float]:
    """Parse every text with the Rasa agent; returns predictions and mean ms per parse."""
    from rasa.core.agent import Agent

    try:
        from rasa.utils.log_utils import configure_structlog

        configure_structlog(logging.ERROR)
    except ImportError:  # older Rasa: no structlog
        pass
    try:
        import jieba

        jieba.setLogLevel(logging.ERROR)  # jieba logs its dictionary loading at DEBUG level
    except ImportError:
        pass
    agent = Agent.load(str(model))
    predictions = []
    started = time.perf_counter()
    for text in texts:
        parsed: dict[str, Any] = await agent.parse_message(text)
        intent = parsed.get("intent") or {}
        # Several extractors may report the same span: keep one per (type, span), preferring
        # a canonicalised one (value differs from the text).
        by_span: dict[tuple[str, int, int], Entity] = {}
        for e in parsed.get("entities") or []:
            if e.get("entity") is None or e.get("start") is None or e.get("end") is None:
                continue
            span = text[e["start"] : e["end"]]
            value = e.get("value", span)
            value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            entity = Entity(e["entity"], e["start"], e["end"], span, value, value != span)
            key = (entity.type, entity.start, entity.end)
            if key not in by_span or (entity.explicit_value and not by_span[key].explicit_value):
                by_span[key] = entity
        predictions.append(
            Prediction(
                intent.get("name") or "",
                float(intent.get("confidence") or 0.0),
                tuple(by_span.values()),
            )
        )
    elapsed_ms = (time.perf_counter() - started) * 1000 / max(len(texts), 1)
    return predictions, elapsed_ms


def baseline_normalise(text: str) -> str:
    """NFKC, lower case, without punctuation and whitespace (speech output has none)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZSC")


def train_baseline(train: Sequence[Example]) -> Any:
    """Character 1-3-gram TF-IDF + logistic regression on the training intents."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(
        TfidfVectorizer(
            analyzer="char", ngram_range=(1, 3), preprocessor=baseline_normalise, sublinear_tf=True
        ),
        LogisticRegression(C=10.0, max_iter=5000),
    )
    pipeline.fit([e.text for e in train], [e.intent for e in train])
    return pipeline


def baseline_predict(pipeline: Any, texts: Sequence[str]) -> list[Prediction]:
    """Intent predictions of the baseline (it extracts no entities)."""
    probabilities = pipeline.predict_proba(list(texts))
    classes = pipeline.classes_
    return [Prediction(str(classes[row.argmax()]), float(row.max())) for row in probabilities]


# ---------------------------------------------------------------- metrics


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def intent_metrics(gold: Sequence[Example], pred: Sequence[Prediction]) -> dict[str, Any]:
    """Per-intent P/R/F1 over the gold intents, averages, accuracy, fallbacks, confusions."""
    labels = sorted({g.intent for g in gold})
    per_intent = {}
    for label in labels:
        tp = sum(
            1 for g, p in zip(gold, pred, strict=True) if g.intent == label and p.intent == label
        )
        fp = sum(
            1 for g, p in zip(gold, pred, strict=True) if g.intent != label and p.intent == label
        )
        fn = sum(
            1 for g, p in zip(gold, pred, strict=True) if g.intent == label and p.intent != label
        )
        per_intent[label] = {**prf(tp, fp, fn), "support": tp + fn}
    total = len(gold)
    support = sum(m["support"] for m in per_intent.values())

    def average(weighted: bool) -> dict[str, float]:
        out = {}
        for key in ("precision", "recall", "f1"):
            if weighted:
                out[key] = sum(m[key] * m["support"] for m in per_intent.values()) / max(support, 1)
            else:
                out[key] = sum(m[key] for m in per_intent.values()) / max(len(per_intent), 1)
        return out

    correct = sum(1 for g, p in zip(gold, pred, strict=True) if g.intent == p.intent)
    fallback = [i for i, p in enumerate(pred) if p.intent == FALLBACK]
    answered = total - len(fallback)
    correct_answered = sum(
        1 for g, p in zip(gold, pred, strict=True) if p.intent != FALLBACK and g.intent == p.intent
    )
    pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g, p in zip(gold, pred, strict=True):
        if g.intent != p.intent:
            pairs[(g.intent, p.intent)].append(g.text)
    confusions = [
        {"gold": a, "predicted": b, "count": len(texts), "examples": texts[:EXAMPLES_PER_CONFUSION]}
        for (a, b), texts in sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    fallback_by_intent = Counter(gold[i].intent for i in fallback)
    return {
        "n": total,
        "accuracy": correct / max(total, 1),
        "macro": average(weighted=False),
        "weighted": average(weighted=True),
        "per_intent": per_intent,
        "fallback": {
            "count": len(fallback),
            "rate": len(fallback) / max(total, 1),
            "by_gold_intent": dict(fallback_by_intent.most_common()),
            "accuracy_when_not_fallback": correct_answered / answered if answered else 0.0,
        },
        "confusions": confusions,
        "errors": [
            {"text": g.text, "gold": g.intent, "predicted": p.intent, "confidence": p.confidence}
            for g, p in zip(gold, pred, strict=True)
            if g.intent != p.intent
        ],
    }


def match_count(gold: list[Entity], pred: list[Entity], value_level: bool) -> int:
    """Greedy one-to-one matches between gold and predicted entities of one utterance.

    Span level: same type, start and end. Value level: same type and the predicted value equals
    the gold value; a gold entity without an explicit value also accepts a prediction with the
    same type and span text (whatever value the canonicaliser gave it).
    """
    used = [False] * len(pred)
    matches = 0
    for g in gold:
        for j, p in enumerate(pred):
            if used[j] or p.type != g.type:
                continue
            if value_level:
                ok = p.value == g.value or (not g.explicit_value and p.text == g.text)
            else:
                ok = (p.start, p.end) == (g.start, g.end)
            if ok:
                used[j] = True
                matches += 1
                break
    return matches


def entity_metrics(
    gold: Sequence[Example], pred: Sequence[Prediction], value_level: bool, types: Iterable[str]
) -> dict[str, Any]:
    """Per entity type (and micro over all of them) P/R/F1 with gold and predicted counts."""
    types = sorted(set(types))
    counts = {t: {"tp": 0, "gold": 0, "predicted": 0} for t in types}
    for g, p in zip(gold, pred, strict=True):
        for t in types:
            ge = [e for e in g.entities if e.type == t]
            pe = [e for e in p.entities if e.type == t]
            counts[t]["tp"] += match_count(ge, pe, value_level)
            counts[t]["gold"] += len(ge)
            counts[t]["predicted"] += len(pe)
    result: dict[str, Any] = {}
    for t, c in counts.items():
        result[t] = {**prf(c["tp"], c["predicted"] - c["tp"], c["gold"] - c["tp"]), **c}
    tp = sum(c["tp"] for c in counts.values())
    n_gold = sum(c["gold"] for c in counts.values())
    n_pred = sum(c["predicted"] for c in counts.values())
    result["(micro)"] = {**prf(tp, n_pred - tp, n_gold - tp), "tp": tp, "gold": n_gold,
                         "predicted": n_pred}  # fmt: skip
    return result


def entity_errors(
    gold: Sequence[Example], pred: Sequence[Prediction], types: set[str]
) -> list[dict[str, Any]]:
    """Utterances whose predicted entity spans differ from the gold ones (span level)."""
    errors = []
    for g, p in zip(gold, pred, strict=True):
        gold_spans = {(e.type, e.start, e.end): e.text for e in g.entities}
        pred_spans = {(e.type, e.start, e.end): e.text for e in p.entities if e.type in types}
        missing = [f"{k[0]}:{v}" for k, v in gold_spans.items() if k not in pred_spans]
        spurious = [f"{k[0]}:{v}" for k, v in pred_spans.items() if k not in gold_spans]
        if missing or spurious:
            errors.append({"text": g.text, "missing": missing, "spurious": spurious})
    return errors


# ---------------------------------------------------------------- printing


def print_intents(m: dict[str, Any]) -> None:
    """Per-intent table, averages, accuracy and fallbacks."""
    print(f"  {'intent':<16} {'prec':>6} {'rec':>6} {'f1':>6} {'support':>8}")
    for label, r in m["per_intent"].items():
        flag = "  <- weak" if r["f1"] < 0.85 else ""
        print(
            f"  {label:<16} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f}"
            f" {r['support']:8d}{flag}"
        )
    for name in ("macro", "weighted"):
        a = m[name]
        print(f"  {name + ' avg':<16} {a['precision']:6.3f} {a['recall']:6.3f} {a['f1']:6.3f}")
    fb = m["fallback"]
    print(
        f"  accuracy {m['accuracy']:.3f} ({m['n']} utterances); nlu_fallback {fb['count']}"
        f" ({fb['rate']:.1%}), accuracy when not falling back"
        f" {fb['accuracy_when_not_fallback']:.3f}"
    )
    if fb["by_gold_intent"]:
        print(
            "  fallbacks by gold intent: "
            + ", ".join(f"{k} {v}" for k, v in fb["by_gold_intent"].items())
        )


def print_confusions(m: dict[str, Any]) -> None:
    """Top confused (gold -> predicted) pairs with example utterances."""
    if not m["confusions"]:
        print("  no confusions")
        return
    for c in m["confusions"][:TOP_CONFUSIONS]:
        examples = " | ".join(c["examples"])
        print(f"  {c['count']:3d}  {c['gold']} -> {c['predicted']}:  {examples}")
    rest = len(m["confusions"]) - TOP_CONFUSIONS
    if rest > 0:
        print(f"  ... and {rest} more pairs (all errors are in the JSON report)")


def print_entities(m: dict[str, Any]) -> None:
    """Entity P/R/F1 table."""
    print(f"  {'entity':<16} {'prec':>6} {'rec':>6} {'f1':>6} {'gold':>6} {'pred':>6}")
    for t, r in m.items():
        print(
            f"  {t:<16} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f}"
            f" {r['gold']:6d} {r['predicted']:6d}"
        )


# ---------------------------------------------------------------- main


def evaluate_set(
    name: str,
    gold: list[Example],
    rasa: list[Prediction],
    baseline: list[Prediction],
    annotated_types: set[str],
) -> dict[str, Any]:
    """All figures of one held-out set, printed and returned.

    Entity types that neither this set nor the training data annotate (for instance ones only
    a rule-based extractor produces) cannot be scored; they are listed, not counted.
    """
    types = annotated_types | {e.type for ex in gold for e in ex.entities}
    unscored = Counter(e.type for p in rasa for e in p.entities if e.type not in types)
    value_types = {e.type for ex in gold for e in ex.entities if e.explicit_value}
    intents = intent_metrics(gold, rasa)
    spans = entity_metrics(gold, rasa, value_level=False, types=types)
    values = entity_metrics(gold, rasa, value_level=True, types=value_types) if value_types else {}
    base = intent_metrics(gold, baseline)

    rel = shown(HELDOUT_SETS[name])
    print(f"\n---- {name} ({rel}): {len(gold)} utterances")
    print("Rasa intents:")
    print_intents(intents)
    print("Rasa top confusions (gold -> predicted):")
    print_confusions(intents)
    print("Rasa entities, span level (exact type and span):")
    print_entities(spans)
    if values:
        print("Rasa entities, value level (after canonicalisation; types with gold values):")
        print_entities(values)
    if unscored:
        listed = ", ".join(f"{t} {n}" for t, n in unscored.most_common())
        print(f"  predicted entity types without gold annotations (not scored): {listed}")
    print(
        f"Baseline (char 1-3-gram TF-IDF + LR): accuracy {base['accuracy']:.3f},"
        f" macro F1 {base['macro']['f1']:.3f}"
    )
    base_small = {k: base[k] for k in ("n", "accuracy", "macro", "weighted", "per_intent")}
    return {
        "file": rel,
        "n": len(gold),
        "rasa": {
            **intents,
            "entities_span": spans,
            "entities_value": values,
            "entity_errors": entity_errors(gold, rasa, types),
            "entities_unscored": dict(unscored),
        },
        "baseline": {**base_small, "confusions": base["confusions"][:TOP_CONFUSIONS]},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; 1 only when the model is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="Rasa model .tar.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args(argv)
    model: Path = args.model if args.model.is_absolute() else (Path.cwd() / args.model)

    if not model.is_file():
        print(
            f"nlu_eval: no trained Rasa model at {shown(model)}.\n"
            "  Run `make model` first (it trains models/current.tar.gz),"
            " or pass --model PATH to another model.",
            file=sys.stderr,
        )
        return 1

    quiet_libraries()
    print(f"==== NLU evaluation: model {shown(model)}")
    train = load_examples(TRAIN_DIR)
    annotated_types = {e.type for ex in train for e in ex.entities}
    sets = {name: load_examples(path) for name, path in HELDOUT_SETS.items()}
    print(
        f"training data: {len(train)} examples, {len({e.intent for e in train})} intents"
        f" (data/nlu); held-out: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items())
    )

    started = time.perf_counter()
    texts = [ex.text for examples in sets.values() for ex in examples]
    predictions, ms_per_parse = asyncio.run(rasa_predict(model, texts))
    print(f"parsed {len(texts)} utterances with Rasa ({ms_per_parse:.1f} ms each)")
    pipeline = train_baseline(train)

    report: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "path": str(model),
            "sha256": sha256(model),
            "modified": datetime.fromtimestamp(model.stat().st_mtime, timezone.utc).isoformat(
                timespec="seconds"
            ),
            "ms_per_parse": ms_per_parse,
        },
        "training_examples": len(train),
        "baseline": "TfidfVectorizer(char, 1-3, sublinear_tf) + LogisticRegression(C=10)",
        "sets": {},
        "goals": [],
    }
    offset = 0
    for name, gold in sets.items():
        rasa = predictions[offset : offset + len(gold)]
        offset += len(gold)
        baseline = baseline_predict(pipeline, [ex.text for ex in gold])
        report["sets"][name] = evaluate_set(name, gold, rasa, baseline, annotated_types)

    print("\n---- summary: intent accuracy / macro F1")
    header = ("set", "rasa acc", "rasa F1", "base acc", "base F1", "fallback")
    print("  {:<12} {:>9} {:>8} {:>9} {:>8} {:>9}".format(*header))
    for name, s in report["sets"].items():
        r, b = s["rasa"], s["baseline"]
        print(
            f"  {name:<12} {r['accuracy']:9.3f} {r['macro']['f1']:8.3f}"
            f" {b['accuracy']:9.3f} {b['macro']['f1']:8.3f} {r['fallback']['count']:9d}"
        )
    print("\n---- goals (Rasa intent accuracy)")
    for name, target in GOALS.items():
        value = report["sets"][name]["rasa"]["accuracy"]
        status = "PASS" if value >= target else "MISS"
        report["goals"].append({"set": name, "metric": "intent_accuracy", "target": target,
                                "value": value, "status": status})  # fmt: skip
        print(f"  {name:<12} intent accuracy {value:.3f} (goal >= {target:.2f}): {status}")

    out: Path = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {shown(out)} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
