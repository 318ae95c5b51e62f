"""When a caller has finished: is what was heard so far already a whole request?

An elder pauses inside a sentence (我想预约……明天上午的内科), so an utterance ends only after
1.2 s of quiet, which alone is more than the hotline's one second from the end of speech to
the first reply. The recognisers ask a `Judge` at a short pause (`Endpointing.early_silence`,
0.35 s) once the transcript has stopped changing; when it says complete the utterance ends
there, else the full pause applies. A wrong "complete" cuts an elder off mid-sentence (the
rest becomes a turn of its own, answered by a barge-in), a wrong "incomplete" costs 0.85 s, so
the rule is strict. What was heard is complete when:

- it names an emergency (the grammars' `always.emergency` phrases): never wait for more;
- under a short-answer grammar (yes/no, choice, menu): it is one of the grammar's answers, and
  no longer phrase beginning with it means something else (是 → yes whatever follows; 不 is no
  answer yet); a run of digits (a phone number read in groups) is never complete early;
- free speech, by the dialogue's NLU (Rasa `POST /model/parse`: one parse, no turn):
  the top intent is a real one (not `nlu_fallback`, `out_of_scope`) with confidence of at
  least `CONFIDENT` (0.95: whole requests parse above it, misheard halves often just below);
  a request that opens a form names what the form asks first (`OBJECT`: a department for a
  doctor's appointment, the service for home care, what is broken for a repair, which
  order to cancel: 我想预约 alone is a request still being said); a bare answer (`inform`:
  内科, 明天, 我老伴) only while a form is asking the caller something, and naming what it
  answers (out of a form 厨房的水龙头 is the start of 厨房的水龙头坏了); and the text does
  not end in a word that needs a continuation (`CONTINUES`: 的, 和, 还有, 一下 …).

Anything the NLU cannot answer within `timeout` is incomplete (the full pause, as before).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from voice.asr import GrammarSpec, _phrases_of
from voice.grammars import YES_NO, Grammar, compact, get_grammar

log = logging.getLogger(__name__)

# Whole requests heard by Whisper parsed at 0.956-0.998 in eval/pause_cuts.py; the halves it cut
# at 0.8 (我向找 0.94, 我哪个预约 0.94, 我前几天报修等 0.88) stay below this.
CONFIDENT = 0.95
NOT_A_REQUEST = frozenset({"nlu_fallback", "out_of_scope"})
# The entities a request that opens a form must already name (the form's first question).
OBJECT: Mapping[str, frozenset[str]] = {
    "book_medical": frozenset({"department"}),
    "book_home_care": frozenset({"care_service"}),
    "report_repair": frozenset({"repair_category", "hazard"}),
    "cancel_request": frozenset({"date", "time", "department", "care_service", "repair_category"}),
    "inform": frozenset(
        {"department", "care_service", "repair_category", "date", "time", "address", "person"}
        | {"phone", "name", "place", "choice", "hazard", "score"}
    ),
}
# Words a Mandarin sentence does not end on: a particle or conjunction with more to come.
CONTINUES = (
    *("的", "和", "跟", "还有", "然后", "就是", "那个", "这个", "一下"),
    *("把", "给", "在", "想", "要", "呃"),
)
# Short answers that end in one of those words and are whole anyway.
WHOLE = frozenset({"好的", "是的", "对的", "可以的", "不要", "需要", "我想想"})


def urgent(text: str) -> bool:
    """Whether the words name an emergency (the grammars' `always.emergency` phrases)."""
    words = compact(text)
    meanings = get_grammar(YES_NO).meanings
    return any(compact(p) in words for p, m in meanings.items() if m == "emergency")


def answer_complete(text: str, grammar: GrammarSpec) -> bool:
    """Under a grammar: an answer whose meaning nothing more the caller says could change."""
    if isinstance(grammar, Grammar):
        if grammar.sequence:
            return False
        meaning = grammar.interpret(text)
        if meaning is None:
            return False
        said = compact(text)
        return all(m == meaning for p, m in grammar.meanings.items() if compact(p).startswith(said))
    phrases = _phrases_of(grammar) or ()
    said = compact(text)
    matches = [p for p in phrases if compact(p).startswith(said)]
    return said in {compact(p) for p in phrases} and len(matches) == 1


def request_complete(text: str, parsed: Mapping[str, Any], answering: bool = False) -> bool:
    """Free speech: whether the NLU's parse of `text` is a whole request (module docstring).
    `answering`: a form has just asked the caller something."""
    intent = parsed.get("intent") or {}
    name, confidence = intent.get("name"), float(intent.get("confidence") or 0.0)
    if not name or name in NOT_A_REQUEST or confidence < CONFIDENT:
        return False
    if name == "inform" and not answering:  # 厨房的水龙头 … 坏了: a noun is a sentence's start
        return False
    needed = OBJECT.get(name)
    if needed is not None and not needed & {e.get("entity") for e in parsed.get("entities", [])}:
        return False
    said = compact(text)
    return said in WHOLE or not said.endswith(CONTINUES)


def complete(
    text: str,
    grammar: GrammarSpec,
    parse: Callable[[str], Mapping[str, Any] | None],
    answering: bool = False,
) -> bool:
    """The rule of the module docstring; `parse` is the NLU's (None: it did not answer)."""
    if urgent(text):
        return True
    if grammar is not None:
        return answer_complete(text, grammar)
    parsed = parse(text)
    return parsed is not None and request_complete(text, parsed, answering)


class RequestJudge:
    """The `Judge` (voice/asr.py) of the hotline: grammars locally, free speech by the NLU.

    Called from the recognisers' threads, so it uses a blocking client of its own."""

    def __init__(self, rasa_url: str, *, timeout: float = 0.5) -> None:
        self._http = httpx.Client(base_url=rasa_url.rstrip("/"), timeout=timeout)

    def __call__(self, text: str, grammar: GrammarSpec, answering: bool = False) -> bool:
        return complete(text, grammar, self.parse, answering)

    def parse(self, text: str) -> dict[str, Any] | None:
        """Rasa's parse of `text`, or None when it did not answer in time."""
        try:
            response = self._http.post("/model/parse", json={"text": text})
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as exc:
            log.info("complete: no parse (%s): the full pause applies", type(exc).__name__)
            return None

    def close(self) -> None:
        self._http.close()
