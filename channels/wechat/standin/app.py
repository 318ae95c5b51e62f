"""WeChat's server API (/cgi-bin/...) as the stand-in serves it: the same paths, parameters,
JSON and errcodes (HTTP 200 with {"errcode", "errmsg"} on every refusal), so the channel's
wechatpy client only needs API_BASE_URL pointed here."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from channels.gateway import app as gateway_app
from channels.wechat.standin import control
from channels.wechat.standin.push import Pusher
from channels.wechat.standin.settings import StandinSettings
from channels.wechat.standin.state import State

log = logging.getLogger(__name__)

ERRMSG = {
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40013: "invalid appid",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40023: "invalid sub button size",
    40024: "invalid sub button type",
    40025: "invalid sub button name size",
    40026: "invalid sub button key size",
    40027: "invalid sub button url size",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    44002: "empty post data",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    46003: "menu no exist",
    47001: "data format error",
    47003: "argument invalid!",
}
# Menu button types that push an event with the button's key.
KEYED_TYPES = {
    "click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album",
    "pic_weixin", "location_select",
}  # fmt: skip
OTHER_TYPES = {"view", "media_id", "article_id", "article_view_limited", "miniprogram"}


class WeChatError(Exception):
    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode)
        self.errcode, self.detail = errcode, detail


def error_json(state: State, errcode: int, detail: str = "") -> JSONResponse:
    state.errcodes[errcode] += 1
    errmsg = ERRMSG[errcode] + (f" {detail}" if detail else "")
    return JSONResponse({"errcode": errcode, "errmsg": errmsg})


def ok(**extra: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **extra}


def router(settings: StandinSettings, state: State) -> APIRouter:
    api = APIRouter(prefix="/cgi-bin")

    def authorize(request: Request) -> None:
        errcode = state.tokens.check(request.query_params.get("access_token"))
        if errcode:
            raise WeChatError(errcode)

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            raise WeChatError(44002)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise WeChatError(47001) from exc
        if not isinstance(body, dict):
            raise WeChatError(47001)
        return body

    def check_app(grant_type: str | None, appid: str | None, secret: str | None) -> None:
        if grant_type != "client_credential":
            raise WeChatError(40002)
        if not appid:
            raise WeChatError(41002)
        if appid != settings.app_id:
            raise WeChatError(40013)
        if not secret:
            raise WeChatError(41004)
        if secret != settings.app_secret.get_secret_value():
            raise WeChatError(40125)

    def remaining(expires_at: float) -> int:
        return max(0, round(expires_at - state.clock.now()))

    @api.get("/token")
    async def token(request: Request) -> dict[str, Any]:
        q = request.query_params
        check_app(q.get("grant_type"), q.get("appid"), q.get("secret"))
        issued = state.tokens.issue()
        log.info("access_token issued (/token), %d so far", state.tokens.issued["token"])
        return {"access_token": issued.value, "expires_in": remaining(issued.expires_at)}

    @api.post("/stable_token")
    async def stable_token(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        check_app(body.get("grant_type"), body.get("appid"), body.get("secret"))
        issued = state.tokens.stable(bool(body.get("force_refresh")))
        return {"access_token": issued.value, "expires_in": remaining(issued.expires_at)}

    def follower(openid: Any) -> Any:
        user = state.users.get(openid) if isinstance(openid, str) else None
        if user is None:
            raise WeChatError(40003)
        if not user.following:
            raise WeChatError(43004)
        return user

    @api.post("/message/custom/send")
    async def custom_send(request: Request) -> dict[str, Any]:
        authorize(request)
        body = await json_body(request)
        user = follower(body.get("touser"))
        now = state.clock.now()
        if user.last_interaction is None or now - user.last_interaction > 48 * 3600:
            raise WeChatError(45015)
        if user.sends_left <= 0:
            raise WeChatError(45047)
        kind = body.get("msgtype")
        if kind == "text":
            content = (body.get("text") or {}).get("content")
            if not isinstance(content, str) or not content:
                raise WeChatError(47001)
            text, data = content, None
        elif isinstance(kind, str) and isinstance(body.get(kind), dict):
            text, data = None, {"msgtype": kind, kind: body[kind]}  # kept as sent
        else:
            raise WeChatError(47001)
        user.sends_left -= 1
        state.sends["custom"] += 1
        user.receive("custom", text, now, data=data)
        return ok()

    def rendered(data: Any) -> tuple[str, dict[str, str]]:
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values()
        ):
            raise WeChatError(47001)
        values = {k: v["value"] for k, v in data.items()}
        return "\n".join(f"{k}: {v}" for k, v in values.items()), values

    @api.post("/message/template/send")
    async def template_send(request: Request) -> dict[str, Any]:
        authorize(request)
        body = await json_body(request)
        user = follower(body.get("touser"))
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            raise WeChatError(40037)
        text, values = rendered(body.get("data"))
        state.sends["template"] += 1
        msgid = state.msg_id()
        extra = {"url": body.get("url"), "values": values, "msgid": msgid}
        user.receive("template", text, state.clock.now(), data=extra, template_id=template_id)
        return ok(msgid=msgid)

    async def subscribe_send(request: Request) -> dict[str, Any]:
        authorize(request)
        body = await json_body(request)
        openid = body.get("touser")
        user = state.users.get(openid) if isinstance(openid, str) else None
        if user is None:
            raise WeChatError(40003)
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            raise WeChatError(40037)
        text, values = rendered(body.get("data"))
        for key, value in values.items():  # thingN: 20 characters at most
            if re.fullmatch(r"thing\d+", key) and not 0 < len(value) <= 20:
                raise WeChatError(47003, f"data.{key}.value invalid")
        if user.grants[template_id] <= 0:
            raise WeChatError(43101)
        user.grants[template_id] -= 1
        state.sends["subscribe"] += 1
        extra = {"page": body.get("page"), "url": body.get("url"), "values": values}
        user.receive("subscribe", text, state.clock.now(), data=extra, template_id=template_id)
        return ok()

    # The mini-program's path and the official account's 订阅通知 path (bizsend).
    api.post("/message/subscribe/send")(subscribe_send)
    api.post("/message/subscribe/bizsend")(subscribe_send)

    @api.get("/media/get", response_model=None)
    async def media_get(request: Request) -> Response:
        authorize(request)
        media = state.get_media(request.query_params.get("media_id") or "")
        if media is None:
            raise WeChatError(40007)
        return Response(
            media.data,
            media_type=media.content_type,
            headers={"Content-disposition": f'attachment; filename="{media.filename}"'},
        )

    @api.post("/menu/create")
    async def menu_create(request: Request) -> dict[str, Any]:
        authorize(request)
        body = await json_body(request)
        check_menu(body)
        state.menu = {"button": body["button"]}
        return ok()

    @api.get("/menu/get")
    async def menu_get(request: Request) -> dict[str, Any]:
        authorize(request)
        if state.menu is None:
            raise WeChatError(46003)
        return {"menu": state.menu}

    @api.get("/menu/delete")
    async def menu_delete(request: Request) -> dict[str, Any]:
        authorize(request)
        state.menu = None
        return ok()

    return api


def _size(value: Any) -> int:
    return len(value.encode("utf-8")) if isinstance(value, str) else 0


def check_menu(body: dict[str, Any]) -> None:
    """WeChat's rules: 1-3 buttons of at most 16 bytes' name; a button with sub_button has 1-5
    of them (names up to 60 bytes); click-like types need a key (128 bytes), view a url (1024)."""
    buttons = body.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise WeChatError(40016)
    for button in buttons:
        if not isinstance(button, dict):
            raise WeChatError(47001)
        if not 0 < _size(button.get("name")) <= 16:
            raise WeChatError(40018)
        subs = button.get("sub_button")
        if subs is None or (isinstance(subs, dict) and not subs.get("list")):
            _check_action(button, 40017, 40019, 40020)
            continue
        if isinstance(subs, dict):  # menu/get's shape, accepted back as well
            subs = subs["list"]
        if not isinstance(subs, list) or not 1 <= len(subs) <= 5:
            raise WeChatError(40023)
        for sub in subs:
            if not isinstance(sub, dict):
                raise WeChatError(47001)
            if not 0 < _size(sub.get("name")) <= 60:
                raise WeChatError(40025)
            _check_action(sub, 40024, 40026, 40027)


def _check_action(button: dict[str, Any], bad_type: int, bad_key: int, bad_url: int) -> None:
    kind = button.get("type")
    if kind not in KEYED_TYPES | OTHER_TYPES:
        raise WeChatError(bad_type)
    if kind in KEYED_TYPES and not 0 < _size(button.get("key")) <= 128:
        raise WeChatError(bad_key)
    if kind in ("view", "miniprogram") and not 0 < _size(button.get("url")) <= 1024:
        raise WeChatError(bad_url)


class HideSecrets(gateway_app.HideSecrets):
    """The access log would show ?secret= (/cgi-bin/token) and ?access_token=: hide both."""

    _secret = re.compile(r"((?:secret|access_token)=)[^&\s\"]+")


def create_app(settings: StandinSettings) -> FastAPI:
    state = State.create(settings.token_ttl_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("uvicorn.access").addFilter(HideSecrets())
        async with httpx.AsyncClient() as client:
            app.state.pusher = Pusher(settings, state, client)
            yield

    app = FastAPI(title="WeChat stand-in", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.standin = settings, state

    @app.exception_handler(WeChatError)
    async def wechat_error(request: Request, exc: WeChatError) -> JSONResponse:
        return error_json(state, exc.errcode, exc.detail)

    app.include_router(router(settings, state))
    control.install(app, settings, state)
    return app
