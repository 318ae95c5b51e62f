"""Choose the NLU's weights and fallback thresholds by evidence, without the held-out sets.

The held-out sets in eval/data/ only measure; tuning on them would make their figures a lie.
This tool splits the *training* data (stratified by intent, fixed seed) into a training part
and a development part, trains the NLU pipeline of config.yml on the training part with the
fallback and the n-gram blend switched off, fits the n-gram classifier of
`nlu.ngram_intents` on the same part once per sentence-encoder weight, and then sweeps offline
over

* the weight of the sentence vectors beside the n-grams (`encoder_weight`; 0 = n-grams only),
* the blend weight of DIET (0 = n-gram model only, 1 = DIET only), and
* the FallbackClassifier threshold and ambiguity threshold,

scoring each setting on the development part by accuracy (a fallback counts as wrong) and by
a utility that makes a wrong intent cost more than a fallback (correct +1, fallback 0,
wrong -1). Why -1 and not more: a fallback makes the resident say it again; a wrong intent
starts the wrong flow, but every flow that writes anything asks first (the slot read back, the
address confirmed, "确定取消吗"), so the resident's "不对"/"算了" undoes it at the cost of about
one more turn. The one flow that acts at once, an emergency, should err towards acting: a
missed emergency (anything else, or a fallback) costs 5, not 1 or 0.

Residents on the hotline speak through a recogniser, which writes homophones (投素 for 投诉)
and no punctuation; sentence vectors are misled by such words where pinyin n-grams are not.
So every development utterance is scored twice: as written, and "heard": punctuation dropped
and each Chinese character replaced, with probability 0.15, by another character of the
training data with the same toneless pinyin (fixed seed). The utility is the mean over both.
This noise is generic and derived from the training data only; the held-out ASR set is
never read here.

Prints the tables and the best setting; writes var/eval/tune_nlu.json. Several seeds average
out the luck of one split. It measures and does not assert.

Usage (from the repo root): make tune-nlu
    or .venv/bin/python eval/tuning/tune_nlu.py [--seeds 1 2] [--dev-frac 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import random
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from eval.nlu_eval import quiet_libraries  # noqa: E402

DEFAULT_OUT = ROOT / "var" / "eval" / "tune_nlu.json"
ENCODER_WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
WEIGHTS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
THRESHOLDS = [0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]
AMBIGUITIES = [0.0, 0.05, 0.1]
WRONG_COST = 1.0
EMERGENCY = "emergency"
EMERGENCY_MISS_COST = 5.0
HOMOPHONE_RATE = 0.15
CONDITIONS = ("typed", "heard")


def tuning_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.yml without fallback and blend, so DIET's raw ranking reaches the output."""
    tuned = copy.deepcopy(config)
    tuned["pipeline"] = [
        c
        for c in tuned["pipeline"]
        if c["name"] not in ("FallbackClassifier",) and not c["name"].endswith("NgramIntentBlender")
    ]
    for component in tuned["pipeline"]:
        if component["name"] == "DIETClassifier":
            component["ranking_length"] = 0  # all intents, so the blend sees every probability
    return tuned


def split(seed: int, dev_frac: float, workdir: Path) -> tuple[Path, list[tuple[str, str]]]:
    """Write the training part as YAML; return its path and the development (text, intent)."""
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(ROOT / "data" / "nlu"))
    train, dev = data.train_test_split(train_frac=1 - dev_frac, random_seed=seed)
    path = workdir / f"train-{seed}.yml"
    RasaYAMLWriter().dump(path, train)
    return path, [(m.get("text"), m.get("intent")) for m in dev.intent_examples]


def train_nlu(config: dict[str, Any], data: Path, workdir: Path, seed: int) -> Path:
    from rasa.model_training import train_nlu as rasa_train_nlu

    config_path = workdir / f"config-{seed}.yml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    model = rasa_train_nlu(
        config=str(config_path),
        nlu_data=str(data),
        output=str(workdir),
        fixed_model_name=f"tune-{seed}",
        domain=str(ROOT / "bot" / "domain.yml"),
    )
    return Path(model)


def is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def homophones(train: Path) -> dict[str, list[str]]:
    """Toneless pinyin syllable -> the training part's characters that sound like it."""
    from pypinyin import lazy_pinyin
    from rasa.shared.nlu.training_data.loading import load_data

    chars = sorted({ch for m in load_data(str(train)).intent_examples for ch in m.get("text")})
    sounds: dict[str, list[str]] = defaultdict(list)
    for ch in filter(is_han, chars):
        sounds[lazy_pinyin(ch)[0]].append(ch)
    return sounds


def heard(text: str, sounds: dict[str, list[str]], rng: random.Random) -> str:
    """The text as a recogniser might write it: no punctuation or spaces, some homophones."""
    from pypinyin import lazy_pinyin

    out = []
    for ch in text:
        if unicodedata.category(ch)[0] in "PZ":
            continue
        if is_han(ch) and rng.random() < HOMOPHONE_RATE:
            others = [o for o in sounds.get(lazy_pinyin(ch)[0], []) if o != ch]
            ch = rng.choice(others) if others else ch
        out.append(ch)
    return "".join(out)


async def diet_rankings(model: Path, texts: list[str]) -> list[dict[str, float]]:
    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.ERROR)  # no debug line per parsed message
    agent = Agent.load(str(model))
    rankings = []
    for text in texts:
        parsed = await agent.parse_message(text)
        rankings.append(
            {r["name"]: float(r["confidence"]) for r in parsed.get("intent_ranking") or []}
        )
    return rankings


def blender_c(config: dict[str, Any]) -> float:
    """The n-gram classifier's C as config.yml sets it (else the component's default)."""
    from nlu.ngram_intents import NgramIntentBlender

    for component in config["pipeline"]:
        if component["name"].endswith("NgramIntentBlender"):
            return float(component.get("C", NgramIntentBlender.get_default_config()["C"]))
    return float(NgramIntentBlender.get_default_config()["C"])


def ngram_rankings(
    train: Path, texts: list[str], encoder_weight: float, c: float
) -> list[dict[str, float]]:
    from rasa.shared.nlu.training_data.loading import load_data

    from nlu.ngram_intents import build_classifier

    examples = load_data(str(train)).intent_examples
    classifier = build_classifier(c, encoder_weight)
    classifier.fit([m.get("text") for m in examples], [m.get("intent") for m in examples])
    classes = [str(c) for c in classifier.classes_]
    probabilities = classifier.predict_proba(texts)
    return [dict(zip(classes, row.tolist(), strict=True)) for row in probabilities]


def blend(diet: dict[str, float], ngram: dict[str, float], weight: float) -> list[float | str]:
    """Top intent, its score and the runner-up's score of the weighted blend."""
    names = set(diet) | set(ngram)
    scores = sorted(
        ((weight * diet.get(n, 0.0) + (1 - weight) * ngram.get(n, 0.0), n) for n in names),
        reverse=True,
    )
    return [scores[0][1], scores[0][0], scores[1][0] if len(scores) > 1 else 0.0]


# (condition, gold intent, DIET's ranking, the n-gram ranking per encoder weight)
Row = tuple[str, str, dict[str, float], dict[float, dict[str, float]]]


def sweep(rows: list[Row]) -> list[dict[str, Any]]:
    """Every (encoder weight, DIET weight, threshold, ambiguity) scored on the rows."""
    results = []
    for encoder_weight, weight in ((e, w) for e in ENCODER_WEIGHTS for w in WEIGHTS):
        blended = [(cond, gold, *blend(d, n[encoder_weight], weight)) for cond, gold, d, n in rows]
        for threshold in THRESHOLDS:
            for ambiguity in AMBIGUITIES:
                correct = dict.fromkeys(CONDITIONS, 0)
                wrong = fallback = emergencies = missed = 0
                utility = 0.0
                for cond, gold, top, score, second in blended:
                    fell = score < threshold or score - second < ambiguity
                    if fell:
                        fallback += 1
                    elif top == gold:
                        correct[cond] += 1
                        utility += 1
                    else:
                        wrong += 1
                        utility -= WRONG_COST
                    if gold == EMERGENCY:
                        emergencies += 1
                        if fell or top != gold:  # costs EMERGENCY_MISS_COST in all
                            missed += 1
                            utility -= EMERGENCY_MISS_COST - (0.0 if fell else WRONG_COST)
                total = len(blended)
                per_condition = total / len(CONDITIONS)
                results.append(
                    {
                        "encoder_weight": encoder_weight,
                        "diet_weight": weight,
                        "threshold": threshold,
                        "ambiguity": ambiguity,
                        "accuracy": sum(correct.values()) / total,
                        **{f"accuracy_{c}": correct[c] / per_condition for c in CONDITIONS},
                        "wrong": wrong / total,
                        "fallback": fallback / total,
                        "emergency_missed": missed / max(emergencies, 1),
                        "utility": utility / total,
                    }
                )
    return results


def best(results: list[dict[str, Any]], **where: float) -> dict[str, Any]:
    """The setting of best utility (then accuracy) among those matching `where`."""
    return max(
        (r for r in results if all(r[k] == v for k, v in where.items())),
        key=lambda r: (r["utility"], r["accuracy"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dev-frac", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    quiet_libraries()
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    c = blender_c(config)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for seed in args.seeds:
            train, dev = split(seed, args.dev_frac, workdir)
            model = train_nlu(tuning_config(config), train, workdir, seed)
            sounds, rng = homophones(train), random.Random(seed)
            cases = [(cond, text if cond == "typed" else heard(text, sounds, rng), gold)
                     for text, gold in dev for cond in CONDITIONS]  # fmt: skip
            texts = [text for _, text, _ in cases]
            diet = asyncio.run(diet_rankings(model, texts))
            ngram = {e: ngram_rankings(train, texts, e, c) for e in ENCODER_WEIGHTS}
            rows += [
                (cond, gold, d, {e: ngram[e][i] for e in ENCODER_WEIGHTS})
                for i, ((cond, _, gold), d) in enumerate(zip(cases, diet, strict=True))
            ]
            print(f"seed {seed}: {len(dev)} development utterances, typed and heard", flush=True)
    results = sweep(rows)
    best_accuracy = max(results, key=lambda r: (r["accuracy"], r["utility"]))
    best_utility = best(results)

    print(f"\n{len(rows) // 2} development utterances x (typed, heard) over seeds {args.seeds}")
    for cond in CONDITIONS:
        print(f"\n{cond}: accuracy with no fallback, by encoder weight (rows) and DIET weight:")
        print("  encoder " + " ".join(f"{w:>6.1f}" for w in WEIGHTS))
        for e in ENCODER_WEIGHTS:
            cells = [
                best(results, encoder_weight=e, diet_weight=w, threshold=0.0, ambiguity=0.0)
                for w in WEIGHTS
            ]
            print(f"  {e:>7.2f} " + " ".join(f"{r[f'accuracy_{cond}']:>6.3f}" for r in cells))
    print(
        f"\nbest utility per weight pair (correct +1, fallback 0, wrong -{WRONG_COST:g},"
        f" missed emergency -{EMERGENCY_MISS_COST:g}; typed and heard together):"
    )
    print(
        "  encoder  DIET  threshold  ambiguity  typed  heard  wrong  fallback  em.missed  utility"
    )
    for e in ENCODER_WEIGHTS:
        for w in WEIGHTS:
            r = best(results, encoder_weight=e, diet_weight=w)
            print(
                f"  {e:>7.2f}  {w:>4.1f}  {r['threshold']:>9.2f}  {r['ambiguity']:>9.2f}  "
                f"{r['accuracy_typed']:>5.3f}  {r['accuracy_heard']:>5.3f}  {r['wrong']:>5.3f}  "
                f"{r['fallback']:>8.3f}  {r['emergency_missed']:>9.3f}  {r['utility']:.3f}"
            )
    print("\nbest per encoder weight:")
    for e in ENCODER_WEIGHTS:
        r = best(results, encoder_weight=e)
        print(
            f"  encoder {e:.2f}: DIET {r['diet_weight']:.1f}, threshold {r['threshold']:.2f},"
            f" ambiguity {r['ambiguity']:.2f}: typed {r['accuracy_typed']:.3f},"
            f" heard {r['accuracy_heard']:.3f}, wrong {r['wrong']:.3f},"
            f" fallback {r['fallback']:.3f}, emergencies missed {r['emergency_missed']:.3f},"
            f" utility {r['utility']:.3f}"
        )
    print(f"\nbest accuracy: {best_accuracy}")
    print(f"best utility:  {best_utility}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "seeds": args.seeds,
                "dev_frac": args.dev_frac,
                "C": c,
                "utterances": len(rows) // 2,
                "homophone_rate": HOMOPHONE_RATE,
                "emergency_miss_cost": EMERGENCY_MISS_COST,
                "best_accuracy": best_accuracy,
                "best_utility": best_utility,
                "results": results,
                "seconds": round(time.perf_counter() - started),
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {args.out.relative_to(ROOT)} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
