"""The hotline end to end: real baresip phones call it over SIP/RTP on loopback.

Everything is real except Chinese speech recognition, which these machines cannot do (no
Chinese Vosk model, see ../shared/README.md): each caller's `ScriptedRecogniser` returns the
next line of its script whenever its energy endpointing hears an utterance end in the RTP
audio. The caller's microphone is baresip's `aufile` source, switched to a recording of
Mandarin speech (AISHELL-1) whenever the caller "says" something; synthesis (espeak-ng), the
dialogue core (Rasa with the trained model, action server), the work-order API and the FHIR
stand-in run as in production. Assertions are on the orders, the call records and the audio
the phones received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from gpiozero.pins.mock import MockFactory
from prometheus_client.parser import text_string_to_metric_families

from channels.sos_terminal.audio import RecordingSink
from channels.sos_terminal.device import SPEECH, DeviceConfig, SosTerminal
from channels.sos_terminal.queue import EventQueue
from channels.sos_terminal.signing import Credentials, Signer
from channels.sos_terminal.transport import Outcome, Transport
from channels.sos_terminal.voice_line import (
    ANSWERED,
    DIALING,
    ENDED,
    TALKING,
    UNREACHABLE,
    RecordedAudio,
    VoiceLine,
    VoiceLineConfig,
)
from channels.voice import DialogueClient, DialogueState, parse_turn
from tests.certificates import make_certificates
from tests.dialogue_stack import GAS_LINE, DialogueStack
from tests.factories import resident_body, unique_phone
from tests.prometheus import query, scraping
from tests.servers import free_port
from tests.sip_clients import Baresip, free_sip_port, have_programs
from tests.support import SHARED, Api, Backend, hotline_token
from voice import metrics
from voice.asr import AsrEvent, GrammarSpec, Judge, Recogniser, Scripted, ScriptedRecogniser
from voice.audio import TELEPHONE_RATE, Codec, encode_g711, read_wav, resample, rms, write_wav
from voice.call_flow import CallFlow, CallResult, FlowEvent, Line, sentences
from voice.hotline import Hotline, HotlineSettings, open_endpoint, record_body
from voice.office_hours import say_when
from voice.outbound import Outbound
from voice.outbound_state import SharedState
from voice.sip import EndReason, SipEndpoint
from voice.sip.rtp import RtpPacket
from voice.tts import Synthesizer
from workorders import signing
from workorders.client import WorkOrdersClient
from workorders.contract import TERMINAL_SIP_PREFIX, SosTrigger
from workorders.office_hours import OfficeHours
from workorders.redis_url import connect

ROOT = Path(__file__).resolve().parent.parent
SHARED_AUDIO = SHARED / "audio" / "zh" / "BAC009S0764W0121.wav"
SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_MORNING = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)  # staff at their desks
FRIDAY_EVENING = datetime(2026, 11, 27, 20, 0, tzinfo=SHANGHAI)  # back on Monday 08:30
FRAME = 320  # bytes of 20 ms at 8 kHz


@pytest.fixture(autouse=True)
def _phones_installed() -> None:
    missing = [p for p in have_programs() if p == "baresip"]
    assert not missing, "install baresip (scripts/debian-deps)"


# --- the stack: API, action server, Rasa (one per module: Rasa takes a minute to load) --------


@dataclass
class Stack:
    api: Api
    rasa_url: str
    hotline_token: str

    def resident(self, phone: str) -> dict[str, Any]:
        """A resident the hotline knows by this caller number (a linked phone identity)."""
        body = resident_body(phone=phone, identities=[{"kind": "phone", "value": phone}])
        response = self.api.call("bot", "POST", "/residents", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def orders(self, resident_id: int) -> list[dict[str, Any]]:
        return self.api.call(
            "bot", "GET", "/work-orders", params={"resident_id": resident_id}
        ).json()["items"]

    def call_record(self, record_id: int) -> dict[str, Any]:
        response = self.api.call("agent", "GET", f"/calls/{record_id}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack, sqlite_backend: Backend) -> Stack:
    return Stack(Api(dialogue.api), dialogue.rasa_url, hotline_token(sqlite_backend))


@pytest.fixture(scope="module")
def synthesizer() -> Iterator[Synthesizer]:
    with Synthesizer() as synth:
        asyncio.run(synth.warm(sample_rates=(TELEPHONE_RATE,)))
        yield synth


@contextlib.asynccontextmanager
async def running_hotline(
    stack: Stack,
    synth: Synthesizer,
    scripts: dict[str, list[str | Scripted]],
    *,
    clock: datetime = TUESDAY_MORNING,
    recognisers: dict[str, Recogniser] | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[Hotline, int]]:
    """The hotline on a free port; each caller number has its own scripted recogniser
    (`recognisers` instead: given ones)."""
    if recognisers is None:
        recognisers = {number: ScriptedRecogniser(lines) for number, lines in scripts.items()}
    dialogue = DialogueClient(stack.rasa_url)
    api = WorkOrdersClient(stack.api.base_url, stack.hotline_token)
    hotline = Hotline(
        settings=HotlineSettings(**settings),
        synthesizer=synth,
        dialogue=dialogue,
        recogniser_for=lambda call: recognisers[call.party],
        api=api,
        clock=lambda: clock,
    )
    try:
        async with open_endpoint(hotline, replace(hotline.settings, sip_port=0), api) as endpoint:
            yield hotline, endpoint.port
    finally:
        await dialogue.aclose()
        await api.aclose()


LEASE = 3.0  # s: HOTLINE_LEASE_SECONDS of the hotlines' own calls in these tests


def own_calls_keys() -> str:
    """Where a hotline's own calls stand in Redis (voice/outbound_state.py): the test's alone."""
    return f"linli:test:hotline:{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def calling_out(
    stack: Stack, hotline: Hotline, trunk: str | None = None, keys: str | None = None
) -> AsyncIterator[Outbound]:
    """The hotline's own calls (voice/outbound.py), driven by the API's event stream from now
    on (or from where the hotline before it under `keys` stopped). It dials from an endpoint
    of its own (in production the hotline's, which is the same code on the same host)."""
    api = WorkOrdersClient(stack.api.base_url, stack.hotline_token)
    state = SharedState(connect(os.environ["REDIS_URL"]), keys or own_calls_keys(), LEASE)
    stop = asyncio.Event()
    if not state.client.exists(state.cursor_key):
        # "From now on" must mean now, not whenever the task first polls: on a loaded machine
        # that poll came after the test's SOS, and its callback was never seen.
        state.client.set(state.cursor_key, (await api.events("$"))["last_id"])
    try:
        async with SipEndpoint(hotline, host="127.0.0.1", port=0) as endpoint:
            outbound = Outbound(
                hotline,
                endpoint,
                api,
                trunk=trunk,
                state=state,
                ring_seconds=10,
                retry_after=1,
            )
            task = asyncio.ensure_future(outbound.run(stop))
            try:
                yield outbound
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
    finally:
        await api.aclose()
        state.client.close()


def stream_position(stream_id: bytes | None) -> tuple[int, int]:
    """A Redis stream id as a comparable pair; None (nothing written yet) is the start."""
    milliseconds, _, sequence = (stream_id or b"0-0").decode().partition("-")
    return int(milliseconds), int(sequence)


async def wait_handled(
    outbound: Outbound, count: int, timeout: float = 60.0, kind: str | None = None
) -> None:
    """Until `count` events (of `kind`, if given) have been handled."""
    deadline = time.monotonic() + timeout
    while len([h for h in outbound.handled if kind is None or h[0] == kind]) < count:
        assert time.monotonic() < deadline, f"handled only {outbound.handled}"
        await asyncio.sleep(0.1)


# --- the caller ------------------------------------------------------------------------------


def speech_clip(seconds: float) -> bytes:
    """Real Mandarin (AISHELL-1), telephone rate, starting at the first word."""
    pcm, rate = read_wav(SHARED_AUDIO.read_bytes())
    speech = resample(pcm, rate, TELEPHONE_RATE)
    start = int(0.54 * TELEPHONE_RATE) * 2
    return speech[start : start + int(seconds * TELEPHONE_RATE) * 2]


def loud_seconds(pcm: bytes, threshold: int = 300) -> float:
    frames = (pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME))
    return sum(1 for frame in frames if rms(frame) > threshold) * 0.02


class Caller:
    """A resident on a baresip phone. Speaking switches baresip's microphone (`ausrc`) to a
    file of speech followed by silence; between utterances the line is quiet."""

    def __init__(self, directory: Path, number: str, **phone: Any) -> None:
        self.directory = directory
        self.number = number
        directory.mkdir(parents=True, exist_ok=True)
        quiet = directory / "quiet.wav"
        quiet.write_bytes(write_wav(bytes(2 * TELEPHONE_RATE * 150), TELEPHONE_RATE))
        self.phone = Baresip(directory / "phone", number, quiet, **phone)
        self._clips = 0

    async def __aenter__(self) -> Caller:
        await self.phone.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.phone.stop()

    async def dial(self, port: int, host: str = "127.0.0.1") -> None:
        await self.phone.dial(f"sip:hotline@{host}:{port}")
        await self.phone.wait_event("CALL_ESTABLISHED")

    async def say(self, seconds: float = 1.6) -> float:
        """Start speaking now; returns when (time.monotonic) the speech will have ended."""
        self._clips += 1
        clip = self.directory / f"say-{self._clips}.wav"
        silence = bytes(2 * TELEPHONE_RATE * 150)
        clip.write_bytes(write_wav(speech_clip(seconds) + silence, TELEPHONE_RATE))
        started = time.monotonic()
        await self.phone.command("ausrc", f"aufile,{clip}")
        return started + seconds

    async def press(self, digits: str) -> None:
        await self.phone.send_digits(digits)

    async def hang_up(self) -> None:
        await self.phone.hangup()
        await self.phone.wait_event("CALL_CLOSED")

    def heard(self) -> bytes:
        return self.phone.received_audio()


async def greeted(caller: Caller, hotline: Hotline, port: int, listen: float = 1.0) -> CallFlow:
    """The caller dials and listens to the first `listen` seconds of the greeting."""
    await caller.dial(port)
    flow = await hotline.wait_flow(caller.number)
    await flow.wait_event("say", detail="greeting")
    await asyncio.sleep(listen)
    return flow


async def turn(caller: Caller, flow: CallFlow, seconds: float = 1.6) -> list[FlowEvent]:
    """The caller says something once the hotline listens; the events up to its next wait."""
    since = len(flow.events)
    await caller.say(seconds)
    heard, _ = await flow.wait_event("heard", since=since, timeout=20)
    listening, _ = await flow.wait_event(("listening", "ended"), since=heard, timeout=60)
    return flow.events[heard : listening + 1]


async def stored_record(hotline: Hotline, flow: CallFlow, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while flow.call.call_id not in hotline.stored:
        assert time.monotonic() < deadline, f"no call record stored: {hotline.records}"
        await asyncio.sleep(0.1)
    return hotline.stored[flow.call.call_id]


def spoken(flow: CallFlow, kind: str = "say") -> list[FlowEvent]:
    return [e for e in flow.events if e.kind == kind]


def said_seconds(events: list[FlowEvent]) -> float:
    """Seconds of audio a speech act played in full (the "said" event after it)."""
    done = [e for e in events if e.kind == "said"]
    assert done and done[-1].detail == "done", [(e.kind, e.detail) for e in events]
    return done[-1].value or 0.0


# --- conversations over the telephone --------------------------------------------------------


def scraped_once(port: int, folder: Path, promql: str) -> dict[str, float]:
    """What Debian's Prometheus, scraping 127.0.0.1:`port`, answers to `promql`."""
    (folder / "prometheus").mkdir()
    with scraping("linli-hotline", port, folder / "prometheus") as prometheus:
        return query(prometheus, promql)


def prometheus_values(url: str) -> dict[str, float]:
    """name{label=value,…} → value, of a Prometheus endpoint."""
    values = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


async def test_a_repair_by_phone_becomes_a_hotline_order_for_the_caller(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    resident = stack.resident(number)
    stranger = stack.resident(unique_phone())  # someone else; nothing may land on them
    script = {number: ["厨房水管漏水了", "好的，再见"]}
    async with (
        running_hotline(stack, synthesizer, script) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        metrics_port = free_port()
        metrics.serve(hotline, "127.0.0.1", metrics_port)
        served = f"http://127.0.0.1:{metrics_port}/metrics"
        # The caller knows what to say: interrupts the greeting.
        flow = await greeted(caller, hotline, port, listen=2.0)
        during = await asyncio.to_thread(prometheus_values, served)
        reply = await turn(caller, flow)
        goodbye = await turn(caller, flow)
        await caller.phone.wait_event("CALL_CLOSED", timeout=15)  # the hotline hung up
        record = await stored_record(hotline, flow)
        after = await asyncio.to_thread(prometheus_values, served)
        scraped = await asyncio.to_thread(
            scraped_once, metrics_port, tmp_path, "linli_hotline_calls_answered_total"
        )
    heard = caller.heard()
    assert scraped == {"": 1.0}  # Debian's Prometheus read it too
    assert (during["linli_hotline_calls"], during["linli_hotline_calls_answered_total"]) == (1, 1)
    assert (after["linli_hotline_calls"], after["linli_hotline_calls_answered_total"]) == (0, 1)
    assert after["linli_hotline_sip_total{what=admitted_trusted}"] == 1

    greeting_cut = next(e for e in flow.events if e.kind == "said")
    assert greeting_cut.detail == "cut" and any(e.kind == "barge_in" for e in flow.events)
    answer = next(e for e in reply if e.kind == "answered")
    assert "报修记下了" in answer.detail, answer.detail
    assert any(e.kind == "say" and "报修" in e.detail for e in reply)
    assert any(e.kind == "hangup" for e in goodbye) and flow.result.outcome == "completed"
    assert flow.call.end_reason is EndReason.LOCAL_HANGUP

    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["channel"], order["details"]["category"]) == (
        "repair",
        "hotline",
        "水管",
    )
    assert stack.orders(stranger["id"]) == []

    # What the phone received: the start of the greeting, the confirmation, the goodbye.
    reply_seconds = said_seconds(reply)
    assert reply_seconds > 3.0
    assert loud_seconds(heard) >= 0.6 * (2.0 + reply_seconds), loud_seconds(heard)
    assert loud_seconds(heard) <= len(heard) / 2 / TELEPHONE_RATE

    detail = stack.call_record(record["id"])
    assert (detail["outcome"], detail["resident_id"], detail["order_ids"]) == (
        "completed",
        resident["id"],
        [order["id"]],
    )
    assert detail["caller"] == f"{number[:3]}****{number[-4:]}"
    lines = [(t["speaker"], t["text"]) for t in detail["transcript"]]
    assert ("caller", "厨房水管漏水了") in lines
    assert any(s == "bot" and "报修记下了" in t for s, t in lines)
    assert lines[0][0] == "bot" and "邻里助手" in lines[0][1]


async def test_an_emergency_order_exists_before_the_reply_has_been_played(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    resident = stack.resident(number)
    # Barely recognised (a weak voice, a noisy room): still no "did you say …?" first.
    script: dict[str, list[str | Scripted]] = {number: [Scripted("我摔倒了起不来了", 0.45)]}
    async with (
        running_hotline(stack, synthesizer, script) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        await caller.dial(port)
        flow = await hotline.wait_flow(number)
        await flow.wait_event("say", detail="greeting")
        since = len(flow.events)
        await caller.say(1.6)
        at, advice = await flow.wait_event("say", since=since, timeout=20)
        orders = stack.orders(resident["id"])  # while the advice is being played
        still_playing = not any(e.kind == "said" for e in flow.events[at:])
        await asyncio.sleep(3.5)  # hears the start of the advice, then hangs up to call 120
        await caller.hang_up()
        record = await stored_record(hotline, flow)
    heard = caller.heard()

    assert [(o["kind"], o["priority"], o["channel"]) for o in orders] == [
        ("emergency", "P0", "hotline")
    ]
    assert still_playing, "the order must exist before the advice has been played"
    assert not any("您是说" in e.detail for e in flow.events), "no confirmation first"
    assert orders[0]["details"]["address"]["room"] == "502"  # staff know where to go
    # The advice for the danger at hand comes first, the same words as in the chat; then
    # "are you at home?" with the grammar of its answers (在家 / 不在).
    assert advice.detail.startswith("先别急着起来") and "120" in advice.detail, advice.detail
    assert [e.detail for e in flow.events[since:] if e.kind == "grammar"] == ["at_home"]
    assert loud_seconds(heard) > 1.5  # of 3.5 s: its first clause renders, pauses between
    assert record["order_ids"] == [orders[0]["id"]] and record["outcome"] == "completed"


async def test_an_unknown_callers_emergency_is_told_what_to_do_then_asked_where(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """Nobody knows this number: the gas advice first, then where they are; the number that
    called is the one staff call back, so it is not asked for."""
    number = unique_phone()
    script = {number: ["我家厨房有股煤气味儿", "五号楼一单元三零一"]}
    async with (
        running_hotline(stack, synthesizer, script) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        flow = await greeted(caller, hotline, port)
        first = await turn(caller, flow)
        second = await turn(caller, flow)
        await caller.hang_up()
        record = await stored_record(hotline, flow)
    said = [e.detail for e in first if e.kind == "say"]
    assert said[0].startswith("请马上关掉燃气总阀") and GAS_LINE in said[0], said
    assert said[1:] == [
        "社区已经收到您的紧急求助，工作人员马上联系您。",
        "您现在在哪儿？请说几号楼几单元几号，或者附近有什么地方。",
    ]
    assert [e.detail for e in second if e.kind == "say"] == [
        "好，已经告诉工作人员了，他们正往您那儿赶。有什么变化随时跟我说。"
    ]
    [order_id] = record["order_ids"]
    order = stack.api.call(
        "agent", "GET", f"/work-orders/{order_id}", params={"reveal": "true"}
    ).json()
    assert (order["kind"], order["priority"], order["resident_id"]) == ("emergency", "P0", None)
    assert order["details"]["caller_phone"] == number
    assert order["details"]["address"] == {"building": "5", "unit": "1", "room": "301"}
    assert record["outcome"] == "completed"


async def test_silence_reprompts_twice_then_the_keypad_menu_and_3_starts_a_repair(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    resident = stack.resident(number)
    async with (
        running_hotline(stack, synthesizer, {number: []}, silence_timeout=1.0) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        await caller.dial(port)
        flow = await hotline.wait_flow(number)
        await flow.wait_event("prompt", detail="silence_first", timeout=25)
        await flow.wait_event("prompt", detail="silence_second", timeout=15)
        menu, _ = await flow.wait_event("say", detail="menu", timeout=25)
        await asyncio.sleep(3.0)  # into the menu: 报修请按3 comes after the first two choices
        since = len(flow.events)
        await caller.press("3")
        _, question = await flow.wait_event("answered", since=since, timeout=15)
        await flow.wait_event("say", since=since, detail="什么坏了")
        await asyncio.sleep(1.0)
        await caller.hang_up()  # the repair form has begun (test 1 shows one to the end)
        record = await stored_record(hotline, flow)
    heard = caller.heard()

    prompts = [e.detail for e in flow.events if e.kind == "prompt"]
    assert prompts[:4] == ["greeting", "silence_first", "silence_second", "menu"], prompts
    assert next(e.detail for e in flow.events if e.kind == "sent") == "/report_repair"
    assert "什么坏了" in question.detail, question.detail
    assert any(e.kind == "barge_in" and e.detail == "key" for e in flow.events[menu:])
    assert flow.state is not None and flow.state.active_loop == "repair_form", flow.state
    assert stack.orders(resident["id"]) == []  # nothing half-told becomes an order
    assert (record["outcome"], record["keypad"]) == ("abandoned", "3")
    # greeting 12.7 s + two re-prompts (5.7 s, 13.1 s) + 3 s of menu, mostly voiced
    assert loud_seconds(heard) > 0.6 * (12.7 + 5.7 + 13.1 + 3.0), loud_seconds(heard)


async def test_star_and_saying_it_again_repeat_the_last_reply_more_slowly(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    stack.resident(number)
    async with (
        running_hotline(stack, synthesizer, {number: ["谢谢你啊", "再说一遍"]}) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        flow = await greeted(caller, hotline, port)
        first = await turn(caller, flow)
        since = len(flow.events)
        await caller.press("*")
        await flow.wait_event("key", since=since)
        star_end, _ = await flow.wait_event("listening", since=since, timeout=40)
        star = flow.events[since:star_end]
        again = await turn(caller, flow)
        await caller.hang_up()
    heard = caller.heard()

    welcome = next(e for e in first if e.kind == "answered").detail
    assert "不客气" in welcome, welcome
    normal, by_key, by_voice = said_seconds(first), said_seconds(star), said_seconds(again)
    assert by_key > 1.2 * normal and by_voice > 1.2 * normal, (normal, by_key, by_voice)
    assert [e.detail for e in star if e.kind == "say"] == [
        e.detail for e in first if e.kind == "say"
    ], "the same sentences"
    assert next(e for e in again if e.kind == "answered").detail == welcome  # action_repeat
    assert not any(e.kind == "sent" for e in star), "* is answered by the hotline itself"
    assert loud_seconds(heard) > 0.6 * (1.0 + normal + by_key + by_voice)


async def test_a_booking_by_keypad_and_yes_with_the_grammar_the_dialogue_expects(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    resident = stack.resident(number)
    script = {number: ["帮我挂个下礼拜二的内科", "对"]}
    async with (
        running_hotline(stack, synthesizer, script) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        flow = await greeted(caller, hotline, port)
        since = len(flow.events)
        await caller.say(1.6)
        _, offer = await flow.wait_event("say", since=since, detail="第几个", timeout=30)
        await asyncio.sleep(1.0)
        since = len(flow.events)
        await caller.press("1")  # over the list: the first slot
        _, question = await flow.wait_event("answered", since=since, timeout=20)
        await flow.wait_event("listening", since=since, timeout=30)
        since = len(flow.events)
        await caller.say(1.0)  # 对
        _, booked = await flow.wait_event("answered", since=since, timeout=20)
        await caller.hang_up()  # heard enough; the order is made

    assert [e.detail for e in flow.events if e.kind == "sent"][1] == "第一个"
    assert "对吗" in question.detail, question.detail
    assert [e.detail for e in flow.events if e.kind == "grammar"] == ["ordinal", "yes_no", "free"]
    assert "约好了" in booked.detail, booked.detail
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["channel"]) == ("medical_appointment", "hotline")
    assert order["details"]["department"] == "内科" and offer.detail.startswith("内科")


async def test_repeated_misunderstanding_goes_to_staff_by_refer_in_office_hours(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    resident = stack.resident(number)
    staff_port = free_sip_port()
    extension = f"sip:staff@127.0.0.1:{staff_port}"
    # A dialect the recogniser barely gets (low confidence; the caller denies our guess),
    # then speech it cannot make anything of (the script has run out: nothing recognised).
    script: dict[str, list[str | Scripted]] = {number: [Scripted("我要修水龙头", 0.3), "不是"]}
    async with (
        running_hotline(stack, synthesizer, script, staff_extension=extension) as (hotline, port),
        Caller(tmp_path / "caller", number) as caller,
        Caller(tmp_path / "staff", "staff", sip_port=staff_port, answermode="auto") as staff,
    ):
        flow = await greeted(caller, hotline, port)
        confirm = await turn(caller, flow)
        since = len(flow.events)
        await caller.say(1.6)  # 不是 (no need to let the question finish)
        await flow.wait_event("say", since=since, timeout=20)
        denied = flow.events[since:]
        await caller.say(1.6)  # something nobody could make out, over the reply
        answered = await staff.phone.wait_event("CALL_ESTABLISHED", timeout=40)
        assert await asyncio.wait_for(flow.call.wait_ended(), 10) is EndReason.TRANSFERRED
        await asyncio.sleep(1.0)  # the resident and staff talk
        await caller.hang_up()
        await staff.phone.wait_event("CALL_CLOSED")
        record = await stored_record(hotline, flow)

    assert any(e.kind == "say" and e.detail == "您是说我要修水龙头吗？" for e in confirm)
    assert [e.detail for e in denied if e.kind == "sent"] == ["/nlu_fallback"]
    assert number in answered["peeruri"], "staff see the resident's number, not the hotline's"
    assert [e.detail for e in flow.events if e.kind == "transfer"] == ["refer"]
    callbacks = [o for o in stack.orders(resident["id"]) if o["kind"] == "callback"]
    assert len(callbacks) == 1 and callbacks[0]["channel"] == "hotline"
    assert (record["outcome"], record["transfer_target"]) == ("transferred", extension)
    assert record["order_ids"] == [callbacks[0]["id"]]
    # Handed over on the telephone: the resident's next call starts anew, not in the form that
    # waits for staff (the conversation is the caller's on every call).
    assert flow.state is not None and flow.state.active_loop == "handoff_form"
    assert (await conversation_state(stack, number)).active_loop is None


async def conversation_state(stack: Stack, caller: str) -> DialogueState:
    """The caller's conversation as it is now (it exists: asking starts none)."""
    dialogue = DialogueClient(stack.rasa_url)
    try:
        return await dialogue.conversation(caller).state()
    finally:
        await dialogue.aclose()


async def test_a_caller_whose_line_dropped_calls_again_and_the_form_goes_on(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """A caller we do not know yet is asked who and where; the line drops after the name. The
    new call goes on at the address: the conversation is the caller's, not the call's."""
    number = unique_phone()
    script = {number: ["厨房水管漏水了", "我叫王秀英", "三号楼二单元五零二"]}
    async with (
        running_hotline(stack, synthesizer, script) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        first = await greeted(caller, hotline, port)
        await turn(caller, first)
        asked = await turn(caller, first)
        await caller.hang_up()
        caller.phone.events.clear()
        await caller.dial(port)
        again = await another_flow(hotline, number, first)
        await again.wait_event("say", detail="greeting")
        await asyncio.sleep(1.0)
        reply = await turn(caller, again)
        await caller.hang_up()

    assert next(e for e in asked if e.kind == "answered").detail.startswith("您住在几号楼")
    answer = next(e for e in reply if e.kind == "answered").detail
    assert answer == "请留一个联系电话，方便工作人员找到您。", answer
    assert first.conversation.sender_id == again.conversation.sender_id
    assert number not in again.conversation.sender_id


async def test_0_in_bridge_mode_puts_the_caller_through_to_staff(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """For a PBX without REFER: we call staff ourselves and relay the audio both ways."""
    number = unique_phone()
    resident = stack.resident(number)
    staff_port = free_sip_port()
    extension = f"sip:staff@127.0.0.1:{staff_port}"
    async with (
        running_hotline(
            stack, synthesizer, {number: []}, staff_extension=extension, transfer_mode="bridge"
        ) as (hotline, port),
        Caller(tmp_path / "caller", number) as caller,
        Caller(tmp_path / "staff", "staff", sip_port=staff_port, answermode="auto") as staff,
    ):
        flow = await greeted(caller, hotline, port)
        await caller.press("0")
        answered = await staff.phone.wait_event("CALL_ESTABLISHED", timeout=30)
        await asyncio.sleep(0.5)
        await caller.say(2.0)
        await asyncio.sleep(2.5)
        bridged_at = len(caller.heard())
        await staff.say(2.0)
        await asyncio.sleep(2.5)
        await caller.hang_up()
        await staff.phone.wait_event("CALL_CLOSED")  # the hotline hung up the staff leg
        record = await stored_record(hotline, flow)
        staff_heard, caller_heard = staff.heard(), caller.heard()

    assert number in answered["peeruri"]
    assert [e.detail for e in flow.events if e.kind == "transfer"] == ["bridge"]
    assert loud_seconds(staff_heard) > 0.8, "staff hear the resident"
    assert loud_seconds(caller_heard[bridged_at:]) > 0.8, "the resident hears staff"
    callbacks = [o for o in stack.orders(resident["id"]) if o["kind"] == "callback"]
    assert len(callbacks) == 1
    assert (record["outcome"], record["transfer_target"]) == ("transferred", extension)


async def test_outside_office_hours_the_caller_hears_when_staff_will_call_back(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    number = unique_phone()
    resident = stack.resident(number)
    async with (
        running_hotline(
            stack,
            synthesizer,
            {number: []},
            clock=FRIDAY_EVENING,
            staff_extension="sip:staff@127.0.0.1:9",  # never dialled: nobody is at work
        ) as (hotline, port),
        Caller(tmp_path, number) as caller,
    ):
        flow = await greeted(caller, hotline, port)
        await caller.press("0")  # 转人工
        await caller.phone.wait_event("CALL_CLOSED", timeout=40)  # told, then hung up on
        record = await stored_record(hotline, flow)

    said = [e.detail for e in flow.events if e.kind == "say"]
    assert any("星期一上午八点半" in text for text in said), said
    assert said[-1] == "goodbye" and not any(e.kind == "transfer" for e in flow.events)
    callbacks = [o for o in stack.orders(resident["id"]) if o["kind"] == "callback"]
    assert len(callbacks) == 1, "the dialogue's callback order, and no second one"
    assert (record["outcome"], record["order_ids"]) == ("callback", [callbacks[0]["id"]])
    assert stack.call_record(record["id"])["keypad"] == "0"


async def test_several_calls_at_once_each_for_its_own_resident(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    said = {
        unique_phone(): ("厨房水管漏水了", ("repair", "水管")),
        unique_phone(): ("楼道的灯坏了", ("repair", "灯")),
        unique_phone(): ("我摔倒了起不来了", ("emergency", None)),
    }
    residents = {number: stack.resident(number) for number in said}
    scripts: dict[str, list[str | Scripted]] = {n: [text] for n, (text, _) in said.items()}

    async def one_call(caller: Caller, hotline: Hotline, port: int) -> tuple[CallFlow, float]:
        flow = await greeted(caller, hotline, port)
        events = await turn(caller, flow)
        await caller.hang_up()
        await stored_record(hotline, flow)
        return flow, said_seconds(events)

    async with running_hotline(stack, synthesizer, scripts) as (hotline, port):
        callers = [Caller(tmp_path / n, n) for n in said]
        async with contextlib.AsyncExitStack() as phones:
            for caller in callers:
                await phones.enter_async_context(caller)
            results = await asyncio.gather(*(one_call(c, hotline, port) for c in callers))

    flows = [flow for flow, _ in results]
    starts = [f.events[0].at for f in flows]
    ends = [f.events[-1].at for f in flows]
    assert max(starts) < min(ends), "the calls overlapped"
    for caller, (flow, reply_seconds) in zip(callers, results, strict=True):
        kind, category = said[caller.number][1]
        [order] = stack.orders(residents[caller.number]["id"])
        assert (order["kind"], order["channel"]) == (kind, "hotline")
        assert order["details"].get("category") == category
        assert flow.result.order_ids == [order["id"]]
        assert loud_seconds(caller.heard()) > 0.6 * (1.0 + reply_seconds)


# --- the SOS terminal's voice line ------------------------------------------------------------


class Home:
    """An SOS terminal in a resident's home: provisioned in the API, then (`connected`) the
    device program on mock pins with its voice line to the hotline. No sound card here: the
    microphone plays Mandarin speech when the resident "says" something (RecordedAudio), the
    speaker keeps what it got."""

    def __init__(
        self, stack: Stack, tmp_path: Path, contacts: list[dict[str, Any]] | None = None
    ) -> None:
        self.device_id = f"sos-{uuid.uuid4().hex[:10]}"
        self.caller = f"{TERMINAL_SIP_PREFIX}{self.device_id}"
        self.queue_path = tmp_path / f"{self.device_id}.queue.db"
        self.api_url = stack.api.base_url
        body = resident_body(
            identities=[{"kind": "terminal", "value": self.device_id}], contacts=contacts or []
        )
        made = stack.api.call("bot", "POST", "/residents", json=body)
        assert made.status_code == 201, made.text
        self.resident = made.json()
        made = stack.api.call(
            "agent",
            "POST",
            "/terminals",
            json={"device_id": self.device_id, "resident_id": self.resident["id"]},
        )
        assert made.status_code == 201, made.text
        self.terminal_id = made.json()["id"]
        self.secret = made.json()["secret"]
        self.audio = RecordedAudio()
        self.lights: list[str] = []
        self.spoken: list[str] = []

    @contextlib.contextmanager
    def connected(
        self,
        hotline_port: int,
        *,
        host: str = "127.0.0.1",
        secret: str | None = None,
        tls_ca: Path | None = None,
    ) -> Iterator[Home]:
        """`host`: where the terminal's SIP and RTP come from; `secret`: a different one than
        provisioned (a forged terminal); `tls_ca`: call over TLS (`hotline_port` is then the
        TLS port), trusting this CA, with SRTP."""
        pins = MockFactory()
        config = DeviceConfig()
        self.button = pins.pin(config.button_pin)
        self.device = SosTerminal(
            config,
            EventQueue(self.queue_path),
            Transport(self.api_url, Signer(Credentials(self.device_id, self.secret))),
            pin_factory=pins,
            sink=RecordingSink(),
            speak=self.spoken.append,
            on_light=self.lights.append,
        )
        self.line = VoiceLine(
            VoiceLineConfig(
                f"sip:hotline@127.0.0.1:{hotline_port}" + (";transport=tls" if tls_ca else ""),
                sip_host=host,
                sip_port=0,  # any free port: another run's terminal may hold the usual one
                ca_file=tls_ca,
            ),
            self.device_id,
            lambda: self.audio,
            secret=self.secret if secret is None else secret,
        )
        self.line.start()
        self.device.use_voice(self.line)
        self.device.start(heartbeat=False, reminders=False)
        try:
            yield self
        finally:
            self.device.close()

    async def press(self) -> None:
        """One short press (the device decides "short" after its press gap)."""
        self.button.drive_low()
        await asyncio.sleep(0.15)
        self.button.drive_high()

    async def say(self, flow: CallFlow, seconds: float = 1.6) -> list[FlowEvent]:
        """Speak into the terminal once the hotline listens; the events up to its next wait."""
        since = len(flow.events)
        self.audio.say(speech_clip(seconds))
        heard, _ = await flow.wait_event("heard", since=since, timeout=20)
        listening, _ = await flow.wait_event(("listening", "ended"), since=heard, timeout=60)
        return flow.events[heard : listening + 1]

    async def wait_state(self, state: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while state not in self.line.states:
            assert time.monotonic() < deadline, f"no {state}: {self.line.states}"
            await asyncio.sleep(0.05)


async def test_a_short_press_on_the_terminal_talks_to_the_hotline_as_its_resident(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """No number, no name asked: the terminal's SIP identity is its resident. A second press
    ends the call; the order is the terminal's."""
    home = Home(stack, tmp_path)
    script = {home.caller: ["厨房水管漏水了"]}
    async with running_hotline(stack, synthesizer, script) as (hotline, port):
        with home.connected(port):
            await home.press()
            flow = await hotline.wait_flow(home.caller)
            await home.wait_state(TALKING)
            assert home.device.light == "talking"
            await flow.wait_event("say", detail="greeting")
            await asyncio.sleep(1.0)
            reply = await home.say(flow)
            await home.press()  # done: the same button hangs up
            await home.wait_state(ENDED)
            record = await stored_record(hotline, flow)

    assert home.line.states == [DIALING, TALKING, ENDED]
    assert home.lights == ["talking", "off"]
    # Even from the trusted host, a terminal-… caller proved who it is (SIP digest).
    assert hotline.stats() == {"calls_answered": 1, "challenged": 1, "admitted_authenticated": 1}
    answer = next(e for e in reply if e.kind == "answered")
    assert "报修记下了" in answer.detail, answer.detail
    [order] = stack.orders(home.resident["id"])
    assert (order["kind"], order["channel"]) == ("repair", "terminal")
    assert flow.call.end_reason is EndReason.REMOTE_HANGUP
    # The resident heard the greeting's start and the whole answer through the speaker.
    assert loud_seconds(bytes(home.audio.heard)) > 0.6 * (1.0 + said_seconds(reply))
    detail = stack.call_record(record["id"])
    assert (detail["channel"], detail["resident_id"], detail["order_ids"]) == (
        "terminal",
        home.resident["id"],
        [order["id"]],
    )


async def test_a_terminal_on_an_untrusted_network_is_its_resident_only_with_its_secret(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """From 127.0.0.2 (not a trusted peer): a device with another secret is challenged and
    refused (403), nothing is answered; the provisioned one is challenged, answers with the
    password derived from its secret (the hotline checks it with HA1 from the API) and
    talks as its resident."""
    home = Home(stack, tmp_path)
    async with running_hotline(stack, synthesizer, {home.caller: []}) as (hotline, port):
        with home.connected(port, host="127.0.0.2", secret=signing.new_secret()):
            await home.press()
            await home.wait_state(UNREACHABLE)
        assert hotline.stats() == {"calls_answered": 0, "challenged": 1, "refused_auth": 1}
        with home.connected(port, host="127.0.0.2"):
            await home.press()
            flow = await hotline.wait_flow(home.caller)
            await flow.wait_event("say", detail="greeting")
            await asyncio.sleep(1.5)
            await home.press()
            await home.wait_state(ENDED)
            record = await stored_record(hotline, flow)
        assert hotline.stats() == {
            "calls_answered": 1,
            "challenged": 2,
            "refused_auth": 1,
            "admitted_authenticated": 1,
        }
    assert (flow.call.caller, flow.call.peer_host) == (home.caller, "127.0.0.2")
    detail = stack.call_record(record["id"])
    assert (detail["channel"], detail["resident_id"]) == ("terminal", home.resident["id"])
    assert loud_seconds(bytes(home.audio.heard)) > 0.5  # RTP both ways from 127.0.0.2


async def another_flow(hotline: Hotline, caller: str, seen: CallFlow) -> CallFlow:
    """The flow of this caller's next call, after `seen`."""
    deadline = time.monotonic() + 30
    while True:
        found = [f for f in hotline.flows.values() if f.call.party == caller and f is not seen]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "no second call arrived"
        await asyncio.sleep(0.05)


async def test_a_terminal_over_tls_with_srtp_is_understood(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """Encrypted end to end: baresip as the SOS terminal calls over TLS with mandatory SRTP
    and digest; it speaks, the hotline understands it as the terminal's resident. Then the
    device's own voice line calls over TLS and SRTP too."""
    home = Home(stack, tmp_path)
    pki = make_certificates(tmp_path / "pki")
    script = {home.caller: ["厨房水管漏水了"]}
    tls = {"tls_cert": pki.certificate, "tls_key": pki.key, "tls_port": 0}
    async with running_hotline(stack, synthesizer, script, **tls) as (hotline, _):
        assert hotline.endpoint is not None
        tls_port = hotline.endpoint.tls_port
        terminal = Caller(
            tmp_path / "baresip",
            home.caller,
            auth_pass=signing.sip_password(home.secret),
            account_params=";mediaenc=srtp-mand",
            extra_config=f"module srtp.so\nsip_cafile {pki.ca}\n",
        )
        async with terminal:
            await terminal.phone.dial(f"sip:hotline@127.0.0.1:{tls_port};transport=tls")
            await terminal.phone.wait_event("CALL_ESTABLISHED")
            flow = await hotline.wait_flow(home.caller)
            await flow.wait_event("say", detail="greeting")
            await asyncio.sleep(1.0)
            reply = await turn(terminal, flow)
            await terminal.hang_up()
            await stored_record(hotline, flow)
        with home.connected(tls_port, tls_ca=pki.ca):
            await home.press()
            line = await another_flow(hotline, home.caller, flow)
            await line.wait_event("say", detail="greeting")
            await asyncio.sleep(1.0)
            await home.press()
            await home.wait_state(ENDED)
        stats = hotline.stats()

    answer = next(e for e in reply if e.kind == "answered")
    assert "报修记下了" in answer.detail, answer.detail
    [order] = stack.orders(home.resident["id"])
    assert (order["kind"], order["channel"]) == ("repair", "terminal")
    for call in (flow.call, line.call):
        assert hotline.endpoint.secure(call) and call.media and call.media.crypto
    assert stats == {"calls_answered": 2, "challenged": 2, "admitted_authenticated": 2}
    assert loud_seconds(terminal.heard()) > 0.6 * (1.0 + said_seconds(reply))
    assert loud_seconds(bytes(home.audio.heard)) > 0.5


class Listening:
    """A scripted recogniser that keeps every byte of audio it was given, so a test can say
    exactly what the recogniser heard."""

    def __init__(self) -> None:
        self.scripted = ScriptedRecogniser()
        self.endpointing = self.scripted.endpointing
        self.audio = bytearray()

    def session(
        self, sample_rate: int, grammar: GrammarSpec = None, judge: Judge | None = None
    ) -> Listening.Session:
        return Listening.Session(self, self.scripted.session(sample_rate, grammar, judge))

    class Session:
        def __init__(self, owner: Listening, inner: Any) -> None:
            self.owner, self.inner = owner, inner
            self.sample_rate = inner.sample_rate

        def accept(self, pcm: bytes) -> list[AsrEvent]:
            self.owner.audio += pcm
            return self.inner.accept(pcm)

        def set_grammar(self, grammar: GrammarSpec) -> list[AsrEvent]:
            return self.inner.set_grammar(grammar)

        def finish(self) -> list[AsrEvent]:
            return self.inner.finish()


async def test_rtp_injected_from_other_addresses_never_reaches_the_recogniser(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """A caller on a silent line; loud speech sent to the call's RTP port from another host
    and from another port of the caller's host is dropped and counted: the recogniser got
    silence and nothing but silence."""
    number = unique_phone()
    stack.resident(number)
    listening = Listening()
    speech = encode_g711(speech_clip(2.0), Codec.PCMU)
    async with (
        running_hotline(stack, synthesizer, {}, recognisers={number: listening}) as (
            hotline,
            port,
        ),
        Caller(tmp_path, number) as caller,
    ):
        flow = await greeted(caller, hotline, port, listen=0.5)
        target = ("127.0.0.1", flow.call.rtp.local_port)
        sent = 0
        for host in ("127.0.0.2", "127.0.0.1"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as injector:
                injector.bind((host, 0))
                for i in range(0, len(speech), 160):
                    packet = RtpPacket(0, i // 160, i, 0xBAD, speech[i : i + 160])
                    injector.sendto(packet.encode(), target)
                    sent += 1
        deadline = time.monotonic() + 10
        while flow.call.rtp.foreign_packets < sent:
            assert time.monotonic() < deadline, (flow.call.rtp.foreign_packets, sent)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # what was received so far has gone on to the recogniser
        await caller.hang_up()
        await stored_record(hotline, flow)
        counted = hotline.stats()["rtp_foreign_dropped"]

    assert (flow.call.rtp.foreign_packets, counted) == (sent, sent)
    heard = bytes(listening.audio)
    assert len(heard) > 2 * TELEPHONE_RATE  # over a second of the caller's line
    assert heard == bytes(len(heard)), "the recogniser heard something other than silence"
    assert not [e for e in flow.events if e.kind in ("heard", "barge_in")]
    assert listening.scripted.delivered == []


async def test_a_terminal_that_cannot_reach_the_hotline_says_so(
    stack: Stack, tmp_path: Path
) -> None:
    async def never(call: object) -> None:
        raise AssertionError("a full hotline answers no call")

    home = Home(stack, tmp_path)
    async with SipEndpoint(never, host="127.0.0.1", port=0, max_calls=0) as full:  # 486 Busy
        with home.connected(full.port):
            await home.press()
            await home.wait_state(UNREACHABLE)
            home.device.audio.flush(5)
    assert home.line.states == [DIALING, UNREACHABLE]
    assert home.spoken == [SPEECH["voice_unreachable"]] and home.lights == ["talking", "off"]


def history(stack: Stack, order_id: int, action: str) -> list[str]:
    order = stack.api.call("agent", "GET", f"/work-orders/{order_id}").json()
    return [h["reason"] for h in order["history"] if h["action"] == action]


async def test_after_an_sos_the_hotline_calls_the_terminal_back(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """The SOS order's `callback.requested` makes the hotline call the terminal at the address
    its heartbeat reported; the terminal answers by itself and the resident talks."""
    home = Home(stack, tmp_path)
    script = {home.caller: ["好的，谢谢"]}
    async with (
        running_hotline(stack, synthesizer, script) as (hotline, port),
        calling_out(stack, hotline) as outbound,
    ):
        with home.connected(port):
            assert home.device.send_heartbeat().outcome is Outcome.delivered
            home.device.raise_sos(SosTrigger.hold)
            flow = await hotline.wait_flow(home.caller, timeout=30)
            await home.wait_state(TALKING)
            _, opening = await flow.wait_event("say", detail="callback_sos")
            await flow.wait_event("listening", timeout=30)
            await home.say(flow)
            await home.press()  # the resident is done: the button hangs up
            await home.wait_state(ENDED)
            await wait_handled(outbound, 1)
            record = await stored_record(hotline, flow)

    assert home.line.states == [ANSWERED, TALKING, ENDED]
    assert outbound.handled == [("callback.requested", "talked")]
    [order] = stack.orders(home.resident["id"])
    assert (order["kind"], order["priority"], order["channel"]) == ("emergency", "P0", "terminal")
    [note] = [n for n in history(stack, order["id"], "note") if n.startswith("已回拨")]
    assert note.startswith("已回拨一键呼叫终端，与居民通话") and f"#{record['id']}" in note
    detail = stack.call_record(record["id"])
    assert (detail["channel"], detail["resident_id"]) == ("terminal", home.resident["id"])
    assert ("caller", "好的，谢谢") in [(t["speaker"], t["text"]) for t in detail["transcript"]]
    assert loud_seconds(bytes(home.audio.heard)) > 0.8 * opening.value  # heard in full


async def test_a_callback_the_resident_does_not_speak_in_asks_staff_to_go_at_once(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """The terminal answers by itself, so silence may mean the resident cannot speak: no
    keypad menu (it has no keys), and the order asks for a visit now."""
    home = Home(stack, tmp_path)
    async with (
        running_hotline(stack, synthesizer, {home.caller: []}, silence_timeout=1.0) as (
            hotline,
            port,
        ),
        calling_out(stack, hotline) as outbound,
    ):
        with home.connected(port):
            assert home.device.send_heartbeat().outcome is Outcome.delivered
            home.device.raise_sos(SosTrigger.triple)
            # Wait for what the outbound call reports once its flow has ended, however long a
            # loaded machine takes for the SOS, the event, the dial and the three prompts; the
            # deadline only catches a hang (the flows of finished calls are kept).
            await wait_handled(outbound, 1, timeout=240)
            flow = await hotline.wait_flow(home.caller, timeout=1)
            await home.wait_state(ENDED)

    assert outbound.handled == [("callback.requested", "silent")]
    assert [e.detail for e in spoken(flow, "prompt")] == [
        "callback_sos",
        "silence_first",
        "silence_second_spoken",
        "silence_goodbye",
    ]
    [order] = stack.orders(home.resident["id"])
    assert any("居民没有说话：请立即上门查看" in n for n in history(stack, order["id"], "note"))


async def test_a_family_contact_is_phoned_and_pressing_1_stops_the_escalation(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """Through the trunk (a baresip phone here), the daughter hears who pressed the button
    and where, presses 1; the order records it and the chain stops. No heartbeat came from
    the terminal, so the callback cannot be placed: the order says so."""
    phone = unique_phone()
    daughter = {"name": "王丽", "relation": "女儿", "phone": phone}
    home = Home(stack, tmp_path, contacts=[daughter])
    family_port = free_sip_port()
    async with (
        Caller(tmp_path / "family", phone, sip_port=family_port, answermode="auto") as family,
        running_hotline(stack, synthesizer, {}) as (hotline, port),
        calling_out(stack, hotline, trunk=f"127.0.0.1:{family_port}") as outbound,
    ):
        with home.connected(port):
            home.device.raise_sos(SosTrigger.triple)
            await family.phone.wait_event("CALL_ESTABLISHED", timeout=30)
            await asyncio.sleep(6.0)  # who, where: the message's first sentences
            await family.press("1")
            await family.phone.wait_event("CALL_CLOSED", timeout=30)
            await wait_handled(outbound, 2)

    assert sorted(outbound.handled) == [
        ("callback.requested", "no_contact"),
        ("notification.requested", "acknowledged"),
    ]
    [order] = stack.orders(home.resident["id"])
    assert history(stack, order["id"], "notification_result") == [
        "电话通知紧急联系人王丽（女儿）：已接听并按1确认收到"
    ]
    assert history(stack, order["id"], "escalation_stopped") == [
        "紧急联系人王丽（女儿）已确认，停止逐级通知"
    ]
    assert any("没有报告通话地址" in n for n in history(stack, order["id"], "note"))
    assert loud_seconds(family.heard()) > 4.0


async def test_a_notification_cut_off_by_a_restart_is_made_again(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path, redis_client: redis.Redis
) -> None:
    """At least once: the hotline stops while the daughter's phone rings; the stream position
    stays before that event, so the restarted hotline rings her again and she confirms."""
    phone = unique_phone()
    home = Home(stack, tmp_path, contacts=[{"name": "王丽", "relation": "女儿", "phone": phone}])
    family_port = free_sip_port()
    trunk, keys = f"127.0.0.1:{family_port}", own_calls_keys()
    cursor = f"{keys}:cursor"

    def rings() -> int:
        return sum(e.get("type") == "CALL_INCOMING" for e in family.phone.events)

    async with (
        Caller(tmp_path / "family", phone, sip_port=family_port) as family,  # answers by hand
        running_hotline(stack, synthesizer, {}) as (hotline, port),
    ):
        async with calling_out(stack, hotline, trunk, keys) as first:
            with home.connected(port):
                home.device.raise_sos(SosTrigger.triple)
                await family.phone.wait_event("CALL_INCOMING", timeout=30)
        stopped_at = stream_position(redis_client.get(cursor))
        async with calling_out(stack, hotline, trunk, keys) as again:
            deadline = time.monotonic() + 30
            while rings() < 2:
                assert time.monotonic() < deadline, "the restarted hotline did not call again"
                await asyncio.sleep(0.1)
            await family.phone.command("accept")
            await family.phone.wait_event("CALL_ESTABLISHED", timeout=10)
            await family.press("1")
            await wait_handled(again, 1, kind="notification.requested")

    assert [h for h in first.handled if h[0] == "notification.requested"] == []
    # (The callback event after it is handled again too: at least once, not exactly once.)
    assert ("notification.requested", "acknowledged") in again.handled
    assert stream_position(redis_client.get(cursor)) > stopped_at  # now past it
    [order] = stack.orders(home.resident["id"])
    assert history(stack, order["id"], "notification_result") == [
        "电话通知紧急联系人王丽（女儿）：已接听并按1确认收到"
    ]


async def test_of_two_hotlines_one_places_each_call_and_the_other_takes_over(
    stack: Stack, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    """Two hotlines (hosts, in production) follow the stream under one lease: the daughter's
    phone rings once for her mother's SOS. The holder stops; the other takes the lease at once
    and rings her once for her father's. (A holder that dies: tests/cluster.)"""
    phone = unique_phone()
    daughter = [{"name": "王丽", "relation": "女儿", "phone": phone}]
    mother, father = Home(stack, tmp_path, daughter), Home(stack, tmp_path, daughter)
    trunk, keys = f"127.0.0.1:{free_sip_port()}", own_calls_keys()

    async def confirmed(home: Home, port: int, holder: Outbound) -> None:
        with home.connected(port):
            home.device.raise_sos(SosTrigger.triple)
            await family.phone.wait_event("CALL_ESTABLISHED", timeout=30)
            await family.press("1")
            await family.phone.wait_event("CALL_CLOSED", timeout=30)
            await wait_handled(holder, 2)

    async with (
        Caller(
            tmp_path / "family", phone, sip_port=int(trunk.split(":")[1]), answermode="auto"
        ) as family,
        running_hotline(stack, synthesizer, {}) as (hotline, port),
        contextlib.AsyncExitStack() as second_host,
    ):
        async with calling_out(stack, hotline, trunk, keys) as first:
            await until_true(lambda: first.holding)
            other = await second_host.enter_async_context(calling_out(stack, hotline, trunk, keys))
            await confirmed(mother, port, first)
            assert (first.holding, other.holding) == (True, False)
        family.phone.events.clear()
        await until_true(lambda: other.holding, seconds=3.0)  # released: no lapse to wait for
        await confirmed(father, port, other)

    answered = ("notification.requested", "acknowledged")
    assert sorted(first.handled) == [("callback.requested", "no_contact"), answered]
    assert sorted(other.handled) == [("callback.requested", "no_contact"), answered]
    for home in (mother, father):
        [order] = stack.orders(home.resident["id"])
        assert history(stack, order["id"], "notification_result") == [
            "电话通知紧急联系人王丽（女儿）：已接听并按1确认收到"
        ]


async def until_true(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.05)


# --- pieces without a telephone ----------------------------------------------------------------


def test_the_call_record_masks_numbers_in_the_transcript() -> None:
    when = datetime(2026, 11, 24, 2, 0, tzinfo=ZoneInfo("UTC"))
    result = CallResult(
        started_at=when,
        ended_at=when,
        outcome="completed",
        transcript=[
            Line(when, "caller", "我电话是幺三八零零幺三八零零零", 0.9),
            Line(when, "caller", "身份证110101194501011234", 0.9),
            Line(when, "bot", "好的，记下了13800138000。"),
        ],
        order_ids=[5],
        keypad="3*",
    )

    class FakeCall:
        call_id, party = "abc@127.0.0.1", "13800138000"

    body = record_body(FakeCall(), result, 7, [5])  # type: ignore[arg-type]
    texts = [line["text"] for line in body["transcript"]]
    assert texts == [
        "我电话是幺三八****八零零零",
        "身份证1101**********1234",
        "好的，记下了138****8000。",
    ]
    assert body["caller"] == "13800138000"  # stored encrypted by the API, shown masked
    assert (body["keypad"], body["order_ids"], body["resident_id"]) == ("3*", [5], 7)
    assert body["channel"] == "hotline"

    FakeCall.party = f"{TERMINAL_SIP_PREFIX}sos-0007"  # a terminal: no number; its resident
    terminal = record_body(FakeCall(), result, 7, [5])  # type: ignore[arg-type]
    assert (terminal["channel"], terminal["caller"]) == ("terminal", None)


def test_office_hours_and_when_the_call_back_comes() -> None:
    hours = OfficeHours.parse("mon-fri 08:30-17:30", "Asia/Shanghai")
    assert hours.is_open(TUESDAY_MORNING) and not hours.is_open(FRIDAY_EVENING)
    monday = hours.next_opening(FRIDAY_EVENING)
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 8, 30)
    assert say_when(monday, FRIDAY_EVENING, hours.zone) == "星期一上午八点半"
    early = datetime(2026, 11, 24, 7, 0, tzinfo=SHANGHAI)
    assert say_when(hours.next_opening(early), early, hours.zone) == "今天上午八点半"
    night = datetime(2026, 11, 24, 22, 0, tzinfo=SHANGHAI)
    assert say_when(hours.next_opening(night), night, hours.zone) == "明天上午八点半"
    weekend = OfficeHours.parse("sat-sun 14:00-16:00")
    assert say_when(weekend.next_opening(night), night, weekend.zone) == "星期六下午两点"
    with pytest.raises(ValueError):
        OfficeHours.parse("weekdays 9-5")


def test_replies_and_their_hints_from_the_rest_channel() -> None:
    turn = parse_turn(
        [
            {"recipient_id": "x", "text": "内科有这几个时间：第1个……您要第几个？"},
            {"recipient_id": "x", "custom": {"expect": "choice", "options": 3}},
            {"recipient_id": "x", "text": "另外，高龄津贴每月发放。"},
            {"recipient_id": "x", "text": "好的，我已经请工作人员来帮您。"},
            {"recipient_id": "x", "custom": {"handoff": "request_human", "order_id": 9}},
        ]
    )
    assert (turn.expect, turn.options, turn.order_ids) == ("choice", 3, (9,))
    assert [r.handoff for r in turn.replies] == [None, None, "request_human"]
    assert turn.replies[0].hints == {"expect": "choice", "options": 3}
    assert turn.replies[1].hints == {} and turn.handoff == "request_human"
    assert sentences("王秀英，您好！有什么要我帮忙的？看病预约、报修都行。") == [
        "王秀英，您好！",
        "有什么要我帮忙的？",
        "看病预约、报修都行。",
    ]
    assert sentences("好！谢谢。") == ["好！谢谢。"]


def test_no_speech_model_is_a_clear_start_up_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voice.hotline"],
        cwd=ROOT,
        env={**os.environ, "HOTLINE_ASR": "vosk", "VOSK_MODEL_PATH": "/nonexistent/vosk-model"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "make models" in done.stderr and "HOTLINE_ASR=scripted" in done.stderr
    assert "Korean test model" in done.stderr
