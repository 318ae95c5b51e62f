"""Choose the NLU's blend weight and fallback thresholds by evidence, without the held-out sets.

The held-out sets in eval/data/ only measure; tuning on them would make their figures a lie.
This tool splits the *training* data (stratified by intent, fixed seed) into a training part
and a development part, trains the NLU pipeline of config.yml on the training part with the
fallback and the n-gram blend switched off, fits the n-gram classifier of
`nlu.ngram_intents` on the same part, and then sweeps offline over

* the blend weight of DIET (0 = n-gram model only, 1 = DIET only), and
* the FallbackClassifier threshold and ambiguity threshold,

scoring each setting on the development part by accuracy (a fallback counts as wrong) and by
a utility that makes a wrong intent cost more than a fallback (correct +1, fallback 0,
wrong -1). Why -1 and not more: a fallback makes the resident say it again; a wrong intent
starts the wrong flow, but every flow that writes anything asks first (the slot read back, the
address confirmed, "确定取消吗"), so the resident's "不对"/"算了" undoes it at the cost of about
one more turn. The one flow that acts at once, an emergency, should err towards acting.
Prints the table and the best setting; writes var/eval/tune_nlu.json. Several seeds average
out the luck of one split. It measures and does not assert.

Usage (from the repo root): make tune-nlu
    or .venv/bin/python eval/tuning/tune_nlu.py [--seeds 1 2] [--dev-frac 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from eval.nlu_eval import quiet_libraries  # noqa: E402

DEFAULT_OUT = ROOT / "var" / "eval" / "tune_nlu.json"
WEIGHTS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
THRESHOLDS = [0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]
AMBIGUITIES = [0.0, 0.05, 0.1]
WRONG_COST = 1.0


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


async def diet_rankings(model: Path, texts: list[str]) -> list[dict[str, float]]:
    from rasa.core.agent import Agent

    agent = Agent.load(str(model))
    rankings = []
    for text in texts:
        parsed = await agent.parse_message(text)
        rankings.append(
            {r["name"]: float(r["confidence"]) for r in parsed.get("intent_ranking") or []}
        )
    return rankings


def ngram_rankings(train: Path, texts: list[str]) -> list[dict[str, float]]:
    from rasa.shared.nlu.training_data.loading import load_data

    from nlu.ngram_intents import build_classifier

    examples = load_data(str(train)).intent_examples
    classifier = build_classifier(10.0)
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


def sweep(rows: list[tuple[str, dict[str, float], dict[str, float]]]) -> list[dict[str, Any]]:
    results = []
    for weight in WEIGHTS:
        blended = [(gold, *blend(d, n, weight)) for gold, d, n in rows]
        for threshold in THRESHOLDS:
            for ambiguity in AMBIGUITIES:
                correct = wrong = fallback = 0
                for gold, top, score, second in blended:
                    if score < threshold or score - second < ambiguity:
                        fallback += 1
                    elif top == gold:
                        correct += 1
                    else:
                        wrong += 1
                total = len(blended)
                results.append(
                    {
                        "diet_weight": weight,
                        "threshold": threshold,
                        "ambiguity": ambiguity,
                        "accuracy": correct / total,
                        "wrong": wrong / total,
                        "fallback": fallback / total,
                        "utility": (correct - WRONG_COST * wrong) / total,
                    }
                )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dev-frac", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    quiet_libraries()
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    started = time.perf_counter()
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for seed in args.seeds:
            train, dev = split(seed, args.dev_frac, workdir)
            model = train_nlu(tuning_config(config), train, workdir, seed)
            texts = [text for text, _ in dev]
            diet = asyncio.run(diet_rankings(model, texts))
            ngram = ngram_rankings(train, texts)
            rows += [(gold, d, n) for (_, gold), d, n in zip(dev, diet, ngram, strict=True)]
            print(f"seed {seed}: {len(dev)} development utterances", flush=True)
    results = sweep(rows)
    best_accuracy = max(results, key=lambda r: (r["accuracy"], r["utility"]))
    best_utility = max(results, key=lambda r: (r["utility"], r["accuracy"]))

    print(f"\n{len(rows)} development utterances over seeds {args.seeds}")
    print("no fallback (threshold 0), by DIET weight:")
    print("  weight  accuracy")
    for r in results:
        if r["threshold"] == 0.0 and r["ambiguity"] == 0.0:
            print(f"  {r['diet_weight']:>6.1f}  {r['accuracy']:.3f}")
    print(f"\nbest utility per DIET weight (correct +1, fallback 0, wrong -{WRONG_COST:g}):")
    print("  weight  threshold  ambiguity  accuracy  wrong  fallback  utility")
    for weight in WEIGHTS:
        r = max(
            (r for r in results if r["diet_weight"] == weight),
            key=lambda r: (r["utility"], r["accuracy"]),
        )
        print(
            f"  {weight:>6.1f}  {r['threshold']:>9.2f}  {r['ambiguity']:>9.2f}  "
            f"{r['accuracy']:>8.3f}  {r['wrong']:>5.3f}  {r['fallback']:>8.3f}  {r['utility']:.3f}"
        )
    print(f"\nbest accuracy: {best_accuracy}")
    print(f"best utility:  {best_utility}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "seeds": args.seeds,
                "dev_frac": args.dev_frac,
                "utterances": len(rows),
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
