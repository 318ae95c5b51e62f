"""The conversation gateway (channels/gateway) as a real process in front of the real stack:
Rasa with the trained model, the action server, the work-order API over HTTP, Redis. Staff act
through the API as a signed-in agent; the web chat page runs in Debian's Chromium."""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page
from prometheus_client.parser import text_string_to_metric_families

from channels.gateway.webchat import conversation_key
from tests.browser import chromium  # noqa: F401 (the fixture)
from tests.conftest import RUN_ID
from tests.dialogue_stack import BIN, ROOT, DialogueStack, Process, agent_token
from tests.factories import resident_body
from tests.prometheus import query, scraping
from tests.servers import free_port
from tests.supervised import until
from tests.support import Api

PREFIX = f"linli:test:{RUN_ID}"  # the conftest removes these keys at the end
TRACKERS = f"linlitest{RUN_ID}:tracker:"  # Rasa's tracker store (tests/conftest.py)


def texts_of(events: list[dict[str, Any]]) -> list[str]:
    """What the bot said, in Rasa's history."""
    return [e.get("text") or "" for e in events if e["event"] == "bot"]


class Stream:
    """The web chat's Server-Sent Events, read in a thread as a browser would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", self.url) as response,
        ):
            self._response = response
            fields: dict[str, str] = {}
            try:
                for line in response.iter_lines():
                    if not line:
                        if "data" in fields:
                            head = {"event": fields.get("event"), "sse_id": fields.get("id")}
                            self.events.put({**head, **json.loads(fields["data"])})
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
            except httpx.HTTPError:
                pass  # closed by the test

    def next(self, event: str, seconds: float = 20.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                break
            if item["event"] == event and all(item.get(k) == v for k, v in match.items()):
                return item
        raise AssertionError(f"no {event} {match} on the stream within {seconds} s")

    def close(self) -> None:
        if self._response is not None:
            self._response.close()


@dataclass
class Web:
    """One device with the web chat open: its secret, and the key the server derives."""

    gateway: str
    secret: str

    @property
    def key(self) -> str:
        return conversation_key(self.secret)

    def post(self, text: str, client_id: str | None = None, **extra: Any) -> httpx.Response:
        body = {"secret": self.secret, "client_id": client_id or uuid.uuid4().hex, **extra}
        if text:
            body["text"] = text
        return httpx.post(f"{self.gateway}/chat/api/messages", json=body, timeout=90)

    def say(self, text: str, client_id: str | None = None) -> dict[str, Any]:
        response = self.post(text, client_id)
        assert response.status_code == 200, response.text
        return response.json()

    def stream(self) -> Stream:
        return Stream(f"{self.gateway}/chat/api/stream?secret={self.secret}")

    def ack(self, message_id: int) -> httpx.Response:
        return httpx.post(
            f"{self.gateway}/chat/api/ack",
            json={"secret": self.secret, "id": message_id},
            timeout=30,
        )


@dataclass
class Stack:
    api: Api
    dialogue: DialogueStack
    gateway: str
    staff_token: str
    metrics: str = ""  # the gateway's Prometheus endpoint

    def web(self) -> Web:
        return Web(self.gateway, secrets.token_hex(32))

    def known(self, key: str) -> dict[str, Any]:
        """A resident the dialogue already linked to this web chat device."""
        body = resident_body(identities=[{"kind": "web", "value": key}])
        response = self.api.call("bot", "POST", "/residents", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def staff(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.staff_token}"}
        return httpx.request(
            method, f"{self.api.base_url}{path}", headers=headers, timeout=30, **kwargs
        )

    def conversation(self, key: str) -> dict[str, Any]:
        response = self.staff("GET", f"/conversations/{key}")
        assert response.status_code == 200, response.text
        return response.json()

    def lines(self, key: str) -> list[tuple[str, str]]:
        return [(m["role"], m["text"]) for m in self.conversation(key)["messages"]]

    def hand_over(self, key: str, resident_id: int | None = None) -> dict[str, Any]:
        """As the dialogue's action_handoff does (svc-actions)."""
        body = {"channel": "web", "reason": "request_human", "resident_id": resident_id}
        response = self.api.call("bot", "POST", f"/conversations/{key}/handoff", json=body)
        assert response.status_code == 201, response.text
        return response.json()["handoff"]

    def outbound(self, key: str) -> list[dict[str, Any]]:
        return self.api.call("gateway", "GET", f"/conversations/{key}/outbound").json()

    def orders(self, resident_id: int) -> list[dict[str, Any]]:
        return self.api.call(
            "bot", "GET", "/work-orders", params={"resident_id": resident_id}
        ).json()["items"]

    def tracker_events(self, key: str) -> list[dict[str, Any]]:
        return httpx.get(
            f"{self.dialogue.rasa_url}/conversations/{key}/tracker",
            params={"include_events": "ALL"},
            timeout=30,
        ).json()["events"]


def gateway_process(
    dialogue: DialogueStack, prefix: str = PREFIX, api_url: str | None = None
) -> Process:
    port = free_port()
    return Process(
        [str(BIN / "python"), "-m", "channels.gateway", "--port", str(port)],
        {
            "RASA_URL": dialogue.rasa_url,
            "WORKORDERS_URL": api_url or dialogue.api.base_url,
            "LINLI_TOKEN_GATEWAY": dialogue.api.tokens["gateway"],
            "LINLI_REDIS_PREFIX": prefix,
            "GATEWAY_EVENTS_WAIT_MS": "5000",
            "GATEWAY_METRICS_PORT": str(free_port()),
        },
        f"http://127.0.0.1:{port}/health",
        startup=30,
    )


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack) -> Iterator[Stack]:
    gateway = gateway_process(dialogue)
    gateway.start()
    try:
        yield Stack(
            Api(dialogue.api),
            dialogue,
            gateway.url,
            agent_token(dialogue, RUN_ID),
            f"http://127.0.0.1:{gateway.env['GATEWAY_METRICS_PORT']}/metrics",
        )
    finally:
        gateway.stop()


def test_while_the_bot_has_it_the_bot_answers_and_both_sides_are_kept(stack: Stack) -> None:
    web = stack.web()
    resident = stack.known(web.key)
    answer = web.say("高龄津贴怎么领")
    assert answer["state"] == "bot" and answer["notice"] is None
    assert any("来自" in reply for reply in answer["replies"]), answer
    web.say("我的电话是13812345678")
    record = stack.conversation(web.key)
    assert (record["channel"], record["can_push"], record["resident_id"]) == (
        "web",
        True,
        resident["id"],
    )
    lines = [(m["role"], m["text"]) for m in record["messages"]]
    assert lines[0] == ("resident", "高龄津贴怎么领")
    assert [role for role, _ in lines[1 : 1 + len(answer["replies"])]] == ["bot"] * len(
        answer["replies"]
    )
    assert ("resident", "我的电话是138****5678") in lines
    assert "13812345678" not in json.dumps(record, ensure_ascii=False)


def _samples(url: str) -> dict[tuple[str, str], float]:
    """(metric, channel) → value, of the gateway's Prometheus text."""
    values = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            values[sample.name, sample.labels.get("channel", "")] = sample.value
    return values


def test_the_gateway_reports_its_turns_to_prometheus(stack: Stack, tmp_path: Path) -> None:
    before = _samples(stack.metrics)
    web = stack.web()
    stack.known(web.key)
    web.say("你好")
    web.say("高龄津贴怎么领")
    after = _samples(stack.metrics)
    for metric in ("linli_gateway_turn_seconds_count", "linli_dialogue_turn_seconds_count"):
        assert after[metric, "web"] - before.get((metric, "web"), 0) == 2, metric
    port = httpx.URL(stack.metrics).port
    assert port is not None
    with scraping("linli-gateway", port, tmp_path) as prometheus:  # Debian's, for real
        counted = query(prometheus, 'linli_gateway_turn_seconds_count{channel="web"}')
        assert counted == {"channel=web": after["linli_gateway_turn_seconds_count", "web"]}
    assert after["linli_gateway_turns_running", ""] == 0
    assert after["linli_gateway_turns_waiting", ""] == 0
    assert after["linli_gateway_turn_seconds_sum", "web"] > before.get(
        ("linli_gateway_turn_seconds_sum", "web"), 0
    )


def test_the_takeover_silence_staff_replies_emergencies_a_rasa_restart_and_the_hand_back(
    stack: Stack, redis_client: redis.Redis
) -> None:
    web = stack.web()
    resident = stack.known(web.key)
    assert web.say("你好")["replies"]
    stream = web.stream()
    try:
        assert stream.next("state")["state"] == "bot"
        handoff = stack.hand_over(web.key, resident["id"])
        assert stream.next("state", state="waiting")["notice"] == "正在为您联系工作人员…"

        # Waiting: nothing from the bot, and staff see what was said.
        quiet = web.say("我想问问高龄津贴")
        assert (quiet["replies"], quiet["state"]) == ([], "waiting")
        assert quiet["notice"] == "正在为您联系工作人员…"
        assert ("resident", "我想问问高龄津贴") in stack.lines(web.key)

        # Staff claim and reply; the page gets the reply live, and only its acknowledgement
        # makes it delivered.
        assert stack.staff("POST", f"/conversations/{web.key}/claim").status_code == 200
        assert stream.next("state", state="staff")["notice"] == "工作人员agent正在为您服务"
        sent = stack.staff(
            "POST", f"/conversations/{web.key}/replies", json={"text": "您好，我是社区的小李"}
        )
        assert sent.status_code == 201, sent.text
        reply = stream.next("reply")
        assert (reply["sse_id"], reply["id"], reply["text"], reply["author"]) == (
            str(sent.json()["id"]),
            sent.json()["id"],
            "您好，我是社区的小李",
            "agent",
        )
        assert [m["id"] for m in stack.outbound(web.key)] == [sent.json()["id"]]
        assert web.ack(sent.json()["id"]).status_code == 204
        assert stack.outbound(web.key) == []

        # An emergency is heard whoever has the conversation: advice, a P0, the alarm; and the
        # dialogue's who-and-where questions get their answers.
        urgent = web.say("救命 我摔倒了起不来")
        assert "别急着起来" in urgent["replies"][0], urgent
        assert urgent["state"] == "staff"
        emergency = next(o for o in stack.orders(resident["id"]) if o["kind"] == "emergency")
        assert emergency["priority"] == "P0"
        assert emergency["details"]["during_takeover"] is True  # for the staff who have it
        assert urgent["replies"][-1] == "您现在在家吗？"
        assert web.say("在家")["replies"][0].startswith("好，已经告诉工作人员了")
        assert web.say("你们快点")["replies"] == []

        # Rasa restarted and its session gone: the takeover lives in the API, the bot is still
        # quiet. While Rasa is down the resident is told what to do in danger.
        stack.dialogue.rasa.stop()
        down = web.say("喂，有人吗")
        assert (down["replies"], down["state"]) == ([], "staff")
        assert "120" in down["notice"]
        redis_client.delete(TRACKERS + web.key)
        stack.dialogue.rasa.start()
        assert web.say("还在吗")["replies"] == []
        assert ("resident", "喂，有人吗") in stack.lines(web.key)

        # Handed back with a note: the bot answers again and its history holds the note.
        back = stack.staff(
            "POST",
            f"/conversations/{web.key}/handback",
            json={"note": "已约好明天上午师傅上门"},
        )
        assert back.status_code == 200, back.text
        assert stream.next("state", state="bot")["notice"] is None
    finally:
        stream.close()
    answer = web.say("高龄津贴怎么领")
    assert answer["state"] == "bot"
    assert any("来自" in r for r in answer["replies"]), answer
    notes = [t for t in texts_of(stack.tracker_events(web.key)) if "已约好" in t]
    assert notes == ["（工作人员agent已处理：已约好明天上午师傅上门）"]
    assert handoff["id"] == stack.conversation(web.key)["handoffs"][0]["id"]


def test_a_rasa_outage_loses_nothing_and_the_retry_is_answered(stack: Stack) -> None:
    web = stack.web()
    stack.known(web.key)
    stack.dialogue.rasa.stop()
    try:
        down = web.post("高龄津贴怎么领", "turn-1")
        assert down.status_code == 503
        assert down.json()["code"] == "dialogue_unavailable"
        assert "助手暂时没有回应" in down.json()["message"]
    finally:
        stack.dialogue.rasa.start()
    assert stack.lines(web.key) == [("resident", "高龄津贴怎么领")]
    again = web.say("高龄津贴怎么领", "turn-1")
    assert any("来自" in r for r in again["replies"]), again
    lines = stack.lines(web.key)
    assert lines.count(("resident", "高龄津贴怎么领")) == 1
    assert [role for role, _ in lines] == ["resident"] + ["bot"] * len(again["replies"])


def test_with_the_api_down_only_an_emergency_goes_on_and_its_words_are_kept(
    stack: Stack,
) -> None:
    web = stack.web()
    resident = stack.known(web.key)
    prefix = f"{PREFIX}:api-down"  # its own keys: what waits for the API is this one's
    down = gateway_process(stack.dialogue, prefix, f"http://127.0.0.1:{free_port()}")
    down.start()
    try:
        device = Web(down.url, web.secret)
        refused = device.post("高龄津贴怎么领")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "api_unavailable"
        assert "没有发出去" in refused.json()["message"]
        urgent = device.say("救命 我摔倒了起不来")
        assert "别急着起来" in urgent["replies"][0], urgent
    finally:
        down.stop()
    assert any(o["kind"] == "emergency" for o in stack.orders(resident["id"]))
    assert stack.staff("GET", f"/conversations/{web.key}").status_code == 404
    # A gateway that reaches the API (same Redis keys) records what waited, once.
    back = gateway_process(stack.dialogue, prefix)
    back.start()
    try:
        lines = until(
            "the kept messages recorded",
            lambda: (
                stack.staff("GET", f"/conversations/{web.key}").status_code == 200
                and stack.lines(web.key)
            ),
            30,
        )
    finally:
        back.stop()
    assert lines[0] == ("resident", "救命 我摔倒了起不来")
    assert [role for role, _ in lines[1:]] == ["bot"] * len(urgent["replies"])
    assert ("resident", "高龄津贴怎么领") not in lines


def test_after_a_hand_back_the_event_tail_resumes_the_bot_once(stack: Stack) -> None:
    web = stack.web()
    resident = stack.known(web.key)
    web.say("你好")
    stack.hand_over(web.key, resident["id"])
    assert stack.staff("POST", f"/conversations/{web.key}/claim").status_code == 200
    back = stack.staff(
        "POST", f"/conversations/{web.key}/handback", json={"note": "已帮您登记了助餐"}
    )
    assert back.status_code == 200, back.text
    note = "（工作人员agent已处理：已帮您登记了助餐）"
    # Before the resident says anything: the gateway heard the event and resumed Rasa.
    events = until(
        "the note in Rasa's history",
        lambda: next((ev for ev in [stack.tracker_events(web.key)] if note in texts_of(ev)), None),
        20,
    )
    assert any(e["event"] == "resume" for e in events)
    answer = web.say("高龄津贴怎么领")
    assert any("来自" in r for r in answer["replies"]), answer
    assert texts_of(stack.tracker_events(web.key)).count(note) == 1


def test_a_channel_retry_records_once(stack: Stack) -> None:
    web = stack.web()
    stack.known(web.key)
    first = web.say("高龄津贴怎么领", "same-id")
    again = web.say("高龄津贴怎么领", "same-id")
    assert again == first
    lines = stack.lines(web.key)
    assert lines.count(("resident", "高龄津贴怎么领")) == 1
    assert len(lines) == 1 + len(first["replies"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": "   "}, "请写下要说的话。"),
        ({"text": "长" * 5000}, "这条消息太长了，请分几次发，每次最多2000个字。"),
        ({"text": "你好", "secret": "short"}, "这个页面的身份标识不对，请刷新页面再试。"),
        ({"text": "你好", "client_id": "has space"}, "消息编号不对，请刷新页面再试。"),
        ({"service": "taxi"}, "没有这项服务。"),
    ],
)
def test_bad_input_is_refused_clearly_and_nothing_is_kept(
    stack: Stack, body: dict[str, Any], message: str
) -> None:
    web = stack.web()
    sent = {"secret": web.secret, "client_id": "c1", **body}
    response = httpx.post(f"{stack.gateway}/chat/api/messages", json=sent, timeout=30)
    assert response.status_code == 422, response.text
    assert (response.json()["code"], response.json()["message"]) == ("invalid_request", message)
    assert stack.staff("GET", f"/conversations/{web.key}").status_code == 404


def test_the_generic_endpoint_refuses_web_keys_and_the_chat_cli_goes_through_it(
    stack: Stack,
) -> None:
    refused = httpx.post(
        f"{stack.gateway}/api/messages",
        json={"conversation": "web-0123", "text": "你好", "client_id": "c1"},
        timeout=30,
    )
    assert refused.status_code == 422
    sender = f"cli-{uuid.uuid4().hex[:12]}"
    done = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "channels.chat_cli",
            "--url",
            stack.gateway,
            "--sender",
            sender,
        ],
        input="你好\n/quit\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=120,
        check=True,
    )
    assert "助手：" in done.stdout, done.stdout + done.stderr
    record = stack.conversation(sender)
    assert (record["channel"], record["can_push"]) == ("api", False)
    assert record["messages"][0]["text"] == "你好"


def _font_sizes(page: Page) -> list[float]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('body *'))
            .filter((e) => e.offsetParent !== null && e.textContent.trim())
            .map((e) => parseFloat(getComputedStyle(e).fontSize))"""
    )


def test_the_web_chat_page_in_chromium(stack: Stack, chromium: Browser) -> None:  # noqa: F811
    secret = secrets.token_hex(32)
    key = conversation_key(secret)
    stack.known(key)
    context = chromium.new_context(base_url=stack.gateway, locale="zh-CN")
    context.set_default_timeout(60_000)
    context.add_init_script(f"localStorage.setItem('linli.chat.secret', '{secret}')")
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/chat/")
        status = page.get_by_role("status")
        until("the first state", lambda: status.inner_text() == "助手在线，有什么事请说。", 20)
        assert min(_font_sizes(page)) >= 18

        bots = page.locator(".messages li.bot")
        for label in ("政策咨询", "居家养老", "看病预约", "报修"):
            before = bots.count()
            page.get_by_role("button", name=label).click()
            until(f"an answer to {label}", lambda n=before: bots.count() > n, 60)
            assert label in page.locator(".messages li.resident").last.inner_text()
        assert ("resident", "报修") in stack.lines(key)

        page.get_by_role("button", name="找人工").click()
        until("waiting for staff", lambda: status.inner_text() == "正在为您联系工作人员…", 60)
        assert stack.staff("POST", f"/conversations/{key}/claim").status_code == 200
        sent = stack.staff(
            "POST", f"/conversations/{key}/replies", json={"text": "您好，我是社区的小李"}
        )
        assert sent.status_code == 201, sent.text
        staff_line = page.locator(".messages li.staff")
        staff_line.wait_for()
        assert "您好，我是社区的小李" in staff_line.inner_text()
        until("the reply acknowledged", lambda: stack.outbound(key) == [], 10)
        until("staff named", lambda: status.inner_text() == "工作人员agent正在为您服务", 20)
        assert min(_font_sizes(page)) >= 18

        # The keyboard alone: type, Enter sends; staff have it, so the bot keeps quiet.
        page.get_by_label("要说的话").fill("谢谢你")
        page.keyboard.press("Enter")
        until("sent", lambda: ("resident", "谢谢你") in stack.lines(key), 20)
        drawn = page.locator(".messages li").count()
        page.reload()
        until("history redrawn", lambda: page.locator(".messages li").count() == drawn, 20)
        assert page.locator(".messages li.staff").count() == 1  # shown once, not again
        assert errors == []
    finally:
        context.close()
