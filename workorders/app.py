"""The FastAPI application: routers, error shape, OpenAPI description."""

from __future__ import annotations

import anyio.to_thread
from fastapi import FastAPI

from workorders import console, errors, logs
from workorders.api import guards
from workorders.api.routes import (
    appointments,
    auth,
    calls,
    conversations,
    events,
    health,
    orders,
    proxies,
    residents,
    stats,
    terminals,
)
from workorders.db import POOL_SIZE
from workorders.services import events as outbox

DESCRIPTION = """
邻里助手 (Linli) work-order API: the system of record for every booking, repair, question,
complaint and emergency. Errors always have the shape `{"code": ..., "message": ...}` with a
Chinese message a person can act on. Authenticate with `Authorization: Bearer <token>`.
SOS terminals sign their events with their own secret instead (`POST /terminals/events`).
"""


async def _size_thread_pool() -> None:
    # Sync endpoints run in AnyIO's thread pool (40 by default). One thread per pooled
    # connection: with twice as many, the pool's overflow connections were opened and closed
    # all the time (~85 new PostgreSQL sessions a second under 50 readers, a backend forked
    # and set up for each: 0.6-0.7 of the two cores), and more threads only contend for the GIL.
    anyio.to_thread.current_default_thread_limiter().total_tokens = POOL_SIZE


async def _events_marked() -> None:
    # Announced events not yet marked would be announced again by the relay.
    await anyio.to_thread.run_sync(outbox.marked)


def create_app() -> FastAPI:
    logs.setup()
    app = FastAPI(
        title="Linli work orders",
        version="1.0.0",
        description=DESCRIPTION,
        on_startup=[_size_thread_pool],
        on_shutdown=[_events_marked],
    )
    errors.install(app)
    app.add_middleware(guards.RejectNul)
    app.add_middleware(logs.AccessLog)
    for module in (
        health,
        auth,
        residents,
        orders,
        appointments,
        stats,
        events,
        terminals,
        calls,
        conversations,
        proxies,
    ):
        app.include_router(module.router)
    console.install(app)
    return app
