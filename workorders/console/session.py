"""Console log-in and log-out: a form, a session cookie, a CSRF token bound to the session.

The session is an ordinary staff token (stored hashed in `ApiToken`, the same lifetime as
/auth/token's), carried in an HttpOnly, SameSite=Strict cookie, so every API route accepts it
(`security.current_caller`). Pages carry the session's CSRF token in a meta tag; scripts send
it as `X-CSRF-Token`, forms (log-out) as the field `csrf_token`.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import delete
from starlette.concurrency import run_in_threadpool

from workorders.api.routes.auth import authenticate
from workorders.console import web
from workorders.db import session_factory
from workorders.errors import ApiError
from workorders.models import ApiToken
from workorders.schemas import LoginIn
from workorders.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    caller_for_token,
    csrf_matches,
    forget_token,
    issue_token,
    session_token,
    token_hash,
)
from workorders.settings import get_settings

router = APIRouter(prefix="/console", tags=["console"])

_MAX_FORM_BYTES = 8192
_NEXT = re.compile(r"^/console/[A-Za-z0-9/_\-.?=&%]*$")


def _form_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": fields}
    if required:
        schema["required"] = required
    return {
        "requestBody": {
            "required": bool(required),
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


_HTML = {"text/html": {"schema": {"type": "string"}}}
_HTML_OR_JSON = {**_HTML, "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
_LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "Signed in: the session cookie is set, on to `next` (a console page)"},
    401: {
        "description": "Wrong user name or password, or the account is disabled",
        "content": _HTML,
    },
    403: {"description": "Posted from another site (log-in CSRF)", "content": _HTML},
    422: {"description": "User name or password missing", "content": _HTML_OR_JSON},
}
_LOGOUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "Signed out (or was not signed in): on to the log-in page"},
    403: {"description": "The session's CSRF token is missing or wrong", "content": _HTML_OR_JSON},
    422: {"description": "Unreadable request", "content": _HTML_OR_JSON},
}


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form, read by hand (no multipart parser is needed for two fields)."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return {}
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    except ValueError:
        return {}
    form = {key: values[-1] for key, values in parsed.items()}
    if any("\x00" in text for pair in form.items() for text in pair):
        return {}  # %00 passes the NUL guard (it reads raw bytes); no database stores it
    return form


def safe_next(value: str | None) -> str:
    """Back to the console page asked for, never anywhere else (no open redirect)."""
    if value and _NEXT.match(value) and ".." not in value and not value.startswith(web.LOGIN_PATH):
        return value
    return web.HOME_PATH


def _same_site(request: Request) -> bool:
    """Log-in CSRF: a form posted from another site must not sign this browser in."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    return origin is None or origin == f"{request.url.scheme}://{host}"


def login_page(
    message: str = "",
    *,
    next_path: str = "",
    username: str = "",
    status: int = 200,
    notice: bool = False,
) -> Response:
    """The form, with what went wrong (or a notice) read out by screen readers."""
    css = "form-notice" if notice else "form-error"
    error = (
        f'<p class="{css}" id="login-error" role="alert">{html.escape(message)}</p>'
        if message
        else ""
    )
    described = (
        ' aria-describedby="login-error" aria-invalid="true"' if message and not notice else ""
    )
    return web.html_page(
        web.template("login.html").substitute(
            error=error,
            next=html.escape(safe_next(next_path)),
            username=html.escape(username),
            described=described,
        ),
        status,
    )


@router.get("/login", include_in_schema=False)
async def login_form(request: Request) -> Response:
    next_path = request.query_params.get("next", "")
    if await web.viewer_of(request) is not None:
        return web.no_content_redirect(safe_next(next_path))
    notice = "您已退出登录。" if request.query_params.get("signed_out") else ""
    return login_page(notice, next_path=next_path, notice=bool(notice))


def _sign_in(body: LoginIn) -> tuple[str, timedelta]:
    ttl = timedelta(hours=get_settings().token_ttl_hours)
    with session_factory(True)() as session:
        principal = authenticate(session, body)
        token = issue_token(session, principal, ttl)
        session.commit()
    return token, ttl


def _set_session(response: Response, request: Request, token: str, ttl: timedelta) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


@router.post(
    "/login",
    status_code=303,
    summary="Console log-in form",
    response_class=RedirectResponse,
    responses=_LOGIN_RESPONSES,
    openapi_extra=_form_body(
        {
            "username": {"type": "string", "maxLength": 64},
            "password": {"type": "string", "maxLength": 200},
            "next": {"type": "string", "description": "The console page to open afterwards"},
        },
        ["username", "password"],
    ),
)
async def login(request: Request) -> Response:
    """The console's log-in form: staff accounts only, the same checks as /auth/token."""
    form = await _form(request)
    next_path = form.get("next", "")
    username = form.get("username", "")[:64]
    if not _same_site(request):
        return login_page("请从邻里助手工作台的登录页登录。", next_path=next_path, status=403)
    try:
        body = LoginIn(username=form.get("username", ""), password=form.get("password", ""))
    except ValidationError:
        return login_page(
            "请输入用户名和密码。", next_path=next_path, username=username, status=422
        )
    try:
        token, ttl = await run_in_threadpool(_sign_in, body)
    except ApiError as exc:
        return login_page(exc.message, next_path=next_path, username=username, status=exc.status)
    response = web.no_content_redirect(safe_next(next_path))
    _set_session(response, request, token, ttl)
    return response


def _revoke(token: str) -> None:
    with session_factory(True)() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash(token)))
        session.commit()
    forget_token(token)


@router.post(
    "/logout",
    status_code=303,
    summary="Console log-out",
    response_class=RedirectResponse,
    responses=_LOGOUT_RESPONSES,
    openapi_extra=_form_body({"csrf_token": {"type": "string"}}, []),
)
async def logout(request: Request) -> Response:
    """Ends the session: its token is deleted, so the cookie is worthless even if kept."""
    token = session_token(request)
    done = web.no_content_redirect(web.LOGIN_PATH + "?signed_out=1")
    _clear_session(done)
    if token is None:
        return done
    try:
        await caller_for_token(token)
    except ApiError:
        return done  # expired or already revoked: nothing left to end
    presented = request.headers.get(CSRF_HEADER) or (await _form(request)).get("csrf_token")
    if not csrf_matches(token, presented):
        error = ApiError(403, "csrf", "安全校验未通过：请刷新页面后再退出。")
        if web.is_html_client(request):
            return web.bare_page("无法退出", error.message, 403)
        raise error
    await run_in_threadpool(_revoke, token)
    return done
