"""Authentication and roles: no token, no data; each account can do its job and no more."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.factories import repair_body, resident_body
from tests.support import PASSWORD, Api


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/work-orders"),
        ("GET", "/work-orders/1"),
        ("POST", "/work-orders"),
        ("GET", "/residents"),
        ("GET", "/residents/1"),
        ("GET", "/audit"),
        ("GET", "/stats"),
        ("GET", "/events"),
        ("GET", "/appointments/departments"),
        ("POST", "/principals"),
    ],
)
def test_no_token_no_data(api: Api, method: str, path: str) -> None:
    response = httpx.request(method, api.base_url + path, json={})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    forged = httpx.request(
        method, api.base_url + path, json={}, headers={"Authorization": "Bearer forged"}
    )
    assert forged.status_code == 401


def test_staff_log_in_with_password(api: Api) -> None:
    bad = httpx.post(
        api.base_url + "/auth/token", json={"username": "agent", "password": "wrong password"}
    )
    assert bad.status_code == 401 and bad.json()["code"] == "bad_credentials"
    good = httpx.post(
        api.base_url + "/auth/token", json={"username": "agent", "password": PASSWORD}
    )
    assert good.status_code == 200
    token = good.json()["access_token"]
    me = httpx.get(api.base_url + "/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "agent"
    httpx.post(api.base_url + "/auth/logout", headers={"Authorization": f"Bearer {token}"})
    after = httpx.get(api.base_url + "/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401


def test_service_accounts_cannot_log_in_with_a_password(api: Api) -> None:
    response = httpx.post(
        api.base_url + "/auth/token", json={"username": "bot", "password": PASSWORD}
    )
    assert response.status_code == 401


def test_an_agent_cannot_do_an_admins_work(api: Api) -> None:
    new_staff = {
        "username": f"u{uuid.uuid4().hex[:8]}",
        "display_name": "新人",
        "role": "agent",
        "password": "a long password",
    }
    assert api.call("agent", "POST", "/principals", json=new_staff).status_code == 403
    assert api.call("agent", "GET", "/audit").status_code == 403
    assert (
        api.call(
            "agent", "GET", "/stats", params={"from": "2026-01-01", "to": "2026-02-01"}
        ).status_code
        == 403
    )
    assert api.call("supervisor", "POST", "/principals", json=new_staff).status_code == 403
    created = api.call("admin", "POST", "/principals", json=new_staff)
    assert created.status_code == 201, created.text
    assert (
        api.call("admin", "POST", "/principals", json=new_staff).json()["code"] == "username_taken"
    )


def test_admin_issues_a_service_token_with_only_its_scopes(api: Api) -> None:
    account = api.call(
        "admin",
        "POST",
        "/principals",
        json={
            "username": f"svc-{uuid.uuid4().hex[:8]}",
            "display_name": "测试终端网关",
            "role": "service",
            "scopes": ["emergency:create", "residents:lookup"],
        },
    ).json()
    token = api.call("admin", "POST", f"/principals/{account['id']}/tokens").json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    emergency = httpx.post(
        api.base_url + "/work-orders",
        headers=headers,
        json={
            "kind": "emergency",
            "channel": "terminal",
            "resident_id": rid,
            "details": {"source": "sos-1"},
        },
    )
    assert emergency.status_code == 201, emergency.text
    assert emergency.json()["priority"] == "P0"
    repair = httpx.post(api.base_url + "/work-orders", headers=headers, json=repair_body(rid))
    assert repair.status_code == 403
    assert httpx.get(api.base_url + "/work-orders", headers=headers).status_code == 403


def test_unknown_scopes_are_refused(api: Api) -> None:
    response = api.call(
        "admin",
        "POST",
        "/principals",
        json={
            "username": f"svc-{uuid.uuid4().hex[:8]}",
            "display_name": "x",
            "role": "service",
            "scopes": ["god:mode"],
        },
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_scopes"


def test_bots_may_cancel_but_not_accept(api: Api) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    order = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()
    accept = api.call(
        "bot", "POST", f"/work-orders/{order['id']}/transitions", json={"to": "accepted"}
    )
    assert accept.status_code == 403
    cancel = api.call(
        "bot",
        "POST",
        f"/work-orders/{order['id']}/transitions",
        json={"to": "cancelled", "reason": "居民说不用了"},
    )
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    # Retried cancel: a no-op, not an error.
    again = api.call(
        "bot", "POST", f"/work-orders/{order['id']}/transitions", json={"to": "cancelled"}
    )
    assert again.status_code == 200
    assert sum(h["action"] == "status" for h in again.json()["history"]) == 1


def test_only_staff_assign(api: Api) -> None:
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    order = api.call("bot", "POST", "/work-orders", json=repair_body(rid)).json()
    assert (
        api.call(
            "bot", "POST", f"/work-orders/{order['id']}/assignment", json={"team": "物业维修组"}
        ).status_code
        == 403
    )
    done = api.call(
        "agent", "POST", f"/work-orders/{order['id']}/assignment", json={"team": "物业维修组"}
    )
    assert done.status_code == 200 and done.json()["assignee_team"] == "物业维修组"
