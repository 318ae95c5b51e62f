"""One hotline call from greeting to hang-up: listening, turn-taking, keypad, hand-over.

    frames (20 ms, 8 kHz) ─► ASR session (100 ms chunks, a worker thread) ─► utterance
        ─► channels/voice.py (Rasa REST, caller's number as identity) ─► replies + hints
        ─► voice/tts.py (8 kHz PCM, sentence by sentence) ─► Call.play (G.711 RTP)

Three small tasks feed one inbox: the ASR pump (speech started, utterance heard), the keypad
(digits) and the end of the call. The flow itself is a loop over that inbox: it speaks, then
waits for the next input or for silence. Barge-in happens in the pumps, not in the loop: the
moment the caller starts speaking (the recogniser's first partial result) or presses a key,
whatever is playing stops (`Call.stop_playing`), so an elder who already knows what to say
never has to sit through a prompt.

What the flow decides and why:
- Low-confidence words are confirmed ("您是说……吗？", yes/no grammar) rather than acted on; a
  wrong repair order or appointment costs an elder a wasted visit. Words that sound like an
  emergency (the grammars' `always.emergency` phrases) are never held up by a confirmation.
- Unintelligible speech (nothing recognised, or a confirmation denied) goes to the dialogue
  as `/nlu_fallback`, so the dialogue core's one counter of misunderstandings decides when a
  person takes over (actions/conversation.py); `max_failures` here is only a safety net.
- A hand-over (the dialogue's `handoff` hint) is carried out on the
  telephone: within office hours a transfer to the staff extension (REFER, else a bridge);
  otherwise, or when nobody answers, the caller is told when they will be called back. The
  callback order itself is the dialogue's (actions/handoff.py makes exactly one, idempotent
  per turn); the hotline never makes a second one.
- While the dialogue works on a turn for longer than `filler_delay`, the caller hears a short
  filler instead of silence; it stops the moment the answer is ready.
- Repeats (the `repeat` intent's `slow` hint, the * key, 重听 in a grammar) are spoken at the
  slower rate.

`events` records what happened when (time.monotonic), for tests and bench/hotline_latency.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from channels.voice import DialogueState, DialogueUnavailable, Turn, VoiceConversation
from voice.asr import AsrEvent, GrammarSpec, Partial, Recogniser, RecognitionSession, Utterance
from voice.audio import TELEPHONE_RATE, rms
from voice.grammars import AT_HOME, DIGITS, MENU, ORDINAL, YES_NO, compact, get_grammar
from voice.office_hours import say_when
from voice.sip import Call, CallState
from voice.spoken import say_int
from voice.tts import TtsError, load_keypad

if TYPE_CHECKING:
    from voice.hotline import Hotline

log = logging.getLogger(__name__)

CHUNK_BYTES = 1600  # 100 ms of 8 kHz 16-bit audio per hand-over to the recogniser thread
NOT_UNDERSTOOD = "/nlu_fallback"  # the dialogue counts misunderstandings and hands over
ASK_FOR_PERSON = "/request_human"
NEW_SESSION = "/session_start"  # Rasa's own intent: a new session of the same conversation
# The keypad menu (prompts.yml `keypad`) as Rasa intents, so NLU is bypassed.
KEYPAD_INTENTS = {
    "medical_appointment": "/book_medical",
    "home_care": "/book_home_care",
    "repair": "/report_repair",
    "policy_question": "/ask_policy",
    "transfer": ASK_FOR_PERSON,
}
EXPECT_GRAMMARS = {
    "yes_no": YES_NO,
    "at_home": AT_HOME,
    "choice": ORDINAL,
    "digits": DIGITS,
    "menu": MENU,
}
# Forms that run after their order exists: hanging up in them leaves nothing half-way.
AFTER_AN_ORDER = frozenset({"emergency_form", "handoff_form"})
MENU_TIMES = 2  # after the two re-prompts the menu is offered this often, then goodbye

# What the hotline itself says besides the prompts of data/voice/prompts.yml (these carry a
# caller's words or a time, so they are rendered per call, never cached on disk).
CONFIRM = "您是说{text}吗？"
CALLBACK_LATER = "现在不是上班时间。您的事已经记下了，工作人员会在{when}上班后给您回电话。"
CALLBACK_SOON = "您的事已经记下了，工作人员会尽快给您回电话。"
OUT_OF_ORDER = "对不起，系统暂时出了点问题，请您过一会儿再打过来。有紧急情况请直接拨打120。"

_SENTENCE = re.compile(r"[^。！？；!?;\n]+[。！？；!?;\n]*")
_CLAUSE = re.compile(r"[^，、；：。！？!?;\n]+[，、；：。！？!?;\n]*")


def sentences(text: str, shortest: int = 6) -> list[str]:
    """A reply cut into pieces rendered one by one, so the first is heard while the rest is
    synthesised: the first piece ends at the first clause (，、；： or a sentence's end) that
    makes it at least `shortest` characters long, the others after 。！？;.

    Pieces shorter than `shortest` characters stay with the next one (您好！ is no sentence
    worth its own rendering)."""
    first, cut = "", 0
    for match in _CLAUSE.finditer(text):
        first, cut = first + match.group().strip(), match.end()
        if len(first) >= shortest:
            break
    pieces = [first] if first else []
    carry = ""
    for match in _SENTENCE.finditer(text, cut):
        piece = carry + match.group().strip()
        if len(piece) < shortest:
            carry = piece
            continue
        pieces.append(piece)
        carry = ""
    if carry:
        if pieces:
            pieces[-1] += carry
        else:
            pieces.append(carry)
    return pieces


def without_lead_in(pcm: bytes, level: int = 20) -> bytes:
    """8 kHz PCM from its first 10 ms above `level`: the neural voice starts each render with
    50-140 ms of digital silence, which the caller would wait through before the first word."""
    frame = TELEPHONE_RATE // 100 * 2
    for start in range(0, len(pcm) - frame + 1, frame):
        if rms(pcm[start : start + frame]) > level:
            return pcm[start:]
    return pcm


# --- what the inbox carries --------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    at: float


@dataclass(frozen=True)
class Heard:
    utterance: Utterance
    at: float


@dataclass(frozen=True)
class Key:
    digit: str
    at: float


@dataclass(frozen=True)
class Silence:
    pass


@dataclass(frozen=True)
class HungUp:
    pass


Input = SpeechStarted | Heard | Key | Silence | HungUp


@dataclass(frozen=True)
class FlowEvent:
    at: float  # time.monotonic()
    kind: str  # listening, speech, early (the utterance ended at the short pause), heard,
    #            key, silence, sent, answered, filler, prompt,
    #            say (value: seconds of its first sentence), said (value: seconds played),
    #            barge_in, grammar, transfer, hangup, ended
    detail: str = ""
    value: float | None = None


@dataclass(frozen=True)
class Line:
    """One line of the transcript (masked when the record is made, not here)."""

    at: datetime
    speaker: str  # "caller", "bot"
    text: str
    confidence: float | None = None


@dataclass(frozen=True)
class Said:
    """Something spoken to the caller, kept for repeating: a prompt key or a reply text."""

    text: str
    prompt: str | None = None


@dataclass
class CallResult:
    """What the call record is made of."""

    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None
    transcript: list[Line] = field(default_factory=list)
    order_ids: list[int] = field(default_factory=list)
    keypad: str = ""
    transfer_target: str | None = None
    audio: bytearray | None = None


class CallFlow:
    """The conversation on one call (see the module docstring)."""

    def __init__(
        self,
        hotline: Hotline,
        call: Call,
        recogniser: Recogniser,
        greeting: str = "greeting",
        keypad: bool = True,
    ) -> None:
        self.hotline = hotline
        self.greeting = greeting  # the prompt the call opens with
        self.keypad = keypad  # False: an SOS terminal, one button and no keys to offer
        self.settings = hotline.settings
        self.synth = hotline.synthesizer
        self.call = call
        self.recogniser = recogniser
        self.conversation: VoiceConversation = hotline.dialogue.conversation(call.party)
        self.result = CallResult(started_at=datetime.now(timezone.utc))
        if self.settings.keep_audio:
            self.result.audio = bytearray()
        self.events: list[FlowEvent] = []
        self.inbox: asyncio.Queue[Input] = asyncio.Queue()
        self.session: RecognitionSession | None = None
        self.caller_speaking = False
        self.finished = False
        self.last_said: list[Said] = []
        self.state: DialogueState | None = None
        self.expect: str | None = None  # what the dialogue's last answer expects
        self.options: int | None = None
        self.grammar: str | None = None  # the grammar the recogniser uses now
        self.confirming: str | None = None  # words waiting for the caller's yes
        self.silences = 0
        self.failures = 0
        self.turns = 0
        self.handed_over = False
        self._epoch = 0  # bumped by every barge-in; a reply stops when it changes
        self._shielded = False  # saying what must be heard in full (before a transfer)
        self._changed = asyncio.Event()
        self._keypad = load_keypad(self.synth.config.prompts_path)

    # --- instrumentation -----------------------------------------------------------------

    def emit(self, kind: str, detail: str = "", value: float | None = None) -> None:
        self.events.append(FlowEvent(time.monotonic(), kind, detail, value))
        self._changed.set()

    async def wait_event(
        self,
        kind: str | tuple[str, ...],
        *,
        since: int = 0,
        detail: str | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, FlowEvent]:
        """The first event of `kind` (or kinds) at index `since` or later, whose detail
        contains `detail`; with its index."""
        kinds = (kind,) if isinstance(kind, str) else kind

        async def find() -> tuple[int, FlowEvent]:
            while True:
                for index in range(since, len(self.events)):
                    event = self.events[index]
                    if event.kind in kinds and (detail is None or detail in event.detail):
                        return index, event
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            seen = [(e.kind, e.detail[:20]) for e in self.events[since:]]
            raise TimeoutError(f"no {kind!r} event; since then: {seen}") from None

    # --- the call ------------------------------------------------------------------------

    async def run(self) -> CallResult:
        helpers: list[asyncio.Future[None]] = []
        try:
            self.session = await asyncio.to_thread(
                self.recogniser.session, TELEPHONE_RATE, None, self._complete
            )
            helpers += [
                asyncio.ensure_future(self._listen()),
                asyncio.ensure_future(self._keys()),
                asyncio.ensure_future(self._watch_end()),
            ]
            await self._prompt(self.greeting)
            await self._loop()
        except DialogueUnavailable as exc:
            log.error("call %s: the dialogue core failed: %s", self.call.caller_masked, exc)
            await self._out_of_order()
        except Exception:
            log.exception("call %s: the call flow failed", self.call.caller_masked)
            self.result.outcome = "failed"
            with contextlib.suppress(Exception):
                await self._say([OUT_OF_ORDER])
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self.session is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.session.finish)
            if self.call.bridged_to is not None:
                await self.call.wait_ended()  # staff and caller talk; we only relay
            elif self.call.state is not CallState.ENDED:
                with contextlib.suppress(Exception):
                    await self.call.hangup()
            if self.state is not None and self.state.active_loop == "handoff_form":
                # The hand-over was carried out on the telephone (a transfer, or the time staff
                # call back): the caller's next call starts anew, not in the form that waits
                # for staff (the conversation is the caller's on every call: channels/voice.py).
                with contextlib.suppress(DialogueUnavailable):
                    await self.conversation.send(NEW_SESSION)
            self.result.ended_at = datetime.now(timezone.utc)
            self.result.outcome = self.result.outcome or self._outcome_at_end()
            self.emit("ended", self.result.outcome)
        return self.result

    def _outcome_at_end(self) -> str:
        """The caller hung up (or stayed silent): helped, unless a request was left half-way.
        Questions after an emergency, or waiting for a person, follow an order already made."""
        loop = self.state.active_loop if self.state is not None else None
        mid_request = loop is not None and loop not in AFTER_AN_ORDER
        if self.result.order_ids and not mid_request:
            return "completed"
        return "abandoned"

    async def _loop(self) -> None:
        while not self.finished and self.call.state is not CallState.ENDED:
            item = await self._next_input()
            if isinstance(item, HungUp):
                break
            if isinstance(item, Silence):
                await self._on_silence()
                continue
            self.silences = 0
            if isinstance(item, Key):
                await self._on_key(item.digit)
            elif isinstance(item, Heard):
                await self._on_heard(item.utterance)

    async def _next_input(self) -> Input:
        self.emit("listening")
        endpointing = getattr(self.recogniser, "endpointing", None)
        longest = (endpointing.max_utterance if endpointing else 20.0) + 5.0
        while True:
            timeout = longest if self.caller_speaking else self.settings.silence_timeout
            try:
                item = await asyncio.wait_for(self.inbox.get(), timeout)
            except asyncio.TimeoutError:
                self.caller_speaking = False  # a partial without an utterance: treat as quiet
                return Silence()
            if not isinstance(item, SpeechStarted):
                return item

    # --- the pumps -----------------------------------------------------------------------

    async def _listen(self) -> None:
        """Caller audio to the recogniser, 100 ms at a time, on a worker thread."""
        assert self.session is not None
        chunk = bytearray()
        while (frame := await self.call.receive_audio()) is not None:
            if self.result.audio is not None:
                self.result.audio += frame
            chunk += frame
            if len(chunk) >= CHUNK_BYTES:
                data = bytes(chunk)
                chunk.clear()
                self._on_asr(await asyncio.to_thread(self.session.accept, data))

    def _complete(self, text: str, grammar: GrammarSpec) -> bool:
        """The session's judge (on its thread): the hotline's, told whether a form is asking
        the caller something (a bare answer is a whole one only then)."""
        state = self.state
        answering = state is not None and state.active_loop is not None
        return self.hotline.judge(text, grammar, answering)

    def _on_asr(self, events: list[AsrEvent]) -> None:
        for event in events:
            if isinstance(event, Partial) and not self.caller_speaking:
                self.caller_speaking = True
                self.emit("speech")
                self._interrupt("speech")
                self.inbox.put_nowait(SpeechStarted(time.monotonic()))
            elif isinstance(event, Utterance):
                self.caller_speaking = False
                if event.early:
                    self.emit("early", event.text)
                self.emit("heard", event.text, event.confidence)
                self.inbox.put_nowait(Heard(event, time.monotonic()))

    async def _keys(self) -> None:
        while (digit := await self.call.receive_dtmf()) is not None:
            self.emit("key", digit)
            self._interrupt("key")
            self.inbox.put_nowait(Key(digit, time.monotonic()))

    async def _watch_end(self) -> None:
        await self.call.wait_ended()
        self.inbox.put_nowait(HungUp())

    def _interrupt(self, why: str) -> None:
        """Barge-in: the caller speaks or presses a key, so we stop talking."""
        self._epoch += 1
        if self.call.playing and not self._shielded:
            self.call.stop_playing()
            self.emit("barge_in", why)

    # --- inputs --------------------------------------------------------------------------

    async def _on_heard(self, utterance: Utterance) -> None:
        text = utterance.text.strip()
        self._line("caller", text, round(utterance.confidence, 3))
        if self.confirming is not None:
            await self._on_confirmation(text)
        elif not text:
            await self._converse(NOT_UNDERSTOOD)
        elif not utterance.confident and not self._sounds_urgent(text):
            await self._confirm(text)
        else:
            await self._converse(text)

    async def _confirm(self, text: str) -> None:
        self.confirming = text
        await self._use_grammar(YES_NO)
        await self._say([CONFIRM.format(text=text)])

    async def _on_confirmation(self, answer: str) -> None:
        heard, self.confirming = self.confirming or "", None
        meaning = get_grammar(YES_NO).interpret(answer) if answer else None
        await self._use_grammar(EXPECT_GRAMMARS.get(self.expect or ""))
        if meaning == "yes":
            await self._converse(heard)
        elif meaning == "emergency":
            await self._converse(answer)
        elif meaning == "transfer":
            await self._converse(ASK_FOR_PERSON)
        elif meaning == "repeat":
            self.confirming = heard
            await self._use_grammar(YES_NO)
            await self._repeat()
        else:  # "no", or not an answer at all: we did not understand the caller
            await self._converse(NOT_UNDERSTOOD)

    @staticmethod
    def _sounds_urgent(text: str) -> bool:
        words = compact(text)
        urgent = get_grammar(YES_NO).meanings
        return any(compact(p) in words for p, meaning in urgent.items() if meaning == "emergency")

    async def _on_key(self, digit: str) -> None:
        self.result.keypad += digit
        action = self._keypad.get(digit)
        if digit == "*" or action == "repeat":
            await self._repeat()
            return
        if self.confirming is not None:  # a key instead of yes or no: the menu wins
            self.confirming = None
            await self._use_grammar(EXPECT_GRAMMARS.get(self.expect or ""))
        if self.expect == "choice" and digit.isdigit() and 1 <= int(digit) <= (self.options or 9):
            await self._converse(f"第{say_int(int(digit))}个")  # one of the options read out
        elif action in KEYPAD_INTENTS:
            await self._converse(KEYPAD_INTENTS[action])

    async def _on_silence(self) -> None:
        self.silences += 1
        self.emit("silence", str(self.silences))
        if self.silences == 1:
            await self._prompt("silence_first")
        elif self.silences == 2:
            await self._prompt("silence_second" if self.keypad else "silence_second_spoken")
        elif self.keypad and self.silences <= 2 + MENU_TIMES:
            await self._prompt("menu")
        else:
            await self._prompt("silence_goodbye", remember=False, interruptible=False)
            self.result.outcome = self.result.outcome or self._outcome_at_end()
            await self._hang_up()

    # --- the dialogue --------------------------------------------------------------------

    async def _converse(self, text: str) -> None:
        """One turn: the caller's words to the dialogue core, its answer to the caller."""
        turn = await self._ask(text)
        state_task = asyncio.ensure_future(self.conversation.state())
        self.result.order_ids += [i for i in turn.order_ids if i not in self.result.order_ids]
        self.expect, self.options = turn.expect, turn.options
        await self._use_grammar(EXPECT_GRAMMARS.get(turn.expect or ""))
        handoff = turn.handoff
        # On the telephone a hand-over is said by the hotline (transfer or call-back time),
        # not with the chat's "please wait, someone will reply".
        replies = [r for r in turn.replies if r.text and not (handoff and r.handoff)]
        texts = [r.text for i, r in enumerate(replies) if i == 0 or r.text != replies[i - 1].text]
        if texts:
            await self._say(texts, slower=any(r.slow for r in replies))
        try:
            self.state = await state_task
        except DialogueUnavailable:
            self.state = None
        state = self.state
        self.failures = self.failures + 1 if state and state.intent == "nlu_fallback" else 0
        if self.call.state is CallState.ENDED:
            return
        if handoff:
            await self._hand_over()
        elif self.failures >= self.settings.max_failures and text != ASK_FOR_PERSON:
            await self._converse(ASK_FOR_PERSON)  # the dialogue makes the callback order
        elif state is not None and state.intent == "goodbye":
            self.result.outcome = "completed"
            await self._hang_up()

    async def _ask(self, text: str) -> Turn:
        """Send, and cover the wait with a filler once it takes longer than `filler_delay`."""
        self.turns += 1
        self.emit("sent", text)
        started = time.monotonic()
        task = asyncio.ensure_future(self.conversation.send(text))
        filler: asyncio.Task[None] | None = None
        try:
            done, _ = await asyncio.wait({task}, timeout=self.settings.filler_delay)
            if not done:
                filler = asyncio.ensure_future(self._fill(task))
                await asyncio.wait({task})
        finally:
            if filler is not None:
                filler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await filler
                self.call.stop_playing()  # the answer is ready: the filler ends here
            if not task.done():
                task.cancel()
        turn = task.result()
        self.emit("answered", " / ".join(turn.texts), time.monotonic() - started)
        return turn

    async def _fill(self, task: asyncio.Future[Turn]) -> None:
        key = "please_wait"
        while not task.done():
            self.emit("filler", key)
            await self.call.play(await self.synth.prompt(key))
            await asyncio.wait({task}, timeout=self.settings.still_working_every)
            key = "still_working"

    async def _use_grammar(self, name: str | None) -> None:
        if name == self.grammar or self.session is None:
            return
        self.grammar = name
        self.emit("grammar", name or "free")
        grammar = get_grammar(name) if name else None
        self._on_asr(await asyncio.to_thread(self.session.set_grammar, grammar))

    # --- handing over --------------------------------------------------------------------

    async def _hand_over(self) -> None:
        """A person takes over: transfer within office hours, else promise a call back."""
        self.handed_over = True
        settings, now = self.settings, self.hotline.now()
        hours = settings.office_hours
        if settings.staff_extension and hours.is_open(now):
            await self._prompt("transfer", interruptible=False)
            how = await self._transfer(settings.staff_extension)
            if how is not None:
                self.result.outcome = "transferred"
                self.result.transfer_target = settings.staff_extension
                self.finished = True
                return
            if self.call.state is CallState.ENDED:
                self.result.outcome = "callback"
                return
            await self._prompt("transfer_busy", interruptible=False)
        elif hours.is_open(now):
            await self._say([CALLBACK_SOON], interruptible=False)
        else:
            when = say_when(hours.next_opening(now), now, hours.zone)
            await self._say([CALLBACK_LATER.format(when=when)], interruptible=False)
        self.result.outcome = "callback"
        await self._prompt("goodbye", remember=False)
        await self._hang_up()

    async def _transfer(self, target: str) -> str | None:
        """REFER (the caller's phone calls staff), else bridge; how it went, None if not.

        A REFER that fails at once (the PBX or phone does not do REFER, staff busy) is
        followed by a bridge; one that failed because nobody answered in `transfer_timeout`
        is not: ringing the same extension again only keeps an elder waiting longer. The
        caller hears the transfer prompt while a bridge rings.
        """
        timeout = self.settings.transfer_timeout
        if self.settings.transfer_mode == "refer":
            self.emit("transfer", "refer")
            began = time.monotonic()
            if await self.call.transfer(target, timeout=timeout):
                log.info("call %s: transferred by REFER", self.call.caller_masked)
                return "refer"
            unanswered = time.monotonic() - began >= min(timeout / 2, 3.0)
            if self.call.state is CallState.ENDED or unanswered:
                return None
        self.emit("transfer", "bridge")
        bridging = asyncio.ensure_future(self.call.bridge(target, timeout=timeout))
        await asyncio.sleep(0)  # bridge() silences the line first; then we hold with a prompt
        deadline = time.monotonic() + timeout + 1.0
        while not bridging.done() and self.call.state is not CallState.ENDED:
            holding = asyncio.ensure_future(self.call.play(await self.synth.prompt("transfer")))
            left = deadline - time.monotonic()
            await asyncio.wait({bridging, holding}, timeout=left, return_when="FIRST_COMPLETED")
            if not bridging.done() and time.monotonic() < deadline:
                await asyncio.wait({bridging}, timeout=min(2.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break
        self.call.stop_playing()
        if not bridging.done():
            # Still cancelling the unanswered INVITE (up to 32 s of SIP timers): go on without
            # it; bridge() hangs up a late answer itself once our caller is gone.
            bridging.add_done_callback(_swallow)
            return None
        if not bridging.cancelled() and bridging.result():
            log.info("call %s: bridged to staff", self.call.caller_masked)
            return "bridge"
        return None

    async def _out_of_order(self) -> None:
        """The dialogue core is down: say so; a person takes the call if one can."""
        self.result.outcome = "failed"
        settings, now = self.settings, self.hotline.now()
        if settings.staff_extension and settings.office_hours.is_open(now):
            await self._prompt("transfer", interruptible=False)
            if await self._transfer(settings.staff_extension):
                self.result.transfer_target = settings.staff_extension
                return
        await self._say([OUT_OF_ORDER], interruptible=False)
        await self._hang_up()

    async def _hang_up(self) -> None:
        self.finished = True
        self.emit("hangup")
        if self.call.state is not CallState.ENDED:
            await asyncio.sleep(0.3)  # let the last syllable leave the jitter buffer
            await self.call.hangup()

    # --- speaking ------------------------------------------------------------------------

    async def _prompt(self, key: str, *, remember: bool = True, interruptible: bool = True) -> bool:
        self.emit("prompt", key)
        return await self._speak(
            [Said(self.synth.prompts[key], key)], remember=remember, interruptible=interruptible
        )

    async def _say(
        self, texts: list[str], *, slower: bool = False, interruptible: bool = True
    ) -> bool:
        return await self._speak(
            [Said(text) for text in texts], slower=slower, interruptible=interruptible
        )

    async def _repeat(self) -> bool:
        said = self.last_said or [Said(self.synth.prompts[self.greeting], self.greeting)]
        return await self._speak(said, slower=True)

    async def _speak(
        self,
        said: list[Said],
        *,
        slower: bool = False,
        remember: bool = True,
        interruptible: bool = True,
    ) -> bool:
        """Say it all, sentence by sentence as synthesis finishes; False if cut short.

        The first piece (a prompt, or a reply's first clause: `sentences`) is rendered alone,
        so it has a core to itself; the rest is handed to the synthesizer the moment it is
        ready (its workers render in parallel) and renders while the first plays. A barge-in
        (the epoch changes) or the caller hanging up stops it; `interruptible=False` ignores
        barge-in (what a caller must hear before a transfer or a hang-up)."""
        if remember:
            self.last_said = list(said)
        jobs: list[tuple[Said, Callable[[], Awaitable[bytes]]]] = []
        for item in said:
            if item.prompt is not None:
                jobs.append((item, partial(self.synth.prompt, item.prompt, slower=slower)))
            else:
                jobs += [
                    (item, partial(self.synth.render, piece, slower=slower))
                    for piece in sentences(item.text)
                ]
        renders = [(item, asyncio.ensure_future(job())) for item, job in jobs[:1]]
        if renders:
            renders[0][1].add_done_callback(
                lambda _: renders.extend((i, asyncio.ensure_future(j())) for i, j in jobs[1:])
            )
        epoch = self._epoch
        started: set[int] = set()
        complete = True
        seconds = 0.0  # audio played in full
        self._shielded = not interruptible
        for item, render in renders:
            try:
                pcm = await render
            except TtsError:
                log.warning(
                    "call %s: synthesis failed; a sentence was skipped", self.call.caller_masked
                )
                continue
            if self.call.state is CallState.ENDED or (interruptible and self._epoch != epoch):
                complete = False
                break
            if not started:
                pcm = without_lead_in(pcm)
            if id(item) not in started:
                started.add(id(item))
                self._line("bot", item.text)
                self.emit("say", item.prompt or item.text, len(pcm) / 2 / TELEPHONE_RATE)
            played = await self.call.play(pcm)
            if played:
                seconds += len(pcm) / 2 / TELEPHONE_RATE
            elif interruptible or self.call.state is CallState.ENDED:
                complete = False
                break
        self._shielded = False
        for _, render in renders:  # renders of what was never said: let them finish unseen
            if not render.done():
                render.add_done_callback(_swallow)
        self.emit("said", "done" if complete else "cut", seconds)
        return complete

    def _line(self, speaker: str, text: str, confidence: float | None = None) -> None:
        self.result.transcript.append(Line(datetime.now(timezone.utc), speaker, text, confidence))


def _swallow(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
