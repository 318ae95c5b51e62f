"""/work-orders: create, read, move through the life cycle, assign, note, rate."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from workorders.api import views
from workorders.api.deps import (
    Clock,
    get_clock,
    get_hospital,
    get_policy,
    idempotency_key,
    publish,
    reveal,
)
from workorders.contract import Channel, Kind, Priority, Status
from workorders.db import get_read_session, get_session
from workorders.hospital.base import HospitalAdapter
from workorders.schemas import (
    AssignIn,
    ErrorOut,
    NoteIn,
    NotificationResultIn,
    OrderCreate,
    OrderDetailOut,
    OrderPage,
    RatingIn,
    TransitionIn,
    WhereaboutsIn,
)
from workorders.security import Caller, current_caller, require
from workorders.services import escalation, orders
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
    key: str | None = Depends(idempotency_key),
    caller: Caller = Depends(current_caller),
    session: Session = Depends(get_session),
    hospital: HospitalAdapter = Depends(get_hospital),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Create a work order. Medical appointments book their slot at the hospital first."""
    outcome = orders.create(session, caller, body, key, hospital, policy, clock())
    publish(outcome.event_ids)
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
    caller: Caller = Depends(require("orders:read")),
    session: Session = Depends(get_read_session),
) -> Response:
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
    session: Session = Depends(get_read_session),
) -> Response:
    order = orders.get(session, order_id)
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
        session, caller, order_id, body.to, body.reason, hospital, policy, clock()
    )
    publish(outcome.event_ids)
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
    publish(outcome.event_ids)
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
    publish(outcome.event_ids)
    return views.respond(views.order_detail_out(outcome.order, False))


@router.post("/{order_id}/notifications", response_model=OrderDetailOut, responses=_ONE)
def record_notification(
    body: NotificationResultIn,
    order_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("calls:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """The telephony service reports a notification call; a confirmation stops escalation."""
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
    outcome = orders.rate(session, caller, order_id, body.score, body.comment, clock())
    publish(outcome.event_ids)
    return views.respond(views.order_detail_out(outcome.order, False))
