"""Work-order events: written to an outbox table with the change, then relayed to a Redis stream.

The outbox makes "committed but not announced" impossible to lose: the API publishes its own
events right after commit, and the scheduler relays whatever is left (Redis down, a crash).
Delivery is at-least-once; every stream entry carries the outbox `event_id` for de-duplication.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aioredis
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session, sessionmaker

from workorders.models import Conversation, Event, Handoff, Resident, WorkOrder
from workorders.redis_url import connect, connect_async
from workorders.settings import get_settings

log = logging.getLogger(__name__)
# How long a publication waits for the replicas (EVENT_REPLICAS) to confirm it; on a LAN they
# take about a millisecond, so this is only spent when one is down.
REPLICA_WAIT_MS = 500


@lru_cache
def redis_client() -> redis.Redis:
    return connect(get_settings().redis_url, socket_timeout=2, socket_connect_timeout=2)


def record(session: Session, type_: str, order: WorkOrder, **data: Any) -> Event:
    """Queue an event in the caller's transaction. Payloads carry no personal data."""
    payload = {
        "kind": order.kind,
        "status": order.status,
        "priority": order.priority,
        "channel": order.channel,
        "community": order.community,
        "resident_id": order.resident_id,
        "proxy_id": order.proxy_id,  # a family member asked for it (代办): they hear of it too
        **data,
    }
    event = Event(
        type=type_, order_id=order.id, payload=payload, created_at=datetime.now(timezone.utc)
    )
    session.add(event)
    return event


def record_conversation(
    session: Session,
    type_: str,
    conversation: Conversation,
    handoff: Handoff | None,
    **data: Any,
) -> Event:
    """A conversation's event, for consoles and the gateway; no words, no personal data.
    Like an order's, it says which community it concerns (None: a sender not yet known)."""
    resident = session.get(Resident, conversation.resident_id) if conversation.resident_id else None
    payload = {
        "conversation": conversation.key,
        "channel": conversation.channel,
        "community": resident.community if resident else None,
        "resident_id": conversation.resident_id,
        "handoff_id": handoff.id if handoff else None,
        "reason": handoff.reason if handoff else None,
        **data,
    }
    event = Event(
        type=type_,
        order_id=handoff.order_id if handoff else None,
        payload=payload,
        created_at=datetime.now(timezone.utc),
    )
    session.add(event)
    return event


def _xadd(client: redis.Redis | redis.client.Pipeline, event: Event) -> Any:
    settings = get_settings()
    fields = {
        "event_id": str(event.id),
        "type": event.type,
        "order_id": "" if event.order_id is None else str(event.order_id),
        "data": json.dumps(event.payload, ensure_ascii=False, default=str),
        "at": event.created_at.isoformat(),
    }
    return client.xadd(
        settings.event_stream, fields, maxlen=settings.event_stream_maxlen, approximate=True
    )


def publish(factory: sessionmaker[Session], event_ids: Iterable[int]) -> int:
    """Publish freshly committed events now, in one round trip; failures are left for the relay.

    No row lock: the relay only takes events older than a few seconds, and a rare double
    publication is what `event_id` on every entry is for.
    """
    ids = sorted(event_ids)
    if not ids:
        return 0
    with factory() as session:
        rows = (
            session.execute(
                select(Event)
                .where(Event.id.in_(ids), Event.published_at.is_(None))
                .order_by(Event.id)
            )
            .scalars()
            .all()
        )
        stream_ids = _xadd_all(rows)
        if not stream_ids:  # nothing left to publish, or Redis failed (the relay will)
            return 0
        _set_published(session, stream_ids)
        session.commit()
    return len(rows)


def announce(factory: sessionmaker[Session], rows: Sequence[Event]) -> int:
    """Publish events the caller has just committed, as they are in memory: one Redis round
    trip and nothing read back. They are marked published a moment later, many at once, by a
    background thread (`_marker`); until then the relay leaves them alone (it takes events
    older than 2 s), and should the process die first, the relay publishes them again: the
    same at-least-once as ever, `event_id` tells a repeat."""
    stream_ids = _xadd_all(rows)
    if stream_ids is None:
        return 0
    if stream_ids:
        _marker().mark(factory, stream_ids)
    return len(stream_ids)


def _xadd_all(rows: Sequence[Event]) -> dict[int, str] | None:
    """Event id -> stream id, in one pipeline; None when Redis failed or the replicas did not
    confirm them (left for the relay, which adds them again: `event_id` tells the repeat)."""
    if not rows:
        return {}
    replicas = get_settings().event_replicas
    try:
        pipe = redis_client().pipeline(transaction=False)
        for event in rows:
            _xadd(pipe, event)
        if replicas:
            pipe.wait(replicas, REPLICA_WAIT_MS)
        stream_ids = pipe.execute()
    except redis.RedisError as exc:
        log.warning("events %s not published yet: %s", [e.id for e in rows], type(exc).__name__)
        return None
    if replicas and stream_ids.pop() < replicas:
        log.warning("events %s not confirmed by %d replicas yet", [e.id for e in rows], replicas)
        return None
    return {
        e.id: sid.decode() if isinstance(sid, bytes) else str(sid)
        for e, sid in zip(rows, stream_ids, strict=True)
    }


def _set_published(session: Session, stream_ids: dict[int, str]) -> None:
    """One UPDATE for all of them."""
    session.execute(
        update(Event)
        .where(Event.id.in_(list(stream_ids)))
        .values(
            published_at=datetime.now(timezone.utc),
            stream_id=case(stream_ids, value=Event.id),
        )
        .execution_options(synchronize_session=False)
    )


# How long the marker waits after the first event of a batch. The relay leaves events alone for
# 2 s, so this only has to be short against that; under load it makes batches of dozens.
_MARK_LINGER_SECONDS = 0.02


class _Marker:
    """Records published events in the outbox: one UPDATE per batch, off the request path."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[sessionmaker[Session], dict[int, str]]] = (
            queue.SimpleQueue()
        )
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="outbox-marker", daemon=True)
        self._thread.start()

    def mark(self, factory: sessionmaker[Session], stream_ids: dict[int, str]) -> None:
        with self._done:
            self._pending += 1
        self._queue.put((factory, stream_ids))

    def wait(self, timeout: float) -> bool:
        """Until everything handed over so far is recorded (at shutdown)."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            time.sleep(_MARK_LINGER_SECONDS)  # let a burst gather: one UPDATE for all of it
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_factory: dict[sessionmaker[Session], dict[int, str]] = {}
            for factory, stream_ids in batch:
                by_factory.setdefault(factory, {}).update(stream_ids)
            for factory, stream_ids in by_factory.items():
                try:
                    _mark_published(factory, stream_ids)
                except Exception:  # the relay publishes them again; keep marking the rest
                    log.exception("events %s published but not marked", sorted(stream_ids))
            with self._done:
                self._pending -= len(batch)
                self._done.notify_all()


def _mark_published(factory: sessionmaker[Session], stream_ids: dict[int, str]) -> None:
    with factory() as session:
        _set_published(session, stream_ids)
        session.commit()


_marker_lock = threading.Lock()
_marker_instance: _Marker | None = None


def _marker() -> _Marker:
    global _marker_instance
    with _marker_lock:
        if _marker_instance is None:
            _marker_instance = _Marker()
        return _marker_instance


def marked(timeout: float = 5.0) -> bool:
    """Wait until announced events are marked published (at shutdown: the relay need not
    repeat them)."""
    return _marker_instance is None or _marker_instance.wait(timeout)


def relay(factory: sessionmaker[Session], older_than: timedelta = timedelta(seconds=2)) -> int:
    """Publish events nobody published (the API's own attempt failed or it crashed)."""
    cutoff = datetime.now(timezone.utc) - older_than
    return _publish_where(factory, Event.created_at <= cutoff)


def _publish_where(factory: sessionmaker[Session], condition: Any) -> int:
    """With EVENT_REPLICAS, what the relay added counts only once the master answers WAIT,
    the master being the one whose death could lose it. It counts even when fewer replicas
    confirm it (and says so): a replica that is down would otherwise have every sweep add
    the same events again."""
    client = redis_client()
    done = 0
    with factory() as session:
        rows = session.execute(
            select(Event)
            .where(Event.published_at.is_(None), condition)
            .order_by(Event.id)
            .limit(500)
            .with_for_update(skip_locked=True)
        ).scalars()
        for event in rows:
            try:
                raw_id = _xadd(client, event)
            except redis.RedisError as exc:
                log.warning("event %s not published yet: %s", event.id, type(exc).__name__)
                break
            session.execute(
                update(Event)
                .where(Event.id == event.id)
                .values(published_at=datetime.now(timezone.utc), stream_id=raw_id.decode())
            )
            done += 1
        replicas = get_settings().event_replicas
        if done and replicas:
            try:
                confirmed = int(client.wait(replicas, REPLICA_WAIT_MS))
            except redis.RedisError as exc:
                log.warning("%d events not published yet: %s", done, type(exc).__name__)
                session.rollback()
                return 0
            if confirmed < replicas:
                log.warning("%d events published without %d replicas", done, replicas)
        session.commit()
    return done


@lru_cache
def _reader() -> aioredis.Redis:
    """For the stream's readers, on the event loop: a long poll holds no worker thread (50
    waiting consoles once took every thread of the pool and stalled an SOS press). Its socket
    must outwait the longest long poll (30 s)."""
    return connect_async(get_settings().redis_url, socket_timeout=35, socket_connect_timeout=2)


async def last_id() -> str:
    """The id of the newest event ("0" when there is none): where "from now on" begins."""
    newest = await _reader().xrevrange(get_settings().event_stream, count=1)
    return newest[0][0].decode() if newest else "0"


async def read(after: str, limit: int, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
    """Events after a stream id ("0" for the beginning), waiting up to `block_ms` for one."""
    reply = await _reader().xread({get_settings().event_stream: after}, count=limit, block=block_ms)
    out: list[tuple[str, dict[str, str]]] = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            out.append(
                (
                    entry_id.decode(),
                    {k.decode(): v.decode() for k, v in fields.items()},
                )
            )
    return out
