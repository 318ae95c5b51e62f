"""What the gateway keeps in Redis, shared by every gateway instance: per conversation what it
last learnt from the API, which hand-back has been applied to Rasa, a note still to add, the
outcome of each message (so a channel's retry is answered, not re-run), the event cursor and
messages the API could not take yet. All keys live under "<prefix>:gateway:"."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

CONVERSATION_TTL = 30 * 24 * 3600  # as long as Rasa keeps a tracker (bot/endpoints.yml)
TURN_TTL = 24 * 3600  # a channel retries within minutes; a day is plenty
TURN_RUNNING_TTL = 180  # longer than any turn may take; then a retry may run it again
RESUME_LOCK_SECONDS = 30
# Within one hand-over the state only moves forward; a later hand-over is newer still. So news
# that arrives late (a recording answered before a claim, an event replayed) never wins.
RANK = {"waiting": 1, "staff": 2, "bot": 3}
_SET_STATE = """
local now = redis.call('HMGET', KEYS[1], 'handoff', 'rank')
local h, r = tonumber(now[1]) or -1, tonumber(now[2]) or 0
local nh, nr = tonumber(ARGV[1]), tonumber(ARGV[2])
if nh < h or (nh == h and nr < r) then return 0 end
if nh ~= h then redis.call('HDEL', KEYS[1], 'staff') end
redis.call('HSET', KEYS[1], 'handoff', ARGV[1], 'rank', ARGV[2], 'state', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class Store:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = f"{prefix}:gateway"

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- what the gateway knows of a conversation ---------------------------------------------

    async def conversation(self, key: str) -> dict[str, str]:
        return await self.redis.hgetall(self._key("conversation", key))

    async def remember(self, key: str, **fields: str | int | bool | None) -> None:
        """Keep fields (None: forget one) of a conversation for a month after its last use."""
        name = self._key("conversation", key)
        values = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in fields.items()}
        kept = {k: v for k, v in values.items() if fields[k] is not None}
        dropped = [k for k in fields if fields[k] is None]
        async with self.redis.pipeline(transaction=True) as pipe:
            if kept:
                pipe.hset(name, mapping=kept)
            if dropped:
                pipe.hdel(name, *dropped)
            pipe.expire(name, CONVERSATION_TTL)
            await pipe.execute()

    async def set_state(self, key: str, handoff_id: int, state: str) -> bool:
        """Keep the takeover state unless newer news is kept already; a new hand-over forgets
        who had the last one."""
        name = self._key("conversation", key)
        applied = await self.redis.eval(
            _SET_STATE, 1, name, handoff_id, RANK[state], state, CONVERSATION_TTL
        )
        return bool(applied)

    # --- resuming the bot after a hand-back, once ---------------------------------------------

    @asynccontextmanager
    async def resume_lock(self, key: str) -> AsyncIterator[None]:
        """One resume at a time per conversation, across processes (the message flow and the
        event tail may see the same hand-back at the same moment)."""
        lock = self.redis.lock(
            self._key("resume-lock", key),
            timeout=RESUME_LOCK_SECONDS,
            blocking_timeout=RESUME_LOCK_SECONDS,
        )
        async with lock:
            yield

    async def resumed(self, key: str) -> int:
        """The id of the last hand-over whose end was applied to Rasa (0: none)."""
        return int(await self.redis.get(self._key("resumed", key)) or 0)

    async def set_resumed(self, key: str, handoff_id: int) -> None:
        # Kept without expiry: an older hand-back must never be applied again, however late.
        await self.redis.set(self._key("resumed", key), handoff_id)

    async def set_note(self, key: str, note: str) -> None:
        await self.redis.set(self._key("note", key), note, ex=CONVERSATION_TTL)

    async def take_note(self, key: str) -> str | None:
        return await self.redis.getdel(self._key("note", key))

    # --- a channel's retry of the same message ------------------------------------------------

    async def begin_turn(self, key: str, client_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(ours, outcome): ours when this call runs the turn; else the outcome of the run
        that did (None while it is still running)."""
        name = self._key("turn", key, client_id)
        if await self.redis.set(name, "", nx=True, ex=TURN_RUNNING_TTL):
            return True, None
        stored = await self.redis.get(name)
        return False, json.loads(stored) if stored else None

    async def end_turn(self, key: str, client_id: str, outcome: dict[str, Any] | None) -> None:
        """Keep the outcome for retries; None: the turn failed, a retry runs it again."""
        name = self._key("turn", key, client_id)
        if outcome is None:
            await self.redis.delete(name)
        else:
            await self.redis.set(name, json.dumps(outcome, ensure_ascii=False), ex=TURN_TTL)

    # --- the event tail ------------------------------------------------------------------------

    async def cursor(self) -> str | None:
        return await self.redis.get(self._key("events-cursor"))

    async def set_cursor(self, stream_id: str) -> None:
        await self.redis.set(self._key("events-cursor"), stream_id)

    # --- messages the API could not take (it was down) -----------------------------------------

    async def keep_unrecorded(self, key: str, body: dict[str, Any]) -> None:
        entry = json.dumps({"key": key, "body": body}, ensure_ascii=False)
        await self.redis.rpush(self._key("unrecorded"), entry)

    async def first_unrecorded(self) -> dict[str, Any] | None:
        entry = await self.redis.lindex(self._key("unrecorded"), 0)
        return json.loads(entry) if entry else None

    async def drop_first_unrecorded(self) -> None:
        await self.redis.lpop(self._key("unrecorded"))

    # --- waking the open pages of a conversation -----------------------------------------------

    def wake_channel(self, key: str) -> str:
        return self._key("wake", key)

    def wake_pattern(self) -> str:
        return self._key("wake", "*")

    async def wake(self, key: str) -> None:
        await self.redis.publish(self.wake_channel(key), "1")
