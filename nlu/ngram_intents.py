"""Rasa component `NgramIntentBlender`: DIET's intent ranking blended with an n-gram classifier.

Why: on our small Chinese data set DIET alone is under-confident on short and colloquial
utterances (many fall below the fallback threshold although its top intent is right), while a
linear model over character n-grams is robust on exactly those. The two make different
mistakes, so a weighted average of their probabilities is better than either (evidence:
`eval/tune_nlu.py`, recorded in bot/README.md). Pinyin syllable n-grams make the linear model
hear homophones the way a recogniser writes them (投素 = tou su = 投诉).

Place it after DIETClassifier and before FallbackClassifier; it rewrites `intent` and
`intent_ranking` and leaves entities alone.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import joblib
import numpy as np
from pypinyin import lazy_pinyin
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline, make_union

__all__ = ["NgramIntentBlender", "normalise", "pinyin_text"]

INTENT_RANKING = "intent_ranking"
MODEL_FILE = "ngram_intents.joblib"


def normalise(text: str) -> str:
    """NFKC, lower case, no punctuation or whitespace: typed and recognised text look alike."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZSC")


def pinyin_text(text: str) -> str:
    """Toneless pinyin syllables separated by spaces (non-Chinese characters kept as they are)."""
    return " ".join(lazy_pinyin(normalise(text)))


def build_classifier(c: float) -> Pipeline:
    """Character 1-3-grams and pinyin syllable 1-2-grams into one logistic regression."""
    features = make_union(
        TfidfVectorizer(
            analyzer="char", ngram_range=(1, 3), preprocessor=normalise, sublinear_tf=True
        ),
        TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, 2),
            preprocessor=pinyin_text,
            token_pattern=r"\S+",
            sublinear_tf=True,
        ),
    )
    return make_pipeline(features, LogisticRegression(C=c, max_iter=5000))


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class NgramIntentBlender(GraphComponent):
    """Blends DIET's intent probabilities with a char + pinyin n-gram logistic regression."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            # Weight of DIET's probability in the blend; the rest goes to the n-gram model.
            "diet_weight": 0.5,
            # Inverse regularisation strength of the logistic regression.
            "C": 10.0,
            # Intents kept in intent_ranking (Rasa's default is 10).
            "ranking_length": 10,
        }

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        classifier: Pipeline | None = None,
    ) -> None:
        self._config = config
        self._storage = model_storage
        self._resource = resource
        self._classifier = classifier

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> NgramIntentBlender:
        return cls({**cls.get_default_config(), **config}, model_storage, resource)

    @staticmethod
    def required_packages() -> list[str]:
        return ["sklearn", "pypinyin", "joblib"]

    def train(self, training_data: TrainingData) -> Resource:
        examples = [m for m in training_data.intent_examples if m.get(TEXT)]
        labels = {m.get(INTENT) for m in examples}
        if len(labels) >= 2:
            classifier = build_classifier(float(self._config["C"]))
            classifier.fit([m.get(TEXT) for m in examples], [m.get(INTENT) for m in examples])
            self._classifier = classifier
            with self._storage.write_to(self._resource) as directory:
                joblib.dump(classifier, directory / MODEL_FILE)
        return self._resource

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> NgramIntentBlender:
        classifier = None
        try:
            with model_storage.read_from(resource) as directory:
                classifier = joblib.load(directory / MODEL_FILE)
        except ValueError:  # trained on fewer than two intents: nothing was persisted
            pass
        return cls({**cls.get_default_config(), **config}, model_storage, resource, classifier)

    def process(self, messages: list[Message]) -> list[Message]:
        if self._classifier is None:
            return messages
        texts = [m.get(TEXT) or "" for m in messages]
        probabilities = self._classifier.predict_proba(texts)
        classes = [str(c) for c in self._classifier.classes_]
        for message, row in zip(messages, probabilities, strict=True):
            self._blend(message, dict(zip(classes, row.tolist(), strict=True)))
        return messages

    def _blend(self, message: Message, ngram: dict[str, float]) -> None:
        weight = float(self._config["diet_weight"])
        diet = {
            r[INTENT_NAME_KEY]: float(r[PREDICTED_CONFIDENCE_KEY])
            for r in message.get(INTENT_RANKING) or []
        }
        top = message.get(INTENT) or {}
        if not diet and top.get(INTENT_NAME_KEY):
            diet = {top[INTENT_NAME_KEY]: float(top.get(PREDICTED_CONFIDENCE_KEY) or 0.0)}
        if not diet:  # no DIET in the pipeline or an empty text: the n-gram model alone
            weight = 0.0
        names = set(ngram) | set(diet)
        scores = {n: weight * diet.get(n, 0.0) + (1 - weight) * ngram.get(n, 0.0) for n in names}
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        ranking = [
            {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: float(np.round(score, 6))}
            for name, score in ranked[: int(self._config["ranking_length"])]
        ]
        message.set(INTENT, ranking[0], add_to_output=True)
        message.set(INTENT_RANKING, ranking, add_to_output=True)
