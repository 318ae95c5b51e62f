"""Ending utterances early: how often an elder's mid-sentence pause is cut, and what it saves.

The hotline ends an utterance at a short pause (0.35 s) when what was heard is already a whole
request (voice/complete.py), else after the elders' 1.2 s. Both sides of that rule, on
requests of every kind (eval/data/pause_cuts.yml):

- **paused**: each request said in two halves (我想预约 … 明天上午的内科) with a pause of
  0.6, 0.8 or 1.0 s between them (in turn), the kind of pause the full 1.2 s exists for. A
  *cut* is the utterance ending at that pause: the first half went to the dialogue alone.
- **whole**: the same requests said without a pause. An *early end* is the utterance ending at
  the short pause after it; the *saving* is the full pause minus when it ended.

Each is judged twice: **written** (the rule on the text itself: the first half, the whole, as
if heard perfectly), and **heard**: said by Linli's neural voice (tests/speech.py, 8 kHz
through G.711; the halves rendered apart and joined with silence) and heard by a
`WhisperRecogniser` session with the rule as its judge, fed 100 ms at a time; after each step
the session's guess (the decode started at the short pause) is waited for, as on a machine
that decodes within the pause. On this machine a decode takes ~1.2 s, longer than any of the
pauses, so a guess is stale before it is back and nothing is cut at all; the heard figures are
what the rule does once decoding keeps up. Times are the session's (audio) time: end of speech
→ end of utterance. The NLU is the trained model (models/current.tar.gz), loaded in this
process and asked as the hotline asks Rasa (`POST /model/parse`).

Writes var/eval/pause_cuts.json. It measures and never asserts: exit 0; 1 when a model is
missing (`make model`, `make whisper`).

    .venv/bin/python eval/pause_cuts.py [--written-only] [--out JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python eval/pause_cuts.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import yaml

from eval.asr_cer import write_report
from eval.nlu_eval import DEFAULT_MODEL, quiet_libraries

DATA = ROOT / "eval" / "data" / "pause_cuts.yml"
DEFAULT_OUT = ROOT / "var" / "eval" / "pause_cuts.json"
PAUSES = (0.6, 0.8, 1.0)
STEP_BYTES = 1600  # 100 ms at 8 kHz, as the hotline hands audio over


@dataclass
class Item:
    first: str
    second: str
    intent: str
    pause: float
    written_cut: bool = False  # the rule calls the first half complete
    written_early: bool = False  # ... and the whole
    heard_first: str = ""
    heard: list[str] = field(default_factory=list)  # the utterances of the paused audio
    heard_cut: bool | None = None
    cut_by: str | None = None  # "judge" (ended at the short pause) or "pause" (the full one)
    heard_whole: str = ""
    heard_early: bool | None = None
    whole_end_s: float | None = None  # end of speech → end of utterance, whole, session time

    @property
    def whole(self) -> str:
        return self.first + self.second


def load_items(path: Path) -> list[Item]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["requests"]
    return [
        Item(row["first"], row["second"], row["intent"], PAUSES[i % len(PAUSES)])
        for i, row in enumerate(rows)
    ]


class Nlu:
    """The trained model in this process, parsing as Rasa's `POST /model/parse` does."""

    def __init__(self, model: Path) -> None:
        from rasa.core.agent import Agent
        from rasa.utils.log_utils import configure_structlog

        configure_structlog(logging.ERROR)
        self.loop = asyncio.new_event_loop()
        self.agent = Agent.load(str(model))
        self.asked = 0

    def parse(self, text: str) -> dict[str, Any]:
        self.asked += 1
        return self.loop.run_until_complete(self.agent.parse_message(text))


def hear(session: Any, pcm: bytes) -> tuple[list[tuple[float, Any]], float]:
    """The utterances of `pcm` with the session time each ended at; waits for every guess."""
    from voice.asr import Utterance

    ended: list[tuple[float, Any]] = []
    for start in range(0, len(pcm), STEP_BYTES):
        ended += [(session.time, e) for e in session.accept(pcm[start : start + STEP_BYTES])]
        session.settle()
    ended += [(session.time, e) for e in session.finish()]
    return [(at, e) for at, e in ended if isinstance(e, Utterance) and e.text], session.time


def run_heard(items: list[Item], judge: Any) -> dict[str, Any]:
    from bench.asr_rtf import voiced
    from tests.speech import spoken
    from voice.audio import TELEPHONE_RATE
    from voice.whisper_asr import WhisperPool, WhisperRecogniser, WhisperSettings

    def silence(seconds: float) -> bytes:
        return bytes(2 * int(seconds * TELEPHONE_RATE))

    def seconds(pcm: bytes) -> float:
        return len(pcm) / 2 / TELEPHONE_RATE

    pool = WhisperPool(WhisperSettings.from_env())
    recogniser = WhisperRecogniser(pool)
    guesses = stale = 0
    try:
        for n, item in enumerate(items, 1):
            first, second = voiced(spoken(item.first)), voiced(spoken(item.second))
            paused = silence(0.5) + first + silence(item.pause) + second + silence(2.0)
            session = recogniser.session(TELEPHONE_RATE, judge=judge)
            said, _ = hear(session, paused)
            guesses, stale = guesses + session.guesses, stale + session.stale
            item.heard = [u.text for _, u in said]
            second_starts = 0.5 + seconds(first) + item.pause
            item.heard_cut = bool(said) and said[0][1].end < second_starts
            if item.heard_cut:
                item.cut_by = "judge" if said[0][1].early else "pause"
            whole = voiced(spoken(item.whole))
            session = recogniser.session(TELEPHONE_RATE, judge=judge)
            said, _ = hear(session, silence(0.5) + whole + silence(2.0))
            guesses, stale = guesses + session.guesses, stale + session.stale
            if said:
                at, utterance = said[0]
                item.heard_whole = utterance.text
                item.whole_end_s = round(at - (0.5 + seconds(whole)), 3)
                item.heard_early = item.whole_end_s < 1.2
            cut = f"  CUT ({item.cut_by})" if item.heard_cut else ""
            print(
                f"  {n:>2}/{len(items)} {item.first}…{item.second}: "
                f"{' | '.join(item.heard) or '-'}{cut}; "
                f"whole ends {item.whole_end_s} s",
                flush=True,
            )
    finally:
        pool.close()
    return {"guesses": guesses, "stale_guesses": stale}


def rate(flags: list[bool | None]) -> dict[str, Any]:
    known = [f for f in flags if f is not None]
    return {
        "n": len(known),
        "count": sum(known),
        "rate": round(sum(known) / len(known), 3) if known else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--written-only", action="store_true", help="skip the spoken part")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args(argv)
    quiet_libraries()
    if not DEFAULT_MODEL.exists():
        print("eval/pause_cuts.py: no trained model; run `make model`", file=sys.stderr)
        return 1
    from voice.complete import complete
    from voice.whisper_engine import model_problem

    started = time.monotonic()
    items = load_items(DATA)
    nlu = Nlu(DEFAULT_MODEL)

    def judge(text: str, grammar: Any) -> bool:
        return complete(text, grammar, nlu.parse)

    for item in items:
        item.written_cut = judge(item.first, None)
        item.written_early = judge(item.whole, None)
    extra: dict[str, Any] = {}
    problem = None if args.written_only else model_problem()
    if problem:
        print(f"eval/pause_cuts.py: {problem}", file=sys.stderr)
        return 1
    if not args.written_only:
        extra = run_heard(items, judge)
    ends = [i.whole_end_s for i in items if i.whole_end_s is not None]
    report = {
        "at": datetime.now(timezone.utc).isoformat(),
        "model": str(DEFAULT_MODEL.resolve().name),
        "requests": len(items),
        "pauses_s": list(PAUSES),
        "written": {
            "cut": rate([i.written_cut for i in items]),
            "early_end": rate([i.written_early for i in items]),
        },
        "heard": {
            "cut": rate([i.heard_cut for i in items]),
            # Cut by the early end, or by the full 1.2 s pause (Silero's end of speech comes
            # before the last loud frame, so a 1.0 s pause can reach it: no early end needed).
            "cut_by_judge": sum(i.cut_by == "judge" for i in items),
            "cut_by_full_pause": sum(i.cut_by == "pause" for i in items),
            "early_end": rate([i.heard_early for i in items]),
            "whole_end_ms": {
                "p50": round(statistics.median(ends) * 1000) if ends else None,
                "max": round(max(ends) * 1000) if ends else None,
            },
            "saved_ms_mean": round(statistics.mean(1200 - e * 1000 for e in ends))
            if ends
            else None,
            **extra,
        },
        "cut_by_written": [i.first for i in items if i.written_cut],
        "not_early_written": [i.whole for i in items if not i.written_early],
        "items": [asdict(i) for i in items],
        "seconds": round(time.monotonic() - started),
    }
    print(
        f"\nwritten: cut {report['written']['cut']['count']}/{len(items)} first halves; "
        f"whole requests ending early {report['written']['early_end']['count']}/{len(items)}"
    )
    if report["cut_by_written"]:
        print("  cut (written):", "、".join(report["cut_by_written"]))
    if report["not_early_written"]:
        print("  not early (written):", "、".join(report["not_early_written"]))
    if not args.written_only:
        heard = report["heard"]
        print(
            f"heard: cut {heard['cut']['count']}/{heard['cut']['n']} (by the judge "
            f"{heard['cut_by_judge']}, by the full pause {heard['cut_by_full_pause']}); early end "
            f"{heard['early_end']['count']}/{heard['early_end']['n']}; whole: end of speech → "
            f"utterance p50 {heard['whole_end_ms']['p50']} ms (full pause: 1200-1300)"
        )
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
