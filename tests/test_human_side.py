"""The human side end to end, both screens in Debian's Chromium against the real stack (Rasa
with the trained model, the action server, the API, Redis, the conversation gateway): a
resident asks for a person in the web chat, staff take the conversation in the console and
answer, the bot stays silent through a Rasa restart that lost the session, and answers again
once staff hand the conversation back."""

from __future__ import annotations

import secrets

import redis
from playwright.sync_api import Browser, Page, expect

from channels.gateway.webchat import conversation_key
from tests.browser import Console
from tests.conftest import RUN_ID
from tests.test_gateway import TRACKERS, Stack, stack  # noqa: F401 (the fixture)


def send(page: Page, text: str) -> None:
    """Type and press Enter, and wait until the gateway has answered (replies included)."""
    with page.expect_response("**/chat/api/messages") as answered:
        page.get_by_label("要说的话").fill(text)
        page.keyboard.press("Enter")
    assert answered.value.status == 200, answered.value.text()


def test_a_person_answers_in_writing_and_the_bot_waits_until_handed_back(
    stack: Stack,  # noqa: F811
    chromium: Browser,
    redis_client: redis.Redis,
) -> None:
    secret = secrets.token_hex(32)
    key = conversation_key(secret)
    stack.known(key)  # a resident this device is linked to already
    resident = chromium.new_context(base_url=stack.gateway, locale="zh-CN")
    resident.set_default_timeout(60_000)
    resident.add_init_script(f"localStorage.setItem('linli.chat.secret', '{secret}')")
    console = Console(chromium, stack.api.base_url, "human-side")
    try:
        chat = resident.new_page()
        chat.goto("/chat/")
        status = chat.get_by_role("status")
        expect(status).to_have_text("助手在线，有什么事请说。")
        staff = console.open(f"agent-dlg{RUN_ID}", "/console/conversations")

        # The resident asks for a person; the console shows the conversation waiting, live.
        chat.get_by_role("button", name="找人工").click()
        expect(status).to_have_text("正在为您联系工作人员…")
        item = staff.locator(f'li[data-key="{key}"]')
        expect(item).to_have_attribute("data-state", "waiting")

        # Staff claim it and reply; the resident's page shows the reply without a reload.
        item.get_by_role("link").click()
        staff.get_by_role("button", name="我来接手").click()
        expect(status).to_have_text("工作人员agent正在为您服务")
        staff.get_by_label("回复居民").fill("您好，我是社区的小李，您说。")
        staff.get_by_role("button", name="发送").click()
        expect(chat.locator(".messages li.staff")).to_contain_text("您好，我是社区的小李，您说。")
        expect(staff.locator("#conv-log .msg--staff .msg-delivery")).to_have_text("已送达")

        # The resident writes again: staff see it, the bot says nothing.
        bot_lines = chat.locator(".messages li.bot")
        said_by_bot = bot_lines.count()
        send(chat, "我家厨房水管漏水了")
        expect(staff.locator("#conv-log .msg--resident .msg-text").last).to_have_text(
            "我家厨房水管漏水了"
        )
        expect(bot_lines).to_have_count(said_by_bot)

        # Rasa restarts and the dialogue's session is gone meanwhile: still silent.
        stack.dialogue.rasa.stop()
        redis_client.delete(TRACKERS + key)
        stack.dialogue.rasa.start()
        send(chat, "还在吗")
        expect(staff.locator("#conv-log .msg--resident .msg-text").last).to_have_text("还在吗")
        expect(bot_lines).to_have_count(said_by_bot)
        assert [role for role, _ in stack.lines(key)][-2:] == ["resident", "resident"]

        # Staff hand back with a note: the bot answers the next message.
        staff.get_by_label("交回助手：已办好的事（助手不会再问）").fill(
            "已派师傅明天上午上门修水管"
        )
        staff.get_by_role("button", name="交回助手").click()
        expect(status).to_have_text("助手在线，有什么事请说。")
        expect(staff.locator("#conv-end")).to_be_hidden()
        expect(staff.locator("#conv-log .msg--system .msg-text").last).to_have_text(
            "agent 把会话交回助手：已派师傅明天上午上门修水管"
        )
        expect(staff.locator("#conv-log .msg--system").last).to_be_in_viewport()
        send(chat, "高龄津贴怎么领")
        expect(bot_lines).to_have_count(said_by_bot + 1)
        expect(bot_lines.last).to_contain_text("高龄津贴")
        console.screenshot(staff, "console-conversation")
        console.screenshot(chat, "web-chat")
        assert console.errors == []
    finally:
        console.close(failed=False)
        resident.close()
