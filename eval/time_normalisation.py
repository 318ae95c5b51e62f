"""Accuracy of nlu.timeparse on the labelled spoken expressions (tests/data/time_expressions.yml).

A case counts as correct when start, end and grain all equal the labels (or, for `none`
cases, when nothing is found). Prints the accuracy and every failure; exits 1 below the
target so `make eval` notices a regression.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nlu.timeparse import parse  # noqa: E402

DATA = ROOT / "tests" / "data" / "time_expressions.yml"
TARGET = 0.95


@dataclass(frozen=True)
class Outcome:
    """One labelled case and what the parser said."""

    text: str
    now: str
    subset: str
    expected: tuple[str | None, str | None, str | None]
    got: tuple[str | None, str | None, str | None]

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def evaluate(path: Path = DATA) -> list[Outcome]:
    """Run the parser on every labelled case."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    outcomes = []
    for case in data["cases"]:
        now_text = case.get("now", data["now"])
        now = datetime.fromisoformat(now_text)
        if case.get("none"):
            expected: tuple[str | None, str | None, str | None] = (None, None, None)
        else:
            expected = (case["start"], case.get("end"), case["grain"])
        expr = parse(str(case["text"]), now)
        got: tuple[str | None, str | None, str | None] = (None, None, None)
        if expr is not None:
            got = (expr.start.isoformat(), expr.end.isoformat() if expr.end else None, expr.grain)
        outcomes.append(
            Outcome(str(case["text"]), now_text, case.get("set", "main"), expected, got)
        )
    return outcomes


def main() -> int:
    outcomes = evaluate()
    failures = [o for o in outcomes if not o.ok]
    accuracy = 1 - len(failures) / len(outcomes)
    print(f"time normalisation: {len(outcomes) - len(failures)}/{len(outcomes)} correct")
    print(f"accuracy: {accuracy:.3f} (target {TARGET:.2f})")
    for subset in sorted({o.subset for o in outcomes}):
        part = [o for o in outcomes if o.subset == subset]
        right = sum(o.ok for o in part)
        print(f"  {subset}: {right}/{len(part)} = {right / len(part):.3f}")
    for o in failures:
        print(f"  FAIL {o.text!r} (now {o.now})\n    expected {o.expected}\n    got      {o.got}")
    return 0 if accuracy >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
