"""The WeChat official-account API client the gateway sends with (asyncio, httpx).

Hand-written rather than wechatpy's `WeChatClient`: the gateway is an asyncio app, and wechatpy's
client is blocking `requests` (every send would hold the event loop or a worker thread), with
its own per-process token cache. Here every call uses the one token shared in Redis
(`channels.wechat.tokens`), and a call WeChat answers with a token error (40001, 42001, 40014)
replaces that token once across all senders and is retried once. (wechatpy stays with the
protocol side: signatures, XML, encryption.)

Bodies are sent as UTF-8 JSON without `\\u` escapes: WeChat counts and shows the bytes as sent.

Texts: a customer-service text may carry `TEXT_LIMIT_BYTES` (2048 bytes of UTF-8). `send_text`
splits a longer text at line, then sentence, then clause boundaries and sends the parts in
order as separate messages. Each part counts against WeChat's quota of customer-service
messages per resident action (a message, a menu click, a follow: a handful each, then 45047),
so a long text can use it up. A part that fails raises with `sent`, the number of parts already
delivered. Callers that prefer to decide can `split_text` first.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from channels.wechat.tokens import AccessTokens, Fetch, TokenUnavailable

log = logging.getLogger(__name__)

WINDOW_CLOSED = 45015  # the resident last wrote more than 48 hours ago
QUOTA_EXHAUSTED = 45047  # too many customer-service messages since the resident last wrote
NOT_SUBSCRIBED = 43101  # the resident did not grant (or used up) this subscription message
NOT_FOLLOWING = 43004  # the resident does not follow the account
INVALID_OPENID = 40003
# The token was rejected: replace it and retry once.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
MENU_MISSING = 46003

TEXT_LIMIT_BYTES = 2048
# A template or subscription message's fields: "value" dicts, or plain strings (wrapped).
TemplateData = Mapping[str, str | Mapping[str, str]]


class _HideToken(logging.Filter):
    """httpx logs request URLs (with `access_token=`) at INFO and DEBUG: mask it, should anyone
    lower httpx's level below the WARNING set here."""

    _token = re.compile(r"(access_token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "access_token=" in message:
            record.msg, record.args = self._token.sub(r"\1***", message), ()
        return True


logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpx").addFilter(_HideToken())


class WeChatError(Exception):
    """WeChat refused the call: `errcode` says why (compare with the constants above).

    `sent`: for a split text, how many of its parts had been delivered before this one failed.
    """

    def __init__(self, errcode: int, errmsg: str, sent: int = 0) -> None:
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode, self.errmsg, self.sent = errcode, errmsg, sent


class WeChatUnavailable(Exception):
    """WeChat (or the Redis holding the token) did not answer usably: try again later. A send
    that timed out may still have been delivered. `sent` as for WeChatError."""

    def __init__(self, reason: str, sent: int = 0) -> None:
        super().__init__(reason)
        self.sent = sent


def split_text(text: str, limit: int = TEXT_LIMIT_BYTES) -> list[str]:
    """`text` in parts of at most `limit` UTF-8 bytes, cut after a line, else a sentence, else a
    clause, else anywhere between characters; a line break at a cut is dropped."""
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > limit:
        head = rest.encode()[:limit].decode(errors="ignore")
        cut = _cut(head)
        parts.append(head[:cut].rstrip("\n"))
        rest = rest[cut:].lstrip("\n")
    if rest or not parts:
        parts.append(rest)
    return [part for part in parts if part] or [text]


_BOUNDARIES = ("\n", "。！？!?…；;", "，,、：: ")


def _cut(head: str) -> int:
    """Where to end the part that `head` (the longest prefix that fits) may become."""
    for marks in _BOUNDARIES:
        at = max(head.rfind(mark) for mark in marks)
        if at > 0:
            return at + 1
    return len(head)


class WeChatApi:
    """The official account's API: customer-service, template and subscription messages, media,
    the menu. `base_url` is `WECHAT_API_BASE` (https://api.weixin.qq.com, or a stand-in's)."""

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: str,
        redis: aioredis.Redis,
        prefix: str,
        *,
        timeout: float = 10.0,
        tokens_factory: Callable[[Fetch], AccessTokens] | None = None,
    ) -> None:
        self._app_id = app_id
        self._secret = app_secret
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        factory = tokens_factory or (lambda fetch: AccessTokens(redis, prefix, fetch))
        self.tokens = factory(self._fetch_token)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> WeChatApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- messages -------------------------------------------------------------------------

    async def send_text(self, openid: str, text: str) -> int:
        """A customer-service text (within 48 h of the resident's last message); split when
        longer than WeChat takes. Returns how many messages were sent."""
        if not text.strip():
            raise ValueError("WeChat sends no empty text")
        parts = split_text(text)
        for sent, part in enumerate(parts):
            body = {"touser": openid, "msgtype": "text", "text": {"content": part}}
            try:
                await self._call("POST", "/cgi-bin/message/custom/send", body)
            except (WeChatError, WeChatUnavailable) as exc:
                exc.sent = sent
                raise
        return len(parts)

    async def send_template(
        self,
        openid: str,
        template_id: str,
        data: TemplateData,
        url: str | None = None,
    ) -> int:
        """A template message (no 48 h window); `data` values may be plain strings. Returns
        WeChat's msgid (its delivery event names it)."""
        body = _templated(openid, template_id, data, url=url)
        answer = await self._call("POST", "/cgi-bin/message/template/send", body)
        return int(answer.get("msgid", 0))

    async def send_subscribe(
        self,
        openid: str,
        template_id: str,
        data: TemplateData,
        page: str | None = None,
    ) -> None:
        """A subscription message (订阅通知), sendable only while the resident's grant lasts:
        43101 otherwise."""
        body = _templated(openid, template_id, data, page=page)
        await self._call("POST", "/cgi-bin/message/subscribe/bizsend", body)

    # --- media ----------------------------------------------------------------------------

    async def download_media(self, media_id: str) -> tuple[bytes, str]:
        """A temporary medium a resident sent (voice: AMR; image: JPEG …) and its content type.

        WeChat answers errors as JSON (`errcode`) with status 200, so a JSON body is an error;
        a video's JSON (`video_url`, no errcode) is returned as it came."""
        response = await self._with_token("GET", "/cgi-bin/media/get", {"media_id": media_id})
        if _errcode(response):
            _json(response)  # raises WeChatError with WeChat's code
        content_type = response.headers.get("content-type", "application/octet-stream")
        return response.content, content_type.split(";")[0].strip()

    # --- menu -----------------------------------------------------------------------------

    async def create_menu(self, menu: Mapping[str, Any]) -> None:
        await self._call("POST", "/cgi-bin/menu/create", dict(menu))

    async def get_menu(self) -> dict[str, Any] | None:
        """The menu created through the API (`{"button": [...]}`), None when there is none."""
        try:
            answer = await self._call("GET", "/cgi-bin/menu/get")
        except WeChatError as exc:
            if exc.errcode == MENU_MISSING:
                return None
            raise
        menu = answer.get("menu")
        return dict(menu) if isinstance(menu, Mapping) else None

    # --- plumbing -------------------------------------------------------------------------

    async def _fetch_token(self, force: bool) -> tuple[str, int]:
        """The stable token: the same for every caller until it expires (`force` only for one
        WeChat rejected). The secret goes in the body, never in a URL."""
        body = {
            "grant_type": "client_credential",
            "appid": self._app_id,
            "secret": self._secret,
            "force_refresh": force,
        }
        response = await self._send("POST", "/cgi-bin/stable_token", None, body)
        answer = _json(response)
        if "access_token" not in answer:
            raise WeChatError(int(answer.get("errcode", -1)), str(answer.get("errmsg", "")))
        return str(answer["access_token"]), int(answer.get("expires_in", 7200))

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A JSON call with the token; WeChat's errcode other than 0 raises WeChatError."""
        return _json(await self._with_token(method, path, None, body))

    async def _with_token(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with the stored token; on a token error replace it once and send again."""
        token = await self._token(None)
        response = await self._send(method, path, {**(params or {}), "access_token": token}, body)
        if _errcode(response) not in TOKEN_ERRORS:
            return response
        log.warning("WeChat rejected the access token (%s): refreshing", _errcode(response))
        token = await self._token(token)
        return await self._send(method, path, {**(params or {}), "access_token": token}, body)

    async def _token(self, rejected: str | None) -> str:
        try:
            if rejected is None:
                return await self.tokens.get()
            return await self.tokens.invalid(rejected)
        except (RedisError, TokenUnavailable) as exc:
            raise WeChatUnavailable(f"no access token: {type(exc).__name__}") from exc

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
    ) -> httpx.Response:
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"} if content else None
        try:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            # The exception's text may hold the URL with the token: name its type only.
            raise WeChatUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise WeChatUnavailable(f"{method} {path}: HTTP {response.status_code}")
        return response


def _templated(
    openid: str, template_id: str, data: TemplateData, **link: str | None
) -> dict[str, Any]:
    """A template or subscription message's body; plain strings in `data` become `{"value"}`."""
    values = {k: {"value": v} if isinstance(v, str) else dict(v) for k, v in data.items()}
    body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": values}
    body.update({k: v for k, v in link.items() if v})
    return body


def _is_json(response: httpx.Response) -> bool:
    kind = response.headers.get("content-type", "")
    return "json" in kind or kind.startswith("text/plain")


def _errcode(response: httpx.Response) -> int:
    """WeChat's errcode in a JSON answer (0 for success or a non-JSON body such as media)."""
    if not _is_json(response):
        return 0
    try:
        answer = response.json()
    except ValueError:
        return 0
    return int(answer.get("errcode", 0) or 0) if isinstance(answer, dict) else 0


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        raise WeChatUnavailable(f"not JSON from {response.request.url.path}") from None
    if not isinstance(answer, dict):
        raise WeChatUnavailable(f"unexpected answer from {response.request.url.path}")
    errcode = int(answer.get("errcode", 0) or 0)
    if errcode:
        raise WeChatError(errcode, str(answer.get("errmsg", "")))
    return answer
