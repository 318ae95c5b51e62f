"""SOS follow-ups (family told, callback asked, escalation chain) on one thread, after alerts.

In a burst of presses every staff alert must be out before anyone's follow-up takes the GIL,
a database connection or SQLite's write lock: a press's request commits and announces its
alert and queues its follow-up here; this thread runs follow-ups, one after another, only
while no terminal request is in flight (or once one has waited `max_wait`), and publishes
what a batch of them recorded in one go.

Nothing here has to survive a crash. The order without an escalation chain is the durable
record: the scheduler's sweep (`escalation.repair_missing`) finishes it, and `escalation.start`
acts once per order however often it is called.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

Work = Callable[[], list[int]]  # runs one follow-up; the ids of the events it committed
Publish = Callable[[Iterable[int]], None]


@dataclass(frozen=True)
class _Queued:
    work: Work
    publish: Publish
    due: float  # monotonic: run by now even if alerts keep coming


class FollowUps:
    """A queue drained by one daemon thread, held back while terminal requests are in flight."""

    def __init__(self, max_wait: float = 2.0) -> None:
        self.max_wait = max_wait
        self._queue: deque[_Queued] = deque()
        self._in_flight = 0
        self._running = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="sos-follow-ups", daemon=True)
        self._thread.start()

    @contextmanager
    def alerting(self) -> Iterator[None]:
        """Around a terminal request: follow-ups wait until none is in flight."""
        with self._cond:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def submit(self, work: Work, publish: Publish) -> None:
        with self._cond:
            self._queue.append(_Queued(work, publish, time.monotonic() + self.max_wait))
            self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Until every follow-up queued so far has run (shutdown, tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._running, timeout)

    def _next(self) -> list[_Queued]:
        """Wait for queued work and no terminal request in flight; take all that is queued."""
        with self._cond:
            while True:
                if self._queue:
                    now = time.monotonic()
                    if self._in_flight == 0 or now >= self._queue[0].due:
                        batch = list(self._queue)
                        self._queue.clear()
                        self._running = len(batch)
                        return batch
                    self._cond.wait(self._queue[0].due - now)
                else:
                    self._cond.wait()

    def _yield_to_alerts(self, item: _Queued) -> None:
        """Between two follow-ups of a batch: let a press that came meanwhile go first."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._in_flight == 0 or time.monotonic() >= item.due,
                max(item.due - time.monotonic(), 0),
            )

    def _run(self) -> None:
        while True:
            batch = self._next()
            committed: dict[Publish, list[int]] = {}
            for item in batch:
                self._yield_to_alerts(item)
                try:
                    committed.setdefault(item.publish, []).extend(item.work())
                except Exception:  # the sweep repairs it; the others still run
                    log.exception("SOS follow-up failed; the scheduler will finish it")
            for publish, ids in committed.items():
                try:
                    publish(ids)
                except Exception:  # the relay publishes them
                    log.exception("SOS follow-up events %s not published; left to the relay", ids)
            with self._cond:
                self._running = 0
                self._cond.notify_all()


@lru_cache
def follow_ups() -> FollowUps:
    """One per process (each API worker has its own, started on first use)."""
    return FollowUps()
