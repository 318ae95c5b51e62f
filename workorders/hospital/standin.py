"""Stand-in FHIR R4 server for one community health centre (tests and demos).

It serves `Schedule`, `Slot` and `Appointment` over the FHIR REST API with the semantics a real
hospital server has and our adapter relies on: searchset Bundles, conditional create through
`If-None-Exist`, versioned updates with `If-Match`, OperationOutcome errors and
`application/fhir+json`. Slots are generated from a schedule file (see data/health_centre/README.md)
so the same slot keeps the same id across restarts; bookings survive restarts when a state file is
given. Booking is atomic: one lock guards every check-and-set, so no slot is ever booked twice.

Run it with `python -m workorders.hospital.standin` (one process only: the lock and the state file
are not shared between processes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from workorders.hospital.fhir import (
    DEPARTMENT_SYSTEM,
    FHIR_JSON,
    SLOT_PRACTITIONER_EXTENSION,
)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEDULE = ROOT / "data" / "health_centre" / "schedule.json"
DEFAULT_STATE = ROOT / "var" / "fhir-state.json"
STATE_FORMAT = "linli-fhir-standin/1"
FHIR_VERSION = "4.0.1"

MAX_BODY_BYTES = 1_000_000
DEFAULT_COUNT = 100
MAX_COUNT = 1000

WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SCHEDULE_ID_RE = re.compile(r"^[a-z][a-z0-9]{0,39}$")
SLOT_REF_RE = re.compile(r"^(?:.*/)?Slot/([A-Za-z0-9\-.]{1,64})$")
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
DATE_PARAM_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?(\d{4}(?:-\d{2}(?:-\d{2})?)?)(T.*)?$")
ETAG_RE = re.compile(r'^(?:W/)?"?([^"]+)"?$')

APPOINTMENT_STATUSES = frozenset(
    {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    }
)
CREATE_STATUSES = frozenset({"proposed", "pending", "booked"})
# Appointments in these states do not occupy their slot.
RELEASING_STATUSES = frozenset({"cancelled", "entered-in-error", "waitlist"})
TENTATIVE_STATUSES = frozenset({"proposed", "pending"})
# R4 invariant app-3: only these may lack start/end.
UNTIMED_STATUSES = frozenset({"proposed", "cancelled", "waitlist"})
PARTICIPANT_STATUSES = frozenset({"accepted", "declined", "tentative", "needs-action"})


# --------------------------------------------------------------------------- schedule file


@dataclass(frozen=True)
class Session:
    start: time
    end: time


@dataclass(frozen=True)
class Department:
    id: str
    name: str
    practitioners: tuple[str, ...]
    weekdays: frozenset[int]
    sessions: tuple[Session, ...]
    slot_minutes: int
    days_ahead: int


@dataclass(frozen=True)
class Centre:
    id: str
    name: str
    address: str
    tz: ZoneInfo
    closed_dates: frozenset[date]
    departments: tuple[Department, ...]


@dataclass(frozen=True)
class SlotDef:
    id: str
    department: Department
    start: datetime
    end: datetime
    practitioner: str | None


class ScheduleFileError(ValueError):
    """The schedule file is unusable; the message says where and why, for whoever edits it."""


def load_schedule(path: Path) -> Centre:
    """Read and check a schedule file, failing with a precise message rather than half-loading."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScheduleFileError(f"{path}: cannot read schedule file: {exc}") from exc
    if not isinstance(raw, dict):
        raise ScheduleFileError(f"{path}: top level must be a JSON object")

    def fail(where: str, why: str) -> ScheduleFileError:
        return ScheduleFileError(f"{path}: {where}: {why}")

    centre = raw.get("centre")
    if not isinstance(centre, dict):
        raise fail("centre", "missing or not an object")
    for key in ("id", "name"):
        if not isinstance(centre.get(key), str) or not centre[key].strip():
            raise fail(f"centre.{key}", "must be a non-empty string")
    if not ID_RE.match(centre["id"]):
        raise fail("centre.id", "only letters, digits, '-' and '.' are allowed")
    try:
        tz = ZoneInfo(str(raw.get("timezone", "Asia/Shanghai")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise fail("timezone", f"unknown time zone ({exc})") from exc
    closed: set[date] = set()
    for i, value in enumerate(raw.get("closed_dates", [])):
        try:
            closed.add(date.fromisoformat(value))
        except (TypeError, ValueError) as exc:
            raise fail(f"closed_dates[{i}]", "must be YYYY-MM-DD") from exc

    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail("defaults", "must be an object")
    items = raw.get("departments")
    if not isinstance(items, list) or not items:
        raise fail("departments", "must be a non-empty list")
    departments: list[Department] = []
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(f"departments[{i}]", "must be an object")
        merged = {**defaults, **item}
        where = f"departments[{i}]"
        dep_id, name = merged.get("id"), merged.get("name")
        if not isinstance(dep_id, str) or not SCHEDULE_ID_RE.match(dep_id):
            raise fail(f"{where}.id", "must be lower-case pinyin letters/digits, e.g. neike")
        if not isinstance(name, str) or not name.strip():
            raise fail(f"{where}.name", "must be a non-empty string")
        if dep_id in seen_ids or name in seen_names:
            raise fail(where, f"duplicate department id or name ({dep_id}, {name})")
        seen_ids.add(dep_id)
        seen_names.add(name)
        practitioners = merged.get("practitioners", [])
        if not isinstance(practitioners, list) or not all(
            isinstance(p, str) and p.strip() for p in practitioners
        ):
            raise fail(f"{where}.practitioners", "must be a list of names")
        weekdays = merged.get("weekdays")
        if (
            not isinstance(weekdays, list)
            or not weekdays
            or not all(isinstance(d, str) and d in WEEKDAYS for d in weekdays)
        ):
            raise fail(f"{where}.weekdays", f"must be a non-empty list of {sorted(WEEKDAYS)}")
        sessions: list[Session] = []
        for j, sess in enumerate(merged.get("sessions") or []):
            swhere = f"{where}.sessions[{j}]"
            if not isinstance(sess, dict):
                raise fail(swhere, 'must be {"start": "HH:MM", "end": "HH:MM"}')
            start, end = _parse_hhmm(sess.get("start")), _parse_hhmm(sess.get("end"))
            if start is None or end is None or end <= start:
                raise fail(swhere, "start/end must be HH:MM with end after start")
            sessions.append(Session(start, end))
        if not sessions:
            raise fail(f"{where}.sessions", "at least one session is needed")
        slot_minutes = merged.get("slot_minutes")
        if not isinstance(slot_minutes, int) or isinstance(slot_minutes, bool):
            raise fail(f"{where}.slot_minutes", "must be a whole number of minutes")
        if not 5 <= slot_minutes <= 240:
            raise fail(f"{where}.slot_minutes", "must be between 5 and 240")
        days_ahead = merged.get("days_ahead", 14)
        if not isinstance(days_ahead, int) or isinstance(days_ahead, bool):
            raise fail(f"{where}.days_ahead", "must be a whole number of days")
        if not 1 <= days_ahead <= 366:
            raise fail(f"{where}.days_ahead", "must be between 1 and 366")
        departments.append(
            Department(
                id=dep_id,
                name=name.strip(),
                practitioners=tuple(p.strip() for p in practitioners),
                weekdays=frozenset(WEEKDAYS[d] for d in weekdays),
                sessions=tuple(sorted(sessions, key=lambda s: s.start)),
                slot_minutes=slot_minutes,
                days_ahead=days_ahead,
            )
        )
    return Centre(
        id=centre["id"],
        name=centre["name"].strip(),
        address=str(centre.get("address", "")).strip(),
        tz=tz,
        closed_dates=frozenset(closed),
        departments=tuple(departments),
    )


def _parse_hhmm(value: Any) -> time | None:
    if not isinstance(value, str):
        return None
    match = HHMM_RE.match(value)
    return time(int(match.group(1)), int(match.group(2))) if match else None


def generate_slots(centre: Centre, today: date) -> list[SlotDef]:
    """Slots from `today` for each department's `days_ahead` days, on its working days only.

    Ids are `<department>-<YYYYMMDD>-<HHMM>`: stable across restarts and readable in logs.
    Practitioners take turns by day and session, so a resident sees who is on duty.
    """
    slots: list[SlotDef] = []
    for dep in centre.departments:
        for offset in range(dep.days_ahead):
            day = today + timedelta(days=offset)
            if day.isoweekday() not in dep.weekdays or day in centre.closed_dates:
                continue
            for s_index, sess in enumerate(dep.sessions):
                practitioner = None
                if dep.practitioners:
                    turn = day.toordinal() * len(dep.sessions) + s_index
                    practitioner = dep.practitioners[turn % len(dep.practitioners)]
                start = datetime.combine(day, sess.start, tzinfo=centre.tz)
                session_end = datetime.combine(day, sess.end, tzinfo=centre.tz)
                step = timedelta(minutes=dep.slot_minutes)
                while start + step <= session_end:
                    slot_id = f"{dep.id}-{start:%Y%m%d}-{start:%H%M}"
                    slots.append(SlotDef(slot_id, dep, start, start + step, practitioner))
                    start += step
    slots.sort(key=lambda s: (s.start, s.id))
    return slots


# --------------------------------------------------------------------------- FHIR helpers


class FhirError(Exception):
    """An error the server reports as an OperationOutcome with this HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: str | None = None,
        severity: str = "error",
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = expression
        self.severity = severity


def operation_outcome(
    code: str, diagnostics: str, *, expression: str | None = None, severity: str = "error"
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def _outcome_response(exc: FhirError) -> FhirResponse:
    body = operation_outcome(
        exc.code, exc.diagnostics, expression=exc.expression, severity=exc.severity
    )
    return FhirResponse(body, status_code=exc.status)


def _instant(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _now_instant() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _parse_instant(value: Any, tz: ZoneInfo) -> datetime | None:
    """FHIR dateTime with time; a missing zone means the server's own (as FHIR search says)."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\|,$])", r"\1", value)


def _split_unescaped(value: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash (FHIR search escaping)."""
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class DateCondition:
    """One FHIR date search value: prefix applied to the range [low, high)."""

    prefix: str
    low: datetime
    high: datetime

    def matches(self, point: datetime) -> bool:
        inside = self.low <= point < self.high
        return {
            "eq": inside,
            "ne": not inside,
            "ge": point >= self.low,
            "gt": point >= self.high,
            "le": point < self.high,
            "lt": point < self.low,
        }[self.prefix]


def parse_date_param(raw: str, tz: ZoneInfo) -> DateCondition:
    # An unencoded "+" in a query string arrives as a space.
    raw = raw.strip().replace(" ", "+")
    match = DATE_PARAM_RE.match(raw)
    if not match:
        raise FhirError(400, "invalid", f"无法识别的日期检索值：{raw}", expression="start")
    prefix = match.group(1) or "eq"
    if prefix in {"sa", "eb", "ap"}:
        raise FhirError(400, "not-supported", f"不支持日期前缀 {prefix}", expression="start")
    try:
        low, high = _date_range(match.group(2), match.group(3), tz)
    except (ValueError, OverflowError) as exc:
        raise FhirError(400, "invalid", f"无法识别的日期检索值：{raw}", expression="start") from exc
    return DateCondition(prefix, low, high)


def _date_range(date_part: str, time_part: str | None, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The range a FHIR date value stands for, given its precision."""
    if time_part is None:
        pieces = [int(p) for p in date_part.split("-")]
        if len(pieces) == 1:
            return datetime(pieces[0], 1, 1, tzinfo=tz), datetime(pieces[0] + 1, 1, 1, tzinfo=tz)
        if len(pieces) == 2:
            year, month = divmod(pieces[1], 12)
            low = datetime(pieces[0], pieces[1], 1, tzinfo=tz)
            return low, datetime(pieces[0] + year, month + 1, 1, tzinfo=tz)
        low = datetime(pieces[0], pieces[1], pieces[2], tzinfo=tz)
        return low, low + timedelta(days=1)
    value = datetime.fromisoformat((date_part + time_part).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    clock = time_part[1:].split("+")[0].split("-")[0].rstrip("Z")
    if "." in clock:
        precision = timedelta(microseconds=1)
    elif clock.count(":") >= 2:
        precision = timedelta(seconds=1)
    else:
        precision = timedelta(minutes=1)
    # Normalise to UTC now, so comparisons later cannot overflow at the calendar's edges.
    return value.astimezone(timezone.utc), (value + precision).astimezone(timezone.utc)


def _reference_ids(values: Iterable[str], resource_type: str) -> set[str]:
    ids = set()
    for value in values:
        value = value.strip()
        ids.add(value.rsplit(f"{resource_type}/", 1)[-1] if "/" in value else value)
    return ids


def _token_matches(token: str, identifiers: Any) -> bool:
    """FHIR token search on Identifier: `system|value`, `|value`, `system|` or `value`."""
    if not isinstance(identifiers, list):
        return False
    parts = _split_unescaped(token, "|")
    if len(parts) > 2:
        return False
    system = _unescape(parts[0]) if len(parts) == 2 else None
    value = _unescape(parts[-1])
    for ident in identifiers:
        if not isinstance(ident, dict):
            continue
        id_system, id_value = ident.get("system"), ident.get("value")
        if system is None:
            if id_value == value:
                return True
        elif system == "":
            if id_system is None and id_value == value:
                return True
        elif id_system == system and (value == "" or id_value == value):
            return True
    return False


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def _int_param(name: str, raw: str, *, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise FhirError(400, "invalid", f"参数 {name} 必须是整数：{raw}", expression=name) from exc
    return max(low, min(high, value))


# --------------------------------------------------------------------------- the store


class FhirStore:
    """Slots, appointments and their persistence; every mutation happens under one lock."""

    def __init__(self, centre: Centre, *, today: date | None, state_path: Path | None) -> None:
        self.centre = centre
        self._fixed_today = today
        self._state_path = state_path
        self._lock = threading.Lock()
        self._slots: dict[str, SlotDef] = {}
        self._ordered: list[SlotDef] = []
        self._window_day: date | None = None
        self._slot_status: dict[str, str] = {}  # only slots that are not free
        self._appointments: dict[str, dict[str, Any]] = {}
        self._departments = {d.id: d for d in centre.departments}
        with self._lock:
            self._ensure_window()
            self._load_state()

    # -- time window

    def today(self) -> date:
        return self._fixed_today or datetime.now(self.centre.tz).date()

    def _ensure_window(self) -> None:
        """Regenerate slots when the day changes, so a long-running demo keeps 14 days ahead."""
        today = self.today()
        if today == self._window_day:
            return
        for slot in generate_slots(self.centre, today):
            self._slots.setdefault(slot.id, slot)
        self._ordered = sorted(self._slots.values(), key=lambda s: (s.start, s.id))
        self._window_day = today

    # -- persistence

    def _load_state(self) -> None:
        path = self._state_path
        if path is None or not path.exists():
            return
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise ValueError(f"not a {STATE_FORMAT} file")
            appointments = state.get("appointments", {})
            statuses = state.get("slot_status", {})
            if not isinstance(appointments, dict) or not isinstance(statuses, dict):
                raise ValueError("appointments and slot_status must be objects")
            for key, appt in appointments.items():
                if not isinstance(appt, dict) or appt.get("id") != key:
                    raise ValueError(f"appointment {key!r} is malformed")
                if not str((appt.get("meta") or {}).get("versionId", "")).isdigit():
                    raise ValueError(f"appointment {key!r} has no versionId")
                if appt.get("status") not in APPOINTMENT_STATUSES:
                    raise ValueError(f"appointment {key!r} has an invalid status")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # Refuse to start rather than silently forget bookings.
            raise RuntimeError(f"cannot load FHIR stand-in state {path}: {exc}") from exc
        self._appointments = appointments
        self._slot_status = {k: v for k, v in statuses.items() if v != "free"}
        # Appointments are the source of truth for which slots they hold.
        for appt in appointments.values():
            slot_id = self._slot_id_of(appt)
            if slot_id and appt.get("status") not in RELEASING_STATUSES:
                self._slot_status[slot_id] = self._holding_status(appt["status"])

    def _save(self) -> None:
        path = self._state_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": STATE_FORMAT,
            "saved": _now_instant(),
            "appointments": self._appointments,
            "slot_status": self._slot_status,
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle, ensure_ascii=False, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _commit(self, undo: Callable[[], None]) -> None:
        """Persist, or roll the in-memory change back so memory never claims what disk lost."""
        try:
            self._save()
        except Exception:
            undo()
            log.exception("could not persist FHIR stand-in state")
            raise FhirError(500, "exception", "预约数据保存失败，请稍后再试") from None

    # -- resources

    def _service_type(self, dep: Department) -> list[dict[str, Any]]:
        coding = {"system": DEPARTMENT_SYSTEM, "code": dep.id, "display": dep.name}
        return [{"coding": [coding], "text": dep.name}]

    def _schedule_resource(self, dep: Department) -> dict[str, Any]:
        today = self.today()
        horizon_end = today + timedelta(days=dep.days_ahead)
        centre = self.centre
        location = centre.name + (f"（{centre.address}）" if centre.address else "")
        actors: list[dict[str, Any]] = [{"type": "Location", "display": location}]
        actors += [{"type": "Practitioner", "display": p} for p in dep.practitioners]
        return {
            "resourceType": "Schedule",
            "id": dep.id,
            "active": True,
            "serviceType": self._service_type(dep),
            "actor": actors,
            "planningHorizon": {
                "start": _instant(datetime.combine(today, time(), tzinfo=centre.tz)),
                "end": _instant(datetime.combine(horizon_end, time(), tzinfo=centre.tz)),
            },
            "comment": f"{centre.name}{dep.name}门诊",
        }

    def _slot_resource(self, slot: SlotDef) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Slot",
            "id": slot.id,
            "schedule": {"reference": f"Schedule/{slot.department.id}"},
            "serviceType": self._service_type(slot.department),
            "status": self._slot_status.get(slot.id, "free"),
            "start": _instant(slot.start),
            "end": _instant(slot.end),
        }
        if slot.practitioner:
            resource["extension"] = [
                {
                    "url": SLOT_PRACTITIONER_EXTENSION,
                    "valueReference": {"type": "Practitioner", "display": slot.practitioner},
                }
            ]
        return resource

    @staticmethod
    def _slot_id_of(appt: dict[str, Any]) -> str | None:
        slots = appt.get("slot")
        if isinstance(slots, list) and len(slots) == 1 and isinstance(slots[0], dict):
            match = SLOT_REF_RE.match(str(slots[0].get("reference", "")))
            if match:
                return match.group(1)
        return None

    @staticmethod
    def _holding_status(appointment_status: str) -> str:
        return "busy-tentative" if appointment_status in TENTATIVE_STATUSES else "busy"

    # -- reads and searches

    def schedules(self, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        with self._lock:
            self._ensure_window()
            wanted: set[str] | None = None
            for name, value in params:
                if name == "_id":
                    ids = {v.strip() for v in value.split(",")}
                    wanted = ids if wanted is None else wanted & ids
                elif name == "active" and value not in {"true", "false"}:
                    raise FhirError(400, "invalid", "参数 active 只能是 true 或 false")
                elif name == "active" and value == "false":
                    wanted = set()
            deps = [d for d in self.centre.departments if wanted is None or d.id in wanted]
            return [self._schedule_resource(d) for d in deps]

    def schedule(self, schedule_id: str) -> dict[str, Any]:
        with self._lock:
            self._ensure_window()
            dep = self._departments.get(schedule_id)
            if dep is None:
                raise FhirError(404, "not-found", f"排班 Schedule/{schedule_id} 不存在")
            return self._schedule_resource(dep)

    def slot(self, slot_id: str) -> dict[str, Any]:
        with self._lock:
            self._ensure_window()
            slot = self._slots.get(slot_id)
            if slot is None:
                raise FhirError(404, "not-found", f"号源 Slot/{slot_id} 不存在")
            return self._slot_resource(slot)

    def search_slots(self, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        tz = self.centre.tz
        schedule_sets: list[set[str]] = []
        status_sets: list[set[str]] = []
        date_groups: list[list[DateCondition]] = []
        descending = False
        for name, value in params:
            if name == "schedule":
                schedule_sets.append(_reference_ids(value.split(","), "Schedule"))
            elif name == "status":
                status_sets.append({v.strip() for v in value.split(",")})
            elif name == "start":
                date_groups.append([parse_date_param(v, tz) for v in value.split(",")])
            elif name == "_sort":
                keys = [k.strip() for k in value.split(",") if k.strip()]
                if any(k not in {"start", "-start"} for k in keys):
                    raise FhirError(400, "not-supported", f"号源只支持按 start 排序：{value}")
                descending = bool(keys) and keys[0] == "-start"
        with self._lock:
            self._ensure_window()
            found = []
            for slot in self._ordered:
                status = self._slot_status.get(slot.id, "free")
                if any(slot.department.id not in s for s in schedule_sets):
                    continue
                if any(status not in s for s in status_sets):
                    continue
                if any(not any(c.matches(slot.start) for c in g) for g in date_groups):
                    continue
                found.append(self._slot_resource(slot))
        if descending:
            found.reverse()
        return found

    def appointment(self, appointment_id: str) -> dict[str, Any]:
        with self._lock:
            appt = self._appointments.get(appointment_id)
            if appt is None:
                raise FhirError(404, "not-found", f"预约 Appointment/{appointment_id} 不存在")
            return appt

    def search_appointments(self, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        tokens: list[list[str]] = []
        slot_sets: list[set[str]] = []
        status_sets: list[set[str]] = []
        for name, value in params:
            if name == "identifier":
                tokens.append(_split_unescaped(value, ","))
            elif name == "slot":
                slot_sets.append(_reference_ids(value.split(","), "Slot"))
            elif name == "status":
                status_sets.append({v.strip() for v in value.split(",")})
        with self._lock:
            return [
                appt
                for appt in self._appointments.values()
                if all(any(_token_matches(t, appt.get("identifier")) for t in g) for g in tokens)
                and all(self._slot_id_of(appt) in s for s in slot_sets)
                and all(appt.get("status") in s for s in status_sets)
            ]

    # -- writes

    def _check_times(self, body: dict[str, Any], slot: SlotDef) -> None:
        tz = self.centre.tz
        for field, expected in (("start", slot.start), ("end", slot.end)):
            if field in body and _parse_instant(body[field], tz) != expected:
                raise FhirError(
                    422,
                    "business-rule",
                    f"预约时间与号源 Slot/{slot.id} 的时间不一致",
                    expression=f"Appointment.{field}",
                )

    def create_appointment(
        self, body: Any, if_none_exist: str | None
    ) -> tuple[bool, dict[str, Any]]:
        """Create an Appointment; returns (created, resource). Atomic check-and-set on the slot."""
        slot_id = validate_appointment(body, statuses=CREATE_STATUSES, tz=self.centre.tz)
        conditions = _parse_if_none_exist(if_none_exist) if if_none_exist is not None else None
        with self._lock:
            self._ensure_window()
            if conditions is not None:
                matches = [
                    a
                    for a in self._appointments.values()
                    if all(
                        any(_token_matches(t, a.get("identifier")) for t in g) for g in conditions
                    )
                ]
                if len(matches) > 1:
                    raise FhirError(412, "duplicate", "条件创建匹配到多条预约，请使用更精确的标识")
                if matches:
                    return False, matches[0]
            slot = self._slots.get(slot_id)
            if slot is None:
                raise FhirError(
                    422,
                    "not-found",
                    f"号源 Slot/{slot_id} 不存在",
                    expression="Appointment.slot[0]",
                )
            self._check_times(body, slot)
            previous = self._slot_status.get(slot_id, "free")
            if previous != "free":
                raise FhirError(
                    409,
                    "conflict",
                    f"号源 Slot/{slot_id} 已被预约或不可预约，请选择其他时间",
                    expression="Appointment.slot[0]",
                )
            appointment_id = str(uuid.uuid4())
            resource = {
                **body,
                "id": appointment_id,
                "meta": {"versionId": "1", "lastUpdated": _now_instant()},
            }
            resource.setdefault("created", _now_instant())
            self._appointments[appointment_id] = resource
            self._slot_status[slot_id] = self._holding_status(resource["status"])

            def undo() -> None:
                del self._appointments[appointment_id]
                self._slot_status.pop(slot_id, None)

            self._commit(undo)
            return True, resource

    def update_appointment(
        self, appointment_id: str, body: Any, if_match: str | None
    ) -> dict[str, Any]:
        """Replace an Appointment; cancelling frees its slot, un-cancelling takes it again."""
        slot_id = validate_appointment(body, statuses=APPOINTMENT_STATUSES, tz=self.centre.tz)
        if body.get("id") != appointment_id:
            raise FhirError(
                400, "invalid", "请求体中的 id 必须与地址中的 id 一致", expression="Appointment.id"
            )
        with self._lock:
            self._ensure_window()
            old = self._appointments.get(appointment_id)
            if old is None:
                raise FhirError(404, "not-found", f"预约 Appointment/{appointment_id} 不存在")
            version = int(old["meta"]["versionId"])
            if if_match is not None:
                match = ETAG_RE.match(if_match.strip())
                if not match or match.group(1) != str(version):
                    raise FhirError(412, "conflict", "预约已被修改，请重新读取后再提交")
            old_slot = self._slot_id_of(old)
            if slot_id != old_slot:
                raise FhirError(
                    422,
                    "business-rule",
                    "不能修改预约对应的号源，请取消后重新预约",
                    expression="Appointment.slot[0]",
                )
            slot = self._slots.get(slot_id)
            old_holds = old.get("status") not in RELEASING_STATUSES
            new_holds = body["status"] not in RELEASING_STATUSES
            previous_status = self._slot_status.get(slot_id)
            if new_holds:
                if slot is None:
                    raise FhirError(
                        422,
                        "not-found",
                        f"号源 Slot/{slot_id} 不存在",
                        expression="Appointment.slot[0]",
                    )
                self._check_times(body, slot)
                if not old_holds and self._slot_status.get(slot_id, "free") != "free":
                    raise FhirError(
                        409,
                        "conflict",
                        f"号源 Slot/{slot_id} 已被预约或不可预约，无法恢复该预约",
                        expression="Appointment.slot[0]",
                    )
                self._slot_status[slot_id] = self._holding_status(body["status"])
            elif old_holds:
                self._slot_status.pop(slot_id, None)
            resource = {
                **body,
                "meta": {"versionId": str(version + 1), "lastUpdated": _now_instant()},
            }
            self._appointments[appointment_id] = resource

            def undo() -> None:
                self._appointments[appointment_id] = old
                if previous_status is None:
                    self._slot_status.pop(slot_id, None)
                else:
                    self._slot_status[slot_id] = previous_status

            self._commit(undo)
            return resource


def _parse_if_none_exist(header: str) -> list[list[str]]:
    """`If-None-Exist: identifier=system|value` (optionally prefixed by `Appointment?`)."""
    query = header.split("?", 1)[1] if "?" in header else header
    pairs = parse_qsl(query.strip(), keep_blank_values=True)
    if not pairs:
        raise FhirError(400, "invalid", "If-None-Exist 头不能为空")
    groups = []
    for name, value in pairs:
        if name != "identifier":
            raise FhirError(400, "not-supported", f"If-None-Exist 只支持 identifier 条件：{name}")
        if not value:
            raise FhirError(400, "invalid", "If-None-Exist 中的 identifier 不能为空")
        groups.append(_split_unescaped(value, ","))
    return groups


def validate_appointment(body: Any, *, statuses: frozenset[str], tz: ZoneInfo) -> str:
    """Check the parts of an R4 Appointment this server relies on; return the slot id."""

    def bad(diagnostics: str, expression: str, code: str = "structure") -> FhirError:
        return FhirError(400, code, diagnostics, expression=expression)

    if not isinstance(body, dict):
        raise bad("请求内容必须是 FHIR Appointment JSON 对象", "Appointment")
    if body.get("resourceType") != "Appointment":
        raise bad("resourceType 必须是 Appointment", "Appointment.resourceType", "invalid")
    status = body.get("status")
    if not isinstance(status, str) or status not in statuses:
        allowed = "、".join(sorted(statuses))
        raise bad(f"预约状态无效（可用：{allowed}）", "Appointment.status", "value")
    slots = body.get("slot")
    if not isinstance(slots, list) or len(slots) != 1 or not isinstance(slots[0], dict):
        raise bad("预约必须且只能引用一个号源", "Appointment.slot", "required")
    reference = slots[0].get("reference")
    match = SLOT_REF_RE.match(reference) if isinstance(reference, str) else None
    if not match:
        raise bad("号源引用格式应为 Slot/<id>", "Appointment.slot[0].reference", "value")
    participants = body.get("participant")
    if not isinstance(participants, list) or not participants:
        raise bad("预约至少需要一个参与者", "Appointment.participant", "required")
    for i, part in enumerate(participants):
        where = f"Appointment.participant[{i}]"
        if not isinstance(part, dict):
            raise bad("参与者格式无效", where)
        if not isinstance(part.get("status"), str) or part["status"] not in PARTICIPANT_STATUSES:
            raise bad("参与者状态无效", f"{where}.status", "value")
        actor = part.get("actor")
        if actor is not None and not isinstance(actor, dict):
            raise bad("参与者 actor 必须是引用对象", f"{where}.actor")
        if actor is None and not isinstance(part.get("type"), list):
            raise bad("参与者需要 actor 或 type", where, "invariant")
    identifiers = body.get("identifier", [])
    if not isinstance(identifiers, list) or not all(
        isinstance(i, dict) and isinstance(i.get("value"), str) and i["value"] for i in identifiers
    ):
        raise bad("identifier 必须是带 value 的标识列表", "Appointment.identifier")
    times = {}
    for field in ("start", "end"):
        if field in body:
            times[field] = _parse_instant(body[field], tz)
            if times[field] is None:
                raise bad("时间格式无效", f"Appointment.{field}", "value")
    if len(times) == 1:
        raise bad("start 和 end 必须同时提供", "Appointment", "invariant")
    if not times and status not in UNTIMED_STATUSES:
        raise bad("已确认的预约必须有 start 和 end", "Appointment", "invariant")
    if times and times["end"] <= times["start"]:
        raise bad("结束时间必须晚于开始时间", "Appointment.end", "invariant")
    return match.group(1)


# --------------------------------------------------------------------------- the app


def _bundle(
    request: Request, resources: list[dict[str, Any]], count: int, offset: int
) -> dict[str, Any]:
    base = _base_url(request)
    page = resources[offset : offset + count]
    kept = [(k, v) for k, v in _params(request) if k not in {"_count", "_offset"}]
    path = str(request.url).split("?", 1)[0]

    def link(relation: str, at: int) -> dict[str, str]:
        query = urlencode([*kept, ("_count", str(count)), ("_offset", str(at))])
        return {"relation": relation, "url": f"{path}?{query}"}

    links = [link("self", offset)]
    if offset + count < len(resources):
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": _now_instant()},
        "type": "searchset",
        "total": len(resources),
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page
        ],
    }


def _paging(request: Request) -> tuple[int, int]:
    params = request.query_params
    count = _int_param("_count", params.get("_count", str(DEFAULT_COUNT)), low=0, high=MAX_COUNT)
    offset = _int_param("_offset", params.get("_offset", "0"), low=0, high=10**9)
    return count, offset


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _version_headers(resource: dict[str, Any]) -> dict[str, str]:
    meta = resource.get("meta", {})
    headers = {"ETag": f'W/"{meta.get("versionId", "1")}"'}
    try:
        updated = datetime.fromisoformat(meta["lastUpdated"])
        headers["Last-Modified"] = format_datetime(updated.astimezone(timezone.utc), usegmt=True)
    except (KeyError, TypeError, ValueError):
        pass
    return headers


def _check_id(resource_id: str, resource_type: str) -> None:
    if not ID_RE.match(resource_id):
        raise FhirError(404, "not-found", f"{resource_type}/{resource_id} 不存在")


async def _read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and not (
        content_type in {"application/json", "application/json+fhir"}
        or content_type.endswith("+json")
    ):
        raise FhirError(
            415, "not-supported", f"不支持的内容类型 {content_type}，请使用 {FHIR_JSON}"
        )
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise FhirError(413, "too-long", "请求内容过大")
    if not raw.strip():
        raise FhirError(400, "structure", "请求内容为空")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FhirError(400, "structure", f"请求内容不是有效的 JSON：{exc}") from exc


def capability_statement(centre: Centre) -> dict[str, Any]:
    def resource(
        kind: str, interactions: list[str], params: list[tuple[str, str]], **extra: Any
    ) -> dict[str, Any]:
        return {
            "type": kind,
            "interaction": [{"code": code} for code in interactions],
            "searchParam": [{"name": n, "type": t} for n, t in params],
            **extra,
        }

    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _now_instant(),
        "kind": "instance",
        "software": {"name": "Linli FHIR stand-in", "version": "1"},
        "implementation": {"description": f"{centre.name}（演示数据）"},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", FHIR_JSON],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    resource("Schedule", ["read", "search-type"], [("_id", "token")]),
                    resource(
                        "Slot",
                        ["read", "search-type"],
                        [("schedule", "reference"), ("status", "token"), ("start", "date")],
                    ),
                    resource(
                        "Appointment",
                        ["read", "search-type", "create", "update"],
                        [("identifier", "token"), ("slot", "reference"), ("status", "token")],
                        versioning="versioned-update",
                        conditionalCreate=True,
                        updateCreate=False,
                    ),
                ],
            }
        ],
    }


def create_app(
    schedule_path: Path, *, today: date | None = None, state_path: Path | None = None
) -> FastAPI:
    """The stand-in as an ASGI app; `today` pins the slot window (tests), else the clock does."""
    centre = load_schedule(schedule_path)
    store = FhirStore(centre, today=today, state_path=state_path)
    app = FastAPI(title=f"{centre.name} FHIR R4 stand-in", version="1")
    app.state.store = store

    @app.exception_handler(FhirError)
    async def _fhir_error(_: Request, exc: FhirError) -> Response:
        return _outcome_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        text = {404: "不支持的资源或地址", 405: "不支持该操作"}.get(
            exc.status_code, str(exc.detail)
        )
        return _outcome_response(FhirError(exc.status_code, code, text))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _outcome_response(FhirError(400, "invalid", f"请求参数无效：{exc.errors()}"))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error in FHIR stand-in", exc_info=exc)
        return _outcome_response(FhirError(500, "exception", "服务器内部错误"))

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        return FhirResponse(capability_statement(centre))

    @app.get("/fhir/Schedule")
    def search_schedules(request: Request) -> Response:
        count, offset = _paging(request)
        return FhirResponse(_bundle(request, store.schedules(_params(request)), count, offset))

    @app.get("/fhir/Schedule/{schedule_id}")
    def read_schedule(schedule_id: str) -> Response:
        _check_id(schedule_id, "Schedule")
        return FhirResponse(store.schedule(schedule_id))

    @app.get("/fhir/Slot")
    def search_slots(request: Request) -> Response:
        count, offset = _paging(request)
        return FhirResponse(_bundle(request, store.search_slots(_params(request)), count, offset))

    @app.get("/fhir/Slot/{slot_id}")
    def read_slot(slot_id: str) -> Response:
        _check_id(slot_id, "Slot")
        return FhirResponse(store.slot(slot_id))

    @app.get("/fhir/Appointment")
    def search_appointments(request: Request) -> Response:
        count, offset = _paging(request)
        found = store.search_appointments(_params(request))
        return FhirResponse(_bundle(request, found, count, offset))

    @app.get("/fhir/Appointment/{appointment_id}")
    def read_appointment(appointment_id: str) -> Response:
        _check_id(appointment_id, "Appointment")
        resource = store.appointment(appointment_id)
        return FhirResponse(resource, headers=_version_headers(resource))

    @app.post("/fhir/Appointment")
    async def create_appointment(request: Request) -> Response:
        body = await _read_json(request)
        if_none_exist = request.headers.get("if-none-exist")
        created, resource = await run_in_threadpool(store.create_appointment, body, if_none_exist)
        location = f"{_base_url(request)}/Appointment/{resource['id']}"
        if created:
            location += f"/_history/{resource['meta']['versionId']}"
        headers = {**_version_headers(resource), "Location": location}
        return FhirResponse(resource, status_code=201 if created else 200, headers=headers)

    @app.put("/fhir/Appointment/{appointment_id}")
    async def update_appointment(appointment_id: str, request: Request) -> Response:
        _check_id(appointment_id, "Appointment")
        body = await _read_json(request)
        resource = await run_in_threadpool(
            store.update_appointment, appointment_id, body, request.headers.get("if-match")
        )
        return FhirResponse(resource, headers=_version_headers(resource))

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m workorders.hospital.standin",
        description="Stand-in FHIR R4 server for a community health centre (demo and tests).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--schedule", type=Path, default=DEFAULT_SCHEDULE)
    parser.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE,
        help="JSON file keeping bookings across restarts",
    )
    parser.add_argument("--no-state", action="store_true", help="keep bookings in memory only")
    parser.add_argument(
        "--today", type=date.fromisoformat, default=None, help="fix the first day (YYYY-MM-DD)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    app = create_app(
        args.schedule, today=args.today, state_path=None if args.no_state else args.state
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
