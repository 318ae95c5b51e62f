"""The scheduler as a real process: it marks breaches on the wall clock and relays the outbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import redis

from tests.support import ROOT, Backend, make_caller
from workorders.contract import Kind
from workorders.lease import Lease
from workorders.models import Event, Resident, WorkOrder
from workorders.schemas import OrderCreate
from workorders.services import orders
from workorders.services.sla import SlaPolicy
from workorders.settings import get_settings

FAST = {
    "default": {
        p: {"response": 1, "escalation": 2, "resolution": 600} for p in ("P0", "P1", "P2", "P3")
    }
}


def a_question(backend: Backend, community: str) -> int:
    """A policy question under the FAST targets, made in the database (its event unpublished)."""
    with backend.session() as session:
        resident = Resident(name="测试", community=community)
        session.add(resident)
        session.commit()
        body = OrderCreate(
            kind=Kind.policy_question,
            channel="wechat",
            resident_id=resident.id,
            details={"question": "高龄津贴怎么领"},
        )
        now = datetime.now(timezone.utc)
        caller = make_caller(backend)
        return orders.create(session, caller, body, None, None, SlaPolicy(FAST), now).order.id  # type: ignore[arg-type]


def test_scheduler_process_marks_breaches_and_escalates(
    backend: Backend, tmp_path: Path, redis_client: redis.Redis
) -> None:
    config = tmp_path / "sla.json"
    config.write_text(json.dumps(FAST))
    community = f"调度社区{uuid.uuid4().hex[:6]}"
    order_id = a_question(backend, community)  # its event is left unpublished, as after a crash

    env = {
        **os.environ,
        "DATABASE_URL": backend.url,
        "SLA_CONFIG": str(config),
        "SCHEDULER_INTERVAL_SECONDS": "0.2",
    }
    process = subprocess.Popen([sys.executable, "-m", "workorders", "scheduler"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 20
        order = None
        while time.monotonic() < deadline:
            with backend.session() as session:
                order = session.get(WorkOrder, order_id)
                if order.response_breached_at and order.escalated_at:
                    pending = (
                        session.query(Event)
                        .filter(Event.order_id == order_id, Event.published_at.is_(None))
                        .count()
                    )
                    if pending == 0:
                        break
            time.sleep(0.2)
        assert order is not None and order.response_breached_at is not None
        assert order.escalated_at is not None
    finally:
        process.terminate()
        assert process.wait(10) == 0, "the scheduler stops cleanly on SIGTERM"
    published = sorted(
        (int(fields[b"event_id"]), fields[b"type"].decode())
        for _, fields in redis_client.xrange(get_settings().event_stream)
        if json.loads(fields[b"data"])["community"] == community
    )
    # Each exactly once; the one left over from "the crash" may arrive after newer alerts,
    # which is why entries carry the outbox event_id.
    assert [t for _, t in published] == ["order.created", "sla.breached", "order.escalated"]


def test_one_scheduler_sweeps_and_another_takes_over_when_it_dies(
    backend: Backend, tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Two hosts' schedulers: one holds the lease and sweeps; killed (no clean stop), the other
    takes the lease once it lapses and the escalations are still made."""
    config = tmp_path / "sla.json"
    config.write_text(json.dumps(FAST))
    stream = f"{get_settings().event_stream}:lease-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DATABASE_URL": backend.url,
        "SLA_CONFIG": str(config),
        "EVENT_STREAM": stream,
        "SCHEDULER_INTERVAL_SECONDS": "0.2",
        "SCHEDULER_LEASE_SECONDS": "3",
    }
    lease_key = f"{stream}:scheduler"

    def holder() -> str | None:
        value = redis_client.get(lease_key)
        return value.decode().split(":")[1] if value else None

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "workorders", "scheduler"], cwd=ROOT, env=env
        )

    first = start()
    second = None
    try:
        deadline = time.monotonic() + 20
        while holder() != str(first.pid):
            assert time.monotonic() < deadline, "the first scheduler never took the lease"
            time.sleep(0.1)
        second = start()
        time.sleep(4)  # longer than a lease: the holder renews it, the second stands by
        assert holder() == str(first.pid) and second.poll() is None

        order_id = a_question(backend, f"接替社区{uuid.uuid4().hex[:6]}")
        first.kill()  # the host is gone: no release
        first.wait(10)
        killed_at = time.monotonic()
        with backend.session() as session:
            assert session.get(WorkOrder, order_id).escalated_at is None  # not due yet
        while holder() != str(second.pid):
            assert time.monotonic() - killed_at < 3 + 3, "the lease was not taken over in time"
            time.sleep(0.1)
        while True:  # response due after 1 s, escalation after 2 s: made by the second
            with backend.session() as session:
                order = session.get(WorkOrder, order_id)
                if order.response_breached_at and order.escalated_at:
                    break
            assert time.monotonic() - killed_at < 15, "no escalation after the takeover"
            time.sleep(0.2)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                assert process.wait(10) == 0
    assert redis_client.get(lease_key) is None  # a clean stop releases the lease at once


def test_with_redis_unreachable_every_scheduler_sweeps() -> None:
    """Nobody can tell who holds the lease: sweeping twice is safe, an escalation left
    waiting for Redis is not."""
    gone = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)  # nothing listens
    lease = Lease(gone, "linli:test:lease-gone", 3, "scheduler")
    assert lease.may_sweep() is True
    assert lease.held is False
