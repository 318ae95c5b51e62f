"""The official account's one access_token, shared in Redis by every gateway process and sender.

WeChat allows a limited number of token fetches a day, and with the classic `/cgi-bin/token`
every fetch invalidates the previous token (after a short grace): two processes refreshing on
their own would keep rejecting each other's token. So:

- the token lives in Redis under `<prefix>:access-token` (a hash: `token`, `expires_at` for
  operators), whose Redis TTL ends `REFRESH_MARGIN_SECONDS` before WeChat's expiry: a missing
  key means "refresh now", with no clock shared between machines;
- one refresher at a time across processes (a Redis lock `<prefix>:access-token:lock` with a
  timeout, so a refresher that died frees it), and one per process (an asyncio lock, so 20
  coroutines wake at once instead of polling Redis); whoever waited re-reads the stored token
  instead of fetching again;
- a token WeChat rejected (40001/42001/40014) is replaced only if it is still the stored one:
  20 senders rejected with the same token cause one refresh; a sender holding an older token
  just gets the stored one;
- `fetch` is expected to use the stable-token API (`POST /cgi-bin/stable_token`), which hands
  every caller the same token until it expires (and a new one in its last 5 minutes), so even
  two refreshers that raced past the lock would agree; `force=True` only for a rejected token.

Neither the token nor the app secret is ever logged here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import LockError

log = logging.getLogger(__name__)

# Refresh this long before WeChat's expiry: the stable-token API hands out the next token in the
# last 5 minutes of the current one, and a token fetched now must last a whole send with retry.
REFRESH_MARGIN_SECONDS = 300
# The lock frees itself after this long (a refresher killed mid-fetch); longer than one fetch.
LOCK_TIMEOUT_SECONDS = 30.0
# How long a process waits for another's refresh before giving up on this call.
LOCK_WAIT_SECONDS = 40.0

Fetch = Callable[[bool], Awaitable[tuple[str, int]]]


class TokenUnavailable(Exception):
    """No token could be had: the refresh lock stayed held (another refresher hung)."""


class AccessTokens:
    """`get()` the stored token; `invalid(token)` when WeChat rejected it.

    `fetch(force)` asks WeChat for a token and returns `(token, expires_in seconds)`; its
    errors (WeChat's or the network's) pass through unchanged.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        fetch: Fetch,
        *,
        margin: int = REFRESH_MARGIN_SECONDS,
        lock_timeout: float = LOCK_TIMEOUT_SECONDS,
        lock_wait: float = LOCK_WAIT_SECONDS,
    ) -> None:
        self.redis = redis
        self.key = f"{prefix}:access-token"
        self.lock_key = f"{self.key}:lock"
        self._fetch = fetch
        self._margin = margin
        self._lock_timeout = lock_timeout
        self._lock_wait = lock_wait
        self._local = asyncio.Lock()

    async def stored(self) -> str | None:
        """The stored token while it is not due for refresh, else None."""
        value = await self.redis.hget(self.key, "token")
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def get(self) -> str:
        """The shared token, fetched first when missing or within the margin of its expiry."""
        token = await self.stored()
        if token is not None:
            return token
        return await self._refresh(rejected=None)

    async def invalid(self, token: str) -> str:
        """WeChat rejected `token`: replace it (once, whoever else saw it rejected too) and
        return the token to retry with."""
        return await self._refresh(rejected=token)

    async def _usable(self, rejected: str | None) -> str | None:
        """A stored token that makes a fetch unnecessary: any, unless it is the rejected one."""
        token = await self.stored()
        return None if token is None or token == rejected else token

    async def _refresh(self, rejected: str | None) -> str:
        async with self._local:
            token = await self._usable(rejected)
            if token is not None:
                return token
            lock = self.redis.lock(
                self.lock_key,
                timeout=self._lock_timeout,
                sleep=0.05,
                blocking_timeout=self._lock_wait,
            )
            if not await lock.acquire():
                raise TokenUnavailable("another process holds the WeChat token refresh")
            try:
                # Another process may have refreshed while we waited for the lock.
                token = await self._usable(rejected)
                if token is not None:
                    return token
                # Forcing a new token is for a rejected one only: WeChat limits forced
                # refreshes, and a plain stable-token call returns the current valid token.
                forced = rejected is not None
                token, expires_in = await self._fetch(forced)
                await self._store(token, expires_in)
                log.info(
                    "WeChat access token %s (valid %d s)",
                    "replaced after a rejection" if forced else "fetched",
                    expires_in,
                )
                return token
            finally:
                try:
                    await lock.release()
                except LockError:
                    log.warning(
                        "WeChat token refresh outlived its lock (%.0f s)", self._lock_timeout
                    )

    async def _store(self, token: str, expires_in: int) -> None:
        # Due for refresh `margin` before the expiry; a token shorter-lived than twice the
        # margin (a test stand-in's) halfway through, so it is not refetched on every call.
        usable = expires_in - self._margin if expires_in > 2 * self._margin else expires_in / 2
        async with self.redis.pipeline(transaction=True) as pipe:
            expires_at = int(time.time()) + expires_in
            pipe.hset(self.key, mapping={"token": token, "expires_at": expires_at})
            pipe.pexpire(self.key, max(int(usable * 1000), 1))
            await pipe.execute()
