"""WeChat's callback protocol, and nothing of what the channel does with a message.

wechatpy does the work (signatures, AES, parsing, reply XML); this module fixes how Linli uses
it: which checks run on which request, and one typed `Inbound` per push, whatever the mode.

- URL check (GET): `signature` over (token, timestamp, nonce); answer `echostr` as it came.
- Every push (POST): the same `signature`; in safe and compatible mode (`encrypt_type=aes`)
  also `msg_signature` over the ciphertext, which is what is then decrypted and read.
- A passive reply goes back the way the push came: encrypted for an encrypted push.

A push older than `MAX_AGE_SECONDS` is refused as a replay: WeChat's retries of a message all
come within about 20 seconds, and a captured request must not be playable later.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

MAX_AGE_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024  # a 2,048-character text in safe mode is under 10 KB
MAX_PASSIVE_BYTES = 2048  # what WeChat shows of a passive text reply (UTF-8)


class ProtocolError(Exception):
    """A push that is not WeChat's (403) or cannot be read (400); `reason` is for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Inbound:
    """One push: a message or an event, read from the XML (decrypted in safe mode)."""

    openid: str  # FromUserName
    account: str  # ToUserName, the official account's original id
    kind: str  # text, voice, image, location, link, event, or what WeChat sent
    create_time: int
    msg_id: int | None  # messages have one; events do not
    event: str | None = None  # subscribe, unsubscribe, click, view …
    fields: dict[str, str] = field(default_factory=dict, repr=False)  # the rest, as sent

    @property
    def dedup_key(self) -> str:
        """The same push retried has the same key. MsgId alone is known to collide across
        users, so it is qualified by the sender and the time; events have no MsgId."""
        if self.msg_id:
            raw = f"msg:{self.msg_id}:{self.openid}:{self.create_time}"
        else:
            raw = f"event:{self.openid}:{self.create_time}:{self.event}:{self.get('EventKey')}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def get(self, name: str) -> str:
        return (self.fields.get(name) or "").strip()


@dataclass(frozen=True)
class Protocol:
    token: str
    app_id: str
    aes_key: str | None  # EncodingAESKey; without it only plaintext mode works

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("WECHAT_TOKEN is empty")

    def verify_url(self, query: dict[str, str]) -> str:
        """The URL check WeChat makes when the server address is configured."""
        self._check(query)
        echo = query.get("echostr", "")
        if not echo:
            raise ProtocolError(400, "no echostr")
        return echo

    def read(self, query: dict[str, str], body: bytes) -> tuple[Inbound, bool]:
        """(the push, whether it was encrypted); ProtocolError when it is not WeChat's or
        cannot be read."""
        self._check(query)
        if len(body) > MAX_BODY_BYTES:
            raise ProtocolError(400, "body too large")
        encrypted = query.get("encrypt_type", "raw").lower() == "aes"
        if encrypted:
            body = self._decrypt(query, body)
        try:  # as wechatpy's parse_message reads it (entities are never expanded)
            raw = xmltodict.parse(body.decode("utf-8"))["xml"]
        except Exception as exc:  # expat, bad UTF-8, no <xml>: all the same to us
            raise ProtocolError(400, f"unreadable XML ({type(exc).__name__})") from exc
        if not isinstance(raw, dict):
            raise ProtocolError(400, "empty XML")
        fields = {k: v for k, v in raw.items() if isinstance(v, str)}
        openid = fields.get("FromUserName", "")
        if not openid or len(openid) > 64:
            raise ProtocolError(400, "no sender")
        try:
            create_time = int(fields.get("CreateTime", ""))
            msg_id = int(fields["MsgId"]) if fields.get("MsgId") else None
        except ValueError as exc:
            raise ProtocolError(400, "bad CreateTime or MsgId") from exc
        kind = (fields.get("MsgType") or "").lower()
        event = None
        if kind == "event":
            event = (fields.get("Event") or "").lower() or None
        inbound = Inbound(
            openid=openid,
            account=fields.get("ToUserName", ""),
            kind=kind,
            create_time=create_time,
            msg_id=msg_id,
            event=event,
            fields=fields,
        )
        return inbound, encrypted

    def reply(self, inbound: Inbound, text: str, encrypted: bool) -> str:
        """A passive text reply, encrypted when the push was."""
        xml = TextReply(
            source=inbound.account, target=inbound.openid, content=clip(text, MAX_PASSIVE_BYTES)
        ).render()
        if not encrypted:
            return xml
        return self._crypto().encrypt_message(xml, secrets.token_hex(8), str(int(time.time())))

    def _check(self, query: dict[str, str]) -> None:
        try:
            check_signature(
                self.token,
                query.get("signature", ""),
                query.get("timestamp", ""),
                query.get("nonce", ""),
            )
        except InvalidSignatureException as exc:
            raise ProtocolError(403, "bad signature") from exc
        try:
            age = abs(time.time() - int(query.get("timestamp", "")))
        except ValueError as exc:
            raise ProtocolError(403, "bad timestamp") from exc
        if age > MAX_AGE_SECONDS:
            raise ProtocolError(403, "stale timestamp (a replay?)")

    def _crypto(self) -> WeChatCrypto:
        if not self.aes_key:
            raise ProtocolError(403, "an encrypted push, but WECHAT_AES_KEY is not set")
        return WeChatCrypto(self.token, self.aes_key, self.app_id)

    def _decrypt(self, query: dict[str, str], body: bytes) -> bytes:
        try:
            plain = self._crypto().decrypt_message(
                body.decode("utf-8"),
                query.get("msg_signature", ""),
                query.get("timestamp", ""),
                query.get("nonce", ""),
            )
        except (InvalidSignatureException, InvalidAppIdException) as exc:
            raise ProtocolError(403, f"bad msg_signature or app id ({type(exc).__name__})") from exc
        except Exception as exc:  # no <Encrypt>, bad base64, bad padding
            raise ProtocolError(400, f"undecryptable ({type(exc).__name__})") from exc
        return plain.encode("utf-8") if isinstance(plain, str) else plain


def clip(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut at a character, with an ellipsis when cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"
