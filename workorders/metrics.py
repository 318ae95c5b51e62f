"""Prometheus metrics of the work-order system, served by the scheduler (`SCHEDULER_METRICS_PORT`).

What the issue's operators watch is the state of the work, and that lives in the database:
each scrape counts it there (a few aggregate queries), so every scheduler host reports the same
figures whichever holds the lease, and nothing is lost when a process restarts. Labels are
enumerations (kind, priority, status, clock); no resident, order or staff id ever appears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from workorders.contract import OPEN_STATUSES, Kind
from workorders.models import EmergencyEscalation, Event, Handoff, WorkOrder

_OPEN = [s.value for s in OPEN_STATUSES]


class WorkCollector(Collector):
    def __init__(self, factory: sessionmaker[Session], lease_held: Callable[[], bool]) -> None:
        self.factory, self.lease_held = factory, lease_held

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "linli_scheduler_lease_held", "1 on the host whose scheduler sweeps (the lease)"
        )
        held.add_metric([], 1.0 if self.lease_held() else 0.0)
        yield held
        with self.factory() as session:
            yield from _orders(session)
            yield from _sos(session)
            yield from _handoffs(session)
            yield from _outbox(session)


def _orders(session: Session) -> Iterator[Metric]:
    open_orders = GaugeMetricFamily(
        "linli_orders_open", "Open work orders", labels=["kind", "priority", "status"]
    )
    for kind, priority, status, count in session.execute(
        select(WorkOrder.kind, WorkOrder.priority, WorkOrder.status, func.count())
        .where(WorkOrder.status.in_(_OPEN))
        .group_by(WorkOrder.kind, WorkOrder.priority, WorkOrder.status)
    ):
        open_orders.add_metric([kind, priority, status], count)
    yield open_orders
    breached = GaugeMetricFamily(
        "linli_orders_breached",
        "Open orders past an SLA clock (response: first response; resolution)",
        labels=["clock"],
    )
    row = session.execute(
        select(
            func.count(WorkOrder.response_breached_at),
            func.count(WorkOrder.resolution_breached_at),
            func.count(WorkOrder.escalated_at),
        ).where(WorkOrder.status.in_(_OPEN))
    ).one()
    breached.add_metric(["response"], row[0])
    breached.add_metric(["resolution"], row[1])
    yield breached
    escalated = GaugeMetricFamily(
        "linli_orders_escalated", "Open orders escalated to a supervisor (idle too long)"
    )
    escalated.add_metric([], row[2])
    yield escalated
    due = GaugeMetricFamily(
        "linli_orders_response_due_seconds",
        "Seconds until the soonest first-response deadline of an open order without a response "
        "(negative: overdue)",
    )
    soonest = session.execute(
        select(func.min(WorkOrder.response_due_at)).where(
            WorkOrder.status.in_(_OPEN), WorkOrder.first_response_at.is_(None)
        )
    ).scalar()
    if soonest is not None:
        due.add_metric([], (soonest - datetime.now(timezone.utc)).total_seconds())
    yield due


def _sos(session: Session) -> Iterator[Metric]:
    alerts = CounterMetricFamily("linli_sos_alerts", "Emergency orders raised, all time")
    acknowledged = CounterMetricFamily(
        "linli_sos_acknowledged", "Emergency orders a person acknowledged, all time"
    )
    total, acked = session.execute(
        select(func.count(), func.count(WorkOrder.first_response_at)).where(
            WorkOrder.kind == Kind.emergency.value
        )
    ).one()
    alerts.add_metric([], total)
    acknowledged.add_metric([], acked)
    yield alerts
    yield acknowledged
    running = GaugeMetricFamily(
        "linli_sos_escalations_running", "Escalation chains still calling people"
    )
    running.add_metric(
        [],
        session.execute(
            select(func.count()).where(EmergencyEscalation.finished_at.is_(None))
        ).scalar_one(),
    )
    yield running


def _handoffs(session: Session) -> Iterator[Metric]:
    handoffs = GaugeMetricFamily(
        "linli_handoffs_open", "Conversations handed to staff, not ended", labels=["state"]
    )
    waiting, owned = session.execute(
        select(func.count(), func.count(Handoff.claimed_at)).where(Handoff.ended_at.is_(None))
    ).one()
    handoffs.add_metric(["waiting"], waiting - owned)
    handoffs.add_metric(["claimed"], owned)
    yield handoffs


def _outbox(session: Session) -> Iterator[Metric]:
    outbox = GaugeMetricFamily(
        "linli_outbox_unpublished", "Events committed but not yet on the Redis stream"
    )
    outbox.add_metric(
        [], session.execute(select(func.count()).where(Event.published_at.is_(None))).scalar_one()
    )
    yield outbox
