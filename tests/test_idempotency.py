"""Retried and concurrent creates: one key, one order, whatever the timing."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from tests.factories import repair_body, resident_body
from tests.support import Api, Backend
from workorders.models import Resident, WorkOrder


def _resident_id(api: Api) -> int:
    return api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]


def test_same_key_same_body_returns_the_same_order(api: Api) -> None:
    body = repair_body(_resident_id(api))
    key = {"Idempotency-Key": f"conv-{uuid.uuid4()}-turn-3"}
    first = api.call("bot", "POST", "/work-orders", json=body, headers=key)
    again = api.call("bot", "POST", "/work-orders", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


def test_same_key_different_body_is_refused(api: Api) -> None:
    resident_id = _resident_id(api)
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    assert (
        api.call(
            "bot", "POST", "/work-orders", json=repair_body(resident_id), headers=key
        ).status_code
        == 201
    )
    other = repair_body(
        resident_id, details={"category": "电路", "location": "home", "description": "跳闸了"}
    )
    refused = api.call("bot", "POST", "/work-orders", json=other, headers=key)
    assert refused.status_code == 422
    assert refused.json()["code"] == "idempotency_key_reused"


def test_twenty_concurrent_identical_requests_make_exactly_one_order(
    api: Api, backend: Backend
) -> None:
    resident_id = _resident_id(api)
    body = repair_body(
        resident_id,
        details={
            "category": "电梯",
            "location": "public",
            "place": "5号楼电梯",
            "description": f"电梯停了 {uuid.uuid4()}",
        },
    )
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}

    def send(_: int) -> tuple[int, int]:
        response = api.call("bot", "POST", "/work-orders", json=body, headers=key)
        return response.status_code, response.json().get("id", -1)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(send, range(20)))
    statuses = sorted(code for code, _ in results)
    assert statuses == [200] * 19 + [201], results
    assert len({order_id for _, order_id in results}) == 1
    with backend.session() as session:
        count = session.execute(
            select(func.count()).select_from(WorkOrder).where(WorkOrder.resident_id == resident_id)
        ).scalar_one()
    assert count == 1


def test_resident_create_is_idempotent_under_concurrency(api: Api, backend: Backend) -> None:
    body = resident_body(name=f"居民{uuid.uuid4().hex[:6]}")
    key = {"Idempotency-Key": f"signup-{uuid.uuid4()}"}
    with ThreadPoolExecutor(10) as pool:
        results = list(
            pool.map(
                lambda _: api.call("bot", "POST", "/residents", json=body, headers=key), range(10)
            )
        )
    assert sorted(r.status_code for r in results) == [200] * 9 + [201]
    with backend.session() as session:
        assert (
            session.execute(
                select(func.count()).select_from(Resident).where(Resident.name == body["name"])
            ).scalar_one()
            == 1
        )


def test_keys_are_scoped_per_account(api: Api) -> None:
    """Two services that happen to pick the same key do not see each other's orders."""
    resident_id = _resident_id(api)
    key = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
    a = api.call("bot", "POST", "/work-orders", json=repair_body(resident_id), headers=key)
    b = api.call("agent", "POST", "/work-orders", json=repair_body(resident_id), headers=key)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]
