"""The scheduler's Prometheus metrics, scraped by a real Prometheus (Debian's package).

A database of the test's own holds a known state of work; Prometheus scrapes the scheduler
and its query API must give exactly those figures, with no personal data in them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from tests.prometheus import query, scraping
from tests.servers import free_port
from tests.support import ROOT, Backend, make_caller
from workorders.contract import Kind, Status
from workorders.models import Resident
from workorders.schemas import OrderCreate
from workorders.services import orders
from workorders.services.sla import load_policy
from workorders.settings import get_settings

NAME, PHONE = "钱玉兰", "13912340000"


def work(backend: Backend) -> None:
    """Two open questions; two residents' emergencies, one a person took on."""
    policy = load_policy(get_settings().sla_config)
    staff = make_caller(backend)
    now = datetime.now(timezone.utc)
    made = []
    with backend.session() as session:
        residents = [
            Resident(name=name, community="度量社区", phone=phone, phone_hash=phone)
            for name, phone in ((NAME, PHONE), ("孙德明", "13912340001"))
        ]
        session.add_all(residents)
        session.commit()
        for details in ({"question": "高龄津贴怎么领"}, {"question": "医保怎么报销"}):
            body = OrderCreate(
                kind=Kind.policy_question,
                channel="wechat",
                resident_id=residents[0].id,
                details=details,
            )
            made.append(orders.create(session, staff, body, None, None, policy, now).order.id)  # type: ignore[arg-type]
        for resident in residents:
            details = {"description": f"{resident.name}摔倒了，电话{resident.phone}"}
            body = OrderCreate(
                kind=Kind.emergency, channel="hotline", resident_id=resident.id, details=details
            )
            made.append(orders.create(session, staff, body, None, None, policy, now).order.id)  # type: ignore[arg-type]
    with backend.session() as session:
        orders.transition(session, staff, made[2], Status.accepted, None, None, policy, now)  # type: ignore[arg-type]


@pytest.fixture
def scheduler(fresh_backend: Backend) -> Iterator[int]:
    work(fresh_backend)
    time.sleep(2.5)  # the relay takes events older than 2 s: its first round must see them
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": fresh_backend.url,
        "EVENT_STREAM": f"{get_settings().event_stream}:metrics-{uuid.uuid4().hex[:6]}",
        "SCHEDULER_METRICS_PORT": str(port),
        "SCHEDULER_INTERVAL_SECONDS": "60",  # one round at the start: the outbox published
        "SCHEDULER_LEASE_SECONDS": "120",
    }
    process = subprocess.Popen([sys.executable, "-m", "workorders", "scheduler"], cwd=ROOT, env=env)
    try:
        _serving(process, f"http://127.0.0.1:{port}/metrics")  # before Prometheus's first scrape
        yield port
    finally:
        process.terminate()
        assert process.wait(10) == 0


def _serving(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the scheduler exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing at {url}")


@pytest.fixture
def prometheus(scheduler: int, tmp_path: Path) -> Iterator[str]:
    with scraping("linli-scheduler", scheduler, tmp_path) as url:
        yield url


def test_prometheus_scrapes_the_state_of_the_work(prometheus: str, scheduler: int) -> None:
    assert query(prometheus, "up") == {"": 1.0}
    assert query(prometheus, "linli_orders_open") == {
        "kind=policy_question,priority=P2,status=new": 2.0,
        "kind=emergency,priority=P0,status=new": 1.0,
        "kind=emergency,priority=P0,status=accepted": 1.0,
    }
    assert query(prometheus, "linli_sos_alerts_total") == {"": 2.0}
    assert query(prometheus, "linli_sos_acknowledged_total") == {"": 1.0}
    assert query(prometheus, "linli_scheduler_lease_held") == {"": 1.0}
    assert query(prometheus, "linli_orders_breached") == {
        "clock=response": 0.0,
        "clock=resolution": 0.0,
    }
    assert query(prometheus, "linli_handoffs_open") == {"state=waiting": 0.0, "state=claimed": 0.0}
    # The due time of the emergency nobody took on yet: within its 60 s target.
    [due] = query(prometheus, "linli_orders_response_due_seconds").values()
    assert -5 < due <= 60
    # The scheduler's first round published what the creates left in the outbox.
    deadline = time.monotonic() + 30
    while query(prometheus, "linli_outbox_unpublished") != {"": 0.0}:
        assert time.monotonic() < deadline, "the outbox was never drained"
        time.sleep(0.5)
    text = httpx.get(f"http://127.0.0.1:{scheduler}/metrics", timeout=5).text
    assert NAME not in text and PHONE not in text and "度量社区" not in text
