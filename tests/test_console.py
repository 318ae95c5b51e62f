"""The staff console at /console/: sessions and CSRF over HTTP, then real Chromium against the
API as a real process (the alarm board, the work-orders page), then a property-based run over
the console's own endpoints.

Browser tests run on SQLite only (the console does not touch the database itself; the API's
backends are tested elsewhere); the HTTP tests on both backends.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser import TIMEOUT_MS, Console
from tests.factories import repair_body, resident_body
from tests.support import PASSWORD, ROOT, Api, Backend, fuzz_api
from tests.test_sos_terminal import post_event, provision, sos_body, wait_follow_up, wait_for
from workorders.models import ApiToken, WorkOrder
from workorders.security import token_hash
from workorders.services import events, sweep
from workorders.services.sla import load_policy
from workorders.settings import get_settings

POLICY = load_policy(ROOT / "data" / "sla.json")
SECONDS = timedelta(seconds=1)
PAGES = ["/console/", "/console/orders", "/console/conversations", "/console/residents"]
ADMIN_PAGES = {"/console/stats": "stats:read", "/console/audit": "audit:read"}
CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')
TIMEOUT = TIMEOUT_MS / 1000
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


# --- helpers ---------------------------------------------------------------------------------


def signed_in(api: Api, username: str) -> tuple[httpx.Client, str]:
    """An HTTP client holding a console session (as a browser would), and its CSRF token."""
    client = httpx.Client(base_url=api.base_url, timeout=10, follow_redirects=False)
    answer = client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "next": "/console/orders"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/orders"
    page = client.get("/console/orders")
    assert page.status_code == 200, page.text
    found = CSRF_META.search(page.text)
    assert found, "the page carries its session's CSRF token"
    return client, found.group(1)


def new_repair(api: Api) -> dict[str, Any]:
    resident = api.call("bot", "POST", "/residents", json=resident_body())
    assert resident.status_code == 201, resident.text
    order = api.call("bot", "POST", "/work-orders", json=repair_body(resident.json()["id"]))
    assert order.status_code == 201, order.text
    return order.json()


def order_of(api: Api, order_id: int) -> dict[str, Any]:
    answer = api.call("admin", "GET", f"/work-orders/{order_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def me(api: Api, account: str) -> dict[str, Any]:
    return api.call(account, "GET", "/auth/me").json()


def wait_status(api: Api, order_id: int, status: str) -> dict[str, Any]:
    return wait_for(
        lambda: (o := order_of(api, order_id))["status"] == status and o,
        TIMEOUT,
        f"order {order_id} to be {status}",
    )


# --- sessions, pages by role, CSRF -----------------------------------------------------------


def test_without_a_session_nothing_is_served(api: Api) -> None:
    anonymous = httpx.Client(base_url=api.base_url, timeout=10, follow_redirects=False)
    forged = httpx.Client(
        base_url=api.base_url,
        timeout=10,
        follow_redirects=False,
        cookies={"linli_session": "forged-session-token"},
    )
    addresses = [
        *PAGES,
        *ADMIN_PAGES,
        "/console/no-such-page",
        "/console/static/js/api.js",
        "/console/static/js/live.js",
        "/console/static/pages/alarms.js",
        "/console/static/pages/orders.js",
        "/console/static/vendor/chart.umd.js",
    ]
    for client in (anonymous, forged):
        for path in addresses:
            answer = client.get(path)
            assert answer.status_code == 303, (path, answer.status_code)
            assert answer.headers["location"].startswith("/console/login"), path
        assert client.get("/console").headers["location"] == "/console/"
        back = client.get("/console/orders?status=new")
        assert back.headers["location"] == "/console/login?next=/console/orders%3Fstatus%3Dnew"
        for method, path in (("GET", "/work-orders"), ("GET", "/events"), ("POST", "/work-orders")):
            refused = client.request(method, path, json={})
            assert refused.status_code == 401, (method, path)
            assert refused.json()["code"] == "unauthorized"
    # What the log-in page needs, and nothing else.
    login = anonymous.get("/console/login")
    assert login.status_code == 200 and "用户名" in login.text
    assert "default-src 'self'" in login.headers["content-security-policy"]
    assert anonymous.get("/console/static/console.css").status_code == 200


def test_staff_see_the_pages_their_role_may_open(api: Api) -> None:
    agent, _ = signed_in(api, "agent")
    supervisor, _ = signed_in(api, "supervisor")
    admin, _ = signed_in(api, "admin")
    for client in (agent, supervisor, admin):
        for path in PAGES:
            assert client.get(path).status_code == 200, path
    assert agent.get("/console/stats").status_code == 403
    assert agent.get("/console/audit").status_code == 403
    assert "没有打开此页面的权限" in agent.get("/console/audit").text
    assert supervisor.get("/console/stats").status_code == 200
    assert supervisor.get("/console/audit").status_code == 403
    assert admin.get("/console/stats").status_code == 200
    assert admin.get("/console/audit").status_code == 200
    nav = re.compile(r'<nav class="mainnav".*?</nav>', re.S)
    agent_nav = nav.search(agent.get("/console/").text).group(0)
    admin_nav = nav.search(admin.get("/console/").text).group(0)
    for title in ("报警", "会话", "工单", "居民"):
        assert f">{title}</a>" in agent_nav and f">{title}</a>" in admin_nav
    for title in ("统计", "审计"):
        assert f">{title}</a>" not in agent_nav and f">{title}</a>" in admin_nav
    assert "退出" in agent.get("/console/").text
    # Signed in, the vendored chart library is served from node_modules (npm ci).
    chart = admin.get("/console/static/vendor/chart.umd.js")
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("text/javascript")
    assert "Chart" in chart.text[:5000]


def test_the_session_cookie_is_strict_and_login_failures_say_what_the_api_says(
    api: Api,
) -> None:
    client = httpx.Client(base_url=api.base_url, timeout=10, follow_redirects=False)
    answer = client.post(
        "/console/login",
        data={"username": "agent", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    cookie = answer.headers["set-cookie"]
    for flag in ("linli_session=", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie, re.I).group(1))
    assert max_age == int(get_settings().token_ttl_hours * 3600)
    token_answer = httpx.post(
        api.base_url + "/auth/token", json={"username": "agent", "password": "wrong password"}
    )
    for username, password in (("agent", "wrong password"), ("bot", PASSWORD), ("nobody", "x")):
        refused = httpx.post(
            api.base_url + "/console/login", data={"username": username, "password": password}
        )
        assert refused.status_code == 401
        assert token_answer.json()["message"] in refused.text
        assert "set-cookie" not in refused.headers
    empty = httpx.post(api.base_url + "/console/login", data={"username": "", "password": ""})
    assert empty.status_code == 422 and "请输入用户名和密码" in empty.text
    elsewhere = httpx.post(
        api.base_url + "/console/login",
        data={"username": "agent", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers


def test_a_forged_post_without_this_sessions_csrf_token_changes_nothing(api: Api) -> None:
    order = new_repair(api)
    path = f"/work-orders/{order['id']}/transitions"
    agent, csrf = signed_in(api, "agent")
    _, other_csrf = signed_in(api, "agent2")
    _, own_other_session = signed_in(api, "agent")
    assert len({csrf, other_csrf, own_other_session}) == 3
    for headers in (
        {},
        {"X-CSRF-Token": other_csrf},
        {"X-CSRF-Token": own_other_session},
        {"X-CSRF-Token": "0" * 64},
        {"X-CSRF-Token": "é".encode()},  # not ASCII: refused, not a 500
    ):
        refused = agent.post(path, json={"to": "accepted"}, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert refused.json()["code"] == "csrf" and "校验" in refused.json()["message"]
        assert (
            agent.post(
                f"/work-orders/{order['id']}/notes", json={"text": "forged"}, headers=headers
            ).json()["code"]
            == "csrf"
        )
    after = order_of(api, order["id"])
    assert after["status"] == "new"
    assert [h["action"] for h in after["history"]] == ["created"]
    # Reads need no token; this session's token lets the write through.
    assert agent.get(f"/work-orders/{order['id']}").status_code == 200
    done = agent.post(path, json={"to": "accepted"}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert done.json()["history"][-1]["actor_id"] == me(api, "agent")["id"]
    # Bearer clients are unaffected, and a bearer header wins over a cookie.
    bot = api.call("bot", "POST", path, json={"to": "cancelled"}, cookies=agent.cookies)
    assert bot.status_code == 200 and bot.json()["status"] == "cancelled"
    # Log-out is protected the same way.
    assert agent.post("/console/logout", data={"csrf_token": other_csrf}).status_code == 403
    assert agent.get("/work-orders?limit=1").status_code == 200


def test_logging_out_ends_the_session(api: Api, backend: Backend) -> None:
    agent, csrf = signed_in(api, "agent")
    token = agent.cookies["linli_session"]
    out = agent.post("/console/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login?signed_out=1"
    kept = httpx.Client(
        base_url=api.base_url, timeout=10, follow_redirects=False, cookies={"linli_session": token}
    )
    assert kept.get("/work-orders").status_code == 401
    assert kept.get("/console/orders").status_code == 303
    with backend.session() as session:
        assert session.get(ApiToken, token_hash(token)) is None
    # The API's own log-out takes the session too (with its CSRF token).
    again, again_csrf = signed_in(api, "agent")
    assert again.post("/auth/logout").status_code == 403
    assert again.post("/auth/logout", headers={"X-CSRF-Token": again_csrf}).status_code == 204
    assert again.get("/work-orders").status_code == 401


# --- the alarm board, in Chromium ------------------------------------------------------------


def run_scheduler(backend: Backend, now: datetime) -> None:
    """One round of the scheduler's SOS sweep at `now`, published at once."""
    result = sweep.sweep_sos(backend.factory, POLICY, now, timedelta(minutes=5))
    events.publish(backend.factory, result.event_ids)


@sqlite_only
def test_an_sos_sounds_on_the_alarm_board_until_a_person_takes_it_on(
    api: Api, backend: Backend, console: Console
) -> None:
    home = provision(api)  # 王秀英, 5号楼1单元302, a heart condition, a son and a daughter
    resident = home.resident
    agent = me(api, "agent")
    page = console.open("agent", "/console/")
    expect(page.locator("#alarm-summary")).not_to_have_text("正在加载……")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator("html")).to_have_attribute("data-live", "connected")

    answer = post_event(api.base_url, home.device_id, home.secret, sos_body())
    assert answer.status_code == 201, answer.text
    order_id = answer.json()["order_id"]
    card = page.locator(f"#alarm-{order_id}")
    expect(card).to_be_visible()
    expect(page.locator("#alarm-board")).to_have_attribute("data-alarm-sounding", "true")
    expect(card).to_have_class(re.compile("alarm--waiting"))
    for shown in (
        resident["name"],
        "5号楼1单元302",
        "冠心病，服用硝酸甘油",
        "行动不便",
        "李明（儿子）",
        resident["contacts"][0]["phone"],
    ):
        expect(card).to_contain_text(shown)
    expect(card.locator(".alarm-timer")).to_contain_text("须在 60 秒内受理")
    expect(page.locator("#alarm-announcer")).to_contain_text(resident["name"])
    assert page.evaluate("window.__notReloaded") is True

    # No one answers for 60 s: the chain calls the first family contact; the board shows it.
    wait_follow_up(backend, order_id)
    with backend.session() as session:
        created = session.get(WorkOrder, order_id).created_at
    run_scheduler(backend, created + 60 * SECONDS)
    expect(card.locator(".steps")).to_contain_text("第1步：电话通知紧急联系人李明（儿子）")
    expect(card.locator(".escalation-state")).to_contain_text("下一步")
    console.screenshot(page, "console-alarm-board")

    card.get_by_role("button", name="我来处理").click()
    expect(card).to_have_class(re.compile("alarm--taken"))
    expect(card).to_contain_text(f"由 {agent['display_name']}（我） 负责")
    accepted = wait_status(api, order_id, "accepted")
    taken = [h for h in accepted["history"] if h["to_status"] == "accepted"]
    assert [h["actor_id"] for h in taken] == [agent["id"]]
    assert accepted["assignee_id"] == agent["id"] and accepted["first_response_at"]
    chain = api.call("agent", "GET", f"/work-orders/{order_id}/escalation").json()
    assert chain["chain"] and not chain["running"] and chain["acknowledged_at"]
    assert chain["step"] == 1 and chain["next_to"] is None

    # The scheduler's next rounds call nobody else and record the stop.
    run_scheduler(backend, created + 120 * SECONDS)
    run_scheduler(backend, created + 600 * SECONDS)
    chain = api.call("agent", "GET", f"/work-orders/{order_id}/escalation").json()
    assert (chain["step"], chain["finish_reason"]) == (1, "acknowledged")
    assert [s["action"] for s in chain["steps"]].count("escalation_step") == 1
    assert chain["steps"][-1]["text"] == "工作人员已受理，停止逐级通知"
    expect(card.locator(".escalation-state")).to_contain_text("已停止")
    if page.locator(".alarm--waiting").count() == 0:  # other tests' SOS may still wait
        expect(page.locator("#alarm-board")).to_have_attribute("data-alarm-sounding", "false")
    assert console.errors == []


# --- the work-orders page, in Chromium -------------------------------------------------------


def click_action(page: Page, name: str) -> None:
    page.locator("#d-actions").get_by_role("button", name=name, exact=True).click()


@sqlite_only
def test_a_work_order_is_worked_from_new_to_closed_in_the_console(
    api: Api, console: Console
) -> None:
    agent = me(api, "agent")
    page = console.open("agent", "/console/orders")
    expect(page.locator("html")).to_have_attribute("data-live", "connected")
    order = new_repair(api)
    order_id = order["id"]
    row = page.locator(f'#queue tr[data-order-id="{order_id}"]')
    expect(row).to_be_visible()  # live, without a reload
    expect(row.locator('[data-sla="response"]')).to_contain_text("剩")
    row.get_by_role("link", name=f"#{order_id}").click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#d-title")).to_contain_text(f"#{order_id} 报修 · 新建")

    # Resolving a new order is not allowed: the API's words and the allowed moves are shown.
    page.locator(".other-moves summary").click()
    page.locator(".other-moves").get_by_role("button", name="办结").click()
    page.get_by_role("button", name="确认办结").click()
    error = page.locator("#action-error")
    expect(error).to_contain_text("工单状态不能从“新建”改为“已办结”")
    expect(error).to_contain_text("允许改为")
    expect(error.get_by_role("button", name="受理")).to_be_visible()
    assert order_of(api, order_id)["status"] == "new"
    console.screenshot(page, "console-orders-refused")

    error.get_by_role("button", name="受理").click()
    wait_status(api, order_id, "accepted")
    expect(page.locator("#d-title")).to_contain_text("已受理")
    expect(error).to_be_hidden()

    page.get_by_role("button", name="指派给我").click()
    wait_for(lambda: order_of(api, order_id)["assignee_id"] == agent["id"], TIMEOUT, "assigned")

    click_action(page, "开始处理")
    wait_status(api, order_id, "in_progress")

    click_action(page, "挂起")
    confirm = page.get_by_role("button", name="确认挂起")
    confirm.click()  # the reason is required: nothing is sent without it
    assert order_of(api, order_id)["status"] == "in_progress"
    page.get_by_label("挂起原因（必填，例如：等居民在家、等配件）").fill("等居民下午在家")
    confirm.click()
    held = wait_status(api, order_id, "on_hold")
    assert held["history"][-1]["reason"] == "等居民下午在家"
    expect(page.locator("#d-sla")).to_contain_text("计时暂停")

    page.get_by_label("添加备注").fill("已约好下午三点上门")
    page.get_by_role("button", name="保存备注").click()
    wait_for(
        lambda: order_of(api, order_id)["history"][-1]["reason"] == "已约好下午三点上门",
        TIMEOUT,
        "the note",
    )
    expect(page.locator("#d-history")).to_contain_text("已约好下午三点上门")
    page.get_by_label("和居民约定的时间").fill("2027-01-08T15:00")  # the console's clock: Beijing
    page.get_by_role("button", name="保存时间").click()
    wait_for(
        lambda: order_of(api, order_id)["scheduled_at"] == "2027-01-08T07:00:00+00:00",
        TIMEOUT,
        "the agreed time",
    )
    expect(page.locator("#d-history")).to_contain_text("约定时间：1月8号星期五下午3点")

    click_action(page, "恢复处理")
    wait_status(api, order_id, "in_progress")

    click_action(page, "办结")
    page.get_by_label("办结说明（可不填）").fill("已更换厨房水管")
    page.get_by_role("button", name="确认办结").click()
    resolved = wait_status(api, order_id, "resolved")
    assert resolved["history"][-1]["reason"] == "已更换厨房水管"

    click_action(page, "关闭")
    closed = wait_status(api, order_id, "closed")
    moves = [
        (h["from_status"], h["to_status"]) for h in closed["history"] if h["action"] == "status"
    ]
    assert moves == [
        ("new", "accepted"),
        ("accepted", "in_progress"),
        ("in_progress", "on_hold"),
        ("on_hold", "in_progress"),
        ("in_progress", "resolved"),
        ("resolved", "closed"),
    ]
    assert {h["actor_id"] for h in closed["history"] if h["action"] == "status"} == {agent["id"]}
    expect(page.locator("#d-actions")).to_contain_text("已经结束")
    console.screenshot(page, "console-orders")
    assert console.errors == []


@sqlite_only
def test_a_console_that_lost_its_network_misses_nothing(api: Api, console: Console) -> None:
    page = console.open("supervisor", "/console/orders")
    expect(page.locator("html")).to_have_attribute("data-live", "connected")
    page.context.set_offline(True)
    expect(page.locator("html")).to_have_attribute("data-live", "retrying")
    expect(page.locator("#connection")).to_contain_text("实时更新已中断")
    missed = new_repair(api)
    time.sleep(1)
    page.context.set_offline(False)
    expect(page.locator(f'#queue tr[data-order-id="{missed["id"]}"]')).to_be_visible()
    expect(page.locator("html")).to_have_attribute("data-live", "connected")
    assert console.errors == []


# --- property-based run over the console's own endpoints -------------------------------------


def test_console_endpoints_have_no_server_errors(api: Api, tmp_path: Path) -> None:
    # Log-in (anyone) and the escalation read (a session), then log-out with a session of its
    # own: a successful log-out ends the session the rest of a run would use.
    for paths in ("^/console/login$|/escalation$", "^/console/logout$"):
        client, csrf = signed_in(api, "agent")
        session = f"linli_session={client.cookies['linli_session']}"
        fuzz_api(
            api,
            tmp_path / paths.strip("^$").replace("/", "_"),
            *("--include-path-regex", paths, "--max-examples", "40", "--max-time", "15"),
            *("--header", f"Cookie: {session}", "--header", f"X-CSRF-Token: {csrf}"),
            timeout=120,
        )
