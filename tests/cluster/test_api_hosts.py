"""Two API hosts behind HAProxy; one dies during a storm of new orders.

Hosts are network namespaces (tests/cluster/hosts.py): `db` (PostgreSQL, Redis), `app1` and
`app2` (the API), `lb` (HAProxy from ops.deploy's configuration). Thirty clients create repair
orders as the channels do, each with its own idempotency key, retrying a failure with the same
key. `app1` is killed (every process, then its link) while they run. Afterwards every request
has exactly one order, none is lost, and new requests go to `app2` alone within seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import services
from tests.cluster.clients import Storm
from tests.cluster.hosts import Host, network
from tests.support import Backend, make_backend, seed_principals

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
    storm = Storm.start(cluster.url, cluster.tokens["bot"], CLIENTS)
    time.sleep(KILL_AFTER)
    cluster.hosts["app1"].kill()
    killed_at = time.monotonic()
    time.sleep(STORM_SECONDS - KILL_AFTER)
    storm.end(60)

    accepted = storm.each_order_once(cluster.backend)
    clients = storm.clients
    # HAProxy stopped sending to app1 within seconds: nothing failed after that.
    late = [t - killed_at for c in clients for t in c.retries if t > killed_at]
    assert not late or max(late) < 3.0, sorted(late)[-5:]
    assert len(accepted) > CLIENTS * 5  # the storm really ran (orders a client made)
