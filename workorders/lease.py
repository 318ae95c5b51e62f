"""One process among a city's hosts does a piece of work: a lease in Redis.

Every host runs the same programs. For work that must happen once (the scheduler's sweeps, the
hotline's own calls) the one holding the lease works and the others try every second; they take
over within the lease's term of the holder's death, when its lease expires (a clean stop
releases it at once). The holder renews it often and stops the moment another host has it (the
lease lapsed during a long pause and was taken).

redis-py's `Lock` does the protocol (a token, an expiry, renewal only by the token's owner);
the token names the holder (host:pid) so operators can see it with `GET`, and a holder's writes
can be fenced with it (voice/outbound_state.py).
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
    def __init__(self, client: redis.Redis, key: str, seconds: float, role: str) -> None:
        self.key, self.role = key, role
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = client.lock(key, timeout=seconds, blocking=False, thread_local=False)
        self._held = False
        self._unreachable = False

    @property
    def held(self) -> bool:
        """Held as of the last take (the metrics' view; no round trip)."""
        return self._held

    def take(self) -> bool:
        """Take or renew the lease: True while this process holds it, False while another
        does. redis.RedisError: nobody can tell now (each holder decides what that means)."""
        try:
            if self._held:
                self._lock.reacquire()  # back to the full term; raises if it is not ours now
            else:
                self._held = bool(self._lock.acquire(token=self.token))
                if self._held:
                    log.info("%s: holds the lease %s as %s", self.role, self.key, self.token)
        except LockError as exc:
            log.warning("%s: lost the lease %s (%s); standing by", self.role, self.key, exc)
            self._held = False
        except redis.RedisError as exc:
            if not self._unreachable:
                log.error("%s: lease %s unknown (%s)", self.role, self.key, exc)
            self._unreachable = True
            raise
        self._unreachable = False
        return self._held

    def may_sweep(self) -> bool:
        """The scheduler's rule: False only while another host verifiably holds the lease.
        With Redis unreachable every scheduler sweeps, since overlapping sweeps are safe (they
        lock the rows they act on, SKIP LOCKED, and check each order's state first) and an
        emergency's escalation must not wait for Redis to come back."""
        try:
            return self.take()
        except redis.RedisError:
            self._held = False
            return True

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(LockError, redis.RedisError):  # else it lapses by itself
                self._lock.release()
            self._held = False
