"""Giving the conversation back to the bot once staff end a hand-over, exactly once.

While staff have a conversation the gateway forwards nothing to Rasa, so Rasa may still be
waiting for a person (`handoff_form`), paused, or in the middle of a form from before. When
the hand-over ends, Rasa is told: resume, no active form, none of the hand-over's slots, and
a line in the history of what staff settled, so the bot does not ask it again and the next
hand-over's summary shows it. Both the message flow (first message after the hand-back) and
the event tail (the `handed_back`/`closed` event) call `resume_once`; a per-conversation
Redis lock and the id of the last applied hand-over make the second call a no-op.
"""

from __future__ import annotations

from typing import Any

from channels.gateway.dialogue import Dialogue, DialogueUnavailable
from channels.gateway.store import Store

HANDOFF_SLOTS = ("requested_slot", "handoff_reason", "handoff_acknowledged")


def note_of(handback: dict[str, Any]) -> str:
    """The history line, e.g. "（工作人员李网格员已处理：已约好明天上午师傅上门）"."""
    who = f"工作人员{handback.get('claimed_by_name') or ''}"
    outcome = (handback.get("outcome") or "").strip()
    if handback.get("end_kind") == "closed":
        return f"（{who}已结束人工服务：{outcome}）" if outcome else f"（{who}已结束人工服务）"
    return f"（{who}已处理：{outcome}）" if outcome else f"（{who}已处理完毕，交回助手）"


def _bot_line(note: str, handoff_id: int) -> dict[str, Any]:
    return {"event": "bot", "text": note, "metadata": {"linli_handback": handoff_id}}


def resume_events(note: str, handoff_id: int) -> list[dict[str, Any]]:
    return [
        {"event": "resume"},
        {"event": "active_loop", "name": None},
        *({"event": "slot", "name": slot, "value": None} for slot in HANDOFF_SLOTS),
        _bot_line(note, handoff_id),
    ]


class Resumer:
    def __init__(self, dialogue: Dialogue, store: Store) -> None:
        self.dialogue, self.store = dialogue, store

    async def resume_once(self, key: str, handback: dict[str, Any]) -> bool:
        """Apply this ended hand-over to Rasa unless it (or a later one) was applied already.
        Raises DialogueUnavailable when Rasa does not answer: nothing is marked, so the next
        message or event tries again."""
        handoff_id = int(handback["id"])
        if handoff_id <= await self.store.resumed(key):
            return False  # the usual case, without taking the lock
        async with self.store.resume_lock(key):
            if handoff_id <= await self.store.resumed(key):
                return False
            note = note_of(handback)
            if (await self.dialogue.tracker_state(key)).started:
                await self.dialogue.append(key, resume_events(note, handoff_id))
            else:
                # Rasa has forgotten the conversation (session gone, Redis flushed): nothing to
                # resume. Appending now would start a session without the channel's identity
                # (the resident would be asked who they are); the note follows the next turn.
                await self.store.set_note(key, note)
            await self.store.set_resumed(key, handoff_id)
        return True

    async def after_turn(self, key: str) -> None:
        """Add a note kept for a conversation Rasa had forgotten, now that it has a session."""
        note = await self.store.take_note(key)
        if note is None:
            return
        try:
            await self.dialogue.append(key, [_bot_line(note, await self.store.resumed(key))])
        except DialogueUnavailable:
            await self.store.set_note(key, note)
            raise
