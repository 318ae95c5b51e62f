"""The device's persistent outbox: an SOS pressed while the network or server is down is kept
on disk and delivered when they return, exactly once.

Each event gets its id (the server's idempotency key) and its exact body bytes when it is
queued; every retry sends those same bytes, re-signed. A row is deleted only after the server
confirmed it (2xx). If the device dies after the server acted but before the confirmation
arrived, the next attempt is answered `duplicate` and nothing happens twice.

SQLite with `synchronous=FULL`: a power cut right after the press does not lose it.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from channels.sos_terminal.transport import Outcome, SendResult, Transport

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def event_body(
    type_: str,
    occurred_at: datetime,
    *,
    trigger: str | None = None,
    info: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> tuple[str, bytes]:
    """(event id, the exact JSON bytes to send and sign)."""
    ident = event_id or uuid.uuid4().hex
    payload: dict[str, Any] = {
        "event_id": ident,
        "type": type_,
        "occurred_at": occurred_at.astimezone(timezone.utc).isoformat(),
    }
    if trigger is not None:
        payload["trigger"] = trigger
    if info:
        payload["info"] = info
    return ident, json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class QueuedEvent:
    seq: int
    event_id: str
    type: str
    body: bytes
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None


class EventQueue:
    """Thread-safe; one connection guarded by a lock (a handful of writes per press)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, event_id: str, type_: str, body: bytes) -> QueuedEvent:
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (event_id, type, body, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event_id, type_, body, now, now),
            )
            seq = int(cur.lastrowid or 0)
        return QueuedEvent(seq, event_id, type_, body, now, 0, now, None)

    def _rows(self, sql: str, *args: Any) -> list[QueuedEvent]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [QueuedEvent(*row) for row in rows]

    def pending(self, type_: str | None = None) -> list[QueuedEvent]:
        columns = "seq, event_id, type, body, created_at, attempts, next_attempt_at, last_error"
        if type_ is None:
            return self._rows(f"SELECT {columns} FROM outbox ORDER BY seq")
        return self._rows(f"SELECT {columns} FROM outbox WHERE type = ? ORDER BY seq", type_)

    def due(self, now: float) -> list[QueuedEvent]:
        return [e for e in self.pending() if e.next_attempt_at <= now]

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM outbox").fetchone()
        return None if row[0] is None else float(row[0])

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def contains(self, event_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM outbox WHERE event_id = ?", (event_id,))
            return row.fetchone() is not None

    def failed(self, seq: int, next_attempt_at: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                " WHERE seq = ?",
                (next_attempt_at, error[:200], seq),
            )

    def done(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def retry_all_now(self) -> None:
        """After a restart or when the network is back: no reason to wait out old back-offs."""
        with self._lock:
            self._db.execute("UPDATE outbox SET next_attempt_at = ?", (time.time(),))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with jitter: quick at first (an outage may be a blip), then calm."""

    base: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    # Refused for good (wrong key, unknown device): keep it, but do not hammer the server.
    rejected: float = 300.0
    jitter: float = 0.2

    def delay(self, attempts: int, outcome: Outcome) -> float:
        if outcome == Outcome.rejected:
            return self.rejected
        raw = min(self.maximum, self.base * self.factor ** max(attempts - 1, 0))
        return raw * (1 + random.uniform(-self.jitter, self.jitter))


Delivered = Callable[[QueuedEvent, SendResult], None]


class Sender:
    """Delivers the queue in order in a background thread, until `stop`."""

    def __init__(
        self,
        queue: EventQueue,
        transport: Transport,
        *,
        on_delivered: Delivered | None = None,
        on_rejected: Delivered | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.queue = queue
        self.transport = transport
        self.on_delivered = on_delivered
        self.on_rejected = on_rejected
        self.backoff = backoff or Backoff()
        self._wake = threading.Condition()
        self._woken = False
        # Set when the server or network is down: nothing is tried before then, unless woken.
        self._pause_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.queue.retry_all_now()
        self._thread = threading.Thread(target=self._run, name="sos-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Something was queued: try now instead of waiting for the next back-off."""
        with self._wake:
            self._woken = True
            self._pause_until = 0.0
            self._wake.notify_all()

    def deliver_due(self) -> int:
        """One pass over what is due; returns how many were confirmed."""
        confirmed = 0
        if time.time() < self._pause_until:
            return 0
        for entry in self.queue.due(time.time()):
            if self._stop.is_set():
                break
            result = self.transport.send(entry.body)
            if result.outcome == Outcome.delivered:
                self.queue.done(entry.seq)
                confirmed += 1
                self._notify(self.on_delivered, entry, result)
                continue
            delay = self.backoff.delay(entry.attempts + 1, result.outcome)
            self.queue.failed(entry.seq, time.time() + delay, result.error)
            if result.outcome == Outcome.rejected:
                log.warning("event %s refused by the server: %s", entry.event_id, result.error)
                self._notify(self.on_rejected, entry, result)
                continue  # the others may still get through
            log.info(
                "event %s not delivered yet (%s); retry in %.1fs",
                entry.event_id,
                result.error,
                delay,
            )
            self._pause_until = time.time() + delay  # the rest would fail alike
            break
        return confirmed

    def _notify(self, callback: Delivered | None, entry: QueuedEvent, result: SendResult) -> None:
        if callback is None:
            return
        try:
            callback(entry, result)
        except Exception:  # a feedback failure must not stop delivery
            log.exception("delivery callback failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # a disk or programming error: log, wait, go on
                log.exception("sender pass failed")
            now = time.time()
            next_due = self.queue.next_due_at()
            target = max(now + 60.0 if next_due is None else next_due, self._pause_until)
            with self._wake:
                if not self._woken and not self._stop.is_set():
                    self._wake.wait(timeout=min(max(target - now, 0.0), 60.0))
                self._woken = False
