"""Audit trail of staff reads of personal data and of administrative acts."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.orm import Session

from workorders.db import session_factory
from workorders.models import AuditEntry
from workorders.security import Caller


def record(
    session: Session,
    caller: Caller,
    action: str,
    resource_type: str,
    resource_id: int | None = None,
    detail: str | None = None,
) -> None:
    """Added to the caller's transaction: the read and its audit entry commit together."""
    session.add(
        AuditEntry(
            at=datetime.now(timezone.utc),
            principal_id=caller.id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            detail=detail,
        )
    )


def record_now(
    caller: Caller,
    action: str,
    resource_type: str,
    resource_id: int | None = None,
    detail: str | None = None,
) -> None:
    """For reads: committed in its own transaction before the data is returned."""
    with session_factory(True)() as session:
        record(session, caller, action, resource_type, resource_id, detail)
        session.commit()
