"""The FHIR hospital adapter against the stand-in FHIR server, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.servers import free_port, serve_app
from workorders.hospital import (
    Booking,
    FhirHospitalAdapter,
    HospitalAdapter,
    HospitalError,
    HospitalUnavailable,
    SlotUnavailable,
)
from workorders.hospital.standin import create_app, generate_slots, load_schedule

SH = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 11, 23)  # a Monday
ROOT = Path(__file__).resolve().parent.parent
FHIR_JSON = "application/fhir+json"

SCHEDULE: dict[str, Any] = {
    "centre": {"id": "ceshi", "name": "测试社区卫生服务中心", "address": "测试路1号"},
    "timezone": "Asia/Shanghai",
    "closed_dates": ["2026-11-28"],
    "departments": [
        {
            "id": "neike",
            "name": "内科",
            "practitioners": ["王医生", "李医生"],
            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat"],
            "sessions": [{"start": "08:00", "end": "11:30"}, {"start": "13:30", "end": "16:30"}],
            "slot_minutes": 30,
            "days_ahead": 7,
        },
        {
            "id": "yanke",
            "name": "眼科",
            "practitioners": ["周医生"],
            "weekdays": ["tue", "thu"],
            "sessions": [{"start": "08:00", "end": "10:00"}],
            "slot_minutes": 30,
            "days_ahead": 7,
        },
        {
            "id": "quanke",
            "name": "全科",
            "practitioners": ["张医生"],
            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "sessions": [{"start": "08:00", "end": "09:00"}],
            "slot_minutes": 15,
            "days_ahead": 7,
        },
        {
            "id": "tijian",
            "name": "体检",
            "practitioners": [],
            "weekdays": ["mon", "tue", "wed", "thu", "fri"],
            "sessions": [{"start": "07:30", "end": "09:30"}],
            "slot_minutes": 30,
            "days_ahead": 7,
        },
    ],
}


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SH)


@pytest.fixture
def schedule_path(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(SCHEDULE, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def fhir_base(schedule_path: Path) -> Iterator[str]:
    with serve_app(create_app(schedule_path, today=TODAY)) as base_url:
        yield f"{base_url}/fhir"


@pytest.fixture
def adapter(fhir_base: str) -> Iterator[FhirHospitalAdapter]:
    with FhirHospitalAdapter(fhir_base) as hospital:
        yield hospital


def book(hospital: FhirHospitalAdapter, slot_id: str, key: str) -> Booking:
    return hospital.book(
        slot_id, patient_ref="resident-1", patient_name="张三", idempotency_key=key
    )


def slot_status(fhir_base: str, slot_id: str) -> str:
    response = httpx.get(f"{fhir_base}/Slot/{slot_id}")
    assert response.status_code == 200
    return str(response.json()["status"])


# --------------------------------------------------------------------------- reads


def test_adapter_satisfies_protocol(adapter: FhirHospitalAdapter) -> None:
    assert isinstance(adapter, HospitalAdapter)


def test_metadata_is_a_capability_statement(fhir_base: str) -> None:
    response = httpx.get(f"{fhir_base}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    kinds = {r["type"] for r in body["rest"][0]["resource"]}
    assert kinds == {"Schedule", "Slot", "Appointment"}


def test_departments_are_listed_in_schedule_order(adapter: FhirHospitalAdapter) -> None:
    assert adapter.departments() == ["内科", "眼科", "全科", "体检"]


def test_free_slots_are_sorted_free_and_inside_the_window(adapter: FhirHospitalAdapter) -> None:
    slots = adapter.free_slots("内科", at(TODAY, 9), at(TODAY, 11))
    assert [s.slot_id for s in slots] == [
        "neike-20261123-0900",
        "neike-20261123-0930",
        "neike-20261123-1000",
        "neike-20261123-1030",
    ]
    for slot in slots:
        assert slot.department == "内科"
        assert slot.start.utcoffset() == timedelta(hours=8)
        assert slot.end - slot.start == timedelta(minutes=30)
        assert slot.practitioner in {"王医生", "李医生"}
    assert [s.start for s in slots] == sorted(s.start for s in slots)

    week = adapter.free_slots("内科", at(TODAY, 0), at(TODAY + timedelta(days=7), 0), limit=500)
    assert len(week) == 5 * 13  # Mon-Fri (Saturday is a closed date), 13 slots a day
    assert [s.start for s in week] == sorted(s.start for s in week)
    assert adapter.free_slots("内科", at(TODAY, 9), at(TODAY, 11), limit=2) == slots[:2]


def test_department_names_resolve_parts_and_unknown_fails(adapter: FhirHospitalAdapter) -> None:
    slots = adapter.free_slots("全科/家庭医生", at(TODAY, 0), at(TODAY, 23))
    assert [s.department for s in slots] == ["全科"] * 4
    with pytest.raises(HospitalError) as info:
        adapter.free_slots("神经外科", at(TODAY, 0), at(TODAY, 23))
    assert not isinstance(info.value, (SlotUnavailable, HospitalUnavailable))
    assert "内科" in info.value.message


def test_naive_datetimes_are_rejected(adapter: FhirHospitalAdapter) -> None:
    with pytest.raises(ValueError):
        adapter.free_slots("内科", datetime(2026, 11, 23, 8), datetime(2026, 11, 23, 12))


def test_days_the_department_does_not_work_have_no_slots(adapter: FhirHospitalAdapter) -> None:
    monday, tuesday = TODAY, TODAY + timedelta(days=1)
    assert adapter.free_slots("眼科", at(monday, 0), at(tuesday, 0)) == []
    assert len(adapter.free_slots("眼科", at(tuesday, 0), at(tuesday, 23))) == 4
    week = adapter.free_slots("眼科", at(monday, 0), at(monday + timedelta(days=7), 0), limit=100)
    assert {s.start.isoweekday() for s in week} == {2, 4}
    # 体检 works mornings only, and not at weekends.
    checkups = adapter.free_slots("体检", at(monday, 0), at(monday + timedelta(days=7), 0), 100)
    assert {s.start.hour for s in checkups} <= {7, 8, 9}
    assert all(s.end.hour < 10 for s in checkups)
    assert all(s.practitioner is None for s in checkups)
    # The closed date (Saturday) has no slots even for departments working Saturdays.
    saturday = date(2026, 11, 28)
    assert adapter.free_slots("内科", at(saturday, 0), at(saturday, 23)) == []
    sunday = date(2026, 11, 29)
    assert len(adapter.free_slots("全科", at(sunday, 0), at(sunday, 23))) == 4


def test_slot_search_follows_fhir_semantics(fhir_base: str) -> None:
    params: list[tuple[str, str]] = [
        ("schedule", "Schedule/yanke"),
        ("start", "2026-11-24"),
        ("_sort", "start"),
        ("_count", "3"),
    ]
    response = httpx.get(f"{fhir_base}/Slot", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 4
    assert [e["resource"]["id"] for e in bundle["entry"]] == [
        "yanke-20261124-0800",
        "yanke-20261124-0830",
        "yanke-20261124-0900",
    ]
    assert bundle["entry"][0]["fullUrl"] == f"{fhir_base}/Slot/yanke-20261124-0800"
    next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    rest = httpx.get(next_url).json()
    assert [e["resource"]["id"] for e in rest["entry"]] == ["yanke-20261124-0930"]

    descending = httpx.get(
        f"{fhir_base}/Slot",
        params=[
            ("schedule", "yanke"),
            ("start", "gt2026-11-24T08:00:00+08:00"),
            ("start", "le2026-11-24T09:00:00+08:00"),
            ("_sort", "-start"),
        ],
    ).json()
    assert [e["resource"]["id"] for e in descending["entry"]] == [
        "yanke-20261124-0900",
        "yanke-20261124-0830",
    ]
    bad = httpx.get(f"{fhir_base}/Slot", params={"start": "ge-tomorrow"})
    assert bad.status_code == 400
    assert bad.json()["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- booking


def test_booking_marks_the_slot_busy(adapter: FhirHospitalAdapter, fhir_base: str) -> None:
    slot_id = "neike-20261124-1000"
    booking = book(adapter, slot_id, "wo-1")
    assert booking.slot_id == slot_id
    assert booking.department == "内科"
    assert booking.start == at(TODAY + timedelta(days=1), 10)
    assert booking.end == at(TODAY + timedelta(days=1), 10, 30)
    assert slot_status(fhir_base, slot_id) == "busy"
    window = adapter.free_slots(
        "内科", at(TODAY + timedelta(days=1), 9), at(TODAY, 23) + timedelta(days=1)
    )
    assert slot_id not in {s.slot_id for s in window}
    assert "neike-20261124-0930" in {s.slot_id for s in window}

    stored = httpx.get(f"{fhir_base}/Appointment/{booking.appointment_id}").json()
    assert stored["status"] == "booked"
    assert stored["slot"] == [{"reference": f"Slot/{slot_id}"}]
    assert stored["identifier"] == [{"system": "urn:linli:idempotency", "value": "wo-1"}]
    assert stored["participant"][0]["actor"]["display"] == "张三"
    assert stored["participant"][0]["actor"]["reference"] == "Patient/resident-1"
    assert stored["meta"]["versionId"] == "1"


def test_booking_a_taken_slot_raises_slot_unavailable(adapter: FhirHospitalAdapter) -> None:
    book(adapter, "neike-20261124-1030", "wo-2")
    with pytest.raises(SlotUnavailable) as info:
        book(adapter, "neike-20261124-1030", "wo-3")
    assert "换一个时间" in info.value.message
    assert "409" in info.value.detail


def test_retried_booking_returns_the_same_appointment(adapter: FhirHospitalAdapter) -> None:
    first = book(adapter, "neike-20261125-0800", "wo-retry")
    again = book(adapter, "neike-20261125-0800", "wo-retry")
    assert again == first
    # The same key for a different slot must not silently report the first booking.
    with pytest.raises(HospitalError) as info:
        book(adapter, "neike-20261125-0830", "wo-retry")
    assert not isinstance(info.value, SlotUnavailable)


def test_conditional_create_status_codes(fhir_base: str) -> None:
    body = {
        "resourceType": "Appointment",
        "status": "booked",
        "identifier": [{"system": "urn:linli:idempotency", "value": "raw|1,2"}],
        "start": "2026-11-25T09:00:00+08:00",
        "end": "2026-11-25T09:30:00+08:00",
        "slot": [{"reference": "Slot/neike-20261125-0900"}],
        "participant": [{"actor": {"display": "李四"}, "status": "accepted"}],
    }
    headers = {
        "Content-Type": FHIR_JSON,
        "If-None-Exist": "identifier=urn:linli:idempotency|raw\\|1\\,2",
    }
    created = httpx.post(f"{fhir_base}/Appointment", json=body, headers=headers)
    assert created.status_code == 201
    assert created.headers["location"].endswith("/_history/1")
    assert created.headers["etag"] == 'W/"1"'
    repeated = httpx.post(f"{fhir_base}/Appointment", json=body, headers=headers)
    assert repeated.status_code == 200
    assert repeated.json()["id"] == created.json()["id"]
    found = httpx.get(
        f"{fhir_base}/Appointment", params={"identifier": "urn:linli:idempotency|raw\\|1\\,2"}
    ).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]


def test_cancel_frees_the_slot_and_is_idempotent(
    adapter: FhirHospitalAdapter, fhir_base: str
) -> None:
    slot_id = "yanke-20261126-0830"
    booking = book(adapter, slot_id, "wo-cancel")
    adapter.cancel(booking.appointment_id)
    adapter.cancel(booking.appointment_id)
    assert slot_status(fhir_base, slot_id) == "free"
    stored = httpx.get(f"{fhir_base}/Appointment/{booking.appointment_id}").json()
    assert stored["status"] == "cancelled"
    assert stored["cancelationReason"]["coding"][0]["code"] == "pat"
    assert stored["meta"]["versionId"] == "2"
    # A retry of the cancelled booking does not pretend it is still booked...
    with pytest.raises(HospitalError):
        book(adapter, slot_id, "wo-cancel")
    # ...and the freed slot can be booked again under a new key.
    rebooked = book(adapter, slot_id, "wo-cancel-2")
    assert rebooked.appointment_id != booking.appointment_id
    with pytest.raises(HospitalError):
        adapter.cancel("no-such-appointment")


def test_stale_update_is_rejected(adapter: FhirHospitalAdapter, fhir_base: str) -> None:
    booking = book(adapter, "neike-20261126-1400", "wo-stale")
    url = f"{fhir_base}/Appointment/{booking.appointment_id}"
    appointment = httpx.get(url).json()
    appointment["status"] = "cancelled"
    stale = httpx.put(url, json=appointment, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    ok = httpx.put(url, json=appointment, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert ok.json()["meta"]["versionId"] == "2"


def test_concurrent_bookings_of_one_slot_have_one_winner(fhir_base: str) -> None:
    slot_id = "quanke-20261124-0800"
    workers = 30
    barrier = threading.Barrier(workers)
    results: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        with FhirHospitalAdapter(fhir_base, timeout=20) as hospital:
            hospital.departments()  # warm the schedule cache outside the race
            barrier.wait()
            try:
                book(hospital, slot_id, f"race-{n}")
                outcome = "booked"
            except SlotUnavailable:
                outcome = "taken"
            except Exception as exc:  # recorded so the assertion shows it
                outcome = repr(exc)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["booked"] + ["taken"] * (workers - 1)
    found = httpx.get(f"{fhir_base}/Appointment", params={"slot": f"Slot/{slot_id}"}).json()
    assert found["total"] == 1


def test_restart_with_a_state_file_keeps_bookings(schedule_path: Path, tmp_path: Path) -> None:
    state = tmp_path / "var" / "fhir-state.json"
    with serve_app(create_app(schedule_path, today=TODAY, state_path=state)) as base_url:
        hospital = FhirHospitalAdapter(f"{base_url}/fhir")
        kept = book(hospital, "neike-20261127-0800", "wo-keep")
        dropped = book(hospital, "neike-20261127-0830", "wo-drop")
        hospital.cancel(dropped.appointment_id)
        hospital.close()
    assert json.loads(state.read_text(encoding="utf-8"))["appointments"]
    assert not list(state.parent.glob("*.tmp"))

    with serve_app(create_app(schedule_path, today=TODAY, state_path=state)) as base_url:
        fhir_base = f"{base_url}/fhir"
        assert slot_status(fhir_base, "neike-20261127-0800") == "busy"
        assert slot_status(fhir_base, "neike-20261127-0830") == "free"
        with FhirHospitalAdapter(fhir_base) as hospital:
            assert book(hospital, "neike-20261127-0800", "wo-keep") == kept
            with pytest.raises(SlotUnavailable):
                book(hospital, "neike-20261127-0800", "wo-other")
            hospital.cancel(dropped.appointment_id)  # still cancelled, still fine


def test_corrupt_state_file_refuses_to_start(schedule_path: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json", encoding="utf-8")
    with pytest.raises(RuntimeError):
        create_app(schedule_path, today=TODAY, state_path=state)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", FHIR_JSON),
        (b"", FHIR_JSON),
        (b"[]", FHIR_JSON),
        (b'{"resourceType": "Patient"}', FHIR_JSON),
        (
            json.dumps(
                {
                    "resourceType": "Appointment",
                    "status": "booked",
                    "start": "2026-11-24T08:00:00+08:00",
                    "end": "2026-11-24T08:30:00+08:00",
                    "slot": [{"reference": "Slot/neike-20261124-0800"}, {"reference": "Slot/x"}],
                    "participant": [{"actor": {"display": "张三"}, "status": "accepted"}],
                }
            ).encode(),
            FHIR_JSON,
        ),
        (
            json.dumps(
                {
                    "resourceType": "Appointment",
                    "status": "booked",
                    "slot": [{"reference": "Slot/neike-20261124-0800"}],
                    "participant": [{"actor": {"display": "张三"}, "status": "accepted"}],
                }
            ).encode(),
            FHIR_JSON,
        ),
        (
            json.dumps(
                {
                    "resourceType": "Appointment",
                    "status": "fulfilled",
                    "slot": [{"reference": "Slot/neike-20261124-0800"}],
                    "participant": [{"actor": {"display": "张三"}, "status": "accepted"}],
                }
            ).encode(),
            "application/json",
        ),
        (
            json.dumps(
                {
                    "resourceType": "Appointment",
                    "status": "proposed",
                    "slot": [{"reference": "Slot/neike-20261124-0800"}],
                }
            ).encode(),
            FHIR_JSON,
        ),
        (b'{"resourceType": "Appointment", "status": "booked", "slot": "x"}', None),
    ],
)
def test_malformed_appointments_get_400(
    fhir_base: str, content: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{fhir_base}/Appointment", content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert slot_status(fhir_base, "neike-20261124-0800") == "free"


def test_unknown_resources_get_404_outcomes(fhir_base: str) -> None:
    for path in ("Slot/neike-20990101-0800", "Appointment/nope", "Schedule/nope", "Patient/1"):
        response = httpx.get(f"{fhir_base}/{path}")
        assert response.status_code == 404, path
        assert response.json()["resourceType"] == "OperationOutcome"
    body = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2099-01-01T08:00:00+08:00",
        "end": "2099-01-01T08:30:00+08:00",
        "slot": [{"reference": "Slot/neike-20990101-0800"}],
        "participant": [{"actor": {"display": "张三"}, "status": "accepted"}],
    }
    response = httpx.post(f"{fhir_base}/Appointment", json=body)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Appointment.slot[0]"]


def test_unknown_slot_raises_slot_unavailable(adapter: FhirHospitalAdapter) -> None:
    for slot_id in ("neike-20990101-0800", "../metadata", ""):
        with pytest.raises(SlotUnavailable):
            book(adapter, slot_id, f"wo-unknown-{slot_id}")


def test_server_down_raises_hospital_unavailable() -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"
    with FhirHospitalAdapter(base, timeout=2) as hospital:
        with pytest.raises(HospitalUnavailable) as info:
            hospital.departments()
        assert "连不上" in info.value.message
        with pytest.raises(HospitalUnavailable):
            book(hospital, "neike-20261124-0800", "wo-down")
        with pytest.raises(HospitalUnavailable):
            hospital.cancel("some-appointment")


def test_failing_and_slow_servers_raise_hospital_unavailable() -> None:
    broken = FastAPI()

    @broken.get("/fhir/Schedule")
    async def slow_schedules() -> JSONResponse:
        await asyncio.sleep(0.6)
        return JSONResponse({"resourceType": "Bundle", "type": "searchset", "entry": []})

    @broken.get("/fhir/Slot/{slot_id}")
    async def failing_slot(slot_id: str) -> JSONResponse:
        outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "exception"}]}
        return JSONResponse(outcome, status_code=503)

    with (
        serve_app(broken) as base_url,
        FhirHospitalAdapter(f"{base_url}/fhir", timeout=0.2) as hospital,
    ):
        with pytest.raises(HospitalUnavailable) as info:
            hospital.departments()
        assert "超时" in info.value.message
        with pytest.raises(HospitalUnavailable) as info:
            book(hospital, "neike-20261124-0800", "wo-503")
        assert "503" in info.value.detail


# --------------------------------------------------------------------------- data file


def test_shipped_schedule_covers_the_contract_departments() -> None:
    centre = load_schedule(ROOT / "data" / "health_centre" / "schedule.json")
    expected = {
        "内科",
        "外科",
        "骨科",
        "眼科",
        "口腔科",
        "皮肤科",
        "心内科",
        "中医科",
        "妇科",
        "儿科",
        "耳鼻喉科",
        "全科",
        "体检",
    }
    assert {d.name for d in centre.departments} == expected
    slots = generate_slots(centre, TODAY)
    by_department: dict[str, list[Any]] = {}
    for slot in slots:
        by_department.setdefault(slot.department.name, []).append(slot)
    assert set(by_department) == expected
    assert len({s.id for s in slots}) == len(slots)
    # Ids are stable: the same day generated from another "today" gives the same ids.
    later = {s.id for s in generate_slots(centre, TODAY + timedelta(days=1))}
    assert {s.id for s in slots if s.start.date() > TODAY} <= later
