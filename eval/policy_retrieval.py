"""How well policy retrieval answers residents' questions, and which confidence threshold to use.

Runs actions/policy_kb.py on the labelled questions in tests/data/policy_questions.yml (each with
the policy that answers it, or null when the knowledge base cannot). The dev half chose the
scoring constants and the threshold; the test half is only measured. Prints, per half:

  top-1         answerable questions whose best match is the right policy (threshold ignored)
  precision     confident answers that are right
  coverage      answerable questions answered confidently and rightly
  rejection     unanswerable questions not answered confidently ("I don't know" is right)
  accuracy      all questions handled rightly (right confident answer, or no confident answer
                to an unanswerable question)
  conf. wrong   questions given a confident wrong answer (the costly error)

then a threshold sweep, the threshold the rule picks on dev (best utility = right outcomes
minus WRONG_COST per confident wrong answer, averaged over +-SMOOTHING points), the questions
handled wrongly, and ablations (no pinyin, no fuzzy matching, no coverage factor, no competitor
penalty, a plain rapidfuzz WRatio baseline), each at the threshold the same rule picks for it.
Run from the repo root: .venv/bin/python eval/policy_retrieval.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from rapidfuzz import fuzz

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actions import policy_kb  # noqa: E402

POLICIES = ROOT / "data" / "policies"
LABELLED = ROOT / "tests" / "data" / "policy_questions.yml"
WRONG_COST = 3.0
SMOOTHING = 2.0
SWEEP = range(30, 91, 5)


@dataclass(frozen=True)
class Outcome:
    """The retriever's best guess for one labelled question."""

    question: str
    expected: str | None
    predicted: str | None
    score: float


@dataclass(frozen=True)
class Metrics:
    top1: float
    precision: float
    coverage: float
    rejection: float
    accuracy: float
    wrong_rate: float
    confident: int
    wrong: int


def outcomes(base: policy_kb.PolicyBase, items: list[dict[str, object]]) -> list[Outcome]:
    result = []
    for item in items:
        matches = base.search(str(item["q"]), limit=1)
        best = matches[0] if matches else None
        result.append(
            Outcome(
                str(item["q"]),
                item["id"] if item["id"] is None else str(item["id"]),
                best.entry.id if best else None,
                best.score if best else 0.0,
            )
        )
    return result


def metrics(results: list[Outcome], threshold: float) -> Metrics:
    answerable = [r for r in results if r.expected is not None]
    unknown = [r for r in results if r.expected is None]
    confident = [r for r in results if r.predicted is not None and r.score >= threshold]
    right = [r for r in confident if r.predicted == r.expected]
    rejected = [r for r in unknown if r not in confident]
    wrong = len(confident) - len(right)
    return Metrics(
        top1=_ratio(sum(r.predicted == r.expected for r in answerable), len(answerable)),
        precision=_ratio(len(right), len(confident)),
        coverage=_ratio(len(right), len(answerable)),
        rejection=_ratio(len(rejected), len(unknown)),
        accuracy=_ratio(len(right) + len(rejected), len(results)),
        wrong_rate=_ratio(wrong, len(results)),
        confident=len(confident),
        wrong=wrong,
    )


def utility(results: list[Outcome], threshold: float) -> float:
    """Right outcomes minus WRONG_COST per confident wrong answer; "don't know" costs nothing
    here (a person follows up), a wrong answer does damage."""
    m = metrics(results, threshold)
    return m.accuracy * len(results) - WRONG_COST * m.wrong


def choose_threshold(results: list[Outcome]) -> float:
    """The threshold with the best utility averaged over +-SMOOTHING points, so the choice
    does not sit on one lucky point of a small labelled set; ties go to the middle."""
    candidates = [t / 2 for t in range(0, 201)]
    raw = {t: utility(results, t) for t in candidates}

    def smoothed(t: float) -> float:
        window = [raw[c] for c in candidates if abs(c - t) <= SMOOTHING]
        return sum(window) / len(window)

    scores = {t: smoothed(t) for t in candidates}
    best = max(scores.values())
    tied = [t for t in candidates if scores[t] == best]
    return tied[len(tied) // 2]


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def _row(name: str, m: Metrics) -> str:
    return (
        f"{name:<26} {m.top1:6.3f} {m.precision:9.3f} {m.coverage:8.3f} {m.rejection:9.3f}"
        f" {m.accuracy:8.3f} {m.wrong_rate * 100:8.1f}%  ({m.confident} confident, {m.wrong} wrong)"
    )


HEADER = (
    f"{'':<26} {'top-1':>6} {'precision':>9} {'coverage':>8} {'rejection':>9}"
    f" {'accuracy':>8} {'conf.wrong':>9}"
)


@contextmanager
def patched(**values: object) -> Iterator[None]:
    """Temporarily change module-level knobs of policy_kb (for the ablations)."""
    saved = {name: getattr(policy_kb, name) for name in values}
    for name, value in values.items():
        setattr(policy_kb, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(policy_kb, name, value)


def wratio_outcomes(base: policy_kb.PolicyBase, items: list[dict[str, object]]) -> list[Outcome]:
    """Baseline: best rapidfuzz WRatio between the pinyin of the question and any KB phrase."""
    phrases: list[tuple[str, str]] = []
    for entry in base:
        for text in (entry.title, *entry.questions, *entry.keywords):
            phrases.append((entry.id, " ".join(policy_kb.syllables(policy_kb.normalise(text)))))
    result = []
    for item in items:
        asked = " ".join(policy_kb.syllables(policy_kb.normalise(str(item["q"]))))
        score, best = max((fuzz.WRatio(asked, text), pid) for pid, text in phrases)
        result.append(Outcome(str(item["q"]), item["id"], best, score))  # type: ignore[arg-type]
    return result


def main() -> int:
    base = policy_kb.load(POLICIES)
    labelled = yaml.safe_load(LABELLED.read_text(encoding="utf-8"))
    splits = {"dev": labelled["dev"], "test": labelled["test"]}
    splits["all"] = splits["dev"] + splits["test"]
    results = {name: outcomes(base, items) for name, items in splits.items()}

    def count(items: list[dict[str, object]]) -> str:
        return f"{len(items)} ({sum(i['id'] is None for i in items)} unanswerable)"

    print(f"Policy retrieval: {len(base)} policies in {POLICIES.relative_to(ROOT)}")
    print(f"Labelled questions: dev {count(splits['dev'])}, test {count(splits['test'])}")
    threshold = policy_kb.CONFIDENCE_THRESHOLD
    print(f"\nAt the module's threshold {threshold:g}:")
    print(HEADER)
    for name, res in results.items():
        print(_row(name, metrics(res, threshold)))
    asr = [o for o, i in zip(results["all"], splits["all"], strict=True) if i.get("asr")]
    asr_right = sum(o.predicted == o.expected for o in asr)
    print(f"speech-recognition homophone cases: top-1 {asr_right}/{len(asr)}")

    print("\nThreshold sweep (accuracy / precision / coverage / conf. wrong %):")
    print(f"{'threshold':>9}  {'dev':<32}  {'test':<32}")
    for t in SWEEP:
        cells = []
        for name in ("dev", "test"):
            m = metrics(results[name], t)
            wrong = m.wrong_rate * 100
            cells.append(f"{m.accuracy:.3f} / {m.precision:.3f} / {m.coverage:.3f} / {wrong:4.1f}")
        print(f"{t:>9}  {cells[0]:<32}  {cells[1]:<32}")
    chosen = choose_threshold(results["dev"])
    print(
        f"\nRule (best dev utility = right - {WRONG_COST:g} x confident wrong, averaged over "
        f"+-{SMOOTHING:g}) picks {chosen:g}; the module uses {threshold:g}."
    )

    print("\nHandled wrongly at the module's threshold (score, question, expected -> best):")
    for name in ("dev", "test"):
        for r in results[name]:
            confident = r.predicted is not None and r.score >= threshold
            if confident and r.predicted != r.expected:
                kind = "CONFIDENT WRONG"
            elif not confident and r.expected is not None:
                kind = "not answered" if r.predicted == r.expected else "not answered, rank"
            else:
                continue
            expected = f"{r.expected} -> {r.predicted}"
            print(f"  {name:<4} {kind:<19} {r.score:5.1f}  {r.question}  {expected}")

    print("\nAblations (all questions, each at its own best threshold by the same rule):")
    print(HEADER)
    variants: list[tuple[str, Callable[[], tuple[list[Outcome], list[Outcome]]]]] = []

    def rebuild() -> tuple[list[Outcome], list[Outcome]]:
        again = policy_kb.PolicyBase(base.entries)
        return outcomes(again, splits["dev"]), outcomes(again, splits["all"])

    def characters() -> tuple[list[Outcome], list[Outcome]]:
        with patched(syllables=lambda text: list(text)):
            return rebuild()

    def no_fuzzy() -> tuple[list[Outcome], list[Outcome]]:
        with patched(FUZZY_WEIGHT=0.0):
            return rebuild()

    def no_coverage() -> tuple[list[Outcome], list[Outcome]]:
        with patched(COVERAGE_EXPONENT=0.0):
            return rebuild()

    def no_competitor() -> tuple[list[Outcome], list[Outcome]]:
        with patched(COMPETITOR_PENALTY=0.0):
            return rebuild()

    def baseline() -> tuple[list[Outcome], list[Outcome]]:
        return wratio_outcomes(base, splits["dev"]), wratio_outcomes(base, splits["all"])

    variants = [
        ("as shipped", rebuild),
        ("characters, no pinyin", characters),
        ("no fuzzy bigrams", no_fuzzy),
        ("no coverage factor", no_coverage),
        ("no competitor penalty", no_competitor),
        ("rapidfuzz WRatio only", baseline),
    ]
    for name, run in variants:
        dev, everything = run()
        t = choose_threshold(dev)
        print(_row(f"{name} @{t:g}", metrics(everything, t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
