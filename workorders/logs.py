"""Logging that cannot leak personal numbers: one filter masks every record, whoever logs it."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs

from workorders.crypto import mask_text

log = logging.getLogger("workorders.access")


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup(level: int = logging.INFO) -> None:
    """Idempotent: worker processes call it again when they build the app."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())


# Query parameters that carry who someone is (look-ups by openid, phone, name).
_PRIVATE_PARAMS = frozenset({"value", "phone", "name"})


def _redact_query(query: str) -> str:
    parts = []
    for pair in query.split("&") if query else ():
        key, _, _value = pair.partition("=")
        parts.append(f"{key}=***" if key in _PRIVATE_PARAMS else pair)
    return "&".join(parts)


class AccessLog:
    """ASGI middleware: one line per request (method, path, query, status, duration)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            query = _redact_query(scope.get("query_string", b"").decode("latin-1"))
            # A consumer's long poll answers every few seconds, day and night: only failures
            # of it are worth a line at the default level.
            wait = parse_qs(query).get("wait_ms", ["0"])[-1]
            polling = scope["path"] == "/events" and wait not in ("", "0")
            log.log(
                logging.DEBUG if polling and status < 400 else logging.INFO,
                "%s %s%s %d %.1fms",
                scope["method"],
                scope["path"],
                f"?{query}" if query else "",
                status,
                (time.perf_counter() - started) * 1000,
            )
