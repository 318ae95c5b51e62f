"""Pushing a user's message to the account's callback, exactly as WeChat's servers do.

One push: POST callback?signature=&timestamp=&nonce=&openid= (safe and compatible mode add
encrypt_type=aes&msg_signature=), the XML of the message (plain, encrypted, or both). WeChat
waits `cutoff` seconds; with no answer (or a refused connection, or a non-2xx status) it tries
again with the very same MsgId and CreateTime, up to `retries` times. The first answer decides:
empty or "success" (nothing to show), a passive reply (shown), anything else (bad signature,
undecryptable, malformed, addressed to someone else) shows the user the error notice."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import string
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from wechatpy.crypto import PrpCrypto
from wechatpy.exceptions import InvalidAppIdException

from channels.wechat.standin.settings import Mode, StandinSettings
from channels.wechat.standin.state import State, User

log = logging.getLogger(__name__)
ERROR_NOTICE = "该公众号暂时无法提供服务，请稍后再试"
Fields = list[tuple[str, str | int | float]]


def sign(*parts: str) -> str:
    """WeChat's signatures: SHA1 of the parts sorted and joined (signature: token, timestamp,
    nonce; msg_signature: the same and the Encrypt text)."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def render(fields: Fields) -> str:
    """WeChat's XML: strings in CDATA, numbers bare, in the documented order."""
    parts = ["<xml>"]
    for name, value in fields:
        if isinstance(value, str):
            value = "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"
        parts.append(f"<{name}>{value}</{name}>")
    parts.append("</xml>")
    return "".join(parts)


def parse(xml: bytes | str) -> dict[str, str]:
    """A flat WeChat XML document → its fields; ValueError when it is not one."""
    text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("DTDs are not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from exc
    if root.tag != "xml":
        raise ValueError(f"root element <{root.tag}>, not <xml>")
    return {child.tag: (child.text or "") for child in root}


@dataclass
class Reply:
    """A valid answer: nothing to show (`fields` None), or a passive reply."""

    fields: dict[str, str] | None = None
    xml: str = ""


@dataclass
class Attempt:
    status: int | None
    seconds: float
    answer: str
    outcome: str  # valid | timeout | connection failed | http NNN | invalid: why
    reply: Reply | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "answer": self.answer,
            "outcome": self.outcome,
        }


class Pusher:
    def __init__(self, settings: StandinSettings, state: State, client: httpx.AsyncClient) -> None:
        self.settings, self.state, self.client = settings, state, client
        self.token = settings.token.get_secret_value()
        self.key = base64.b64decode(settings.aes_key.get_secret_value() + "=")

    # -- the request ------------------------------------------------------------------------

    def request(self, openid: str, fields: Fields) -> tuple[str, bytes]:
        """The URL and body of one push (a fresh timestamp, nonce and AES padding each time)."""
        timestamp = str(int(time.time()))
        nonce = "".join(secrets.choice(string.digits) for _ in range(10))
        signature = sign(self.token, timestamp, nonce)
        query = {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": openid}
        plain = render(fields)
        mode = self.settings.mode
        if mode is Mode.plain:
            body = plain
        else:
            encrypt = PrpCrypto(self.key).encrypt(plain, self.settings.app_id).decode()
            query["encrypt_type"] = "aes"
            query["msg_signature"] = sign(self.token, timestamp, nonce, encrypt)
            envelope: Fields = [("ToUserName", self.settings.original_id), ("Encrypt", encrypt)]
            body = render([*fields, ("Encrypt", encrypt)] if mode is Mode.compatible else envelope)
        sep = "&" if "?" in self.settings.callback else "?"
        return self.settings.callback + sep + urlencode(query), body.encode("utf-8")

    # -- the answer -------------------------------------------------------------------------

    def judge(self, body: bytes, openid: str) -> Reply:
        """A valid answer as WeChat reads it, or ValueError saying why it is not."""
        text = body.decode("utf-8", errors="replace").strip()
        if text in ("", "success"):
            return Reply()
        fields = parse(text)
        mode = self.settings.mode
        if "Encrypt" in fields and mode is not Mode.plain:
            for name in ("MsgSignature", "TimeStamp", "Nonce"):
                if not fields.get(name):
                    raise ValueError(f"encrypted reply without {name}")
            expected = sign(self.token, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
            if expected != fields["MsgSignature"]:
                raise ValueError("MsgSignature does not verify")
            try:
                inner = PrpCrypto(self.key).decrypt(fields["Encrypt"], self.settings.app_id)
            except InvalidAppIdException as exc:
                raise ValueError("decrypted reply names another appid") from exc
            except Exception as exc:  # bad base64, bad padding, bad length: all undecryptable
                raise ValueError(f"reply does not decrypt ({type(exc).__name__})") from exc
            text, fields = inner, parse(inner)
        elif mode is Mode.safe:
            raise ValueError("safe mode: a reply must be the encrypted envelope")
        if fields.get("ToUserName") != openid:
            raise ValueError(f"reply addressed to {fields.get('ToUserName')!r}, not {openid!r}")
        if fields.get("FromUserName") != self.settings.original_id:
            raise ValueError("reply's FromUserName is not the account's original id")
        if not fields.get("CreateTime", "").strip().isdigit():
            raise ValueError("reply without a numeric CreateTime")
        if fields.get("MsgType") == "text" and not fields.get("Content"):
            raise ValueError("text reply without Content")
        if not fields.get("MsgType"):
            raise ValueError("reply without MsgType")
        return Reply(fields, text)

    async def attempt(self, openid: str, fields: Fields) -> Attempt:
        """One POST, cut off after `cutoff` seconds like WeChat's."""
        url, body = self.request(openid, fields)
        started = time.monotonic()
        try:
            response = await self.client.post(
                url,
                content=body,
                headers={"Content-Type": "text/xml"},
                timeout=self.settings.cutoff_seconds,
            )
        except httpx.TimeoutException:
            return Attempt(None, time.monotonic() - started, "", "timeout")
        except httpx.HTTPError as exc:
            failed = f"connection failed: {type(exc).__name__}"
            return Attempt(None, time.monotonic() - started, "", failed)
        seconds = time.monotonic() - started
        answer = response.text
        if not 200 <= response.status_code < 300:
            return Attempt(response.status_code, seconds, answer, f"http {response.status_code}")
        try:
            reply = self.judge(response.content, openid)
        except ValueError as exc:
            return Attempt(response.status_code, seconds, answer, f"invalid: {exc}")
        return Attempt(response.status_code, seconds, answer, "valid", reply)

    # -- a whole delivery -------------------------------------------------------------------

    async def deliver(
        self, user: User, fields: Fields, repeat: int = 1, concurrent: bool = False
    ) -> dict[str, Any]:
        """WeChat's delivery with retries; or (repeat > 1) the same message `repeat` times
        whatever the answers, together or one after another (our answers lost on the way)."""
        attempts: list[Attempt] = []
        if repeat > 1 and concurrent:
            attempts = list(
                await asyncio.gather(*(self.attempt(user.openid, fields) for _ in range(repeat)))
            )
        else:
            for number in range(repeat if repeat > 1 else self.settings.retries + 1):
                started = time.monotonic()
                result = await self.attempt(user.openid, fields)
                attempts.append(result)
                log.info("push %s to %s: attempt %d %s", _kind(fields), user.openid,
                         number + 1, result.outcome)  # fmt: skip
                if repeat == 1 and (result.reply is not None or result.outcome.startswith("inv")):
                    break  # an answer arrived: valid or not, WeChat does not ask again
                if repeat == 1:  # WeChat asks again once its cut-off has passed
                    await asyncio.sleep(
                        max(0.0, self.settings.cutoff_seconds - (time.monotonic() - started))
                    )
        return self.conclude(user, fields, attempts)

    def conclude(self, user: User, fields: Fields, attempts: list[Attempt]) -> dict[str, Any]:
        """What the user sees: the first valid answer's reply, else the error notice."""
        now = self.state.clock.now()
        passive = error_notice = None
        valid = next((a.reply for a in attempts if a.reply is not None), None)
        if valid is None:
            error_notice = user.receive("error_notice", ERROR_NOTICE, now).as_json()
            log.warning("push to %s failed: %s", user.openid, [a.outcome for a in attempts])
        elif valid.fields is not None:
            reply = valid.fields
            if reply.get("MsgType") == "text":
                item = user.receive("passive", reply["Content"], now, data={"MsgType": "text"})
            else:
                item = user.receive("passive", None, now, data={"raw": valid.xml, **reply})
            passive = item.as_json()
        named = dict(fields)
        return {
            "msg_id": named.get("MsgId"),
            "media_id": named.get("MediaId"),
            "create_time": named["CreateTime"],
            "attempts": [a.as_json() for a in attempts],
            "passive": passive,
            "error_notice": error_notice,
        }


def _kind(fields: Fields) -> str:
    named = dict(fields)
    return str(named.get("Event") or named.get("MsgType"))
