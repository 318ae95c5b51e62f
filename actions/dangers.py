"""The catalogue of dangers (data/emergencies.yml): which danger a resident's words describe and
what to tell them first. The words live in data/ so the community reviews them, not code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from actions.settings import ROOT, settings

CATALOGUE = ROOT / "data" / "emergencies.yml"
FIRE_BRIGADE = "119"


@dataclass(frozen=True)
class Danger:
    id: str
    name: str
    words: tuple[str, ...]
    advice: str
    number: str | None  # "120", "119", "110", "gas" (the configured gas line) or none


@dataclass(frozen=True)
class Catalogue:
    dangers: tuple[Danger, ...]
    unknown_advice: str
    repair_safety: dict[str, str]

    def recognise(self, text: str) -> Danger | None:
        """The first danger, in the catalogue's order, whose words the text contains."""
        compact = re.sub(r"\s+", "", text)
        return next((d for d in self.dangers if any(w in compact for w in d.words)), None)

    def advice(self, danger: Danger | None) -> str:
        if danger is None:
            return self.unknown_advice
        return danger.advice.format(gas_line=gas_line())

    def number(self, danger: Danger | None) -> str | None:
        if danger is None or danger.number is None:
            return None
        return gas_line() if danger.number == "gas" else danger.number

    def repair_advice(self, category: str | None) -> str:
        return self.repair_safety.get(category or "", self.repair_safety["default"])


def gas_line() -> str:
    """The gas company's line where one is configured; the fire brigade takes gas leaks too."""
    return settings().gas_emergency_line or FIRE_BRIGADE


def _sentences(text: str) -> str:
    """YAML folds long lines with a space; Chinese sentences have none."""
    return re.sub(r"\s+", "", text)


def load(path: Path) -> Catalogue:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    dangers = tuple(
        Danger(
            id=str(d["id"]),
            name=str(d["name"]),
            words=tuple(str(w) for w in d["words"]),
            advice=_sentences(d["advice"]),
            number=None if d.get("number") is None else str(d["number"]),
        )
        for d in raw["dangers"]
    )
    ids = [d.id for d in dangers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: a danger id is used twice: {ids}")
    safety = {str(k): _sentences(v) for k, v in raw["repair_safety"].items()}
    if "default" not in safety:
        raise ValueError(f"{path}: repair_safety needs a default")
    return Catalogue(dangers, _sentences(raw["unknown"]["advice"]), safety)


@lru_cache
def catalogue() -> Catalogue:
    return load(CATALOGUE)
