"""Catalogue values (department, care_service, repair_category) found and canonicalised.

Pure Python (no Rasa import, so tools and tests load it fast); the Rasa component is
`nlu.catalogue_matcher.CatalogueEntityMatcher`.

DIET learns where a department is mentioned, but its value is whatever the resident (or ASR)
said: 内可, 看牙, 煤汽. This module maps such spans to the canonical names of
data/catalogues/*.yml and finds mentions DIET missed.

Fuzzy matching applies to canonical names and to synonyms of at most three characters: longer
synonyms are phrases (电梯坏了, 心脏不舒服) whose generic characters (坏了) make unrelated
sentences look similar (电脑坏了); they are matched exactly only.

Scoring (evidence: tests/data/catalogue_mentions.yml, threshold sweep in
eval/catalogue_matching.py). A text window w is compared with a catalogue phrase t:

    chars   = rapidfuzz ratio of the characters
    pinyin  = rapidfuzz ratio of the tone-less pinyin syllable lists (pypinyin)
    fuzzy   = same on "fuzzy pinyin" (zh/z, ch/c, sh/s, n/l, in/ing, en/eng, an/ang merged),
              the confusions of southern accents and of ASR
    score   = 0.3 · chars + 0.7 · max(pinyin, 0.9 · fuzzy)

A homophone with one character in common (内可 for 内科) scores 0.85; an accent
near-homophone (卵气 for 暖气) 0.78; unrelated words sharing one character (电话 / 电梯) 0.5.
A window must share at least one character per three of the phrase (so 注意 never becomes 助医
and 顾客 never 骨科 when found alone), and must not cut through words on both sides
(我家|电脑 is not 家电). DIET-tagged spans are trusted more: no shared character is needed
and the threshold is lower.

Hazards: a `dangerous_when` phrase of a repair category in the message (exactly or with the
same pinyin, 煤汽味 = 煤气味) and not negated (没有煤气味) sets `dangerous: true` on that
category's repair_category entities and adds a separate entity `hazard` whose value is the
category (so a slot can be filled from it) with `additional_info.keyword`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pypinyin import lazy_pinyin
from rapidfuzz import fuzz

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE_DIR = REPO_ROOT / "data" / "catalogues"
CATALOGUE_ENTITIES = ("department", "care_service", "repair_category")
HAZARD_ENTITY = "hazard"

CHAR_WEIGHT = 0.3
FUZZY_PINYIN_FACTOR = 0.9
# Chosen on tests/data/catalogue_mentions.yml (eval/catalogue_matching.py): every threshold
# from 0.70 to 0.78 gives the best recall with no hit on the negatives; the best-scoring
# negative is 0.667 (二单元 ~ 单元门) and the worst-scoring true near-homophone 0.78 (卵气 ~
# 暖气), so the threshold sits in the middle of that gap. DIET spans (DIET already says "this
# is a department") need no shared character and a lower bar: 顾客 → 骨科 scores 0.70, the
# best wrong candidate of the null cases 0.5.
DEFAULT_THRESHOLD = 0.72
DEFAULT_DIET_THRESHOLD = 0.65

_HAN = re.compile(r"[\u3400-\u9fff]")
_NEGATION = re.compile(r"(没有|没|无|未|不)(?!停|断|住|少|得|行|知)[^，,。.!！?？；;]{0,3}$")


@dataclass(frozen=True)
class CatalogueValue:
    """One canonical value with the phrases residents use for it."""

    entity: str
    name: str
    synonyms: tuple[str, ...] = ()
    dangerous_when: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mention:
    """A catalogue value found in a text."""

    entity: str
    value: str
    start: int
    end: int
    text: str
    score: float
    method: str  # exact | fuzzy

    def additional_info(self) -> dict[str, Any]:
        return {"matched": self.text, "score": round(self.score, 3), "method": self.method}


@dataclass(frozen=True)
class Hazard:
    """A dangerous_when phrase found in a text."""

    category: str
    keyword: str
    start: int
    end: int
    text: str


FUZZY_MAX_SYNONYM_LENGTH = 3


@dataclass(frozen=True)
class _Surface:
    text: str
    value: CatalogueValue
    pinyin: tuple[str, ...]
    fuzzy: tuple[str, ...]
    fuzzy_ok: bool  # names, and synonyms short enough to be terms rather than phrases
    chars: frozenset[str]


def load_catalogues(directory: str | Path) -> list[CatalogueValue]:
    """Every value of every `*.yml` catalogue in `directory`."""
    directory = Path(directory)
    values: list[CatalogueValue] = []
    files = sorted(directory.glob("*.yml"))
    if not files:
        raise FileNotFoundError(f"no *.yml catalogues in {directory}")
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        entity = data["entity"]
        for item in data["values"]:
            values.append(
                CatalogueValue(
                    entity=entity,
                    name=str(item["name"]),
                    synonyms=tuple(str(s) for s in item.get("synonyms") or ()),
                    dangerous_when=tuple(str(s) for s in item.get("dangerous_when") or ()),
                )
            )
    return values


def resolve_catalogue_dir(configured: str | None) -> Path:
    """The configured directory (relative to the working directory, then to the repo)."""
    if not configured:
        return DEFAULT_CATALOGUE_DIR
    path = Path(configured)
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


# ------------------------------------------------------------------------------- pinyin

_FUZZY_RULES = (
    (re.compile(r"^zh"), "z"),
    (re.compile(r"^ch"), "c"),
    (re.compile(r"^sh"), "s"),
    (re.compile(r"^n(?=[aeiouv])"), "l"),
    (re.compile(r"ing$"), "in"),
    (re.compile(r"eng$"), "en"),
    (re.compile(r"ang$"), "an"),
)


@lru_cache(maxsize=4096)
def _fuzzy_syllable(syllable: str) -> str:
    for pattern, replacement in _FUZZY_RULES:
        syllable = pattern.sub(replacement, syllable)
    return syllable


def char_pinyin(text: str) -> list[str]:
    """One tone-less syllable per character (non-Han characters stand for themselves)."""
    syllables = lazy_pinyin(text, errors=lambda chars: list(chars))
    if len(syllables) != len(text):  # defensive: keep the 1:1 alignment spans rely on
        syllables = [lazy_pinyin(ch, errors=lambda c: list(c))[0] for ch in text]
    return syllables


def _shared_chars(a: str, b: str) -> int:
    return sum((Counter(a) & Counter(b)).values())


def score(window: str, phrase: str) -> float:
    """Similarity in [0, 1] of a text window and a catalogue phrase (see module docstring)."""
    w_py, p_py = char_pinyin(window), char_pinyin(phrase)
    return _score(
        window,
        w_py,
        [_fuzzy_syllable(s) for s in w_py],
        phrase,
        p_py,
        [_fuzzy_syllable(s) for s in p_py],
    )


def _score(
    window: str,
    w_py: Sequence[str],
    w_fz: Sequence[str],
    phrase: str,
    p_py: Sequence[str],
    p_fz: Sequence[str],
) -> float:
    chars = fuzz.ratio(window, phrase) / 100
    pinyin = fuzz.ratio(w_py, p_py) / 100
    fuzzy = fuzz.ratio(w_fz, p_fz) / 100
    return CHAR_WEIGHT * chars + (1 - CHAR_WEIGHT) * max(pinyin, FUZZY_PINYIN_FACTOR * fuzzy)


def _anchored(window: str, phrase: str) -> bool:
    return _shared_chars(window, phrase) >= max(1, len(phrase) // 3)


# ------------------------------------------------------------------------------ matcher


JIEBA_USERDICT = REPO_ROOT / "nlu" / "jieba" / "userdict.txt"
_userdict_loaded = False


def _word_boundaries(text: str) -> set[int]:
    """Word boundaries as JiebaTokenizer with the project's dictionary would give them."""
    global _userdict_loaded
    import jieba

    if not _userdict_loaded:
        if JIEBA_USERDICT.exists():
            jieba.load_userdict(str(JIEBA_USERDICT))
        _userdict_loaded = True
    bounds = {0, len(text)}
    for _word, start, end in jieba.tokenize(text):
        bounds.add(start)
        bounds.add(end)
    return bounds


@dataclass
class CatalogueMatcher:
    """Finds and canonicalises catalogue values; pure Python, used by the Rasa component."""

    values: list[CatalogueValue]
    threshold: float = DEFAULT_THRESHOLD
    diet_threshold: float = DEFAULT_DIET_THRESHOLD
    fuzzy: bool = True
    _surfaces: dict[str, list[_Surface]] = field(default_factory=dict, init=False)
    _exact: dict[str, dict[str, CatalogueValue]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for value in self.values:
            for phrase in (value.name, *value.synonyms):
                known = self._exact.setdefault(value.entity, {}).get(phrase)
                if known is not None and known.name != value.name:
                    logger.warning(
                        "catalogue phrase %r is listed under %s and %s; keeping %s",
                        phrase,
                        known.name,
                        value.name,
                        known.name,
                    )
                    continue
                self._exact[value.entity][phrase] = value
                py = tuple(char_pinyin(phrase))
                fuzzy_ok = phrase == value.name or len(phrase) <= FUZZY_MAX_SYNONYM_LENGTH
                surface = _Surface(
                    phrase,
                    value,
                    py,
                    tuple(_fuzzy_syllable(s) for s in py),
                    fuzzy_ok,
                    frozenset(phrase),
                )
                self._surfaces.setdefault(value.entity, []).append(surface)

    @classmethod
    def from_directory(cls, directory: str | Path | None = None, **kwargs: Any) -> CatalogueMatcher:
        return cls(load_catalogues(directory or DEFAULT_CATALOGUE_DIR), **kwargs)

    @property
    def entities(self) -> list[str]:
        return list(self._surfaces)

    def value(self, entity: str, name: str) -> CatalogueValue | None:
        return next((v for v in self.values if v.entity == entity and v.name == name), None)

    # -- discovery ---------------------------------------------------------------------

    def find(
        self,
        text: str,
        entities: Iterable[str] | None = None,
        blocked: Iterable[tuple[int, int]] = (),
        boundaries: set[int] | None = None,
    ) -> list[Mention]:
        """Mentions of catalogue values in `text`, outside the `blocked` spans.

        Exact phrases first (longest first), then fuzzy windows on what is left.
        """
        wanted = [e for e in (entities or self.entities) if e in self._surfaces]
        taken = [False] * len(text)
        for start, end in blocked:
            for i in range(max(0, start), min(len(text), end)):
                taken[i] = True
        bounds = boundaries if boundaries is not None else _word_boundaries(text)

        def free(start: int, end: int) -> bool:
            return not any(taken[start:end])

        def cuts_words(start: int, end: int) -> bool:
            return start not in bounds and end not in bounds

        exact: list[Mention] = []
        for entity in wanted:
            for phrase, value in self._exact[entity].items():
                for match in re.finditer(re.escape(phrase), text):
                    s, e = match.span()
                    if not cuts_words(s, e):
                        exact.append(Mention(entity, value.name, s, e, phrase, 1.0, "exact"))
        # Leftmost-longest, like forward maximum matching: 电暖气不热 is 电暖气 (家电), not
        # 暖气不热 (暖气).
        found = self._select(exact, taken, key=lambda m: (m.start, -(m.end - m.start)))
        if not self.fuzzy:
            return sorted(found, key=lambda m: m.start)

        py = char_pinyin(text)
        fz = [_fuzzy_syllable(s) for s in py]
        usable = [bool(_HAN.match(ch)) and not taken[i] for i, ch in enumerate(text)]
        candidates: list[Mention] = []
        for entity in wanted:
            for surface in self._surfaces[entity]:
                if not surface.fuzzy_ok:
                    continue
                length = len(surface.text)
                lengths = (length - 1, length, length + 1) if length >= 4 else (length,)
                for size in lengths:
                    for start in range(0, len(text) - size + 1):
                        end = start + size
                        window = text[start:end]
                        if surface.chars.isdisjoint(window) or not all(usable[start:end]):
                            continue
                        if window == surface.text or not _anchored(window, surface.text):
                            continue
                        if cuts_words(start, end):
                            continue
                        value = _score(
                            window,
                            py[start:end],
                            fz[start:end],
                            surface.text,
                            surface.pinyin,
                            surface.fuzzy,
                        )
                        if value >= self.threshold:
                            candidates.append(
                                Mention(
                                    entity, surface.value.name, start, end, window, value, "fuzzy"
                                )
                            )
        found += self._select(
            candidates, taken, key=lambda m: (-m.score, -(m.end - m.start), m.start)
        )
        return sorted(found, key=lambda m: m.start)

    @staticmethod
    def _select(candidates: list[Mention], taken: list[bool], key: Any) -> list[Mention]:
        chosen = []
        for mention in sorted(candidates, key=key):
            if any(taken[mention.start : mention.end]):
                continue
            for i in range(mention.start, mention.end):
                taken[i] = True
            chosen.append(mention)
        return chosen

    # -- canonicalisation of DIET spans ------------------------------------------------

    def canonical(self, entity: str, text: str) -> Mention | None:
        """The canonical value for a span DIET tagged as `entity`, or None."""
        table = self._exact.get(entity)
        if not table:
            return None
        text = text.strip()
        if text in table:
            return Mention(entity, table[text].name, 0, len(text), text, 1.0, "exact")
        # A longer span around a known phrase (内科的号, 挂个内科).
        contained = [p for p in table if p in text]
        if contained:
            phrase = max(contained, key=len)
            start = text.index(phrase)
            return Mention(
                entity, table[phrase].name, start, start + len(phrase), phrase, 1.0, "exact"
            )
        best: Mention | None = None
        py = char_pinyin(text)
        for surface in self._surfaces[entity]:
            length = len(surface.text)
            for size in {length - 1, length, length + 1}:
                if size < 2 or size > len(text):
                    continue
                for start in range(0, len(text) - size + 1):
                    window = text[start : start + size]
                    value = _score(
                        window,
                        py[start : start + size],
                        [_fuzzy_syllable(s) for s in py[start : start + size]],
                        surface.text,
                        surface.pinyin,
                        surface.fuzzy,
                    )
                    if value >= self.diet_threshold and (best is None or value > best.score):
                        best = Mention(
                            entity, surface.value.name, start, start + size, window, value, "fuzzy"
                        )
        return best

    # -- hazards -----------------------------------------------------------------------

    def hazards(self, text: str) -> list[Hazard]:
        """Non-negated dangerous_when phrases in `text` (exact or same tone-less pinyin)."""
        py = char_pinyin(text)
        found: list[Hazard] = []
        for value in self.values:
            for keyword in value.dangerous_when:
                k_py = char_pinyin(keyword)
                size = len(keyword)
                for start in range(0, len(text) - size + 1):
                    window = text[start : start + size]
                    same = window == keyword or (
                        py[start : start + size] == k_py and _shared_chars(window, keyword) >= 1
                    )
                    if not same:
                        continue
                    if _NEGATION.search(text[max(0, start - 5) : start]):
                        continue
                    found.append(Hazard(value.name, keyword, start, start + size, window))
        return found
