"""Load the demo community from data/demo/ idempotently (make run calls it on every start)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from workorders.crypto import cipher
from workorders.db import session_factory
from workorders.models import Principal, Resident
from workorders.schemas import ResidentCreate
from workorders.security import hash_password, register_service_token
from workorders.services import residents

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
DEFAULT_DEMO_PASSWORD = "linli-demo-2026"


def load(directory: Path = DEMO) -> str:
    community = json.loads((directory / "community.json").read_text(encoding="utf-8"))
    people = json.loads((directory / "residents.json").read_text(encoding="utf-8"))["residents"]
    password = os.environ.get("LINLI_DEMO_PASSWORD", DEFAULT_DEMO_PASSWORD)
    with session_factory(True)() as session:
        staff = _accounts(session, community, password)
        added = sum(_resident(session, ResidentCreate.parse_obj(p)) for p in people)
        session.commit()
    return f"demo data: {staff} new accounts, {added} new residents ({len(people)} in the file)"


def _accounts(session: Session, community: dict, password: str) -> int:  # type: ignore[type-arg]
    created = 0
    for entry in community["staff"] + community["services"]:
        principal = session.execute(
            select(Principal).where(Principal.username == entry["username"])
        ).scalar_one_or_none()
        if principal is None:
            is_service = "scopes" in entry
            principal = Principal(
                username=entry["username"],
                display_name=entry["display_name"],
                role="service" if is_service else entry["role"],
                scopes=entry.get("scopes", []),
                team=entry.get("team"),
                password_hash=None if is_service else hash_password(password),
            )
            session.add(principal)
            session.flush()
            created += 1
        elif "scopes" in entry and not set(entry["scopes"]) <= set(principal.scopes or ()):
            # A right added to the file since this database was loaded (calls:write for the
            # hotline): granted, never taken away here (an admin may have granted more).
            principal.scopes = sorted({*(principal.scopes or ()), *entry["scopes"]})
        token = os.environ.get(entry.get("token_env", ""), "")
        if token:
            register_service_token(session, principal, token)
    return created


def _resident(session: Session, body: ResidentCreate) -> bool:
    assert body.phone is not None
    exists = session.execute(
        select(Resident.id).where(
            Resident.phone_hash.in_(cipher().lookup_hashes("phone", body.phone))
        )
    ).first()
    if exists:
        return False
    residents.create(session, body)
    return True
