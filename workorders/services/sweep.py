"""The scheduler's sweep: marks SLA breaches, escalates idle orders, closes unrated ones.

Every step is a conditional update on a locked row, so two schedulers (or a retry after a
crash) never double-mark or double-escalate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from workorders.contract import Kind, Priority, Role, Status
from workorders.models import OrderHistory, WorkOrder
from workorders.services import escalation, events, sla, terminals
from workorders.services.sla import SlaPolicy

_OPEN = [s.value for s in sla.OPEN]


@dataclass
class SweepResult:
    response_breaches: int = 0
    resolution_breaches: int = 0
    escalations: int = 0
    auto_closed: int = 0
    event_ids: list[int] = field(default_factory=list)


def _note(
    session: Session,
    order: WorkOrder,
    now: datetime,
    action: str,
    reason: str,
    old: Status | None = None,
    new: Status | None = None,
) -> None:
    session.add(
        OrderHistory(
            order_id=order.id,
            at=now,
            actor_id=None,
            action=action,
            from_status=old,
            to_status=new,
            reason=reason,
        )
    )


def sweep(
    factory: sessionmaker[Session], policy: SlaPolicy, now: datetime, rating_timeout: timedelta
) -> SweepResult:
    result = SweepResult()
    with factory() as session:
        due = (
            session.execute(
                select(WorkOrder)
                .where(
                    or_(
                        and_(
                            WorkOrder.status == Status.new,
                            WorkOrder.first_response_at.is_(None),
                            WorkOrder.response_breached_at.is_(None),
                            WorkOrder.response_due_at <= now,
                        ),
                        and_(
                            WorkOrder.status.in_(_OPEN),
                            WorkOrder.resolution_breached_at.is_(None),
                            WorkOrder.resolution_due_at <= now,
                        ),
                        and_(
                            WorkOrder.status.in_(_OPEN),
                            WorkOrder.escalated_at.is_(None),
                            WorkOrder.escalation_due_at <= now,
                        ),
                        and_(
                            WorkOrder.status == Status.resolved,
                            WorkOrder.resolved_at <= now - rating_timeout,
                        ),
                    )
                )
                .order_by(WorkOrder.id)
                .limit(1000)
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        new_events = []
        for order in due:
            if sla.response_breached(order, now) and order.response_breached_at is None:
                order.response_breached_at = now
                _note(session, order, now, "sla_breach", "首次响应超时")
                new_events.append(events.record(session, "sla.breached", order, which="response"))
                result.response_breaches += 1
            if sla.resolution_breached(order, now) and order.resolution_breached_at is None:
                order.resolution_breached_at = now
                _note(session, order, now, "sla_breach", "办理超时")
                new_events.append(events.record(session, "sla.breached", order, which="resolution"))
                result.resolution_breaches += 1
            if sla.escalation_due(order, now):
                order.escalated_at = now
                idle = policy.targets(Kind(order.kind), Priority(order.priority)).escalation
                _note(session, order, now, "escalated", f"超过{_human(idle)}无人处理，已升级至主管")
                new_events.append(
                    events.record(
                        session, "order.escalated", order, to_role=Role.supervisor, reason="idle"
                    )
                )
                result.escalations += 1
            if (
                order.status == Status.resolved
                and order.resolved_at is not None
                and order.resolved_at <= now - rating_timeout
            ):
                order.status = Status.closed
                order.closed_at = order.updated_at = now
                order.paused_since = None
                _note(
                    session,
                    order,
                    now,
                    "status",
                    "居民未在期限内评价，自动关闭",
                    Status.resolved,
                    Status.closed,
                )
                new_events.append(
                    events.record(
                        session,
                        "order.status_changed",
                        order,
                        from_status=Status.resolved,
                        to_status=Status.closed,
                    )
                )
                result.auto_closed += 1
        session.flush()
        result.event_ids = [e.id for e in new_events]
        session.commit()
    return result


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}小时"
    if seconds % 60 == 0:
        return f"{seconds // 60}分钟"
    return f"{seconds}秒"


@dataclass
class SosSweepResult:
    escalation_steps: int = 0
    chains_stopped: int = 0
    chains_repaired: int = 0
    terminals_silent: int = 0
    visit_orders: int = 0
    event_ids: list[int] = field(default_factory=list)


def sweep_sos(
    factory: sessionmaker[Session], policy: SlaPolicy, now: datetime, heartbeat: timedelta
) -> SosSweepResult:
    """Emergency escalation chains and silent SOS terminals, on the same clock as `sweep`.

    The SLA sweep above still marks a P0 breach and escalates to the supervisor role at 60 s
    (a console alert); the chain is the outward part: family, then the duty supervisor, by
    phone (services/escalation.py). Terminals silent for two heartbeat intervals get one visit
    order (services/terminals.py).
    """
    result = SosSweepResult()
    repaired = escalation.repair_missing(factory, policy, now)
    chains = escalation.advance(factory, policy, now)
    silent = terminals.flag_silent(factory, policy, now, heartbeat)
    result.chains_repaired = repaired.started
    result.escalation_steps = chains.steps
    result.chains_stopped = chains.stopped
    result.terminals_silent = silent.flagged
    result.visit_orders = silent.visit_orders
    result.event_ids = [*repaired.event_ids, *chains.event_ids, *silent.event_ids]
    return result
