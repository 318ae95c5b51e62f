"""/proxies: family members acting for an elder (代办) and the elder's consent.

Asked for by the dialogue (`POST /residents/{id}/proxies`, in routes/residents.py), answered
on the hotline or by staff in the console, withdrawn by either; orders name the proxy they
were made through (`proxy_id`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from workorders.api import views
from workorders.api.deps import Clock, get_clock, publish, reveal
from workorders.api.routes.residents import _purpose
from workorders.contract import IdentityKind
from workorders.db import get_read_session, get_session
from workorders.errors import ApiError
from workorders.schemas import ConsentIn, ErrorOut, ProxyBriefOut, ProxyOut, WithdrawIn
from workorders.security import Caller, current_caller, require
from workorders.services import audit, proxies

router = APIRouter(
    prefix="/proxies",
    tags=["proxies"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
_ONE = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}}
ProxyId = Path(..., ge=1, le=2**31 - 1)


@router.get("", response_model=list[ProxyBriefOut])
def proxies_of(
    kind: IdentityKind,
    value: str = Query(..., min_length=1, max_length=128),
    _caller: Caller = Depends(require("proxies:request")),
    session: Session = Depends(get_read_session),
) -> list[ProxyBriefOut]:
    """For whom this person (a WeChat openid) may act, or asked to: newest first."""
    rows = proxies.of_identity(session, kind.value, value.strip())
    return [views.proxy_brief_out(p) for p in rows]


@router.get("/{proxy_id}", response_model=ProxyOut, responses=_ONE)
def read_proxy(
    proxy_id: int = ProxyId,
    reveal_pii: bool = Query(
        False, alias="reveal", description="Staff: show the names and number (audited)"
    ),
    purpose: str | None = Query(None, max_length=100, description="Staff: why, with reveal"),
    caller: Caller = Depends(current_caller),
    session: Session = Depends(get_read_session),
) -> Response:
    if not (caller.is_staff or caller.can("proxies:request") or caller.can("proxies:consent")):
        raise ApiError(403, "forbidden", "您的账号不能查看代办授权。")
    proxy = proxies.get(session, proxy_id)
    shown = False
    if caller.is_staff:
        audit.record_now(caller, "read_proxy", "proxy", proxy.id)
        shown = reveal(caller, reveal_pii, "proxy", proxy.id, _purpose(purpose))
    writes_to_them = not caller.is_staff and caller.can("proxies:request")
    return views.respond(views.proxy_out(proxy, shown, identity=writes_to_them))


@router.post("/{proxy_id}/consent", response_model=ProxyOut, responses=_ONE)
def decide(
    body: ConsentIn,
    proxy_id: int = ProxyId,
    caller: Caller = Depends(current_caller),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """The elder's answer: `via: hotline` (svc-hotline, proxies:consent: what they pressed) or
    `via: console` (staff, who asked them by phone). requested → active or refused; the same
    answer again is a no-op; a refused or withdrawn one → 409 proxy_closed; refusing an active
    one → 409 proxy_active (withdraw it instead)."""
    outcome = proxies.decide(
        session, caller, proxy_id, body.granted, body.via, body.event_id, clock()
    )
    publish(outcome.event_ids)
    return views.respond(views.proxy_out(outcome.proxy, False))


@router.post("/{proxy_id}/withdraw", response_model=ProxyOut, responses=_ONE)
def withdraw(
    body: WithdrawIn,
    proxy_id: int = ProxyId,
    caller: Caller = Depends(current_caller),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """The elder takes consent back (`via: console`: staff; `via: hotline`: proxies:consent).
    Again: a no-op; a refused one → 409 proxy_closed."""
    outcome = proxies.withdraw(session, caller, proxy_id, body.via, clock())
    publish(outcome.event_ids)
    return views.respond(views.proxy_out(outcome.proxy, False))
