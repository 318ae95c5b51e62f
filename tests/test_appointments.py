"""Medical appointments through the API and the FHIR stand-in: listing, booking, cancelling."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import httpx

from tests.factories import resident_body
from tests.support import Api


def _free(api: Api, department: str = "内科", days: int = 14) -> list[dict[str, Any]]:
    response = api.call(
        "bot",
        "GET",
        "/appointments/slots",
        params={
            "department": department,
            "date_from": (date.today() + timedelta(days=1)).isoformat(),
            "days": days,
            "limit": 200,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def _book(
    api: Api, resident_id: int, slot: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return api.call(
        "bot",
        "POST",
        "/work-orders",
        headers={"Idempotency-Key": key or str(uuid.uuid4())},
        json={
            "kind": "medical_appointment",
            "channel": "wechat",
            "resident_id": resident_id,
            "details": {
                "department": slot["department"],
                "slot_id": slot["slot_id"],
                "person": "老伴儿",
            },
        },
    )


def test_departments_and_free_slots(api: Api) -> None:
    departments = api.call("bot", "GET", "/appointments/departments").json()
    assert {"内科", "眼科", "口腔科", "中医科"} <= set(departments)
    slots = _free(api)
    assert slots and all(s["department"] == "内科" for s in slots)
    assert [s["start"] for s in slots] == sorted(s["start"] for s in slots)
    unknown = api.call(
        "bot",
        "GET",
        "/appointments/slots",
        params={"department": "宠物科", "date_from": date.today().isoformat()},
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_department"


def test_booking_creates_an_order_and_takes_the_slot(api: Api) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    slot = _free(api)[-1]
    booked = _book(api, rid, slot)
    assert booked.status_code == 201, booked.text
    order = booked.json()
    assert order["kind"] == "medical_appointment"
    assert order["details"]["appointment_id"]
    assert order["scheduled_at"] is not None
    assert slot["slot_id"] not in {s["slot_id"] for s in _free(api)}
    # Cancelling the order cancels the appointment at the hospital: the slot is free again.
    cancelled = api.call(
        "bot",
        "POST",
        f"/work-orders/{order['id']}/transitions",
        json={"to": "cancelled", "reason": "不去了"},
    )
    assert cancelled.status_code == 200
    assert slot["slot_id"] in {s["slot_id"] for s in _free(api)}


def test_a_taken_slot_is_refused(api: Api) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    slot = _free(api, "外科")[-1]
    assert _book(api, rid, slot).status_code == 201
    second = _book(api, rid, slot)
    assert second.status_code == 409
    assert second.json()["code"] == "slot_unavailable"


def test_no_slot_is_booked_twice_under_concurrency(api: Api) -> None:
    residents = [
        api.call("bot", "POST", "/residents", json=resident_body()).json()["id"] for _ in range(3)
    ]
    slot = _free(api, "中医科")[-2]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: _book(api, residents[i % 3], slot), range(20)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 19, [r.text for r in results if r.status_code not in (201, 409)]
    orders = api.call(
        "agent", "GET", "/work-orders", params={"kind": "medical_appointment", "limit": 500}
    ).json()
    holders = [
        o
        for o in orders["items"]
        if o["details"].get("slot_id") == slot["slot_id"] and o["status"] != "cancelled"
    ]
    assert len(holders) == 1


def test_retried_booking_returns_the_same_appointment(api: Api) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    slot = _free(api, "骨科")[-1]
    key = f"conv-{uuid.uuid4()}-turn-7"
    first, again = _book(api, rid, slot, key), _book(api, rid, slot, key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["details"]["appointment_id"] == again.json()["details"]["appointment_id"]


def test_slot_of_another_department_is_refused(api: Api) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    slot = {**_free(api, "内科")[-3], "department": "眼科"}
    response = _book(api, rid, slot)
    assert response.status_code == 422
    assert slot["slot_id"] in {s["slot_id"] for s in _free(api, "内科")}
