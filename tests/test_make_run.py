"""`make run` as a newcomer runs it: scripts/run (migrations, demo data, every Procfile process
under supervisord), on ports, a database, a run directory and Redis keys of its own. Then the
work-order API is killed (SIGKILL) while a resident is on the phone and another is booking a
doctor in the chat: supervisord restarts the API alone, nothing else stops, and what was asked
while it was down is done exactly once when it is back.

Everything is real: baresip calls the hotline over SIP/RTP (the hotline's recogniser is
scripted, HOTLINE_ASR=scripted, as scripts/run sets when there is no Chinese Vosk model), Rasa
serves the trained model, the SOS terminal simulator is pressed over its control port.

Then as staff would: the console in Debian's Chromium, the simulated terminal's button pressed,
the alarm taken on; and a resident in the web chat.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from playwright.sync_api import Browser, expect

from tests.browser import Console
from tests.conftest import RUN_ID
from tests.dialogue_stack import MODEL, Chat
from tests.factories import resident_body, unique_phone
from tests.servers import free_port
from tests.sip_clients import free_sip_port
from tests.supervised import Squatter, Supervised, make_run_env, until
from tests.test_hotline import Caller, loud_seconds

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = (
    "fhir",
    "api",
    "scheduler",
    "actions",
    "rasa",
    "gateway",
    "wechat",
    "outbox",
    "health",
    "sos",
    "hotline",
)
PASSWORD = "make-run-test-" + secrets.token_hex(4)
SUN_DEMING = "15947042776"  # the demo resident with the SOS terminal sos-0000
SCRIPT = ["你好", "厨房水管漏水了", "好的，再见"]  # what the caller "says", in order
OUTBOX_REPLY = "您的请求已经记下了"  # actions/common.py: the API was down
T = TypeVar("T")

pytestmark = pytest.mark.timeout(900)


@dataclass
class Run:
    supervised: Supervised
    ports: dict[str, int]
    tokens: dict[str, str]
    outbox: str  # Redis key of the action server's outbox
    rasa_prefix: str

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def api(self, token: str | None = None) -> httpx.Client:
        bearer = token or self.tokens["LINLI_TOKEN_ACTIONS"]
        return httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {bearer}"}, timeout=30
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def sos(self, method: str = "GET", path: str = "/state") -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports['sos']}{path}"
        response = httpx.request(method, url, timeout=30)
        return response.json() if response.status_code < 500 else {}

    def orders(self, **params: Any) -> list[dict[str, Any]]:
        with self.api() as api:
            response = api.get("/work-orders", params={"limit": 100, **params})
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.fixture
def make_run(redis_client: redis.Redis) -> Iterator[Run]:
    assert MODEL.exists(), "make test trains models/current.tar.gz first"
    run_dir = Path(tempfile.mkdtemp(prefix="linli-run-"))  # short: supervisor.sock lives here
    ports = {
        name: free_port() for name in ("api", "fhir", "actions", "rasa", "sos", "gateway", "wechat")
    }
    ports["sip"] = free_sip_port()
    script = run_dir / "hotline-script.txt"
    script.write_text("\n".join(SCRIPT) + "\n", encoding="utf-8")
    prefix, rasa_prefix = f"linli:test:{RUN_ID}:run", f"linlitest{RUN_ID}run"
    env = make_run_env(run_dir, ports, prefix, rasa_prefix)
    env.update(HOTLINE_ASR="scripted", HOTLINE_SCRIPT=str(script), LINLI_DEMO_PASSWORD=PASSWORD)
    tokens = {key: value for key, value in env.items() if key.startswith("LINLI_TOKEN_")}
    supervised = Supervised([str(ROOT / "scripts" / "run")], run_dir, env)
    supervised.start()
    run = Run(supervised, ports, tokens, f"{prefix}:outbox", rasa_prefix)
    try:
        yield run
    finally:
        status = supervised.stop()
        print(supervised.tail(20000))  # the terminal of `make run`, shown when the test fails
        for key in redis_client.scan_iter(f"{rasa_prefix}*"):
            redis_client.delete(key)
        shutil.rmtree(run_dir, ignore_errors=True)
    assert status == 0


async def eventually(what: str, check: Callable[[], T | None], seconds: float) -> T:
    """`until` for async tests: checks run in a thread, the event loop (phones) goes on."""
    return await asyncio.to_thread(until, what, check, seconds)


def up(run: Run) -> dict[str, int]:
    """The pids once everything answers: the banner, the SOS terminal, the hotline."""
    until("the 'Linli is up' banner", lambda: "Linli is up" in run.supervised.text(), 600)
    until("the SOS terminal registered", lambda: run.sos().get("ready"), 120)
    until("the hotline listening", lambda: "Linli hotline on udp" in run.supervised.text(), 120)
    return until("every process RUNNING", lambda: run.supervised.running(*PROGRAMS), 60)


def restarted(run: Run, old_pid: int) -> int | None:
    """The new pid of the API, once it answers again."""
    pid = run.supervised.pids()["api"]
    return pid if pid not in (0, old_pid) and run.healthy() else None


def kill_and_keep_down(run: Run) -> Squatter:
    """SIGKILL the API, and hold its port before the restarted API listens (imports take it a
    second): until released, connections are refused and supervisord's restarts fail."""
    for _ in range(3):
        squatter = Squatter(run.ports["api"])
        os.kill(run.supervised.pids()["api"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if squatter.take():
                return squatter
            time.sleep(0.002)
        squatter.release()  # the new API was quicker: kill that one
    raise AssertionError("could not hold the API's port")


def resident(run: Run, **identity: str) -> dict[str, Any]:
    body = resident_body(identities=[identity])
    if identity["kind"] == "phone":
        body["phone"] = identity["value"]
    with run.api() as api:
        response = api.post("/residents", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def tracker_knows(run: Run, resident_id: int) -> bool:
    """Some conversation in Rasa's tracker store has this resident (the call's session began
    while the API was up)."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        for key in client.scan_iter(f"{run.rasa_prefix}*"):
            raw = client.get(key) if client.type(key) == b"string" else None
            events = json.loads(raw).get("events", []) if raw else []
            if any(
                e.get("event") == "slot"
                and e.get("name") == "resident_id"
                and e.get("value") == resident_id
                for e in events
            ):
                return True
        return False
    finally:
        client.close()


def queued(run: Run) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        return [json.loads(raw) for raw in client.lrange(run.outbox, 0, -1)]
    finally:
        client.close()


def staff_token(run: Run) -> str:
    response = httpx.post(
        f"{run.api_url}/auth/token",
        json={"username": "zhang.supervisor", "password": PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def call_transcript(run: Run, resident_id: int) -> list[dict[str, Any]] | None:
    with run.api(staff_token(run)) as api:
        page = api.get("/calls", params={"resident_id": resident_id}).json()
        if not page["items"]:
            return None
        [record] = page["items"]
        return api.get(f"/calls/{record['id']}").json()["transcript"]


async def test_killing_the_api_restarts_it_alone_and_loses_nothing(
    make_run: Run, tmp_path: Path
) -> None:
    run = make_run
    first = pids = await asyncio.to_thread(up, run)

    # A crash: the API alone is started again, at once.
    killed_at = time.monotonic()
    os.kill(pids["api"], signal.SIGKILL)
    await eventually("the API back", lambda: restarted(run, pids["api"]), 60)
    restart_seconds = time.monotonic() - killed_at
    pids = run.supervised.pids()
    print(f"API answered again {restart_seconds:.1f} s after SIGKILL")  # in the test report

    # A doctor's booking in the chat, up to its confirmation; a caller on the hotline.
    chat_sender = f"wx-{secrets.token_hex(6)}"
    booker = resident(run, kind="wechat_openid", value=chat_sender)
    chat = Chat(f"http://127.0.0.1:{run.ports['rasa']}", chat_sender)
    offer = await asyncio.to_thread(chat.text, "帮我挂个下礼拜二的内科")
    assert "第1个" in offer, offer
    confirm = await asyncio.to_thread(chat.text, "第一个")
    assert "对吗" in confirm, confirm
    number = unique_phone()
    caller_resident = resident(run, kind="phone", value=number)
    async with Caller(tmp_path / "caller", number) as caller:
        await caller.dial(run.ports["sip"])
        await eventually("the greeting heard", lambda: loud_seconds(caller.heard()) > 0.5, 30)
        await caller.say()  # 你好: the call's conversation begins while the API is up
        await eventually("the caller known", lambda: tracker_knows(run, caller_resident["id"]), 60)

        squatter = await asyncio.to_thread(kill_and_keep_down, run)
        try:
            done = await asyncio.to_thread(chat.text, "对")
            assert OUTBOX_REPLY in done, done
            await caller.say()  # 厨房水管漏水了
            await eventually(
                "the caller's repair in the outbox",
                lambda: any(e["body"]["resident_id"] == caller_resident["id"] for e in queued(run)),
                60,
            )
            pressed = await asyncio.to_thread(run.sos, "POST", "/sos")
            assert pressed["state"]["ready"], pressed
            await eventually("the SOS queued", lambda: run.sos().get("queue_length") == 1, 30)
            assert not run.healthy() and len(queued(run)) == 2
        finally:
            squatter.release()

        # supervisord's next start (after its back-off, or the watchdog's) brings it back.
        await eventually("the API back", lambda: restarted(run, pids["api"]), 180)
        await eventually("the outbox replayed", lambda: not queued(run), 60)
        await eventually("the SOS delivered", lambda: run.sos().get("queue_length") == 0, 120)

        # The call went on all along: the caller says goodbye, the hotline hangs up.
        await caller.say()  # 好的，再见
        await caller.phone.wait_event("CALL_CLOSED", timeout=60)

    transcript = await eventually(
        "the call record", lambda: call_transcript(run, caller_resident["id"]), 60
    )
    bot = [line["text"] for line in transcript if line["speaker"] == "bot"]
    assert any(OUTBOX_REPLY in text for text in bot), bot
    [booking] = run.orders(resident_id=booker["id"])
    assert (booking["kind"], booking["details"]["department"]) == ("medical_appointment", "内科")
    [repair] = run.orders(resident_id=caller_resident["id"])
    assert (repair["kind"], repair["channel"]) == ("repair", "hotline")
    with run.api() as api:
        sun = api.get("/residents/lookup", params={"kind": "phone", "value": SUN_DEMING}).json()
    [emergency] = run.orders(resident_id=sun["id"], kind="emergency")
    assert emergency["channel"] == "terminal"

    after = run.supervised.pids()
    assert after["api"] not in (first["api"], pids["api"])
    assert {n: p for n, p in after.items() if n != "api"} == {
        n: p for n, p in first.items() if n != "api"
    }, "only the API was restarted"
    assert "exited: hotline" not in run.supervised.text()


def test_the_button_reaches_a_person_on_the_console_and_the_web_chat_answers(
    make_run: Run,
    chromium: Browser,
) -> None:
    run = make_run
    up(run)
    console = Console(chromium, run.api_url, "make-run")
    try:
        board = console.open("li.agent", "/console/", password=PASSWORD)
        expect(board.locator("html")).to_have_attribute("data-live", "connected")
        pressed = run.sos("POST", "/sos")
        assert pressed["state"]["ready"], pressed
        card = board.locator(".alarm--waiting")
        expect(card).to_contain_text("孙德明", timeout=30_000)
        expect(board.locator("#alarm-board")).to_have_attribute("data-alarm-sounding", "true")
        order_id = int((card.get_attribute("id") or "").removeprefix("alarm-"))
        card.get_by_role("button", name="我来处理").click()
        expect(board.locator(f"#alarm-{order_id}")).to_contain_text("李网格员（我） 负责")
        with run.api(staff_token(run)) as api:
            order = api.get(f"/work-orders/{order_id}").json()
            chain = api.get(f"/work-orders/{order_id}/escalation").json()
        assert (order["kind"], order["status"]) == ("emergency", "accepted")
        assert chain["running"] is False and chain["acknowledged_at"]

        chat = console.browser.new_context(
            base_url=f"http://127.0.0.1:{run.ports['gateway']}", locale="zh-CN"
        )
        console.contexts.append(chat)
        page = chat.new_page()
        page.goto("/chat/")
        page.get_by_role("button", name="政策咨询").click()
        expect(page.locator(".messages li.bot").first).to_be_visible(timeout=60_000)

        # "On WeChat": the stand-in's phone page, through WeChat's protocol in safe mode.
        standin = f"http://127.0.0.1:{run.ports['wechat']}"
        assert httpx.get(f"{standin}/standin/config", timeout=10).json()["mode"] == "safe"
        phone = console.browser.new_context(base_url=standin, locale="zh-CN")
        console.contexts.append(phone)
        wx = phone.new_page()
        wx.goto("/")
        wx.get_by_role("button", name="切换到键盘").click()  # it opens on the account's menu
        wx.get_by_label("消息").fill("高龄津贴怎么领")
        wx.get_by_role("button", name="发送").click()
        answers = wx.locator("#log .row:not(.me) .bubble")
        expect(answers.filter(has_text="高龄津贴")).to_contain_text("来自", timeout=60_000)
        assert console.errors == []
    finally:
        console.close(failed=False)
