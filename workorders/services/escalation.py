"""What follows an SOS: family told at once, a callback asked for, and an escalation chain.

The chain makes sure a *person* takes the emergency on. It starts when the order is made; each
step waits one P0 response target (60 s in data/sla.json, the same number the SLA holds staff
to). If by then no staff member has accepted the order, the next one in line is called: the
resident's family contacts in the order they were registered (those with notify_on_emergency),
then the duty supervisor. Every step is a history entry and an alert event. A staff accept
(`first_response_at`) or the order ending stops the chain; the sweep checks that before every
step, so nobody is called after an acknowledgement.

There is no SMS or outbound-call gateway yet: each notification is a `notification.requested`
event on the stream (ids only, no personal data) for a channel worker to deliver, and the
callback to the terminal is a `callback.requested` event for the hotline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from workorders.contract import Kind, Priority, Role, Status
from workorders.errors import ApiError
from workorders.models import (
    EmergencyEscalation,
    Event,
    FamilyContact,
    OrderHistory,
    Principal,
    Proxy,
    Resident,
    WorkOrder,
)
from workorders.schemas import NotificationResultIn
from workorders.security import Caller
from workorders.services import events, idempotency, proxies, sla
from workorders.services.idempotency import request_hash
from workorders.services.sla import SlaPolicy
from workorders.settings import get_settings

_OPEN = [s.value for s in sla.OPEN]


@dataclass
class ChainResult:
    steps: int = 0
    stopped: int = 0
    started: int = 0
    event_ids: list[int] = field(default_factory=list)


def step_interval(policy: SlaPolicy) -> timedelta:
    """One number for "a person must acknowledge within": the P0 emergency response target."""
    return policy.targets(Kind.emergency, Priority.P0).response


def _note(
    session: Session, order_id: int, now: datetime, action: str, reason: str, actor: int | None
) -> None:
    session.add(
        OrderHistory(order_id=order_id, at=now, actor_id=actor, action=action, reason=reason)
    )


def duration_text(delta: timedelta) -> str:
    """60秒, 2分钟: how long, the way staff say it."""
    seconds = int(delta.total_seconds())
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds // 60}分钟"
    return f"{seconds}秒"


def local_time(at: datetime) -> str:
    return at.astimezone(ZoneInfo(get_settings().timezone)).strftime("%m月%d日 %H:%M:%S")


def start(
    session: Session,
    order_id: int,
    terminal_id: int | None,
    policy: SlaPolicy,
    now: datetime,
    notes: Iterable[str] = (),
) -> list[int]:
    """Tell the family, ask for a callback, start the chain; once per order (safe to repeat).

    Its own transaction, after the order's: the order and its staff alert are never held up by
    this. A crash in between is repaired by the device's retry or by `repair_missing`.
    """
    order = session.execute(
        select(WorkOrder).where(WorkOrder.id == order_id).with_for_update(key_share=True)
    ).scalar_one()
    if session.get(EmergencyEscalation, order_id) is not None:
        session.rollback()
        return []
    resident = session.get(Resident, order.resident_id) if order.resident_id else None
    contacts = [c for c in resident.contacts if c.notify_on_emergency] if resident else []
    plan: list[dict[str, Any]] = [{"to": "contact", "contact_id": c.id} for c in contacts]
    plan.append({"to": "supervisor"})
    session.add(
        EmergencyEscalation(
            order_id=order.id,
            terminal_id=terminal_id,
            plan=plan,
            step=0,
            started_at=order.created_at,
            next_due_at=order.created_at + step_interval(policy),
        )
    )
    new: list[Event] = []
    told = [
        (f"已通知紧急联系人{c.name}（{c.relation}）", {"contact_id": c.id, "via": "sms"})
        for c in contacts
    ]
    # Family members who act for the elder (代办, consented) hear it on WeChat as well; their
    # acknowledgement there counts like a contact's key 1 (record_notification).
    told += [
        (
            f"已通过微信通知代办家属{proxies.mask_name(p.name)}（{p.relation}）",
            {"proxy_id": p.id, "via": "wechat"},
        )
        for p in _active_proxies(session, order.resident_id)
    ]
    for said, whom in told:
        _note(session, order.id, now, "family_notified", f"{said}：居民按下了一键求助", None)
        new.append(
            events.record(
                session,
                "notification.requested",
                order,
                audience="family",
                purpose="sos",
                step=0,
                **whom,
            )
        )
    if not contacts:
        _note(session, order.id, now, "note", "居民没有登记需要通知的紧急联系人", None)
    if terminal_id is not None:
        _note(
            session,
            order.id,
            now,
            "callback_requested",
            "需回拨一键呼叫终端，与居民通话确认情况（等待热线回拨）",
            None,
        )
        new.append(
            events.record(
                session, "callback.requested", order, terminal_id=terminal_id, via="terminal"
            )
        )
    for text in notes:
        _note(session, order.id, now, "note", text, None)
    try:
        session.flush()
    except IntegrityError:  # another process started it a moment ago
        session.rollback()
        return []
    ids = [e.id for e in new]
    session.commit()
    return ids


def _acknowledged(order: WorkOrder) -> bool:
    return order.first_response_at is not None


def _finish(
    session: Session,
    chain: EmergencyEscalation,
    order: WorkOrder,
    now: datetime,
    reason: str,
    new: list[Event],
) -> None:
    chain.finished_at = now
    chain.finish_reason = reason
    chain.next_due_at = None
    if reason == "acknowledged":
        chain.acknowledged_at = order.first_response_at
    if chain.step == 0:  # nobody was called: nothing to stop
        return
    text = (
        "工作人员已受理，停止逐级通知" if reason == "acknowledged" else "工单已结束，停止逐级通知"
    )
    _note(session, order.id, now, "escalation_stopped", text, None)
    new.append(events.record(session, "emergency.escalation_stopped", order, reason=reason))


def _supervisor(session: Session) -> Principal | None:
    username = get_settings().duty_supervisor
    if not username:
        return None
    return session.execute(
        select(Principal).where(
            Principal.username == username,
            Principal.active.is_(True),
            Principal.role.in_([Role.supervisor.value, Role.admin.value]),
        )
    ).scalar_one_or_none()


def _take_step(
    session: Session, chain: EmergencyEscalation, order: WorkOrder, now: datetime, new: list[Event]
) -> None:
    """Call the next one in line; a contact deleted meanwhile is skipped at once."""
    while chain.step < len(chain.plan):
        target = chain.plan[chain.step]
        chain.step += 1
        elapsed = duration_text(chain.next_due_at - chain.started_at)
        prefix = f"已{elapsed}无人受理，第{chain.step}步："
        if target["to"] == "contact":
            contact = session.get(FamilyContact, target["contact_id"])
            if contact is None or contact.resident_id != order.resident_id:
                _note(
                    session,
                    order.id,
                    now,
                    "escalation_step",
                    prefix + "该紧急联系人已从档案中删除，跳过",
                    None,
                )
                continue
            _note(
                session,
                order.id,
                now,
                "escalation_step",
                prefix + f"电话通知紧急联系人{contact.name}（{contact.relation}）",
                None,
            )
            notify: dict[str, Any] = {"audience": "family", "contact_id": contact.id}
            to, to_role = "contact", Role.agent
        else:
            duty = _supervisor(session)
            who = f"值班主管{duty.display_name}" if duty else "值班主管"
            _note(session, order.id, now, "escalation_step", prefix + f"通知{who}", None)
            notify = {"audience": "supervisor", "principal_id": duty.id if duty else None}
            to, to_role = "supervisor", Role.supervisor
        new.append(
            events.record(
                session,
                "notification.requested",
                order,
                **notify,
                purpose="escalation",
                via="call",
                step=chain.step,
            )
        )
        new.append(
            events.record(
                session, "emergency.escalation_step", order, step=chain.step, to=to, to_role=to_role
            )
        )
        return


def advance(factory: sessionmaker[Session], policy: SlaPolicy, now: datetime) -> ChainResult:
    """Take every step that is due by `now` (the scheduler's clock; tests pass their own).

    Steps keep their schedule (start + k × interval): a late sweep catches up, calling the
    people whose turn has passed at once rather than losing time.
    """
    result = ChainResult()
    interval = step_interval(policy)
    with factory() as session:
        chains = (
            session.execute(
                select(EmergencyEscalation)
                .where(
                    EmergencyEscalation.finished_at.is_(None),
                    EmergencyEscalation.next_due_at <= now,
                )
                .order_by(EmergencyEscalation.next_due_at)
                .limit(500)
                .with_for_update(skip_locked=True, key_share=True)
            )
            .scalars()
            .all()
        )
        if not chains:
            return result
        orders = {
            o.id: o
            for o in session.execute(
                select(WorkOrder)
                .where(WorkOrder.id.in_([c.order_id for c in chains]))
                .with_for_update(key_share=True)
            ).scalars()
        }
        new: list[Event] = []
        for chain in chains:
            order = orders[chain.order_id]
            while chain.finished_at is None and chain.next_due_at <= now:
                if _acknowledged(order):
                    _finish(session, chain, order, now, "acknowledged", new)
                    result.stopped += 1
                elif Status(order.status) not in sla.OPEN:
                    _finish(session, chain, order, now, "closed", new)
                    result.stopped += 1
                else:
                    _take_step(session, chain, order, now, new)
                    result.steps += 1
                    if chain.step >= len(chain.plan):
                        chain.finished_at = now
                        chain.finish_reason = "exhausted"
                        chain.next_due_at = None
                    else:
                        chain.next_due_at = chain.next_due_at + interval
        session.flush()
        result.event_ids = [e.id for e in new]
        session.commit()
    return result


_NOTIFICATION_TEXT = {
    "acknowledged": "已接听并按1确认收到",
    "answered": "已接听，但没有确认",
    "no_answer": "无人接听",
    "failed": "电话没有打出去",
}


_WECHAT_TEXT = {
    "acknowledged": "已在微信里确认收到",
    "answered": "消息已送达，但没有确认",
    "no_answer": "没有回复",
    "failed": "消息没有发出去",
}


def _active_proxies(session: Session, resident_id: int | None) -> list[Proxy]:
    if resident_id is None:
        return []
    return list(
        session.execute(
            select(Proxy)
            .where(Proxy.resident_id == resident_id, Proxy.status == "active")
            .order_by(Proxy.id)
        ).scalars()
    )


def record_notification(
    session: Session,
    caller: Caller,
    order_id: int,
    result: NotificationResultIn,
    key: str,
    now: datetime,
) -> tuple[WorkOrder, list[int]]:
    """What came of a notification call, on the order; a family contact's confirmation is a
    person acknowledging, so it stops the chain (staff still take the order on).

    Idempotent by event id: the hotline may report again after a restart."""
    order = session.execute(
        select(WorkOrder).where(WorkOrder.id == order_id).with_for_update()
    ).scalar_one_or_none()
    if order is None:
        raise ApiError(404, "order_not_found", "没有这张工单。")
    # Without a proxy, the hash a report had before proxies existed (a retry still matches).
    said = result.dict(exclude={"proxy_id"} if result.proxy_id is None else None)
    if idempotency.claim(session, caller, key, "notification", request_hash(said)):
        session.rollback()
        return order, []
    contact = session.get(FamilyContact, result.contact_id) if result.contact_id else None
    if contact is not None and contact.resident_id != order.resident_id:
        raise ApiError(422, "contact_mismatch", "这位联系人不是该居民的紧急联系人。")
    proxy = session.get(Proxy, result.proxy_id) if result.proxy_id else None
    if proxy is not None and proxy.resident_id != order.resident_id:
        raise ApiError(422, "contact_mismatch", "这位代办家属不是该居民的家属。")
    if proxy is not None:
        who = f"代办家属{proxies.mask_name(proxy.name)}（{proxy.relation}）"
        text = f"微信通知{who}：{_WECHAT_TEXT[result.outcome]}"
    else:
        who = f"紧急联系人{contact.name}（{contact.relation}）" if contact else "联系人"
        text = f"电话通知{who}：{_NOTIFICATION_TEXT[result.outcome]}"
    if result.detail:
        text += f"（{result.detail}）"
    _note(session, order.id, now, "notification_result", text, caller.id)
    new: list[Event] = []
    chain = session.get(EmergencyEscalation, order_id)
    if result.outcome == "acknowledged" and chain is not None and chain.finished_at is None:
        chain.finished_at = chain.acknowledged_at = now
        chain.finish_reason = "acknowledged"
        chain.next_due_at = None
        _note(session, order.id, now, "escalation_stopped", f"{who}已确认，停止逐级通知", None)
        new.append(
            events.record(
                session, "emergency.escalation_stopped", order, reason="family_acknowledged"
            )
        )
    idempotency.bind(session, caller, key, order.id)
    session.flush()
    ids = [e.id for e in new]
    session.commit()
    return order, ids


def repair_missing(
    factory: sessionmaker[Session],
    policy: SlaPolicy,
    now: datetime,
    grace: timedelta = timedelta(seconds=10),
) -> ChainResult:
    """Terminal emergencies whose follow-up never ran (a crash between two commits)."""
    result = ChainResult()
    with factory() as session:
        rows = session.execute(
            select(WorkOrder.id, WorkOrder.details)
            .outerjoin(EmergencyEscalation, EmergencyEscalation.order_id == WorkOrder.id)
            .where(
                and_(
                    EmergencyEscalation.order_id.is_(None),
                    WorkOrder.kind == Kind.emergency,
                    WorkOrder.channel == "terminal",
                    WorkOrder.status.in_(_OPEN),
                    WorkOrder.created_at <= now - grace,
                )
            )
            .limit(100)
        ).all()
    for order_id, details in rows:
        with factory() as session:
            ids = start(session, order_id, terminal_of(details), policy, now)
        if ids:
            result.started += 1
            result.event_ids.extend(ids)
    return result


def terminal_of(details: dict[str, Any]) -> int | None:
    """The terminal an SOS order came from: its details carry source "terminal:<id>"."""
    source = str(details.get("source") or "")
    prefix, _, ident = source.partition(":")
    return int(ident) if prefix == "terminal" and ident.isdigit() else None
