"""The voice channel: the hotline's way into the dialogue core, through Rasa's REST channel.

    dialogue = DialogueClient("http://127.0.0.1:5005")
    conversation = dialogue.conversation(caller="13800138000")   # the caller's, every call
    # (an SOS terminal calls as "terminal-<device id>": its resident, channel "terminal")
    turn = await conversation.send("厨房水管漏水了")   # or a keypad choice: "/report_repair"
    turn.replies        # what to say, in order (Reply.text, Reply.slow …)
    turn.expect         # what the dialogue expects next: "yes_no", "choice" or None
    state = await conversation.state()   # the intent the NLU found, the active form

A channel translates, it never decides: this module turns a caller's words into a message
with the caller's identity, and the dialogue's answer into texts plus the hints actions attach
(`json_message`); what to do with them is the hotline's business (voice/call_flow.py).

Why a client of the REST channel and not a custom Rasa `InputChannel`:

- The REST channel already carries what a custom channel would add: `metadata` (stored on the
  user event; actions/common.py `identity()` and `channel()` read the caller's number and
  "hotline" from it, and the session start looks the resident up with it) and `input_channel`
  (so the tracker records "hotline" as the latest input channel, as a custom channel would).
- Nothing of the hotline is loaded into the Rasa server process: a mistake here cannot keep
  Rasa from starting for every other channel, and the hotline can be restarted on its own.
- What REST does not return is what the NLU made of the words and which form is active.
  `state()` reads that from the tracker's current state without its events
  (`GET /conversations/{id}/tracker?include_events=NONE`, a few ms), only when asked.

The REST channel sends a reply's `json_message` as a message of its own ("custom") right after
its text; `_replies` joins them again, so a hint belongs to the text it was sent with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from workorders.contract import TERMINAL_SIP_PREFIX, Channel, IdentityKind
from workorders.crypto import cipher

CHANNEL = Channel.hotline.value


class DialogueUnavailable(Exception):
    """The dialogue core did not answer (down, time-out, 5xx): the caller cannot be served."""


@dataclass(frozen=True)
class Reply:
    """One message of the assistant and the hints its action attached."""

    text: str
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def slow(self) -> bool:
        """action_repeat: the resident did not catch it; say it more slowly."""
        return bool(self.hints.get("slow"))

    @property
    def handoff(self) -> str | None:
        """The reason, when this message hands the conversation to a person."""
        reason = self.hints.get("handoff")
        return str(reason) if reason else None


@dataclass(frozen=True)
class Turn:
    """The dialogue's answer to one message."""

    replies: tuple[Reply, ...]
    expect: str | None = None  # "yes_no", "choice", "digits", … (the latest hint of the turn)
    options: int | None = None  # how many options a "choice" offered
    order_ids: tuple[int, ...] = ()
    urgent: bool = False

    @property
    def handoff(self) -> str | None:
        return next((r.handoff for r in self.replies if r.handoff), None)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.replies if r.text]


@dataclass(frozen=True)
class DialogueState:
    """What the tracker says after a turn (`include_events=NONE`)."""

    intent: str | None
    confidence: float
    active_loop: str | None


def _replies(messages: list[dict[str, Any]]) -> tuple[list[Reply], list[dict[str, Any]]]:
    """Texts with the custom payload sent right after each; payloads that came alone."""
    replies: list[Reply] = []
    alone: list[dict[str, Any]] = []
    attachable = False  # the previous message was a text without its payload yet
    for message in messages:
        custom = message.get("custom")
        if message.get("text"):
            replies.append(Reply(str(message["text"]), dict(custom or {})))
            attachable = not custom
        elif isinstance(custom, dict):
            if attachable:
                replies[-1] = Reply(replies[-1].text, dict(custom))
            else:
                alone.append(custom)
            attachable = False
    return replies, alone


def parse_turn(messages: list[dict[str, Any]]) -> Turn:
    """Rasa's REST output (a list of {"text"} and {"custom"} messages) as a Turn."""
    replies, alone = _replies(messages)
    hints = [r.hints for r in replies] + alone
    expect: str | None = None
    options: int | None = None
    order_ids: list[int] = []
    for hint in hints:
        if hint.get("expect"):
            expect = str(hint["expect"])
            options = int(hint["options"]) if isinstance(hint.get("options"), int) else None
        if isinstance(hint.get("order_id"), int):
            order_ids.append(hint["order_id"])
    return Turn(
        replies=tuple(replies),
        expect=expect,
        options=options,
        order_ids=tuple(dict.fromkeys(order_ids)),
        urgent=any(h.get("urgent") for h in hints),
    )


def caller_identity(caller: str) -> tuple[IdentityKind, str]:
    """Who is on the line: an SOS terminal (its SIP user is terminal-<device id>) or a phone."""
    if caller.startswith(TERMINAL_SIP_PREFIX) and len(caller) > len(TERMINAL_SIP_PREFIX):
        return IdentityKind.terminal, caller[len(TERMINAL_SIP_PREFIX) :]
    return IdentityKind.phone, caller


def conversation_key(caller: str) -> str:
    """The dialogue's sender id for a caller: the same on every call from that number (or SOS
    terminal). A caller whose line dropped, or whose hotline host died, calls again and goes on
    where the conversation was, on whichever host answers: the tracker is in the shared Redis,
    and Rasa starts a new session after an hour of quiet (bot/domain.yml). A keyed hash
    (LINLI_DATA_KEY, which every application host has): no number in a key or a log."""
    return "call-" + cipher().lookup_hash("voice conversation", caller)[:32]


def caller_channel(caller: str) -> Channel:
    """Orders a terminal's voice session makes count as the terminal's, not the hotline's."""
    kind, _ = caller_identity(caller)
    return Channel.terminal if kind is IdentityKind.terminal else Channel.hotline


class DialogueClient:
    """HTTP to the Rasa server, shared by every call of the hotline (one connection pool)."""

    def __init__(self, rasa_url: str, *, timeout: float = 30.0) -> None:
        self.rasa_url = rasa_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.rasa_url, timeout=timeout)

    def conversation(self, caller: str, sender_id: str | None = None) -> VoiceConversation:
        """The caller's conversation (`conversation_key`), or the one `sender_id` names."""
        return VoiceConversation(self, sender_id or conversation_key(caller), caller)

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/", timeout=3.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DialogueUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise DialogueUnavailable(f"{method} {path}: HTTP {response.status_code}")
        return response.json()


class VoiceConversation:
    """One call's conversation with the dialogue core."""

    def __init__(self, client: DialogueClient, sender_id: str, caller: str) -> None:
        self.client = client
        self.sender_id = sender_id
        kind, value = caller_identity(caller)
        # What actions read: the resident behind the number, and which channel it came from.
        self.metadata: dict[str, Any] = {
            "identity": {"kind": kind.value, "value": value},
            "channel": caller_channel(caller).value,
        }

    async def send(self, text: str) -> Turn:
        """One message (recognised words, or "/intent" for a keypad choice) and its answer."""
        messages = await self.client._request(
            "POST",
            "/webhooks/rest/webhook",
            json={
                "sender": self.sender_id,
                "message": text,
                "metadata": self.metadata,
                "input_channel": CHANNEL,
            },
        )
        return parse_turn(messages if isinstance(messages, list) else [])

    async def state(self) -> DialogueState:
        tracker = await self.client._request(
            "GET",
            f"/conversations/{self.sender_id}/tracker",
            params={"include_events": "NONE"},
        )
        intent = (tracker.get("latest_message") or {}).get("intent") or {}
        loop = (tracker.get("active_loop") or {}).get("name")
        return DialogueState(
            intent=intent.get("name"),
            confidence=float(intent.get("confidence") or 0.0),
            active_loop=loop or None,
        )
