"""/work-orders: create, read, move through the life cycle, assign, note, rate."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import Field
from sqlalchemy.orm import Session

from workorders.api import deps, views
from workorders.api.deps import (
    Clock,
    announce,
    get_clock,
    get_hospital,
    get_policy,
    publish,
    reveal,
)
from workorders.contract import OPEN_STATUSES, Channel, Kind, Priority, Status
from workorders.crypto import mask_text
from workorders.db import get_read_session, get_session, read_connection, session_factory
from workorders.errors import ApiError
from workorders.hospital.base import HospitalAdapter
from workorders.models import EmergencyEscalation, WorkOrder
from workorders.schemas import (
    AssignIn,
    ErrorOut,
    NoteIn,
    NotificationResultIn,
    OrderCreate,
    OrderDetailOut,
    OrderPage,
    Out,
    RatingIn,
    ScheduleIn,
    TransitionIn,
    WhereaboutsIn,
)
from workorders.security import Caller, require, signed_in
from workorders.services import audit, escalation, orders, photos, proxies
from workorders.services.sla import SlaPolicy

router = APIRouter(
    prefix="/work-orders",
    tags=["work orders"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
_ONE = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}}


@router.post(
    "",
    response_model=OrderDetailOut,
    status_code=201,
    responses={
        200: {
            "model": OrderDetailOut,
            "description": "Replay of an idempotent create, or an emergency joined to the "
            "resident's open one (one emergency per resident at a time)",
        },
        409: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
)
def create_order(
    body: OrderCreate,
    key: str | None = Header(
        None,
        alias="Idempotency-Key",
        max_length=200,
        description="Same key and body: the same result, never a second resource",
    ),
    caller: Caller = Depends(signed_in),
) -> Response:
    """Create a work order. Medical appointments book their slot at the hospital first.
    `proxy_id`: a family member made it for the resident (代办); the proxy must be active and
    the resident's (else 403 proxy_not_active); shown as `requested_by` and on the history."""
    # The session, hospital, SLA policy and clock are taken here, not as dependencies: on
    # FastAPI 0.125 with pydantic 1 solving each one cost more than what it gives.
    with session_factory(True)() as session:  # open until the answer is built (lazy loads)
        outcome = orders.create(
            session, caller, body, key, deps.hospital(), deps.policy(), datetime.now(timezone.utc)
        )
        announce(outcome.events)
        out = views.order_detail_out(outcome.order, reveal(caller, False, "order", None))
        return views.respond(out, 201 if outcome.created else 200)


@router.get("", response_model=OrderPage)
def list_orders(
    status: list[Status] | None = Query(None),
    kind: Kind | None = None,
    priority: Priority | None = None,
    channel: Channel | None = None,
    resident_id: int | None = Query(None, ge=1, le=2**31 - 1),
    community: str | None = Query(None, max_length=64),
    assignee_id: int | None = Query(None, ge=1, le=2**31 - 1),
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
    proxy_id: int | None = Query(
        None,
        ge=1,
        le=2**31 - 1,
        description="A family member looks at the elder's orders (代办): their active proxy, "
        "with the elder's `resident_id`; the look is audited (else 403 proxy_not_active)",
    ),
    caller: Caller = Depends(require("orders:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    if proxy_id is not None:
        proxy = proxies.active_for(session, proxy_id, resident_id)
        assert proxy is not None
        audit.record_now(
            caller, "use_proxy", "proxy", proxy.id, f"status of resident {resident_id}"
        )
    rows, total = orders.search(
        session,
        status=status,
        kind=kind,
        priority=priority,
        channel=channel,
        resident_id=resident_id,
        community=community,
        assignee_id=assignee_id,
        created_from=created_from,
        created_to=created_to,
        limit=limit,
        offset=offset,
    )
    shown = reveal(caller, False, "order", None)
    page = OrderPage(
        items=[views.order_out(o, shown) for o in rows], total=total, limit=limit, offset=offset
    )
    return views.respond(page)


@router.get("/{order_id}", response_model=OrderDetailOut, responses=_ONE)
def read_order(
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    reveal_pii: bool = Query(
        False, alias="reveal", description="Staff: show personal data (audited)"
    ),
    caller: Caller = Depends(require("orders:read")),
) -> Response:
    # A connection, not a session (nor a dependency): the hot read pays for plain rows only.
    with read_connection() as connection:
        order = orders.detail_rows(connection, order_id)
    return views.respond(
        views.order_detail_out(order, reveal(caller, reveal_pii, "order", order.id))
    )


@router.post("/{order_id}/transitions", response_model=OrderDetailOut, responses=_ONE)
def change_status(
    body: TransitionIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:update")),
    session: Session = Depends(get_session),
    hospital: HospitalAdapter = Depends(get_hospital),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Move an order along its life cycle; asking for the status it already has is a no-op."""
    outcome = orders.transition(
        session, caller, order_id, body.to, body.reason, hospital, policy, clock(), body.proxy_id
    )
    announce(outcome.events)
    return views.respond(
        views.order_detail_out(outcome.order, reveal(caller, False, "order", None))
    )


@router.post("/{order_id}/assignment", response_model=OrderDetailOut, responses=_ONE)
def assign_order(
    body: AssignIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:update")),
    session: Session = Depends(get_session),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    outcome = orders.assign(session, caller, order_id, body.assignee_id, body.team, policy, clock())
    announce(outcome.events)
    return views.respond(views.order_detail_out(outcome.order, False))


@router.post("/{order_id}/schedule", response_model=OrderDetailOut, responses=_ONE)
def schedule_order(
    body: ScheduleIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:update")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Staff set the time agreed with the resident; the resident hears it on their channel
    (`order.scheduled`). Open orders only; the same time again is a no-op."""
    outcome = orders.schedule(session, caller, order_id, body.scheduled_at, clock())
    announce(outcome.events)
    return views.respond(views.order_detail_out(outcome.order, False))


@router.post("/{order_id}/notes", response_model=OrderDetailOut, responses=_ONE)
def add_note(
    body: NoteIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:update")),
    session: Session = Depends(get_session),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    order = orders.add_note(session, caller, order_id, body.text, policy, clock())
    return views.respond(views.order_detail_out(order, False))


@router.patch("/{order_id}/whereabouts", response_model=OrderDetailOut, responses=_ONE)
def update_whereabouts(
    body: WhereaboutsIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:update")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Where the person in an open emergency is and a number that reaches them, as they say
    it: each answer is on the order at once (`emergency.updated`). Idempotent: the same
    answer again changes nothing."""
    outcome = orders.update_whereabouts(session, caller, order_id, body, clock())
    announce(outcome.events)
    return views.respond(views.order_detail_out(outcome.order, False))


@router.post("/{order_id}/notifications", response_model=OrderDetailOut, responses=_ONE)
def record_notification(
    body: NotificationResultIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("notifications:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """A channel reports a family notification (the hotline's call, a WeChat alert); a
    confirmation stops escalation."""
    order, event_ids = escalation.record_notification(
        session, caller, order_id, body, f"notification:{body.event_id}", clock()
    )
    publish(event_ids)
    return views.respond(views.order_detail_out(order, False))


@router.post("/{order_id}/rating", response_model=OrderDetailOut, responses=_ONE)
def rate_order(
    body: RatingIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:rate")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """The resident's 1-5 rating of a resolved order; it closes the order."""
    outcome = orders.rate(
        session, caller, order_id, body.score, body.comment, clock(), body.proxy_id
    )
    announce(outcome.events)
    return views.respond(views.order_detail_out(outcome.order, False))


# What the order's history says about an emergency's escalation, in the order it happened.
_ESCALATION_ACTIONS = frozenset(
    {
        "family_notified",
        "callback_requested",
        "escalation_step",
        "notification_result",
        "escalation_stopped",
        "escalated",
    }
)


class EscalationStepOut(Out):
    at: datetime
    action: str = Field(
        ...,
        description="family_notified, callback_requested, escalation_step, notification_result, "
        "escalation_stopped, or escalated (the SLA's alert to the supervisors)",
    )
    text: str | None = Field(..., description="As on the order's history (numbers masked)")


class EscalationOut(Out):
    order_id: int
    chain: bool = Field(..., description="An escalation chain exists (SOS terminal emergencies)")
    running: bool = Field(
        ...,
        description="Still calling people: nobody on the staff accepted, the order is open and "
        "steps are left. False at once when staff accept",
    )
    step: int = Field(..., description="Steps of the chain taken so far")
    planned_steps: int
    next_to: Literal["contact", "supervisor"] | None = Field(
        ..., description="Who is called next, while running"
    )
    next_due_at: datetime | None = Field(..., description="When, while running")
    started_at: datetime | None
    acknowledged_at: datetime | None = Field(..., description="A person took it on")
    finished_at: datetime | None
    finish_reason: str | None = Field(
        ...,
        description="acknowledged, closed or exhausted, as the scheduler recorded it (at the "
        "time the next step was due)",
    )
    steps: list[EscalationStepOut]


def _escalation_out(order: WorkOrder, chain: EmergencyEscalation | None) -> EscalationOut:
    running = (
        chain is not None
        and chain.finished_at is None
        and order.first_response_at is None
        and Status(order.status) in OPEN_STATUSES
        and chain.step < len(chain.plan)
    )
    return EscalationOut(
        order_id=order.id,
        chain=chain is not None,
        running=running,
        step=chain.step if chain else 0,
        planned_steps=len(chain.plan) if chain else 0,
        next_to=chain.plan[chain.step]["to"] if running and chain else None,
        next_due_at=chain.next_due_at if running and chain else None,
        started_at=chain.started_at if chain else None,
        acknowledged_at=order.first_response_at or (chain.acknowledged_at if chain else None),
        finished_at=chain.finished_at if chain else None,
        finish_reason=chain.finish_reason if chain else None,
        steps=[
            EscalationStepOut(at=h.at, action=h.action, text=mask_text(h.reason))
            for h in order.history
            if h.action in _ESCALATION_ACTIONS
        ],
    )


@router.get("/{order_id}/escalation", response_model=EscalationOut, responses=_ONE)
def read_escalation(
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    _caller: Caller = Depends(require("orders:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    """An emergency's escalation so far (the staff alarm board shows it): who was told or
    called, whether the chain still runs, who is next. Any order answers; most have none."""
    order = orders.get(session, order_id)
    return views.respond(_escalation_out(order, session.get(EmergencyEscalation, order.id)))


_IMAGE = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/{order_id}/photos/{photo_id}",
    response_class=Response,
    responses={
        200: {
            "description": "The image as the resident sent it",
            "content": {"image/jpeg": _IMAGE, "image/png": _IMAGE},
        },
        404: {"model": ErrorOut},
    },
)
def read_photo(
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    photo_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("orders:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    """A photo the resident sent about the order (staff only; each read audited as a read of
    personal data: `read_photo`)."""
    if not caller.is_staff:
        raise ApiError(403, "forbidden", "居民的照片只有工作人员可以查看。")
    photo = photos.read(session, order_id, photo_id)
    audit.record_now(caller, "read_photo", "order", order_id, f"photo {photo_id}")
    return Response(
        photo.data,
        media_type=photo.content_type,
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline",
        },
    )
