"""/conversations: every written conversation, its takeover by staff and the way back.

Channels (the gateway, `conversations:write`) record each message and learn whether the bot
may answer; the dialogue opens a hand-over; staff (`conversations:read`, `:reply`) claim,
reply, hand back or close. Claiming is the first response on the hand-over's callback order
(it is accepted and assigned to whoever claims); handing back or closing resolves it. The
channel also reports how far a reply reaches the resident (WeChat's 48 h window) and a reply
it could not deliver.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.orm import Session

from workorders.api import views
from workorders.api.deps import Clock, get_clock, get_hospital, get_policy, publish
from workorders.contract import Status
from workorders.db import get_read_session, get_session, session_factory
from workorders.errors import ApiError
from workorders.hospital.base import HospitalAdapter
from workorders.models import Conversation, ConversationMessage, Handoff, Principal, Resident
from workorders.schemas import (
    CloseIn,
    ConversationDetailOut,
    ConversationOut,
    ConversationPage,
    ErrorOut,
    HandBackIn,
    HandoffIn,
    HandoffOpenedOut,
    HandoffOut,
    MessageOut,
    MessagesIn,
    OutboundOut,
    PhotoAttachedOut,
    ReachIn,
    ReachOut,
    RecordedOut,
    ReplyIn,
    StateOut,
    UndeliverableIn,
    UndeliveredOut,
)
from workorders.security import Caller, require
from workorders.services import audit, conversations, orders, photos
from workorders.services.sla import SlaPolicy
from workorders.settings import get_settings

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/conversations",
    tags=["conversations"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
Key = Path(
    ...,
    regex=r"^[A-Za-z0-9_.:@-]{1,128}$",
    description="The channel's conversation id (the dialogue's sender id)",
)
_ONE = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}}


def _names(session: Session, *ids: int | None) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    return {
        p.id: p.display_name for p in (session.get(Principal, i) for i in wanted) if p is not None
    }


def _handoff_out(session: Session, handoff: Handoff | None) -> HandoffOut | None:
    if handoff is None:
        return None
    names = _names(session, handoff.claimed_by)
    return HandoffOut(
        id=handoff.id,
        reason=handoff.reason,
        summary=handoff.summary,
        order_id=handoff.order_id,
        opened_at=handoff.opened_at,
        claimed_by=handoff.claimed_by,
        claimed_by_name=names.get(handoff.claimed_by) if handoff.claimed_by else None,
        claimed_at=handoff.claimed_at,
        ended_at=handoff.ended_at,
        end_kind=handoff.end_kind,
        outcome=handoff.outcome,
        alerts_sent=handoff.alerts_sent,
    )


def _fields(
    session: Session, conversation: Conversation, handoff: Handoff | None
) -> dict[str, Any]:
    resident = session.get(Resident, conversation.resident_id) if conversation.resident_id else None
    return {
        "key": conversation.key,
        "channel": conversation.channel,
        "can_push": conversation.can_push,
        "resident_id": conversation.resident_id,
        "resident_name": resident.name if resident else None,
        "state": conversations.state_of(handoff),
        "handoff": _handoff_out(session, handoff),
        "reach": None
        if conversation.reach_left is None
        else ReachOut(open_until=conversation.reach_until, sends_left=conversation.reach_left),
        "created_at": conversation.created_at,
        "last_message_at": conversation.last_message_at,
    }


def _conversation_out(session: Session, key: str) -> ConversationOut:
    conversation = conversations.get(session, key)
    return ConversationOut(
        **_fields(session, conversation, conversations.open_handoff(session, conversation))
    )


def _message_out(message: ConversationMessage, names: dict[int, str]) -> MessageOut:
    return MessageOut(
        id=message.id,
        at=message.at,
        role=message.role,
        author=names.get(message.author_id) if message.author_id else None,
        text=message.text,
        delivered_at=message.delivered_at,
        undelivered=None
        if message.undelivered_fallback is None
        else UndeliveredOut(
            code=message.undelivered_code,
            reason=conversations.refusal(message.undelivered_code),
            fallback=message.undelivered_fallback,
        ),
    )


def _work_the_order(
    caller: Caller,
    order_id: int | None,
    targets: tuple[Status, ...],
    reason: str | None,
    hospital: HospitalAdapter,
    policy: SlaPolicy,
    clock: Clock,
    *,
    assign: bool = False,
) -> None:
    """Bring the callback order along; the conversation's own change stands regardless."""
    if order_id is None:
        return
    factory = session_factory(True)
    for target in targets:
        with factory() as session:
            order = orders.get(session, order_id)
            status = Status(order.status)
            if status in (Status.resolved, Status.closed, Status.cancelled):
                return
            if target == Status.accepted and status != Status.new:
                continue  # accepted already, and maybe worked on since (in progress, on hold)
            try:
                outcome = orders.transition(
                    session, caller, order_id, target, reason, hospital, policy, clock()
                )
            except ApiError as exc:
                log.info("callback order %s not moved to %s: %s", order_id, target, exc.code)
                return
            publish(outcome.event_ids)
    if assign:
        with factory() as session:
            outcome = orders.assign(session, caller, order_id, caller.id, None, policy, clock())
            publish(outcome.event_ids)


@router.post("/{key}/messages", response_model=RecordedOut, responses=_ONE)
def record_messages(
    body: MessagesIn,
    key: str = Key,
    _caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Keep what the resident or the bot said; the answer says whether the bot may reply
    (`state` is `bot`) and which hand-over ended last, so the bot is resumed once."""
    recorded = conversations.record(session, key, body, clock())
    publish(recorded.event_ids)
    return views.respond(
        RecordedOut(
            **_state_fields(session, recorded.handoff, recorded.last_ended),
            message_ids=recorded.message_ids,
        )
    )


@router.get("/{key}/state", response_model=StateOut, responses=_ONE)
def read_state(
    key: str = Key,
    _caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_read_session),
) -> Response:
    """For the channel: whether the bot may answer, who has the conversation, the last
    hand-back (after a `conversation.handed_back` event, before the resident writes again)."""
    conversation = conversations.get(session, key)
    return views.respond(
        StateOut(
            **_state_fields(
                session,
                conversations.open_handoff(session, conversation),
                conversations.last_ended(session, conversation),
            )
        )
    )


def _state_fields(
    session: Session, handoff: Handoff | None, ended: Handoff | None
) -> dict[str, Any]:
    return {
        "state": conversations.state_of(handoff),
        "handoff_id": handoff.id if handoff else None,
        "handoff": _handoff_out(session, handoff),
        "last_handback": _handoff_out(session, ended),
    }


@router.post(
    "/{key}/handoff",
    response_model=HandoffOpenedOut,
    status_code=201,
    responses={200: {"model": HandoffOpenedOut, "description": "Already handed over"}, **_ONE},
)
def hand_over(
    body: HandoffIn,
    key: str = Key,
    _caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Open the takeover: the bot keeps quiet until staff hand the conversation back."""
    settings = get_settings()
    hours, now = settings.hours(), clock()
    handoff, created, event_ids = conversations.hand_over(
        session, key, body, now, hours, timedelta(seconds=settings.handoff_alert_seconds)
    )
    publish(event_ids)
    out = _handoff_out(session, handoff)
    assert out is not None
    return views.respond(
        HandoffOpenedOut(
            handoff=out, office_open=hours.is_open(now), answer_from=hours.next_opening(now)
        ),
        201 if created else 200,
    )


@router.get("", response_model=ConversationPage)
def list_conversations(
    state: Literal["waiting", "staff", "open", "bot", "all"] = Query(
        "open", description="open: waiting for staff or owned by staff"
    ),
    resident_id: int | None = Query(
        None, ge=1, le=2**31 - 1, description="Only this resident's conversations"
    ),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    _caller: Caller = Depends(require("conversations:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    rows, total = conversations.search(session, state, limit, offset, resident_id)
    return views.respond(
        ConversationPage(
            items=[ConversationOut(**_fields(session, c, h)) for c, h in rows],
            total=total,
            limit=limit,
            offset=offset,
        )
    )


@router.get("/{key}", response_model=ConversationDetailOut, responses=_ONE)
def read_conversation(
    key: str = Key,
    caller: Caller = Depends(require("conversations:read")),
    session: Session = Depends(get_read_session),
) -> Response:
    """The whole conversation (numbers masked) and its hand-overs; staff reads are audited."""
    conversation = conversations.get(session, key)
    if caller.is_staff:
        audit.record_now(caller, "read_conversation", "conversation", conversation.id, key)
    messages = conversations.messages(session, conversation)
    names = _names(session, *(m.author_id for m in messages))
    return views.respond(
        ConversationDetailOut(
            **_fields(session, conversation, conversations.open_handoff(session, conversation)),
            messages=[_message_out(m, names) for m in messages],
            handoffs=[
                out
                for h in conversations.handoffs(session, conversation)
                if (out := _handoff_out(session, h)) is not None
            ],
        )
    )


@router.post("/{key}/claim", response_model=ConversationOut, responses=_ONE)
def claim(
    key: str = Key,
    caller: Caller = Depends(require("conversations:reply")),
    session: Session = Depends(get_session),
    hospital: HospitalAdapter = Depends(get_hospital),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Take the conversation on; one owner at a time (409 names who has it)."""
    if not caller.is_staff:
        raise ApiError(403, "forbidden", "只有工作人员可以接手会话。")
    handoff, event_ids = conversations.claim(session, caller, key, clock())
    publish(event_ids)
    if event_ids:
        _work_the_order(
            caller,
            handoff.order_id,
            (Status.accepted,),
            "接手会话",
            hospital,
            policy,
            clock,
            assign=True,
        )
    return views.respond(_conversation_out(session, key))


@router.post("/{key}/replies", response_model=MessageOut, status_code=201, responses=_ONE)
def reply(
    body: ReplyIn,
    key: str = Key,
    caller: Caller = Depends(require("conversations:reply")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """Write to the resident; the gateway delivers it on the channel they wrote from."""
    message, event_ids = conversations.reply(session, caller, key, body.text, clock())
    publish(event_ids)
    return views.respond(_message_out(message, _names(session, caller.id)), 201)


class _Ending:
    """Hand back or close: the same rights, the same end of the callback order."""

    def __init__(
        self,
        caller: Caller = Depends(require("conversations:reply")),
        session: Session = Depends(get_session),
        hospital: HospitalAdapter = Depends(get_hospital),
        policy: SlaPolicy = Depends(get_policy),
        clock: Clock = Depends(get_clock),
    ) -> None:
        self.caller, self.session, self.hospital = caller, session, hospital
        self.policy, self.clock = policy, clock

    def __call__(self, kind: str, text: str | None, key: str) -> Response:
        if not self.caller.is_staff:
            raise ApiError(403, "forbidden", "只有工作人员可以结束人工接待。")
        handoff, event_ids = conversations.end(
            self.session, self.caller, key, kind, text, self.clock()
        )
        publish(event_ids)
        reason = ("交回助手：" if kind == "handed_back" else "会话结束：") + (text or "无备注")
        _work_the_order(
            self.caller,
            handoff.order_id,
            (Status.accepted, Status.resolved),
            reason,
            self.hospital,
            self.policy,
            self.clock,
        )
        return views.respond(_conversation_out(self.session, key))


@router.post("/{key}/handback", response_model=ConversationOut, responses=_ONE)
def hand_back(body: HandBackIn, key: str = Key, end: _Ending = Depends()) -> Response:
    """Return the conversation to the bot, with a note of what staff settled."""
    return end("handed_back", body.note, key)


@router.post("/{key}/close", response_model=ConversationOut, responses=_ONE)
def close(body: CloseIn, key: str = Key, end: _Ending = Depends()) -> Response:
    """End the hand-over with an outcome (recorded on the conversation and its order)."""
    return end("closed", body.outcome, key)


@router.get("/{key}/outbound", response_model=list[OutboundOut], responses=_ONE)
def outbound(
    key: str = Key,
    _caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_read_session),
) -> Response:
    """Staff replies not delivered yet, in their exact words (for the channel only)."""
    pending = conversations.outbound(session, key)
    names = _names(session, *(m.author_id for m in pending))
    body = [
        OutboundOut(
            id=m.id, at=m.at, text=m.delivery or "", author=names.get(m.author_id or 0)
        ).json()
        for m in pending
    ]
    return Response("[" + ",".join(body) + "]", media_type="application/json")


@router.post("/{key}/outbound/{message_id}/delivered", status_code=204, responses=_ONE)
def mark_delivered(
    key: str = Key,
    message_id: int = Path(..., ge=1, le=2**31 - 1),
    _caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """The channel delivered the reply: its exact words are forgotten, the masked record stays."""
    conversations.delivered(session, key, message_id, clock())
    return Response(status_code=204)


@router.post("/{key}/outbound/{message_id}/undeliverable", status_code=204, responses=_ONE)
def mark_undeliverable(
    body: UndeliverableIn,
    key: str = Key,
    message_id: int = Path(..., ge=1, le=2**31 - 1),
    caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_session),
    policy: SlaPolicy = Depends(get_policy),
    clock: Clock = Depends(get_clock),
) -> Response:
    """The channel refused the reply (`code`, WeChat's errcode). `subscribe`: it stays
    pending until the resident writes again; `callback`: given up, and the hand-over's
    callback order gets a note to call the resident. Either way a system message says why.
    The same again is a no-op; `callback` may follow `subscribe`."""
    event_ids = conversations.undeliverable(session, caller, key, message_id, body, policy, clock())
    publish(event_ids)
    return Response(status_code=204)


@router.put("/{key}/reach", status_code=204, responses={404: {"model": ErrorOut}})
def set_reach(
    body: ReachIn,
    key: str = Key,
    _caller: Caller = Depends(require("conversations:write")),
    session: Session = Depends(get_session),
) -> Response:
    """How far a staff reply reaches the resident now (WeChat: customer-service messages
    until `open_until`, `sends_left` more); the latest report stands."""
    publish(conversations.set_reach(session, key, body))
    return Response(status_code=204)


async def _photo(
    request: Request,
    content_type: str | None = Header(None, alias="Content-Type", include_in_schema=False),
) -> tuple[str, bytes]:
    """The raw image: a JPEG or PNG by its header and by its first bytes, at most 2 MB (read
    no further than that)."""
    declared = photos.media_type(content_type)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > photos.MAX_BYTES:
        raise photos.too_large()
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > photos.MAX_BYTES:
            raise photos.too_large()
    photos.check_bytes(declared, bytes(data))
    return declared, bytes(data)


_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}


@router.post(
    "/{key}/photos",
    response_model=PhotoAttachedOut,
    status_code=201,
    responses={
        200: {"model": PhotoAttachedOut, "description": "The same bytes again: already kept"},
        404: {"model": ErrorOut, "description": "no_recent_repair: nothing was kept"},
        413: {"model": ErrorOut, "description": "photo_too_large: over 2 MB"},
        415: {
            "model": ErrorOut,
            "description": "photo_type: not a JPEG or PNG, or the bytes "
            "are not what Content-Type says",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"image/jpeg": _IMAGE_BODY, "image/png": _IMAGE_BODY},
        }
    },
)
def attach_photo(
    key: str = Key,
    caller: Caller = Depends(require("conversations:write")),
    photo: tuple[str, bytes] = Depends(_photo),
    session: Session = Depends(get_session),
    clock: Clock = Depends(get_clock),
) -> Response:
    """A photo the resident sent (the raw image as the body). It is kept with the
    conversation's resident's most recently created repair order that is still open and was
    created within `PHOTO_ATTACH_MINUTES` (201, a line on the order's history and a system
    message here); the same bytes again answer 200 with the same ids. No such order (or no
    resident known yet): 404 `no_recent_repair`, nothing kept."""
    content_type, data = photo
    window = timedelta(minutes=get_settings().photo_attach_minutes)
    attached = photos.attach(session, caller, key, content_type, data, clock(), window)
    publish(attached.event_ids)
    return views.respond(
        PhotoAttachedOut(order_id=attached.photo.order_id, photo_id=attached.photo.id),
        201 if attached.created else 200,
    )
