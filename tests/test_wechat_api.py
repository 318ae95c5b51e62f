"""The WeChat API client and its shared access_token, against the WeChat stand-in over HTTP.

The stand-in (`python -m channels.wechat.standin`) runs as a real process on a free port and
speaks WeChat's API; its `/standin/...` routes count the tokens it issued and expire them.
Every test keeps its Redis keys under a prefix of its own and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from channels.wechat.api import (
    INVALID_OPENID,
    NOT_FOLLOWING,
    NOT_SUBSCRIBED,
    QUOTA_EXHAUSTED,
    TEXT_LIMIT_BYTES,
    WINDOW_CLOSED,
    WeChatApi,
    WeChatError,
    WeChatUnavailable,
    split_text,
)
from channels.wechat.menu import MENU, MENU_INTENTS, ensure_menu, for_key
from channels.wechat.tokens import AccessTokens, Fetch
from tests.servers import free_port, serve_app

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "wx6c696e6c69746573"
APP_SECRET = "linli-test-secret-" + secrets.token_hex(8)
WINDOW_SECONDS = 48 * 3600


class StandIn:
    """The running stand-in: its base URL and its control routes (/standin/...)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def _post(self, path: str, **body: Any) -> dict[str, Any]:
        response = self.http.post(path, json=body or None)
        response.raise_for_status()
        return dict(response.json())

    def tokens_issued(self) -> int:
        """Tokens handed out so far, of both kinds (/cgi-bin/token and stable_token)."""
        response = self.http.get("/standin/stats")
        response.raise_for_status()
        return sum(response.json()["tokens_issued"].values())

    def spoil_tokens(self, how: str) -> None:
        """expire: every token answers 42001 from now; revoke: 40001 (replaced, as after a leak)."""
        self._post(f"/standin/tokens/{how}")

    def advance(self, seconds: float) -> None:
        self._post("/standin/clock", advance_seconds=seconds)

    def force_elsewhere(self) -> str:
        """Another holder of the app secret forces a new stable token: ours answers 40001.
        (WeChat honours one force per 30 s: the clock moves past the last one first.)"""
        self.advance(31)
        body = {
            "grant_type": "client_credential",
            "appid": APP_ID,
            "secret": APP_SECRET,
            "force_refresh": True,
        }
        return str(self.http.post("/cgi-bin/stable_token", json=body).json()["access_token"])

    def follow(self, openid: str) -> None:
        """The resident follows the account: the 48 h window opens for 5 messages."""
        self._post(f"/standin/users/{openid}/follow")

    def unfollow(self, openid: str) -> None:
        self._post(f"/standin/users/{openid}/unfollow")

    def grant(self, openid: str, template_id: str) -> None:
        self._post(f"/standin/users/{openid}/grants", template_id=template_id, count=1)

    def voice(self, openid: str, wav: Path) -> str:
        """The resident sends a voice message; its media_id."""
        pushed = self._post(f"/standin/users/{openid}/messages", type="voice", wav_path=str(wav))
        return str(pushed["media_id"])

    def received(self, openid: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/standin/users/{openid}/inbox")
        response.raise_for_status()
        return list(response.json()["items"])


async def _success(request: Request) -> PlainTextResponse:
    return PlainTextResponse("success")


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    """The stand-in as a process, pushing to a callback that answers every push `success`."""
    port = free_port()
    env = {
        **os.environ,
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": APP_SECRET,
        "WECHAT_TOKEN": "linli" + secrets.token_hex(8),
        "WECHAT_AES_KEY": base64.b64encode(secrets.token_bytes(32)).decode().rstrip("="),
    }
    callback = Starlette(routes=[Route("/wechat", _success, methods=["GET", "POST"])])
    fd, log_name = tempfile.mkstemp(prefix="linli-wechat-standin-", suffix=".log")
    log_path = Path(log_name)
    with serve_app(callback) as callback_url:
        args = ["--port", str(port), "--callback", f"{callback_url}/wechat", "--retries", "0"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "channels.wechat.standin", *args],
            cwd=ROOT,
            env=env,
            stdout=fd,
            stderr=subprocess.STDOUT,
        )
        os.close(fd)
        stand_in = StandIn(f"http://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"stand-in exited: {log_path.read_text()[-2000:]}")
                try:
                    stand_in.tokens_issued()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            yield stand_in
        finally:
            stand_in.http.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log_path.unlink(missing_ok=True)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = f"linli:test:{uuid.uuid4().hex[:12]}:wechat"
    yield value
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        async for key in client.scan_iter(f"{value}:*"):
            await client.delete(key)
    finally:
        await client.close()


class Process:
    """What one gateway process has: its own Redis connections and its own API client."""

    def __init__(self, standin: StandIn, prefix: str) -> None:
        self.redis = aioredis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
        self.fetches: list[bool] = []  # the `force` of each fetch this process made

        def tokens(fetch: Fetch) -> AccessTokens:
            async def counted(force: bool) -> tuple[str, int]:
                self.fetches.append(force)
                return await fetch(force)

            return AccessTokens(self.redis, prefix, counted)

        self.api = WeChatApi(
            standin.base_url,
            APP_ID,
            APP_SECRET,
            self.redis,
            prefix,
            timeout=10,
            tokens_factory=tokens,
        )

    async def close(self) -> None:
        await self.api.aclose()
        await self.redis.close()


@pytest.fixture
async def process(standin: StandIn, prefix: str) -> AsyncIterator[Process]:
    one = Process(standin, prefix)
    yield one
    await one.close()


@pytest.fixture
async def other_process(standin: StandIn, prefix: str) -> AsyncIterator[Process]:
    one = Process(standin, prefix)
    yield one
    await one.close()


async def test_first_use_fetches_one_token(standin: StandIn, process: Process) -> None:
    standin.follow("o-first-use")
    before = standin.tokens_issued()

    assert await process.api.send_text("o-first-use", "您好，您的报修已经登记。") == 1
    assert await process.api.send_text("o-first-use", "师傅明天上午上门。") == 1

    assert process.fetches == [False]
    assert standin.tokens_issued() - before <= 1  # the stable token may still be the last one
    key = process.api.tokens.key
    assert await process.redis.hget(key, "token") == await process.api.tokens.get()
    assert 0 < await process.redis.ttl(key) <= 7200 - 300  # due for refresh 5 min early
    texts = [item["text"] for item in standin.received("o-first-use")]
    assert texts[-2:] == ["您好，您的报修已经登记。", "师傅明天上午上门。"]


async def test_twenty_senders_after_expiry_cause_one_refresh(
    standin: StandIn, process: Process, other_process: Process
) -> None:
    openids = [f"o-crowd-{i}" for i in range(10)]
    for openid in openids:
        standin.follow(openid)
    await process.api.send_text(openids[0], "第一条")
    stale = await process.api.tokens.get()
    standin.spoil_tokens("expire")
    before = standin.tokens_issued()

    # Two processes, ten senders each, all starting with the token the stand-in just expired.
    sends = [
        sender.api.send_text(openid, f"通知：{openid}")
        for openid in openids
        for sender in (process, other_process)
    ]
    assert await asyncio.gather(*sends) == [1] * 20

    assert standin.tokens_issued() - before == 1
    assert process.fetches + other_process.fetches == [False, True]
    fresh = await process.api.tokens.get()
    assert fresh != stale
    assert await other_process.api.tokens.get() == fresh


async def test_token_rotated_elsewhere_is_recovered_with_one_refresh(
    standin: StandIn, process: Process
) -> None:
    standin.follow("o-rotated")
    await process.api.send_text("o-rotated", "第一条")
    before = standin.tokens_issued()
    theirs = standin.force_elsewhere()

    assert await process.api.send_text("o-rotated", "第二条") == 1

    # Our one forced refresh came within WeChat's 30 s of theirs: both hold the same token.
    assert process.fetches == [False, True]
    assert standin.tokens_issued() - before == 1
    assert await process.api.tokens.get() == theirs


async def test_a_sender_with_an_older_token_rereads_the_new_one(
    standin: StandIn, process: Process, other_process: Process
) -> None:
    old = await process.api.tokens.get()
    standin.spoil_tokens("revoke")
    new = await process.api.tokens.invalid(old)
    assert new != old
    before = standin.tokens_issued()

    assert await other_process.api.tokens.invalid(old) == new

    assert standin.tokens_issued() == before
    assert other_process.fetches == []


async def test_two_processes_share_one_token(process: Process, other_process: Process) -> None:
    first, second = await asyncio.gather(process.api.tokens.get(), other_process.api.tokens.get())
    assert first == second
    assert len(process.fetches + other_process.fetches) == 1


@pytest.mark.parametrize(
    "errcode", [WINDOW_CLOSED, QUOTA_EXHAUSTED, NOT_SUBSCRIBED, NOT_FOLLOWING, INVALID_OPENID]
)
async def test_refusals_surface_with_their_code_and_refresh_nothing(
    standin: StandIn, process: Process, errcode: int
) -> None:
    openid = f"o-refused-{errcode}"
    standin.follow(openid)
    if errcode == WINDOW_CLOSED:
        standin.advance(WINDOW_SECONDS + 1)  # the resident last wrote two days ago
    elif errcode == QUOTA_EXHAUSTED:
        for n in range(5):  # WeChat's 5 messages per resident action
            await process.api.send_text(openid, f"第{n + 1}条")
    elif errcode == NOT_FOLLOWING:
        standin.unfollow(openid)
    token = await process.api.tokens.get()
    before = standin.tokens_issued()

    with pytest.raises(WeChatError) as caught:
        if errcode == NOT_SUBSCRIBED:
            await process.api.send_subscribe(openid, "tmpl-order", {"thing1": "报修已办结"})
        elif errcode == INVALID_OPENID:
            await process.api.send_text("o-nobody-" + uuid.uuid4().hex, "您好")
        else:
            await process.api.send_text(openid, "您好")

    assert caught.value.errcode == errcode
    assert caught.value.sent == 0
    assert standin.tokens_issued() == before
    assert process.fetches == [False]
    assert await process.api.tokens.get() == token


async def test_template_and_granted_subscription_messages(
    standin: StandIn, process: Process
) -> None:
    standin.follow("o-notified")
    msgid = await process.api.send_template(
        "o-notified", "tmpl-order", {"first": "您的工单已办结", "keyword1": {"value": "报修"}}
    )
    assert msgid > 0
    standin.grant("o-notified", "tmpl-done")
    await process.api.send_subscribe(
        "o-notified", "tmpl-done", {"thing1": "报修已办结"}, page="orders"
    )

    template, subscribe = standin.received("o-notified")[-2:]
    assert (template["via"], template["data"]["msgid"]) == ("template", msgid)
    assert template["data"]["values"] == {"first": "您的工单已办结", "keyword1": "报修"}
    assert (subscribe["via"], subscribe["data"]["page"]) == ("subscribe", "orders")
    with pytest.raises(WeChatError) as caught:  # the grant was for one message
        await process.api.send_subscribe("o-notified", "tmpl-done", {"thing1": "报修已办结"})
    assert caught.value.errcode == NOT_SUBSCRIBED


def _tone(path: Path) -> Path:
    """A second of 440 Hz, 16-bit mono WAV at 16 kHz."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 16000))) for n in range(16000)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(frames)
    return path


async def test_voice_media_downloads_as_amr(
    standin: StandIn, process: Process, tmp_path: Path
) -> None:
    standin.follow("o-voice")
    media_id = standin.voice("o-voice", _tone(tmp_path / "tone.wav"))

    content, content_type = await process.api.download_media(media_id)

    assert content.startswith(b"#!AMR")
    assert len(content) > 1000  # 50 frames of 32 bytes
    assert content_type == "audio/amr"


async def test_media_error_is_raised_not_returned(process: Process) -> None:
    with pytest.raises(WeChatError) as caught:
        await process.api.download_media("no-such-media")
    assert caught.value.errcode == 40007


async def test_long_text_goes_as_several_messages(standin: StandIn, process: Process) -> None:
    sentence = "您好，这是社区服务中心的通知，请按时到社区卫生服务站体检。"
    text = "\n".join(sentence * 3 for _ in range(12))
    parts = split_text(text)
    assert len(parts) == 2
    assert all(len(part.encode()) <= TEXT_LIMIT_BYTES for part in parts)
    assert all(part.endswith("。") for part in parts)  # cut after whole lines
    assert "\n".join(parts) == text

    standin.follow("o-long")
    assert await process.api.send_text("o-long", text) == 2
    assert [item["text"] for item in standin.received("o-long")[-2:]] == parts


async def test_a_part_refused_says_how_many_went(standin: StandIn, process: Process) -> None:
    standin.follow("o-long-quota")
    for n in range(4):
        await process.api.send_text("o-long-quota", f"第{n + 1}条")
    text = "。".join(["请带好医保卡和身份证"] * 150)  # three parts; one message left
    with pytest.raises(WeChatError) as caught:
        await process.api.send_text("o-long-quota", text)
    assert (caught.value.errcode, caught.value.sent) == (QUOTA_EXHAUSTED, 1)


def test_split_cuts_a_text_without_boundaries_between_characters() -> None:
    text = "长" * 1000  # 3,000 bytes, no punctuation
    parts = split_text(text)
    assert [len(p.encode()) for p in parts] == [2046, 954]
    assert "".join(parts) == text
    assert split_text("短") == ["短"]


async def test_wechat_down_is_unavailable(prefix: str) -> None:
    redis = aioredis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    api = WeChatApi(f"http://127.0.0.1:{free_port()}", APP_ID, APP_SECRET, redis, prefix)
    try:
        with pytest.raises(WeChatUnavailable):
            await api.send_text("o-resident", "您好")
    finally:
        await api.aclose()
        await redis.close()


async def test_a_wrong_secret_is_wechats_error(standin: StandIn, prefix: str) -> None:
    redis = aioredis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    api = WeChatApi(standin.base_url, APP_ID, "not-the-secret", redis, prefix)
    try:
        with pytest.raises(WeChatError) as caught:
            await api.send_text("o-resident", "您好")
        assert caught.value.errcode == 40125
        assert await redis.exists(api.tokens.key) == 0
    finally:
        await api.aclose()
        await redis.close()


async def test_neither_token_nor_secret_is_logged(
    standin: StandIn, process: Process, caplog: pytest.LogCaptureFixture
) -> None:
    standin.follow("o-logged")
    httpx_log = logging.getLogger("httpx")
    with caplog.at_level(logging.DEBUG):
        httpx_log.setLevel(logging.DEBUG)
        try:
            await process.api.send_text("o-logged", "您好")
            first = await process.api.tokens.get()
            standin.spoil_tokens("revoke")
            await process.api.send_text("o-logged", "您好")
        finally:
            httpx_log.setLevel(logging.WARNING)
    second = await process.api.tokens.get()
    assert first != second
    assert "access_token=***" in caplog.text  # httpx did log the URLs, masked
    for secret in (first, second, APP_SECRET):
        assert secret not in caplog.text


async def test_menu_is_created_once(process: Process) -> None:
    creates: list[dict[str, Any]] = []
    create = process.api.create_menu

    async def counted(menu: dict[str, Any]) -> None:
        creates.append(menu)
        await create(menu)

    process.api.create_menu = counted  # type: ignore[method-assign]
    await process.api.create_menu({"button": [{"type": "click", "name": "旧菜单", "key": "OLD"}]})
    creates.clear()

    assert await ensure_menu(process.api) is True
    assert await ensure_menu(process.api) is False

    assert creates == [MENU]
    assert await process.api.get_menu() == MENU


def test_menu_keys_map_to_intents_and_labels() -> None:
    keys = [sub["key"] for button in MENU["button"] for sub in button.get("sub_button", [button])]
    assert sorted(keys) == sorted(MENU_INTENTS)
    assert len(MENU["button"]) <= 3
    assert all(len(b.get("sub_button", [])) <= 5 for b in MENU["button"])
    assert for_key("MEDICAL") == ("看病预约", "/book_medical")
    assert for_key("HUMAN") == ("找人工", "/request_human")
    assert for_key("NO_SUCH_KEY") is None
