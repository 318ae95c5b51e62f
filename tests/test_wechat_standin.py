"""The WeChat stand-in (channels/wechat/standin) as a real process, against a receiving endpoint
that checks each push exactly as the channel will (wechatpy: signature, msg_signature, AES with
the appid) and answers as each test tells it: a reply, an encrypted reply, too late, 500, a bad
signature. The cut-off is 0.5 s here (WeChat's 5 s) to keep the file fast."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from wechatpy import WeChatClient, parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

from tests.servers import free_port, serve_app
from tests.support import ROOT, SHARED

CUTOFF = 0.5
TOKEN = "standinTestToken" + secrets.token_hex(4)
AES_KEY = base64.b64encode(secrets.token_bytes(32)).decode()[:-1]
APP_ID = "wx" + secrets.token_hex(8)
APP_SECRET = secrets.token_hex(16)
ORIGINAL_ID = "gh_" + secrets.token_hex(6)
SAMPLE = SHARED / "audio" / "zh" / "BAC009S0764W0121.wav"
NOTICE = "该公众号暂时无法提供服务，请稍后再试"


# -- the receiving end: what the channel will verify ----------------------------------------


@dataclass
class Received:
    query: dict[str, str]
    body: str
    fields: dict[str, str]  # the decrypted message as wechatpy parses it (its raw dict)


@dataclass
class Receiver:
    """The channel's endpoint: verifies each push, records it, answers per `plan` (one
    behaviour per request, then `default`)."""

    mode: str = "safe"
    plan: list[str] = field(default_factory=list)
    default: str = "reply"
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, *plan: str, default: str = "reply") -> None:
        with self.lock:
            self.plan, self.default, self.received = list(plan), default, []

    def _next(self) -> str:
        with self.lock:
            return self.plan.pop(0) if self.plan else self.default

    def app(self) -> FastAPI:
        app = FastAPI()
        crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)

        @app.post("/wechat", response_model=None)
        async def wechat(request: Request) -> Response:
            q = dict(request.query_params)
            body = (await request.body()).decode()
            check_signature(TOKEN, q["signature"], q["timestamp"], q["nonce"])  # raises if bad
            if self.mode == "plain":
                assert "encrypt_type" not in q and "<Encrypt>" not in body
                xml = body
            else:
                assert q["encrypt_type"] == "aes"
                xml = crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
            message = parse_message(xml)
            with self.lock:
                self.received.append(Received(q, body, dict(message._data)))
            behaviour = self._next()
            if behaviour.startswith("sleep"):
                await asyncio.sleep(CUTOFF + 0.3)
                behaviour = behaviour.partition(":")[2] or "reply"
            text = f"收到：{message._data.get('Content') or message.type}"
            reply = TextReply(content=text, message=message).render()
            nonce, stamp = "1234567890", str(int(time.time()))
            answers = {
                "success": "success",
                "empty": "",
                "plain": reply,
                "garbage": "<xml><ToUserName>",
                "wrong_user": crypto.encrypt_message(
                    TextReply(content="x", source=ORIGINAL_ID, target="oSomeone").render(),
                    nonce,
                    stamp,
                ),
                "bad_signature": crypto.encrypt_message(reply, nonce, stamp).replace(
                    "<MsgSignature><![CDATA[", "<MsgSignature><![CDATA[0"
                ),
                "wrong_appid": WeChatCrypto(TOKEN, AES_KEY, "wxffffffffffffffff").encrypt_message(
                    reply, nonce, stamp
                ),
                "encrypted": crypto.encrypt_message(reply, nonce, stamp),
            }
            if behaviour == "500":
                return Response("oops", status_code=500)
            if behaviour == "reply":
                behaviour = "plain" if self.mode == "plain" else "encrypted"
            return Response(answers[behaviour], media_type="application/xml")

        return app


# -- the stand-in as a process ---------------------------------------------------------------


@dataclass
class Standin:
    base: str
    receiver: Receiver
    http: httpx.Client

    def send(self, openid: str, **message: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.base}/standin/users/{openid}/messages", json=message)
        assert response.status_code == 200, response.text
        return response.json()

    def inbox(self, openid: str, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        url = f"{self.base}/standin/users/{openid}/inbox?after={after}&wait={wait}"
        return self.http.get(url, timeout=wait + 10).json()["items"]

    def token(self) -> str:
        query = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}
        return self.http.get(f"{self.base}/cgi-bin/token", params=query).json()["access_token"]

    def api(self, path: str, token: str | None, body: Any = None) -> dict[str, Any]:
        url = f"{self.base}/cgi-bin/{path}" + (f"?access_token={token}" if token else "")
        if body is None:
            return self.http.get(url).json()
        return self.http.post(url, json=body).json()

    def advance(self, seconds: float) -> None:
        self.http.post(f"{self.base}/standin/clock", json={"advance_seconds": seconds})


@pytest.fixture(scope="module", params=["safe", "compatible", "plain"])
def any_mode(request: pytest.FixtureRequest) -> Iterator[Standin]:
    with _standin(request.param) as standin:
        yield standin


@pytest.fixture(scope="module")
def safe() -> Iterator[Standin]:
    with _standin("safe") as standin:
        yield standin


@contextmanager
def _standin(mode: str) -> Iterator[Standin]:
    """A stand-in process in `mode`, pushing to a fresh receiver of its own."""
    receiver = Receiver(mode=mode)
    with serve_app(receiver.app()) as receiver_url, httpx.Client(timeout=30) as http:
        port = free_port()
        env = {
            **os.environ,
            "WECHAT_TOKEN": TOKEN,
            "WECHAT_AES_KEY": AES_KEY,
            "WECHAT_APP_ID": APP_ID,
            "WECHAT_APP_SECRET": APP_SECRET,
            "WECHAT_MODE": mode,
            "WECHAT_STANDIN_SAMPLES": str(SAMPLE.parent),
        }
        fd, name = tempfile.mkstemp(prefix="wechat-standin-", suffix=".log")
        log = Path(name)
        args = ["--port", str(port), "--callback", receiver_url + "/wechat"]
        args += ["--cutoff", str(CUTOFF), "--original-id", ORIGINAL_ID]
        proc = subprocess.Popen(
            [sys.executable, "-m", "channels.wechat.standin", *args],
            cwd=ROOT,
            env=env,
            stdout=fd,
            stderr=subprocess.STDOUT,
        )
        os.close(fd)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    http.get(f"{base}/standin/stats").raise_for_status()
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
            yield Standin(base, receiver, http)
        finally:
            proc.terminate()
            proc.wait(10)
            text = log.read_text()
            log.unlink()
        assert APP_SECRET not in text and AES_KEY not in text, "a secret reached the log"


def openid() -> str:
    return "o" + secrets.token_urlsafe(20)[:27]


# -- pushes ----------------------------------------------------------------------------------


def test_a_text_is_pushed_verifiably_and_the_reply_reaches_the_user(any_mode: Standin) -> None:
    user = openid()
    any_mode.receiver.reset()
    result = any_mode.send(user, type="text", content="我家水管漏水了")
    [got] = any_mode.receiver.received
    assert got.query["openid"] == user
    assert got.fields["FromUserName"] == user and got.fields["ToUserName"] == ORIGINAL_ID
    assert got.fields["Content"] == "我家水管漏水了"
    assert int(got.fields["MsgId"]) == result["msg_id"]
    assert int(got.fields["CreateTime"]) == result["create_time"]
    if any_mode.receiver.mode == "safe":  # only the envelope travels
        assert "我家" not in got.body and "<Encrypt>" in got.body
    if any_mode.receiver.mode == "compatible":  # both
        assert "我家水管漏水了" in got.body and "<Encrypt>" in got.body
    assert [a["outcome"] for a in result["attempts"]] == ["valid"]
    assert result["error_notice"] is None
    assert result["passive"]["text"] == "收到：我家水管漏水了"
    [item] = any_mode.inbox(user)
    assert (item["via"], item["text"]) == ("passive", "收到：我家水管漏水了")


def test_success_or_empty_shows_nothing(any_mode: Standin) -> None:
    user = openid()
    any_mode.receiver.reset("success", "empty")
    assert any_mode.send(user, type="text", content="一")["passive"] is None
    assert any_mode.send(user, type="text", content="二")["passive"] is None
    assert any_mode.inbox(user) == []


def test_compatible_mode_takes_a_plain_reply_too() -> None:
    with _standin("compatible") as standin:
        standin.receiver.reset("plain")
        assert (
            standin.send(openid(), type="text", content="你好")["passive"]["text"] == "收到：你好"
        )


def test_retries_after_the_cutoff_reuse_msgid_and_stop_at_the_first_valid_answer(
    safe: Standin,
) -> None:
    user = openid()
    safe.receiver.reset("sleep", "sleep", default="reply")
    started = time.monotonic()
    result = safe.send(user, type="text", content="在吗")
    took = time.monotonic() - started
    outcomes = [a["outcome"] for a in result["attempts"]]
    assert outcomes == ["timeout", "timeout", "valid"]
    assert all(CUTOFF <= a["seconds"] < CUTOFF + 0.25 for a in result["attempts"][:2])
    assert 2 * CUTOFF <= took < 3 * CUTOFF + 1
    received = safe.receiver.received
    assert len(received) == 3
    assert {r.fields["MsgId"] for r in received} == {str(result["msg_id"])}
    assert {r.fields["CreateTime"] for r in received} == {str(result["create_time"])}
    assert result["error_notice"] is None
    assert [i["via"] for i in safe.inbox(user)] == ["passive"]


def test_no_answer_in_time_shows_the_error_notice_after_three_retries(safe: Standin) -> None:
    user = openid()
    safe.receiver.reset(default="sleep")
    result = safe.send(user, type="text", content="在吗")
    assert [a["outcome"] for a in result["attempts"]] == ["timeout"] * 4
    assert result["error_notice"]["text"] == NOTICE
    assert [(i["via"], i["text"]) for i in safe.inbox(user)] == [("error_notice", NOTICE)]


def test_a_server_error_is_retried(safe: Standin) -> None:
    safe.receiver.reset("500", default="reply")
    result = safe.send(openid(), type="text", content="你好")
    assert [a["outcome"] for a in result["attempts"]] == ["http 500", "valid"]
    assert result["error_notice"] is None


@pytest.mark.parametrize(
    "answer", ["bad_signature", "wrong_appid", "garbage", "wrong_user", "plain"]
)
def test_an_invalid_answer_shows_the_error_notice_at_once(safe: Standin, answer: str) -> None:
    """In safe mode a plain reply is as wrong as a forged one."""
    user = openid()
    safe.receiver.reset(answer, default="reply")
    result = safe.send(user, type="text", content="你好")
    [attempt] = result["attempts"]
    assert attempt["outcome"].startswith("invalid"), attempt
    assert result["passive"] is None and result["error_notice"]["text"] == NOTICE
    assert [i["via"] for i in safe.inbox(user)] == ["error_notice"]


def test_the_same_message_delivered_many_times(safe: Standin) -> None:
    for concurrent in (True, False):
        safe.receiver.reset(default="success")
        result = safe.send(openid(), type="text", content="重复", repeat=3, concurrent=concurrent)
        assert len(result["attempts"]) == 3 and len(safe.receiver.received) == 3
        assert {r.fields["MsgId"] for r in safe.receiver.received} == {str(result["msg_id"])}


def test_events_have_no_msgid_and_follow_state_follows_them(safe: Standin) -> None:
    user = openid()
    safe.receiver.reset(default="success")
    safe.http.post(f"{safe.base}/standin/users/{user}/follow").raise_for_status()
    safe.send(user, type="event", event="CLICK", key="REPAIR")
    safe.send(user, type="event", event="VIEW", key="http://example.org/")
    events = [(r.fields["Event"], r.fields.get("EventKey")) for r in safe.receiver.received]
    assert events == [("subscribe", None), ("CLICK", "REPAIR"), ("VIEW", "http://example.org/")]
    assert all("MsgId" not in r.fields for r in safe.receiver.received)
    safe.http.post(f"{safe.base}/standin/users/{user}/unfollow").raise_for_status()
    assert safe.receiver.received[-1].fields["Event"] == "unsubscribe"
    refused = safe.http.post(
        f"{safe.base}/standin/users/{user}/messages", json={"type": "text", "content": "hi"}
    )
    assert refused.status_code == 409
    body = {"touser": user, "msgtype": "text", "text": {"content": "x"}}
    assert safe.api("message/custom/send", safe.token(), body)["errcode"] == 43004


def test_location_and_link_fields(safe: Standin) -> None:
    safe.receiver.reset(default="success")
    user = openid()
    place = {
        "location_x": 31.2304,
        "location_y": 121.4737,
        "scale": 16,
        "label": "上海市黄浦区人民大道",
    }
    safe.send(user, type="location", **place)
    safe.send(user, type="link", title="通知", description="社区通知", url="http://example.org/n")
    location, link = (r.fields for r in safe.receiver.received)
    assert (location["Location_X"], location["Location_Y"]) == ("31.2304", "121.4737")
    assert (location["Scale"], location["Label"]) == ("16", "上海市黄浦区人民大道")
    assert (link["Title"], link["Description"], link["Url"]) == (
        "通知",
        "社区通知",
        "http://example.org/n",
    )


# -- media -----------------------------------------------------------------------------------


def seconds_of(wav: Path) -> float:
    return float(subprocess.check_output(["soxi", "-D", str(wav)]))


def decoded_seconds(audio: bytes, suffix: str) -> float:
    """How long `audio` lasts once ffmpeg has decoded it (which it must do without a word)."""
    with tempfile.TemporaryDirectory() as folder:
        coded, wav = Path(folder) / f"v.{suffix}", Path(folder) / "v.wav"
        coded.write_bytes(audio)
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(coded), "-ar", "16000", "-ac", "1", str(wav)],
            capture_output=True,
            text=True,
        )
        assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
        return seconds_of(wav)


def test_voice_is_real_amr_that_ffmpeg_decodes_to_the_right_length(safe: Standin) -> None:
    safe.receiver.reset(default="success")
    result = safe.send(openid(), type="voice", wav_path=str(SAMPLE), recognition="甚至出现交易")
    [got] = safe.receiver.received
    assert (got.fields["Format"], got.fields["Recognition"]) == ("amr", "甚至出现交易")
    assert int(got.fields["MsgId"]) == result["msg_id"]
    response = safe.http.get(
        f"{safe.base}/cgi-bin/media/get",
        params={"access_token": safe.token(), "media_id": got.fields["MediaId"]},
    )
    assert response.headers["content-type"] == "audio/amr"
    assert response.headers["content-disposition"].startswith('attachment; filename="')
    assert response.content.startswith(b"#!AMR\n")
    assert abs(decoded_seconds(response.content, "amr") - seconds_of(SAMPLE)) < 0.03


def test_speex_voice_is_ogg_speex_that_ffmpeg_decodes_to_the_right_length(safe: Standin) -> None:
    safe.receiver.reset(default="success")
    safe.send(openid(), type="voice", wav_path=str(SAMPLE), format="speex")
    [got] = safe.receiver.received
    assert got.fields["Format"] == "speex" and "Recognition" not in got.fields
    response = safe.http.get(
        f"{safe.base}/cgi-bin/media/get",
        params={"access_token": safe.token(), "media_id": got.fields["MediaId"]},
    )
    assert response.headers["content-type"] == "audio/ogg"
    assert response.content.startswith(b"OggS") and b"Speex   " in response.content[:100]
    assert abs(decoded_seconds(response.content, "spx") - seconds_of(SAMPLE)) < 0.05


def test_a_voice_from_the_samples_by_name(safe: Standin) -> None:
    samples = safe.http.get(f"{safe.base}/standin/samples").json()["samples"]
    assert {"file": SAMPLE.name, "transcript": "甚至出现交易几乎停滞的情况"} in samples
    safe.receiver.reset(default="success")
    safe.send(openid(), type="voice", sample=SAMPLE.name)
    assert "Recognition" not in safe.receiver.received[0].fields


def test_image_has_a_picurl_and_media(safe: Standin) -> None:
    safe.receiver.reset(default="success")
    safe.send(openid(), type="image")
    [got] = safe.receiver.received
    picture = safe.http.get(got.fields["PicUrl"])
    assert picture.headers["content-type"] == "image/jpeg"
    assert picture.content.startswith(b"\xff\xd8")
    media = safe.http.get(
        f"{safe.base}/cgi-bin/media/get",
        params={"access_token": safe.token(), "media_id": got.fields["MediaId"]},
    )
    assert media.content == picture.content
    assert safe.api("media/get?" + urlencode({"media_id": "nope"}), None) == {
        "errcode": 41001,
        "errmsg": "access_token missing",
    }
    unknown = safe.http.get(
        f"{safe.base}/cgi-bin/media/get", params={"access_token": safe.token(), "media_id": "x"}
    ).json()
    assert unknown["errcode"] == 40007


# -- access tokens ---------------------------------------------------------------------------


def test_token_credentials_and_rotation_with_five_minutes_grace() -> None:
    with _standin("safe") as standin:  # its own clock
        get = standin.http.get
        url = f"{standin.base}/cgi-bin/token"
        base = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}
        assert get(url, params={**base, "appid": "wxnope"}).json()["errcode"] == 40013
        assert get(url, params={**base, "secret": "nope"}).json()["errcode"] == 40125
        first = get(url, params=base).json()
        assert first["expires_in"] == 7200
        second = standin.token()
        assert second != first["access_token"]
        assert standin.api("menu/delete", first["access_token"])["errcode"] == 0  # grace
        standin.advance(301)
        old = standin.api("menu/delete", first["access_token"])
        assert old == {
            "errcode": 40001,
            "errmsg": "invalid credential, access_token is invalid or not latest",
        }
        assert standin.api("menu/delete", second)["errcode"] == 0
        assert standin.api("menu/delete", None)["errcode"] == 41001
        standin.advance(7200)
        assert standin.api("menu/delete", second)["errcode"] == 42001
        stats = standin.http.get(f"{standin.base}/standin/stats").json()
        assert stats["tokens_issued"] == {"token": 2, "stable_token": 0}
        assert stats["invalid_token_answers"] == 1


def test_stable_token_semantics() -> None:
    with _standin("safe") as standin:
        url = f"{standin.base}/cgi-bin/stable_token"
        body = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}

        def stable(**extra: Any) -> str:
            return standin.http.post(url, json={**body, **extra}).json()["access_token"]

        one = stable()
        assert stable() == one == stable(force_refresh=False)
        normal = standin.token()  # the two kinds are isolated
        assert stable() == one
        forced = stable(force_refresh=True)
        assert forced != one
        assert standin.api("menu/delete", one)["errcode"] == 40001  # at once
        assert stable(force_refresh=True) == forced  # within 30 s: no effect
        standin.advance(7200 - 299)  # inside the last five minutes: a new one, the old lives on
        renewed = stable()
        assert renewed != forced
        assert standin.api("menu/delete", forced)["errcode"] == 0
        assert standin.api("menu/delete", normal)["errcode"] == 0
        standin.advance(300)
        assert standin.api("menu/delete", forced)["errcode"] == 42001
        assert standin.api("menu/delete", renewed)["errcode"] == 0
        bad = standin.http.post(url, json={**body, "secret": "x"}).json()
        assert bad["errcode"] == 40125
        stats = standin.http.get(f"{standin.base}/standin/stats").json()
        assert stats["tokens_issued"] == {"token": 1, "stable_token": 3}


def test_control_can_expire_and_revoke_tokens() -> None:
    with _standin("plain") as standin:
        token = standin.token()
        assert standin.api("menu/get", token)["errcode"] == 46003  # no menu yet
        standin.http.post(f"{standin.base}/standin/tokens/expire").raise_for_status()
        assert standin.api("menu/get", token)["errcode"] == 42001
        token = standin.token()
        standin.http.post(f"{standin.base}/standin/tokens/revoke").raise_for_status()
        assert standin.api("menu/get", token)["errcode"] == 40001


# -- sending to users ------------------------------------------------------------------------


def test_customer_service_window_and_count(safe: Standin) -> None:
    user = openid()
    safe.receiver.reset(default="success")
    token = safe.token()

    def custom(text: str, to: str = user) -> dict[str, Any]:
        body = {"touser": to, "msgtype": "text", "text": {"content": text}}
        return safe.api("message/custom/send", token, body)

    assert custom("x", openid())["errcode"] == 40003
    safe.send(user, type="text", content="有人吗")
    assert [custom(f"第{n}条")["errcode"] for n in range(1, 7)] == [0, 0, 0, 0, 0, 45047]
    assert custom("x")["errmsg"] == "out of response count limit"
    safe.send(user, type="event", event="CLICK", key="HELP")  # a click opens it again
    assert custom("第6条")["errcode"] == 0
    texts = [(i["via"], i["text"]) for i in safe.inbox(user)]
    assert texts == [("custom", f"第{n}条") for n in range(1, 7)]
    safe.advance(48 * 3600 + 1)
    token = safe.token()
    assert custom("太晚了") == {
        "errcode": 45015,
        "errmsg": "response out of time limit or subscription is canceled",
    }
    safe.send(user, type="text", content="我又来了")
    assert custom("欢迎回来")["errcode"] == 0


def test_the_inbox_long_polls(safe: Standin) -> None:
    user = openid()
    safe.receiver.reset(default="success")
    safe.send(user, type="text", content="你好")
    token = safe.token()
    timer = threading.Timer(
        0.3,
        lambda: safe.api(
            "message/custom/send",
            token,
            {"touser": user, "msgtype": "text", "text": {"content": "稍等"}},
        ),
    )
    started = time.monotonic()
    timer.start()
    items = safe.inbox(user, after=0, wait=10)
    assert 0.25 < time.monotonic() - started < 5
    assert [i["text"] for i in items] == ["稍等"] and items[0]["seq"] == 1
    assert safe.inbox(user, after=1, wait=0.2) == []


def test_template_messages_need_a_follower(safe: Standin) -> None:
    user = openid()
    safe.receiver.reset(default="success")
    token = safe.token()
    body = {
        "touser": user,
        "template_id": "TPL_ORDER_DONE",
        "url": "http://example.org/o/1",
        "data": {"first": {"value": "您的工单已办结"}, "keyword1": {"value": "报修"}},
    }
    assert safe.api("message/template/send", token, body)["errcode"] == 40003
    safe.http.post(f"{safe.base}/standin/users/{user}/follow").raise_for_status()
    sent = safe.api("message/template/send", token, body)
    assert sent["errcode"] == 0 and isinstance(sent["msgid"], int)
    [item] = safe.inbox(user)
    assert (item["via"], item["template_id"]) == ("template", "TPL_ORDER_DONE")
    assert item["text"] == "first: 您的工单已办结\nkeyword1: 报修"
    safe.http.post(f"{safe.base}/standin/users/{user}/unfollow").raise_for_status()
    assert safe.api("message/template/send", token, body)["errcode"] == 43004


def test_subscription_messages_need_a_grant_each(safe: Standin) -> None:
    user = openid()
    safe.receiver.reset(default="success")
    safe.send(user, type="text", content="订阅")
    token = safe.token()
    body = {"touser": user, "template_id": "SUB1", "data": {"thing1": {"value": "上门维修"}}}
    refused = safe.api("message/subscribe/send", token, body)
    assert refused == {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
    grants = f"{safe.base}/standin/users/{user}/grants"
    safe.http.post(grants, json={"template_id": "SUB1"}).raise_for_status()
    too_long = {**body, "data": {"thing1": {"value": "长" * 21}}}
    assert safe.api("message/subscribe/send", token, too_long)["errcode"] == 47003
    assert safe.api("message/subscribe/send", token, body)["errcode"] == 0
    assert safe.api("message/subscribe/send", token, body)["errcode"] == 43101  # consumed
    [item] = safe.inbox(user)
    assert (item["via"], item["template_id"], item["text"]) == (
        "subscribe",
        "SUB1",
        "thing1: 上门维修",
    )
    assert safe.http.get(f"{safe.base}/standin/stats").json()["sends"]["subscribe"] >= 1


# -- the menu --------------------------------------------------------------------------------

MENU = {
    "button": [
        {"type": "click", "name": "报修", "key": "REPAIR"},
        {
            "name": "服务",
            "sub_button": [
                {"type": "click", "name": "看病预约", "key": "MEDICAL"},
                {"type": "view", "name": "政策", "url": "http://example.org/p"},
            ],
        },
    ]
}


@pytest.mark.parametrize(
    ("menu", "errcode"),
    [
        ({"button": []}, 40016),
        ({"button": [MENU["button"][0]] * 4}, 40016),
        ({"button": [{"type": "click", "name": "一二三四五六", "key": "K"}]}, 40018),
        ({"button": [{"type": "tap", "name": "报修", "key": "K"}]}, 40017),
        ({"button": [{"type": "click", "name": "报修"}]}, 40019),
        ({"button": [{"type": "view", "name": "报修"}]}, 40020),
        ({"button": [{"name": "服务", "sub_button": [MENU["button"][0]] * 6}]}, 40023),
        (
            {
                "button": [
                    {
                        "name": "服务",
                        "sub_button": [{"type": "click", "name": "长" * 21, "key": "K"}],
                    }
                ]
            },
            40025,
        ),
        ({"button": [{"name": "服务", "sub_button": [{"type": "view", "name": "政策"}]}]}, 40027),
        ({"button": [{"name": "服务", "sub_button": [{"type": "click", "name": "政策"}]}]}, 40026),
    ],
)
def test_menu_validation(safe: Standin, menu: dict[str, Any], errcode: int) -> None:
    assert safe.api("menu/create", safe.token(), menu)["errcode"] == errcode


def test_menu_create_and_get(safe: Standin) -> None:
    token = safe.token()
    assert safe.api("menu/create", token, MENU) == {"errcode": 0, "errmsg": "ok"}
    assert safe.api("menu/get", token) == {"menu": MENU}
    assert safe.http.get(f"{safe.base}/standin/menu").json() == {"menu": MENU}


def test_wechatpy_client_works_against_it(safe: Standin) -> None:
    """The channel's client: wechatpy with its base URL (and its token URL) pointed here."""

    class Client(WeChatClient):  # type: ignore[misc]
        API_BASE_URL = f"{safe.base}/cgi-bin/"

        def fetch_access_token(self) -> dict[str, Any]:
            return self._fetch_access_token(
                url=f"{safe.base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET},
            )

    user = openid()
    safe.receiver.reset(default="success")
    safe.send(user, type="text", content="你好")
    client = Client(APP_ID, APP_SECRET)
    client.message.send_text(user, "您好，请讲")
    safe.http.post(f"{safe.base}/standin/tokens/revoke").raise_for_status()
    client.message.send_text(user, "再说一次")  # 40001: wechatpy fetches a new token, retries
    assert [i["text"] for i in safe.inbox(user)] == ["您好，请讲", "再说一次"]


# -- the page --------------------------------------------------------------------------------


def test_the_page_is_served_with_a_strict_policy(safe: Standin) -> None:
    page = safe.http.get(f"{safe.base}/")
    assert page.status_code == 200 and "邻里社区" in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http" not in policy  # nothing from elsewhere
    for asset in ("app.js", "style.css", "mic.svg", "picture.svg"):
        assert safe.http.get(f"{safe.base}/static/{asset}").status_code == 200
    config = safe.http.get(f"{safe.base}/standin/config").json()
    assert config["account_name"] == "邻里社区" and config["original_id"] == ORIGINAL_ID


def test_the_gateways_access_log_hides_the_senders_openid() -> None:
    from channels.gateway.app import HideSecrets

    line = "/wechat?signature=ab&timestamp=1&openid=oAbC-123_x&encrypt_type=aes"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "%s %s", ("POST", line), None)
    HideSecrets().filter(record)
    assert record.getMessage() == (
        "POST /wechat?signature=ab&timestamp=1&openid=***&encrypt_type=aes"
    )
