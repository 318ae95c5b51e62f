"""The scheduler's host dies; the escalation it would have made comes from another host on time.

Hosts (network namespaces): `data` (PostgreSQL, Redis), `app1` and `app2`, each running the
scheduler as its systemd unit does (tests/cluster/services.py `program`). `app1` starts first
and holds the lease. An order is made whose escalation falls due 8 s later; 2 s after it,
`app1` dies: every process, then its link, so its lease is not given back and lapses. `app2`
takes the lease over and makes the escalation, no later than one lease and one sweep after
it fell due.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import select

from tests.cluster import services
from tests.cluster.hosts import network
from tests.supervised import until
from tests.support import make_backend
from tests.test_scheduler import a_question
from workorders.models import Event, WorkOrder

LEASE = 3  # s (SCHEDULER_LEASE_SECONDS)
SWEEP = 0.5  # s (SCHEDULER_INTERVAL_SECONDS)
TARGETS = {
    "default": {
        p: {"response": 4, "escalation": 8, "resolution": 600} for p in ("P0", "P1", "P2", "P3")
    }
}


def test_escalations_still_fire_on_time_when_the_scheduler_s_host_dies(tmp_path: Path) -> None:
    with network(["data", "app1", "app2"], tmp_path) as hosts:
        database = services.postgres(hosts["data"]).url
        redis_url = services.redis(hosts["data"])
        backend = make_backend(database)
        sla = tmp_path / "sla.json"
        sla.write_text(json.dumps(TARGETS))
        stream = f"linli:events:{uuid.uuid4().hex[:6]}"
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": redis_url,
            "LINLI_DATA_KEY": os.environ["LINLI_DATA_KEY"],
            "SLA_CONFIG": str(sla),
            "EVENT_STREAM": stream,
            "SCHEDULER_INTERVAL_SECONDS": str(SWEEP),
            "SCHEDULER_LEASE_SECONDS": str(LEASE),
        }
        lease = redis.Redis.from_url(redis_url)

        def holder() -> int | None:
            value = lease.get(f"{stream}:scheduler")
            return int(value.decode().split(":")[1]) if value else None

        try:
            services.program(hosts["app1"], "scheduler", env)
            first = hosts["app1"].processes[-1].pid
            services.until("app1 holds the lease", lambda: holder() == first)
            services.program(hosts["app2"], "scheduler", env)
            second = hosts["app2"].processes[-1].pid
            time.sleep(LEASE + 1)  # app2 stands by while app1 renews
            assert holder() == first

            order_id = a_question(backend, f"调度主机社区{uuid.uuid4().hex[:6]}")
            time.sleep(2)
            hosts["app1"].kill()
            services.until("app2 took the lease over", lambda: holder() == second, LEASE + 3)

            def escalated() -> WorkOrder | None:
                with backend.session() as session:
                    order = session.get(WorkOrder, order_id)
                    return order if order.escalated_at else None

            order = until("the escalation", escalated, 20)
            with backend.session() as session:
                kinds = session.execute(
                    select(Event.type).where(Event.order_id == order_id).order_by(Event.id)
                ).scalars()
                assert list(kinds) == ["order.created", "sla.breached", "order.escalated"]
        finally:
            backend.dispose()
        late = order.escalated_at - order.escalation_due_at
        print(f"\nescalated {late.total_seconds():.1f} s after it fell due")
        assert timedelta(0) <= late <= timedelta(seconds=LEASE + SWEEP + 1), late
