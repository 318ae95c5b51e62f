"""The message flow: every text channel's way to the dialogue, and the takeover rule.

    recorded = API.record(resident's message, client_id)   # the state comes back with it
    state "bot":              resume Rasa once if a hand-over ended since, forward, record the
                              bot's replies, return them
    state "waiting"/"staff":  the bot keeps quiet (staff read the message in the console),
                              except an emergency: the NLU screens the words, and an emergency
                              (or an answer to the emergency's who-and-where questions) goes to
                              the dialogue, whose emergency rule gives advice, a P0 and the alarm

The takeover state lives in the work-order API, so it survives Rasa's session expiry and a Rasa
restart. Decisions when something is down:

- The API: nothing is forwarded unrecorded (the bot might answer a conversation staff have,
  and staff would never see the message). The resident is told it was not sent and to retry
  or call. Only an emergency is forwarded anyway (the advice cannot wait; the dialogue's own
  outbox keeps the P0 until the API is back); its words and the replies wait in Redis and are
  recorded by the event tail once the API answers (idempotent by client_id).
- Rasa: the message is recorded; the resident is told the assistant did not answer and to send
  it again (the retry records nothing twice and is forwarded then).

A channel's retry of a message (same client_id) gets the stored outcome of the first run: the
dialogue never sees the same message twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from channels.gateway import metrics
from channels.gateway.dialogue import Dialogue, DialogueUnavailable
from channels.gateway.resume import Resumer
from channels.gateway.store import Store
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.contract import Channel, IdentityKind

log = logging.getLogger(__name__)

API_DOWN = (
    "系统暂时连不上，您这条消息没有发出去，请稍后再发一次。有急事请直接拨打120，或者打社区热线。"
)
DIALOGUE_DOWN = (
    "助手暂时没有回应。您的消息已经记下了，请稍后再发一次。有急事请直接拨打120，或者打社区热线。"
)
DANGER_NUMBERS = "如果有危险，请马上拨打120（急救）、119（火警）或110（报警）。"
MISCONFIGURED = "系统设置有误，暂时不能发消息。请打社区热线，有急事请直接拨打120。"
STILL_RUNNING = "上一条消息还在处理，请稍等一下。"
RETRY_WAIT_SECONDS = 30.0
MAX_TEXT = 2000  # what the API keeps of one message
MAX_BATCH = 20  # messages per recording call
EMERGENCY_FORM = "emergency_form"


class GatewayError(Exception):
    """A request the gateway cannot serve; `message` is Chinese, for the resident."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Incoming:
    """One message of a resident, as a channel translated it."""

    key: str  # the conversation (Rasa's sender id, the API's conversation key)
    channel: Channel
    can_push: bool  # the channel can deliver a staff reply at any time
    text: str  # what the resident said or chose, as it is recorded
    client_id: str  # the channel's stable id of this message
    intent: str | None = None  # a button: what the dialogue gets instead ("/book_medical")
    identity: tuple[IdentityKind, str] | None = None

    def metadata(self, takeover: str | None = None) -> dict[str, Any]:
        """What actions read from the message (actions/common.py identity() and channel());
        `takeover`: staff have the conversation (an emergency's order says so)."""
        meta: dict[str, Any] = {"channel": self.channel.value}
        if takeover:
            meta["takeover"] = takeover
        if self.identity:
            meta["identity"] = {"kind": self.identity[0].value, "value": self.identity[1]}
        return meta


@dataclass(frozen=True)
class Outcome:
    replies: list[str]
    state: str  # bot, waiting or staff
    notice: str | None = None  # a line about the service, not said by anyone
    staff: str | None = None  # who has the conversation, when known
    final: bool = field(default=True, repr=False)  # a retry may be answered with it

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["final"]
        return out


def state_notice(state: str, staff: str | None, can_push: bool) -> str | None:
    """What the resident is told about who answers; a channel without push gets a call back."""
    who = f"工作人员{staff or ''}"
    if state == "waiting":
        return "正在为您联系工作人员…" if can_push else "已经请工作人员处理，他们会打电话联系您。"
    if state == "staff":
        return f"{who}正在为您服务" if can_push else f"{who}正在处理，会打电话联系您。"
    return None


class Gateway:
    def __init__(
        self,
        api: WorkOrdersClient,
        dialogue: Dialogue,
        store: Store,
        resumer: Resumer,
        max_turns: int = 16,
    ) -> None:
        self.api, self.dialogue, self.store, self.resumer = api, dialogue, store, resumer
        # Turns beyond what the dialogue can serve at once wait here, cheaply, rather than in
        # the HTTP clients' connection pools, whose bookkeeping grows with every waiting request
        # and took the event loop (and with it WeChat's acknowledgements) under a backlog.
        self._slots = asyncio.Semaphore(max_turns)

    async def handle(self, incoming: Incoming) -> Outcome:
        """One message, once: a retry with the same client_id gets the first run's outcome."""
        key, client_id = incoming.key, incoming.client_id
        deadline = asyncio.get_running_loop().time() + RETRY_WAIT_SECONDS
        while True:
            ours, done = await self.store.begin_turn(key, client_id)
            if done is not None:
                return Outcome(**done)
            if ours:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise GatewayError(409, "still_running", STILL_RUNNING)
            await asyncio.sleep(0.25)
        outcome: Outcome | None = None
        started = time.monotonic()
        try:
            with metrics.TURNS_WAITING.track_inprogress():
                await self._slots.acquire()
            try:
                with metrics.TURNS_RUNNING.track_inprogress():
                    outcome = await self._turn(incoming)
            finally:
                self._slots.release()
            channel = incoming.channel.value
            metrics.TURN_SECONDS.labels(channel).observe(time.monotonic() - started)
            return outcome
        finally:
            kept = outcome.as_dict() if outcome is not None and outcome.final else None
            await self.store.end_turn(key, client_id, kept)

    @property
    def busy(self) -> bool:
        """Every turn slot is taken: a new message waits before the dialogue even sees it."""
        return self._slots.locked()

    async def refresh(self, key: str) -> dict[str, Any] | None:
        """The API's state of a conversation, or None when the API has never heard of it."""
        try:
            state = await self.api.conversation_state(key)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        await self.learn(key, state)
        return state

    async def _turn(self, incoming: Incoming) -> Outcome:
        key = incoming.key
        said = {"role": "resident", "text": incoming.text, "client_id": incoming.client_id}
        body = self._body(incoming, [said], await self._resident(incoming))
        try:
            recorded = await self.api.record_messages(key, body)
        except ApiUnavailable:
            return await self._unrecorded(incoming, body)
        except ApiError as exc:
            if exc.status in (401, 403):
                log.error("the API refuses the gateway's token: %s", exc)
                raise GatewayError(503, "gateway_misconfigured", MISCONFIGURED) from exc
            raise GatewayError(exc.status, exc.code, exc.message) from exc
        state = recorded["state"]
        await self.store.remember(
            key,
            channel=incoming.channel.value,
            can_push=incoming.can_push,
        )
        await self.learn(key, recorded)
        if state != "bot":
            return await self._takeover(incoming, state)
        if recorded.get("last_handback"):
            try:
                await self.resumer.resume_once(key, recorded["last_handback"])
            except DialogueUnavailable as exc:
                raise GatewayError(503, "dialogue_unavailable", DIALOGUE_DOWN) from exc
        replies, handoff = await self._converse(incoming)
        if not handoff:
            return Outcome(replies, "bot")
        # The dialogue asked for a person: the API says whether the hand-over is open (staff
        # may even have claimed it already).
        try:
            state = (await self.refresh(key) or {}).get("state", "waiting")
        except (ApiError, ApiUnavailable):
            state = "waiting"
        staff = (await self.store.conversation(key)).get("staff")
        return Outcome(replies, state, state_notice(state, staff, incoming.can_push), staff)

    async def _takeover(self, incoming: Incoming, state: str) -> Outcome:
        """Staff have it: silence, unless the words are an emergency."""
        staff = (await self.store.conversation(incoming.key)).get("staff")
        quiet = Outcome([], state, state_notice(state, staff, incoming.can_push), staff)
        if incoming.intent is not None:  # a button is never an emergency
            return quiet
        try:
            urgent = await self._urgent(incoming)
            if not urgent:
                return quiet
            replies, _ = await self._converse(incoming, takeover=state)
        except (DialogueUnavailable, GatewayError):
            # Staff have the message; what the NLU would have heard is unknown.
            notice = " ".join(filter(None, (quiet.notice, DANGER_NUMBERS)))
            return replace(quiet, notice=notice, final=False)
        return replace(quiet, replies=replies)

    async def _urgent(self, incoming: Incoming) -> bool:
        if await self.dialogue.intent(incoming.text) == "emergency":
            return True
        # The dialogue is asking an emergency's who and where: the answers are its business.
        state = await self.dialogue.tracker_state(incoming.key)
        return state.active_loop == EMERGENCY_FORM

    async def _unrecorded(self, incoming: Incoming, body: dict[str, Any]) -> Outcome:
        """The API is down: only an emergency goes on (see the module's docstring)."""
        try:
            urgent = incoming.intent is None and (
                await self.dialogue.intent(incoming.text) == "emergency"
            )
        except DialogueUnavailable:
            urgent = False
        if not urgent:
            raise GatewayError(503, "api_unavailable", API_DOWN)
        await self.store.keep_unrecorded(incoming.key, body)  # the words before the replies
        try:
            replies, _ = await self._converse(incoming)
        except GatewayError as exc:
            raise GatewayError(503, "unavailable", f"系统暂时连不上。{DANGER_NUMBERS}") from exc
        known = await self.store.conversation(incoming.key)
        return Outcome(replies, known.get("state", "bot"))

    async def _converse(
        self, incoming: Incoming, takeover: str | None = None
    ) -> tuple[list[str], bool]:
        """Forward to the dialogue; record and return what it says (and whether it handed
        the conversation to a person)."""
        try:
            with metrics.DIALOGUE_SECONDS.labels(incoming.channel.value).time():
                turn = await self.dialogue.send(
                    incoming.key,
                    incoming.intent or incoming.text,
                    incoming.metadata(takeover),
                    incoming.channel.value,
                )
        except DialogueUnavailable as exc:
            raise GatewayError(503, "dialogue_unavailable", DIALOGUE_DOWN) from exc
        await self._record_replies(incoming, turn.texts)
        try:
            await self.resumer.after_turn(incoming.key)
        except DialogueUnavailable:
            log.warning("%s: the hand-back note waits for the next turn", incoming.key)
        return turn.texts, bool(turn.handoff)

    async def _record_replies(self, incoming: Incoming, texts: list[str]) -> None:
        lines = [t.strip()[:MAX_TEXT] for t in texts if t.strip()]
        said = [
            {"role": "bot", "text": line, "client_id": f"{incoming.client_id}:bot:{n}"}
            for n, line in enumerate(lines)
        ]
        for start in range(0, len(said), MAX_BATCH):
            body = self._body(incoming, said[start : start + MAX_BATCH])
            try:
                await self.api.record_messages(incoming.key, body)
            except ApiUnavailable:
                await self.store.keep_unrecorded(incoming.key, body)
            except ApiError as exc:
                log.warning("%s: bot replies not recorded (%s)", incoming.key, exc.code)

    async def _resident(self, incoming: Incoming) -> int | None:
        """Who writes, once the dialogue has linked the channel identity (console shows it)."""
        if incoming.identity is None:
            return None
        known = await self.store.conversation(incoming.key)
        if known.get("resident_id"):
            return int(known["resident_id"])
        try:
            found = await self.api.find_resident(*incoming.identity)
        except (ApiError, ApiUnavailable):
            return None
        if not found:
            return None
        await self.store.remember(incoming.key, resident_id=int(found["id"]))
        return int(found["id"])

    async def learn(self, key: str, recorded: dict[str, Any]) -> None:
        """Keep the state an answer of the API gave (see Store.set_state for the order), and
        who has the conversation, for the page's notice."""
        state = recorded["state"]
        if state == "bot":
            handoff_id = int((recorded.get("last_handback") or {}).get("id") or 0)
        else:
            handoff_id = int(recorded.get("handoff_id") or 0)
        await self.store.set_state(key, handoff_id, state)
        owner = (recorded.get("handoff") or {}).get("claimed_by_name")
        if owner:
            await self.store.remember(key, staff=owner)

    @staticmethod
    def _body(
        incoming: Incoming, messages: list[dict[str, Any]], resident_id: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "channel": incoming.channel.value,
            "can_push": incoming.can_push,
            "messages": messages,
        }
        if resident_id:
            body["resident_id"] = resident_id
        return body
