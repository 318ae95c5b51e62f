"""Booking medical appointments at hospitals and community health centres."""

from workorders.hospital.base import (
    Booking,
    FreeSlot,
    HospitalAdapter,
    HospitalError,
    HospitalUnavailable,
    SlotUnavailable,
)
from workorders.hospital.fhir import FhirHospitalAdapter

__all__ = [
    "Booking",
    "FhirHospitalAdapter",
    "FreeSlot",
    "HospitalAdapter",
    "HospitalError",
    "HospitalUnavailable",
    "SlotUnavailable",
]
