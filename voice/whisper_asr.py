"""Whisper behind Linli's recogniser interface (voice/asr.py), its engine in worker processes.

    pool = WhisperPool()                          # start-up: worker processes load the model
    recogniser = WhisperRecogniser(pool)          # where no Chinese Vosk model is installed
    recogniser = SecondOpinion(VoskRecogniser(), pool)  # Vosk first, Whisper where Vosk is unsure

Whisper does not stream: it hears a whole utterance. So a `WhisperSession` cuts the caller's
audio into utterances itself, with Silero's voice-activity model (it ships inside
faster-whisper; ~0.2 ms per 100 ms of audio, run here, in the calling process): speech starts
at the first window Silero calls speech, and ends after the elders' `trailing_silence` without
any; a Partial at the start of speech lets the caller barge in. Silero tells a voice from a
fan or a television far better than an energy threshold, and a noise burst that never becomes
speech reaches no recogniser (Whisper invents subtitles from noise).

When the dialogue expects a short answer (a grammar), its phrases are Whisper's hot words, and
what comes back is fitted to them: a phrase (a repetition of one said once), or the phrase
whose pinyin is nearly the same (不四 → 不是); anything else stays as heard. An answer Whisper
is unsure of (below `WHISPER_TRUST`) is no answer at all, since hot words pull any sound towards
the phrases: the caller is asked again. Free speech it is unsure of comes back not confident,
so the call flow confirms it ("您是说……吗？") instead of acting on it.

Engines run in worker processes (voice/whisper_engine.py), one utterance at a time each. A
worker that dies or does not answer within `timeout` is killed and replaced in the background;
that utterance comes back empty and not confident, which the call flow answers with a re-prompt
("没听清"): a crash costs one utterance, never the call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pypinyin import lazy_pinyin
from rapidfuzz import fuzz

from voice.asr import (
    ELDERLY,
    AsrEvent,
    ConfidencePolicy,
    Endpointing,
    GrammarSpec,
    Judge,
    ModelError,
    Partial,
    RecognitionSession,
    Utterance,
    VoskRecogniser,
    Word,
    _phrases_of,
    _Session,
)
from voice.audio import SAMPLE_WIDTH, WIDEBAND_RATE, StreamResampler, resample
from voice.grammars import Grammar, compact, split_longest
from voice.whisper_engine import NO_MODEL, ROOT, Heard, model_problem

log = logging.getLogger(__name__)

# Whisper's confidence is per token (voice/whisper_engine.py); on the neural voice through G.711,
# right answers mostly came out above 0.45 and garbled ones below.
WHISPER_TRUST = ConfidencePolicy(threshold=0.45, word_floor=0.0)
PINYIN_MATCH = 80  # rapidfuzz ratio of pinyin strings: a grammar phrase Whisper misspelt
# Silero's probability from which a window is speech: its own end-of-speech level, since short
# words after a pause scored 0.4-0.5 (a spoken 对 went unheard at 0.5).
SPEECH = 0.35
WINDOW = 512  # Silero's window: 32 ms at 16 kHz
CONTEXT = 64  # samples of the previous window Silero sees
RESET_AFTER = 31  # windows (~1 s) without speech after which Silero starts afresh
# Seconds kept before the first speech window: soft onsets score low (the 第 of 第一个 stayed
# at 0.14-0.33 for 0.2-0.4 s, and the utterance reached Whisper without its first 47 ms);
# faster-whisper pads its own VAD's segments by 0.4 s.
PREROLL = 0.6
MIN_VOICED = 0.09  # Silero's speech shorter than this is a click (行 alone is ~0.1 s)
# The grammars' `always` meanings (data/voice/grammars.yml): not hot words, since biasing every
# short answer towards 救命 or 人工 would turn mumbles into emergencies and transfers.
ALWAYS = frozenset({"emergency", "transfer", "repeat"})
KEEP = 30.0  # seconds of audio a second opinion can look back on


class RecogniserFailed(RuntimeError):
    """The engine crashed or hung on this utterance (the worker has been replaced)."""


@dataclass(frozen=True)
class WhisperSettings:
    """WHISPER_WORKERS processes (~300 MB each) of WHISPER_THREADS threads; WHISPER_TIMEOUT
    seconds per utterance before the worker counts as hung."""

    workers: int = 2
    threads: int = 1
    timeout: float = 15.0
    start_timeout: float = 120.0

    @classmethod
    def from_env(cls) -> WhisperSettings:
        env = os.environ
        return cls(
            workers=int(env.get("WHISPER_WORKERS", cls.workers)),
            threads=int(env.get("WHISPER_THREADS", cls.threads)),
            timeout=float(env.get("WHISPER_TIMEOUT", cls.timeout)),
        )


class _Dead(Exception):
    pass


class _NotSent(_Dead):
    """The worker was gone before it got the request: another can take it."""


class _Worker:
    """One `python -m voice.whisper_engine` process."""

    def __init__(self, settings: WhisperSettings) -> None:
        env = {**os.environ, "WHISPER_THREADS": str(settings.threads), "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voice.whisper_engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            cwd=ROOT,
            env=env,
        )
        self._buffer = b""
        try:
            ready = self._readline(time.monotonic() + settings.start_timeout)
        except _Dead:
            code = self.process.wait()
            if code == NO_MODEL:
                raise ModelError(model_problem() or "the Whisper model cannot be loaded") from None
            raise ModelError(f"the Whisper worker exited at start (code {code})") from None
        if not ready.get("ready"):
            self.kill()
            raise ModelError(f"the Whisper worker said {ready!r} instead of ready")

    @property
    def pid(self) -> int:
        return self.process.pid

    def hear(self, pcm16k: bytes, phrases: Sequence[str] | None, timeout: float) -> Heard:
        header = {"samples": len(pcm16k) // SAMPLE_WIDTH, "phrases": list(phrases or []) or None}
        deadline = time.monotonic() + timeout
        self._send(json.dumps(header, ensure_ascii=False).encode() + b"\n" + pcm16k, deadline)
        answer = self._readline(deadline)
        if "error" in answer:
            raise _Dead(answer["error"])
        return Heard(answer["text"], float(answer["confidence"]), answer.get("rejected"))

    def _send(self, data: bytes, deadline: float) -> None:
        """Write without blocking past `deadline` (a hung worker stops reading its pipe)."""
        assert self.process.stdin is not None
        fd = self.process.stdin.fileno()
        view, sent = memoryview(data), 0
        while sent < len(data):
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Dead("the worker stopped reading")
            _, writable, _ = select.select([], [fd], [], left)
            if not writable:
                continue
            try:
                sent += os.write(fd, view[sent : sent + 65536])
            except OSError as exc:  # BrokenPipeError: it is gone, the request incomplete
                raise _NotSent(f"cannot write: {exc}") from exc

    def _readline(self, deadline: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Dead("no answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                block = os.read(fd, 65536)
                if not block:
                    raise _Dead("the worker exited")
                self._buffer += block
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # unflushed bytes for a dead reader
                    stream.close()


class WhisperPool:
    """Worker processes shared by every session; `hear` blocks (call it off the event loop)."""

    def __init__(self, settings: WhisperSettings | None = None) -> None:
        problem = model_problem()
        if problem:
            raise ModelError(problem)
        self.settings = settings or WhisperSettings.from_env()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.replaced = 0  # workers that died or hung and were replaced
        starting = [
            threading.Thread(target=self._start_one, kwargs={"raise_errors": True})
            for _ in range(self.settings.workers)
        ]
        self._start_errors: list[BaseException] = []
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        if self._start_errors:
            self.close()
            raise self._start_errors[0]

    def _start_one(self, raise_errors: bool = False) -> None:
        try:
            worker = _Worker(self.settings)
        except Exception as exc:  # reported to the caller, or logged
            if raise_errors:
                self._start_errors.append(exc)
            else:
                log.error("whisper: a replacement worker did not start: %s", exc)
            return
        with self._lock:
            if self._closed:
                worker.kill()
                return
            self._all.append(worker)
        self._idle.put(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all]

    def hear(self, pcm16k: bytes, phrases: Sequence[str] | None = None) -> Heard:
        """16-bit PCM at 16 kHz → what Whisper heard (cleaned). RecogniserFailed on a crash."""
        deadline = time.monotonic() + self.settings.timeout * 2
        while True:
            try:
                worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RecogniserFailed("no Whisper worker became free in time") from None
            if worker.process.poll() is not None:
                self._replace(worker, "it died while idle")  # costs this utterance nothing
                continue
            try:
                heard = worker.hear(pcm16k, phrases, self.settings.timeout)
            except _NotSent as exc:
                self._replace(worker, str(exc))
                continue
            except _Dead as exc:
                self._replace(worker, str(exc))
                raise RecogniserFailed(str(exc)) from exc
            self._idle.put(worker)
            return heard

    def _replace(self, worker: _Worker, why: str) -> None:
        log.error("whisper: worker %s failed (%s); replacing it", worker.pid, why)
        with self._lock:
            self._all.remove(worker)
            self.replaced += 1
        worker.kill()
        threading.Thread(target=self._start_one, daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = self._all, []
        for worker in workers:
            worker.kill()


# --- fitting what Whisper heard to what the dialogue expects --------------------------------


def _pinyin(text: str) -> str:
    return " ".join(lazy_pinyin(compact(text)))


def hot_words(grammar: GrammarSpec) -> list[str] | None:
    """The answers a grammar expects, for Whisper's hot words."""
    if isinstance(grammar, Grammar):
        return [p for p, meaning in grammar.meanings.items() if meaning not in ALWAYS] or None
    phrases = _phrases_of(grammar)
    return list(phrases) if phrases else None


def fit(text: str, grammar: GrammarSpec) -> tuple[str, bool]:
    """(text, whether it surely is one of the grammar's answers); see the module docstring."""
    phrases = _phrases_of(grammar)
    if not text or not phrases:
        return text, False
    if isinstance(grammar, Grammar):
        if grammar.interpret(text) is not None:
            if grammar.sequence:
                return text, True
            # One answer, once: Whisper loops on short clips (第一个 came back 第一个第一个).
            known = {compact(p) for p in grammar.phrases}
            parts = split_longest(compact(text), known.__contains__, max(map(len, known)))
            return (parts[0] if parts else text), True
        if grammar.sequence and compact(text).isdigit():  # Whisper writes 138, not 幺三八
            return compact(text), True
    elif compact(text) in {compact(p) for p in phrases}:
        return text, True
    if isinstance(grammar, Grammar) and grammar.sequence:
        return text, False
    heard = _pinyin(text)
    score, best = max((fuzz.ratio(heard, _pinyin(p)), p) for p in phrases)
    if score >= PINYIN_MATCH:
        return best, True
    return text, False


def heard_utterance(
    heard: Heard, grammar: GrammarSpec, start: float, end: float, policy: ConfidencePolicy
) -> Utterance:
    """What Whisper heard as an Utterance. Under a grammar an unsure answer is no answer: hot
    words pull any sound towards the expected phrases (第二个 came back as 行好啊, "yes"), so
    below the policy's threshold the caller is asked again rather than taken at that word."""
    text, _ = fit(heard.text, grammar)
    word = Word(text, start, end, heard.confidence)
    confidence, confident = policy.judge([word]) if text else (0.0, False)
    if not text or (grammar is not None and not confident):
        if text:
            log.info("asr: whisper unsure of a short answer (%.2f): asking again", confidence)
        return Utterance("", (), start, end, confidence, False)
    return Utterance(text, (word,), start, end, confidence, confident)


# --- Silero -------------------------------------------------------------------------------


class _Silero:
    """Silero's speech probability per 32 ms window of a 16 kHz stream."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._model = get_vad_model()  # one ONNX session per process, thread-safe
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far. Silero's state drifts over long silence: after 15 s of a
        quiet line a spoken 第一个 scored 0.5 instead of 0.9 (measured), so sessions reset it
        after each second without speech."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of whole windows: `audio` is a multiple of WINDOW samples."""
        windows = audio.reshape(-1, WINDOW)
        if not len(windows):
            return np.zeros(0, dtype=np.float32)
        contexts = np.vstack([self._context, windows[:-1, -CONTEXT:]])
        self._context = windows[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self._model.session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return probs


def _floats(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


# --- Whisper alone ------------------------------------------------------------------------


class WhisperRecogniser:
    """Recognition by Whisper alone, utterances cut by Silero."""

    def __init__(
        self,
        pool: WhisperPool,
        *,
        endpointing: Endpointing = ELDERLY,
        confidence: ConfidencePolicy = WHISPER_TRUST,
    ) -> None:
        self.pool = pool
        self.endpointing = endpointing
        self.confidence = confidence

    def session(
        self, sample_rate: int, grammar: GrammarSpec = None, judge: Judge | None = None
    ) -> WhisperSession:
        session = WhisperSession(self, sample_rate, judge)
        if grammar is not None:
            session.set_grammar(grammar)
        return session


@dataclass
class _Guess:
    """A decode of the utterance so far, started at a short pause while the caller is quiet."""

    last: float  # end of the last speech window it heard: speech after it makes it stale
    future: Future[Heard]


class WhisperSession(_Session):
    """Silero cuts, Whisper hears. At a short pause (`early_silence`) the audio so far is
    decoded in the background (a guess): if the caller stays quiet until it is back and the
    judge calls it complete, the utterance ends there; if not, the full pause still ends it,
    and the guess is what was heard (the audio since is silence), so the decode overlapped the
    pause instead of following it. Speech before the guess is back makes it stale: discarded
    (its worker still finishes it). Without a judge (a voice message heard whole) nobody
    guesses."""

    def __init__(
        self, owner: WhisperRecogniser, sample_rate: int, judge: Judge | None = None
    ) -> None:
        super().__init__(sample_rate, owner.endpointing, owner.confidence, judge)
        self._pool = owner.pool
        self._to_16k = StreamResampler(sample_rate, WIDEBAND_RATE)
        self._silero = _Silero()
        self._windows = 0  # Silero windows seen: their count times 32 ms is the session's time
        self._quiet = 0  # windows without speech since Silero was last reset
        self._preroll: deque[bytes] = deque(maxlen=round(PREROLL * WIDEBAND_RATE / WINDOW))
        self._pending = bytearray()  # 16 kHz audio short of a whole Silero window
        self._audio = bytearray()  # 16 kHz audio of the current utterance
        self._start: float | None = None
        self._last = 0.0  # end of the last speech window
        self._voiced = 0.0
        self._announced = False
        self._guess: _Guess | None = None
        self.guesses = 0  # guesses started, and of them stale (speech came back) and used
        self.stale = 0
        self.used = 0

    def _process(self, pcm: bytes, voiced: float, first: float | None) -> list[AsrEvent]:
        self._pending += self._to_16k(pcm) if self.sample_rate != WIDEBAND_RATE else pcm
        size = WINDOW * SAMPLE_WIDTH
        whole = len(self._pending) // size * size
        wide, self._pending = bytes(self._pending[:whole]), self._pending[whole:]
        s = self.endpointing
        step = WINDOW / WIDEBAND_RATE
        events: list[AsrEvent] = []
        for i, prob in enumerate(self._silero.feed(_floats(wide))):
            piece = wide[i * size : (i + 1) * size]
            at = self._windows * step
            self._windows += 1
            if prob >= SPEECH:
                if self._start is None:
                    self._start = at
                    self._audio = bytearray(b"".join(self._preroll))
                self._voiced += step
                self._last = at + step
                self._quiet = 0
            if self._start is None:
                self._preroll.append(piece)
                self._quiet += 1
                if self._quiet >= RESET_AFTER:
                    self._silero.reset()
                    self._quiet = 0
                continue
            self._audio += piece
            now = at + step
            if not self._announced and self._voiced >= MIN_VOICED:
                self._announced = True
                events.append(Partial("", now))
            quiet = now - self._last
            if now - self._start >= s.max_utterance or quiet >= s.trailing_silence:
                events += self._cut()
            elif quiet >= s.early_silence and self._voiced >= MIN_VOICED and self.judge is not None:
                events += self._early(s.trailing_silence - quiet)
        return events

    def settle(self) -> None:
        """Wait for the guess under way, as on a machine that decodes within the short pause
        (tests and evaluations feed audio faster than real time)."""
        if self._guess is not None:
            with contextlib.suppress(RecogniserFailed):
                self._guess.future.result()

    def _early(self, rest_of_pause: float) -> list[AsrEvent]:
        """In a short pause: start the guess, or end the utterance on a complete one.

        The guess hears the audio so far and then the rest of the full pause as silence: what
        the cut would decode if the caller stays quiet. Whisper is less sure of words that end
        its audio (a spoken 第一个 at 0.41 with 0.35 s after it, 0.59 with 1.2 s), and an
        unsure short answer is asked again."""
        guess = self._guess
        if guess is None or guess.last != self._last:
            if guess is not None:
                self.stale += 1
            self.guesses += 1
            silence = bytes(round(rest_of_pause * WIDEBAND_RATE) * SAMPLE_WIDTH)
            audio = bytes(self._audio) + silence
            self._guess = _Guess(
                self._last, _GUESSING.submit(self._pool.hear, audio, hot_words(self.grammar))
            )
            return []
        if not guess.future.done() or guess.future.exception() is not None:
            return []
        heard = guess.future.result()
        if not self._complete(fit(heard.text, self.grammar)[0]):
            return []
        return [replace(u, early=True) for u in self._cut()]

    def _cut(self) -> list[AsrEvent]:
        start, end, voiced = self._start, self._last, self._voiced
        audio, self._audio = bytes(self._audio), bytearray()
        guess, self._guess = self._guess, None
        self._start, self._voiced, self._announced = None, 0.0, False
        self._preroll.clear()
        if start is None or voiced < MIN_VOICED:
            return []
        try:
            if guess is not None and guess.last == end:  # nothing said since: it heard it all
                self.used += 1
                heard = guess.future.result()
            else:
                if guess is not None:
                    self.stale += 1
                heard = self._pool.hear(audio, hot_words(self.grammar))
        except RecogniserFailed as exc:
            log.warning("asr: whisper failed on an utterance (%s): the caller is asked again", exc)
            return [Utterance("", (), start, end, 0.0, False)]
        if heard.rejected:
            log.info("asr: whisper's text refused (%s)", heard.rejected)
        self._verdicts.clear()
        return [heard_utterance(heard, self.grammar, start, end, self.confidence)]

    def _final(self) -> list[AsrEvent]:
        return self._cut()

    def _use_grammar(self, phrases: tuple[str, ...] | None) -> None:
        """Recorded in `grammar` by the base class; `_cut` gives its phrases to Whisper."""


# Threads that wait for guesses (the decoding itself is in the pool's worker processes).
_GUESSING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="whisper-guess")


# --- Vosk, with Whisper's second opinion ---------------------------------------------------


class SecondOpinion:
    """Vosk streams and endpoints; an utterance it is not confident of is heard again by Whisper,
    and Whisper's answer replaces it when Whisper is confident (else the call flow confirms)."""

    def __init__(
        self,
        vosk: VoskRecogniser,
        pool: WhisperPool,
        *,
        confidence: ConfidencePolicy = WHISPER_TRUST,
    ) -> None:
        self.vosk = vosk
        self.pool = pool
        self.confidence = confidence
        self.endpointing = vosk.endpointing

    def session(
        self, sample_rate: int, grammar: GrammarSpec = None, judge: Judge | None = None
    ) -> SecondOpinionSession:
        inner = self.vosk.session(sample_rate, grammar, judge)
        return SecondOpinionSession(self, inner, grammar)


class SecondOpinionSession:
    def __init__(
        self, owner: SecondOpinion, inner: RecognitionSession, grammar: GrammarSpec
    ) -> None:
        self._owner = owner
        self._inner = inner
        self.sample_rate = inner.sample_rate
        self._grammar = grammar
        self._audio = bytearray()  # the last KEEP seconds of the caller
        self._dropped = 0  # samples dropped from the front of _audio

    def accept(self, pcm: bytes) -> list[AsrEvent]:
        self._audio += pcm
        excess = len(self._audio) // SAMPLE_WIDTH - int(KEEP * self.sample_rate)
        if excess > 0:
            del self._audio[: excess * SAMPLE_WIDTH]
            self._dropped += excess
        return self._review(self._inner.accept(pcm))

    def set_grammar(self, grammar: GrammarSpec) -> list[AsrEvent]:
        events = self._review(self._inner.set_grammar(grammar))
        self._grammar = grammar
        return events

    def finish(self) -> list[AsrEvent]:
        return self._review(self._inner.finish())

    def _review(self, events: list[AsrEvent]) -> list[AsrEvent]:
        return [
            self._again(e) if isinstance(e, Utterance) and not e.confident else e for e in events
        ]

    def _again(self, utterance: Utterance) -> Utterance:
        rate = self.sample_rate
        lo = max(0, round((utterance.start - PREROLL) * rate) - self._dropped)
        # To the end of what was received: Vosk ends an utterance after the caller's pause,
        # and its last word's end can be early on words it did not know.
        pcm = bytes(self._audio[lo * SAMPLE_WIDTH :])
        if not pcm:
            return utterance
        try:
            heard = self._owner.pool.hear(
                resample(pcm, rate, WIDEBAND_RATE), hot_words(self._grammar)
            )
        except RecogniserFailed as exc:
            log.warning("asr: whisper's second opinion failed (%s); Vosk's stands", exc)
            return utterance
        again = heard_utterance(
            heard, self._grammar, utterance.start, utterance.end, self._owner.confidence
        )
        return again if again.confident else utterance
