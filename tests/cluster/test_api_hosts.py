"""Two API hosts behind HAProxy; one dies during a storm of new orders.

Hosts are network namespaces (tests/cluster/hosts.py): `db` (PostgreSQL, Redis), `app1` and
`app2` (the API), `lb` (HAProxy from ops.deploy's configuration). Thirty clients create repair
orders as the channels do, each with its own idempotency key, retrying a failure with the same
key. `app1` is killed (every process, then its link) while they run. Afterwards every request
has exactly one order, none is lost, and new requests go to `app2` alone within seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.cluster import services
from tests.cluster.clients import Client
from tests.cluster.hosts import Host, network
from tests.factories import resident_body
from tests.support import Backend, make_backend, seed_principals
from workorders.models import IdempotencyKey, WorkOrder

CLIENTS = 30
STORM_SECONDS = 12
KILL_AFTER = 4


@dataclass
class Cluster:
    hosts: dict[str, Host]
    backend: Backend
    tokens: dict[str, str]
    url: str  # the balancer


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with network(["db", "app1", "app2", "lb"], tmp_path) as hosts:
        database = services.postgres(hosts["db"]).url
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": services.redis(hosts["db"]),
            "LINLI_DATA_KEY": os.environ["LINLI_DATA_KEY"],
        }
        backend = make_backend(database)  # migrated from here, as a deployment's migrate step
        tokens = seed_principals(backend)
        for name in ("app1", "app2"):
            services.api(hosts[name], env)
        inventory = {
            "hosts": {name: host.address for name, host in hosts.items()},
            "balancer": {"host": "lb", "ports": {"api": 8000}},
            "services": {"api": {"port": 8000, "hosts": ["app1", "app2"]}},
        }
        services.balancer(hosts["lb"], inventory, tmp_path)
        url = f"http://{hosts['lb'].address}:8000"
        services.until("the balancer", lambda: services.answers(f"{url}/health"))
        try:
            yield Cluster(hosts, backend, tokens, url)
        finally:
            backend.dispose()


def test_a_dead_api_host_loses_no_order_and_leaves_the_rotation(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        made = http.post(
            "/residents",
            json=resident_body(),
            headers={"Authorization": f"Bearer {cluster.tokens['bot']}"},
        )
    assert made.status_code == 201, made.text
    stop = threading.Event()
    clients = [
        Client(cluster.url, cluster.tokens["bot"], made.json()["id"], stop) for _ in range(CLIENTS)
    ]
    threads = [threading.Thread(target=c.run) for c in clients]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AFTER)
    cluster.hosts["app1"].kill()
    killed_at = time.monotonic()
    time.sleep(STORM_SECONDS - KILL_AFTER)
    stop.set()
    for thread in threads:
        thread.join(60)

    assert [key for c in clients for key in c.abandoned] == []
    accepted = {k: v for c in clients for k, v in c.results.items()}
    assert len(accepted) == sum(len(c.results) for c in clients)  # keys are unique
    assert len(set(accepted.values())) == len(accepted)  # one order per request
    with cluster.backend.session() as session:
        stored = session.execute(
            select(func.count())
            .select_from(WorkOrder)
            .where(WorkOrder.resident_id == made.json()["id"])
        ).scalar_one()
        keys = session.execute(
            select(IdempotencyKey.key, IdempotencyKey.resource_id).where(
                IdempotencyKey.key.in_(list(accepted))
            )
        ).all()
    assert stored == len(accepted)  # none lost, none twice
    assert dict(keys) == accepted
    # HAProxy stopped sending to app1 within seconds: nothing failed after that.
    late = [t - killed_at for c in clients for t in c.retries if t > killed_at]
    assert not late or max(late) < 3.0, sorted(late)[-5:]
    assert len(accepted) > CLIENTS * 5  # the storm really ran (orders a client made)
