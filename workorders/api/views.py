"""ORM rows to response bodies. Masking happens here, in one place, for every response."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic import BaseModel

from workorders.contract import Speaker, Status
from workorders.crypto import format_address, mask_address, mask_id_number, mask_phone, mask_text
from workorders.models import CallRecord, Proxy, Resident, WorkOrder
from workorders.schemas import (
    AddressOut,
    CallDetailOut,
    CallOut,
    CallTurnOut,
    ContactOut,
    HistoryOut,
    IdentityOut,
    OrderDetailOut,
    OrderOut,
    PhotoOut,
    ProxyBriefOut,
    ProxyIdentityOut,
    ProxyOut,
    RatingOut,
    RequestedByOut,
    ResidentOut,
    ServiceNotes,
    SlaOut,
)
from workorders.services import proxies, state_machine
from workorders.services.orders import DetailRow

_FREE_TEXT = ("description", "text", "question", "summary", "note", "reason")
_PHONES = ("phone", "caller_phone")


def address_out(address: dict[str, str] | None, reveal: bool) -> AddressOut | None:
    if not address:
        return None
    b, u, r = address["building"], address.get("unit"), address["room"]
    if reveal:
        return AddressOut(building=b, unit=u, room=r, text=format_address(b, u, r))
    masked = "*" if u else None
    return AddressOut(building=b, unit=masked, room="*" * len(r), text=mask_address(b, u, r))


def resident_out(resident: Resident, reveal: bool) -> ResidentOut:
    phone = (lambda v: v) if reveal else mask_phone
    return ResidentOut(
        id=resident.id,
        name=resident.name,
        phone=phone(resident.phone),
        id_number=resident.id_number if reveal else mask_id_number(resident.id_number),
        community=resident.community,
        address=address_out(resident.address, reveal),
        birth_year=resident.birth_year,
        service_notes=ServiceNotes(**resident.service_notes)
        if resident.service_notes and reveal
        else None,
        contacts=[
            ContactOut(
                id=c.id,
                name=c.name,
                relation=c.relation,
                phone=phone(c.phone),
                notify_on_emergency=c.notify_on_emergency,
            )
            for c in resident.contacts
        ],
        identities=[
            IdentityOut(kind=i.kind, value=i.value if reveal else _mask_identity(i.kind, i.value))
            for i in resident.identities
        ],
        masked=not reveal,
        created_at=resident.created_at,
    )


def _mask_identity(kind: str, value: str) -> str:
    if kind == "phone":
        return mask_phone(value) or ""
    return value[:3] + "***" + value[-2:] if len(value) > 6 else "***"


def details_out(details: dict[str, Any], reveal: bool) -> dict[str, Any]:
    if reveal:
        return details
    out = dict(details)
    if "address" in out:
        out["address"] = address_out(out["address"], False).dict()  # type: ignore[union-attr]
    for key in _PHONES:
        if key in out:
            out[key] = mask_phone(out[key])
    for key in _FREE_TEXT:
        if key in out:
            out[key] = mask_text(out[key])
    if out.get("location"):  # an emergency's whereabouts in the person's words: an address
        out["location"] = out["location"][:2] + "***"
    out.pop("service_notes", None)  # health data: only for those who reveal
    return out


def _order_fields(order: WorkOrder | DetailRow, reveal: bool) -> dict[str, Any]:
    status = Status(order.status)
    return {
        "id": order.id,
        "kind": order.kind,
        "status": status,
        "priority": order.priority,
        "channel": order.channel,
        "resident_id": order.resident_id,
        "community": order.community,
        "details": details_out(order.details, reveal),
        "notes": order.notes if reveal else mask_text(order.notes),
        "scheduled_at": order.scheduled_at,
        "assignee_id": order.assignee_id,
        "assignee_team": order.assignee_team,
        "related_order_id": order.related_order_id,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "first_response_at": order.first_response_at,
        "resolved_at": order.resolved_at,
        "closed_at": order.closed_at,
        "cancelled_at": order.cancelled_at,
        "reopen_count": order.reopen_count,
        "sla": SlaOut(
            response_due_at=order.response_due_at,
            resolution_due_at=order.resolution_due_at,
            escalation_due_at=order.escalation_due_at,
            response_breached=order.response_breached_at is not None,
            resolution_breached=order.resolution_breached_at is not None,
            escalated=order.escalated_at is not None,
            paused_seconds=order.paused_seconds,
            paused_since=order.paused_since,
        ),
        "rating": RatingOut(
            score=order.rating,
            comment=order.rating_comment if reveal else mask_text(order.rating_comment),
            rated_at=order.rated_at,
        )
        if order.rating is not None and order.rated_at is not None
        else None,
        "allowed_transitions": state_machine.allowed(status),
        "requested_by": RequestedByOut(
            proxy_id=order.proxy.id,
            name=order.proxy.name if reveal else proxies.mask_name(order.proxy.name),
            relation=order.proxy.relation,
        )
        if order.proxy is not None
        else None,
        "masked": not reveal,
    }


def order_out(order: WorkOrder, reveal: bool) -> OrderOut:
    return OrderOut(**_order_fields(order, reveal))


def order_detail_out(order: WorkOrder | DetailRow, reveal: bool) -> OrderDetailOut:
    return OrderDetailOut(
        **_order_fields(order, reveal),
        history=[
            HistoryOut(
                at=h.at,
                actor_id=h.actor_id,
                action=h.action,
                from_status=h.from_status,
                to_status=h.to_status,
                reason=h.reason if reveal else mask_text(h.reason),
            )
            for h in order.history
        ],
        photos=[
            PhotoOut(id=p.id, content_type=p.content_type, size=p.size, created_at=p.created_at)
            for p in order.photos
        ],
    )


def proxy_brief_out(proxy: Proxy) -> ProxyBriefOut:
    return ProxyBriefOut(
        id=proxy.id,
        resident_id=proxy.resident_id,
        resident_name=proxies.mask_name(proxy.resident.name),
        relation=proxy.relation,
        status=proxy.status,
    )


def proxy_out(proxy: Proxy, reveal: bool, identity: bool = False) -> ProxyOut:
    """Services always see the names and the number masked; staff in full when they reveal.
    `identity`: the family member's channel identity, for the channel that writes to them."""
    return ProxyOut(
        id=proxy.id,
        resident_id=proxy.resident_id,
        resident_name=proxy.resident.name if reveal else proxies.mask_name(proxy.resident.name),
        name=proxy.name if reveal else proxies.mask_name(proxy.name),
        relation=proxy.relation,
        phone=proxy.phone if reveal else mask_phone(proxy.phone),
        status=proxy.status,
        requested_at=proxy.requested_at,
        decided_at=proxy.decided_at,
        decided_via=proxy.decided_via,
        withdrawn_at=proxy.withdrawn_at,
        identity=(
            ProxyIdentityOut(kind=proxy.identity_kind, value=proxy.identity_value)
            if identity
            else None
        ),
    )


_SUMMARY_CHARS = 60


def _call_fields(call: CallRecord, reveal: bool) -> dict[str, Any]:
    """Transcript, keypad and transfer target were masked before they were stored; masked
    again here all the same (rows written before a masking rule existed)."""
    first = next(
        (t["text"] for t in call.transcript if t["speaker"] == Speaker.caller and t["text"]), None
    )
    summary = mask_text(first)
    if summary and len(summary) > _SUMMARY_CHARS:
        summary = summary[: _SUMMARY_CHARS - 1] + "…"
    return {
        "id": call.id,
        "call_id": call.call_id,
        "channel": call.channel,
        "caller": call.caller if reveal else mask_phone(call.caller),
        "resident_id": call.resident_id,
        "started_at": call.started_at,
        "ended_at": call.ended_at,
        "duration_seconds": (call.ended_at - call.started_at).total_seconds(),
        "outcome": call.outcome,
        "order_ids": call.order_ids,
        "turns": len(call.transcript),
        "summary": summary,
        "transfer_target": mask_text(call.transfer_target),
        "has_audio": call.audio_path is not None,
        "created_at": call.created_at,
        "masked": not reveal,
    }


def call_out(call: CallRecord) -> CallOut:
    """Lists never show the caller in full."""
    return CallOut(**_call_fields(call, False))


def call_detail_out(call: CallRecord, reveal: bool) -> CallDetailOut:
    return CallDetailOut(
        **_call_fields(call, reveal),
        transcript=[
            CallTurnOut(
                at=t["at"],
                speaker=t["speaker"],
                text=mask_text(t["text"]) or "",
                confidence=t.get("confidence"),
            )
            for t in call.transcript
        ],
        keypad=mask_text(call.keypad),
        audio_path=call.audio_path,
    )


class JSONBody(Response):
    media_type = "application/json"


def respond(body: BaseModel, status_code: int = 200) -> Response:
    """Serialise once. Returning the model would make FastAPI validate it a second time and
    run its slow generic encoder: a third of a read's time."""
    return JSONBody(body.json(), status_code=status_code)
