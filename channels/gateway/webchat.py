"""The resident web chat: a page (static/chat/) and its transport. It translates, never decides.

Device identity: the page makes a random secret once (localStorage) and sends it with every
request; the conversation key is derived from it ("web-" + 32 hex of its SHA-256), so the key
that staff and the event stream see never reveals the secret. The dialogue links the `web`
identity to the resident the first time (name, address, phone, asked once).

    POST /chat/api/messages  {secret, client_id, text | service}  → {replies, state, notice, staff}
    GET  /chat/api/stream?secret=…   Server-Sent Events: `reply` (id = message id) and `state`
    POST /chat/api/ack       {secret, id}   the page has shown the reply: now it is delivered

The stream looks for staff replies when it opens, whenever the conversation is woken (the
event tail) and every GATEWAY_STREAM_FALLBACK_SECONDS anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, conint, constr, root_validator

from channels.gateway.deps import Services, gateway, services
from channels.gateway.service import Gateway, GatewayError, Incoming, state_notice
from workorders.client import ApiError, ApiUnavailable
from workorders.contract import Channel, IdentityKind

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static" / "chat"
SECRET = r"^[A-Za-z0-9_-]{32,128}$"
# Buttons: what is recorded (the label) and what the dialogue gets (the intent).
SERVICES = {
    "medical": ("看病预约", "/book_medical"),
    "home_care": ("居家养老", "/book_home_care"),
    "repair": ("报修", "/report_repair"),
    "policy": ("政策咨询", "/ask_policy"),
    "human": ("找人工", "/request_human"),
}
# Every asset is the gateway's own; nothing else may run in the page.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/chat", tags=["web chat"])


def conversation_key(secret: str) -> str:
    return "web-" + hashlib.sha256(secret.encode()).hexdigest()[:32]


class WebMessageIn(BaseModel):
    secret: constr(regex=SECRET)
    client_id: constr(regex=r"^[A-Za-z0-9_.:-]{1,100}$")
    text: constr(strip_whitespace=True, min_length=1, max_length=2000, regex=r"^[^\x00]*$") | None
    service: Literal["medical", "home_care", "repair", "policy", "human"] | None = None

    class Config:
        extra = "forbid"

    @root_validator(skip_on_failure=True)
    def _one_of(cls, values: dict[str, Any]) -> dict[str, Any]:
        if (values.get("text") is None) == (values.get("service") is None):
            raise ValueError("text or service, one of them")
        return values


class AckIn(BaseModel):
    secret: constr(regex=SECRET)
    id: conint(ge=1, le=2**31 - 1)

    class Config:
        extra = "forbid"


@router.get("", include_in_schema=False)
async def to_page() -> RedirectResponse:
    return RedirectResponse("/chat/")


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.post("/api/messages")
async def message(body: WebMessageIn, gw: Gateway = Depends(gateway)) -> dict[str, Any]:
    key = conversation_key(body.secret)
    text, intent = SERVICES[body.service] if body.service else (body.text or "", None)
    outcome = await gw.handle(
        Incoming(
            key=key,
            channel=Channel.web,
            can_push=True,
            text=text,
            client_id=body.client_id,
            intent=intent,
            identity=(IdentityKind.web, key),
        )
    )
    return outcome.as_dict()


@router.post("/api/ack", status_code=204)
async def ack(body: AckIn, s: Services = Depends(services)) -> Response:
    try:
        await s.delivery.delivered(conversation_key(body.secret), body.id)
    except ApiUnavailable as exc:
        raise GatewayError(503, "api_unavailable", "暂时连不上，稍后会再送一次。") from exc
    except ApiError as exc:
        raise GatewayError(exc.status, exc.code, exc.message) from exc
    return Response(status_code=204)


@router.get("/api/stream")
async def stream(
    secret: str = Query(..., regex=SECRET), s: Services = Depends(services)
) -> StreamingResponse:
    return StreamingResponse(
        _events(conversation_key(secret), s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(key: str, s: Services) -> AsyncIterator[str]:
    """Replies not shown yet and the takeover state, each time there may be something new."""
    sent: set[int] = set()  # on this connection; a new one sends what is still unacknowledged
    shown: tuple[str, str | None] | None = None
    yield "retry: 3000\n\n"
    with s.hub.waiter(key) as woken:
        try:
            await s.gateway.refresh(key)
        except (ApiError, ApiUnavailable) as exc:
            log.info("%s: state not refreshed (%s)", key, exc)
        while True:
            woken.clear()  # before looking: a wake-up while looking is not lost
            try:
                for reply in await s.delivery.pending(key):
                    if reply["id"] not in sent:
                        sent.add(reply["id"])
                        yield _sse("reply", reply, reply["id"])
            except (ApiError, ApiUnavailable) as exc:
                log.info("%s: replies not fetched (%s)", key, exc)
            state = await s.delivery.state(key)
            if state != shown:
                shown = state
                notice = state_notice(state[0], state[1], True)
                yield _sse("state", {"state": state[0], "staff": state[1], "notice": notice})
            try:
                await asyncio.wait_for(woken.wait(), s.settings.stream_fallback_seconds)
            except asyncio.TimeoutError:
                yield ": still here\n\n"  # also tells a proxy the stream is alive
