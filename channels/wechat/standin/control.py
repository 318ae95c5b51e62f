"""The stand-in's own control API under /standin/ (not WeChat's): act as a user, read what a
user received, grant subscriptions, move the clock, spoil tokens, count; and the phone page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from channels.wechat.standin import media
from channels.wechat.standin.push import Fields, Pusher
from channels.wechat.standin.settings import StandinSettings
from channels.wechat.standin.state import State, User

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Events that open the 48 h customer-service window (VIEW and unsubscribe do not).
INTERACTIVE_EVENTS = {"subscribe", "CLICK", "SCAN", "scancode_push", "scancode_waitmsg"}


class UserMessage(BaseModel):
    """What the user does. type: text | voice | image | location | link | event."""

    type: Literal["text", "voice", "image", "location", "link", "event"]
    content: str | None = None  # text
    wav_path: str | None = None  # voice: any audio file sox reads, on this machine
    sample: str | None = None  # voice: a file name among GET /standin/samples
    recognition: str | None = None  # voice: WeChat's own transcript (omitted when null)
    format: Literal["amr", "speex"] = "amr"  # voice: as WeChat's Format field says
    jpeg_path: str | None = None  # image: a JPEG on this machine (default: a small test card)
    location_x: float = 39.915  # location: latitude
    location_y: float = 116.404  # location: longitude
    scale: int = 15
    label: str = ""
    title: str = ""  # link
    description: str = ""
    url: str = ""
    event: str | None = None  # event: subscribe | unsubscribe | CLICK | VIEW | ...
    key: str | None = None  # event: EventKey (CLICK's key, VIEW's url)
    # Deliver the very same message N times whatever the answers (WeChat's retries when our
    # answers are lost): together (concurrent) or one after another.
    repeat: int = Field(1, ge=1, le=20)
    concurrent: bool = False


class Grant(BaseModel):
    template_id: str = Field(..., min_length=1)
    count: int = Field(1, ge=1, le=100)


class Advance(BaseModel):
    advance_seconds: float = Field(..., ge=0)


async def build(msg: UserMessage, state: State, settings: StandinSettings, base: str) -> Fields:
    """The XML fields WeChat pushes for this action, in its documented order."""
    head: Fields = [
        ("ToUserName", settings.original_id),
        ("FromUserName", ""),  # filled in by the caller
        ("CreateTime", int(state.clock.now())),
        ("MsgType", msg.type),
    ]
    body: Fields
    if msg.type == "text":
        if not msg.content:
            raise HTTPException(422, "text needs content")
        body = [("Content", msg.content)]
    elif msg.type == "voice":
        path = _voice_path(msg, settings)
        try:
            if msg.format == "speex":
                audio, kind = await media.wav_to_speex(path), "audio/ogg"
            else:
                audio, kind = await media.wav_to_amr(path), "audio/amr"
        except (OSError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from exc
        media_id = state.add_media(audio, kind, "spx" if msg.format == "speex" else "amr")
        body = [("MediaId", media_id), ("Format", msg.format)]
        if msg.recognition is not None:
            body.append(("Recognition", msg.recognition))
    elif msg.type == "image":
        path = Path(msg.jpeg_path) if msg.jpeg_path else media.SAMPLE_JPEG
        try:
            jpeg = path.read_bytes()
        except OSError as exc:
            raise HTTPException(422, f"cannot read {path}: {exc.strerror}") from exc
        if not jpeg.startswith(b"\xff\xd8"):
            raise HTTPException(422, f"{path} is not a JPEG")
        media_id = state.add_media(jpeg, "image/jpeg", "jpg")
        body = [("PicUrl", f"{base}standin/pic/{media_id}"), ("MediaId", media_id)]
    elif msg.type == "location":
        body = [
            ("Location_X", msg.location_x),
            ("Location_Y", msg.location_y),
            ("Scale", msg.scale),
            ("Label", msg.label),
        ]
    elif msg.type == "link":
        body = [("Title", msg.title), ("Description", msg.description), ("Url", msg.url)]
    else:
        if not msg.event:
            raise HTTPException(422, "event needs event (subscribe, unsubscribe, CLICK, VIEW …)")
        body = [("Event", msg.event), ("EventKey", msg.key or "")]
        return head + body  # events have no MsgId
    return head + body + [("MsgId", state.msg_id())]


def _voice_path(msg: UserMessage, settings: StandinSettings) -> Path:
    if msg.wav_path:
        return Path(msg.wav_path)
    names = {s["file"] for s in media.samples(settings.samples_dir)}
    if msg.sample in names:
        return settings.samples_dir / str(msg.sample)
    raise HTTPException(422, "voice needs wav_path, or sample (one of GET /standin/samples)")


def install(app: FastAPI, settings: StandinSettings, state: State) -> None:
    def known(openid: str) -> User:
        user = state.users.get(openid)
        if user is None:
            raise HTTPException(404, f"no user {openid}")
        return user

    async def act(openid: str, msg: UserMessage, request: Request) -> dict[str, Any]:
        pusher: Pusher = request.app.state.pusher
        user = state.user(openid)
        if msg.type != "event" and not user.following:
            raise HTTPException(409, f"{openid} does not follow the account (send subscribe)")
        fields = await build(msg, state, settings, str(request.base_url))
        fields[1] = ("FromUserName", openid)
        now = state.clock.now()
        if msg.type != "event" or msg.event in INTERACTIVE_EVENTS:
            user.interacted(now)
        if msg.event == "subscribe":
            user.following = True
        elif msg.event == "unsubscribe":
            user.following = False
        return await pusher.deliver(user, fields, msg.repeat, msg.concurrent)

    @app.post("/standin/users/{openid}/messages")
    async def send_as_user(openid: str, msg: UserMessage, request: Request) -> dict[str, Any]:
        return await act(openid, msg, request)

    @app.post("/standin/users/{openid}/follow")
    async def follow(openid: str, request: Request) -> dict[str, Any]:
        return await act(openid, UserMessage(type="event", event="subscribe"), request)

    @app.post("/standin/users/{openid}/unfollow")
    async def unfollow(openid: str, request: Request) -> dict[str, Any]:
        return await act(openid, UserMessage(type="event", event="unsubscribe"), request)

    @app.get("/standin/users/{openid}")
    async def user_state(openid: str) -> dict[str, Any]:
        return known(openid).as_json(state.clock.now())

    @app.get("/standin/users/{openid}/inbox")
    async def inbox(
        openid: str, after: int = Query(0, ge=0), wait: float = Query(0, ge=0, le=60)
    ) -> dict[str, Any]:
        items = await state.user(openid).wait_after(after, wait)
        return {"items": [item.as_json() for item in items]}

    @app.post("/standin/users/{openid}/grants")
    async def grant(openid: str, body: Grant) -> dict[str, Any]:
        user = state.user(openid)
        user.grants[body.template_id] += body.count
        return user.as_json(state.clock.now())

    @app.get("/standin/clock")
    async def clock() -> dict[str, float]:
        return {"now": state.clock.now(), "offset_seconds": state.clock.offset}

    @app.post("/standin/clock")
    async def advance(body: Advance) -> dict[str, float]:
        state.clock.offset += body.advance_seconds
        log.info("clock moved %.0f s forward", body.advance_seconds)
        return {"now": state.clock.now(), "offset_seconds": state.clock.offset}

    @app.post("/standin/tokens/{action}")
    async def spoil_tokens(action: Literal["expire", "revoke", "rotate"]) -> dict[str, str]:
        {"expire": state.tokens.expire_all, "revoke": state.tokens.revoke_all,
         "rotate": state.tokens.rotate}[action]()  # fmt: skip
        return {"done": action}

    @app.get("/standin/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/standin/menu")
    async def menu() -> dict[str, Any]:
        return {"menu": state.menu}

    @app.get("/standin/samples")
    async def samples() -> dict[str, Any]:
        return {"samples": media.samples(settings.samples_dir)}

    @app.get("/standin/config")
    async def config() -> dict[str, Any]:
        return {
            "account_name": settings.account_name,
            "original_id": settings.original_id,
            "mode": settings.mode.value,
            "callback": settings.callback,
            "cutoff_seconds": settings.cutoff_seconds,
            "retries": settings.retries,
        }

    @app.get("/standin/pic/{media_id}", response_model=None)
    async def picture(media_id: str) -> Response:
        """PicUrl: the picture without a token, as WeChat's image CDN serves it."""
        found = state.get_media(media_id)
        if found is None or found.content_type != "image/jpeg":
            raise HTTPException(404, "no such picture")
        return Response(found.data, media_type="image/jpeg")

    @app.get("/", response_model=None)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", response_model=None)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
