"""SLA arithmetic with a controllable clock: deadlines, on-hold pauses, breaches, escalation."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

from tests.support import Backend, make_caller
from workorders.contract import Kind, Priority, Status
from workorders.hospital.fhir import FhirHospitalAdapter
from workorders.models import OrderHistory, Resident, WorkOrder
from workorders.schemas import OrderCreate
from workorders.services import events, orders, sweep
from workorders.services.sla import SlaPolicy, load_policy
from workorders.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_policy(ROOT / "data" / "sla.json")
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


@pytest.fixture
def world(backend: Backend, fhir_url: str):  # type: ignore[no-untyped-def]
    caller = make_caller(backend)
    with backend.session() as session:
        resident = Resident(
            name="测试",
            community=f"sla-{uuid.uuid4().hex[:8]}",
            address={"building": "1", "unit": "1", "room": "101"},
        )
        session.add(resident)
        session.commit()
        resident_id = resident.id
    return backend, caller, resident_id, FhirHospitalAdapter(fhir_url)


def _create(
    world, now: datetime, kind: Kind = Kind.repair, priority: Priority | None = None
) -> int:  # type: ignore[no-untyped-def]
    backend, caller, resident_id, hospital = world
    details = {
        Kind.repair: {
            "category": "电梯",
            "location": "public",
            "place": "1号楼电梯",
            "description": "电梯停了",
        },
        Kind.emergency: {"description": "摔倒了起不来"},
        Kind.complaint: {"text": "师傅态度差"},
    }[kind]
    body = OrderCreate(
        kind=kind, channel="hotline", resident_id=resident_id, details=details, priority=priority
    )
    with backend.session() as session:
        return orders.create(session, caller, body, None, hospital, POLICY, now).order.id


def _move(world, order_id: int, target: Status, now: datetime) -> WorkOrder:  # type: ignore[no-untyped-def]
    backend, caller, _, hospital = world
    with backend.session() as session:
        return orders.transition(
            session, caller, order_id, target, None, hospital, POLICY, now
        ).order


def _get(world, order_id: int) -> WorkOrder:  # type: ignore[no-untyped-def]
    with world[0].session() as session:
        return session.get(WorkOrder, order_id)


def _sweep(world, now: datetime) -> sweep.SweepResult:  # type: ignore[no-untyped-def]
    return sweep.sweep(world[0].factory, POLICY, now, timedelta(hours=72))


def test_deadlines_come_from_configuration_per_kind_and_priority() -> None:
    config = json.loads((ROOT / "data" / "sla.json").read_text())
    policy = SlaPolicy(config)
    assert policy.targets(Kind.repair, Priority.P2).response == timedelta(hours=2)
    assert policy.targets(Kind.repair, Priority.P2).escalation == timedelta(hours=12)
    assert policy.targets(Kind.emergency, Priority.P0).response == timedelta(seconds=60)
    # A per-kind override replaces only what it names.
    assert policy.targets(Kind.callback, Priority.P2).response == timedelta(hours=1)
    assert policy.targets(Kind.callback, Priority.P2).escalation == timedelta(hours=12)


def test_p2_deadlines_on_creation(world) -> None:  # type: ignore[no-untyped-def]
    order = _get(world, _create(world, T0))
    assert order.response_due_at == T0 + 2 * H
    assert order.escalation_due_at == T0 + 12 * H
    assert order.resolution_due_at == T0 + 72 * H


def test_on_hold_pauses_the_resolution_clock(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0)
    _move(world, oid, Status.accepted, T0 + 1 * H)
    _move(world, oid, Status.in_progress, T0 + 2 * H)
    _move(world, oid, Status.on_hold, T0 + 10 * H)  # waiting for parts
    held = _get(world, oid)
    assert held.paused_since == T0 + 10 * H
    assert held.escalation_due_at is None  # nobody is late while on hold
    # 100 h on hold: past the original 72 h deadline, yet no breach.
    _sweep(world, T0 + 100 * H)
    assert _get(world, oid).resolution_breached_at is None
    resumed = _move(world, oid, Status.in_progress, T0 + 110 * H)
    assert resumed.paused_seconds == pytest.approx(100 * 3600)
    assert resumed.resolution_due_at == T0 + (72 + 100) * H
    assert resumed.paused_since is None
    # A second pause adds up.
    _move(world, oid, Status.on_hold, T0 + 120 * H)
    again = _move(world, oid, Status.in_progress, T0 + 125 * H)
    assert again.paused_seconds == pytest.approx(105 * 3600)
    assert again.resolution_due_at == T0 + (72 + 105) * H
    assert _get(world, oid).resolution_breached_at is None
    _sweep(world, T0 + (72 + 105) * H + timedelta(seconds=1))
    assert _get(world, oid).resolution_breached_at is not None


def test_first_response_breach_is_marked_once(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0)
    _sweep(world, T0 + 2 * H - timedelta(seconds=1))
    assert _get(world, oid).response_breached_at is None
    _sweep(world, T0 + 2 * H)
    first = _get(world, oid).response_breached_at
    assert first == T0 + 2 * H
    _sweep(world, T0 + 3 * H)
    assert _get(world, oid).response_breached_at == first
    with world[0].session() as session:
        marks = session.query(OrderHistory).filter_by(order_id=oid, action="sla_breach").count()
    assert marks == 1


def test_response_in_time_is_not_a_breach(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0)
    accepted = _move(world, oid, Status.accepted, T0 + 1 * H)
    assert accepted.first_response_at == T0 + 1 * H
    _sweep(world, T0 + 5 * H)
    assert _get(world, oid).response_breached_at is None


def test_escalation_after_twelve_idle_hours(world, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0)
    _move(world, oid, Status.accepted, T0 + 1 * H)  # activity restarts the idle timer
    _sweep(world, T0 + 12 * H + timedelta(minutes=30))
    assert _get(world, oid).escalated_at is None
    result = _sweep(world, T0 + 13 * H)
    assert _get(world, oid).escalated_at == T0 + 13 * H
    assert result.escalations >= 1
    # The escalation is an event for the supervisor role, recorded in history.
    with world[0].session() as session:
        reasons = [
            h.reason
            for h in session.query(OrderHistory).filter_by(order_id=oid, action="escalated")
        ]
    assert reasons == ["超过12小时无人处理，已升级至主管"]
    events.publish(world[0].factory, result.event_ids)
    community = _get(world, oid).community  # unique to this test and backend
    escalations = [
        data
        for _, fields in redis_client.xrange(get_settings().event_stream)
        if fields[b"type"] == b"order.escalated"
        and (data := json.loads(fields[b"data"]))["community"] == community
    ]
    assert [(e["to_role"], e["reason"]) for e in escalations] == [("supervisor", "idle")]


def test_a_residents_words_noted_by_the_bot_do_not_postpone_the_escalation(world) -> None:  # type: ignore[no-untyped-def]
    backend, staff, _, _ = world
    bot = make_caller(backend, role="service", scopes=["orders:update"])
    oid = _create(world, T0)
    _move(world, oid, Status.accepted, T0 + 1 * H)
    due = _get(world, oid).escalation_due_at
    assert due == T0 + 13 * H
    with backend.session() as session:
        orders.add_note(session, bot, oid, "居民又说：水越漏越大了", POLICY, T0 + 6 * H)
    assert _get(world, oid).escalation_due_at == due  # the resident still waits for a person
    with backend.session() as session:
        orders.add_note(session, staff, oid, "已联系师傅，明早上门", POLICY, T0 + 7 * H)
    assert _get(world, oid).escalation_due_at == T0 + 19 * H  # staff at work: idle from now


def test_emergency_must_be_acknowledged_within_60_seconds(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0, Kind.emergency)
    order = _get(world, oid)
    assert order.priority == Priority.P0
    _sweep(world, T0 + timedelta(seconds=59))
    assert _get(world, oid).escalated_at is None
    result = _sweep(world, T0 + timedelta(seconds=60))
    after = _get(world, oid)
    assert after.response_breached_at == T0 + timedelta(seconds=60)
    assert after.escalated_at == T0 + timedelta(seconds=60)
    assert result.response_breaches >= 1


def test_resolved_order_closes_after_rating_timeout(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0)
    for i, target in enumerate((Status.accepted, Status.in_progress, Status.resolved), start=1):
        _move(world, oid, target, T0 + i * H)
    _sweep(world, T0 + 3 * H + timedelta(hours=71))
    assert _get(world, oid).status == Status.resolved
    _sweep(world, T0 + 3 * H + timedelta(hours=72))
    closed = _get(world, oid)
    assert closed.status == Status.closed
    assert closed.closed_at == T0 + 3 * H + timedelta(hours=72)


def test_reopened_order_resumes_its_clock(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0)
    _move(world, oid, Status.accepted, T0 + 1 * H)
    _move(world, oid, Status.resolved, T0 + 2 * H)
    reopened = _move(world, oid, Status.in_progress, T0 + 12 * H)  # "still leaking"
    assert reopened.reopen_count == 1
    assert reopened.resolved_at is None
    assert reopened.paused_seconds == pytest.approx(10 * 3600)
    assert reopened.resolution_due_at == T0 + 82 * H


def test_complaint_is_escalated_at_once(world) -> None:  # type: ignore[no-untyped-def]
    oid = _create(world, T0, Kind.complaint)
    order = _get(world, oid)
    assert order.escalated_at == T0
