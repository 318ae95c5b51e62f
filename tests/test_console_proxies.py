"""The console's 代办家属 section on the resident's profile, in Debian's Chromium: each family
member who asked to act for the elder, with the elder's answer; staff record the answer they
got by phone (after confirming) and withdraw consent."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser import Console
from tests.factories import resident_body, unique_phone
from tests.support import Api, Backend, hotline_token

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def ask(api: Api, resident_id: int, name: str, relation: str, phone: str) -> dict[str, Any]:
    answer = api.call(
        "bot",
        "POST",
        f"/residents/{resident_id}/proxies",
        json={
            "identity": {"kind": "wechat_openid", "value": f"o-{uuid.uuid4().hex}"},
            "name": name,
            "relation": relation,
            "phone": phone,
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def status_of(api: Api, proxy_id: int) -> tuple[str, str | None]:
    proxy = api.call("agent", "GET", f"/proxies/{proxy_id}").json()
    return proxy["status"], proxy["decided_via"]


@sqlite_only
def test_staff_record_the_elders_answer_and_withdraw_consent(
    api: Api, backend: Backend, console: Console
) -> None:
    name = f"代办{uuid.uuid4().hex[:4]}"
    resident = api.call("bot", "POST", "/residents", json=resident_body(name=name)).json()
    rid = resident["id"]
    son_phone, daughter_phone = unique_phone(), unique_phone()
    son = ask(api, rid, "李小明", "儿子", son_phone)
    daughter = ask(api, rid, "李小红", "女儿", daughter_phone)
    nephew = ask(api, rid, "王大力", "侄子", unique_phone())
    # The elder pressed 1 on the hotline's call for the daughter.
    answer = httpx.post(
        f"{api.base_url}/proxies/{daughter['id']}/consent",
        json={"granted": True, "via": "hotline"},
        headers={"Authorization": f"Bearer {hotline_token(backend)}"},
        timeout=30,
    )
    assert (answer.status_code, answer.json()["status"]) == (200, "active")

    page = console.open("agent", f"/console/residents?id={rid}")
    expect(page.locator("html")).to_have_attribute("data-ready", "residents")
    rows = page.locator("#r-proxy-list li")
    expect(rows).to_have_count(3)
    son_row = page.locator(f'#r-proxy-list li[data-proxy-id="{son["id"]}"]')
    daughter_row = page.locator(f'#r-proxy-list li[data-proxy-id="{daughter["id"]}"]')
    nephew_row = page.locator(f'#r-proxy-list li[data-proxy-id="{nephew["id"]}"]')
    expect(son_row).to_contain_text("李*明（儿子）")
    expect(son_row).to_contain_text(f"{son_phone[:3]}****{son_phone[-4:]}")
    expect(son_row).to_contain_text("等待老人同意")
    expect(son_row.get_by_role("button")).to_have_text(["老人已同意", "老人不同意"])
    expect(daughter_row).to_contain_text("已同意")
    expect(daughter_row).to_contain_text("热线电话确认")
    expect(daughter_row.get_by_role("button")).to_have_text(["收回同意"])

    # Nothing is sent before staff confirm; 取消 closes the question.
    son_row.get_by_role("button", name="老人已同意").click()
    expect(son_row).to_contain_text(
        "请确认：您已经打电话和老人本人核实，老人同意由李*明（儿子）代为办理。"
    )
    expect(son_row.get_by_role("button", name="确认老人已同意")).to_be_focused()
    son_row.get_by_role("button", name="取消").click()
    expect(son_row.get_by_role("button", name="老人已同意")).to_be_focused()
    assert status_of(api, son["id"]) == ("requested", None)
    son_row.get_by_role("button", name="老人已同意").click()
    son_row.get_by_role("button", name="确认老人已同意").click()
    expect(son_row).to_have_attribute("data-proxy-status", "active")
    expect(son_row).to_contain_text("已同意")
    expect(son_row).to_contain_text("工作人员电话确认")
    expect(page.locator("#r-announcer")).to_have_text("已记录：老人同意由李*明（儿子）代办。")
    assert status_of(api, son["id"]) == ("active", "console")

    nephew_row.get_by_role("button", name="老人不同意").click()
    nephew_row.get_by_role("button", name="确认老人不同意").click()
    expect(nephew_row).to_have_attribute("data-proxy-status", "refused")
    expect(nephew_row).to_contain_text("已拒绝")
    expect(nephew_row.get_by_role("button")).to_have_count(0)
    assert status_of(api, nephew["id"]) == ("refused", "console")

    daughter_row.get_by_role("button", name="收回同意").click()
    expect(daughter_row).to_contain_text(
        "请确认：收回后李*红（女儿）不能再替老人预约、报修、取消或评价。"
    )
    daughter_row.get_by_role("button", name="确认收回同意").click()
    expect(daughter_row).to_have_attribute("data-proxy-status", "withdrawn")
    expect(daughter_row).to_contain_text("已收回")
    assert status_of(api, daughter["id"]) == ("withdrawn", "hotline")

    mine = {
        (e["resource_id"], e["action"], e["detail"])
        for proxy in (son, daughter, nephew)
        for e in api.call(
            "admin",
            "GET",
            "/audit",
            params={"resource_type": "proxy", "resource_id": proxy["id"]},
        ).json()["items"]
        if e["action"] != "read_proxy"
    }
    assert mine == {
        (daughter["id"], "decide_proxy", "同意（热线）"),
        (son["id"], "decide_proxy", "同意（工作台）"),
        (nephew["id"], "decide_proxy", "不同意（工作台）"),
        (daughter["id"], "withdraw_proxy", "收回同意（工作台）"),
    }

    # Shown in full with the profile, for the purpose given (audited per family member).
    page.get_by_role("button", name="显示完整信息").click()
    page.get_by_label("查看用途（必填）").select_option("核对身份")
    page.get_by_role("button", name="确认显示").click()
    expect(son_row).to_contain_text("李小明（儿子）")
    expect(son_row).to_contain_text(son_phone)
    newest = api.call(
        "admin",
        "GET",
        "/audit",
        params={"resource_type": "proxy", "resource_id": son["id"], "limit": 1},
    ).json()["items"]
    assert [(e["action"], e["detail"]) for e in newest] == [("reveal_personal_data", "核对身份")]
    page.get_by_role("button", name="隐藏完整信息").click()
    expect(son_row).to_contain_text("李*明（儿子）")

    # The session's CSRF token is required: a bare POST from the page changes nothing.
    refused = page.evaluate(
        """async (id) => {
            const r = await fetch(`/proxies/${id}/withdraw`, {
                method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({via: "console"}),
            });
            return [r.status, (await r.json()).code];
        }""",
        son["id"],
    )
    assert refused == [403, "csrf"]
    assert status_of(api, son["id"]) == ("active", "console")
    console.screenshot(page, "residents-proxies")
    assert console.errors == []
