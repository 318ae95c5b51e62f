"""/calls: the record every hotline or terminal call leaves (caller, resident, transcript,
orders, outcome). Written by the telephony service (`calls:write`), read by staff
(`calls:read`); every staff read is audited, and only `?reveal=true` shows the caller number.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session

from workorders.api import views
from workorders.api.deps import reveal
from workorders.contract import CallOutcome, Channel
from workorders.db import get_read_session, get_session
from workorders.errors import ApiError
from workorders.schemas import CallCreate, CallDetailOut, CallPage, ErrorOut, valid_phone
from workorders.security import Caller, require
from workorders.services import audit, calls
from workorders.settings import get_settings

router = APIRouter(
    prefix="/calls",
    tags=["calls"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
RecordId = Path(..., ge=1, le=2**31 - 1, description="The record's id (not the SIP Call-ID)")


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        if value.tzinfo is None:
            raise ValueError(name)
        return value.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ApiError(
            422,
            "invalid_period",
            f"{name} 必须是带时区的时间，例如 2026-11-21T08:00:00+08:00（URL 里 + 写作 %2B）。",
        ) from None


@router.post(
    "",
    response_model=CallDetailOut,
    status_code=201,
    responses={
        200: {"model": CallDetailOut, "description": "The same call again (a retry)"},
        409: {"model": ErrorOut, "description": "The same call is being recorded right now"},
    },
)
def record_call(
    body: CallCreate,
    caller: Caller = Depends(require("calls:write")),
    session: Session = Depends(get_session),
) -> Response:
    """Record a finished call, once per `call_id`.

    Phone and ID numbers in the transcript (written or spoken, 幺三八…), the keypad digits and
    the transfer target are masked before they are stored; the caller number is stored
    encrypted. `order_ids` must exist; `audio_path` is refused (422 `audio_not_kept`) unless
    the deployment keeps recordings (`KEEP_CALL_AUDIO`).
    """
    row, created = calls.record(session, caller, body, get_settings().keep_call_audio)
    shown = reveal(caller, False, "call", row.id)
    session.commit()
    return views.respond(views.call_detail_out(row, shown), 201 if created else 200)


@router.get("", response_model=CallPage)
def list_calls(
    resident_id: int | None = Query(None, ge=1, le=2**31 - 1),
    outcome: CallOutcome | None = None,
    channel: Channel | None = None,
    phone: str | None = Query(None, max_length=32, description="Calls from this number"),
    started_from: datetime | None = Query(
        None, alias="from", description="Calls started at or after (with zone)"
    ),
    started_to: datetime | None = Query(
        None, alias="to", description="Calls started before (with zone)"
    ),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
    caller: Caller = Depends(require("calls:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    """Newest first. Items carry the caller masked and a one-line summary, not the transcript."""
    if phone:
        try:
            phone = valid_phone(phone)
        except ValueError as exc:
            raise ApiError(
                422, "invalid_phone", "电话号码格式不对，请输入11位手机号或带区号的固定电话。"
            ) from exc
    rows, total = calls.search(
        session,
        resident_id=resident_id,
        outcome=outcome,
        channel=channel,
        phone=phone,
        started_from=_aware(started_from, "from"),
        started_to=_aware(started_to, "to"),
        limit=limit,
        offset=offset,
    )
    if caller.is_staff:
        audit.record_now(caller, "list_calls", "call", None, f"{len(rows)} rows")
    page = CallPage(
        items=[views.call_out(c) for c in rows], total=total, limit=limit, offset=offset
    )
    return views.respond(page)


@router.get("/{record_id}", response_model=CallDetailOut, responses={404: {"model": ErrorOut}})
def read_call(
    record_id: int = RecordId,
    reveal_pii: bool = Query(
        False, alias="reveal", description="Staff: show the caller number (audited)"
    ),
    caller: Caller = Depends(require("calls:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    """The whole call with its transcript (numbers in it are stored masked: no reveal shows
    them). `reveal=true` shows the caller number, written to the audit log."""
    row = calls.get(session, record_id)
    if caller.is_staff:
        audit.record_now(caller, "read_call", "call", row.id)
    shown = reveal(caller, reveal_pii, "call", row.id)
    return views.respond(views.call_detail_out(row, shown))
