"""Phrase lists that narrow recognition when the dialogue expects a short answer.

The lists are data (data/voice/grammars.yml); this module loads and checks them and turns what
the recogniser heard back into a meaning. A recognition session takes a `Grammar` (or a plain
phrase list) through `RecognitionSession.set_grammar` (voice/asr.py):

    session.set_grammar(get_grammar("yes_no"))
    ...  # an Utterance arrives
    get_grammar("yes_no").interpret(utterance.text)   # "yes", "no", "emergency", … or None
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

GRAMMARS_PATH = Path(__file__).resolve().parent.parent / "data" / "voice" / "grammars.yml"

YES_NO = "yes_no"
AT_HOME = "at_home"
DIGITS = "digits"
MENU = "menu"
ORDINAL = "ordinal"

# Spaces (the recogniser separates words with them) and punctuation never change a meaning.
_NOISE = re.compile(r"[\s，。！？、,.!?…~～]+")


def compact(text: str) -> str:
    """Text without spaces and punctuation: the form phrases are compared in."""
    return _NOISE.sub("", text)


@dataclass(frozen=True)
class Grammar:
    """A named phrase list; `meanings` maps each phrase to what it means."""

    name: str
    meanings: dict[str, str]
    sequence: bool = False
    description: str = ""
    # Phrases a sequence may be made of (a grammar's own, not the `always` ones).
    sequence_phrases: frozenset[str] = field(default_factory=frozenset)
    # Short answers end after this much quiet (seconds); None keeps the session's endpointing.
    trailing_silence: float | None = None

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(self.meanings)

    @cached_property
    def _lookup(self) -> dict[str, str]:
        return {compact(p): m for p, m in self.meanings.items()}

    def interpret(self, text: str) -> str | None:
        """The meaning of a recognised text, or None when it is not (only) this grammar's.

        An exact phrase means its meaning. Otherwise the text is split into phrases (longest
        first): a sequence grammar joins their meanings (幺三八 → "138"); any other grammar
        accepts a repetition of one meaning (对对对 → "yes") and nothing mixed (是不是).
        """
        key = compact(text)
        if not key:
            return None
        lookup = self._lookup
        if key in lookup:
            return lookup[key]
        allowed = {compact(p) for p in self.sequence_phrases} if self.sequence else set(lookup)
        parts = split_longest(key, allowed.__contains__, max(map(len, allowed), default=0))
        if parts is None:
            return None
        values = [lookup[p] for p in parts]
        if self.sequence:
            return "".join(values)
        return values[0] if len(set(values)) == 1 else None


def split_longest(text: str, known: Callable[[str], bool], longest: int) -> list[str] | None:
    """`text` cut into pieces `known` accepts, longest first (greedy); None if a rest is left."""
    parts: list[str] = []
    i = 0
    while i < len(text):
        for size in range(min(longest, len(text) - i), 0, -1):
            if known(text[i : i + size]):
                parts.append(text[i : i + size])
                i += size
                break
        else:
            return None
    return parts


def _phrase_map(where: str, values: Any) -> dict[str, str]:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{where}: expected a mapping of meaning -> list of phrases")
    meanings: dict[str, str] = {}
    for meaning, phrases in values.items():
        if not isinstance(phrases, list) or not phrases:
            raise ValueError(f"{where}.{meaning}: expected a non-empty list of phrases")
        for phrase in phrases:
            if not isinstance(phrase, str) or not compact(phrase):
                raise ValueError(f"{where}.{meaning}: {phrase!r} is not a phrase")
            if meanings.get(phrase, str(meaning)) != str(meaning):
                raise ValueError(
                    f"{where}: {phrase!r} means both {meanings[phrase]!r} and {meaning!r}"
                )
            meanings[phrase] = str(meaning)
    return meanings


@lru_cache(maxsize=4)
def load_grammars(path: Path = GRAMMARS_PATH) -> dict[str, Grammar]:
    """Every grammar of the file by name, `always` merged in; a malformed file raises ValueError."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    always = _phrase_map(f"{path}: always", data["always"]) if data.get("always") else {}
    grammars: dict[str, Grammar] = {}
    for name, spec in (data.get("grammars") or {}).items():
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: grammars.{name} must be a mapping")
        own = _phrase_map(f"{path}: grammars.{name}", spec.get("values"))
        quiet = spec.get("trailing_silence")
        if quiet is not None and (
            isinstance(quiet, bool) or not isinstance(quiet, (int, float)) or not 0 < quiet <= 5
        ):
            raise ValueError(f"{path}: grammars.{name}.trailing_silence must be 0-5 seconds")
        merged = dict(own)
        for phrase, meaning in always.items():
            if merged.setdefault(phrase, meaning) != meaning:
                raise ValueError(
                    f"{path}: grammars.{name}: {phrase!r} means {merged[phrase]!r} there "
                    f"but {meaning!r} in `always`"
                )
        grammars[str(name)] = Grammar(
            name=str(name),
            meanings=merged,
            sequence=bool(spec.get("sequence", False)),
            description=str(spec.get("description", "")),
            sequence_phrases=frozenset(own),
            trailing_silence=None if quiet is None else float(quiet),
        )
    if not grammars:
        raise ValueError(f"{path}: no grammars defined")
    return grammars


def get_grammar(name: str) -> Grammar:
    """One grammar of data/voice/grammars.yml by name (yes_no, digits, menu, ordinal)."""
    grammars = load_grammars()
    if name not in grammars:
        raise KeyError(f"no grammar {name!r}; known: {', '.join(sorted(grammars))}")
    return grammars[name]
