"""Evidence for the catalogue matcher's threshold: a sweep over tests/data/catalogue_mentions.yml.

For each threshold, discovery (no DIET) is scored as precision / recall over (entity, value)
pairs per utterance, with a count of negatives that found anything; DIET-span
canonicalisation and hazard flagging are scored as accuracy. Exits 1 when the configured
default threshold misses the targets the tests assert.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nlu.catalogue import (  # noqa: E402
    DEFAULT_DIET_THRESHOLD,
    DEFAULT_THRESHOLD,
    CatalogueMatcher,
    load_catalogues,
)

DATA = ROOT / "tests" / "data" / "catalogue_mentions.yml"
THRESHOLDS = (0.6, 0.65, 0.7, 0.72, 0.75, 0.78, 0.8, 0.82, 0.85, 0.9)
MIN_RECALL = 0.9
MIN_PRECISION = 0.97


@dataclass
class Score:
    """Discovery quality at one threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    negatives_hit: int
    misses: list[str]
    false_hits: list[str]

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load() -> dict:
    return yaml.safe_load(DATA.read_text(encoding="utf-8"))


def score_find(matcher: CatalogueMatcher, cases: list[dict]) -> Score:
    tp = fp = fn = negatives_hit = 0
    misses: list[str] = []
    false_hits: list[str] = []
    for case in cases:
        expected = {tuple(pair) for pair in case["expect"]}
        got = {(m.entity, m.value) for m in matcher.find(case["text"])}
        tp += len(expected & got)
        fp += len(got - expected)
        fn += len(expected - got)
        if expected - got:
            misses.append(f"{case['text']} ({case['kind']}): missing {sorted(expected - got)}")
        if got - expected:
            false_hits.append(f"{case['text']} ({case['kind']}): extra {sorted(got - expected)}")
        if not expected and got:
            negatives_hit += 1
    return Score(matcher.threshold, tp, fp, fn, negatives_hit, misses, false_hits)


def canonical_accuracy(matcher: CatalogueMatcher, cases: list[dict]) -> tuple[float, list[str]]:
    wrong = []
    for case in cases:
        mention = matcher.canonical(case["entity"], case["text"])
        got = mention.value if mention else None
        if got != case["expect"]:
            wrong.append(f"{case['entity']} {case['text']}: expected {case['expect']}, got {got}")
    return 1 - len(wrong) / len(cases), wrong


def hazard_accuracy(matcher: CatalogueMatcher, cases: list[dict]) -> tuple[float, list[str]]:
    wrong = []
    for case in cases:
        got = {h.category for h in matcher.hazards(case["text"])}
        expected = set(case["expect"])
        # A keyword shared by several categories counts when the expected one is among them.
        if not (expected <= got and (expected or not got)):
            wrong.append(f"{case['text']}: expected {sorted(expected)}, got {sorted(got)}")
    return 1 - len(wrong) / len(cases), wrong


def main() -> int:
    data = load()
    values = load_catalogues(ROOT / "data" / "catalogues")
    print(f"discovery sweep over {len(data['find'])} utterances")
    print("threshold  precision  recall  negatives-hit")
    for threshold in THRESHOLDS:
        s = score_find(CatalogueMatcher(values, threshold=threshold), data["find"])
        print(f"  {threshold:.2f}      {s.precision:.3f}    {s.recall:.3f}   {s.negatives_hit}")
    matcher = CatalogueMatcher(values)
    s = score_find(matcher, data["find"])
    print(f"\ndefault threshold {DEFAULT_THRESHOLD}:", end=" ")
    print(f"precision {s.precision:.3f}, recall {s.recall:.3f}")
    by_kind: dict[str, list[int]] = {}
    for case in data["find"]:
        expected = {tuple(p) for p in case["expect"]}
        got = {(m.entity, m.value) for m in matcher.find(case["text"])}
        ok = int(expected == got)
        by_kind.setdefault(case["kind"], [0, 0])
        by_kind[case["kind"]][0] += ok
        by_kind[case["kind"]][1] += 1
    for kind, (ok, total) in by_kind.items():
        print(f"  {kind:9s} {ok}/{total} utterances exactly right")
    holdout = [c for c in data["find"] if c.get("set") == "holdout"]
    right = sum(
        {tuple(p) for p in c["expect"]} == {(m.entity, m.value) for m in matcher.find(c["text"])}
        for c in holdout
    )
    print(f"  held out (written after the threshold was fixed): {right}/{len(holdout)}")
    for line in s.misses:
        print(f"  MISS  {line}")
    for line in s.false_hits:
        print(f"  EXTRA {line}")
    canon, wrong = canonical_accuracy(matcher, data["canonical"])
    print(f"\nDIET-span canonicalisation (threshold {DEFAULT_DIET_THRESHOLD}): {canon:.3f}")
    for line in wrong:
        print(f"  WRONG {line}")
    hazard, wrong = hazard_accuracy(matcher, data["hazard"])
    print(f"hazard flagging: {hazard:.3f}")
    for line in wrong:
        print(f"  WRONG {line}")
    ok = s.recall >= MIN_RECALL and s.precision >= MIN_PRECISION and canon >= 0.9 and hazard >= 0.9
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
