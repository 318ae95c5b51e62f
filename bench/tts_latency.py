"""Time to first audio of hotline replies: pyttsx3 + espeak-ng in worker processes (voice/tts.py).

A reply is returned whole (8 kHz linear PCM, ready for G.711), so time to first audio is the time
from `await Synthesizer.render(text)` to its bytes. Replies are typical bot answers of 20-40
Chinese characters once spoken (dates, times, departments, doctors), each text different so
that nothing is cached unless a phase says so:

  start         worker processes started (python + pyttsx3 + a first render each)
  warm          every prompt of data/voice/prompts.yml, normal and slower, 8 and 16 kHz
  cold ×1       uncached replies, one at a time
  cold ×4       uncached replies, 4 requests in flight at all times
  memory ×1/×4  the same replies again (in-memory cache)
  disk ×1       persisted prompts read by a fresh Synthesizer (a restarted process)

The bench prints a table (p50/p95/max ms, audio seconds per request, real-time factor) and
writes var/bench/tts_latency.json. It measures and never asserts; exit 1 only when synthesis
fails. The cache lives in a temporary directory: var/tts-cache/ is not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/tts_latency.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
from voice.audio import TELEPHONE_RATE
from voice.spoken import to_spoken
from voice.tts import Synthesizer, TtsConfig, TtsError, engine_version, load_prompts

OUT = ROOT / "var" / "bench" / "tts_latency.json"
DEPARTMENTS = ["内科", "外科", "骨科", "眼科", "口腔科", "皮肤科", "心内科", "中医科", "全科"]
DOCTORS = ["王建国", "李红", "张伟", "刘芳", "陈静", "杨帆", "赵敏", "黄磊"]
SERVICES = ["助餐", "助浴", "助洁", "陪同看病"]


def replies(count: int) -> list[str]:
    """Distinct, realistic bot replies, 20-40 characters once spoken."""
    out: list[str] = []
    n = 0
    while len(out) < count:
        month, day, hour = 11 + n % 2, 1 + n % 28, 8 + n % 9
        minute = ("00", "30", "15")[n % 3]
        kind = n % 3
        if kind == 0:
            text = (
                f"好的，已经为您约好{month}月{day}号{hour}:{minute}的"
                f"{DEPARTMENTS[n % len(DEPARTMENTS)]}，{DOCTORS[n % len(DOCTORS)]}医生。"
            )
        elif kind == 1:
            text = (
                f"{SERVICES[n % len(SERVICES)]}服务已经安排在{month}月{day}号{hour}:{minute}，"
                f"工作人员会提前联系您。"
            )
        else:
            text = f"您的报修已经登记，{n % 20 + 1}号楼的维修师傅大约{n % 3 + 1}小时内上门。"
        if 20 <= len(to_spoken(text)) <= 40 and text not in out:
            out.append(text)
        n += 1
    return out


@dataclass
class Phase:
    name: str
    concurrency: int
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float
    audio_s: float  # mean audio seconds per request
    rtf: float  # mean latency / audio duration
    renders: int  # worker renderings during the phase
    errors: int


def summarize(
    name: str, concurrency: int, latencies: list[float], audio: list[float], renders: int
) -> Phase:
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    mean_audio = statistics.fmean(audio) if audio else 0.0
    mean = statistics.fmean(ordered)
    return Phase(
        name=name,
        concurrency=concurrency,
        requests=len(latencies),
        p50_ms=round(1000 * pct(0.5), 2),
        p95_ms=round(1000 * pct(0.95), 2),
        max_ms=round(1000 * ordered[-1], 2),
        mean_ms=round(1000 * mean, 2),
        audio_s=round(mean_audio, 2),
        rtf=round(mean / mean_audio, 4) if mean_audio else 0.0,
        renders=renders,
        errors=0,
    )


async def measure(
    synth: Synthesizer, name: str, texts: list[str], concurrency: int, persist: bool = False
) -> Phase:
    """Every text once, `concurrency` requests in flight at all times."""
    latencies: list[float] = []
    audio: list[float] = []
    errors = 0
    pending = iter(texts)
    renders = synth.stats.renders

    async def client() -> None:
        nonlocal errors
        for text in pending:
            started = time.perf_counter()
            try:
                pcm = await synth.render(text, persist=persist)
            except TtsError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            audio.append(len(pcm) / 2 / TELEPHONE_RATE)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase = summarize(name, concurrency, latencies, audio, synth.stats.renders - renders)
    phase.errors = errors
    return phase


def print_table(phases: list[Phase], start_s: float, warm_s: float, warm_count: int) -> None:
    print()
    print(
        f"TTS time to first audio (whole reply, 8 kHz PCM), {len(phases)} phases; "
        f"workers started in {start_s:.2f} s, {warm_count} prompt renderings warmed in "
        f"{warm_s:.2f} s."
    )
    head = (
        f"{'phase':<12}{'conc':>5}{'reqs':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
        f"{'audio s':>9}{'RTF':>8}{'renders':>9}{'errors':>8}"
    )
    print(head)
    print("-" * len(head))
    for p in phases:
        print(
            f"{p.name:<12}{p.concurrency:>5}{p.requests:>6}{p.p50_ms:>9.1f}{p.p95_ms:>9.1f}"
            f"{p.max_ms:>9.1f}{p.audio_s:>9.2f}{p.rtf:>8.3f}{p.renders:>9}{p.errors:>8}"
        )
    print(
        "RTF = mean latency / audio length (0.01 means 1 s of speech costs 10 ms). 'renders' "
        "counts worker renderings: 0 means every request was a cache hit."
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = replies(args.cold_requests * 2)
    single, multi = texts[: args.cold_requests], texts[args.cold_requests :]
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="linli-bench-tts-") as tmp:
        config = TtsConfig.from_env(cache_dir=Path(tmp) / "tts-cache", workers=args.workers)
        synth = Synthesizer(config)
        try:
            started = time.perf_counter()
            synth.start()
            start_s = time.perf_counter() - started
            started = time.perf_counter()
            warm_count = await synth.warm()
            warm_s = time.perf_counter() - started
            print(f"bench: {args.workers} workers up in {start_s:.2f} s", flush=True)
            phases.append(await measure(synth, "cold", single, 1))
            phases.append(await measure(synth, "cold", multi, 4))
            phases.append(await measure(synth, "memory", single, 1))
            phases.append(await measure(synth, "memory", multi, 4))
        finally:
            synth.close()
        # A restarted process: prompts come from disk, no worker is needed.
        prompts = list(load_prompts().values())
        fresh = Synthesizer(config)
        try:
            phases.append(await measure(fresh, "disk", prompts, 1, persist=True))
        finally:
            fresh.close()
    for phase in phases:
        print(
            f"  {phase.name:<7}x{phase.concurrency}  p50 {phase.p50_ms:8.1f} ms  "
            f"p95 {phase.p95_ms:8.1f} ms  errors {phase.errors}",
            flush=True,
        )
    print_table(phases, start_s, warm_s, warm_count)
    return {
        "bench": "tts_latency",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {
            "voice": config.voice,
            "rate": config.rate,
            "slower_rate": round(config.rate * config.slower_factor),
            "volume": config.volume,
            "workers": config.workers,
            "request_timeout_s": config.request_timeout,
            "engine": engine_version(),
            "reply_chars_spoken": [len(to_spoken(t)) for t in texts],
        },
        "start_s": round(start_s, 3),
        "warm": {"renderings": warm_count, "seconds": round(warm_s, 3)},
        "results": [asdict(p) for p in phases],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--cold-requests",
        type=int,
        default=int(os.environ.get("BENCH_TTS_REQUESTS", "40")),
        help="uncached replies per cold phase (BENCH_TTS_REQUESTS, default 40)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("BENCH_TTS_WORKERS", str(TtsConfig().workers))),
        help="worker processes (BENCH_TTS_WORKERS, default as TtsConfig)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    report = asyncio.run(run(args))
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nbench: results in {OUT.relative_to(ROOT)} ({report['elapsed_s']} s)")
    return 1 if any(p["errors"] for p in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
