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


def test_scheduler_process_marks_breaches_and_escalates(
    backend: Backend, tmp_path: Path, redis_client: redis.Redis
) -> None:
    config = tmp_path / "sla.json"
    config.write_text(json.dumps(FAST))
    caller = make_caller(backend)
    community = f"调度社区{uuid.uuid4().hex[:6]}"
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
        outcome = orders.create(
            session, caller, body, None, None, SlaPolicy(FAST), datetime.now(timezone.utc)
        )  # type: ignore[arg-type]
    order_id = outcome.order.id  # its event is left unpublished, as after a crash

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
