"""What the work-order service needs from a hospital, whatever stack the hospital runs.

Adapters translate one hospital protocol (FHIR R4 today) into these few calls, and every failure
into one of three errors so that callers can decide what to tell the resident: pick another time
(`SlotUnavailable`), try again later or hand over to a person (`HospitalUnavailable`), or hand
over to a person (any other `HospitalError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

CENTRE_TZ = ZoneInfo("Asia/Shanghai")
"""Time zone of the community health centres Linli books for; adapters return datetimes in it."""


@dataclass(frozen=True)
class FreeSlot:
    """A bookable time at one department; `start`/`end` are timezone-aware."""

    slot_id: str
    department: str
    start: datetime
    end: datetime
    practitioner: str | None


@dataclass(frozen=True)
class Booking:
    """A confirmed appointment, as the hospital recorded it."""

    appointment_id: str
    slot_id: str
    department: str
    start: datetime
    end: datetime


class HospitalError(Exception):
    """Base of every hospital failure.

    `message` is Chinese and safe to read out to a resident or an agent; `detail` is for logs
    (status codes, server diagnostics) and never shown to residents.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, detail={self.detail!r})"


class SlotUnavailable(HospitalError):
    """The slot is already booked, not free, or does not exist: offer another time."""


class HospitalUnavailable(HospitalError):
    """The hospital system is down, slow or failing (timeouts, connection errors, 5xx)."""


@runtime_checkable
class HospitalAdapter(Protocol):
    """Booking operations against one hospital or health centre."""

    def departments(self) -> list[str]:
        """Department names (Chinese, as residents say them) that can be booked."""
        ...

    def free_slots(
        self, department: str, start: datetime, end: datetime, limit: int = 20
    ) -> list[FreeSlot]:
        """Free slots of `department` starting in [start, end), earliest first, at most `limit`."""
        ...

    def book(
        self, slot_id: str, *, patient_ref: str, patient_name: str, idempotency_key: str
    ) -> Booking:
        """Book `slot_id`; retrying with the same `idempotency_key` returns the same booking."""
        ...

    def cancel(self, appointment_id: str) -> None:
        """Cancel an appointment; cancelling an already cancelled one is not an error."""
        ...
