"""Photos residents send (WeChat): which order they belong to, kept encrypted, read by staff.

The rule is the API's, not the channel's: a photo belongs to the conversation's resident's most
recently created repair order that is still open and was created at most
`PHOTO_ATTACH_MINUTES` ago ("厨房水管漏水了", then a picture of the pipe). Nothing matches (no
resident known yet, no recent repair): 404 `no_recent_repair`, and nothing is kept. The same
bytes again (WeChat retries a push) answer the photo already kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, undefer

from workorders.contract import Kind
from workorders.errors import ApiError
from workorders.models import Conversation, OrderHistory, OrderPhoto, Resident, WorkOrder
from workorders.security import Caller
from workorders.services import conversations, events, orders, sla

MAX_BYTES = 2 * 1024 * 1024
# What the header may say, and the first bytes the image must then start with.
MAGIC = {
    "image/jpeg": b"\xff\xd8\xff",
    "image/png": b"\x89PNG\r\n\x1a\n",
}
HISTORY_TEXT = "居民通过微信发来一张照片"
NO_RECENT_REPAIR = "没有找到您最近的报修，照片没有保存。如需报修，请先说一下哪里坏了。"


def kept_text(order_id: int) -> str:
    return f"照片已附在报修工单 #{order_id} 上"


@dataclass
class Attached:
    photo: OrderPhoto
    created: bool
    event_ids: list[int]


def media_type(header: str | None) -> str:
    """The declared type, or 415 for anything but a JPEG or PNG."""
    declared = (header or "").split(";", 1)[0].strip().lower()
    if declared not in MAGIC:
        raise ApiError(415, "photo_type", "只能接收 JPEG 或 PNG 格式的照片。")
    return declared


def check_bytes(declared: str, data: bytes) -> None:
    """The bytes must be what the header says they are (magic numbers, not only a header)."""
    if not data.startswith(MAGIC[declared]):
        raise ApiError(415, "photo_type", f"照片的内容不是 {declared} 格式，没有保存。")


def too_large() -> ApiError:
    return ApiError(413, "photo_too_large", "照片太大了，最大 2 MB。")


def _no_recent_repair() -> ApiError:
    return ApiError(404, "no_recent_repair", NO_RECENT_REPAIR)


def _kept_before(
    session: Session, resident_id: int, digest: str, since: datetime
) -> OrderPhoto | None:
    """The same bytes kept for this resident within the window: a retry of that push."""
    return session.execute(
        select(OrderPhoto)
        .join(WorkOrder, WorkOrder.id == OrderPhoto.order_id)
        .where(
            WorkOrder.resident_id == resident_id,
            OrderPhoto.sha256 == digest,
            OrderPhoto.created_at >= since,
        )
        .order_by(OrderPhoto.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def recent_repair(session: Session, resident_id: int, since: datetime) -> WorkOrder | None:
    """The resident's most recently created repair order still open, created since `since`."""
    return session.execute(
        select(WorkOrder)
        .where(
            WorkOrder.resident_id == resident_id,
            WorkOrder.kind == Kind.repair,
            WorkOrder.status.in_([s.value for s in sla.OPEN]),
            WorkOrder.created_at >= since,
        )
        .order_by(WorkOrder.created_at.desc(), WorkOrder.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def attach(
    session: Session,
    caller: Caller,
    key: str,
    content_type: str,
    data: bytes,
    now: datetime,
    window: timedelta,
) -> Attached:
    conversation = session.execute(
        select(Conversation).where(Conversation.key == key)
    ).scalar_one_or_none()
    if conversation is None or conversation.resident_id is None:
        raise _no_recent_repair()
    resident_id = conversation.resident_id
    # One photo at a time per resident: a retry racing its first attempt waits, then finds it.
    session.execute(
        select(Resident.id).where(Resident.id == resident_id).with_for_update(key_share=True)
    )
    digest = hashlib.sha256(data).hexdigest()
    since = now - window
    seen = _kept_before(session, resident_id, digest, since)
    if seen is not None:
        session.commit()
        return Attached(seen, False, [])
    order = recent_repair(session, resident_id, since)
    if order is None:
        raise _no_recent_repair()
    photo = OrderPhoto(
        order_id=order.id,
        content_type=content_type,
        data=data,
        size=len(data),
        sha256=digest,
        source=conversation.channel,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(photo)
            session.flush()
    except IntegrityError:  # the same bytes on this order, kept by a concurrent request
        session.rollback()
        kept = session.execute(
            select(OrderPhoto).where(OrderPhoto.order_id == order.id, OrderPhoto.sha256 == digest)
        ).scalar_one()
        return Attached(kept, False, [])
    session.add(
        OrderHistory(
            order_id=order.id,
            at=now,
            actor_id=caller.id,
            action="photo",
            reason=HISTORY_TEXT,
        )
    )
    order.updated_at = now
    order_event = events.record(session, "order.photo_added", order, photo_id=photo.id)
    # Said in the conversation as the gateway's own messages are (masked, encrypted); staff
    # watching a conversation handed over to them see it live.
    message = conversations._say(session, conversation, "system", kept_text(order.id), now)
    event_ids = [order_event.id]
    handoff = conversations.open_handoff(session, conversation)
    if handoff is not None:
        said = events.record_conversation(
            session, "conversation.message", conversation, handoff, message_id=message.id
        )
        session.flush()
        event_ids.append(said.id)
    session.commit()
    return Attached(photo, True, event_ids)


def read(session: Session, order_id: int, photo_id: int) -> OrderPhoto:
    photo = session.execute(
        select(OrderPhoto)
        .options(undefer(OrderPhoto.data))
        .where(OrderPhoto.id == photo_id, OrderPhoto.order_id == order_id)
    ).scalar_one_or_none()
    if photo is None:
        orders.get(session, order_id)  # 404 order_not_found first
        raise ApiError(404, "photo_not_found", f"工单 #{order_id} 没有编号为 {photo_id} 的照片。")
    return photo
