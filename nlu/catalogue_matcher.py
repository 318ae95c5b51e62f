"""Rasa component `CatalogueEntityMatcher`: canonical catalogue values, missed mentions, hazards.

The matching itself (scores, thresholds, evidence) is documented in `nlu.catalogue`. Entities
this component produces or rewrites:

* department / care_service / repair_category from DIET: `value` becomes the canonical name,
  `text` keeps what was said, `extractor` stays DIETClassifier, `processors` gets
  CatalogueEntityMatcher, `additional_info` = {canonical, matched, score, method}. A DIET span
  that matches nothing keeps its value with additional_info.canonical = false.
* mentions DIET missed: the same shape with extractor CatalogueEntityMatcher and
  confidence_entity = the match score.
* hazards: repair_category entities get an extra key `dangerous: true`; a separate entity
  `hazard` (value = repair category, e.g. 燃气; additional_info.keyword = 煤气味) is added per
  dangerous phrase. A hazard without any repair_category in the message also adds a
  repair_category entity for its category.
"""

from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message

from nlu.catalogue import (
    CATALOGUE_ENTITIES,
    DEFAULT_DIET_THRESHOLD,
    DEFAULT_THRESHOLD,
    HAZARD_ENTITY,
    CatalogueMatcher,
    Mention,
    load_catalogues,
    resolve_catalogue_dir,
)

__all__ = ["CatalogueEntityMatcher"]


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class CatalogueEntityMatcher(GraphComponent, EntityExtractorMixin):
    """Canonical department / care_service / repair_category values, and hazards.

    Not trainable: it reads the catalogues when the model is loaded, so editing a
    catalogue needs a restart, not a retrain. Place it after DIETClassifier.
    """

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            # Directory of *.yml catalogues; relative paths are tried against the working
            # directory, then the repository root.
            "catalogue_dir": "data/catalogues",
            # Entity types to canonicalise and to look for.
            "entities": list(CATALOGUE_ENTITIES),
            # Look for mentions DIET missed (exact phrases and fuzzy windows).
            "find_missed": True,
            # Fuzzy (homophone / typo) matching on; off = exact phrases only.
            "fuzzy": True,
            "threshold": DEFAULT_THRESHOLD,
            "diet_threshold": DEFAULT_DIET_THRESHOLD,
            # Keep DIET entities that match no catalogue value (value left as said,
            # additional_info.canonical = false) instead of dropping them.
            "keep_unmatched": True,
            # Add `hazard` entities and `dangerous: true` on repair_category entities.
            "hazards": True,
        }

    def __init__(self, config: dict[str, Any], matcher: CatalogueMatcher) -> None:
        self._config = config
        self.matcher = matcher

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> CatalogueEntityMatcher:
        config = {**cls.get_default_config(), **config}
        directory = resolve_catalogue_dir(config["catalogue_dir"])
        matcher = CatalogueMatcher(
            load_catalogues(directory),
            threshold=float(config["threshold"]),
            diet_threshold=float(config["diet_threshold"]),
            fuzzy=bool(config["fuzzy"]),
        )
        return cls(config, matcher)

    @staticmethod
    def required_packages() -> list[str]:
        return ["rapidfuzz", "pypinyin", "jieba"]

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            text = message.get(TEXT)
            if not text:
                continue
            entities = self._process_entities(text, list(message.get(ENTITIES, [])), message)
            message.set(ENTITIES, entities, add_to_output=True)
        return messages

    def _process_entities(
        self, text: str, entities: list[dict[str, Any]], message: Message
    ) -> list[dict[str, Any]]:
        wanted = set(self._config["entities"])
        result: list[dict[str, Any]] = []
        for entity in entities:
            if entity.get("entity") not in wanted:
                result.append(entity)
                continue
            surface = str(entity.get("value", ""))
            if "start" in entity and "end" in entity:
                surface = text[entity["start"] : entity["end"]] or surface
            mention = self.matcher.canonical(entity["entity"], surface)
            if mention is None:
                if not self._config["keep_unmatched"]:
                    continue
                entity = {**entity, "text": surface}
                entity["additional_info"] = {"canonical": False, "matched": surface}
            else:
                entity = {**entity, "value": mention.value, "text": surface}
                entity["additional_info"] = {"canonical": True, **mention.additional_info()}
            result.append(self.add_processor_name(entity))

        if self._config["find_missed"]:
            blocked = [
                (e["start"], e["end"])
                for e in result
                if e.get("entity") in wanted and "start" in e and "end" in e
            ]
            found = self.matcher.find(
                text,
                entities=sorted(wanted),
                blocked=blocked,
                boundaries=_token_boundaries(message, text),
            )
            for mention in found:
                result.append(self._entity(mention))

        if self._config["hazards"]:
            result = self._flag_hazards(text, result)
        return result

    def _entity(self, mention: Mention) -> dict[str, Any]:
        entity = {
            "entity": mention.entity,
            "start": mention.start,
            "end": mention.end,
            "value": mention.value,
            "text": mention.text,
            "confidence_entity": round(mention.score, 3),
            "additional_info": {"canonical": True, **mention.additional_info()},
        }
        return self.add_extractor_name([entity])[0]

    def _flag_hazards(self, text: str, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        hazards = self.matcher.hazards(text)
        if not hazards:
            return entities
        repairs = [e for e in entities if e.get("entity") == "repair_category"]
        present = {e.get("value") for e in repairs}
        flagged_categories: set[str] = set()
        added: list[dict[str, Any]] = []
        seen_spans: set[tuple[int, int]] = set()
        for hazard in hazards:
            # The same keyword may belong to several categories (淹了: 水管, 渗漏 …): use
            # the one the resident named, else the first catalogue listing it.
            if any(hazard.start < e and s < hazard.end for s, e in seen_spans):
                continue  # 被困在: one hazard, not 被困 and 困在
            candidates = [h for h in hazards if (h.start, h.end) == (hazard.start, hazard.end)]
            named = [h for h in candidates if h.category in present]
            chosen = named[0] if named else candidates[0]
            seen_spans.add((hazard.start, hazard.end))
            flagged_categories.add(chosen.category)
            hazard_entity = {
                "entity": HAZARD_ENTITY,
                "start": chosen.start,
                "end": chosen.end,
                "value": chosen.category,
                "text": chosen.text,
                "additional_info": {"keyword": chosen.keyword, "category": chosen.category},
            }
            added.append(self.add_extractor_name([hazard_entity])[0])
        for entity in repairs:
            if entity.get("value") in flagged_categories:
                entity["dangerous"] = True
        if not repairs:
            for hazard_entity in added:
                if hazard_entity["value"] in present:
                    continue
                repair = {
                    "entity": "repair_category",
                    "start": hazard_entity["start"],
                    "end": hazard_entity["end"],
                    "value": hazard_entity["value"],
                    "text": hazard_entity["text"],
                    "dangerous": True,
                    "additional_info": {"canonical": True, "method": "hazard"},
                }
                entities.append(self.add_extractor_name([repair])[0])
                present.add(hazard_entity["value"])
        return entities + added


def _token_boundaries(message: Message, text: str) -> set[int] | None:
    """Word boundaries from the pipeline's tokenizer, when it ran."""
    tokens = message.get(TOKENS_NAMES[TEXT])
    if not tokens:
        return None
    bounds = {0, len(text)}
    for token in tokens:
        bounds.add(token.start)
        bounds.add(token.end)
    return bounds
