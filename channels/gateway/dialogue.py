"""The gateway's client of the Rasa server: a turn through the REST channel, the NLU alone (to
screen a message for an emergency while staff have the conversation), the tracker's state,
and events appended to it (to resume the bot after a hand-back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.voice import DialogueClient, DialogueUnavailable, Turn, parse_turn

__all__ = ["Dialogue", "DialogueUnavailable", "TrackerState"]


@dataclass(frozen=True)
class TrackerState:
    started: bool  # the resident has said something in the tracker Rasa keeps
    active_loop: str | None


class Dialogue(DialogueClient):
    """One connection pool to Rasa for every conversation of every channel."""

    async def send(self, key: str, text: str, metadata: dict[str, Any], channel: str) -> Turn:
        messages = await self._request(
            "POST",
            "/webhooks/rest/webhook",
            json={
                "sender": key,
                "message": text,
                "metadata": metadata,
                "input_channel": channel,
            },
        )
        return parse_turn(messages if isinstance(messages, list) else [])

    async def intent(self, text: str) -> str | None:
        """What the NLU makes of the words, without a turn in any conversation."""
        parsed = await self._request("POST", "/model/parse", json={"text": text})
        return ((parsed or {}).get("intent") or {}).get("name")

    async def tracker_state(self, key: str) -> TrackerState:
        """Without events (a few ms). Rasa runs a session start for an unknown conversation
        to answer, but keeps nothing."""
        tracker = await self._request(
            "GET", f"/conversations/{key}/tracker", params={"include_events": "NONE"}
        )
        latest = tracker.get("latest_message") or {}
        loop = (tracker.get("active_loop") or {}).get("name")
        return TrackerState(started=bool(latest.get("text")), active_loop=loop or None)

    async def append(self, key: str, events: list[dict[str, Any]]) -> None:
        await self._request("POST", f"/conversations/{key}/tracker/events", json=events)
