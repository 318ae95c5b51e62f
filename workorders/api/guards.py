"""Input no handler should ever see: NUL characters (PostgreSQL cannot store them).

A route that takes a binary body (a photo, `POST /conversations/{key}/photos`) gets its body
as sent: NUL is part of any image, and the route checks the bytes itself (type, size, magic
bytes) and stores them encrypted, never as text.
"""

from __future__ import annotations

import json
import re
from typing import Any

_BINARY_ROUTES = re.compile(rb"^/conversations/[^/]+/photos/?$")
_BODY = {"code": "invalid_request", "message": "请求中含有不允许的控制字符（NUL）。"}


class RejectNul:
    """ASGI middleware: refuse NUL in the path, query or body with the API's 422 shape."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        if b"%00" in raw or b"\x00" in raw:
            await _refuse(send)
            return
        if _BINARY_ROUTES.match(scope.get("raw_path") or b""):
            await self.app(scope, receive, send)  # streamed: the route reads at most its limit
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\x00" in body or b"\\u0000" in body:
            await _refuse(send)
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Any) -> None:
    payload = json.dumps(_BODY, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
