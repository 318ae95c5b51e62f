"""Check that no held-out NLU utterance also appears (exactly or nearly) in the training data.

Compares every utterance of eval/data/heldout*.yml with every training example of
data/nlu/*.yml after normalisation (NFKC, lower case, punctuation and whitespace removed) and
prints each pair whose rapidfuzz ratio is at least the threshold (default 90; 100 = exact).
Exits 1 when any pair is found, so `make eval` stops before measuring on leaked data.

Usage (from the repo root): .venv/bin/python eval/check_overlap.py [--threshold 90]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_DIR = ROOT / "data" / "nlu"
HELDOUT_FILES = sorted((ROOT / "eval" / "data").glob("heldout*.yml"))


@dataclass(frozen=True)
class Utterance:
    """One example: where it comes from, its intent, its plain text and normalised text."""

    source: str
    intent: str
    text: str
    norm: str


def normalise(text: str) -> str:
    """NFKC, lower case, and drop punctuation, symbols, whitespace and control characters."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZSC")


def load_utterances(path: Path) -> list[Utterance]:
    """Load one Rasa NLU YAML file or folder (entity annotations stripped) as utterances."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(path))
    out = []
    for message in data.training_examples:
        text = message.get("text") or ""
        source = os.path.relpath(message.get("file") or str(path), ROOT)
        out.append(Utterance(source, message.get("intent") or "", text, normalise(text)))
    return out


def load_training() -> list[Utterance]:
    """Load every training file separately so that each example knows its file."""
    utterances: list[Utterance] = []
    for path in sorted(TRAIN_DIR.glob("*.yml")) + sorted(TRAIN_DIR.glob("*.yaml")):
        for u in load_utterances(path):
            utterances.append(Utterance(os.path.relpath(path, ROOT), u.intent, u.text, u.norm))
    return utterances


def find_overlaps(
    heldout: list[Utterance], training: list[Utterance], threshold: float
) -> list[tuple[float, Utterance, Utterance]]:
    """Return (score, held-out, training) for every pair scoring at least the threshold."""
    from rapidfuzz import fuzz, process

    if not heldout or not training:
        return []
    scores = process.cdist(
        [u.norm for u in heldout],
        [u.norm for u in training],
        scorer=fuzz.ratio,
        score_cutoff=threshold,
        workers=-1,
    )
    pairs = []
    for i, j in zip(*scores.nonzero(), strict=True):
        pairs.append((float(scores[i, j]), heldout[i], training[j]))
    # An empty normalised string scores 100 against another empty one: count it only if exact.
    pairs = [p for p in pairs if p[1].norm or p[2].norm]
    return sorted(pairs, key=lambda p: (-p[0], p[1].source, p[1].text))


def main(argv: list[str] | None = None) -> int:
    """Print every near-duplicate between held-out and training data; 1 if there is any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=90.0, help="rapidfuzz ratio (0-100)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    if not HELDOUT_FILES:
        print("check_overlap: no eval/data/heldout*.yml files found", file=sys.stderr)
        return 1
    training = load_training()
    heldout = [u for path in HELDOUT_FILES for u in load_utterances(path)]
    pairs = find_overlaps(heldout, training, args.threshold)

    print(
        f"check_overlap: {len(heldout)} held-out utterances "
        f"({', '.join(os.path.relpath(p, ROOT) for p in HELDOUT_FILES)}) "
        f"vs {len(training)} training examples (data/nlu), threshold ratio >= {args.threshold:g}"
    )
    if not pairs:
        print("check_overlap: no exact or near-duplicate pairs found. OK")
        return 0
    exact = sum(1 for score, _, _ in pairs if score >= 100)
    print(f"check_overlap: {len(pairs)} overlapping pairs ({exact} exact):")
    for score, held, train in pairs:
        same = "same intent" if held.intent == train.intent else "DIFFERENT intent"
        print(f"  {score:5.1f}  {held.source} [{held.intent}] {held.text!r}")
        print(f"         {train.source} [{train.intent}] {train.text!r}  ({same})")
    print(
        "check_overlap: held-out data must never be copied into training data; rephrase or "
        "remove the training examples above (or replace the held-out ones with fresh text).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
