"""The console's 会话 page in real Chromium against the API: a hand-over appears live, one person
claims it while a colleague sees who has it, the reply waits for the channel, hand-back and
close end it with the order; a hand-over nobody claims alerts the supervisor (the scheduler's
sweep run here at a chosen moment: the controllable clock); how far a WeChat reply reaches, and
a reply WeChat refused, marked on the reply.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import expect
from sqlalchemy import select

from tests.browser import Console
from tests.support import Api, Backend, hotline_token
from workorders.models import Conversation, Event, Handoff
from workorders.office_hours import OfficeHours
from workorders.services import conversations, events

SHANGHAI = ZoneInfo("Asia/Shanghai")


def open_handoff(
    api: Api, *, channel: str = "web", with_order: bool = True, can_push: bool | None = None
) -> tuple[str, int]:
    key = f"{channel}-{uuid.uuid4().hex}"
    said = api.call(
        "gateway",
        "POST",
        f"/conversations/{key}/messages",
        json={
            "channel": channel,
            "can_push": channel == "web" if can_push is None else can_push,
            "messages": [{"role": "resident", "text": "我要找人工，电话13800138000"}],
        },
    )
    assert said.status_code == 200, said.text
    order_id = 0
    if with_order:
        order = api.call(
            "bot",
            "POST",
            "/work-orders",
            json={
                "kind": "callback",
                "channel": channel,
                "details": {"reason": "居民要求人工服务", "phone": "13800138000"},
            },
        )
        assert order.status_code == 201, order.text
        order_id = order.json()["id"]
    opened = api.call(
        "bot",
        "POST",
        f"/conversations/{key}/handoff",
        json={
            "channel": channel,
            "reason": "request_human",
            "summary": "居民：我要找人工",
            "order_id": order_id or None,
        },
    )
    assert opened.status_code == 201, opened.text
    return key, order_id


def test_staff_claim_reply_and_hand_back_in_the_console(api: Api, console: Console) -> None:
    page = console.open("agent", "/console/conversations")
    colleague = console.open("agent2", "/console/conversations")
    key, order_id = open_handoff(api)

    item = page.locator(f'li[data-key="{key}"]')
    expect(item).to_have_attribute("data-state", "waiting")  # live, no reload
    expect(item.locator(".conv-owner")).to_have_text("等待接手")
    item.get_by_role("link").click()
    expect(page.locator("#conv-log .msg--resident .msg-text")).to_have_text(
        ["我要找人工，电话138****8000"]
    )
    page.get_by_role("button", name="我来接手").click()
    expect(page.locator("#conv-detail")).to_have_attribute("data-state", "staff")
    assert api.call("agent", "GET", f"/work-orders/{order_id}").json()["status"] == "accepted"

    # The colleague's console learns who has it from the event stream.
    other = colleague.locator(f'li[data-key="{key}"] .conv-owner')
    expect(other).to_have_text("agent 处理中")
    colleague.locator(f'li[data-key="{key}"]').get_by_role("link").click()
    expect(colleague.get_by_role("button", name="我来接手")).to_be_hidden()
    expect(colleague.locator("#conv-notice")).to_have_text("这个会话由agent处理。")

    page.get_by_label("回复居民").fill("您好，我是网格员，马上帮您联系。")
    page.get_by_role("button", name="发送").click()
    staff_line = page.locator("#conv-log .msg--staff")
    expect(staff_line.locator(".msg-text")).to_have_text("您好，我是网格员，马上帮您联系。")
    expect(staff_line.locator(".msg-delivery")).to_have_text("等待居民打开页面后送达")
    pending = api.call("gateway", "GET", f"/conversations/{key}/outbound").json()
    assert [m["text"] for m in pending] == ["您好，我是网格员，马上帮您联系。"]

    page.get_by_label("交回助手：已办好的事（助手不会再问）").fill("已约好明天上午上门")
    page.get_by_role("button", name="交回助手").click()
    expect(page.locator("#conv-notice")).to_have_text("这个会话现在由助手接待。")
    expect(page.locator(f'li[data-key="{key}"]')).to_have_count(0)
    expect(colleague.locator(f'li[data-key="{key}"]')).to_have_count(0)
    state = api.call("agent", "GET", f"/conversations/{key}").json()
    assert (state["state"], state["handoffs"][0]["outcome"]) == ("bot", "已约好明天上午上门")
    assert api.call("agent", "GET", f"/work-orders/{order_id}").json()["status"] == "resolved"
    assert console.errors == []


def test_a_hotline_hand_over_is_a_call_back_and_is_closed_with_its_outcome(
    api: Api, backend: Backend, console: Console
) -> None:
    key, order_id = open_handoff(api, channel="hotline")
    # The hotline writes the call's record when the call ends, with the orders it made.
    now = datetime.now(timezone.utc)
    with httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {hotline_token(backend)}"}
    ) as hotline:
        record = hotline.post(
            "/calls",
            json={
                "call_id": f"{uuid.uuid4().hex}@sip.linli.local",
                "channel": "hotline",
                "caller": "13800138000",
                "started_at": (now - timedelta(seconds=90)).isoformat(),
                "ended_at": now.isoformat(),
                "outcome": "callback",
                "transcript": [
                    {"at": now.isoformat(), "speaker": "bot", "text": "您好，这里是邻里助手。"},
                    {"at": now.isoformat(), "speaker": "caller", "text": "我要找人工"},
                ],
                "order_ids": [order_id],
            },
        )
    assert record.status_code == 201, record.text
    page = console.open("agent", f"/console/conversations?c={key}")
    call = page.locator("#conv-call")
    expect(call.locator("#conv-call-facts")).to_contain_text("来电 138****8000，需回拨")
    expect(call.locator(".msg-text")).to_have_text(["您好，这里是邻里助手。", "我要找人工"])
    page.get_by_role("button", name="我来接手").click()
    expect(page.locator("#conv-notice")).to_have_text(
        "这个渠道不能把文字送到居民那里：请按回拨工单给居民打电话，处理完后结束会话。"
    )
    expect(page.get_by_label("回复居民")).to_be_hidden()
    expect(page.get_by_role("link", name=f"#{order_id}")).to_have_attribute(
        "href", f"/console/orders?order={order_id}"
    )
    page.get_by_label("结束会话：处理结果（必填）").fill("已回电，约好周一上门修水管")
    page.get_by_role("button", name="结束会话").click()
    expect(page.locator("#conv-notice")).to_have_text("这个会话现在由助手接待。")
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert order["status"] == "resolved"
    assert order["history"][-1]["reason"] == "会话结束：已回电，约好周一上门修水管"
    assert console.errors == []


def test_an_unclaimed_hand_over_alerts_the_supervisor_on_every_page(
    api: Api, backend: Backend, console: Console
) -> None:
    supervisor = console.open("supervisor", "/console/")  # the alarm board, not 会话
    agent = console.open("agent", "/console/conversations")
    key, _ = open_handoff(api, with_order=False)
    expect(agent.locator(f'li[data-key="{key}"]')).to_have_count(1)
    with backend.session() as session:
        due = session.execute(
            select(Handoff.next_alert_at)
            .join(Conversation, Conversation.id == Handoff.conversation_id)
            .where(Conversation.key == key)
        ).scalar_one()
    hours = OfficeHours.parse("mon-fri 08:30-17:30")  # the API's default office hours

    def alerts_at(moment: datetime) -> list[int]:
        """Sweep at `moment`; the alerts about this test's hand-over (others may be due too)."""
        ids = conversations.sweep_unclaimed(backend.factory, moment, hours, timedelta(minutes=3))
        events.publish(backend.factory, ids)
        with backend.session() as session:
            payloads = session.execute(select(Event.payload).where(Event.id.in_(ids))).scalars()
            return [p["alert"] for p in payloads if p["conversation"] == key]

    assert alerts_at(due - timedelta(seconds=1)) == []
    assert alerts_at(due) == [1]
    banner = supervisor.locator("#handoff-alert")
    alert = banner.locator(f'li[data-conversation="{key}"]')
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-sounded", "true")
    expect(alert).to_contain_text("（第 1 次提醒）")
    expect(alert.get_by_role("link", name="去安排接手")).to_have_attribute(
        "href", f"/console/conversations?c={key}"
    )
    assert alerts_at(due + timedelta(minutes=3)) == [2]  # and again
    expect(alert).to_have_attribute("data-alert", "2")
    # A page opened later shows it too; the list marks it late; agents are not alerted.
    later = supervisor.context.new_page()
    later.goto("/console/conversations")
    expect(later.locator(f'#handoff-alert li[data-conversation="{key}"]')).to_have_count(1)
    expect(later.locator(f'li[data-key="{key}"]')).to_have_class(
        "conv-item conv-item--waiting conv-item--late"
    )
    expect(agent.locator("#handoff-alert")).to_be_hidden()

    # Claimed: the alert goes, everywhere.
    agent.locator(f'li[data-key="{key}"]').get_by_role("link").click()
    agent.get_by_role("button", name="我来接手").click()
    expect(alert).to_have_count(0)
    expect(later.locator(f'#handoff-alert li[data-conversation="{key}"]')).to_have_count(0)
    assert console.errors == []


def _minute(moment: datetime) -> str:
    """How the console writes a deadline: 12月7日 09:30, in the residents' time zone."""
    local = moment.astimezone(SHANGHAI)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def test_the_console_shows_how_far_a_wechat_reply_reaches(api: Api, console: Console) -> None:
    key, order_id = open_handoff(api, channel="wechat", can_push=True)

    def report(open_until: datetime | None, sends_left: int) -> None:
        response = api.call(
            "gateway",
            "PUT",
            f"/conversations/{key}/reach",
            json={
                "open_until": open_until.isoformat() if open_until else None,
                "sends_left": sends_left,
            },
        )
        assert response.status_code == 204, response.text

    page = console.open("agent", f"/console/conversations?c={key}")
    reach = page.locator("#conv-reach")
    expect(page.locator("#conv-log .msg--resident")).to_have_count(1)
    expect(reach).to_be_hidden()  # nothing reported: a channel without limits
    page.get_by_role("button", name="我来接手").click()
    expect(page.get_by_label("回复居民")).to_be_visible()

    until = datetime.now(timezone.utc) + timedelta(hours=47)
    report(until, 4)  # live: the change is an event
    expect(reach).to_have_text(f"微信客服消息：还能发 4 条，{_minute(until)} 前有效")
    expect(reach).to_have_attribute("data-reach", "open")

    report(until, 0)
    expect(reach).to_have_attribute("data-reach", "closed")
    expect(reach).to_have_text(
        "微信客服消息：这次能发的条数已用完，居民再发消息后才能再发。"
        f"回复现在不会通过微信送到居民那里，请打电话联系居民，电话在回拨工单 #{order_id} 上。"
    )
    expect(reach.get_by_role("link", name=f"#{order_id}")).to_have_attribute(
        "href", f"/console/orders?order={order_id}"
    )
    console.screenshot(page, "conversations-reach-closed")

    # The window closes while staff look at it: no event, the page's clock.
    soon = datetime.now(timezone.utc) + timedelta(seconds=4)
    report(soon, 3)
    expect(reach).to_have_text(f"微信客服消息：还能发 3 条，{_minute(soon)} 前有效")
    expect(reach).to_have_text(
        f"微信客服消息：{_minute(soon)} 起已不能再发（居民超过48小时没有发消息）。"
        f"回复现在不会通过微信送到居民那里，请打电话联系居民，电话在回拨工单 #{order_id} 上。",
        timeout=15_000,
    )
    report(None, 0)
    expect(reach).to_have_text(
        "微信客服消息：现在不能发。"
        f"回复现在不会通过微信送到居民那里，请打电话联系居民，电话在回拨工单 #{order_id} 上。"
    )
    assert console.errors == []


def test_a_reply_wechat_refused_is_explained_and_marked(api: Api, console: Console) -> None:
    key, order_id = open_handoff(api, channel="wechat", can_push=True)
    page = console.open("agent", f"/console/conversations?c={key}")
    page.get_by_role("button", name="我来接手").click()
    page.get_by_label("回复居民").fill("师傅明天上午九点上门。")
    page.get_by_role("button", name="发送").click()
    reply = page.locator("#conv-log .msg--staff")
    expect(reply.locator(".msg-delivery")).to_have_text("等待送达")
    message_id = api.call("gateway", "GET", f"/conversations/{key}/outbound").json()[0]["id"]
    system = page.locator("#conv-log .msg--system .msg-text")

    def refused(code: int, fallback: str) -> None:
        response = api.call(
            "gateway",
            "POST",
            f"/conversations/{key}/outbound/{message_id}/undeliverable",
            json={"code": code, "fallback": fallback},
        )
        assert response.status_code == 204, response.text

    refused(45047, "subscribe")  # live: the event refreshes the open conversation
    expect(reply).to_have_attribute("data-undelivered", "subscribe")
    expect(reply.locator(".msg-delivery")).to_have_text(
        "暂未送达：这次能发的客服消息条数用完了。已发订阅消息提醒居民，居民回消息后会自动送达。"
    )
    expect(system.last).to_have_text(
        "这条回复暂时发不到居民的微信（这次能发的客服消息条数用完了）。"
        "已发订阅消息提醒居民，居民回消息后会自动送达。"
    )

    refused(43004, "callback")
    expect(reply).to_have_attribute("data-undelivered", "callback")
    expect(reply).to_have_class("msg msg--staff msg--undelivered msg--callback")
    expect(reply.locator(".msg-delivery")).to_have_text(
        "未送达：没能发到居民的微信（居民已经取消关注公众号）。请打电话联系居民。"
    )
    said = "这条回复没能发到居民的微信（居民已经取消关注公众号）。请按回拨工单打电话联系居民。"
    expect(system).to_have_text(
        [
            "转人工：居民要求人工服务",
            "agent 接手了会话",
            "这条回复暂时发不到居民的微信（这次能发的客服消息条数用完了）。"
            "已发订阅消息提醒居民，居民回消息后会自动送达。",
            said,
        ]
    )
    console.screenshot(page, "conversations-undelivered")
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert [h["reason"] for h in order["history"] if h["action"] == "note"] == [said]
    assert console.errors == []
