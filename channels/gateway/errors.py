"""Every refusal as {"code", "message", "details"}: a machine code and Chinese a resident can
act on, the same shape as the work-order API's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from channels.gateway.service import GatewayError

# The first field at fault decides what the resident is told.
FIELD_MESSAGES = {
    "text": "请写下要说的话。",
    "secret": "这个页面的身份标识不对，请刷新页面再试。",
    "client_id": "消息编号不对，请刷新页面再试。",
    "conversation": "会话编号不对（字母、数字和 _.:@- ，最长100个字符，不能以 web- 开头）。",
    "service": "没有这项服务。",
    "id": "回复编号不对。",
}
TOO_LONG = "这条消息太长了，请分几次发，每次最多2000个字。"


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details}


def _message(errors: list[dict[str, Any]]) -> str:
    for error in errors:
        field = next((str(p) for p in reversed(error.get("loc", ())) if isinstance(p, str)), "")
        if field == "text" and str(error.get("type", "")).endswith("max_length"):
            return TOO_LONG
        if field in FIELD_MESSAGES:
            return FIELD_MESSAGES[field]
    return "请求内容有误。"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return JSONResponse(
            body("invalid_request", _message(errors), {"errors": errors}), status_code=422
        )

    @app.exception_handler(GatewayError)
    async def refused(request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message), status_code=exc.status)
