"""Written conversations and their hand-over to staff (the takeover state).

The gateway records every message here and asks, with each resident message, whether the bot
may answer: not while a hand-over is open (waiting for staff, or claimed by one of them). The
state lives here, not in Rasa's tracker, so it survives session expiry and a Rasa restart.
One person owns a claimed conversation; two claiming at once is decided by one conditional
UPDATE. Every message is stored masked and encrypted; a staff reply keeps its exact words only
until the channel has delivered them, or has given up on them (staff call the resident).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from workorders.contract import Channel, Role
from workorders.crypto import mask_text
from workorders.errors import ApiError
from workorders.models import (
    Conversation,
    ConversationMessage,
    Handoff,
    Principal,
    Resident,
    WorkOrder,
)
from workorders.office_hours import OfficeHours
from workorders.schemas import HandoffIn, MessagesIn, ReachIn, UndeliverableIn
from workorders.security import Caller
from workorders.services import events, orders
from workorders.services.sla import SlaPolicy

REASON_LABELS = {
    "request_human": "居民要求人工服务",
    "not_understood": "助手多次没听懂",
    "complaint": "居民投诉",
}
# Why WeChat refused a staff reply (its errcode), in the words staff read; the channel only
# passes the code on.
REFUSALS = {
    45015: "居民超过48小时没有发消息，微信不让再发客服消息",
    45047: "这次能发的客服消息条数用完了",
    43004: "居民已经取消关注公众号",
    40003: "居民的微信号无效",
}


def refusal(code: int) -> str:
    return REFUSALS.get(code, f"微信拒收（错误码 {code}）")


@dataclass
class Recorded:
    conversation: Conversation
    handoff: Handoff | None
    last_ended: Handoff | None
    message_ids: list[int]
    event_ids: list[int] = field(default_factory=list)


def state_of(handoff: Handoff | None) -> str:
    if handoff is None:
        return "bot"
    return "waiting" if handoff.claimed_by is None else "staff"


def get(session: Session, key: str, *, lock: bool = False) -> Conversation:
    query = select(Conversation).where(Conversation.key == key)
    if lock:
        query = query.with_for_update()
    conversation = session.execute(query).scalar_one_or_none()
    if conversation is None:
        raise ApiError(404, "conversation_not_found", f"找不到会话 {key}。")
    return conversation


def open_handoff(session: Session, conversation: Conversation) -> Handoff | None:
    if conversation.open_handoff_id is None:
        return None
    return session.get(Handoff, conversation.open_handoff_id)


def last_ended(session: Session, conversation: Conversation) -> Handoff | None:
    return session.execute(
        select(Handoff)
        .where(Handoff.conversation_id == conversation.id, Handoff.ended_at.is_not(None))
        .order_by(Handoff.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _upsert(
    session: Session,
    key: str,
    channel: Channel,
    resident_id: int | None,
    now: datetime,
    can_push: bool | None = None,
) -> Conversation:
    """The conversation, created on its first message; locked for the rest of the request."""
    if resident_id is not None and session.get(Resident, resident_id) is None:
        raise ApiError(422, "resident_not_found", f"找不到编号为 {resident_id} 的居民。")
    for _ in range(2):
        found = session.execute(
            select(Conversation).where(Conversation.key == key).with_for_update()
        ).scalar_one_or_none()
        if found is not None:
            if found.channel != channel:
                raise ApiError(
                    409,
                    "channel_mismatch",
                    f"会话 {key} 属于“{found.channel}”渠道，不能从“{channel}”写入。",
                )
            if resident_id and not found.resident_id:
                found.resident_id = resident_id
            if can_push is not None:
                found.can_push = can_push
            return found
        conversation = Conversation(
            key=key,
            channel=channel,
            can_push=bool(can_push),
            resident_id=resident_id,
            created_at=now,
            last_message_at=now,
        )
        try:
            with session.begin_nested():
                session.add(conversation)
                session.flush()
        except IntegrityError:  # created by a concurrent first message: take that one
            continue
        return conversation
    raise ApiError(409, "conversation_busy", "会话正在被同时写入，请重试。")


def _say(
    session: Session,
    conversation: Conversation,
    role: str,
    text: str,
    now: datetime,
    *,
    author: Caller | None = None,
    client_id: str | None = None,
    delivery: str | None = None,
) -> ConversationMessage:
    message = ConversationMessage(
        conversation_id=conversation.id,
        at=now,
        role=role,
        author_id=author.id if author else None,
        text=mask_text(text) or "",
        client_id=client_id,
        delivery=delivery,
    )
    session.add(message)
    conversation.last_message_at = now
    session.flush()
    return message


def record(
    session: Session, key: str, body: MessagesIn, now: datetime, *, announce: bool = True
) -> Recorded:
    """Keep what the resident or the bot said; say whether the bot may answer."""
    conversation = _upsert(session, key, body.channel, body.resident_id, now, body.can_push)
    handoff = open_handoff(session, conversation)
    ids: list[int] = []
    event_ids: list[int] = []
    for message in body.messages:
        if message.client_id:
            seen = session.execute(
                select(ConversationMessage.id).where(
                    ConversationMessage.conversation_id == conversation.id,
                    ConversationMessage.client_id == message.client_id,
                )
            ).scalar_one_or_none()
            if seen is not None:
                ids.append(seen)
                continue
        said = _say(
            session, conversation, message.role, message.text, now, client_id=message.client_id
        )
        ids.append(said.id)
        if handoff is not None and announce:
            # Staff watch a conversation that waits for them or that they own, live.
            event = events.record_conversation(
                session, "conversation.message", conversation, handoff, message_id=said.id
            )
            session.flush()
            event_ids.append(event.id)
    ended = last_ended(session, conversation)
    session.commit()
    return Recorded(conversation, handoff, ended, ids, event_ids)


def first_alert(now: datetime, hours: OfficeHours, alert_after: timedelta) -> datetime:
    """Waiting counts from when staff are at work: now, or the next opening."""
    return hours.next_opening(now) + alert_after


def hand_over(
    session: Session,
    key: str,
    body: HandoffIn,
    now: datetime,
    hours: OfficeHours,
    alert_after: timedelta,
) -> tuple[Handoff, bool, list[int]]:
    """Open the takeover: from now on the bot keeps quiet. Asked again: the open one."""
    if body.order_id is not None and session.get(WorkOrder, body.order_id) is None:
        raise ApiError(422, "order_not_found", f"找不到编号为 {body.order_id} 的工单。")
    conversation = _upsert(session, key, body.channel, body.resident_id, now)
    handoff = open_handoff(session, conversation)
    if handoff is not None:
        if body.order_id and handoff.order_id is None:
            handoff.order_id = body.order_id
        session.commit()
        return handoff, False, []
    handoff = Handoff(
        conversation_id=conversation.id,
        reason=body.reason,
        summary=mask_text(body.summary),
        order_id=body.order_id,
        opened_at=now,
        alerts_sent=0,
        next_alert_at=first_alert(now, hours, alert_after),
    )
    session.add(handoff)
    session.flush()
    conversation.open_handoff_id = handoff.id
    _say(session, conversation, "system", f"转人工：{REASON_LABELS[body.reason]}", now)
    event = events.record_conversation(session, "conversation.waiting", conversation, handoff)
    session.flush()
    event_id = event.id
    session.commit()
    return handoff, True, [event_id]


def _open_or_refuse(session: Session, conversation: Conversation) -> Handoff:
    handoff = open_handoff(session, conversation)
    if handoff is None:
        raise ApiError(409, "no_handoff", "这个会话现在由助手接待，没有等待人工处理的请求。")
    return handoff


def _name(session: Session, principal_id: int | None) -> str:
    if principal_id is None:
        return ""
    principal = session.get(Principal, principal_id)
    return principal.display_name if principal else str(principal_id)


def claim(session: Session, caller: Caller, key: str, now: datetime) -> tuple[Handoff, list[int]]:
    """One owner at a time: of two staff claiming at once, the first UPDATE wins."""
    conversation = get(session, key)
    handoff = _open_or_refuse(session, conversation)
    won = session.execute(
        update(Handoff)
        .where(Handoff.id == handoff.id, Handoff.claimed_by.is_(None), Handoff.ended_at.is_(None))
        .values(claimed_by=caller.id, claimed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(handoff)
    if not won:
        if handoff.claimed_by == caller.id:
            session.commit()
            return handoff, []
        session.rollback()
        if handoff.ended_at is not None:
            raise ApiError(409, "no_handoff", "这个会话已经处理完毕。")
        raise ApiError(
            409,
            "already_claimed",
            f"这个会话已由{_name(session, handoff.claimed_by)}接手。",
            {"claimed_by": handoff.claimed_by},
        )
    _say(session, conversation, "system", f"{_name(session, caller.id)} 接手了会话", now)
    event = events.record_conversation(
        session, "conversation.claimed", conversation, handoff, claimed_by=caller.id
    )
    session.flush()
    event_id = event.id
    session.commit()
    return handoff, [event_id]


def _owned(session: Session, caller: Caller, conversation: Conversation) -> Handoff:
    handoff = _open_or_refuse(session, conversation)
    if handoff.claimed_by != caller.id:
        owner = _name(session, handoff.claimed_by)
        raise ApiError(
            409,
            "not_owner",
            f"这个会话由{owner}处理，请联系对方。" if owner else "请先接手这个会话。",
            {"claimed_by": handoff.claimed_by},
        )
    return handoff


def reply(
    session: Session, caller: Caller, key: str, text: str, now: datetime
) -> tuple[ConversationMessage, list[int]]:
    conversation = get(session, key, lock=True)
    handoff = _owned(session, caller, conversation)
    if not conversation.can_push:
        raise ApiError(
            409,
            "cannot_push",
            "这个渠道不能把文字送到居民那里，请按回拨工单给居民打电话。",
            {"order_id": handoff.order_id},
        )
    message = _say(session, conversation, "staff", text, now, author=caller, delivery=text)
    event = events.record_conversation(
        session, "conversation.reply", conversation, handoff, message_id=message.id
    )
    session.flush()
    event_id = event.id
    session.commit()
    return message, [event_id]


def end(
    session: Session, caller: Caller, key: str, kind: str, text: str | None, now: datetime
) -> tuple[Handoff, list[int]]:
    """Hand back to the bot or close with an outcome; the owner does, or a supervisor.

    An unclaimed hand-over is claimed by whoever ends it (they dealt with it, e.g. by phone).
    """
    conversation = get(session, key, lock=True)
    handoff = _open_or_refuse(session, conversation)
    if handoff.claimed_by is None:
        handoff.claimed_by, handoff.claimed_at = caller.id, now
    elif handoff.claimed_by != caller.id and caller.role == Role.agent:
        _owned(session, caller, conversation)
    handoff.ended_at, handoff.ended_by, handoff.end_kind = now, caller.id, kind
    handoff.outcome = text
    handoff.next_alert_at = None
    conversation.open_handoff_id = None
    who = _name(session, caller.id)
    if kind == "handed_back":
        note = f"{who} 把会话交回助手" + (f"：{text}" if text else "")
    else:
        note = f"{who} 结束了会话：{text}"
    _say(session, conversation, "system", note, now)
    event = events.record_conversation(
        session, f"conversation.{kind}", conversation, handoff, ended_by=caller.id
    )
    session.flush()
    event_id = event.id
    session.commit()
    return handoff, [event_id]


def outbound(session: Session, key: str) -> list[ConversationMessage]:
    """Staff replies the channel has not delivered yet, oldest first."""
    conversation = get(session, key)
    return list(
        session.execute(
            select(ConversationMessage)
            .where(
                ConversationMessage.conversation_id == conversation.id,
                ConversationMessage.delivery.is_not(None),
            )
            .order_by(ConversationMessage.id)
        ).scalars()
    )


def _staff_reply(
    session: Session, key: str, conversation: Conversation, message_id: int
) -> ConversationMessage:
    message = session.get(ConversationMessage, message_id)
    if message is None or message.conversation_id != conversation.id or message.role != "staff":
        raise ApiError(404, "message_not_found", f"会话 {key} 里没有编号为 {message_id} 的回复。")
    return message


def delivered(session: Session, key: str, message_id: int, now: datetime) -> ConversationMessage:
    """The channel delivered it: only the masked record stays. Said twice: a no-op."""
    conversation = get(session, key)
    message = _staff_reply(session, key, conversation, message_id)
    if message.delivered_at is None:
        message.delivered_at, message.delivery = now, None
        session.commit()
    return message


def set_reach(session: Session, key: str, body: ReachIn) -> list[int]:
    """The channel's latest word on how far a reply reaches; staff watching are told."""
    conversation = get(session, key, lock=True)
    reach = (body.open_until, body.sends_left)
    if (conversation.reach_until, conversation.reach_left) == reach:
        session.commit()
        return []
    conversation.reach_until, conversation.reach_left = reach
    handoff = open_handoff(session, conversation)
    event_ids: list[int] = []
    if handoff is not None:
        event = events.record_conversation(session, "conversation.reach", conversation, handoff)
        session.flush()
        event_ids.append(event.id)
    session.commit()
    return event_ids


def _handoff_at(session: Session, conversation: Conversation, at: datetime) -> Handoff | None:
    """The hand-over open at `at` (a staff reply is only written while one is)."""
    return session.execute(
        select(Handoff)
        .where(Handoff.conversation_id == conversation.id, Handoff.opened_at <= at)
        .order_by(Handoff.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def undeliverable(
    session: Session,
    caller: Caller,
    key: str,
    message_id: int,
    body: UndeliverableIn,
    policy: SlaPolicy,
    now: datetime,
) -> list[int]:
    """The channel could not deliver a staff reply. `subscribe`: it stays pending until the
    resident writes again; `callback`: given up (its exact words forgotten, never marked
    delivered) and the callback order told to call. Said again: a no-op; `callback` may
    follow `subscribe` (held, then failed for good), not the other way round."""
    conversation = get(session, key, lock=True)
    message = _staff_reply(session, key, conversation, message_id)
    if message.delivered_at is not None:
        raise ApiError(409, "already_delivered", "这条回复已经送到居民那里了。")
    before = message.undelivered_fallback
    if before == body.fallback:
        session.commit()
        return []
    if before == "callback":
        raise ApiError(
            409,
            "given_up",
            "这条回复已经不再发送，改为打电话联系居民。",
            {"fallback": before},
        )
    reason = refusal(body.code)
    handoff = _handoff_at(session, conversation, message.at)
    order_id = handoff.order_id if handoff else None
    message.undelivered_code, message.undelivered_fallback = body.code, body.fallback
    if body.fallback == "subscribe":
        note = (
            f"这条回复暂时发不到居民的微信（{reason}）。"
            "已发订阅消息提醒居民，居民回消息后会自动送达。"
        )
    else:
        message.delivery = None
        call = "请按回拨工单打电话联系居民。" if order_id else "请打电话联系居民。"
        note = f"这条回复没能发到居民的微信（{reason}）。{call}"
    _say(session, conversation, "system", note, now)
    event = events.record_conversation(
        session,
        "conversation.undeliverable",
        conversation,
        handoff,
        message_id=message.id,
        code=body.code,
        fallback=body.fallback,
    )
    session.flush()
    event_id = event.id
    if body.fallback == "callback" and order_id is not None:
        orders.add_note(session, caller, order_id, note, policy, now)  # commits it all
    else:
        session.commit()
    return [event_id]


def search(
    session: Session, state: str, limit: int, offset: int, resident_id: int | None = None
) -> tuple[list[tuple[Conversation, Handoff | None]], int]:
    """Waiting ones first (longest waiting at the top), then the ones staff own, then the rest.
    `resident_id`: one resident's conversations only (the console's resident profile)."""
    query = select(Conversation, Handoff).outerjoin(
        Handoff, Handoff.id == Conversation.open_handoff_id
    )
    if resident_id is not None:
        query = query.where(Conversation.resident_id == resident_id)
    if state == "waiting":
        query = query.where(Handoff.id.is_not(None), Handoff.claimed_by.is_(None))
    elif state == "staff":
        query = query.where(Handoff.claimed_by.is_not(None))
    elif state == "open":
        query = query.where(Handoff.id.is_not(None))
    elif state == "bot":
        query = query.where(Conversation.open_handoff_id.is_(None))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(
        query.order_by(
            Handoff.claimed_by.is_not(None),
            Handoff.opened_at.is_(None),
            Handoff.opened_at,
            Conversation.last_message_at.desc(),
        )
        .limit(limit)
        .offset(offset)
    ).all()
    return [(c, h) for c, h in rows], int(total)


def messages(session: Session, conversation: Conversation) -> list[ConversationMessage]:
    return list(
        session.execute(
            select(ConversationMessage)
            .where(ConversationMessage.conversation_id == conversation.id)
            .order_by(ConversationMessage.id)
        ).scalars()
    )


def handoffs(session: Session, conversation: Conversation) -> list[Handoff]:
    return list(
        session.execute(
            select(Handoff)
            .where(Handoff.conversation_id == conversation.id)
            .order_by(Handoff.id.desc())
        ).scalars()
    )


def sweep_unclaimed(
    factory: sessionmaker[Session], now: datetime, hours: OfficeHours, alert_after: timedelta
) -> list[int]:
    """Alert the supervisors about every hand-over nobody claimed in time, then again."""
    event_ids: list[int] = []
    with factory() as session:
        due = session.execute(
            select(Handoff, Conversation)
            .join(Conversation, Conversation.id == Handoff.conversation_id)
            .where(
                Handoff.ended_at.is_(None),
                Handoff.claimed_by.is_(None),
                Handoff.next_alert_at <= now,
            )
            .with_for_update(of=Handoff, skip_locked=True)
        ).all()
        for handoff, conversation in due:
            handoff.alerts_sent += 1
            handoff.next_alert_at = first_alert(now, hours, alert_after)
            event = events.record_conversation(
                session,
                "conversation.unclaimed",
                conversation,
                handoff,
                alert=handoff.alerts_sent,
                waited_seconds=round((now - handoff.opened_at).total_seconds()),
                notify="supervisor",
            )
            session.flush()
            event_ids.append(event.id)
        session.commit()
    return event_ids
