"""The gateway's ASGI app: the web chat, the generic endpoint, and two background tasks (the
event tail and the wake-up listener), all made in the lifespan from one Settings object."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError

from channels.gateway import api, errors, webchat, wechat
from channels.gateway.delivery import Delivery, OrderListener, Pusher
from channels.gateway.deps import Services
from channels.gateway.dialogue import Dialogue
from channels.gateway.resume import Resumer
from channels.gateway.service import Gateway
from channels.gateway.settings import GatewaySettings, get_settings
from channels.gateway.store import Store
from channels.gateway.wake import WakeHub
from workorders.client import WorkOrdersClient
from workorders.redis_url import connect_async

log = logging.getLogger(__name__)
LONG_POLL_MARGIN_SECONDS = 15.0


class HideSecrets(logging.Filter):
    """The web chat's stream carries the device secret in its URL (EventSource cannot send a
    body or a header), and WeChat puts the sender's openid in every push's URL: keep both out
    of the access log."""

    _secret = re.compile(r"((?:secret|openid)=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._secret.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.getLogger("uvicorn.access").addFilter(HideSecrets())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect_async(settings.redis_url, decode_responses=True)
        token = settings.token.get_secret_value()
        workorders = WorkOrdersClient(
            settings.workorders_url, token, timeout=settings.api_timeout_seconds
        )
        events = WorkOrdersClient(
            settings.workorders_url,
            token,
            timeout=settings.events_wait_ms / 1000 + LONG_POLL_MARGIN_SECONDS,
        )
        dialogue = Dialogue(settings.rasa_url, timeout=settings.rasa_timeout_seconds)
        store = Store(client, settings.redis_prefix)
        resumer = Resumer(dialogue, store)
        gateway = Gateway(workorders, dialogue, store, resumer, settings.max_turns)
        closing: list[Any] = [workorders, events, dialogue]
        tasks: list[asyncio.Task[Any]] = []
        pushers: dict[str, Pusher] = {}
        order_listeners: list[OrderListener] = []
        if settings.wechat_token.get_secret_value():
            app.state.wechat = wechat.make_channel(settings, client, gateway, store, workorders)
            pushers["wechat"] = app.state.wechat.pusher
            order_listeners.append(app.state.wechat.notifier.on_order_event)
            closing.append(app.state.wechat.pusher.api)
            tasks.append(asyncio.create_task(app.state.wechat.keep_menu(), name="wechat-menu"))
        delivery = Delivery(
            workorders,
            events,
            gateway,
            store,
            resumer,
            settings.events_wait_ms,
            pushers,
            order_listeners,
        )
        hub = WakeHub(store)
        app.state.services = Services(settings, store, gateway, delivery, hub)
        tasks += [
            asyncio.create_task(hub.run(), name="gateway-wake-ups"),
            asyncio.create_task(delivery.run(), name="gateway-event-tail"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            for each in closing:
                await each.aclose()
            await client.close()

    app = FastAPI(
        title="Linli conversation gateway",
        description=(
            "Every text channel's way to the dialogue: the resident web chat at /chat/, "
            "WeChat at /wechat."
        ),
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(webchat.router)
    app.include_router(api.router)
    app.include_router(wechat.router)
    app.mount("/chat/static", StaticFiles(directory=webchat.STATIC), name="chat-static")

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        services: Services = app.state.services
        try:
            await services.store.redis.ping()
        except RedisError:
            return JSONResponse({"status": "redis_unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
