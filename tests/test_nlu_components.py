"""The custom Rasa NLU components on real Rasa objects, and a tiny real model trained with them.

Components are built through Rasa's GraphComponent API (`create` with a model storage,
resource and execution context) and run on `Message` objects tokenised by the real
JiebaTokenizer with the project's user dictionary (nlu/jieba/).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import jieba
import numpy as np
import pytest
import yaml
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.shared.nlu.training_data.message import Message

from nlu.catalogue import CatalogueMatcher, load_catalogues
from nlu.catalogue_matcher import CatalogueEntityMatcher
from nlu.ngram_intents import (
    NgramIntentBlender,
    SentenceVectors,
    pinyin_text,
    sentence_encoder,
    sentence_vectors,
)
from nlu.normalizers import ChineseNormalizer

ROOT = Path(__file__).resolve().parent.parent
JIEBA_DIR = ROOT / "nlu" / "jieba"
NOW = "2026-11-18T10:00:00+08:00"  # a Wednesday


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStorage:
    return LocalModelStorage(tmp_path_factory.mktemp("model_storage"))


@pytest.fixture(scope="module")
def context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test-model")


@pytest.fixture(scope="module")
def tokenizer(storage: LocalModelStorage, context: ExecutionContext) -> JiebaTokenizer:
    config = {**JiebaTokenizer.get_default_config(), "dictionary_path": str(JIEBA_DIR)}
    return JiebaTokenizer.create(config, storage, Resource("jieba"), context)


@pytest.fixture(scope="module")
def matcher(storage: LocalModelStorage, context: ExecutionContext) -> CatalogueEntityMatcher:
    config = CatalogueEntityMatcher.get_default_config()
    return CatalogueEntityMatcher.create(config, storage, Resource("catalogue"), context)


@pytest.fixture(scope="module")
def normalizer(storage: LocalModelStorage, context: ExecutionContext) -> ChineseNormalizer:
    config = ChineseNormalizer.get_default_config()
    return ChineseNormalizer.create(config, storage, Resource("normalizer"), context)


def run(
    text: str,
    tokenizer: JiebaTokenizer,
    *components: Any,
    entities: list[dict[str, Any]] | None = None,
    now: str | None = NOW,
) -> list[dict[str, Any]]:
    """Tokenise `text`, add DIET-like `entities`, run `components`, return the entities."""
    data: dict[str, Any] = {"text": text, "entities": entities or []}
    if now is not None:
        data["metadata"] = {"now": now}
    message = Message(data=data)
    tokenizer.process([message])
    for component in components:
        component.process([message])
    return message.get("entities")


def diet(entity: str, text: str, said: str) -> dict[str, Any]:
    """An entity as DIETClassifier would emit it for the substring `said` of `text`."""
    start = text.index(said)
    return {
        "entity": entity,
        "start": start,
        "end": start + len(said),
        "value": said,
        "extractor": "DIETClassifier",
        "confidence_entity": 0.9,
    }


def by_type(entities: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in entities if e["entity"] == kind]


def _load_eval(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- catalogues and data


def test_department_names_match_the_health_centre_schedule() -> None:
    schedule = json.loads((ROOT / "data/health_centre/schedule.json").read_text("utf-8"))
    scheduled = {d["name"] for d in schedule["departments"]}
    catalogue = {
        v.name for v in load_catalogues(ROOT / "data/catalogues") if v.entity == "department"
    }
    assert catalogue == scheduled


def test_catalogues_follow_the_contract() -> None:
    values = load_catalogues(ROOT / "data/catalogues")
    names = {(v.entity, v.name) for v in values}
    contract = {
        "department": "内科 外科 骨科 眼科 口腔科 皮肤科 心内科 中医科 妇科 儿科 耳鼻喉科 全科"
        " 体检",
        "care_service": "助餐 助浴 助洁 助医 助行 陪护 上门护理 家政保洁 理发",
        "repair_category": "水管 下水道 电路 燃气 电梯 门窗 门禁 暖气 家电 照明 渗漏",
    }
    for entity, words in contract.items():
        for name in words.split():
            assert (entity, name) in names, (entity, name)
    # No phrase is listed under two values of the same entity.
    for entity in contract:
        seen: dict[str, str] = {}
        for value in (v for v in values if v.entity == entity):
            for phrase in (value.name, *value.synonyms):
                assert seen.setdefault(phrase, value.name) == value.name, phrase
    gas = next(v for v in values if v.name == "燃气")
    assert {"煤气味", "漏气"} <= set(gas.dangerous_when)


def test_catalogue_matching_on_the_labelled_list() -> None:
    """The evidence behind the thresholds: precision, recall, no hit on the negatives."""
    evaluation = _load_eval("catalogue_matching")
    data = evaluation.load()
    matcher = CatalogueMatcher(load_catalogues(ROOT / "data/catalogues"))
    score = evaluation.score_find(matcher, data["find"])
    report = "\n".join(score.misses + score.false_hits)
    assert score.negatives_hit == 0, report
    assert score.precision >= evaluation.MIN_PRECISION, report
    assert score.recall >= evaluation.MIN_RECALL, report
    canonical, wrong = evaluation.canonical_accuracy(matcher, data["canonical"])
    assert canonical >= 0.9, wrong
    hazard, wrong = evaluation.hazard_accuracy(matcher, data["hazard"])
    assert hazard >= 0.9, wrong


def test_jieba_user_dictionary() -> None:
    """dictionary_path is a directory; JiebaTokenizer loads every file in it as a dictionary."""
    files = sorted(JIEBA_DIR.iterdir())
    assert [f.name for f in files] == ["userdict.txt"]
    for line in files[0].read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        assert 1 <= len(parts) <= 3 and parts[0], line
    JiebaTokenizer._load_custom_dictionary(str(JIEBA_DIR))
    assert "高龄津贴" in jieba.lcut("高龄津贴怎么领")
    assert "口腔科" in jieba.lcut("明天上午的口腔科")


def test_components_are_registered_under_their_module_paths() -> None:
    for name, cls in (
        ("nlu.catalogue_matcher.CatalogueEntityMatcher", CatalogueEntityMatcher),
        ("nlu.normalizers.ChineseNormalizer", ChineseNormalizer),
    ):
        registered = DefaultV1Recipe._from_registry(name)
        assert registered.clazz is cls
        assert DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR in registered.types
        assert registered.is_trainable is False


# ---------------------------------------------------------------- NgramIntentBlender

BLEND_DATA = {
    "complain": ["师傅态度太差我要投诉", "我要投诉物业", "对服务不满意要投诉", "投诉那个护工"],
    "report_repair": ["厨房水管漏水了", "电梯坏了", "楼道灯不亮了", "暖气不热了"],
    "greet": ["你好", "喂有人吗", "在吗", "您好啊"],
}


def train_blender(
    storage: LocalModelStorage, context: ExecutionContext, name: str, **config: Any
) -> NgramIntentBlender:
    from rasa.shared.nlu.training_data.training_data import TrainingData

    component = NgramIntentBlender.create(
        {**NgramIntentBlender.get_default_config(), **config}, storage, Resource(name), context
    )
    examples = [
        Message(data={"text": text, "intent": intent})
        for intent, texts in BLEND_DATA.items()
        for text in texts
    ]
    component.train(TrainingData(training_examples=examples))
    return component


@pytest.fixture(scope="module")
def blender(storage: LocalModelStorage, context: ExecutionContext) -> NgramIntentBlender:
    return train_blender(storage, context, "blender", diet_weight=0.4)


def test_blender_hears_homophones_through_pinyin() -> None:
    assert pinyin_text("我要投素！") == pinyin_text("我要 投诉") == "wo yao tou su"


def test_blender_mixes_diet_with_the_ngram_model(blender: NgramIntentBlender) -> None:
    message = Message(data={"text": "我要投素那个师傅"})
    # DIET alone would say greet, unsure; the n-gram model is sure it is a complaint.
    message.set("intent", {"name": "greet", "confidence": 0.5})
    message.set(
        "intent_ranking",
        [
            {"name": "greet", "confidence": 0.5},
            {"name": "complain", "confidence": 0.3},
            {"name": "report_repair", "confidence": 0.2},
        ],
    )
    ngram = dict(
        zip(
            blender._classifier.classes_,
            blender._classifier.predict_proba(["我要投素那个师傅"])[0],
            strict=True,
        )
    )
    [out] = blender.process([message])
    ranking = {r["name"]: r["confidence"] for r in out.get("intent_ranking")}
    assert out.get("intent")["name"] == "complain"
    assert ranking["complain"] == pytest.approx(0.4 * 0.3 + 0.6 * ngram["complain"], abs=1e-5)
    assert ranking["greet"] == pytest.approx(0.4 * 0.5 + 0.6 * ngram["greet"], abs=1e-5)
    assert out.get("intent")["confidence"] == max(ranking.values())


def test_blender_persists_and_loads(
    blender: NgramIntentBlender, storage: LocalModelStorage, context: ExecutionContext
) -> None:
    loaded = NgramIntentBlender.load({}, storage, Resource("blender"), context)
    [a] = blender.process([Message(data={"text": "电梯不动了"})])
    [b] = loaded.process([Message(data={"text": "电梯不动了"})])
    assert a.get("intent")["name"] == b.get("intent")["name"] == "report_repair"
    assert a.get("intent_ranking") == b.get("intent_ranking")


def sentence_blocks(blender: NgramIntentBlender) -> list[SentenceVectors]:
    assert blender._classifier is not None
    union = blender._classifier.steps[0][1]
    return [t for _, t in union.transformer_list if isinstance(t, SentenceVectors)]


def test_without_an_encoder_weight_the_blender_has_no_sentence_vectors(
    blender: NgramIntentBlender,
) -> None:
    assert NgramIntentBlender.get_default_config()["encoder_weight"] == 0.0
    assert sentence_blocks(blender) == []


def test_blender_with_sentence_vectors_trains_predicts_and_honours_the_weight(
    storage: LocalModelStorage, context: ExecutionContext
) -> None:
    encoded = train_blender(storage, context, "blender-use", diet_weight=0.0, encoder_weight=0.5)
    [block] = sentence_blocks(encoded)
    assert block.weight == 0.5
    # The block's rows are the encoder's unit vectors times the weight.
    rows = block.transform(["电梯不动了", "你好"])
    assert rows.shape == (2, 512)
    assert np.linalg.norm(rows, axis=1) == pytest.approx([0.5, 0.5], abs=1e-4)
    assert rows == pytest.approx(0.5 * sentence_vectors(["电梯不动了", "你好"]), abs=1e-6)
    assert sentence_encoder() is sentence_encoder()  # one encoder per process
    for text, intent in (("电梯不动了", "report_repair"), ("我要投素那个师傅", "complain")):
        [message] = encoded.process([Message(data={"text": text})])
        assert message.get("intent")["name"] == intent, message.get("intent_ranking")
    # The sentence vectors change the probabilities: the weight reaches the classifier.
    plain = train_blender(storage, context, "blender-plain", diet_weight=0.0)
    [a] = encoded.process([Message(data={"text": "我要投素那个师傅"})])
    [b] = plain.process([Message(data={"text": "我要投素那个师傅"})])
    assert a.get("intent_ranking") != b.get("intent_ranking")


def test_blender_with_sentence_vectors_persists_and_loads(
    storage: LocalModelStorage, context: ExecutionContext
) -> None:
    trained = train_blender(storage, context, "blender-use-2", encoder_weight=1.0)
    loaded = NgramIntentBlender.load(
        {"encoder_weight": 1.0}, storage, Resource("blender-use-2"), context
    )
    assert [b.weight for b in sentence_blocks(loaded)] == [1.0]
    [a] = trained.process([Message(data={"text": "楼道灯不亮了"})])
    [b] = loaded.process([Message(data={"text": "楼道灯不亮了"})])
    assert a.get("intent")["name"] == b.get("intent")["name"] == "report_repair"
    assert a.get("intent_ranking") == b.get("intent_ranking")


# ------------------------------------------------------------- CatalogueEntityMatcher


def test_diet_department_is_canonicalised(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher
) -> None:
    text = "我想挂明天上午的内可"
    entities = run(text, tokenizer, matcher, entities=[diet("department", text, "内可")])
    (department,) = by_type(entities, "department")
    assert department["value"] == "内科"
    assert department["text"] == "内可"
    assert (department["start"], department["end"]) == (8, 10)
    assert department["extractor"] == "DIETClassifier"
    assert department["processors"] == ["CatalogueEntityMatcher"]
    assert department["additional_info"]["canonical"] is True


def test_missed_mentions_are_found(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher
) -> None:
    entities = run("我要看眼颗，再约个住浴", tokenizer, matcher)
    values = {(e["entity"], e["value"], e["text"]) for e in entities}
    assert values == {("department", "眼科", "眼颗"), ("care_service", "助浴", "住浴")}
    assert all(e["extractor"] == "CatalogueEntityMatcher" for e in entities)


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("电体坏了", "repair_category", "电梯"),
        ("暖器不热", "repair_category", "暖气"),
        ("煤汽灶打不着", "repair_category", "燃气"),
        ("心脏不舒服想挂个号", "department", "心内科"),
        ("马桶堵了", "repair_category", "下水道"),
        ("能不能给我送饭", "care_service", "助餐"),
    ],
)
def test_synonyms_and_homophones(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher, text: str, entity: str, value: str
) -> None:
    entities = run(text, tokenizer, matcher)
    assert [(e["entity"], e["value"]) for e in by_type(entities, entity)] == [(entity, value)]


@pytest.mark.parametrize(
    "text", ["我是你们的老顾客了", "你们注意点", "我家电脑坏了", "高龄津贴怎么领"]
)
def test_no_catalogue_value_in_ordinary_speech(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher, text: str
) -> None:
    assert run(text, tokenizer, matcher) == []


def test_gas_smell_is_a_hazard(tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher) -> None:
    text = "厨房里一股煤气味"
    entities = run(text, tokenizer, matcher)
    (repair,) = by_type(entities, "repair_category")
    (hazard,) = by_type(entities, "hazard")
    assert repair["value"] == "燃气" and repair["dangerous"] is True
    assert hazard["value"] == "燃气"
    assert hazard["text"] == "煤气味"
    assert hazard["additional_info"] == {"keyword": "煤气味", "category": "燃气"}


def test_hazard_follows_the_named_category(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher
) -> None:
    text = "楼上漏水，滴到楼下了"
    entities = run(text, tokenizer, matcher, entities=[diet("repair_category", text, "楼上漏水")])
    (repair,) = by_type(entities, "repair_category")
    (hazard,) = by_type(entities, "hazard")
    assert repair["value"] == "渗漏" and repair["dangerous"] is True
    assert hazard["value"] == "渗漏"


def test_hazard_without_repair_word_adds_the_category(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher
) -> None:
    entities = run("我被困在里面出不来了", tokenizer, matcher)
    assert {(e["entity"], e["value"]) for e in entities} == {
        ("hazard", "电梯"),
        ("repair_category", "电梯"),
    }


def test_negated_hazard_is_not_dangerous(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher
) -> None:
    entities = run("没有煤气味，就是燃气灶打不着火", tokenizer, matcher)
    assert by_type(entities, "hazard") == []
    repairs = by_type(entities, "repair_category")
    assert {r["value"] for r in repairs} == {"燃气"}  # 煤气, 燃气灶, 打不着火
    assert not any(r.get("dangerous") for r in repairs)


def test_unmatched_diet_value_is_kept_and_marked(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher
) -> None:
    text = "我想挂神经科"
    entities = run(text, tokenizer, matcher, entities=[diet("department", text, "神经科")])
    (department,) = by_type(entities, "department")
    assert department["value"] == "神经科"
    assert department["additional_info"]["canonical"] is False


def test_catalogue_dir_config(
    tmp_path: Path,
    storage: LocalModelStorage,
    context: ExecutionContext,
    tokenizer: JiebaTokenizer,
) -> None:
    (tmp_path / "departments.yml").write_text(
        "entity: department\nvalues:\n  - name: 康复科\n    synonyms: [做康复]\n",
        encoding="utf-8",
    )
    config = {**CatalogueEntityMatcher.get_default_config(), "catalogue_dir": str(tmp_path)}
    component = CatalogueEntityMatcher.create(config, storage, Resource("custom"), context)
    entities = run("想去做康复，顺便看看内科", tokenizer, component)
    assert [(e["entity"], e["value"]) for e in entities] == [("department", "康复科")]


# ------------------------------------------------------------------ ChineseNormalizer


def test_date_and_time_from_diet_and_missed(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    text = "我想挂明天上午的内科"
    entities = run(text, tokenizer, normalizer, entities=[diet("date", text, "明天")])
    (date,) = by_type(entities, "date")
    (time,) = by_type(entities, "time")
    assert date["value"] == "2026-11-19T00:00:00+08:00"
    assert date["extractor"] == "DIETClassifier" and date["processors"] == ["ChineseNormalizer"]
    assert time["value"] == "2026-11-19T08:00:00+08:00"
    assert time["text"] == "上午" and time["extractor"] == "ChineseNormalizer"
    for entity in (date, time):
        assert entity["additional_info"] == {
            "start": "2026-11-19T08:00:00+08:00",
            "end": "2026-11-19T12:00:00+08:00",
            "grain": "window",
            "date": "2026-11-19",
            "text": "明天上午",
        }


def test_whole_expression_tagged_as_date_still_gives_a_time(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    text = "后天下午三点能来吗"
    entities = run(text, tokenizer, normalizer, entities=[diet("date", text, "后天下午三点")])
    (date,) = by_type(entities, "date")
    (time,) = by_type(entities, "time")
    assert date["value"] == "2026-11-20T00:00:00+08:00"
    assert time["value"] == "2026-11-20T15:00:00+08:00"
    assert time["additional_info"]["grain"] == "minute"


def test_day_only_and_range(tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer) -> None:
    entities = run("下礼拜三，八点到十点", tokenizer, normalizer)
    (date,) = by_type(entities, "date")
    (time,) = by_type(entities, "time")
    assert date["value"] == "2026-11-25T00:00:00+08:00"
    assert time["value"] == "2026-11-25T08:00:00+08:00"
    # Only a comma between them: one expression, shared by both entities.
    assert date["additional_info"] == time["additional_info"]
    assert time["additional_info"]["grain"] == "window"
    assert time["additional_info"]["end"] == "2026-11-25T10:00:00+08:00"


def test_separate_mentions_share_the_day(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    entities = run("下礼拜三去医院，上午九点吧", tokenizer, normalizer)
    (date,) = by_type(entities, "date")
    (time,) = by_type(entities, "time")
    assert date["additional_info"]["grain"] == "day"
    assert date["value"] == "2026-11-25T00:00:00+08:00"
    assert time["value"] == "2026-11-25T09:00:00+08:00"
    assert time["additional_info"]["grain"] == "minute"


def test_unparseable_diet_date_is_dropped(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    text = "过些日子再说吧"
    assert run(text, tokenizer, normalizer, entities=[diet("date", text, "过些日子")]) == []


def test_date_inside_an_address_is_dropped(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    text = "我住三号楼二单元"
    entities = run(text, tokenizer, normalizer, entities=[diet("date", text, "三号")])
    assert by_type(entities, "date") == []
    (address,) = by_type(entities, "address")
    assert address["value"] == "3号楼2单元"


def test_address_and_phone(tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer) -> None:
    text = "我住三号楼二单元五零二，电话幺三八一二三四五六七八"
    entities = run(
        text, tokenizer, normalizer, entities=[diet("address", text, "三号楼二单元五零二")]
    )
    (address,) = by_type(entities, "address")
    (phone,) = by_type(entities, "phone")
    assert address["value"] == "3号楼2单元502"
    assert address["additional_info"] == {
        "normalized": True,
        "building": "3",
        "unit": "2",
        "room": "502",
    }
    assert phone["value"] == "13812345678"
    assert phone["extractor"] == "ChineseNormalizer"
    assert phone["text"] == "幺三八一二三四五六七八"


def test_diet_phone_cut_short_is_completed(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    text = "电话一三八 一二三四 五六七八"
    entities = run(text, tokenizer, normalizer, entities=[diet("phone", text, "一三八 一二三四")])
    (phone,) = by_type(entities, "phone")
    assert phone["value"] == "13812345678"


def test_now_from_metadata_or_wall_clock(
    tokenizer: JiebaTokenizer, normalizer: ChineseNormalizer
) -> None:
    (fixed,) = by_type(run("明天", tokenizer, normalizer, now="2027-02-27T09:00:00"), "date")
    assert fixed["value"] == "2027-02-28T00:00:00+08:00"  # naive metadata = Asia/Shanghai
    (clock,) = by_type(run("明天", tokenizer, normalizer, now=None), "date")
    assert clock["value"].endswith("T00:00:00+08:00")


def test_pipeline_order_both_components(
    tokenizer: JiebaTokenizer, matcher: CatalogueEntityMatcher, normalizer: ChineseNormalizer
) -> None:
    text = "闻到煤汽味了，我家在十二号楼三单元一零一，快来人"
    entities = run(text, tokenizer, matcher, normalizer)
    kinds = {(e["entity"], e["value"]) for e in entities}
    assert ("hazard", "燃气") in kinds
    assert ("repair_category", "燃气") in kinds
    assert ("address", "12号楼3单元101") in kinds
    assert not by_type(entities, "date")


# --------------------------------------------------------------- a real trained model

NLU_DATA = """
version: "3.1"
nlu:
- intent: book_medical
  examples: |
    - 我想挂[明天](date)[上午](time)的[内科](department)
    - 帮我挂个[后天](date)的[眼科](department)
    - 挂[下礼拜三](date)的[骨科](department)
    - 我要约[明天](date)[下午](time)的[口腔科](department)
    - 想挂个[内科](department)的号
    - 给我老伴挂个[心内科](department)
    - 预约[后天](date)[上午](time)[体检](department)
    - 我想看[中医科](department)
    - 挂号，[明天](date)的[皮肤科](department)
    - 我想约[下周五](date)的[全科](department)
- intent: report_repair
  examples: |
    - [厨房](location)的[水管](repair_category)漏水了
    - [电梯](repair_category)停了
    - 家里[暖气](repair_category)不热
    - [马桶](repair_category)堵了
    - 我家[燃气](repair_category)打不着火
    - 楼道[照明](repair_category)坏了
    - 报修，[门窗](repair_category)关不上
    - [电路](repair_category)跳闸了
- intent: greet
  examples: |
    - 你好
    - 喂，有人吗
    - 小助手在不在
    - 您好
    - 在吗
    - 喂喂
"""

DOMAIN = """
version: "3.1"
intents: [book_medical, report_repair, greet]
entities: [department, care_service, repair_category, date, time, address, phone, hazard, location]
"""


def test_train_and_parse_with_a_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.core.agent import Agent
    from rasa.core.channels.channel import UserMessage
    from rasa.model_training import train_nlu

    monkeypatch.setenv("RASA_CACHE_DIRECTORY", str(tmp_path / "cache"))
    config = tmp_path / "config.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            recipe: default.v1
            language: zh
            assistant_id: linli-nlu-test
            pipeline:
              - name: JiebaTokenizer
                dictionary_path: {JIEBA_DIR}
              - name: CountVectorsFeaturizer
                analyzer: char_wb
                min_ngram: 1
                max_ngram: 4
              - name: DIETClassifier
                epochs: 40
                random_seed: 7
              - name: nlu.ngram_intents.NgramIntentBlender
                encoder_weight: 0.5
              - name: nlu.catalogue_matcher.CatalogueEntityMatcher
                catalogue_dir: data/catalogues
              - name: nlu.normalizers.ChineseNormalizer
            policies: []
            """
        ),
        encoding="utf-8",
    )
    nlu_file = tmp_path / "nlu.yml"
    nlu_file.write_text(NLU_DATA, encoding="utf-8")
    domain = tmp_path / "domain.yml"
    domain.write_text(DOMAIN, encoding="utf-8")
    assert yaml.safe_load(NLU_DATA)["nlu"]

    model_path = train_nlu(
        config=str(config),
        nlu_data=str(nlu_file),
        output=str(tmp_path / "models"),
        domain=str(domain),
        fixed_model_name="linli-nlu",
    )
    assert model_path and Path(model_path).exists()

    agent = Agent.load(model_path)

    async def parse(text: str) -> dict[str, Any]:
        message = UserMessage(text, metadata={"now": NOW})
        return await agent.processor.parse_message(message)

    result = asyncio.run(parse("我想挂明天上午的内可"))
    assert result["intent"]["name"] == "book_medical"
    ranking = result["intent_ranking"]
    assert [r["name"] for r in ranking][:1] == ["book_medical"] and len(ranking) == 3
    assert abs(sum(r["confidence"] for r in ranking) - 1.0) < 1e-3  # a blend of distributions
    entities = result["entities"]
    departments = by_type(entities, "department")
    assert [d["value"] for d in departments] == ["内科"], entities
    assert departments[0]["text"] == "内可"
    assert [d["value"] for d in by_type(entities, "date")] == ["2026-11-19T00:00:00+08:00"]
    assert [t["value"] for t in by_type(entities, "time")] == ["2026-11-19T08:00:00+08:00"]

    repair = asyncio.run(parse("厨房里一股煤气味"))
    assert {(e["entity"], e["value"]) for e in repair["entities"]} >= {
        ("hazard", "燃气"),
        ("repair_category", "燃气"),
    }
