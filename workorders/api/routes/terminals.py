"""/terminals: one-button SOS terminals. Staff provision them; devices send signed events.

Devices do not use bearer tokens: each signs its requests with its own secret (HMAC-SHA256,
workorders/signing.py). The device id travels in a header, not the path, so it never reaches
the access log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from workorders import signing
from workorders.api import views
from workorders.api.deps import (
    Clock,
    announce,
    get_clock,
    get_hospital,
    get_policy,
    publish,
    reveal,
)
from workorders.api.views import _mask_identity
from workorders.contract import IdentityKind
from workorders.db import get_read_session, get_session, session_factory
from workorders.errors import ApiError
from workorders.hospital.base import HospitalAdapter
from workorders.models import Terminal
from workorders.schemas import (
    ErrorOut,
    TerminalCreate,
    TerminalEventIn,
    TerminalEventOut,
    TerminalOut,
    TerminalPage,
    TerminalSecretOut,
    TerminalSipDigestOut,
)
from workorders.security import Caller, require
from workorders.services import terminals
from workorders.services.follow_ups import follow_ups
from workorders.services.sla import SlaPolicy
from workorders.settings import get_settings


def _finish_follow_ups() -> None:
    """At shutdown, what is queued runs now rather than after the sweep's grace period."""
    follow_ups().drain(5.0)


router = APIRouter(
    prefix="/terminals",
    tags=["terminals"],
    responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    on_shutdown=[_finish_follow_ups],
)
_STAFF = {403: {"model": ErrorOut}}
_ONE = {403: {"model": ErrorOut}, 404: {"model": ErrorOut}}
TerminalId = Path(..., ge=1, le=2**31 - 1)

SIGNING_HELP = {
    "scheme": signing.SCHEME,
    "method_and_path": f"POST {signing.EVENTS_PATH}",
    "headers": ", ".join(
        (
            signing.HEADER_TERMINAL,
            signing.HEADER_TIMESTAMP,
            signing.HEADER_NONCE,
            signing.HEADER_SIGNATURE,
        )
    ),
    "canonical": "scheme\\nMETHOD\\npath\\ndevice id\\ntimestamp\\nnonce\\nsha256(body) hex",
    "key": "this secret, ASCII",
}


def _heartbeat() -> timedelta:
    return timedelta(seconds=get_settings().terminal_heartbeat_seconds)


def terminal_out(terminal: Terminal, shown: bool, now: datetime) -> TerminalOut:
    heartbeat = _heartbeat()
    online = (
        terminal.last_seen_at is not None
        and terminal.silent_since is None
        and now - terminal.last_seen_at <= 2 * heartbeat
    )
    return TerminalOut(
        id=terminal.id,
        device_id=terminal.device_id
        if shown
        else _mask_identity(IdentityKind.terminal, terminal.device_id),
        resident_id=terminal.resident_id,
        active=terminal.active,
        online=online,
        heartbeat_seconds=int(heartbeat.total_seconds()),
        last_seen_at=terminal.last_seen_at,
        silent_since=terminal.silent_since,
        visit_order_id=terminal.visit_order_id,
        last_self_test_at=terminal.last_self_test_at,
        status=terminal.status,
        secret_rotated_at=terminal.secret_rotated_at,
        created_at=terminal.created_at,
        masked=not shown,
    )


def _with_secret(terminal: Terminal, secret: str, now: datetime) -> TerminalSecretOut:
    return TerminalSecretOut(
        **terminal_out(terminal, True, now).dict(), secret=secret, signing=SIGNING_HELP
    )


@router.post(
    "",
    response_model=TerminalSecretOut,
    status_code=201,
    responses={**_STAFF, 409: {"model": ErrorOut}},
)
def provision_terminal(
    body: TerminalCreate,
    caller: Caller = Depends(require("residents:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Staff register a terminal to a resident. The secret is shown in this answer only."""
    now = clock()
    terminal, secret = terminals.provision(session, caller, body, now)
    session.commit()
    return views.respond(_with_secret(terminal, secret, now), 201)


@router.get("", response_model=TerminalPage, responses=_STAFF)
def list_terminals(
    resident_id: int | None = Query(None, ge=1, le=2**31 - 1),
    silent: bool | None = Query(None, description="Only those flagged silent (or not)"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
    caller: Caller = Depends(require("residents:read")),
    session: Session = Depends(get_read_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    rows, total = terminals.search(
        session, resident_id=resident_id, silent=silent, limit=limit, offset=offset
    )
    now = clock()
    shown = reveal(caller, False, "terminal", None)
    page = TerminalPage(
        items=[terminal_out(t, shown, now) for t in rows], total=total, limit=limit, offset=offset
    )
    return views.respond(page)


@router.get("/sip-digest", response_model=TerminalSipDigestOut, responses=_ONE)
def read_sip_digest(
    terminal: str = Header(
        ..., alias=signing.HEADER_TERMINAL, description="Device id, as provisioned"
    ),
    realm: str = Query(..., min_length=1, max_length=64, regex=r"^[\x21-\x7e]+$"),
    caller: Caller = Depends(require("calls:write")),
    session: Session = Depends(get_session),
) -> Response:
    """The telephony service checks a terminal's SIP digest: HA1 of the terminal's derived
    SIP password for `realm` (the secret and the password never leave the API). Needs
    `calls:write`, which only the telephony service holds; every read is audited. The device
    id travels in a header, out of URLs and the access log."""
    if len(terminal) > 64:
        raise ApiError(404, "terminal_not_found", "该终端没有登记或已停用。")
    digest = terminals.sip_digest(session, caller, terminal, realm)
    session.commit()
    return views.respond(TerminalSipDigestOut(**dataclasses.asdict(digest)))


@router.get("/{terminal_id}", response_model=TerminalOut, responses=_ONE)
def read_terminal(
    terminal_id: int = TerminalId,
    reveal_pii: bool = Query(False, alias="reveal", description="Staff: show the device id"),
    caller: Caller = Depends(require("residents:read")),
    session: Session = Depends(get_read_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    terminal = terminals.get(session, terminal_id)
    shown = reveal(caller, reveal_pii, "terminal", terminal.id)
    return views.respond(terminal_out(terminal, shown, clock()))


@router.post("/{terminal_id}/secret", response_model=TerminalSecretOut, responses=_ONE)
def rotate_terminal_secret(
    terminal_id: int = TerminalId,
    caller: Caller = Depends(require("residents:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """A new secret for a terminal (replaced or lost device); the old one stops working."""
    now = clock()
    terminal, secret = terminals.rotate_secret(session, caller, terminal_id, now)
    session.commit()
    return views.respond(_with_secret(terminal, secret, now))


async def in_flight() -> AsyncIterator[None]:
    """A device request is being answered: SOS follow-ups wait (services/follow_ups.py)."""
    with follow_ups().alerting():
        yield


async def signed_terminal(
    request: Request,
    terminal: str | None = Header(
        None, alias=signing.HEADER_TERMINAL, description="Device id, as provisioned"
    ),
    timestamp: str | None = Header(
        None, alias=signing.HEADER_TIMESTAMP, description="Unix seconds; ±5 min of server time"
    ),
    nonce: str | None = Header(
        None, alias=signing.HEADER_NONCE, description="16-64 random characters, once only"
    ),
    signature: str | None = Header(
        None, alias=signing.HEADER_SIGNATURE, description="Hex HMAC-SHA256, see /terminals"
    ),
    clock: Clock = Depends(get_clock),
) -> terminals.VerifiedTerminal:
    """Runs before the body is validated: an unsigned request learns nothing but 401."""
    body = await request.body()
    return await run_in_threadpool(
        lambda: terminals.authenticate(
            session_factory(False),
            method=request.method,
            path=request.url.path,
            terminal_id=terminal,
            timestamp=timestamp,
            nonce=nonce,
            signature=signature,
            body=body,
            now=clock(),
        )
    )


@router.post(
    "/events",
    response_model=TerminalEventOut,
    status_code=200,
    responses={
        201: {"model": TerminalEventOut, "description": "An SOS that opened a new emergency"},
        409: {"model": ErrorOut, "description": "Replayed request, or the same event in flight"},
    },
)
def receive_event(
    event: TerminalEventIn,
    _alerting: None = Depends(in_flight),
    verified: terminals.VerifiedTerminal = Depends(signed_terminal),
    session: Session = Depends(get_session),
    hospital: HospitalAdapter = Depends(get_hospital),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    """A signed device event: `sos`, `heartbeat` or `self_test`.

    SOS: a P0 emergency with the resident's address and health notes and a staff alert
    (`emergency.raised`), then answered; right after (once no other press is being answered),
    family contacts are notified, a callback asked for and the escalation chain started. While
    an emergency is open, further presses join it. The same `event_id` again is answered as
    before (`duplicate`), never acted on twice.
    """
    now = clock()
    result = terminals.handle(session, verified, event, hospital, policy, now, announce)
    if result.follow_up is not None:
        follow_ups().submit(result.follow_up, publish)
    out = TerminalEventOut(
        event_id=event.event_id,
        type=event.type,
        status=result.status,
        order_id=result.order_id,
        message=result.message,
        heartbeat_seconds=int(_heartbeat().total_seconds()),
        server_time=now,
    )
    return views.respond(out, 201 if result.status == "created" else 200)
