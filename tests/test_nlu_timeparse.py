"""Spoken Chinese dates and times (nlu/timeparse.py) on the labelled set.

tests/data/time_expressions.yml holds the labelled expressions; eval/time_normalisation.py
prints the same accuracy with every failure.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from nlu.timeparse import SHANGHAI, TimeExpr, find_all, parse

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=SHANGHAI)  # a Wednesday


def _eval_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "time_normalisation", ROOT / "eval" / "time_normalisation.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_labelled_set_accuracy() -> None:
    evaluation = _eval_module()
    outcomes = evaluation.evaluate()
    assert len(outcomes) >= 120
    failures = [o for o in outcomes if not o.ok]
    accuracy = 1 - len(failures) / len(outcomes)
    report = "\n".join(f"{o.text!r}: expected {o.expected}, got {o.got}" for o in failures)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}; failures:\n{report}"
    holdout = [o for o in outcomes if o.subset == "holdout"]
    assert holdout and sum(o.ok for o in holdout) / len(holdout) >= 0.9, report


def test_time_expr_shape() -> None:
    expr = parse("明天上午", NOW)
    assert isinstance(expr, TimeExpr)
    assert expr.grain == "window"
    assert expr.start.utcoffset() == timedelta(hours=8)
    assert expr.as_dict() == {
        "start": "2026-11-19T08:00:00+08:00",
        "end": "2026-11-19T12:00:00+08:00",
        "grain": "window",
        "date": "2026-11-19",
        "text": "明天上午",
    }


def test_spans_of_day_and_time_parts() -> None:
    text = "我想挂明天上午的内科"
    (match,) = find_all(text, NOW)
    assert text[match.start : match.end] == "明天上午"
    assert match.date_span and text[slice(*match.date_span)] == "明天"
    assert match.time_span and text[slice(*match.time_span)] == "上午"


def test_later_mention_takes_the_earlier_day() -> None:
    first, second = find_all("下礼拜三去，上午九点", NOW)
    assert first.expr.grain == "day"
    assert second.expr.start.isoformat() == "2026-11-25T09:00:00+08:00"
    assert second.date_span is None


def test_now_in_another_zone_is_converted() -> None:
    utc_now = datetime.fromisoformat("2026-11-18T02:00:00+00:00")  # 10:00 in Shanghai
    expr = parse("明天", utc_now)
    assert expr is not None and expr.start.isoformat() == "2026-11-19T00:00:00+08:00"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        parse("明天", datetime(2026, 11, 18, 10, 0))


def test_wall_clock_default() -> None:
    before = datetime.now(SHANGHAI).date()
    expr = parse("明天")
    after = datetime.now(SHANGHAI).date()
    assert expr is not None
    assert expr.start.date() in {before + timedelta(days=1), after + timedelta(days=1)}


@pytest.mark.parametrize(
    "text", ["", "你好", "我一点都不舒服", "三号楼", "一时半会儿", "快一点", "几点了"]
)
def test_nothing_found(text: str) -> None:
    assert parse(text, NOW) is None
