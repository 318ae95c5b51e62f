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

DESCRIPTION = """
邻里助手 (Linli) work-order API: the system of record for every booking, repair, question,
complaint and emergency. Errors always have the shape `{"code": ..., "message": ...}` with a
Chinese message a person can act on. Authenticate with `Authorization: Bearer <token>`.
SOS terminals sign their events with their own secret instead (`POST /terminals/events`).
"""


async def _size_thread_pool() -> None:
    # Sync endpoints run in AnyIO's thread pool (40 by default); more threads than database
    # connections only adds waiting and context switches on two cores.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 2 * POOL_SIZE


def create_app() -> FastAPI:
    logs.setup()
    app = FastAPI(
        title="Linli work orders",
        version="1.0.0",
        description=DESCRIPTION,
        on_startup=[_size_thread_pool],
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
