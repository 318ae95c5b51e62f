"""WeChat end to end: the WeChat stand-in (channels/wechat/standin, WeChat's real protocol on
loopback, safe mode) pushes as residents would, to the real gateway in front of Rasa with the
trained model, the action server and the work-order API. What each resident received is read
from the stand-in: a passive reply, a customer-service message, or WeChat's error notice."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmltodict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from wechatpy.crypto import WeChatCrypto

from channels.wechat.menu import MENU
from tests.conftest import RUN_ID
from tests.dialogue_stack import BIN, ROOT, DialogueStack, Process, agent_token
from tests.factories import resident_body
from tests.servers import free_port, serve_app
from tests.speech import spoken
from tests.support import Api
from tests.test_sos_terminal import post_event, sos_body
from voice.audio import WIDEBAND_RATE, write_wav
from workorders.words import say_moment

PREFIX = f"linli:test:{RUN_ID}:wx"  # the conftest removes linli:test:{RUN_ID}* at the end
ERROR_NOTICE = "该公众号暂时无法提供服务，请稍后再试"
SAMPLE = "BAC009S0764W0121.wav"  # ../shared/audio/zh
STATUS_TEMPLATE = "linli-order-status"
REPLY_TEMPLATE = "linli-staff-replied"  # a subscription message, sent only with the user's grant


def account() -> dict[str, str]:
    """A fresh official account's server settings, as ensure-key makes them."""
    return {
        "WECHAT_TOKEN": secrets.token_hex(16),
        "WECHAT_AES_KEY": base64.b64encode(os.urandom(32)).decode().rstrip("="),
        "WECHAT_APP_ID": "wx" + secrets.token_hex(8),
        "WECHAT_APP_SECRET": secrets.token_hex(16),
    }


@dataclass
class User:
    """One WeChat user, acting through the stand-in."""

    standin: str
    openid: str = field(default_factory=lambda: "o" + secrets.token_urlsafe(20))
    seen: int = 0  # inbox items already read
    resident: dict[str, Any] = field(default_factory=dict)

    def act(self, **message: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.standin}/standin/users/{self.openid}/messages", json=message, timeout=120
        )
        assert response.status_code == 200, response.text
        return response.json()

    def inbox(self, wait: float = 0) -> list[dict[str, Any]]:
        """What arrived since last read (waiting up to `wait` seconds for something)."""
        response = httpx.get(
            f"{self.standin}/standin/users/{self.openid}/inbox",
            params={"after": self.seen, "wait": wait},
            timeout=wait + 30,
        )
        items = response.json()["items"]
        self.seen += len(items)
        return items

    def answer(self, pushed: dict[str, Any], seconds: float = 30) -> str:
        """The one answer to a push: passive, or else the next customer-service message."""
        assert pushed["error_notice"] is None, pushed
        if pushed["passive"] is not None:
            self.seen = max(self.seen, pushed["passive"]["seq"])
            return str(pushed["passive"]["text"])
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            items = self.inbox(wait=left)
            texts = [i["text"] for i in items if i["via"] == "custom"]
            if texts:
                return "\n".join(texts)
        raise AssertionError(f"no answer within {seconds} s")

    def say(self, text: str) -> str:
        return self.answer(self.act(type="text", content=text))

    def click(self, key: str) -> str:
        return self.answer(self.act(type="event", event="CLICK", key=key))


@dataclass
class WeChat:
    api: Api
    dialogue: DialogueStack
    gateway: str
    standin: str
    settings: dict[str, str]
    staff_token: str

    def user(self, known: bool = True) -> User:
        """A follower of the account; `known`: a resident the dialogue already linked to the
        openid (as its registration flow does on first contact)."""
        user = User(self.standin)
        if known:
            body = resident_body(identities=[{"kind": "wechat_openid", "value": user.openid}])
            response = self.api.call("bot", "POST", "/residents", json=body)
            assert response.status_code == 201, response.text
            user.resident = response.json()
        user.answer(user.act(type="event", event="subscribe"))  # the dialogue's greeting
        return user

    def key(self, user: User) -> str:
        raw = f"{self.settings['WECHAT_APP_ID']}:{user.openid}".encode()
        return "wx-" + hashlib.sha256(raw).hexdigest()[:32]

    def orders(self, resident_id: int) -> list[dict[str, Any]]:
        return self.api.call(
            "bot", "GET", "/work-orders", params={"resident_id": resident_id}
        ).json()["items"]

    def staff(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.staff_token}"}
        return httpx.request(
            method, f"{self.api.base_url}{path}", headers=headers, timeout=30, **kwargs
        )

    def lines(self, key: str) -> list[tuple[str, str]]:
        response = self.staff("GET", f"/conversations/{key}")
        assert response.status_code == 200, response.text
        return [(m["role"], m["text"]) for m in response.json()["messages"]]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.standin}/standin/stats", timeout=10).json()

    def push_raw(
        self,
        body: bytes,
        *,
        signed: bool = True,
        nonce: str = "n0nce",
        timestamp: str | None = None,
        **query: str,
    ) -> httpx.Response:
        """A push made by hand, as WeChat would make it (or not)."""
        timestamp = timestamp or str(int(time.time()))
        signature = sign(self.settings["WECHAT_TOKEN"], timestamp, nonce)
        params = {"signature": signature if signed else "0" * 40, "timestamp": timestamp}
        params |= {"nonce": nonce, **query}
        return httpx.post(f"{self.gateway}/wechat", params=params, content=body, timeout=30)

    def crypto(self) -> WeChatCrypto:
        s = self.settings
        return WeChatCrypto(s["WECHAT_TOKEN"], s["WECHAT_AES_KEY"], s["WECHAT_APP_ID"])


def decrypt(wechat: WeChat, envelope: str) -> str:
    """A passive reply's text, as WeChat reads an encrypted one."""
    outer = xmltodict.parse(envelope)["xml"]
    plain = wechat.crypto().decrypt_message(
        envelope, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"]
    )
    return str(xmltodict.parse(plain)["xml"]["Content"])


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def gateway_with_wechat(
    dialogue: DialogueStack, settings: dict[str, str], standin_port: int, **env: str
) -> Process:
    port = free_port()
    return Process(
        [str(BIN / "python"), "-m", "channels.gateway", "--port", str(port)],
        {
            "RASA_URL": dialogue.rasa_url,
            "WORKORDERS_URL": dialogue.api.base_url,
            "LINLI_TOKEN_GATEWAY": dialogue.api.tokens["gateway"],
            "LINLI_REDIS_PREFIX": f"{PREFIX}:{uuid.uuid4().hex[:6]}",
            "GATEWAY_EVENTS_WAIT_MS": "5000",
            "WECHAT_STATUS_TEMPLATE_ID": STATUS_TEMPLATE,
            "WECHAT_REPLY_TEMPLATE_ID": REPLY_TEMPLATE,
            "WECHAT_API_BASE": f"http://127.0.0.1:{standin_port}",
            **settings,
            **env,
        },
        f"http://127.0.0.1:{port}/health",
        startup=30,
    )


def standin_process(settings: dict[str, str], port: int, callback: str) -> Process:
    return Process(
        [str(BIN / "python"), "-m", "channels.wechat.standin", "--port", str(port)],
        {**settings, "WECHAT_MODE": "safe", "WECHAT_STANDIN_CALLBACK": callback},
        f"http://127.0.0.1:{port}/standin/config",
        startup=30,
    )


@pytest.fixture(scope="module")
def wechat(dialogue: DialogueStack) -> Iterator[WeChat]:
    settings = account()
    standin_port = free_port()
    gateway = gateway_with_wechat(dialogue, settings, standin_port)
    gateway.start()
    gateway_url = gateway.url
    standin = standin_process(settings, standin_port, f"{gateway_url}/wechat")
    standin.start()
    try:
        yield WeChat(
            Api(dialogue.api),
            dialogue,
            gateway_url,
            f"http://127.0.0.1:{standin_port}",
            settings,
            agent_token(dialogue, RUN_ID),
        )
    finally:
        standin.stop()
        gateway.stop()


# --- the protocol ---------------------------------------------------------------------------


def test_the_url_check_answers_echostr_only_to_a_correct_signature(wechat: WeChat) -> None:
    timestamp, nonce, echo = str(int(time.time())), "n0nce", "echo-4711"
    good = sign(wechat.settings["WECHAT_TOKEN"], timestamp, nonce)
    query = {"timestamp": timestamp, "nonce": nonce, "echostr": echo}
    answer = httpx.get(f"{wechat.gateway}/wechat", params={**query, "signature": good})
    assert (answer.status_code, answer.text) == (200, echo)
    wrong = httpx.get(f"{wechat.gateway}/wechat", params={**query, "signature": "f" * 40})
    assert wrong.status_code == 403 and echo not in wrong.text


def test_a_bad_signature_is_refused_and_nothing_reaches_the_dialogue(wechat: WeChat) -> None:
    user = wechat.user()
    resident = user.resident
    xml = (
        f"<xml><ToUserName>gh_x</ToUserName><FromUserName>{user.openid}</FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType>text</MsgType>"
        "<Content>厨房水管漏水了</Content><MsgId>99887766</MsgId></xml>"
    ).encode()
    assert wechat.push_raw(xml, signed=False).status_code == 403
    # Safe mode: the outer signature right, the ciphertext's msg_signature wrong.
    now = str(int(time.time()))
    sealed = wechat.crypto().encrypt_message(xml.decode(), "n0nce", now)
    envelope = sealed.replace("<MsgSignature>", "<X>").replace("</MsgSignature>", "</X>")
    forged = wechat.push_raw(
        envelope.encode(), timestamp=now, encrypt_type="aes", msg_signature="0" * 40
    )
    assert forged.status_code == 403
    time.sleep(1)
    assert wechat.orders(resident["id"]) == []
    assert ("resident", "厨房水管漏水了") not in wechat.lines(wechat.key(user))
    assert user.inbox() == []


def test_plaintext_and_compatible_pushes_get_answers_in_their_own_mode(wechat: WeChat) -> None:
    """An account may run in plaintext or compatible mode (WeChat's admin page); the answer
    follows the push: plain XML to a plain push, encrypted to an encrypted one."""
    user = wechat.user()
    now = str(int(time.time()))
    xml = (
        f"<xml><ToUserName>gh_x</ToUserName><FromUserName>{user.openid}</FromUserName>"
        f"<CreateTime>{now}</CreateTime><MsgType>location</MsgType><Location_X>31.2</Location_X>"
        "<Location_Y>121.4</Location_Y><Scale>15</Scale><Label>幸福小区</Label>"
        "<MsgId>{msg_id}</MsgId></xml>"
    )
    plain = wechat.push_raw(xml.format(msg_id=5551).encode(), timestamp=now)
    assert plain.status_code == 200, plain.text
    answer = xmltodict.parse(plain.text)["xml"]
    assert (answer["ToUserName"], answer["MsgType"]) == (user.openid, "text")
    assert answer["Content"] == "收到您的位置了。要办什么事，请打字或发语音告诉我。"
    # Compatible: the plain fields and their ciphertext side by side, with msg_signature.
    sealed = xmltodict.parse(wechat.crypto().encrypt_message(xml.format(msg_id=5552), "n0nce", now))
    both = xml.format(msg_id=5552).replace(
        "</xml>", f"<Encrypt>{sealed['xml']['Encrypt']}</Encrypt></xml>"
    )
    compatible = wechat.push_raw(
        both.encode(),
        timestamp=now,
        encrypt_type="aes",
        msg_signature=sealed["xml"]["MsgSignature"],
    )
    assert compatible.status_code == 200, compatible.text
    assert "<Encrypt>" in compatible.text and "幸福小区" not in compatible.text
    assert decrypt(wechat, compatible.text) == "收到您的位置了。要办什么事，请打字或发语音告诉我。"


def test_the_gateway_creates_the_menu_when_it_starts(wechat: WeChat) -> None:
    """Once WeChat answers: a first attempt that found it not ready is made again 1, 2, 4 … s
    later (a loaded CI machine saw that), so the menu may come a little after the start."""
    deadline = time.monotonic() + 60
    while (
        created := httpx.get(f"{wechat.standin}/standin/menu", timeout=10).json()["menu"]
    ) is None:
        assert time.monotonic() < deadline, "the gateway never created the menu"
        time.sleep(0.2)
    labels = [b.get("name") for group in created["button"] for b in group.get("sub_button", [])]
    labels += [b["name"] for b in created["button"] if "key" in b]
    assert sorted(labels) == sorted(
        ["看病预约", "居家养老", "报修", "政策咨询", "我的工单", "找人工"]
    )
    assert created == MENU


def test_a_repeated_event_is_acted_on_once_and_an_unfollower_gets_nothing(wechat: WeChat) -> None:
    user = wechat.user()  # subscribed: the dialogue greeted them once
    key = wechat.key(user)
    bot_lines = [t for r, t in wechat.lines(key) if r == "bot"]
    time.sleep(1.1)  # a new CreateTime: events are told apart by sender and second
    again = user.act(type="event", event="subscribe", repeat=3)  # one event, WeChat's retries
    user.answer(again)
    time.sleep(2)
    assert user.inbox() == []
    assert len([t for r, t in wechat.lines(key) if r == "bot"]) == len(bot_lines) + 1
    # They unfollow: nothing can reach them, and a staff reply goes to a call back at once.
    user.click("HUMAN")
    assert wechat.staff("POST", f"/conversations/{key}/claim").status_code == 200
    [accepted] = user.inbox(wait=20)  # the claim accepted the hand-over's callback order
    assert accepted["data"]["values"]["first"] == "回电，工作人员已经接单"
    gone = httpx.post(f"{wechat.standin}/standin/users/{user.openid}/unfollow", timeout=30)
    assert gone.status_code == 200 and gone.json()["error_notice"] is None, gone.text
    sent = wechat.staff("POST", f"/conversations/{key}/replies", json={"text": "您还在吗"})
    assert sent.status_code == 201, sent.text
    reply = wait_undelivered(wechat, key, sent.json()["id"])
    assert (reply["undelivered"]["code"], reply["undelivered"]["fallback"]) == (43004, "callback")
    assert user.inbox(wait=2) == []


# --- a resident's requests ------------------------------------------------------------------


def test_a_policy_question_gets_one_answer(wechat: WeChat) -> None:
    user = wechat.user()
    pushed = user.act(type="text", content="高龄津贴怎么领")
    assert len(pushed["attempts"]) == 1  # answered within WeChat's cut-off
    answer = user.answer(pushed)
    assert "来自" in answer, answer
    assert user.inbox(wait=2) == []  # one answer, nothing by customer-service message after it


def test_a_new_resident_reports_a_repair_and_is_never_asked_who_they_are_again(
    wechat: WeChat,
) -> None:
    user = wechat.user(known=False)
    assert "怎么称呼" in user.say("厨房水管漏水了")
    assert "几号楼" in user.say("我叫王秀英")
    assert "电话" in user.say("三号楼二单元五零二")
    done = user.say("13912345678")
    assert "报修记下了" in done, done
    found = wechat.api.call(
        "bot", "GET", "/residents/lookup", params={"kind": "wechat_openid", "value": user.openid}
    )
    assert found.status_code == 200, found.text
    resident = found.json()
    [order] = wechat.orders(resident["id"])
    assert (order["kind"], order["channel"]) == ("repair", "wechat")
    again = user.say("电梯又坏了")
    assert "怎么称呼" not in again and "电话" not in again, again


def test_a_photo_sent_after_a_repair_report_is_kept_with_the_order(wechat: WeChat) -> None:
    user = wechat.user()
    assert "报修记下了" in user.say("厨房水管漏水了")
    [order] = wechat.orders(user.resident["id"])
    kept = user.answer(user.act(type="image"))
    assert kept == f"照片收到了，已经附在您的报修单（{order['id']}号）上，师傅上门前会先看一下。"
    detail = wechat.staff("GET", f"/work-orders/{order['id']}").json()
    [photo] = detail["photos"]
    image = wechat.staff("GET", f"/work-orders/{order['id']}/photos/{photo['id']}")
    assert image.status_code == 200 and image.content.startswith(b"\xff\xd8\xff")
    assert image.content == (ROOT / "channels/wechat/standin/sample.jpg").read_bytes()


def test_a_doctors_booking_by_menu_then_its_status_and_its_cancellation(wechat: WeChat) -> None:
    user = wechat.user()
    resident = user.resident
    assert "您想看哪个科" in user.click("MEDICAL")
    offer = user.say("内科，下礼拜二")
    assert "第1个" in offer and "您要第几个" in offer, offer
    assert "对吗" in user.say("第一个")
    done = user.say("对")
    assert "约好了" in done, done
    [order] = wechat.orders(resident["id"])
    assert (order["kind"], order["channel"], order["details"]["department"]) == (
        "medical_appointment",
        "wechat",
        "内科",
    )
    status = user.click("STATUS")
    assert status.startswith("您有1件事在办：看病预约：内科，已经收到，正在安排"), status
    assert "确定要取消" in user.say("帮我把挂号取消了")
    assert "已经取消" in user.say("对")
    cancelled = wechat.api.call("bot", "GET", f"/work-orders/{order['id']}").json()
    assert cancelled["status"] == "cancelled"
    # The menu's clicks are recorded with their labels, as the resident saw them.
    lines = wechat.lines(wechat.key(user))
    assert ("resident", "看病预约") in lines and ("resident", "我的工单") in lines


def test_a_voice_message_is_heard_by_wechats_recognition(wechat: WeChat) -> None:
    user = wechat.user()
    pushed = user.act(type="voice", sample=SAMPLE, recognition="高龄津贴怎么领。")
    assert "来自" in user.answer(pushed)
    assert ("resident", "高龄津贴怎么领") in wechat.lines(wechat.key(user))


def test_a_voice_message_without_recognition_is_heard_by_linlis_own_recogniser(
    wechat: WeChat, tmp_path: Path
) -> None:
    """Downloaded as AMR, decoded by ffmpeg, heard by voice.transcribe in its own process (Whisper:
    no Chinese Vosk model here), answered as the same words typed would be."""
    user = wechat.user()
    wav = tmp_path / "request.wav"
    wav.write_bytes(write_wav(spoken("我想问一下高龄津贴怎么申请", WIDEBAND_RATE), WIDEBAND_RATE))
    pushed = user.act(type="voice", wav_path=str(wav))
    answer = user.answer(pushed, seconds=60)
    said = [t for r, t in wechat.lines(wechat.key(user)) if r == "resident"]
    assert said[-1] == "我想问一下高龄津贴怎么申请"
    assert "高龄津贴" in answer and "没听明白" not in answer, answer


def test_a_speex_voice_message_is_heard_as_well(wechat: WeChat, tmp_path: Path) -> None:
    """WeChat's other voice format (Format speex): ffmpeg decodes it the same way."""
    user = wechat.user()
    wav = tmp_path / "request.wav"
    wav.write_bytes(write_wav(spoken("我想问一下高龄津贴怎么申请", WIDEBAND_RATE), WIDEBAND_RATE))
    answer = user.answer(user.act(type="voice", wav_path=str(wav), format="speex"), seconds=60)
    said = [t for r, t in wechat.lines(wechat.key(user)) if r == "resident"]
    assert said[-1] == "我想问一下高龄津贴怎么申请"
    assert "高龄津贴" in answer and "没听明白" not in answer, answer


def test_images_locations_links_and_odd_texts_get_a_kind_answer_and_no_order(
    wechat: WeChat,
) -> None:
    user = wechat.user()
    resident = user.resident
    assert "收到您的图片了" in user.answer(user.act(type="image"))
    assert "收到您的位置了" in user.answer(user.act(type="location", label="幸福小区"))
    assert "链接" in user.answer(user.act(type="link", title="t", url="http://x.invalid/"))
    assert "太长了" in user.say("水" * 5000)
    emoji = user.say("😀😀👍")
    assert emoji and ERROR_NOTICE not in emoji
    assert wechat.orders(resident["id"]) == []


def test_malformed_unknown_and_empty_pushes_are_answered_clearly(wechat: WeChat) -> None:
    user = wechat.user()
    now = str(int(time.time()))
    head = f"<ToUserName>gh_x</ToUserName><FromUserName>{user.openid}</FromUserName>"

    def push(xml: str) -> httpx.Response:
        sealed = wechat.crypto().encrypt_message(xml, "n0nce", now)
        signature = xmltodict.parse(sealed)["xml"]["MsgSignature"]
        return wechat.push_raw(
            sealed.encode(), timestamp=now, encrypt_type="aes", msg_signature=signature
        )

    broken = push(f"<xml>{head}<CreateTime>{now}</CreateTime><MsgType>text<")
    assert broken.status_code == 400
    odd = push(
        f"<xml>{head}<CreateTime>{now}</CreateTime><MsgType>hologram</MsgType>"
        "<MsgId>1234</MsgId></xml>"
    )
    assert odd.status_code == 200 and "这种消息我还看不懂" in decrypt(wechat, odd.text)
    empty = push(
        f"<xml>{head}<CreateTime>{now}</CreateTime><MsgType>text</MsgType>"
        "<Content></Content><MsgId>1235</MsgId></xml>"
    )
    assert empty.status_code == 200 and "消息是空的" in decrypt(wechat, empty.text)


# --- takeover by staff ------------------------------------------------------------------------


def test_staff_take_over_reply_by_customer_service_message_and_hand_back(wechat: WeChat) -> None:
    user = wechat.user()
    key = wechat.key(user)
    handed = user.click("HUMAN")
    assert "请工作人员" in handed and "正在为您联系工作人员" in handed, handed
    assert wechat.staff("POST", f"/conversations/{key}/claim").status_code == 200
    # While staff have it the bot keeps quiet: the resident is told who has it, nothing more.
    quiet = user.act(type="text", content="我家的灯不亮了")
    assert user.answer(quiet) == "工作人员agent正在为您服务"
    sent = wechat.staff("POST", f"/conversations/{key}/replies", json={"text": "您好，我是小李"})
    assert sent.status_code == 201, sent.text
    [reply] = [i for i in user.inbox(wait=20) if i["via"] == "custom"]
    assert reply["text"] == "【agent】您好，我是小李"
    delivered = wechat.staff("GET", f"/conversations/{key}").json()
    assert delivered["reach"]["sends_left"] == 4  # one of the five this message allowed
    [staff_line] = [m for m in delivered["messages"] if m["role"] == "staff"]
    assert staff_line["delivered_at"] is not None
    back = wechat.staff(
        "POST", f"/conversations/{key}/handback", json={"note": "已约好明天上午师傅上门"}
    )
    assert back.status_code == 200, back.text
    assert "来自" in user.say("高龄津贴怎么领")  # the bot answers again


# --- five seconds, exactly once -------------------------------------------------------------


def slow_rasa(rasa_url: str, seconds: float) -> Starlette:
    """Rasa behind a proxy that holds every dialogue turn for `seconds` (the rest passes)."""
    client = httpx.AsyncClient(base_url=rasa_url, timeout=120)

    async def forward(request: Request) -> Response:
        if request.url.path == "/webhooks/rest/webhook":
            await asyncio.sleep(seconds)
        upstream = await client.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        return Response(upstream.content, upstream.status_code, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT"])])


@pytest.fixture
def slow(dialogue: DialogueStack, wechat: WeChat) -> Iterator[WeChat]:
    """A second gateway whose dialogue takes 6 s a turn, beyond WeChat's 5. For one test only:
    it tails the same API's events, and two WeChat channels on one community are not a setup
    anyone runs (each would alert the same family members)."""
    settings = account()
    standin_port = free_port()
    with serve_app(slow_rasa(dialogue.rasa_url, 6.0)) as rasa:
        gateway = gateway_with_wechat(dialogue, settings, standin_port, RASA_URL=rasa)
        gateway.start()
        gateway_url = gateway.url
        standin = standin_process(settings, standin_port, f"{gateway_url}/wechat")
        standin.start()
        try:
            yield replace(
                wechat, gateway=gateway_url, standin=f"http://127.0.0.1:{standin_port}",
                settings=settings,
            )  # fmt: skip
        finally:
            standin.stop()
            gateway.stop()


def test_a_slow_dialogue_answers_once_by_customer_service_message_across_retries(
    slow: WeChat,
) -> None:
    user = slow.user()
    # WeChat's three retries of one repair report, as when our answers to it are lost.
    pushed = user.act(type="text", content="厨房水管漏水了", repeat=3)
    assert [a["answer"] for a in pushed["attempts"]] == ["success"] * 3
    assert pushed["error_notice"] is None
    answer = user.answer(pushed, seconds=40)
    assert "报修记下了" in answer, answer
    [order] = slow.orders(user.resident["id"])
    assert order["kind"] == "repair"
    time.sleep(3)
    assert user.inbox() == []  # exactly one answer
    # Twenty copies of one message at once: one turn, one answer, still one order.
    burst = user.act(type="text", content="谢谢", repeat=20, concurrent=True)
    assert len(burst["attempts"]) == 20 and burst["error_notice"] is None
    user.answer(burst, seconds=40)
    time.sleep(3)
    assert user.inbox() == []
    assert [o["id"] for o in slow.orders(user.resident["id"])] == [order["id"]]
    thanks = [t for r, t in slow.lines(slow.key(user)) if r == "resident" and t == "谢谢"]
    assert thanks == ["谢谢"]


def test_twenty_copies_of_a_repair_report_at_once_make_one_order_and_one_answer(
    wechat: WeChat,
) -> None:
    user = wechat.user()
    burst = user.act(type="text", content="卫生间的水龙头坏了", repeat=20, concurrent=True)
    assert len(burst["attempts"]) == 20 and burst["error_notice"] is None
    assert "报修记下了" in user.answer(burst, seconds=40)
    time.sleep(3)
    assert user.inbox() == []
    [order] = wechat.orders(user.resident["id"])
    assert order["kind"] == "repair"
    said = [t for r, t in wechat.lines(wechat.key(user)) if r == "resident"]
    assert said.count("卫生间的水龙头坏了") == 1


# --- order status messages ------------------------------------------------------------------


def test_a_resident_hears_once_on_wechat_when_staff_accept_and_resolve_the_order(
    wechat: WeChat, redis_client: Any
) -> None:
    user = wechat.user()
    done = user.say("厨房水管漏水了")
    assert "报修记下了" in done, done
    [order] = wechat.orders(user.resident["id"])
    # The gateway learnt the openid of this resident (its own prefix, found by the resident).
    [learnt] = list(redis_client.scan_iter(f"{PREFIX}:*:wechat:resident:{user.resident['id']}"))
    assert redis_client.get(learnt).decode() == user.openid
    cursor_key = learnt.decode().split(":gateway:")[0] + ":gateway:events-cursor"
    before = redis_client.get(cursor_key)
    assert before is not None

    def moved(to: str) -> None:
        answer = wechat.staff("POST", f"/work-orders/{order['id']}/transitions", json={"to": to})
        assert answer.status_code == 200, answer.text

    def told(status_words: str, remark: str = "有问题请在公众号里留言，或打社区热线。") -> None:
        items = user.inbox(wait=20)
        assert [i["via"] for i in items] == ["template"], items
        [item] = items
        assert item["template_id"] == STATUS_TEMPLATE
        what = "报修：" + order["details"]["category"]
        assert item["data"]["values"] == {
            "first": f"{what}，{status_words}",
            "keyword1": what,
            "keyword2": status_words,
            "remark": remark,
        }

    moved("accepted")
    told("工作人员已经接单")
    moved("in_progress")  # not a status residents are told about
    moved("resolved")
    told("已经办好了，请您评价一下", "请直接回复1到5给这次服务打分（5分最满意），也可以说说意见。")
    assert user.inbox(wait=3) == []
    # The event tail reads the same events again (as after a crash before its cursor moved):
    # nothing is sent twice.
    after = redis_client.get(cursor_key)
    redis_client.set(cursor_key, before)
    deadline = time.monotonic() + 20
    while redis_client.get(cursor_key) in (before, None) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis_client.get(cursor_key) >= after  # replayed up to where it was
    assert user.inbox(wait=3) == []
    # The resident answers the request to rate: the dialogue rates the order, once.
    thanks = user.say("5分，师傅很好")
    what = "报修：" + order["details"]["category"]
    assert thanks == f"谢谢您的评价！您给「{what}」打了5分。您说的意见我们会转给工作人员。"
    rated = wechat.api.call("bot", "GET", f"/work-orders/{order['id']}").json()
    assert rated["status"] == "closed"
    assert (rated["rating"]["score"], rated["rating"]["comment"]) == (5, "师傅很好")


def test_a_resident_hears_the_time_staff_agreed_and_a_cancellation(wechat: WeChat) -> None:
    user = wechat.user()
    assert "报修记下了" in user.say("厨房水管漏水了")
    [order] = wechat.orders(user.resident["id"])
    what = "报修：" + order["details"]["category"]

    def schedule(at: str) -> httpx.Response:
        path = f"/work-orders/{order['id']}/schedule"
        return wechat.staff("POST", path, json={"scheduled_at": at})

    def told() -> tuple[str, str]:
        [item] = user.inbox(wait=20)
        assert (item["via"], item["data"]["values"]["keyword1"]) == ("template", what), item
        return item["data"]["values"]["first"], item["data"]["values"]["keyword2"]

    by_bot = wechat.api.call(
        "bot",
        "POST",
        f"/work-orders/{order['id']}/schedule",
        json={"scheduled_at": "2027-01-08T09:00:00+08:00"},
    )
    assert (by_bot.status_code, by_bot.json()["code"]) == (403, "forbidden")  # staff agree times
    assert schedule("2027-01-08T09:00:00+08:00").status_code == 200
    assert told() == (
        f"{what}，已经收到，正在安排，时间是1月8号星期五上午9点",
        "已经收到，正在安排",
    )
    assert schedule("2027-01-08T01:00:00+00:00").status_code == 200  # the same moment
    assert user.inbox(wait=3) == []
    assert schedule("2027-01-08T14:30:00+08:00").status_code == 200  # moved: told again
    assert told()[0] == f"{what}，已经收到，正在安排，时间是1月8号星期五下午2点半"
    history = wechat.api.call("bot", "GET", f"/work-orders/{order['id']}").json()["history"]
    assert [h["reason"] for h in history if h["action"] == "scheduled"] == [
        "约定时间：1月8号星期五上午9点",
        "约定时间：1月8号星期五下午2点半",
    ]

    cancel = {"to": "cancelled", "reason": "居民说不用修了"}
    moved = wechat.staff("POST", f"/work-orders/{order['id']}/transitions", json=cancel)
    assert moved.status_code == 200, moved.text
    assert told() == (f"{what}，已经取消了", "已经取消了")  # no time: it no longer matters
    late = schedule("2027-01-09T09:00:00+08:00")
    assert (late.status_code, late.json()["code"]) == (409, "order_closed")
    naive = schedule("2027-01-09T09:00:00")
    assert naive.status_code == 422, naive.text
    assert user.inbox(wait=3) == []


def test_a_family_member_hears_the_elders_consent_and_acknowledges_an_sos_in_wechat(
    wechat: WeChat,
) -> None:
    son = wechat.user(known=False)
    elder = wechat.api.call(
        "bot",
        "POST",
        "/residents",
        json=resident_body(address={"building": "5", "unit": "1", "room": "302"}),
    ).json()
    asked = wechat.api.call(
        "bot",
        "POST",
        f"/residents/{elder['id']}/proxies",
        json={
            "identity": {"kind": "wechat_openid", "value": son.openid},
            "name": "李小明",
            "relation": "儿子",
        },
    )
    assert asked.status_code == 201, asked.text
    proxy = asked.json()
    consent = wechat.staff(
        "POST", f"/proxies/{proxy['id']}/consent", json={"granted": True, "via": "console"}
    )
    assert consent.status_code == 200, consent.text
    [told] = son.inbox(wait=20)
    assert (told["via"], told["data"]["values"]["first"]) == (
        "template",
        "老人已经同意由您代办社区服务了。现在您可以在这里替老人预约看病、居家养老服务、报修，"
        "查进度和评价。",
    )
    device_id = f"sos-{uuid.uuid4().hex[:10]}"
    terminal = wechat.staff(
        "POST", "/terminals", json={"device_id": device_id, "resident_id": elder["id"]}
    )
    assert terminal.status_code == 201, terminal.text
    pressed = post_event(wechat.api.base_url, device_id, terminal.json()["secret"], sos_body())
    assert pressed.status_code == 201, pressed.text
    order_id = pressed.json()["order_id"]
    [alert] = son.inbox(wait=30)
    values = alert["data"]["values"]
    assert values["keyword1"] == f"一键求助：{proxy['resident_name']}"
    created = wechat.staff("GET", f"/work-orders/{order_id}").json()["created_at"]
    when = say_moment(datetime.fromisoformat(created))
    # Who, where, when. The address as WeChat may carry it (it passes Tencent's servers): the
    # building tells home from elsewhere, the door stays private; staff have it in full.
    assert values["first"] == (
        f"您的家人{proxy['resident_name']}（5号楼*单元***）{when}按下了一键求助，"
        "社区工作人员正在处理。"
    )
    assert values["remark"] == "收到请回复1。有危险请直接拨打120。"
    # "1" is the son's acknowledgement (not a rating): it stops the escalation chain.
    assert son.say("1") == "好的，已经告诉社区工作人员您收到了。社区正在处理，有情况会再联系您。"
    history = wechat.staff("GET", f"/work-orders/{order_id}").json()["history"]
    reasons = [h["reason"] for h in history]
    assert f"微信通知代办家属{proxy['name']}（儿子）：已在微信里确认收到" in reasons
    assert f"代办家属{proxy['name']}（儿子）已确认，停止逐级通知" in reasons


def test_a_son_on_wechat_books_for_his_mother_after_her_consent(wechat: WeChat) -> None:
    son = wechat.user(known=False)
    elder = wechat.api.call("bot", "POST", "/residents", json=resident_body()).json()
    assert son.say("我想替我妈办事") == "请说一下老人登记用的手机号。"
    assert son.say(elder["phone"]) == "请问您怎么称呼？"
    assert son.say("我叫李小明") == (
        "您是老人的什么人？儿子、女儿、儿媳、女婿、孙子、孙女、老伴，还是其他亲属？"
    )
    asked = son.say("儿子")
    [proxy] = wechat.api.call(
        "bot", "GET", "/proxies", params={"kind": "wechat_openid", "value": son.openid}
    ).json()
    assert asked == (
        f"好的。社区会打电话给{proxy['resident_name']}，请老人按1同意。老人同意后，我们会在"
        "微信上告诉您，您就可以替老人预约、报修、查进度和评价了。"
    )
    assert (proxy["resident_id"], proxy["relation"], proxy["status"]) == (
        elder["id"],
        "儿子",
        "requested",
    )
    # The elder says yes (here through staff, as after their phone call).
    consent = wechat.staff(
        "POST", f"/proxies/{proxy['id']}/consent", json={"granted": True, "via": "console"}
    )
    assert consent.status_code == 200, consent.text
    [told] = son.inbox(wait=20)
    assert told["data"]["values"]["keyword2"] == "老人已同意"
    offer = son.say("帮我妈挂个下礼拜二的内科")
    assert "第1个" in offer and "您要第几个" in offer, offer
    assert "对吗" in son.say("第一个")
    done = son.say("对")
    assert done.startswith(f"已经替{proxy['resident_name']}约好了：") and "身份证" in done, done
    [order] = wechat.orders(elder["id"])
    assert (order["kind"], order["channel"]) == ("medical_appointment", "wechat")
    assert order["requested_by"]["proxy_id"] == proxy["id"]
    assert order["requested_by"]["relation"] == "儿子"

    # He hears how it goes, as she would, and rates it for her.
    assert order["status"] == "new"
    what = f"您为{proxy['resident_name']}办的看病预约"
    for to, words in (("accepted", "工作人员已经接单，时间是"), ("in_progress", None),
                      ("resolved", "已经办好了，请您评价一下")):  # fmt: skip
        moved = wechat.staff("POST", f"/work-orders/{order['id']}/transitions", json={"to": to})
        assert moved.status_code == 200, moved.text
        if words is None:  # not a status anyone is told of
            continue
        [news] = son.inbox(wait=20)
        first = news["data"]["values"]["first"]
        assert (news["via"], first.startswith(what), words in first) == ("template", True, True)
    thanks = son.say("4分")
    assert thanks.startswith("谢谢您的评价！"), thanks
    rated = wechat.api.call("bot", "GET", f"/work-orders/{order['id']}").json()
    assert (rated["status"], rated["rating"]["score"]) == ("closed", 4)


# Last in the module: it moves the stand-in's clock two days on.
def test_a_staff_reply_wechat_refuses_after_48_hours_goes_to_a_call_back(wechat: WeChat) -> None:
    user = wechat.user()
    key = wechat.key(user)
    user.click("HUMAN")
    assert wechat.staff("POST", f"/conversations/{key}/claim").status_code == 200
    # Two days pass at WeChat without a word from the resident: the window is closed.
    moved = httpx.post(f"{wechat.standin}/standin/clock", json={"advance_seconds": 49 * 3600})
    assert moved.status_code == 200
    sent = wechat.staff("POST", f"/conversations/{key}/replies", json={"text": "师傅明天上午到"})
    assert sent.status_code == 201, sent.text
    reply = wait_undelivered(wechat, key, sent.json()["id"])
    messages = wechat.staff("GET", f"/conversations/{key}").json()["messages"]
    assert reply["delivered_at"] is None
    assert (reply["undelivered"]["code"], reply["undelivered"]["fallback"]) == (
        45015,
        "callback",
    )
    assert messages[-1]["role"] == "system"
    assert messages[-1]["text"] == (
        "这条回复没能发到居民的微信（居民超过48小时没有发消息，微信不让再发客服消息）。"
        "请按回拨工单打电话联系居民。"
    )
    assert [i for i in user.inbox(wait=2) if i["via"] == "custom"] == []
    assert wechat.api.call("gateway", "GET", f"/conversations/{key}/outbound").json() == []


def wait_undelivered(wechat: WeChat, key: str, reply_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = wechat.staff("GET", f"/conversations/{key}").json()["messages"]
        [reply] = [m for m in messages if m["id"] == reply_id]
        if reply["undelivered"]:
            return dict(reply)
        time.sleep(0.5)
    raise AssertionError(f"reply {reply_id} never reported undeliverable")


def test_a_reply_past_the_five_message_quota_waits_with_a_reminder_for_the_next_message(
    wechat: WeChat,
) -> None:
    user = wechat.user()
    key = wechat.key(user)
    clicked = user.act(type="event", event="CLICK", key="HUMAN")
    user.answer(clicked)
    used = 0 if clicked["passive"] is not None else 1  # a late answer used one of the five
    assert wechat.staff("POST", f"/conversations/{key}/claim").status_code == 200
    grant = {"template_id": REPLY_TEMPLATE}
    httpx.post(
        f"{wechat.standin}/standin/users/{user.openid}/grants", json=grant
    ).raise_for_status()
    ids = []
    for n in range(1, 7 - used):
        sent = wechat.staff("POST", f"/conversations/{key}/replies", json={"text": f"第{n}条"})
        assert sent.status_code == 201, sent.text
        ids.append(sent.json()["id"])
    held = wait_undelivered(wechat, key, ids[-1])
    assert (held["undelivered"]["code"], held["undelivered"]["fallback"]) == (45047, "subscribe")
    items = user.inbox(wait=5)
    assert [i["text"] for i in items if i["via"] == "custom"] == [
        f"【agent】第{n}条" for n in range(1, 6 - used)
    ]
    [reminder] = [i for i in items if i["via"] == "subscribe"]
    assert reminder["template_id"] == REPLY_TEMPLATE
    # The resident writes again: the held reply goes out now, and counts as delivered.
    user.act(type="text", content="好的")
    deadline = time.monotonic() + 30
    late: list[str] = []
    while not late and time.monotonic() < deadline:
        late = [i["text"] for i in user.inbox(wait=5) if i["text"] == f"【agent】第{6 - used}条"]
    assert late == [f"【agent】第{6 - used}条"]
    messages = wechat.staff("GET", f"/conversations/{key}").json()["messages"]
    [reply] = [m for m in messages if m["id"] == ids[-1]]
    assert reply["delivered_at"] is not None
