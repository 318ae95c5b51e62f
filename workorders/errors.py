"""One error shape for every failure: a machine code and a Chinese message a person can act on."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"找不到编号为 {ident} 的{_NOUNS.get(what, what)}。")


_NOUNS = {"order": "工单", "resident": "居民", "principal": "账号", "slot": "号源"}

_HTTP_CODES = {
    401: ("unauthorized", "请先登录：缺少或无效的访问令牌。"),
    403: ("forbidden", "您的账号没有执行此操作的权限。"),
    404: ("not_found", "请求的地址不存在。"),
    405: ("method_not_allowed", "该地址不支持此请求方法。"),
}


def _body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return body


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path", "header"))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e["loc"])) or "body", "problem": e["msg"]}
            for e in exc.errors()
        ]
        fields = "、".join(sorted({e["field"] for e in errors}))
        return JSONResponse(
            _body(
                "invalid_request", f"请求内容有误，请检查这些字段：{fields}。", {"errors": errors}
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not even parse: same as invalid content
            return JSONResponse(
                _body("invalid_request", "请求内容无法解析，请发送 UTF-8 编码的 JSON。"),
                status_code=422,
            )
        code, message = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
        return JSONResponse(_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # Lone surrogates (a JSON "\\ud800" escape) are not text any database can store.
        return JSONResponse(_body("invalid_request", "请求中含有无效的字符编码。"), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", type(exc).__name__)
        return JSONResponse(
            _body("internal_error", "系统出了点问题，请稍后再试。"), status_code=500
        )
