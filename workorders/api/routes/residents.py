"""/residents: the people Linli serves, and the channel identities that find them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from workorders.api import views
from workorders.api.deps import Clock, get_clock, idempotency_key, publish, reveal
from workorders.contract import IdentityKind
from workorders.crypto import mask_text
from workorders.db import get_read_session, get_session
from workorders.errors import ApiError
from workorders.schemas import (
    ErrorOut,
    IdentityIn,
    ProxyOut,
    ProxyRequestIn,
    ResidentCreate,
    ResidentOut,
    ResidentPage,
    ResidentUpdate,
    valid_phone,
)
from workorders.security import Caller, require
from workorders.services import audit, idempotency, proxies, residents

router = APIRouter(
    prefix="/residents",
    tags=["residents"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
_ONE = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}}
ResidentId = Path(..., ge=1, le=2**31 - 1)


def _phone_or_422(value: str) -> str:
    try:
        return valid_phone(value)
    except ValueError as exc:
        raise ApiError(
            422, "invalid_phone", "电话号码格式不对，请输入11位手机号或带区号的固定电话。"
        ) from exc


def _purpose(raw: str | None) -> str | None:
    """One line of plain text for the audit log: no control characters, numbers masked."""
    if not raw:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in raw).split())
    return mask_text(text) or None


@router.post(
    "", response_model=ResidentOut, status_code=201, responses={**_ONE, 200: {"model": ResidentOut}}
)
def create_resident(
    body: ResidentCreate,
    response: Response,
    key: str | None = Depends(idempotency_key),
    caller: Caller = Depends(require("residents:write")),
    session: Session = Depends(get_session),
) -> ResidentOut:
    if key is not None:
        existing = idempotency.claim(
            session, caller, key, "resident", idempotency.request_hash(body.dict())
        )
        if existing is not None:
            response.status_code = 200
            return views.resident_out(
                residents.get(session, existing),
                reveal(caller, False, "resident", existing),
            )
    resident = residents.create(session, body)
    if key is not None:
        idempotency.bind(session, caller, key, resident.id)
    shown = reveal(caller, False, "resident", resident.id)
    session.commit()
    return views.resident_out(resident, shown)


@router.get("", response_model=ResidentPage)
def list_residents(
    name: str | None = Query(None, max_length=64),
    community: str | None = Query(None, max_length=64),
    phone: str | None = Query(None, max_length=32),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
    caller: Caller = Depends(require("residents:read")),
    session: Session = Depends(get_read_session),
) -> ResidentPage:
    rows, total = residents.search(
        session,
        name=name,
        community=community,
        phone=phone and _phone_or_422(phone),
        limit=limit,
        offset=offset,
    )
    if caller.is_staff:
        audit.record_now(caller, "list_residents", "resident", None, f"{len(rows)} rows")
    shown = reveal(caller, False, "resident", None)
    return ResidentPage(
        items=[views.resident_out(r, shown) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/lookup", response_model=ResidentOut, responses=_ONE)
def lookup_resident(
    kind: IdentityKind,
    value: str = Query(..., min_length=1, max_length=128),
    caller: Caller = Depends(require("residents:lookup")),
    session: Session = Depends(get_read_session),
) -> ResidentOut:
    """Find the resident behind a channel identity (openid, caller number, terminal id)."""
    if kind == IdentityKind.phone:
        value = _phone_or_422(value)
    resident = residents.lookup(session, kind, value)
    if resident is None:
        raise ApiError(404, "resident_not_found", "没有找到与该身份关联的居民，请先登记。")
    if caller.is_staff:
        audit.record_now(caller, "lookup_resident", "resident", resident.id, kind.value)
    shown = reveal(caller, False, "resident", resident.id)
    return views.resident_out(resident, shown)


@router.get("/{resident_id}", response_model=ResidentOut, responses=_ONE)
def read_resident(
    resident_id: int = ResidentId,
    reveal_pii: bool = Query(
        False, alias="reveal", description="Staff: show personal data (audited)"
    ),
    purpose: str | None = Query(
        None,
        max_length=100,
        description="Staff: why the personal data is shown (回访核实, 紧急联系 …); with "
        "`reveal=true` it is the audit entry's detail (numbers in it masked)",
    ),
    caller: Caller = Depends(require("residents:read")),
    session: Session = Depends(get_read_session),
) -> ResidentOut:
    resident = residents.get(session, resident_id)
    if caller.is_staff:
        audit.record_now(caller, "read_resident", "resident", resident.id)
    shown = reveal(caller, reveal_pii, "resident", resident.id, _purpose(purpose))
    return views.resident_out(resident, shown)


@router.patch("/{resident_id}", response_model=ResidentOut, responses=_ONE)
def update_resident(
    body: ResidentUpdate,
    resident_id: int = ResidentId,
    caller: Caller = Depends(require("residents:write")),
    session: Session = Depends(get_session),
) -> ResidentOut:
    resident = residents.update(session, residents.get(session, resident_id), body)
    if caller.is_staff:
        audit.record(session, caller, "update_resident", "resident", resident.id)
    shown = reveal(caller, False, "resident", resident.id)
    session.commit()
    return views.resident_out(resident, shown)


@router.post(
    "/{resident_id}/identities",
    response_model=ResidentOut,
    status_code=201,
    responses={**_ONE, 200: {"model": ResidentOut}},
)
def link_identity(
    body: IdentityIn,
    response: Response,
    resident_id: int = ResidentId,
    caller: Caller = Depends(require("residents:write")),
    session: Session = Depends(get_session),
) -> ResidentOut:
    """Link a channel identity; linking it again is a no-op (200)."""
    resident = residents.get(session, resident_id)
    _, created = residents.link_identity(session, resident, body)
    if not created:
        response.status_code = 200
    shown = reveal(caller, False, "resident", resident.id)
    session.commit()
    return views.resident_out(resident, shown)


@router.post(
    "/{resident_id}/proxies",
    response_model=ProxyOut,
    status_code=201,
    responses={**_ONE, 200: {"model": ProxyOut}},
)
def request_proxy(
    body: ProxyRequestIn,
    resident_id: int = ResidentId,
    _caller: Caller = Depends(require("proxies:request")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """A family member asks to act for the elder (代办): 201 `requested`, and the event
    `proxy.consent_requested` (`via: hotline` calls the elder; `via: console` when the elder
    has no phone on file: staff confirm). The same person again while requested or active:
    200 with that one."""
    outcome = proxies.request(session, residents.get(session, resident_id), body, clock())
    publish(outcome.event_ids)
    out = views.proxy_out(outcome.proxy, False, identity=True)  # the identity it was given
    return views.respond(out, 201 if outcome.changed else 200)


@router.get("/{resident_id}/proxies", response_model=list[ProxyOut], responses=_ONE)
def proxies_of_resident(
    resident_id: int = ResidentId,
    reveal_pii: bool = Query(
        False, alias="reveal", description="Staff: show the names and numbers (audited)"
    ),
    purpose: str | None = Query(None, max_length=100, description="Staff: why, with reveal"),
    caller: Caller = Depends(require("residents:read")),
    session: Session = Depends(get_read_session),
) -> list[ProxyOut]:
    """Staff: every family member who asked to act for the elder, newest first."""
    if not caller.is_staff:
        raise ApiError(403, "forbidden", "只有工作人员可以查看老人的代办家属。")
    resident = residents.get(session, resident_id)
    audit.record_now(caller, "list_proxies", "resident", resident.id)
    rows = proxies.of_resident(session, resident.id)
    # Whose data is shown in full is each proxy's: one reveal entry per proxy, with the purpose.
    shown = reveal_pii and caller.can("residents:pii")
    for proxy in rows if shown else ():
        reveal(caller, True, "proxy", proxy.id, _purpose(purpose))
    return [views.proxy_out(p, shown) for p in rows]
