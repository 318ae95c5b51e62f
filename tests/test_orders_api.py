"""Work orders through the real API process, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.factories import repair_body, resident_body
from tests.support import Api


def make_resident(api: Api, **overrides: Any) -> dict[str, Any]:
    response = api.call("bot", "POST", "/residents", json=resident_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def test_create_and_read_repair_order(api: Api) -> None:
    resident = make_resident(api)
    created = api.call("bot", "POST", "/work-orders", json=repair_body(resident["id"]))
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "new"
    assert order["priority"] == "P2"
    assert order["community"] == "阳光社区"
    # The bot has residents:pii, so it sees the home address the service filled in.
    assert order["details"]["address"] == {"building": "3", "unit": "2", "room": "502"}
    assert order["allowed_transitions"] == ["accepted", "cancelled"]
    assert order["history"][0]["action"] == "created"

    staff_view = api.call("agent", "GET", f"/work-orders/{order['id']}").json()
    assert staff_view["masked"] is True
    assert staff_view["details"]["address"]["text"] == "3号楼*单元***"


def test_lifecycle_records_history(api: Api) -> None:
    resident = make_resident(api)
    order = api.call("bot", "POST", "/work-orders", json=repair_body(resident["id"])).json()
    for target in ("accepted", "in_progress", "on_hold", "in_progress", "resolved"):
        response = api.call(
            "agent",
            "POST",
            f"/work-orders/{order['id']}/transitions",
            json={"to": target, "reason": "测试"},
        )
        assert response.status_code == 200, response.text
    final = response.json()
    assert final["status"] == "resolved"
    assert final["first_response_at"] is not None
    steps = [
        (h["from_status"], h["to_status"]) for h in final["history"] if h["action"] == "status"
    ]
    assert steps == [
        ("new", "accepted"),
        ("accepted", "in_progress"),
        ("in_progress", "on_hold"),
        ("on_hold", "in_progress"),
        ("in_progress", "resolved"),
    ]
    rated = api.call(
        "bot",
        "POST",
        f"/work-orders/{order['id']}/rating",
        json={"score": 5, "comment": "师傅很好"},
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["status"] == "closed"
    assert rated.json()["rating"]["score"] == 5


def test_illegal_transition_is_refused_with_allowed_list(api: Api) -> None:
    resident = make_resident(api)
    order = api.call("bot", "POST", "/work-orders", json=repair_body(resident["id"])).json()
    response = api.call(
        "agent", "POST", f"/work-orders/{order['id']}/transitions", json={"to": "resolved"}
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "transition_not_allowed"
    assert body["details"]["allowed"] == ["accepted", "cancelled"]
    assert "已受理" in body["message"]
