"""Work orders through the real API process, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
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


def test_home_care_uses_the_profile_address_and_keeps_the_window(api: Api) -> None:
    resident = make_resident(api)
    body = {
        "kind": "home_care",
        "channel": "hotline",
        "resident_id": resident["id"],
        "details": {
            "service": "助浴",
            "person": "老伴儿",
            "window_start": "2026-12-01T09:00:00+08:00",
            "window_end": "2026-12-01T11:00:00+08:00",
        },
    }
    created = api.call("bot", "POST", "/work-orders", json=body)
    assert created.status_code == 201, created.text
    details = created.json()["details"]
    assert details["address"] == {"building": "3", "unit": "2", "room": "502"}
    assert details["window_start"] == "2026-12-01T09:00:00+08:00"
    backwards = {**body, "details": {**body["details"], "window_end": "2026-12-01T08:00:00+08:00"}}
    refused = api.call("bot", "POST", "/work-orders", json=backwards)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_request"


def test_repair_in_a_public_place_needs_the_place(api: Api) -> None:
    resident = make_resident(api)
    body = repair_body(
        resident["id"],
        details={"category": "电梯", "location": "public", "description": "电梯停了"},
    )
    refused = api.call("bot", "POST", "/work-orders", json=body)
    assert refused.status_code == 422
    body["details"]["place"] = "3号楼电梯"
    created = api.call("bot", "POST", "/work-orders", json=body)
    assert created.status_code == 201
    assert "address" not in created.json()["details"]  # not at home: no home address attached


def test_emergency_carries_address_and_health_notes(api: Api) -> None:
    resident = make_resident(api)
    created = api.call(
        "terminal",
        "POST",
        "/work-orders",
        json={
            "kind": "emergency",
            "channel": "terminal",
            "resident_id": resident["id"],
            "details": {"source": "sos-0042", "description": "长按求助"},
            "priority": "P3",
        },
    )
    assert created.status_code == 201, created.text
    order = api.call("bot", "GET", f"/work-orders/{created.json()['id']}").json()
    assert order["priority"] == "P0"  # whatever the caller said
    assert order["details"]["service_notes"]["chronic_illness"] == "高血压"
    assert order["details"]["address"]["room"] == "502"
    created_at = datetime.fromisoformat(order["created_at"])
    assert datetime.fromisoformat(order["sla"]["response_due_at"]) - created_at == timedelta(
        seconds=60
    )


def test_a_second_emergency_of_a_resident_joins_the_open_one(api: Api) -> None:
    """After an SOS the hotline calls back and the resident says 我摔倒了: staff get a fresh
    alert on the same order, not a second P0. Once it is over, a new emergency is new."""
    resident = make_resident(api)

    def emergency(channel: str, said: str) -> Any:
        return api.call(
            "bot",
            "POST",
            "/work-orders",
            json={
                "kind": "emergency",
                "channel": channel,
                "resident_id": resident["id"],
                "details": {"description": said},
            },
        )

    first = emergency("terminal", "长按求助")
    again = emergency("hotline", "我摔倒了起不来")
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"]
    order_id = first.json()["id"]
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert [h["reason"] for h in order["history"] if h["action"] == "emergency_repeated"] == [
        "再次求助（热线）：我摔倒了起不来"
    ]
    listed = api.call("agent", "GET", "/work-orders", params={"resident_id": resident["id"]}).json()
    assert [o["id"] for o in listed["items"]] == [order_id]

    for to in ("accepted", "in_progress", "resolved"):
        moved = api.call("agent", "POST", f"/work-orders/{order_id}/transitions", json={"to": to})
        assert moved.status_code == 200, moved.text
    later = emergency("wechat", "又不舒服了")
    assert later.status_code == 201 and later.json()["id"] != order_id


def emergency(api: Api, channel: str, said: str, **fields: Any) -> dict[str, Any]:
    body = {"kind": "emergency", "channel": channel, "details": {"description": said}}
    if "resident_id" in fields:
        body["resident_id"] = fields.pop("resident_id")
    body["details"].update(fields)  # type: ignore[union-attr]
    created = api.call("bot", "POST", "/work-orders", json=body)
    assert created.status_code == 201, created.text
    return created.json()


def test_an_unknown_senders_emergency_gets_whereabouts_one_answer_at_a_time(api: Api) -> None:
    """A first-time sender's emergency has no resident: what they then say about where they
    are and how to reach them goes onto the order at once, and saying it again is a no-op."""
    order = emergency(api, "wechat", "我家厨房有股煤气味儿", danger="gas")
    path = f"/work-orders/{order['id']}/whereabouts"
    where = {"address": {"building": "5", "unit": "1", "room": "301"}, "location": "5号楼1单元301"}
    first = api.call("bot", "PATCH", path, json=where)
    assert first.status_code == 200, first.text
    assert first.json()["details"]["address"]["text"] == "5号楼*单元***"  # masked for the bot
    assert first.json()["details"]["location"] == "5号***"
    assert api.call("bot", "PATCH", path, json=where).status_code == 200
    phoned = api.call("bot", "PATCH", path, json={"phone": "13912345678"})
    assert phoned.status_code == 200, phoned.text

    staff = api.call("agent", "GET", f"/work-orders/{order['id']}", params={"reveal": "true"})
    details = staff.json()["details"]
    assert (details["danger"], details["location"], details["caller_phone"]) == (
        "gas",
        "5号楼1单元301",
        "13912345678",
    )
    assert details["address"] == {"building": "5", "unit": "1", "room": "301"}
    assert [h["reason"] for h in staff.json()["history"] if h["action"] == "whereabouts"] == [
        "居民补充了地址，位置",
        "居民补充了电话",
    ]

    assert api.call("bot", "PATCH", path, json={}).json()["code"] == "invalid_request"
    assert api.call("bot", "PATCH", path, json={"phone": "123"}).status_code == 422
    repair = api.call("bot", "POST", "/work-orders", json=repair_body(make_resident(api)["id"]))
    not_emergency = api.call(
        "bot",
        "PATCH",
        f"/work-orders/{repair.json()['id']}/whereabouts",
        json={"phone": "13912345678"},
    )
    assert (not_emergency.status_code, not_emergency.json()["code"]) == (409, "not_an_emergency")


def test_a_resident_away_from_home_drops_the_home_address(api: Api) -> None:
    resident = make_resident(api)
    order = emergency(api, "hotline", "我摔倒了", resident_id=resident["id"])
    assert order["details"]["address"]["room"] == "502"
    path = f"/work-orders/{order['id']}/whereabouts"
    away = api.call("bot", "PATCH", path, json={"at_home": False, "location": "菜市场门口"})
    assert away.status_code == 200, away.text
    details = api.call("agent", "GET", f"/work-orders/{order['id']}", params={"reveal": "true"})
    assert "address" not in details.json()["details"]
    assert details.json()["details"]["location"] == "菜市场门口"
    home = api.call("bot", "PATCH", path, json={"at_home": True})
    revealed = api.call("agent", "GET", f"/work-orders/{order['id']}", params={"reveal": "true"})
    assert home.status_code == 200
    assert revealed.json()["details"]["address"] == {"building": "3", "unit": "2", "room": "502"}


def test_complaint_links_the_order_it_is_about(api: Api) -> None:
    resident = make_resident(api)
    repair = api.call("bot", "POST", "/work-orders", json=repair_body(resident["id"])).json()
    complaint = api.call(
        "bot",
        "POST",
        "/work-orders",
        json={
            "kind": "complaint",
            "channel": "wechat",
            "resident_id": resident["id"],
            "details": {"text": "师傅态度太差", "about_order_id": repair["id"]},
        },
    ).json()
    assert complaint["related_order_id"] == repair["id"]
    assert complaint["sla"]["escalated"] is True
    other = make_resident(api)
    foreign = api.call(
        "bot",
        "POST",
        "/work-orders",
        json={
            "kind": "complaint",
            "channel": "wechat",
            "resident_id": other["id"],
            "details": {"text": "投诉别人的单", "about_order_id": repair["id"]},
        },
    )
    assert foreign.status_code == 422


def test_unknown_resident_and_bad_bodies_get_clear_errors(api: Api) -> None:
    missing = api.call("bot", "POST", "/work-orders", json=repair_body(2_000_000_000))
    assert missing.status_code == 422 and missing.json()["code"] == "resident_not_found"
    bad_kind = api.call("bot", "POST", "/work-orders", json={**repair_body(1), "kind": "pizza"})
    assert bad_kind.status_code == 422 and "kind" in bad_kind.json()["message"]
    not_json = api.call(
        "bot",
        "POST",
        "/work-orders",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert api.call("agent", "GET", "/work-orders/999999999").json()["code"] == "order_not_found"


def test_text_a_database_cannot_store_is_refused_not_crashed(api: Api) -> None:
    resident = make_resident(api)
    nul = repair_body(
        resident["id"],
        details={"category": "水管", "location": "home", "description": "漏\u0000水"},
    )
    assert api.call("bot", "POST", "/work-orders", json=nul).status_code == 422
    assert api.call("agent", "GET", "/residents", params={"name": "王\x00"}).status_code == 422
    surrogate = (
        b'{"kind":"repair","channel":"wechat","resident_id":%d,"details":{"category":"\\ud800","location":"home","description":"x"}}'
        % resident["id"]
    )
    lone = api.call(
        "bot",
        "POST",
        "/work-orders",
        content=surrogate,
        headers={"Content-Type": "application/json"},
    )
    assert lone.status_code == 422, lone.text
