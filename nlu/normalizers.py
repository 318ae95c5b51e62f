"""Rasa component `ChineseNormalizer`: date, time, address and phone entities made machine-usable.

Runs after DIETClassifier. For every entity DIET found it rewrites `value`; it also scans the
text for mentions DIET missed, so the slots fill even when DIET does not tag them.

Values the dialogue receives (slots copy `value`; the rest is in the entity dict):

* `date`: value = the day, ISO 8601 at 00:00 with offset: "2026-11-19T00:00:00+08:00".
* `time`: value = the ISO 8601 start: "2026-11-19T08:00:00+08:00".
* both: additional_info = {start, end (ISO or null), grain: day|window|minute, date:
  "2026-11-19", text} of the whole expression. 明天上午 yields a `date` entity on 明天 and a
  `time` entity on 上午, resolved together (time value 08:00, additional_info.end 12:00,
  grain window). A time said without a day takes the day of an earlier mention in the same
  sentence, else today/tomorrow (conventions in `nlu.timeparse`). DIET spans that cannot be
  parsed are dropped (`drop_unparsed`).
* `address`: value = "3号楼2单元502" (pieces not said are left out); additional_info =
  {building, unit, room, normalized: true}. An address that does not parse keeps its text
  with additional_info.normalized = false.
* `phone`: value = "13812345678" or "010-87654321"; unparseable DIET spans are dropped.

`now` comes from the message metadata (`metadata["now"]`, ISO 8601; naive values are taken as
Asia/Shanghai) so tests and replays are deterministic, else the wall clock in Asia/Shanghai.
"""

from __future__ import annotations

import logging
from datetime import datetime, time
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message

from nlu import numerals, timeparse

logger = logging.getLogger(__name__)

__all__ = ["ChineseNormalizer", "message_now"]


def message_now(message: Message) -> datetime:
    """The reference time for a message: metadata["now"] if given, else the wall clock."""
    metadata = message.get("metadata") or {}
    raw = metadata.get("now") if isinstance(metadata, dict) else None
    if raw:
        try:
            now = datetime.fromisoformat(str(raw))
        except ValueError:
            logger.warning("ignoring metadata.now %r: not ISO 8601", raw)
        else:
            if now.tzinfo is None:
                now = now.replace(tzinfo=timeparse.SHANGHAI)
            return now.astimezone(timeparse.SHANGHAI)
    return datetime.now(timeparse.SHANGHAI)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _span(entity: dict[str, Any]) -> tuple[int, int] | None:
    if "start" in entity and "end" in entity:
        return int(entity["start"]), int(entity["end"])
    return None


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class ChineseNormalizer(GraphComponent, EntityExtractorMixin):
    """Spoken dates/times to ISO 8601, addresses to 3号楼2单元502, phones to digits."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            # Entity names, as in the domain.
            "date_entity": "date",
            "time_entity": "time",
            "address_entity": "address",
            "phone_entity": "phone",
            # Also add entities for mentions DIET missed.
            "find_missed": True,
            # Remove date/time/phone entities whose text cannot be parsed, so a slot never
            # holds a value the dialogue cannot use.
            "drop_unparsed": True,
        }

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = {**self.get_default_config(), **config}

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ChineseNormalizer:
        return cls(config)

    @staticmethod
    def supported_languages() -> list[str] | None:
        return ["zh"]

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            text = message.get(TEXT)
            if not text:
                continue
            entities = self.normalize(text, list(message.get(ENTITIES, [])), message_now(message))
            message.set(ENTITIES, entities, add_to_output=True)
        return messages

    def normalize(
        self, text: str, entities: list[dict[str, Any]], now: datetime
    ) -> list[dict[str, Any]]:
        """The entities of one message, normalised and completed."""
        cfg = self._config
        date_e, time_e = cfg["date_entity"], cfg["time_entity"]
        address_e, phone_e = cfg["address_entity"], cfg["phone_entity"]
        addresses = numerals.find_addresses(text)
        address_spans = [(a.start, a.end) for a in addresses]
        phones = numerals.find_phones(text)
        matches = timeparse.find_all(text, now)

        result: list[dict[str, Any]] = []
        for entity in entities:
            kind = entity.get("entity")
            if kind in (date_e, time_e):
                updated = self._time_entity(text, entity, matches, address_spans, now)
            elif kind == address_e:
                updated = self._address_entity(text, entity)
            elif kind == phone_e:
                updated = self._phone_entity(text, entity, phones)
            else:
                updated = entity
            if updated is not None:
                result.append(updated)

        if cfg["find_missed"]:
            result += self._missed_times(text, result, matches, address_spans)
            result += self._missed(
                text, result, address_e, [(a.start, a.end, a) for a in addresses]
            )
            result += self._missed(text, result, phone_e, [(p.start, p.end, p) for p in phones])
        return sorted(result, key=lambda e: e.get("start", 0))

    # -- dates and times ---------------------------------------------------------------

    def _time_entity(
        self,
        text: str,
        entity: dict[str, Any],
        matches: list[timeparse.TimeMatch],
        address_spans: list[tuple[int, int]],
        now: datetime,
    ) -> dict[str, Any] | None:
        span = _span(entity)
        surface = text[span[0] : span[1]] if span else str(entity.get("value", ""))
        expr: timeparse.TimeExpr | None = None
        if span is not None:
            if any(_overlaps(span, a) for a in address_spans):
                return None  # 三号楼 tagged as a date
            overlapping = [m for m in matches if _overlaps(span, (m.start, m.end))]
            if overlapping:
                best = max(overlapping, key=lambda m: min(span[1], m.end) - max(span[0], m.start))
                expr = best.expr
        if expr is None:
            expr = timeparse.parse(surface, now)
        if expr is None:
            if self._config["drop_unparsed"]:
                logger.debug("dropping unparseable %s entity %r", entity.get("entity"), surface)
                return None
            return entity
        value = self._value(entity.get("entity"), expr)
        updated = {**entity, "value": value, "text": surface}
        updated["additional_info"] = expr.as_dict()
        return self.add_processor_name(updated)

    def _value(self, kind: Any, expr: timeparse.TimeExpr) -> str:
        """A `date` is the day (00:00 of the start); a `time` is the start itself."""
        if kind == self._config["date_entity"]:
            day = datetime.combine(expr.start.date(), time(0, 0), tzinfo=timeparse.SHANGHAI)
            return day.isoformat()
        return expr.start.isoformat()

    def _missed_times(
        self,
        text: str,
        entities: list[dict[str, Any]],
        matches: list[timeparse.TimeMatch],
        address_spans: list[tuple[int, int]],
    ) -> list[dict[str, Any]]:
        cfg = self._config
        added: list[dict[str, Any]] = []
        for match in matches:
            for kind, part in (
                (cfg["date_entity"], match.date_span),
                (cfg["time_entity"], match.time_span),
            ):
                if part is None or any(_overlaps(part, a) for a in address_spans):
                    continue
                covered = any(
                    e.get("entity") == kind and (s := _span(e)) is not None and _overlaps(s, part)
                    for e in entities
                )
                if covered:
                    continue
                entity = {
                    "entity": kind,
                    "start": part[0],
                    "end": part[1],
                    "value": self._value(kind, match.expr),
                    "text": text[part[0] : part[1]],
                    "additional_info": match.expr.as_dict(),
                }
                added.append(self.add_extractor_name([entity])[0])
        return added

    # -- addresses and phones ----------------------------------------------------------

    def _address_entity(self, text: str, entity: dict[str, Any]) -> dict[str, Any]:
        span = _span(entity)
        surface = text[span[0] : span[1]] if span else str(entity.get("value", ""))
        found = numerals.find_addresses(surface)
        value = numerals.normalize_address(surface)
        if value is None:
            updated = {**entity, "text": surface, "additional_info": {"normalized": False}}
            return self.add_processor_name(updated)
        info: dict[str, Any] = {"normalized": True}
        if found:
            info.update(building=found[0].building, unit=found[0].unit, room=found[0].room)
        else:
            info.update(building=None, unit=None, room=value)
        updated = {**entity, "value": value, "text": surface, "additional_info": info}
        return self.add_processor_name(updated)

    def _phone_entity(
        self, text: str, entity: dict[str, Any], phones: list[numerals.Phone]
    ) -> dict[str, Any] | None:
        span = _span(entity)
        surface = text[span[0] : span[1]] if span else str(entity.get("value", ""))
        value = numerals.extract_phone(surface, allow_local=True)
        if value is None and span is not None:
            # DIET cut the number short: use a number found in the text that overlaps it.
            value = next((p.value for p in phones if _overlaps(span, (p.start, p.end))), None)
        if value is None:
            if self._config["drop_unparsed"]:
                return None
            return entity
        return self.add_processor_name({**entity, "value": value, "text": surface})

    def _missed(
        self,
        text: str,
        entities: list[dict[str, Any]],
        kind: str,
        found: list[tuple[int, int, numerals.Address | numerals.Phone]],
    ) -> list[dict[str, Any]]:
        added: list[dict[str, Any]] = []
        spans = [s for e in entities if e.get("entity") == kind and (s := _span(e)) is not None]
        for start, end, item in found:
            if any(_overlaps((start, end), s) for s in spans):
                continue
            entity: dict[str, Any] = {
                "entity": kind,
                "start": start,
                "end": end,
                "text": text[start:end],
            }
            if isinstance(item, numerals.Address):
                entity["value"] = str(item)
                entity["additional_info"] = {
                    "normalized": True,
                    "building": item.building,
                    "unit": item.unit,
                    "room": item.room,
                }
            else:
                entity["value"] = item.value
            added.append(self.add_extractor_name([entity])[0])
        return added
