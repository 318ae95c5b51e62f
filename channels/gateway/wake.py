"""Waking a conversation's open pages in every gateway instance: one Redis pub/sub pattern
subscription per instance, fanned out here to the streams that wait on that conversation."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from channels.gateway.store import Store

log = logging.getLogger(__name__)


class WakeHub:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.ready = asyncio.Event()  # subscribed: a wake-up published now is not missed

    @contextmanager
    def waiter(self, key: str) -> Iterator[asyncio.Event]:
        """An event set whenever the conversation is woken, while the block runs."""
        event = asyncio.Event()
        self._waiting[key].add(event)
        try:
            yield event
        finally:
            self._waiting[key].discard(event)
            if not self._waiting[key]:
                del self._waiting[key]

    def _deliver(self, channel: str) -> None:
        key = channel.removeprefix(self.store.wake_channel(""))
        for event in self._waiting.get(key, ()):
            event.set()

    async def run(self) -> None:
        """Forever: listen, and after a lost Redis connection listen again (pages fall back
        to their periodic check meanwhile)."""
        while True:
            pubsub: aioredis.client.PubSub = self.store.redis.pubsub()
            try:
                await pubsub.psubscribe(self.store.wake_pattern())
                self.ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        self._deliver(str(message["channel"]))
            except (RedisError, OSError) as exc:
                log.warning("wake-ups: Redis lost (%s); listening again in 2 s", exc)
                self.ready.clear()
                await asyncio.sleep(2)
            finally:
                await pubsub.reset()
