"""The PostgreSQL primary dies during a storm of new orders; Patroni promotes its standby.

Hosts are network namespaces (tests/cluster/hosts.py): `db1` and `db2` (Patroni with its
PostgreSQL, an etcd member each), `lb` (HAProxy, the third etcd member, Redis), `app1` and
`app2` (the API, whose DATABASE_URL is the balancer's PostgreSQL port). Every configuration is
what ops.deploy renders. Thirty clients create orders through the balancer, each with its own
idempotency key, retrying a failure with the same key. `db1`, the primary, is killed (every
process, then its link) while they run. `db2` takes over; every accepted order is there exactly
once, because the standby was synchronous; and creates go through again within seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.cluster import services
from tests.cluster.clients import Storm
from tests.cluster.hosts import Host, network
from tests.support import Backend, make_backend, seed_principals

CLIENTS = 30
KILL_AFTER = 4  # seconds of storm before the primary dies
AFTER_RECOVERY = 8  # seconds the storm goes on once creates succeed again


@dataclass
class Cluster:
    hosts: dict[str, Host]
    patroni: dict[str, str]  # database host → its Patroni REST API
    backend: Backend  # through the balancer, as the API connects
    tokens: dict[str, str]
    url: str  # the API, through the balancer


def inventory(hosts: dict[str, Host]) -> dict[str, Any]:
    return {
        "hosts": {name: host.address for name, host in hosts.items()},
        "balancer": {"host": "lb", "ports": {"api": 8000, "postgres": 5432}},
        "services": {"api": {"port": 8000, "hosts": ["app1", "app2"]}},
        "database": {
            "hosts": ["db1", "db2"],
            "etcd": ["db1", "db2", "lb"],
            "port": 5432,
            "bin_dir": str(services.PG_BIN),
            "users": {"superuser": "postgres", "replication": "replicator"},
            "network": hosts["db1"].address.rsplit(".", 1)[0] + ".0/24",
            "auth": "trust",  # the test's LAN; paths of its own per host (services.patroni)
        },
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with network(["db1", "db2", "lb", "app1", "app2"], tmp_path) as hosts:
        plan = inventory(hosts)
        members = [services.etcd(hosts[name], plan) for name in ("db1", "db2", "lb")]
        for member in members:
            services.until("etcd " + member, lambda m=member: services.answers(f"{m}/health"))
        # db1 first, so that it bootstraps the cluster and is the primary the test kills.
        patroni = {"db1": services.patroni(hosts["db1"], plan)}
        services.until("db1 primary", lambda: services.answers(f"{patroni['db1']}/primary"), 60)
        patroni["db2"] = services.patroni(hosts["db2"], plan)
        services.until(
            "db2 a streaming synchronous standby",
            lambda: (
                services.answers(f"{patroni['db2']}/replica")
                and services.answers(f"{patroni['db2']}/sync")
            ),
            60,
        )
        services.balancer(hosts["lb"], plan, tmp_path)
        # HAProxy (2.6) puts every server in rotation when it starts, until its first check:
        # wait for the standby to be taken out (its open sessions are cut then too).
        log = tmp_path / "lb-haproxy.log"
        services.until(
            "the balancer took the standby out",
            lambda: "Server postgres/db2 is DOWN" in log.read_text(),
        )
        database = f"postgresql://postgres@{hosts['lb'].address}:5432/postgres"
        backend = make_backend(database)  # migrated through the balancer
        try:
            tokens = seed_principals(backend)
            env = {
                "DATABASE_URL": database,
                "REDIS_URL": services.redis(hosts["lb"]),
                "LINLI_DATA_KEY": os.environ["LINLI_DATA_KEY"],
            }
            for name in ("app1", "app2"):
                services.api(hosts[name], env)
            url = f"http://{hosts['lb'].address}:8000"
            services.until("the balancer", lambda: services.answers(f"{url}/health"))
            yield Cluster(hosts, patroni, backend, tokens, url)
        finally:
            backend.dispose()


def test_a_dead_primary_loses_no_accepted_order(cluster: Cluster) -> None:
    storm = Storm.start(cluster.url, cluster.tokens["bot"], CLIENTS, patience=60)
    clients = storm.clients
    try:
        time.sleep(KILL_AFTER)
        killed_at = time.monotonic()
        cluster.hosts["db1"].kill()
        services.until(
            "a create after the kill",
            lambda: any(t > killed_at for c in clients for t in c.accepted),
            60,
        )
        time.sleep(AFTER_RECOVERY)
    finally:
        storm.end(90)
    assert not any(thread.is_alive() for thread in storm.threads)

    # db2 is the primary, and the balancer sends connections to it.
    assert services.answers(f"{cluster.patroni['db2']}/primary")
    with cluster.backend.engine.connect() as connection:
        server, recovering = connection.execute(
            text("SELECT host(inet_server_addr()), pg_is_in_recovery()")
        ).one()
    assert (server, recovering) == (cluster.hosts["db2"].address, False)

    accepted = storm.each_order_once(cluster.backend)  # none lost: the standby was synchronous

    # Writes failed only from the kill until the standby took over, then every client went on.
    failures = sorted(t - killed_at for c in clients for t in c.retries)
    assert failures != []  # the storm did meet the failover
    recovered = min(t for c in clients for t in c.accepted if t > killed_at) - killed_at
    print(f"\nwrites failed for {recovered:.1f} s after the kill ({len(failures)} failed tries, "
          f"the last {failures[-1]:.1f} s after the kill)")  # fmt: skip
    assert failures[0] > 0  # nothing failed before the primary died
    assert recovered < 30
    assert all(any(t > killed_at + recovered for t in c.accepted) for c in clients)
    assert len(accepted) > CLIENTS * 5  # the storm really ran
