"""Work orders: creation (idempotent), the life cycle, assignment, notes and ratings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, joinedload, lazyload

from workorders.contract import Channel, Kind, Priority, Role, Status
from workorders.errors import ApiError, not_found
from workorders.hospital.base import HospitalAdapter, HospitalUnavailable, SlotUnavailable
from workorders.models import (
    Event,
    OrderHistory,
    OrderPhoto,
    Principal,
    Proxy,
    Resident,
    WorkOrder,
)
from workorders.schemas import OrderCreate, WhereaboutsIn
from workorders.security import Caller
from workorders.services import events, idempotency, proxies, sla, state_machine
from workorders.services.sla import SlaPolicy
from workorders.words import say_moment

# What service accounts (bots, channels, terminals) may do on a resident's behalf.
_SERVICE_TRANSITIONS = frozenset({Status.cancelled, Status.in_progress})
_DEFAULT_PRIORITY = {Kind.emergency: Priority.P0}
# Channels where a person can answer the resident in writing (the gateway pushes it).
WRITTEN_CHANNELS = frozenset({Channel.web, Channel.wechat})


@dataclass
class Outcome:
    order: WorkOrder
    created: bool
    # Committed with the change, to be announced now (events.announce: no reading them back).
    events: list[Event]

    @property
    def event_ids(self) -> list[int]:
        return [e.id for e in self.events]


def _history(
    order: WorkOrder,
    caller: Caller | None,
    action: str,
    now: datetime,
    old: Status | None = None,
    new: Status | None = None,
    reason: str | None = None,
) -> None:
    order.history.append(
        OrderHistory(
            at=now,
            actor_id=caller.id if caller else None,
            action=action,
            from_status=old,
            to_status=new,
            reason=reason,
        )
    )


def get(session: Session, order_id: int, *, lock: bool = False) -> WorkOrder:
    query = select(WorkOrder).where(WorkOrder.id == order_id)
    if lock:
        query = query.with_for_update()
    return _found(session.execute(query).scalar_one_or_none(), order_id)


def _found(order: WorkOrder | None, order_id: int) -> WorkOrder:
    if order is None:
        raise not_found("order", order_id)
    return order


# Built once: SQLAlchemy 1.4 spends a third of a read building loader options otherwise.
_DETAIL = (
    select(WorkOrder)
    .where(WorkOrder.id == bindparam("order_id"))
    .options(joinedload(WorkOrder.history), joinedload(WorkOrder.photos))
)


def detail(session: Session, order_id: int) -> WorkOrder:
    """An order with what its detail shows (history, photos) in one statement, not three."""
    return _found(
        session.execute(_DETAIL, {"order_id": order_id}).unique().scalar_one_or_none(), order_id
    )


@dataclass
class DetailRow:
    """What an order's detail shows, read as plain rows (`views.order_detail_out` takes it as
    it takes a `WorkOrder`): for the hot read, SQLAlchemy 1.4's ORM (identity map, eager
    loaders, the session's close) cost more than the statement."""

    row: Any
    history: list[Any]
    photos: list[Any]
    proxy: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


_O, _H, _P, _X = (
    WorkOrder.__table__,
    OrderHistory.__table__,
    OrderPhoto.__table__,
    Proxy.__table__,
)
_HISTORY_COLUMNS = ("at", "actor_id", "action", "from_status", "to_status", "reason")
# One statement: the order, its history (one row each), its proxy, and whether it has photos
# (rare: only then a second statement, for them).
_DETAIL_ROWS = (
    select(
        _O,
        *(_H.c[name].label(f"h_{name}") for name in _HISTORY_COLUMNS),
        _X.c.name.label("x_name"),
        _X.c.relation.label("x_relation"),
        select(_P.c.id).where(_P.c.order_id == _O.c.id).limit(1).scalar_subquery().label("x_photo"),
    )
    .select_from(_O.outerjoin(_H, _H.c.order_id == _O.c.id).outerjoin(_X, _X.c.id == _O.c.proxy_id))
    .where(_O.c.id == bindparam("order_id"))
    .order_by(_H.c.id)
)
_PHOTO_ROWS = (
    select(_P.c.id, _P.c.content_type, _P.c.size, _P.c.created_at)
    .where(_P.c.order_id == bindparam("order_id"))
    .order_by(_P.c.id)
)


@dataclass
class _History:
    at: datetime
    actor_id: int | None
    action: str
    from_status: str | None
    to_status: str | None
    reason: str | None


@dataclass
class _Proxy:
    id: int
    name: str
    relation: str


def detail_rows(connection: Connection, order_id: int) -> DetailRow:
    """`detail` without the ORM: the same fields, for a response only (nothing to change)."""
    rows = connection.execute(_DETAIL_ROWS, {"order_id": order_id}).all()
    if not rows:
        raise not_found("order", order_id)
    first = rows[0]
    history = [
        _History(r.h_at, r.h_actor_id, r.h_action, r.h_from_status, r.h_to_status, r.h_reason)
        for r in rows
        if r.h_action is not None
    ]
    photos = (
        connection.execute(_PHOTO_ROWS, {"order_id": order_id}).all()
        if first.x_photo is not None
        else []
    )
    proxy = _Proxy(first.proxy_id, first.x_name, first.x_relation) if first.proxy_id else None
    return DetailRow(first, history, photos, proxy)


# Contacts and identities only when something asks for them (an emergency's escalation).
_RESIDENT = (
    select(Resident)
    .where(Resident.id == bindparam("resident_id"))
    .options(lazyload(Resident.contacts), lazyload(Resident.identities))
)


def _resident(session: Session, resident_id: int | None) -> Resident | None:
    if resident_id is None:
        return None
    resident = session.execute(_RESIDENT, {"resident_id": resident_id}).scalar_one_or_none()
    if resident is None:
        raise ApiError(
            422, "resident_not_found", f"找不到编号为 {resident_id} 的居民，请先登记居民信息。"
        )
    return resident


def _enrich(
    session: Session,
    kind: Kind,
    details: dict[str, Any],
    resident: Resident | None,
    hospital: HospitalAdapter,
    idem_key: str,
    channel: Channel,
) -> dict[str, Any]:
    """Fill what the service knows better than the caller (addresses, bookings)."""
    at_home = kind in (Kind.home_care, Kind.emergency) or details.get("location") == "home"
    if at_home and "address" not in details and resident is not None and resident.address:
        details["address"] = resident.address
    if kind == Kind.home_care and "address" not in details:
        raise ApiError(422, "address_required", "居民档案里没有住址，请提供上门服务的地址。")
    if kind == Kind.emergency and resident is not None and resident.service_notes:
        details.setdefault("service_notes", resident.service_notes)
    # Staff answer a written channel in writing; a call back needs a number.
    if kind == Kind.callback and "phone" not in details and channel not in WRITTEN_CHANNELS:
        if resident is None or not resident.phone:
            raise ApiError(422, "phone_required", "请提供回电号码。")
        details["phone"] = resident.phone
    if kind == Kind.complaint and "about_order_id" in details:
        about = session.get(WorkOrder, details["about_order_id"])
        if about is None or (resident is not None and about.resident_id != resident.id):
            raise ApiError(422, "order_not_found", "投诉所涉及的工单不存在或不属于该居民。")
    if kind == Kind.medical_appointment:
        if resident is None:
            raise ApiError(422, "resident_required", "预约挂号必须关联居民。")
        try:
            booking = hospital.book(
                details["slot_id"],
                patient_ref=f"linli-resident-{resident.id}",
                patient_name=details.get("person") or resident.name,
                idempotency_key=idem_key,
            )
        except SlotUnavailable as exc:
            raise ApiError(
                409, "slot_unavailable", str(exc) or "这个号已经被约走了，请换一个时间。"
            ) from exc
        except HospitalUnavailable as exc:
            raise ApiError(
                503, "hospital_unavailable", "医院预约系统暂时连不上，请稍后再试。"
            ) from exc
        if booking.department != details["department"]:
            hospital.cancel(booking.appointment_id)
            raise ApiError(422, "slot_department_mismatch", "所选号源不属于该科室，请重新选择。")
        details.update(
            appointment_id=booking.appointment_id,
            slot_start=booking.start.isoformat(),
            slot_end=booking.end.isoformat(),
        )
    return details


CHANNEL_LABELS = {
    "wechat": "微信",
    "web": "网页聊天",
    "hotline": "热线",
    "terminal": "一键呼叫终端",
    "console": "工作台",
    "api": "接口",
}


def open_emergency(session: Session, resident_id: int) -> WorkOrder | None:
    """The resident's open emergency, with the resident locked first: two presses or calls at
    the same moment decide one after the other whether to join or to create."""
    session.execute(
        select(Resident.id).where(Resident.id == resident_id).with_for_update(key_share=True)
    )
    return session.execute(
        select(WorkOrder)
        .where(
            WorkOrder.resident_id == resident_id,
            WorkOrder.kind == Kind.emergency,
            WorkOrder.status.in_([s.value for s in sla.OPEN]),
        )
        .order_by(WorkOrder.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _join_open_emergency(
    session: Session,
    caller: Caller,
    body: OrderCreate,
    resident: Resident,
    idem_key: str | None,
    now: datetime,
    proxy: Proxy | None,
) -> Outcome | None:
    """One emergency per resident at a time: what they say on the callback after an SOS, or
    a second call, joins the open one (a note and a fresh staff alert), never a second P0."""
    open_order = open_emergency(session, resident.id)
    if open_order is None:
        return None
    said = str(body.details.get("description") or "").strip()
    channel = Channel(body.channel).value
    reason = f"再次求助（{CHANNEL_LABELS.get(channel, channel)}）：{said}"[:1000]
    if proxy is not None:
        reason = proxies.on_behalf(proxy, "create", reason)[:1000]
        proxies.record_use(session, caller, proxy, open_order, "create")
    _history(open_order, caller, "emergency_repeated", now, reason=reason)
    event = events.record(
        session, "emergency.repeated", open_order, to_role=Role.agent, channel=channel
    )
    if idem_key is not None:
        idempotency.bind(session, caller, idem_key, open_order.id)
    session.flush()
    session.commit()
    return Outcome(open_order, False, [event])


def request_hash(body: OrderCreate) -> str:
    """The idempotency hash of an order's body (the terminals' retries compare with it too).
    Without a proxy, the same hash as before proxies existed: keys stored then still match."""
    return idempotency.request_hash(
        body.dict(exclude={"proxy_id"} if body.proxy_id is None else None)
    )


def create(
    session: Session,
    caller: Caller,
    body: OrderCreate,
    idem_key: str | None,
    hospital: HospitalAdapter,
    policy: SlaPolicy,
    now: datetime,
) -> Outcome:
    if not caller.can("orders:create") and not (
        body.kind == Kind.emergency and caller.can("emergency:create")
    ):
        raise ApiError(403, "forbidden", "您的账号不能创建这类工单。")
    body_hash = request_hash(body)
    if idem_key is not None:
        existing_id = idempotency.claim(session, caller, idem_key, "work_order", body_hash)
        if existing_id is not None:
            return Outcome(detail(session, existing_id), False, [])
    resident = _resident(session, body.resident_id)
    proxy = proxies.active_for(session, body.proxy_id, body.resident_id)
    kind = Kind(body.kind)
    if kind == Kind.emergency and resident is not None:
        joined = _join_open_emergency(session, caller, body, resident, idem_key, now, proxy)
        if joined is not None:
            return joined
    priority = Priority.P0 if kind == Kind.emergency else (body.priority or Priority.P2)
    # Without a client key, bookings still get a stable identifier for the hospital's side.
    details = _enrich(
        session,
        kind,
        dict(body.details),
        resident,
        hospital,
        idem_key or f"h-{body_hash}-{now.timestamp()}",
        Channel(body.channel),
    )
    order = WorkOrder(
        kind=kind,
        status=Status.new,
        priority=priority,
        channel=body.channel,
        resident_id=resident.id if resident else None,
        community=resident.community if resident else None,
        details=details,
        notes=body.notes,
        scheduled_at=body.scheduled_at
        or (datetime.fromisoformat(details["slot_start"]) if "slot_start" in details else None),
        assignee_team=body.assignee_team,
        related_order_id=details.get("about_order_id"),
        created_by=caller.id,
        proxy_id=proxy.id if proxy else None,
    )
    order.proxy = proxy
    order.photos = []  # none yet: the response need not ask
    sla.start_clock(order, policy.targets(kind, priority), now)
    try:
        session.add(order)
        said = proxies.on_behalf(proxy, "create") if proxy else None
        _history(order, caller, "created", now, None, Status.new, said)
        session.flush()
        proxies.record_use(session, caller, proxy, order, "create")
        new_events = [events.record(session, "order.created", order)]
        if kind == Kind.complaint:
            order.escalated_at = now
            _history(order, None, "escalated", now, reason="投诉自动升级至主管")
            new_events.append(
                events.record(
                    session, "order.escalated", order, to_role=Role.supervisor, reason="complaint"
                )
            )
        if kind == Kind.emergency:
            new_events.append(events.record(session, "emergency.raised", order, to_role=Role.agent))
        if idem_key is not None:
            idempotency.bind(session, caller, idem_key, order.id)
        session.flush()
        session.commit()
    except BaseException:
        session.rollback()
        if kind == Kind.medical_appointment and "appointment_id" in details:
            hospital.cancel(details["appointment_id"])
        raise
    return Outcome(order, True, new_events)


def transition(
    session: Session,
    caller: Caller,
    order_id: int,
    target: Status,
    reason: str | None,
    hospital: HospitalAdapter,
    policy: SlaPolicy,
    now: datetime,
    proxy_id: int | None = None,
) -> Outcome:
    order = get(session, order_id, lock=True)
    current = Status(order.status)
    if current == target:  # a retried request: already done
        return Outcome(order, False, [])
    if not caller.is_staff and target not in _SERVICE_TRANSITIONS:
        raise ApiError(
            403, "forbidden", "机器人和终端只能取消或重新打开工单，其余状态由工作人员处理。"
        )
    proxy = proxies.active_for(session, proxy_id, order.resident_id)
    state_machine.check(current, target)
    if target == Status.cancelled and order.kind == Kind.medical_appointment:
        appointment = order.details.get("appointment_id")
        if appointment:
            try:
                hospital.cancel(appointment)
            except HospitalUnavailable as exc:
                raise ApiError(
                    503, "hospital_unavailable", "医院预约系统暂时连不上，取消未完成，请稍后再试。"
                ) from exc
    sla.on_transition(
        order, current, target, policy.targets(Kind(order.kind), Priority(order.priority)), now
    )
    order.status = target
    if proxy is not None:
        verb = "cancel" if target == Status.cancelled else "update"
        reason = proxies.on_behalf(proxy, verb, reason)
        proxies.record_use(session, caller, proxy, order, verb)
    _history(order, caller, "status", now, current, target, reason)
    event = events.record(
        session, "order.status_changed", order, from_status=current, to_status=target
    )
    session.flush()
    session.commit()
    return Outcome(order, True, [event])


def assign(
    session: Session,
    caller: Caller,
    order_id: int,
    assignee_id: int | None,
    team: str | None,
    policy: SlaPolicy,
    now: datetime,
) -> Outcome:
    if not caller.is_staff:
        raise ApiError(403, "forbidden", "只有工作人员可以派单。")
    order = get(session, order_id, lock=True)
    if assignee_id is not None:
        staff = session.get(Principal, assignee_id)
        if staff is None or staff.role == Role.service or not staff.active:
            raise ApiError(422, "assignee_not_found", "找不到这位工作人员，或该账号已停用。")
    if order.assignee_id == assignee_id and order.assignee_team == (team or order.assignee_team):
        return Outcome(order, False, [])
    order.assignee_id = assignee_id
    if team is not None:
        order.assignee_team = team
    sla.touch(order, policy.targets(Kind(order.kind), Priority(order.priority)), now)
    _history(
        order,
        caller,
        "assigned",
        now,
        reason=f"处理人 {assignee_id or '-'}，班组 {order.assignee_team or '-'}",
    )
    event = events.record(
        session, "order.assigned", order, assignee_id=assignee_id, team=order.assignee_team
    )
    session.flush()
    session.commit()
    return Outcome(order, True, [event])


def schedule(
    session: Session, caller: Caller, order_id: int, at: datetime, now: datetime
) -> Outcome:
    """Staff agree a time with the resident (a visit, a service's start): `order.scheduled`,
    which the resident's channel tells them. The same time again changes nothing."""
    if not caller.is_staff:
        raise ApiError(403, "forbidden", "只有工作人员可以约定时间。")
    order = get(session, order_id, lock=True)
    if Status(order.status) not in sla.OPEN:
        raise ApiError(409, "order_closed", "这张工单已经办结或取消，不能再约定时间。")
    if order.scheduled_at == at:
        return Outcome(order, False, [])
    order.scheduled_at = at
    order.updated_at = now
    _history(order, caller, "scheduled", now, reason=f"约定时间：{say_moment(at)}")
    event = events.record(session, "order.scheduled", order, scheduled_at=at.isoformat())
    session.flush()
    session.commit()
    return Outcome(order, True, [event])


def add_note(
    session: Session, caller: Caller, order_id: int, text: str, policy: SlaPolicy, now: datetime
) -> WorkOrder:
    """A note on the order. Staff writing one is activity that restarts the idle timer; the
    bot writing down what a resident said again is not: it must not postpone the escalation
    that gets a person to look."""
    order = get(session, order_id, lock=True)
    if caller.is_staff:
        sla.touch(order, policy.targets(Kind(order.kind), Priority(order.priority)), now)
    else:
        order.updated_at = now
    _history(order, caller, "note", now, reason=text)
    session.commit()
    return order


def update_whereabouts(
    session: Session, caller: Caller, order_id: int, body: WhereaboutsIn, now: datetime
) -> Outcome:
    """Where the person in an open emergency is and how to reach them, added the moment they
    say it (staff see `emergency.updated` live). Saying the same again changes nothing."""
    order = get(session, order_id, lock=True)
    if order.kind != Kind.emergency:
        raise ApiError(409, "not_an_emergency", "只有紧急求助工单可以补充位置和电话。")
    if Status(order.status) not in sla.OPEN:
        raise ApiError(409, "order_closed", "这张紧急求助工单已经办结，请新建工单。")
    details = dict(order.details)
    given = body.dict(exclude_none=True)
    if "phone" in given:
        given["caller_phone"] = given.pop("phone")
    if given.get("at_home") and order.resident_id is not None:
        resident = session.get(Resident, order.resident_id)
        if resident is not None and resident.address:
            given.setdefault("address", resident.address)
    changed = sorted(k for k, v in given.items() if details.get(k) != v)
    if not changed:
        return Outcome(order, False, [])
    if given.get("at_home") is False and "address" not in given:
        details.pop("address", None)  # not at the address on file: staff must not go there
    details.update(given)
    order.details = details
    order.updated_at = now
    said = "，".join(
        {"address": "地址", "location": "位置", "at_home": "是否在家", "caller_phone": "电话"}[k]
        for k in changed
    )
    _history(order, caller, "whereabouts", now, reason=f"居民补充了{said}")
    event = events.record(session, "emergency.updated", order, to_role=Role.agent, fields=changed)
    session.flush()
    session.commit()
    return Outcome(order, True, [event])


def rate(
    session: Session,
    caller: Caller,
    order_id: int,
    score: int,
    comment: str | None,
    now: datetime,
    proxy_id: int | None = None,
) -> Outcome:
    """The resident's rating closes a resolved order; the same rating again is a no-op."""
    order = get(session, order_id, lock=True)
    if order.rating is not None:
        if order.rating == score and (order.rating_comment or None) == (comment or None):
            return Outcome(order, False, [])
        raise ApiError(409, "already_rated", "这张工单已经评价过了。")
    proxy = proxies.active_for(session, proxy_id, order.resident_id)
    if order.status != Status.resolved:
        raise ApiError(409, "not_resolved", "工单办结后才能评价。")
    order.rating, order.rating_comment, order.rated_at = score, comment, now
    order.status = Status.closed
    order.closed_at = order.updated_at = now
    order.paused_since = None
    said = f"评分 {score}"
    if proxy is not None:
        said = proxies.on_behalf(proxy, "rate", said)
        proxies.record_use(session, caller, proxy, order, "rate")
    _history(order, caller, "rated", now, Status.resolved, Status.closed, said)
    event = events.record(
        session,
        "order.status_changed",
        order,
        from_status=Status.resolved,
        to_status=Status.closed,
        rating=score,
    )
    session.flush()
    session.commit()
    return Outcome(order, True, [event])


def search(
    session: Session,
    *,
    status: list[Status] | None,
    kind: Kind | None,
    priority: Priority | None,
    channel: str | None,
    resident_id: int | None,
    community: str | None,
    assignee_id: int | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[WorkOrder], int]:
    conditions = []
    if status:
        conditions.append(WorkOrder.status.in_([s.value for s in status]))
    for column, value in (
        (WorkOrder.kind, kind),
        (WorkOrder.priority, priority),
        (WorkOrder.channel, channel),
        (WorkOrder.resident_id, resident_id),
        (WorkOrder.community, community),
        (WorkOrder.assignee_id, assignee_id),
    ):
        if value is not None:
            conditions.append(column == value)
    if created_from is not None:
        conditions.append(WorkOrder.created_at >= created_from)
    if created_to is not None:
        conditions.append(WorkOrder.created_at < created_to)
    total = session.execute(
        select(func.count()).select_from(WorkOrder).where(*conditions)
    ).scalar_one()
    rows = (
        session.execute(
            select(WorkOrder)
            .where(*conditions)
            .order_by(WorkOrder.id.desc())
            .limit(limit)
            .offset(offset)
        )
        .scalars()
        .all()
    )
    return list(rows), int(total)
