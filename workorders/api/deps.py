"""Dependencies every route shares: the clock, SLA policy, hospital adapter, event publisher.

The cheap ones are `async def` so FastAPI does not hop to its thread pool for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from functools import lru_cache

from fastapi import Header

from workorders.db import session_factory
from workorders.hospital.base import HospitalAdapter
from workorders.hospital.fhir import FhirHospitalAdapter
from workorders.models import Event
from workorders.security import Caller
from workorders.services import audit, events
from workorders.services.sla import SlaPolicy, load_policy
from workorders.settings import get_settings

Clock = Callable[[], datetime]


async def get_clock() -> Clock:
    """Tests override this to move time; everything else reads the wall clock."""
    return lambda: datetime.now(timezone.utc)


def policy() -> SlaPolicy:
    return load_policy(get_settings().sla_config)


async def get_policy() -> SlaPolicy:
    return policy()


@lru_cache
def hospital() -> FhirHospitalAdapter:
    return FhirHospitalAdapter(get_settings().fhir_base_url)


async def get_hospital() -> HospitalAdapter:
    return hospital()


def publish(event_ids: Iterable[int]) -> None:
    """After commit: announce on Redis now; the scheduler relays anything that fails here."""
    events.publish(session_factory(True), event_ids)


def announce(committed: Sequence[Event]) -> None:
    """After commit, with the events in hand: announce them without reading them back."""
    events.announce(session_factory(True), committed)


async def idempotency_key(
    key: str | None = Header(
        None,
        alias="Idempotency-Key",
        max_length=200,
        description="Same key and body: the same result, never a second resource",
    ),
) -> str | None:
    return key


def reveal(
    caller: Caller,
    requested: bool,
    resource: str,
    ident: int | None,
    purpose: str | None = None,
) -> bool:
    """Unmasked personal data: services with the right always; staff when they ask, audited
    with the purpose they gave (the audit entry's detail), so an admin can see why."""
    if not caller.can("residents:pii"):
        return False
    if not caller.is_staff:
        return True
    if requested:
        audit.record_now(caller, "reveal_personal_data", resource, ident, purpose)
    return requested
