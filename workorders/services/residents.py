"""Residents and the channel identities that let any channel find the resident it talks to."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workorders.contract import IdentityKind
from workorders.crypto import cipher
from workorders.errors import ApiError, not_found
from workorders.models import FamilyContact, Identity, Resident
from workorders.schemas import ContactIn, IdentityIn, ResidentCreate, ResidentUpdate


def get(session: Session, resident_id: int) -> Resident:
    resident = session.get(Resident, resident_id)
    if resident is None:
        raise not_found("resident", resident_id)
    return resident


def _hash(kind: str, value: str) -> str:
    return cipher().lookup_hash(kind, value)


def _hashes(kind: str, value: str) -> list[str]:
    """What a stored row may hold: the hash under every configured data key (a rotation)."""
    return cipher().lookup_hashes(kind, value)


def _contacts(items: list[ContactIn]) -> list[FamilyContact]:
    return [
        FamilyContact(
            name=c.name,
            relation=c.relation,
            phone=c.phone,
            notify_on_emergency=c.notify_on_emergency,
        )
        for c in items
    ]


def _set_numbers(resident: Resident, phone: str | None, id_number: str | None) -> None:
    if phone is not None:
        resident.phone, resident.phone_hash = phone, _hash("phone", phone)
    if id_number is not None:
        resident.id_number, resident.id_number_hash = id_number, _hash("id_number", id_number)


def create(session: Session, body: ResidentCreate) -> Resident:
    resident = Resident(
        name=body.name,
        community=body.community,
        address=body.address.dict() if body.address else None,
        birth_year=body.birth_year,
        service_notes=body.service_notes.dict(exclude_none=True) if body.service_notes else None,
        contacts=_contacts(body.contacts),
    )
    _set_numbers(resident, body.phone, body.id_number)
    _refuse_taken(session, None, body.id_number, body.identities)
    session.add(resident)
    for identity in body.identities:
        resident.identities.append(_identity(identity))
    _flush_unique(session)
    return resident


def update(session: Session, resident: Resident, body: ResidentUpdate) -> Resident:
    fields = body.dict(exclude_unset=True)
    for name in ("name", "birth_year"):
        if name in fields:
            setattr(resident, name, fields[name])
    if "address" in fields:
        resident.address = body.address.dict() if body.address else None
    if "service_notes" in fields:
        resident.service_notes = (
            body.service_notes.dict(exclude_none=True) if body.service_notes else None
        )
    if body.contacts is not None:
        resident.contacts = _contacts(body.contacts)
    _set_numbers(resident, fields.get("phone"), fields.get("id_number"))
    _refuse_taken(session, resident.id, fields.get("id_number"), [])
    _flush_unique(session)
    return resident


def _identity(item: IdentityIn) -> Identity:
    return Identity(kind=item.kind, value=item.value, value_hash=_hash(item.kind, item.value))


def _refuse_taken(
    session: Session, resident_id: int | None, id_number: str | None, identities: list[IdentityIn]
) -> None:
    """The unique indexes see the current key's hashes only; while a rotation is under way a
    row may still hold a retired key's, so those are looked up here."""
    if len(cipher().keys) == 1:
        return
    taken = (
        id_number is not None
        and session.execute(
            select(Resident.id).where(
                Resident.id_number_hash.in_(_hashes("id_number", id_number)),
                Resident.id != (resident_id or 0),
            )
        ).first()
    )
    if taken or any(find_identity(session, item.kind, item.value) for item in identities):
        raise ApiError(409, "already_registered", "该身份证号或渠道身份已登记在另一位居民名下。")


def _flush_unique(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ApiError(
            409, "already_registered", "该身份证号或渠道身份已登记在另一位居民名下。"
        ) from exc


def link_identity(session: Session, resident: Resident, item: IdentityIn) -> tuple[Identity, bool]:
    """Link a channel identity; linking the same one again is a no-op, to someone else a 409."""
    found = find_identity(session, item.kind, item.value)
    if found is not None:
        if found.resident_id != resident.id:
            raise ApiError(409, "identity_taken", "这个渠道身份已关联到另一位居民。")
        return found, False
    identity = _identity(item)
    resident.identities.append(identity)
    _flush_unique(session)
    return identity, True


def find_identity(session: Session, kind: IdentityKind, value: str) -> Identity | None:
    return session.execute(
        select(Identity).where(Identity.kind == kind, Identity.value_hash.in_(_hashes(kind, value)))
    ).scalar_one_or_none()


def lookup(session: Session, kind: IdentityKind, value: str) -> Resident | None:
    """Who is this? Linked identities first; a caller number also matches a resident's own phone."""
    identity = find_identity(session, kind, value)
    if identity is not None:
        return session.get(Resident, identity.resident_id)
    if kind == IdentityKind.phone:
        return (
            session.execute(
                select(Resident)
                .where(Resident.phone_hash.in_(_hashes("phone", value)))
                .order_by(Resident.id)
            )
            .scalars()
            .first()
        )
    return None


def search(
    session: Session,
    *,
    name: str | None,
    community: str | None,
    phone: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Resident], int]:
    conditions = []
    if name:
        conditions.append(Resident.name.contains(name, autoescape=True))
    if community:
        conditions.append(Resident.community == community)
    if phone:
        conditions.append(Resident.phone_hash.in_(_hashes("phone", phone)))
    total = session.execute(
        select(func.count()).select_from(Resident).where(*conditions)
    ).scalar_one()
    rows = (
        session.execute(
            select(Resident).where(*conditions).order_by(Resident.id).limit(limit).offset(offset)
        )
        .scalars()
        .all()
    )
    return list(rows), int(total)
