"""Events on a Redis stream: published on every change, resumable, never lost when Redis is down."""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from tests.factories import repair_body, resident_body
from tests.servers import free_port
from tests.support import Api, ApiProcess, Backend, seed_principals
from workorders.db import POOL_SIZE
from workorders.models import Event
from workorders.services import events
from workorders.settings import get_settings

STREAM = get_settings().event_stream
POLLS = 2 * POOL_SIZE + 5  # more than the API's worker threads (workorders/app.py)


def _community_events(
    client: redis.Redis, community: str, after: str = "0"
) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    out = []
    for entry_id, fields in client.xrange(STREAM, min=f"({after}" if after != "0" else "-"):
        data = json.loads(fields[b"data"])
        if data["community"] == community:
            out.append((entry_id.decode(), fields[b"type"].decode(), data))
    return out


def test_create_and_status_changes_are_published_in_order(
    api: Api, redis_client: redis.Redis
) -> None:
    community = f"事件社区{uuid.uuid4().hex[:6]}"
    rid = api.call("bot", "POST", "/residents", json=resident_body(community=community)).json()[
        "id"
    ]
    order = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()
    for target in ("accepted", "in_progress", "resolved"):
        api.call("agent", "POST", f"/work-orders/{order['id']}/transitions", json={"to": target})
    seen = _community_events(redis_client, community)
    assert [(t, d.get("to_status")) for _, t, d in seen] == [
        ("order.created", None),
        ("order.status_changed", "accepted"),
        ("order.status_changed", "in_progress"),
        ("order.status_changed", "resolved"),
    ]
    # No personal data travels on the stream.
    assert all(set(d) >= {"kind", "status", "priority", "channel", "community"} for _, _, d in seen)
    assert all("address" not in d and "phone" not in d for _, _, d in seen)


def test_a_consumer_resumes_after_a_restart(api: Api, redis_client: redis.Redis) -> None:
    """A consumer group remembers what was delivered; a restarted consumer gets the rest once."""
    community = f"续读社区{uuid.uuid4().hex[:6]}"
    group = f"console-{uuid.uuid4().hex[:6]}"
    redis_client.xgroup_create(STREAM, group, id="$", mkstream=True)
    rid = api.call("bot", "POST", "/residents", json=resident_body(community=community)).json()[
        "id"
    ]
    first = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()["id"]

    consumer = redis.Redis.from_url(os.environ["REDIS_URL"])
    batch = consumer.xreadgroup(group, "c1", {STREAM: ">"}, count=100)
    got = [
        f
        for _, entries in batch
        for _, f in entries
        if json.loads(f[b"data"])["community"] == community
    ]
    assert [int(f[b"order_id"]) for f in got] == [first]
    for _, entries in batch:
        consumer.xack(STREAM, group, *[entry_id for entry_id, _ in entries])
    consumer.close()  # "restart"

    second = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()["id"]
    restarted = redis.Redis.from_url(os.environ["REDIS_URL"])
    batch = restarted.xreadgroup(group, "c1", {STREAM: ">"}, count=100)
    got = [
        f
        for _, entries in batch
        for _, f in entries
        if json.loads(f[b"data"])["community"] == community
    ]
    assert [int(f[b"order_id"]) for f in got] == [second]


def test_events_endpoint_pages_from_the_last_id(api: Api) -> None:
    community = f"接口社区{uuid.uuid4().hex[:6]}"
    # "$" (from now on) answers with the concrete newest id: polling on from it loses nothing.
    cursor = api.call("agent", "GET", "/events", params={"after": "$"}).json()["last_id"]
    assert cursor != "$"  # "0" while the stream is still empty
    rid = api.call("bot", "POST", "/residents", json=resident_body(community=community)).json()[
        "id"
    ]
    oid = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()["id"]
    page = api.call(
        "agent", "GET", "/events", params={"after": cursor, "wait_ms": 2000, "limit": 1000}
    ).json()
    mine = [e for e in page["items"] if e["data"]["community"] == community]
    assert [(e["type"], e["order_id"]) for e in mine] == [("order.created", oid)]
    assert mine[0]["data"]["event_id"] > 0
    assert api.call("wechat", "GET", "/events").status_code == 200
    assert api.call("bot", "GET", "/events").status_code == 403
    # A long poll that outlasts the Redis client's usual 2 s socket time-out still answers.
    quiet = api.call(
        "agent", "GET", "/events", params={"after": page["last_id"], "wait_ms": 3500, "limit": 1}
    )
    assert quiet.status_code == 200, quiet.text


def test_events_survive_a_redis_outage(
    sqlite_backend: Backend, fhir_url: str, redis_client: redis.Redis
) -> None:
    """Redis unreachable: the order is still made; its event waits in the outbox for the relay."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    process = ApiProcess(
        sqlite_backend.url,
        fhir_url,
        seed_principals_once(sqlite_backend),
        extra_env={"REDIS_URL": dead_redis},
    )
    process.start_unhealthy_ok()
    try:
        api = Api(process)
        community = f"断线社区{uuid.uuid4().hex[:6]}"
        rid = api.call("bot", "POST", "/residents", json=resident_body(community=community)).json()[
            "id"
        ]
        created = api.call("bot", "POST", "/work-orders", json=repair_body(rid))
        assert created.status_code == 201
        health = api.call(None, "GET", "/health")
        assert health.json()["redis"] == "down"
    finally:
        process.stop()
    oid = created.json()["id"]
    with sqlite_backend.session() as session:
        pending = session.execute(select(Event).where(Event.order_id == oid)).scalars().all()
    assert [(e.type, e.published_at) for e in pending] == [("order.created", None)]
    assert _community_events(redis_client, community) == []
    # Redis is back: the scheduler's relay publishes what was left, exactly once.
    assert events.relay(sqlite_backend.factory, older_than=timedelta(0)) >= 1
    events.relay(sqlite_backend.factory, older_than=timedelta(0))
    assert [t for _, t, _ in _community_events(redis_client, community)] == ["order.created"]


def test_an_event_no_replica_confirmed_is_added_again_by_the_relay(
    sqlite_backend: Backend,
    fhir_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EVENT_REPLICAS=1 on a Redis without replicas: the API's publication is not confirmed,
    so the event stays in the outbox; the relay adds it again and, a replica being down, marks
    it all the same (a second copy with the same event_id, which readers skip)."""
    process = ApiProcess(
        sqlite_backend.url,
        fhir_url,
        seed_principals_once(sqlite_backend),
        extra_env={"EVENT_REPLICAS": "1"},
    )
    process.start()
    try:
        api = Api(process)
        community = f"副本社区{uuid.uuid4().hex[:6]}"
        body = resident_body(community=community)
        rid = api.call("bot", "POST", "/residents", json=body).json()["id"]
        created = api.call("bot", "POST", "/work-orders", json=repair_body(rid))
        assert created.status_code == 201
    finally:
        process.stop()
    oid = created.json()["id"]
    with sqlite_backend.session() as session:
        event = session.execute(select(Event).where(Event.order_id == oid)).scalar_one()
    assert (event.type, event.published_at) == ("order.created", None)
    assert [t for _, t, _ in _community_events(redis_client, community)] == ["order.created"]
    monkeypatch.setenv("EVENT_REPLICAS", "1")
    get_settings.cache_clear()
    try:
        assert events.relay(sqlite_backend.factory, older_than=timedelta(0)) >= 1
    finally:
        monkeypatch.delenv("EVENT_REPLICAS")
        get_settings.cache_clear()
    with sqlite_backend.session() as session:
        assert session.get(Event, event.id).published_at is not None
    copies = [
        (fields[b"type"], int(fields[b"event_id"]))
        for _, fields in redis_client.xrange(STREAM)
        if json.loads(fields[b"data"]).get("community") == community
    ]
    assert copies == [(b"order.created", event.id)] * 2


def seed_principals_once(backend: Backend) -> dict[str, str]:
    """Tokens on a backend that the shared fixtures may already have seeded."""
    suffix = uuid.uuid4().hex[:6]
    return seed_principals(backend, suffix=suffix)


def test_a_long_poll_that_answers_is_no_line_in_the_log(api: Api) -> None:
    """Consumers poll day and night: only a failed poll, or an ordinary read, is logged."""
    # No digits: a run of them could look like a phone number, which the log masks.
    marker = uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghijklmnop"))
    polled = api.call("agent", "GET", "/events", params={"after": "$", "wait_ms": 50})
    failed = api.call("agent", "GET", "/events", params={"after": marker, "wait_ms": 50})
    read = api.call("agent", "GET", "/events", params={"after": "$"})
    assert (polled.status_code, failed.status_code, read.status_code) == (200, 422, 200)
    log = api.process.log_text()
    assert "GET /events?after=%24&wait_ms=50 200" not in log
    assert f"GET /events?after={marker}&wait_ms=50 422" in log
    assert "GET /events?after=%24 200" in log


def test_waiting_consoles_hold_up_nobody(api: Api) -> None:
    """More long polls than the API has worker threads (2 x its database pool): every other
    request is still answered while they all wait."""
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    order = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()
    after = api.call("agent", "GET", "/events", params={"after": "$"}).json()["last_id"]

    def poll() -> int:
        with api.as_("agent") as client:
            return client.get(
                "/events", params={"after": after, "wait_ms": 20_000}, timeout=40
            ).status_code

    with ThreadPoolExecutor(max_workers=POLLS) as pool:
        polls = [pool.submit(poll) for _ in range(POLLS)]
        time.sleep(1)  # all of them waiting in the API
        read = api.call("agent", "GET", f"/work-orders/{order['id']}")
        assert read.status_code == 200
        assert not any(p.done() for p in polls)  # answered while every poll still waits
        api.call(
            "agent", "POST", f"/work-orders/{order['id']}/transitions", json={"to": "accepted"}
        )
        assert [p.result() for p in polls] == [200] * POLLS  # and the event ends their wait
