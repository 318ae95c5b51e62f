"""Hospital adapter over HL7 FHIR R4 REST (`Schedule`, `Slot`, `Appointment`).

Hospitals run many stacks; FHIR R4 is the one interface most of them (or their integration
engines) can expose, so this is the only adapter Linli needs for booking. Bookings use
conditional create (`If-None-Exist` on an idempotency identifier), which makes a retried booking
return the original Appointment instead of double booking; that is also why a dropped connection
during `POST` may safely be retried.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from workorders.hospital.base import (
    CENTRE_TZ,
    Booking,
    FreeSlot,
    HospitalError,
    HospitalUnavailable,
    SlotUnavailable,
)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
IDEMPOTENCY_SYSTEM = "urn:linli:idempotency"
DEPARTMENT_SYSTEM = "urn:linli:department"
# Slot has no performer element in R4; servers with one Schedule per department name the doctor
# on duty in this extension (valueReference.display).
SLOT_PRACTITIONER_EXTENSION = "urn:linli:fhir:slot-practitioner"
CANCELLATION_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"

FHIR_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DEPARTMENT_SPLIT_RE = re.compile(r"[/／、,，]")
RELEASED_STATUSES = frozenset({"cancelled", "entered-in-error"})
FINISHED_STATUSES = frozenset({"arrived", "checked-in", "fulfilled", "noshow"})
MAX_PAGES = 50

# Messages a resident or agent can act on.
MSG_TIMEOUT = "医院预约系统响应超时，请稍后再试，或转人工帮您预约。"
MSG_UNREACHABLE = "暂时连不上医院预约系统，请稍后再试，或转人工帮您预约。"
MSG_SERVER_FAILED = "医院预约系统暂时出了故障，请稍后再试，或转人工帮您预约。"
MSG_SLOT_TAKEN = "这个时间的号已经被约走了，请换一个时间。"
MSG_SLOT_UNKNOWN = "这个号源不存在或已停诊，请重新选择时间。"
MSG_REJECTED = "医院预约系统没有接受这次请求，请转人工处理。"
MSG_BAD_RESPONSE = "医院预约系统返回的数据无法识别，请转人工处理。"


@dataclass(frozen=True)
class _ScheduleIndex:
    departments: dict[str, tuple[str, ...]]  # department name -> schedule ids, server order
    department_of: dict[str, str]  # schedule id -> department name
    practitioner_of: dict[str, str | None]  # schedule id -> its only practitioner, if one
    fetched_at: float


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("datetimes passed to the hospital adapter must be timezone-aware")
    return value.isoformat(timespec="seconds")


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CENTRE_TZ)
    return parsed.astimezone(CENTRE_TZ)


def _escape_token(value: str) -> str:
    """Escape FHIR search special characters inside a token value."""
    return re.sub(r"([\\|,$])", r"\\\1", value)


def _department_name(concepts: Any) -> str | None:
    """Department from serviceType: `text` first, else the first coding display."""
    if not isinstance(concepts, list):
        return None
    concepts = [c for c in concepts if isinstance(c, dict)]
    texts = [c.get("text") for c in concepts]
    displays = [
        coding.get("display")
        for c in concepts
        for coding in c.get("coding") or []
        if isinstance(coding, dict)
    ]
    for value in texts + displays:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _ref_id(reference: Any, resource_type: str) -> str | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    ref = reference["reference"].split("/_history/")[0]
    marker = f"{resource_type}/"
    return ref.rsplit(marker, 1)[1] if marker in ref else None


def _outcome_text(response: httpx.Response) -> tuple[str, bool]:
    """Diagnostics of an OperationOutcome, and whether it is about the slot."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300], False
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return str(body)[:300], False
    texts: list[str] = []
    about_slot = False
    issues = body.get("issue")
    for issue in issues if isinstance(issues, list) else []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = str(
            issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else "")
        )
        texts.append(f"{issue.get('code', '?')}: {text}")
        where = f"{issue.get('expression', '')} {issue.get('location', '')}"
        if "slot" in where.lower() or "slot" in text.lower() or "号源" in text:
            about_slot = True
    return "; ".join(texts), about_slot


class FhirHospitalAdapter:
    """`HospitalAdapter` over a FHIR R4 server; thread-safe, one connection pool per adapter."""

    schedule_cache_seconds = 300.0

    def __init__(
        self, base_url: str, timeout: float = 5.0, client: httpx.Client | None = None
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._index: _ScheduleIndex | None = None
        self._index_lock = threading.Lock()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> FhirHospitalAdapter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- HTTP

    def _send(
        self,
        method: str,
        url: str,
        *,
        retry: bool = True,
        params: list[tuple[str, str]] | None = None,
        json_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request; transport failures become HospitalUnavailable.

        A connection dropped before a response is retried once: every request we send is safe
        to repeat (reads, conditional create, If-Match update). Timeouts are not retried, so a
        slow hospital costs the resident one timeout, not two.
        """
        if not url.startswith(("http://", "https://")):
            url = f"{self._base}/{url}"
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        content = None
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            all_headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                response = self._client.request(
                    method,
                    url,
                    params=params,
                    content=content,
                    headers=all_headers,
                    timeout=self._timeout,
                )
            except httpx.TimeoutException as exc:
                raise HospitalUnavailable(MSG_TIMEOUT, detail=f"{method} {url}: {exc!r}") from exc
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    log.info("retrying %s %s after %r", method, url, exc)
                    continue
                raise HospitalUnavailable(
                    MSG_UNREACHABLE, detail=f"{method} {url}: {exc!r}"
                ) from exc
            if response.status_code >= 500 or response.status_code == 429:
                text, _ = _outcome_text(response)
                raise HospitalUnavailable(
                    MSG_SERVER_FAILED,
                    detail=f"{method} {url}: HTTP {response.status_code} {text}",
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: httpx.Response, resource_type: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("resourceType") != resource_type:
            raise HospitalError(
                MSG_BAD_RESPONSE,
                detail=f"expected {resource_type}, got HTTP {response.status_code}: "
                f"{response.text[:300]}",
            )
        return body

    @staticmethod
    def _rejected(response: httpx.Response, what: str) -> HospitalError:
        text, _ = _outcome_text(response)
        return HospitalError(MSG_REJECTED, detail=f"{what}: HTTP {response.status_code} {text}")

    def _search(self, path: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Resources of a searchset, following `next` links."""
        url: str | None = path
        page_params: list[tuple[str, str]] | None = params
        for _ in range(MAX_PAGES):
            if url is None:
                return
            response = self._send("GET", url, params=page_params)
            if response.status_code != 200:
                raise self._rejected(response, f"search {path}")
            bundle = self._json(response, "Bundle")
            for entry in bundle.get("entry") or []:
                if (
                    isinstance(entry, dict)
                    and isinstance(entry.get("resource"), dict)
                    and (entry.get("search") or {}).get("mode", "match") == "match"
                ):
                    yield entry["resource"]
            url = next(
                (
                    link.get("url")
                    for link in bundle.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )
            page_params = None  # next links carry their own query

    # -- schedules and departments

    def _load_index(self) -> _ScheduleIndex:
        departments: dict[str, list[str]] = {}
        department_of: dict[str, str] = {}
        practitioner_of: dict[str, str | None] = {}
        for schedule in self._search("Schedule", [("active", "true")]):
            if schedule.get("resourceType") != "Schedule" or schedule.get("active") is False:
                continue
            schedule_id = schedule.get("id")
            name = _department_name(schedule.get("serviceType"))
            if not isinstance(schedule_id, str) or not name:
                continue
            departments.setdefault(name, []).append(schedule_id)
            department_of[schedule_id] = name
            doctors = [
                a.get("display")
                for a in schedule.get("actor") or []
                if isinstance(a, dict)
                and (
                    a.get("type") == "Practitioner"
                    or str(a.get("reference", "")).startswith("Practitioner/")
                )
            ]
            practitioner_of[schedule_id] = doctors[0] if len(doctors) == 1 else None
        return _ScheduleIndex(
            {k: tuple(v) for k, v in departments.items()},
            department_of,
            practitioner_of,
            time.monotonic(),
        )

    def _schedules(self, *, refresh: bool = False) -> _ScheduleIndex:
        with self._index_lock:
            index = self._index
            stale = (
                index is None or time.monotonic() - index.fetched_at > self.schedule_cache_seconds
            )
        if refresh or stale:
            index = self._load_index()
            with self._index_lock:
                self._index = index
        assert index is not None
        return index

    def departments(self) -> list[str]:
        return list(self._schedules(refresh=True).departments)

    def _resolve(self, department: str) -> tuple[str, tuple[str, ...]]:
        """Match a department name; `全科/家庭医生` style names match any of their parts."""
        wanted = department.strip()
        candidates = [wanted] + [p.strip() for p in DEPARTMENT_SPLIT_RE.split(wanted) if p.strip()]
        index = self._schedules()
        for refresh in (False, True):
            if refresh:
                index = self._schedules(refresh=True)
            for name in candidates:
                if name in index.departments:
                    return name, index.departments[name]
        available = "、".join(index.departments) or "（暂无）"
        raise HospitalError(
            f"这里暂时不能预约“{department}”，可以预约的科室有：{available}。",
            detail=f"unknown department {department!r}",
        )

    # -- slots

    def _free_slot(self, slot: dict[str, Any], index: _ScheduleIndex) -> FreeSlot | None:
        slot_id = slot.get("id")
        start, end = _parse_instant(slot.get("start")), _parse_instant(slot.get("end"))
        schedule_id = _ref_id(slot.get("schedule"), "Schedule")
        if not isinstance(slot_id, str) or start is None or end is None:
            log.warning("ignoring malformed Slot from %s: %r", self._base, slot)
            return None
        department = _department_name(slot.get("serviceType")) or index.department_of.get(
            schedule_id or "", ""
        )
        practitioner = None
        for ext in slot.get("extension") or []:
            if isinstance(ext, dict) and ext.get("url") == SLOT_PRACTITIONER_EXTENSION:
                value = ext.get("valueReference")
                display = value.get("display") if isinstance(value, dict) else None
                practitioner = display if isinstance(display, str) else None
        if practitioner is None and schedule_id:
            practitioner = index.practitioner_of.get(schedule_id)
        return FreeSlot(slot_id, department, start, end, practitioner)

    def free_slots(
        self, department: str, start: datetime, end: datetime, limit: int = 20
    ) -> list[FreeSlot]:
        window_start, window_end = _instant(start), _instant(end)
        if limit <= 0 or end <= start:
            return []
        name, schedule_ids = self._resolve(department)
        index = self._schedules()
        params = [
            ("schedule", ",".join(f"Schedule/{s}" for s in schedule_ids)),
            ("status", "free"),
            ("start", f"ge{window_start}"),
            ("start", f"lt{window_end}"),
            ("_sort", "start"),
            ("_count", str(limit)),
        ]
        found: list[FreeSlot] = []
        for resource in self._search("Slot", params):
            # Do not trust every server to apply every search parameter.
            if resource.get("resourceType") != "Slot" or resource.get("status") != "free":
                continue
            slot = self._free_slot(resource, index)
            if slot is None or not (start <= slot.start < end):
                continue
            found.append(FreeSlot(slot.slot_id, name, slot.start, slot.end, slot.practitioner))
            if len(found) >= limit:
                break
        found.sort(key=lambda s: (s.start, s.slot_id))
        return found[:limit]

    # -- booking

    def book(
        self, slot_id: str, *, patient_ref: str, patient_name: str, idempotency_key: str
    ) -> Booking:
        if not idempotency_key:
            raise ValueError("idempotency_key is required")
        if not patient_ref or not patient_name:
            raise ValueError("patient_ref and patient_name are required")
        if not FHIR_ID_RE.match(slot_id):
            raise SlotUnavailable(MSG_SLOT_UNKNOWN, detail=f"invalid slot id {slot_id!r}")

        response = self._send("GET", f"Slot/{slot_id}")
        if response.status_code in (404, 410):
            raise SlotUnavailable(MSG_SLOT_UNKNOWN, detail=f"Slot/{slot_id}: HTTP 404")
        if response.status_code != 200:
            raise self._rejected(response, f"read Slot/{slot_id}")
        slot_resource = self._json(response, "Slot")
        slot = self._free_slot(slot_resource, self._schedules())
        if slot is None:
            raise HospitalError(MSG_BAD_RESPONSE, detail=f"malformed Slot/{slot_id}")

        patient = {
            "reference": patient_ref if "/" in patient_ref else f"Patient/{patient_ref}",
            "type": "Patient",
            "display": patient_name,
        }
        participants: list[dict[str, Any]] = [
            {"actor": patient, "required": "required", "status": "accepted"}
        ]
        if slot.practitioner:
            participants.append(
                {
                    "actor": {"type": "Practitioner", "display": slot.practitioner},
                    "required": "required",
                    "status": "needs-action",
                }
            )
        appointment: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": "booked",
            "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": idempotency_key}],
            "serviceType": slot_resource.get("serviceType") or [{"text": slot.department}],
            "description": f"{slot.department}门诊预约（邻里助手代约）",
            "start": slot_resource["start"],
            "end": slot_resource["end"],
            "created": datetime.now(CENTRE_TZ).isoformat(timespec="seconds"),
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": participants,
        }
        token = f"{IDEMPOTENCY_SYSTEM}|{_escape_token(idempotency_key)}"
        headers = {"If-None-Exist": "identifier=" + quote(token, safe=":|/\\")}
        response = self._send("POST", "Appointment", json_body=appointment, headers=headers)

        if response.status_code in (409, 412, 422):
            text, about_slot = _outcome_text(response)
            detail = f"book Slot/{slot_id}: HTTP {response.status_code} {text}"
            if response.status_code == 409 or about_slot:
                raise SlotUnavailable(MSG_SLOT_TAKEN, detail=detail)
            raise HospitalError(MSG_REJECTED, detail=detail)
        if response.status_code not in (200, 201):
            raise self._rejected(response, f"book Slot/{slot_id}")
        stored = self._json(response, "Appointment")
        appointment_id = stored.get("id")
        if not isinstance(appointment_id, str):
            raise HospitalError(MSG_BAD_RESPONSE, detail="Appointment without id")
        booked_slot = None
        if isinstance(stored.get("slot"), list) and stored["slot"]:
            booked_slot = _ref_id(stored["slot"][0], "Slot")
        if booked_slot != slot_id:
            # Same idempotency key reused for another slot: never report the wrong booking.
            raise HospitalError(
                "这次预约请求的编号已经用于另一个号源，请转人工核对。",
                detail=f"key {idempotency_key!r} is Appointment/{appointment_id} "
                f"for Slot/{booked_slot}, not Slot/{slot_id}",
            )
        if stored.get("status") in RELEASED_STATUSES:
            raise HospitalError(
                "这次预约已经取消过了，如需再约请重新发起预约。",
                detail=f"key {idempotency_key!r} is cancelled Appointment/{appointment_id}",
            )
        return Booking(appointment_id, slot_id, slot.department, slot.start, slot.end)

    def cancel(self, appointment_id: str) -> None:
        if not FHIR_ID_RE.match(appointment_id):
            raise HospitalError(
                "找不到这条预约记录，请转人工核对。", detail=f"invalid id {appointment_id!r}"
            )
        for _ in range(3):
            response = self._send("GET", f"Appointment/{appointment_id}")
            if response.status_code in (404, 410):
                raise HospitalError(
                    "找不到这条预约记录，请转人工核对。",
                    detail=f"Appointment/{appointment_id}: HTTP {response.status_code}",
                )
            if response.status_code != 200:
                raise self._rejected(response, f"read Appointment/{appointment_id}")
            appointment = self._json(response, "Appointment")
            status = appointment.get("status")
            if status in RELEASED_STATUSES:
                return
            if status in FINISHED_STATUSES:
                raise HospitalError(
                    "这次预约已经就诊或已过期，不能再取消。",
                    detail=f"Appointment/{appointment_id} is {status}",
                )
            meta = appointment.get("meta")
            version = meta.get("versionId") if isinstance(meta, dict) else None
            appointment["status"] = "cancelled"
            appointment["cancelationReason"] = {
                "coding": [
                    {"system": CANCELLATION_REASON_SYSTEM, "code": "pat", "display": "Patient"}
                ],
                "text": "居民通过邻里助手取消",
            }
            headers = {"If-Match": f'W/"{version}"'} if version else {}
            response = self._send(
                "PUT", f"Appointment/{appointment_id}", json_body=appointment, headers=headers
            )
            if response.status_code in (200, 201):
                return
            if response.status_code == 412:
                continue  # changed meanwhile (or our earlier attempt landed): read again
            raise self._rejected(response, f"cancel Appointment/{appointment_id}")
        raise HospitalError(
            "预约记录正在被修改，暂时无法取消，请稍后再试。",
            detail=f"Appointment/{appointment_id}: repeated version conflicts",
        )
