"""Family members acting for an elder (代办) with the elder's consent: asked for by the dialogue,
answered on the hotline or by staff, withdrawn; orders made, cancelled and rated through an
active proxy say who asked for whom. Against the API as a real process on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from tests.factories import repair_body, resident_body, unique_phone
from tests.support import Api, Backend, hotline_token
from workorders.client import ApiError, WorkOrdersClient
from workorders.crypto import cipher
from workorders.models import Event, Identity, Proxy

NOT_ACTIVE = {
    "code": "proxy_not_active",
    "message": "老人还没有同意由您代办，或者已经收回了同意。",
}
CLOSED = {"code": "proxy_closed", "message": "这项代办授权已经被拒绝或收回，请让家属重新申请。"}
_hotline: dict[str, str] = {}


@pytest.fixture
def hotline(api: Api, backend: Backend) -> str:
    """`svc-hotline` with exactly the demo data's scopes (proxies:consent among them)."""
    if backend.url not in _hotline:
        _hotline[backend.url] = hotline_token(backend)
    api.process.tokens["hotline"] = _hotline[backend.url]
    return "hotline"


def elder(api: Api, **overrides: Any) -> dict[str, Any]:
    body = resident_body(community=f"代办社区{uuid.uuid4().hex[:6]}", **overrides)
    response = api.call("bot", "POST", "/residents", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def ask(
    api: Api, resident_id: int, openid: str, phone: str | None = None, **overrides: Any
) -> httpx.Response:
    body = {
        "identity": {"kind": "wechat_openid", "value": openid},
        "name": "李小明",
        "relation": "儿子",
        "phone": phone,
        **overrides,
    }
    return api.call("bot", "POST", f"/residents/{resident_id}/proxies", json=body)


def decide(api: Api, who: str, proxy_id: int, granted: bool, via: str) -> httpx.Response:
    return api.call(
        who, "POST", f"/proxies/{proxy_id}/consent", json={"granted": granted, "via": via}
    )


def active_proxy(api: Api, hotline: str, resident_id: int) -> dict[str, Any]:
    proxy = ask(api, resident_id, f"o-{uuid.uuid4().hex}").json()
    granted = decide(api, hotline, proxy["id"], True, "hotline")
    assert granted.status_code == 200, granted.text
    return granted.json()


def proxy_events(backend: Backend, proxy_id: int) -> list[tuple[str, dict[str, Any], bool]]:
    with backend.session() as session:
        rows = session.execute(
            select(Event.type, Event.payload, Event.published_at, Event.order_id)
            .where(Event.type.like("proxy.%"))
            .order_by(Event.id)
        ).all()
    out = []
    for type_, payload, published_at, order_id in rows:
        if payload["proxy_id"] == proxy_id:
            assert order_id is None
            out.append((type_, payload, published_at is not None))
    return out


def audit_of(api: Api, proxy_id: int) -> list[tuple[str, str | None]]:
    page = api.call(
        "admin", "GET", "/audit", params={"resource_type": "proxy", "resource_id": proxy_id}
    ).json()
    return [(e["action"], e["detail"]) for e in reversed(page["items"])]


def masked(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


def test_a_request_is_idempotent_masked_announced_and_encrypted(api: Api, backend: Backend) -> None:
    resident = elder(api)
    openid, phone = f"o-{uuid.uuid4().hex}", unique_phone()
    created = ask(api, resident["id"], openid, phone)
    assert created.status_code == 201, created.text
    proxy = created.json()
    assert proxy == {
        "id": proxy["id"],
        "resident_id": resident["id"],
        "resident_name": "王*英",
        "name": "李*明",
        "relation": "儿子",
        "phone": masked(phone),
        "status": "requested",
        "requested_at": proxy["requested_at"],
        "decided_at": None,
        "decided_via": None,
        "withdrawn_at": None,
        # The service that writes to the family member has their identity; staff do not.
        "identity": {"kind": "wechat_openid", "value": openid},
    }
    again = ask(api, resident["id"], openid, phone)
    assert again.status_code == 200
    assert again.json() == proxy
    assert proxy_events(backend, proxy["id"]) == [
        (
            "proxy.consent_requested",
            {
                "proxy_id": proxy["id"],
                "resident_id": resident["id"],
                "community": resident["community"],
                "via": "hotline",
            },
            True,
        )
    ]
    # Encrypted at rest; the identity hashes as a linked identity of the same openid would.
    with backend.session() as session:
        raw = session.execute(
            text("SELECT identity_value, name, phone, identity_hash FROM proxies WHERE id = :i"),
            {"i": proxy["id"]},
        ).one()
        identity_hash = session.get(Proxy, proxy["id"]).identity_hash
    assert openid not in raw[0] and "李小明" not in raw[1] and phone not in raw[2]
    assert identity_hash == raw[3] == cipher().lookup_hash("wechat_openid", openid)
    linked = elder(api, identities=[{"kind": "wechat_openid", "value": openid}])
    with backend.session() as session:
        value_hash = session.execute(
            select(Identity.value_hash).where(Identity.resident_id == linked["id"])
        ).scalar_one()
    assert value_hash == identity_hash


def test_an_elder_without_a_phone_is_confirmed_by_staff(api: Api, backend: Backend) -> None:
    resident = elder(api, phone=None)
    proxy = ask(api, resident["id"], f"o-{uuid.uuid4().hex}", None, name="欧阳小明").json()
    assert (proxy["name"], proxy["phone"], proxy["status"]) == ("欧**明", None, "requested")
    assert [p["via"] for _, p, _ in proxy_events(backend, proxy["id"])] == ["console"]


def test_concurrent_requests_make_one_proxy(api: Api, backend: Backend) -> None:
    resident, openid = elder(api), f"o-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ask(api, resident["id"], openid), range(8)))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(proxy_events(backend, answers[0].json()["id"])) == 1


def test_who_may_ask_answer_and_read(api: Api, hotline: str) -> None:
    resident = elder(api)
    openid = f"o-{uuid.uuid4().hex}"
    body = {"identity": {"kind": "wechat_openid", "value": openid}, "name": "李小明"}
    for who in ("wechat", "agent", hotline):
        refused = api.call(
            who, "POST", f"/residents/{resident['id']}/proxies", json={**body, "relation": "儿子"}
        )
        assert refused.status_code == 403, who
    missing = api.call("bot", "POST", "/residents/999999999/proxies", json=body)
    assert missing.status_code == 422  # no relation
    missing = ask(api, 999999999, openid)
    assert (missing.status_code, missing.json()["code"]) == (404, "resident_not_found")
    proxy = ask(api, resident["id"], openid).json()
    # The dialogue cannot answer for the elder; the hotline only as the hotline, staff only
    # from the console.
    assert decide(api, "bot", proxy["id"], True, "hotline").status_code == 403
    assert decide(api, hotline, proxy["id"], True, "console").status_code == 403
    assert decide(api, "agent", proxy["id"], True, "hotline").status_code == 403
    assert api.call("wechat", "GET", f"/proxies/{proxy['id']}").status_code == 403
    assert (
        api.call(
            "wechat", "GET", "/proxies", params={"kind": "wechat_openid", "value": openid}
        ).status_code
        == 403
    )
    assert api.call("bot", "GET", f"/residents/{resident['id']}/proxies").status_code == 403
    gone = api.call("bot", "GET", "/proxies/999999999")
    assert gone.status_code == 404
    assert gone.json() == {
        "code": "proxy_not_found",
        "message": "找不到编号为 999999999 的代办授权。",
    }
    assert decide(api, hotline, 999999999, True, "hotline").status_code == 404
    assert api.call("gateway", "GET", f"/proxies/{proxy['id']}").status_code == 200
    assert api.call(hotline, "GET", f"/proxies/{proxy['id']}").json()["name"] == "李*明"


def test_lookup_by_identity_newest_first(api: Api, hotline: str) -> None:
    first, second = elder(api, name="李秀英"), elder(api, name="张桂兰")
    openid = f"o-{uuid.uuid4().hex}"
    a = ask(api, first["id"], openid).json()
    b = ask(api, second["id"], openid, relation="女婿").json()
    decide(api, hotline, a["id"], True, "hotline")
    found = api.call("bot", "GET", "/proxies", params={"kind": "wechat_openid", "value": openid})
    assert found.status_code == 200
    assert found.json() == [
        {
            "id": b["id"],
            "resident_id": second["id"],
            "resident_name": "张*兰",
            "relation": "女婿",
            "status": "requested",
        },
        {
            "id": a["id"],
            "resident_id": first["id"],
            "resident_name": "李*英",
            "relation": "儿子",
            "status": "active",
        },
    ]
    nobody = api.call("gateway", "GET", "/proxies", params={"kind": "wechat_openid", "value": "x"})
    assert nobody.json() == []
    log = api.process.log_text()
    assert openid not in log
    assert "GET /proxies?kind=wechat_openid&value=*** 200" in log


def test_consent_on_the_hotline_is_idempotent_announced_and_audited(
    api: Api, backend: Backend, hotline: str
) -> None:
    resident = elder(api)
    proxy = ask(api, resident["id"], f"o-{uuid.uuid4().hex}").json()
    answered = api.call(
        hotline,
        "POST",
        f"/proxies/{proxy['id']}/consent",
        json={"granted": True, "via": "hotline", "event_id": "1234-0"},
    )
    assert answered.status_code == 200, answered.text
    active = answered.json()
    assert (active["status"], active["decided_via"], active["withdrawn_at"]) == (
        "active",
        "hotline",
        None,
    )
    assert active["decided_at"] is not None
    again = decide(api, hotline, proxy["id"], True, "hotline")
    assert (again.status_code, again.json()) == (200, active)
    changed_mind = decide(api, hotline, proxy["id"], False, "hotline")
    assert changed_mind.status_code == 409
    assert changed_mind.json()["code"] == "proxy_active"
    assert [(t, p) for t, p, _ in proxy_events(backend, proxy["id"])][1:] == [
        (
            "proxy.decided",
            {
                "proxy_id": proxy["id"],
                "resident_id": resident["id"],
                "community": resident["community"],
                "granted": True,
            },
        )
    ]
    assert audit_of(api, proxy["id"]) == [("decide_proxy", "同意（热线） event 1234-0")]


def test_a_refusal_closes_the_request(api: Api, backend: Backend) -> None:
    resident = elder(api)
    proxy = ask(api, resident["id"], f"o-{uuid.uuid4().hex}").json()
    refused = decide(api, "agent", proxy["id"], False, "console")
    assert refused.status_code == 200
    assert (refused.json()["status"], refused.json()["decided_via"]) == ("refused", "console")
    assert decide(api, "agent", proxy["id"], False, "console").json() == refused.json()
    late = decide(api, "supervisor", proxy["id"], True, "console")
    assert (late.status_code, late.json()) == (409, CLOSED)
    withdrawn = api.call(
        "agent", "POST", f"/proxies/{proxy['id']}/withdraw", json={"via": "console"}
    )
    assert (withdrawn.status_code, withdrawn.json()) == (409, CLOSED)
    assert [(t, p.get("granted")) for t, p, _ in proxy_events(backend, proxy["id"])] == [
        ("proxy.consent_requested", None),
        ("proxy.decided", False),
    ]
    assert audit_of(api, proxy["id"]) == [("decide_proxy", "不同意（工作台）")]
    # Refused is final: the family member may ask again, which is a new request.
    again = ask(api, resident["id"], f"o-{uuid.uuid4().hex}")
    assert again.status_code == 201


def test_withdrawal_is_idempotent_and_final(api: Api, backend: Backend, hotline: str) -> None:
    resident = elder(api)
    openid = f"o-{uuid.uuid4().hex}"
    proxy = ask(api, resident["id"], openid).json()
    decide(api, hotline, proxy["id"], True, "hotline")
    assert (
        api.call(
            "bot", "POST", f"/proxies/{proxy['id']}/withdraw", json={"via": "hotline"}
        ).status_code
        == 403
    )
    first = api.call("agent", "POST", f"/proxies/{proxy['id']}/withdraw", json={"via": "console"})
    assert first.status_code == 200
    assert first.json()["status"] == "withdrawn" and first.json()["withdrawn_at"] is not None
    second = api.call(hotline, "POST", f"/proxies/{proxy['id']}/withdraw", json={"via": "hotline"})
    assert (second.status_code, second.json()) == (200, first.json())
    assert decide(api, hotline, proxy["id"], True, "hotline").json() == CLOSED
    assert [t for t, _, _ in proxy_events(backend, proxy["id"])] == [
        "proxy.consent_requested",
        "proxy.decided",
        "proxy.withdrawn",
    ]
    assert proxy_events(backend, proxy["id"])[2][1] == {
        "proxy_id": proxy["id"],
        "resident_id": resident["id"],
        "community": resident["community"],
    }
    assert audit_of(api, proxy["id"]) == [
        ("decide_proxy", "同意（热线）"),
        ("withdraw_proxy", "收回同意（工作台）"),
    ]
    renewed = ask(api, resident["id"], openid)
    assert renewed.status_code == 201 and renewed.json()["id"] != proxy["id"]


def test_staff_read_masked_unless_they_reveal_and_reads_are_audited(api: Api) -> None:
    resident = elder(api)
    phone = unique_phone()
    proxy = ask(api, resident["id"], f"o-{uuid.uuid4().hex}", phone).json()
    assert api.call("bot", "GET", f"/proxies/{proxy['id']}").json() == proxy
    assert api.call("agent", "GET", f"/proxies/{proxy['id']}").json() == {
        **proxy,
        "identity": None,
    }
    full = api.call(
        "agent",
        "GET",
        f"/proxies/{proxy['id']}",
        params={"reveal": "true", "purpose": "核对身份"},
    ).json()
    assert (full["resident_name"], full["name"], full["phone"]) == ("王秀英", "李小明", phone)
    listed = api.call("agent", "GET", f"/residents/{resident['id']}/proxies")
    assert listed.status_code == 200 and listed.json() == [{**proxy, "identity": None}]
    revealed = api.call(
        "supervisor",
        "GET",
        f"/residents/{resident['id']}/proxies",
        params={"reveal": "true", "purpose": "回访核实"},
    ).json()
    assert [(p["name"], p["phone"]) for p in revealed] == [("李小明", phone)]
    assert audit_of(api, proxy["id"]) == [
        ("read_proxy", None),
        ("read_proxy", None),
        ("reveal_personal_data", "核对身份"),
        ("reveal_personal_data", "回访核实"),
    ]
    page = api.call(
        "admin",
        "GET",
        "/audit",
        params={"resource_type": "resident", "resource_id": resident["id"]},
    ).json()
    assert [(e["action"], e["detail"]) for e in reversed(page["items"])] == [
        ("list_proxies", None),
        ("list_proxies", None),
    ]


def test_orders_through_a_proxy_say_who_asked_for_whom(api: Api, hotline: str) -> None:
    resident = elder(api)
    proxy = ask(api, resident["id"], f"o-{uuid.uuid4().hex}").json()
    body = {**repair_body(resident["id"]), "proxy_id": proxy["id"]}
    early = api.call("bot", "POST", "/work-orders", json=body)
    assert (early.status_code, early.json()) == (403, NOT_ACTIVE)
    decide(api, hotline, proxy["id"], True, "hotline")
    key = {"Idempotency-Key": f"p-{uuid.uuid4().hex}"}
    created = api.call("bot", "POST", "/work-orders", json=body, headers=key)
    assert created.status_code == 201, created.text
    order = created.json()
    # The dialogue has residents:pii, so it sees the order unmasked, the name too; staff
    # masked unless they reveal.
    assert order["requested_by"] == {"proxy_id": proxy["id"], "name": "李小明", "relation": "儿子"}
    requested_by = {"proxy_id": proxy["id"], "name": "李*明", "relation": "儿子"}
    assert [(h["action"], h["reason"]) for h in order["history"]] == [
        ("created", "李*明（儿子）代老人提交")
    ]
    staff_view = api.call("agent", "GET", f"/work-orders/{order['id']}").json()
    assert staff_view["requested_by"] == requested_by
    replay = api.call("bot", "POST", "/work-orders", json=body, headers=key)
    assert (replay.status_code, replay.json()["id"]) == (200, order["id"])
    listed = api.call("agent", "GET", "/work-orders", params={"resident_id": resident["id"]})
    assert [o["requested_by"] for o in listed.json()["items"]] == [requested_by]
    shown = api.call("agent", "GET", f"/work-orders/{order['id']}", params={"reveal": "true"})
    assert shown.json()["requested_by"]["name"] == "李小明"
    plain = api.call("bot", "POST", "/work-orders", json=repair_body(resident["id"])).json()
    assert plain["requested_by"] is None and plain["history"][0]["reason"] is None

    # Another elder's order, or another elder's proxy: refused.
    other = elder(api)
    foreign = {**repair_body(other["id"]), "proxy_id": proxy["id"]}
    assert api.call("bot", "POST", "/work-orders", json=foreign).json() == NOT_ACTIVE
    assert (
        api.call("bot", "POST", "/work-orders", json={**body, "proxy_id": 999999999}).json()
        == NOT_ACTIVE
    )
    other_order = api.call("bot", "POST", "/work-orders", json=repair_body(other["id"])).json()
    cancel_foreign = api.call(
        "bot",
        "POST",
        f"/work-orders/{other_order['id']}/transitions",
        json={"to": "cancelled", "proxy_id": proxy["id"]},
    )
    assert (cancel_foreign.status_code, cancel_foreign.json()) == (403, NOT_ACTIVE)

    cancelled = api.call(
        "bot",
        "POST",
        f"/work-orders/{order['id']}/transitions",
        json={"to": "cancelled", "reason": "不需要了", "proxy_id": proxy["id"]},
    )
    assert cancelled.status_code == 200, cancelled.text
    assert [(h["action"], h["reason"]) for h in cancelled.json()["history"]][-1] == (
        "status",
        "李*明（儿子）代老人取消：不需要了",
    )

    # Rated through the proxy once the staff resolved it.
    for target in ("accepted", "in_progress", "resolved"):
        api.call("agent", "POST", f"/work-orders/{plain['id']}/transitions", json={"to": target})
    rated = api.call(
        "bot",
        "POST",
        f"/work-orders/{plain['id']}/rating",
        json={"score": 5, "proxy_id": proxy["id"]},
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["history"][-1]["reason"] == "李*明（儿子）代老人评价：评分 5"
    assert rated.json()["requested_by"] is None  # made by the elder, rated by the son

    # The son looks at her orders: recorded too; not at someone else's.
    query = {"resident_id": proxy["resident_id"], "proxy_id": proxy["id"]}
    looked = api.call("bot", "GET", "/work-orders", params=query)
    assert looked.status_code == 200 and looked.json()["total"] == 2, looked.text
    elsewhere = api.call("bot", "GET", "/work-orders", params={**query, "resident_id": other["id"]})
    assert (elsewhere.status_code, elsewhere.json()) == (403, NOT_ACTIVE)
    assert audit_of(api, proxy["id"]) == [
        ("decide_proxy", "同意（热线）"),
        ("use_proxy", f"create order {order['id']}"),
        ("use_proxy", f"cancel order {order['id']}"),
        ("use_proxy", f"rate order {plain['id']}"),
        ("use_proxy", f"status of resident {proxy['resident_id']}"),
    ]

    # Withdrawn: nothing more through it.
    api.call("agent", "POST", f"/proxies/{proxy['id']}/withdraw", json={"via": "console"})
    after = api.call("bot", "POST", "/work-orders", json=body)
    assert (after.status_code, after.json()) == (403, NOT_ACTIVE)
    third = api.call("bot", "POST", "/work-orders", json=repair_body(resident["id"])).json()
    for_third = api.call(
        "bot",
        "POST",
        f"/work-orders/{third['id']}/transitions",
        json={"to": "cancelled", "proxy_id": proxy["id"]},
    )
    assert (for_third.status_code, for_third.json()) == (403, NOT_ACTIVE)


def test_the_client(api: Api, hotline: str) -> None:
    resident = elder(api)
    openid, phone = f"o-{uuid.uuid4().hex}", unique_phone()

    async def run() -> None:
        bot = WorkOrdersClient(api.base_url, api.process.tokens["bot"])
        line = WorkOrdersClient(api.base_url, api.process.tokens[hotline])
        try:
            proxy = await bot.request_proxy(
                resident["id"], "wechat_openid", openid, "李小明", "儿子", phone
            )
            assert proxy["status"] == "requested" and proxy["phone"] == masked(phone)
            assert (
                await bot.request_proxy(resident["id"], "wechat_openid", openid, "李小明", "儿子")
            )["id"] == proxy["id"]
            assert await bot.proxies_of("wechat_openid", openid) == [
                {
                    "id": proxy["id"],
                    "resident_id": resident["id"],
                    "resident_name": "王*英",
                    "relation": "儿子",
                    "status": "requested",
                }
            ]
            body = {**repair_body(resident["id"]), "proxy_id": proxy["id"]}
            with pytest.raises(ApiError) as refused:
                await bot.create_order(body, key=f"k-{uuid.uuid4().hex}")
            assert (refused.value.status, refused.value.code, refused.value.message) == (
                403,
                "proxy_not_active",
                NOT_ACTIVE["message"],
            )
            decided = await line.decide_proxy(proxy["id"], True, "hotline", event_id="9-0")
            assert decided["status"] == "active"
            assert (await line.proxy(proxy["id"]))["status"] == "active"
            order = await bot.create_order(body, key=f"k-{uuid.uuid4().hex}")
            assert order["requested_by"]["proxy_id"] == proxy["id"]
            moved = await bot.move(order["id"], "cancelled", "不要了", proxy_id=proxy["id"])
            assert moved["history"][-1]["reason"] == "李*明（儿子）代老人取消：不要了"
            withdrawn = await line.withdraw_proxy(proxy["id"], "hotline")
            assert withdrawn["status"] == "withdrawn"
            with pytest.raises(ApiError) as closed:
                await line.decide_proxy(proxy["id"], True, "hotline")
            assert (closed.value.status, closed.value.code) == (409, "proxy_closed")
        finally:
            await bot.aclose()
            await line.aclose()

    asyncio.run(run())
