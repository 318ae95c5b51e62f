"""Exactly one active scheduler across hosts: a lease in Redis.

Every host runs `python -m workorders scheduler`. The one holding the lease sweeps; the others
try every second and take over within `SCHEDULER_LEASE_SECONDS` of the holder's death, when
its lease expires (a clean stop releases it at once). The holder renews the lease before every
round and between its steps, and stops the moment another host has it (the lease lapsed during
a long pause and was taken). Two sweeps overlapping for a round would still be safe:
the sweeps lock the rows they act on (SKIP LOCKED) and check each order's state first. The
lease is what keeps a city's hosts from all doing the same work, and says who is doing it.
When Redis cannot be reached nobody can tell who holds it, so every scheduler sweeps until it
is back: duplicated work is safe, a stalled escalation is not.

redis-py's `Lock` does the protocol (a token, an expiry, renewal only by the token's owner);
the token names the holder (host:pid) so operators can see it with `GET`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid

import redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, client: redis.Redis, key: str, seconds: float) -> None:
        self.key = key
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = client.lock(key, timeout=seconds, blocking=False, thread_local=False)
        self._held = False
        self._unreachable = False

    @property
    def held(self) -> bool:
        """Held as of the last `may_sweep()` (the metrics' view; no round trip)."""
        return self._held

    def may_sweep(self) -> bool:
        """Take or renew the lease. False only while another host verifiably holds it: with
        Redis unreachable every scheduler sweeps, since overlapping sweeps are safe and an
        emergency's escalation must not wait for Redis to come back."""
        try:
            if self._held:
                self._lock.reacquire()  # back to the full term; raises if it is not ours now
            else:
                self._held = bool(self._lock.acquire(token=self.token))
                if self._held:
                    log.info("scheduler: holds the lease %s as %s", self.key, self.token)
            self._unreachable = False
            return self._held
        except LockError as exc:
            log.warning("scheduler: lost the lease %s (%s); standing by", self.key, exc)
            self._held = False
            return False
        except redis.RedisError as exc:
            if not self._unreachable:
                log.error("scheduler: lease %s unknown (%s); sweeping until Redis is back",
                          self.key, exc)  # fmt: skip
            self._unreachable, self._held = True, False
            return True

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(LockError, redis.RedisError):  # else it lapses by itself
                self._lock.release()
            self._held = False
