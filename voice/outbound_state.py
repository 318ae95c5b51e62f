"""Where the hotline's own calls stand, shared by every hotline host: Redis, under a lease.

Every hotline host may place the calls (voice/outbound.py); the one holding the lease
(workorders/lease.py) does, and another takes over within the lease's term when it dies. What
the holder has done lives in Redis, so the next holder goes on from there:

    {prefix}:outbound     the lease (its value names the holder: host:pid:nonce)
    {prefix}:cursor       the event stream position handled
    {prefix}:follow-ups   hash: follow-up key (consent:7, rating:42) → {"item", "tries", "due"}

Every write is fenced: one Lua script checks that the lease is still this process's and only
then changes the follow-ups and the cursor, together. A host that lost the lease (a long pause,
Redis failing over) cannot move the position under the next holder. Writes are staged and
flushed by the holder's keeper (`Outbound`): a follow-up staged before the cursor moves past its
event reaches Redis in the same script, so it is never lost in between.

The client is redis-py's synchronous one, called on a thread: the lease (`redis.lock.Lock`)
is, and a few commands per call placed cost nothing there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis

from workorders.lease import Lease

log = logging.getLogger(__name__)

# KEYS: lease, cursor, follow-ups. ARGV: the lease token, the cursor ('' leaves it), then pairs
# of a follow-up key and its entry ('' removes it). 0: the lease is not ours, nothing written.
_FENCED_WRITE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('hdel', KEYS[3], ARGV[i])
  else redis.call('hset', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
if ARGV[2] ~= '' then redis.call('set', KEYS[2], ARGV[2]) end
return 1
"""


class SharedState:
    """The lease, the stream position and the follow-ups of the hotlines' own calls."""

    def __init__(self, client: redis.Redis, prefix: str, lease_seconds: float) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.lease = Lease(client, f"{prefix}:outbound", lease_seconds, "hotline calls")
        self.cursor_key, self.follow_ups_key = f"{prefix}:cursor", f"{prefix}:follow-ups"
        self._write = client.register_script(_FENCED_WRITE)
        self._cursor: str | None = None  # staged, not yet written
        self._follow_ups: dict[str, str] = {}  # key → JSON entry, '' to remove

    async def take(self) -> bool:
        """Take or renew the lease. Redis unreachable: False for a host standing by (it
        cannot read where the calls stand), True for the holder (its calls go on; its writes
        wait for Redis)."""
        held = self.lease.held
        try:
            return await asyncio.to_thread(self.lease.take)
        except redis.RedisError:
            return held

    async def release(self) -> None:
        await asyncio.to_thread(self.lease.release)

    async def load(self) -> tuple[str, dict[str, dict[str, Any]]]:
        """The position ("$" when no hotline has handled anything yet: from now on) and the
        follow-ups not yet done. Redis unreachable: redis.RedisError."""
        cursor, entries = await asyncio.to_thread(self._read)
        follow_ups = {}
        for key, value in entries.items():
            try:
                follow_ups[key.decode()] = json.loads(value)
            except ValueError:
                log.error("hotline calls: follow-up %s unreadable; left for staff", key)
        return (cursor.decode() if cursor else "$"), follow_ups

    def _read(self) -> tuple[bytes | None, dict[bytes, bytes]]:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.cursor_key).hgetall(self.follow_ups_key)
            cursor, entries = pipe.execute()
        return cursor, entries

    def stage_cursor(self, stream_id: str) -> None:
        self._cursor = stream_id

    def stage_follow_up(self, key: str, entry: dict[str, Any] | None) -> None:
        """`entry` to keep (or update), None when it is done."""
        self._follow_ups[key] = "" if entry is None else json.dumps(entry, ensure_ascii=False)

    @property
    def staged(self) -> bool:
        return self._cursor is not None or bool(self._follow_ups)

    async def flush(self) -> bool:
        """Write what is staged, if the lease is still ours. False: another host holds it
        (nothing written). Redis unreachable: kept staged for the next flush, True."""
        if not self.staged:
            return True
        cursor, follow_ups = self._cursor, self._follow_ups
        self._cursor, self._follow_ups = None, {}
        args = [self.lease.token, cursor or ""]
        for key, entry in follow_ups.items():
            args += [key, entry]
        keys = [self.lease.key, self.cursor_key, self.follow_ups_key]
        try:
            written = await asyncio.to_thread(self._write, keys=keys, args=args)
        except redis.RedisError as exc:
            log.warning("hotline calls: position not saved (%s); trying again", exc)
            self._cursor = self._cursor or cursor
            self._follow_ups = {**follow_ups, **self._follow_ups}
            return True
        if not written:
            log.warning("hotline calls: the lease is another host's; nothing saved")
        return bool(written)
