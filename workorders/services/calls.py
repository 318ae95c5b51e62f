"""Call records: every hotline or terminal call leaves one, written once per SIP Call-ID.

Privacy: numbers inside the transcript, the keypad digits and the transfer target are masked
here, before anything is stored, whatever the client already did (defence in depth: the
transcript is kept for years, the numbers in it are never needed from it). The caller number
is kept in full but encrypted, with a keyed hash for look-ups, like every other phone field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workorders.contract import CallOutcome, Channel
from workorders.crypto import cipher, mask_phone, mask_text
from workorders.errors import ApiError
from workorders.models import CallRecord, Resident, WorkOrder
from workorders.schemas import CallCreate
from workorders.security import Caller
from workorders.services import idempotency


def get(session: Session, record_id: int) -> CallRecord:
    record = session.get(CallRecord, record_id)
    if record is None:
        raise ApiError(404, "call_not_found", f"找不到编号为 {record_id} 的通话记录。")
    return record


def caller_hash(number: str) -> str:
    """The same keyed hash as residents' phones, so one number finds both."""
    return cipher().lookup_hash("phone", number)


def record(
    session: Session, caller: Caller, body: CallCreate, keep_audio: bool
) -> tuple[CallRecord, bool]:
    """Store the call; returns (record, created). A retry of the same call returns the first
    record even if the configuration changed since, so that check comes after the look-up."""
    body_hash = idempotency.request_hash(body.dict())
    existing = _by_call_id(session, body.call_id)
    if existing is not None:
        return _same_or_refuse(existing, body_hash), False
    if body.audio_path is not None and not keep_audio:
        raise ApiError(
            422,
            "audio_not_kept",
            "本系统不保存通话录音（KEEP_CALL_AUDIO 未开启），请不要提交 audio_path。",
        )
    if body.resident_id is not None and session.get(Resident, body.resident_id) is None:
        raise ApiError(
            422, "resident_not_found", f"找不到编号为 {body.resident_id} 的居民，请先登记居民信息。"
        )
    if body.order_ids:
        found = set(
            session.execute(select(WorkOrder.id).where(WorkOrder.id.in_(body.order_ids))).scalars()
        )
        missing = [i for i in body.order_ids if i not in found]
        if missing:
            raise ApiError(
                422,
                "order_not_found",
                f"通话里提到的工单不存在：{'、'.join(map(str, missing))}。",
                {"missing": missing},
            )
    row = CallRecord(
        call_id=body.call_id,
        channel=body.channel,
        caller=body.caller,
        caller_hash=caller_hash(body.caller) if body.caller else None,
        resident_id=body.resident_id,
        # In UTC as read back, so the first answer and a retry's are the same.
        started_at=body.started_at.astimezone(timezone.utc),
        ended_at=body.ended_at.astimezone(timezone.utc),
        outcome=body.outcome,
        transcript=_masked_transcript(body),
        order_ids=body.order_ids,
        keypad=mask_keypad(body.keypad),
        transfer_target=mask_text(body.transfer_target),
        audio_path=body.audio_path,
        request_hash=body_hash,
        created_by=caller.id,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same call recorded concurrently: answer as a retry
        existing = _by_call_id(session, body.call_id)
        if existing is None:
            raise ApiError(409, "idempotency_retry", "同一通话正在记录中，请稍后重试。") from None
        return _same_or_refuse(existing, body_hash), False
    return row, True


_KEYED_NUMBER = re.compile(r"\d{7,}")


def mask_keypad(keys: str | None) -> str | None:
    """Seven or more digits keyed in a row are a number (a phone to call back, an ID), even
    run together with a menu choice (2 then 13812345678): masked as a phone number is."""
    if not keys:
        return None
    return _KEYED_NUMBER.sub(lambda m: mask_phone(m.group()) or "", mask_text(keys) or "")


def _by_call_id(session: Session, call_id: str) -> CallRecord | None:
    return session.execute(
        select(CallRecord)
        .where(CallRecord.call_id == call_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _same_or_refuse(existing: CallRecord, body_hash: str) -> CallRecord:
    if existing.request_hash != body_hash:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "这通电话（call_id）已经记录过，内容与这次不同；新的通话请用新的 call_id。",
            {"call_id": existing.call_id, "record_id": existing.id},
        )
    return existing


def _masked_transcript(body: CallCreate) -> list[dict[str, Any]]:
    # Through JSON, so times are stored in their ISO form.
    turns = json.loads(body.json(include={"transcript"}))["transcript"]
    for turn in turns:
        turn["text"] = mask_text(turn["text"])
    return turns


def search(
    session: Session,
    *,
    resident_id: int | None,
    outcome: CallOutcome | None,
    channel: Channel | None,
    phone: str | None,
    started_from: datetime | None,
    started_to: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[CallRecord], int]:
    conditions = []
    for column, value in (
        (CallRecord.resident_id, resident_id),
        (CallRecord.outcome, outcome),
        (CallRecord.channel, channel),
    ):
        if value is not None:
            conditions.append(column == value)
    if phone:
        conditions.append(CallRecord.caller_hash.in_(cipher().lookup_hashes("phone", phone)))
    if started_from is not None:
        conditions.append(CallRecord.started_at >= started_from)
    if started_to is not None:
        conditions.append(CallRecord.started_at < started_to)
    total = session.execute(
        select(func.count()).select_from(CallRecord).where(*conditions)
    ).scalar_one()
    rows = (
        session.execute(
            select(CallRecord)
            .where(*conditions)
            .order_by(CallRecord.started_at.desc(), CallRecord.id.desc())
            .limit(limit)
            .offset(offset)
        )
        .scalars()
        .all()
    )
    return list(rows), int(total)
