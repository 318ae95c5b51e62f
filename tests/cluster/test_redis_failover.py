"""Redis under Sentinel; its master dies while residents press their SOS buttons.

Hosts (network namespaces): `r1` (the Redis master and a sentinel), `r2` (its replica and a
sentinel), `db` (PostgreSQL and the third sentinel), `app` (the API and the scheduler, which
reach Redis through `REDIS_URL=redis+sentinel://…`, as ops.deploy renders it). Every Redis and
Sentinel configuration comes from ops.deploy. A console-like reader long-polls /events the
whole time, resuming from the last id it saw. `r1` is killed after a few presses; the presses
go on, each retried with the same event id (as the terminal's queue does) until it is answered.

Afterwards: Sentinel promoted `r2`; every press made exactly one emergency; the reader saw every
event the database holds for those emergencies (no gap in the stream across the failover),
each at least once; and the API took no more than the failover's time to answer again.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ops.deploy import redis_url
from tests.cluster import services
from tests.cluster.hosts import Host, network
from tests.factories import resident_body, unique_phone
from tests.support import Backend, make_backend, seed_principals
from tests.test_sos_terminal import post_event, sos_body
from workorders.models import Event, WorkOrder

HOMES = 16
PRESS_EVERY = 0.5  # s between two homes' presses
KILL_AFTER = 4  # presses before the master dies


@dataclass
class Cluster:
    hosts: dict[str, Host]
    inventory: dict[str, object]
    backend: Backend
    tokens: dict[str, str]
    api: str


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with network(["db", "r1", "r2", "app"], tmp_path) as hosts:
        inventory = {
            "hosts": {name: host.address for name, host in hosts.items()},
            "redis": {"hosts": ["r1", "r2"], "sentinels": ["r1", "r2", "db"], "service": "linli"},
        }
        for name in ("r1", "r2"):
            services.redis_node(hosts[name], inventory)
        for name in ("r1", "r2", "db"):
            services.sentinel(hosts[name], inventory)
        services.until("r2 replicating r1", lambda: _role(hosts["r2"]) == "slave:up")
        database = services.postgres(hosts["db"]).url
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": redis_url(inventory),
            "EVENT_REPLICAS": "1",
            "LINLI_DATA_KEY": os.environ["LINLI_DATA_KEY"],
            "SCHEDULER_INTERVAL_SECONDS": "1",
            "SCHEDULER_LEASE_SECONDS": "3",
        }
        backend = make_backend(database)
        tokens = seed_principals(backend)
        api = services.api(hosts["app"], env)
        services.program(hosts["app"], "scheduler", env)
        try:
            yield Cluster(hosts, inventory, backend, tokens, api)
        finally:
            backend.dispose()


def _role(host: Host) -> str:
    """`master`, or `slave:<link status>` as INFO replication says."""
    info = subprocess.run(
        ["redis-cli", "-h", host.address, "info", "replication"], capture_output=True, text=True
    ).stdout
    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
    role = fields.get("role", "")
    return f"{role}:{fields.get('master_link_status', '')}" if role == "slave" else role


def _master(host: Host) -> str:
    return subprocess.run(
        ["redis-cli", "-h", host.address, "-p", "26379", "sentinel", "get-master-addr-by-name",
         "linli"], capture_output=True, text=True,
    ).stdout.split()[0]  # fmt: skip


@dataclass
class Reader:
    """A staff console: long-polls /events from the last id it saw, whatever happens."""

    url: str
    token: str
    stop: threading.Event
    event_ids: list[int] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)

    def run(self) -> None:
        after = "$"
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as http:
            while not self.stop.is_set():
                try:
                    page = http.get("/events", params={"after": after, "wait_ms": 1000})
                except httpx.HTTPError:
                    page = None
                if page is None or page.status_code != 200:
                    self.failures.append(time.monotonic())
                    time.sleep(0.2)
                    continue
                body = page.json()
                self.event_ids += [item["data"]["event_id"] for item in body["items"]]
                after = body["last_id"]


def _press(url: str, device_id: str, secret: str, answered: dict[str, int]) -> None:
    """One press, sent again (same event, new signature) until the API answers it."""
    body = sos_body()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            answer = post_event(url, device_id, secret, body)
            if answer.status_code in (200, 201):
                answered[device_id] = answer.json()["order_id"]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the press of {device_id} was never answered")


def test_sentinel_fails_over_and_no_press_or_event_is_lost(cluster: Cluster) -> None:
    agent = {"Authorization": f"Bearer {cluster.tokens['agent']}"}
    bot = {"Authorization": f"Bearer {cluster.tokens['bot']}"}
    homes: list[tuple[int, str, str]] = []
    with httpx.Client(base_url=cluster.api, timeout=10) as http:
        for _ in range(HOMES):
            body = resident_body(
                contacts=[{"name": "李明", "relation": "儿子", "phone": unique_phone()}]
            )
            resident = http.post("/residents", json=body, headers=bot)
            assert resident.status_code == 201, resident.text
            device = f"sos-{resident.json()['id']}-{os.urandom(4).hex()}"
            terminal = {"device_id": device, "resident_id": resident.json()["id"]}
            made = http.post("/terminals", json=terminal, headers=agent)
            assert made.status_code == 201, made.text
            homes.append((resident.json()["id"], device, made.json()["secret"]))

    stop = threading.Event()
    reader = Reader(cluster.api, cluster.tokens["agent"], stop)
    reading = threading.Thread(target=reader.run)
    reading.start()
    time.sleep(1.5)  # the reader has its first page ("from now on")
    answered: dict[str, int] = {}
    pressers = []
    killed_at = 0.0
    for number, (_, device, secret) in enumerate(homes):
        if number == KILL_AFTER:
            cluster.hosts["r1"].kill()
            killed_at = time.monotonic()
        presser = threading.Thread(target=_press, args=(cluster.api, device, secret, answered))
        presser.start()
        pressers.append(presser)
        time.sleep(PRESS_EVERY)
    for presser in pressers:
        presser.join(90)

    r2 = cluster.hosts["r2"]
    services.until(
        "Sentinel names r2 the master", lambda: _master(cluster.hosts["db"]) == r2.address
    )
    assert _role(r2) == "master"
    assert len(answered) == HOMES, sorted(set(d for _, d, _ in homes) - set(answered))

    order_ids = sorted(set(answered.values()))
    with cluster.backend.session() as session:
        emergencies = session.execute(
            select(WorkOrder.resident_id, WorkOrder.id).where(WorkOrder.kind == "emergency")
        ).all()
    by_resident = {resident_id: order for resident_id, order in emergencies}
    assert len(emergencies) == HOMES  # one per press, none twice
    assert sorted(by_resident) == sorted(resident_id for resident_id, _, _ in homes)
    assert sorted(by_resident.values()) == order_ids

    def published() -> bool:
        with cluster.backend.session() as session:
            pending = session.execute(
                select(Event.id).where(Event.order_id.in_(order_ids), Event.published_at.is_(None))
            ).all()
        return not pending

    services.until("every event published", published, 30)
    with cluster.backend.session() as session:
        made = session.execute(
            select(Event.id, Event.type, Event.order_id).where(Event.order_id.in_(order_ids))
        ).all()
    raised = sorted(order for _, kind, order in made if kind == "emergency.raised")
    assert raised == order_ids  # one alert per emergency
    expected = {event_id for event_id, _, _ in made}
    services.until("the reader saw every event", lambda: expected <= set(reader.event_ids), 30)
    stop.set()
    reading.join(15)
    # The API answered again once Sentinel had promoted r2 (down-after 2 s, then the vote).
    late = [t - killed_at for t in reader.failures if t > killed_at]
    assert not late or max(late) < 20, max(late)
