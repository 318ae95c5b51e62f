"""What every console response shares: who is signed in, the layout, strict browser headers."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from workorders.contract import KIND_LABELS, STATUS_LABELS, Channel, Priority, Role, Status
from workorders.db import session_factory
from workorders.errors import ApiError
from workorders.models import Principal
from workorders.security import Caller, caller_for_token, csrf_token, session_token
from workorders.services import state_machine
from workorders.services.orders import CHANNEL_LABELS
from workorders.settings import get_settings

HERE = Path(__file__).resolve().parent
LOGIN_PATH = "/console/login"
HOME_PATH = "/console/"

# Only our own origin may load anything into a console page; no inline script at all (the page
# context is a JSON data block, which browsers do not execute).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}

ROLE_LABELS = {Role.agent: "工作人员", Role.supervisor: "主管", Role.admin: "管理员"}
PRIORITY_LABELS = {
    Priority.P0: "P0 紧急",
    Priority.P1: "P1 高",
    Priority.P2: "P2 普通",
    Priority.P3: "P3 低",
}


@dataclass(frozen=True)
class Viewer:
    """A signed-in staff member and the session the page was asked with."""

    caller: Caller
    display_name: str
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def _display_name(principal_id: int) -> str:
    with session_factory(False)() as session:
        name = session.execute(
            select(Principal.display_name).where(Principal.id == principal_id)
        ).scalar_one_or_none()
    return name or ""


async def viewer_of(request: Request) -> Viewer | None:
    """The staff member behind the session cookie; None when there is no valid session."""
    token = session_token(request)
    if token is None:
        return None
    try:
        caller = await caller_for_token(token)
    except ApiError:
        return None
    if not caller.is_staff:
        return None
    return Viewer(caller, await run_in_threadpool(_display_name, caller.id), token)


def to_login(request: Request, *, back: bool = True) -> RedirectResponse:
    """Without a session nothing is served: every console address leads here."""
    target = LOGIN_PATH
    path = request.url.path
    if back and path.startswith("/console/") and path != LOGIN_PATH:
        target += "?next=" + quote(path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


@lru_cache
def template(name: str) -> Template:
    return Template((HERE / "templates" / name).read_text(encoding="utf-8"))


def html_page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def _json_block(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no "</script>" can end it early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_context(viewer: Viewer) -> dict[str, Any]:
    """What every page script needs from the server: who, labels, the life cycle's rules."""
    caller = viewer.caller
    return {
        "me": {
            "id": caller.id,
            "username": caller.username,
            "display_name": viewer.display_name,
            "role": caller.role,
            "team": caller.team,
            "scopes": sorted(caller.scopes),
        },
        "labels": {
            "status": {s.value: label for s, label in STATUS_LABELS.items()},
            "kind": {k.value: label for k, label in KIND_LABELS.items()},
            "priority": {p.value: label for p, label in PRIORITY_LABELS.items()},
            "channel": {c.value: CHANNEL_LABELS.get(c.value, "接口") for c in Channel},
        },
        "transitions": {s.value: [t.value for t in state_machine.allowed(s)] for s in Status},
        "timezone": get_settings().timezone,
    }


@dataclass(frozen=True)
class NavItem:
    path: str
    title: str


def layout(
    viewer: Viewer,
    *,
    title: str,
    body: str,
    current: str,
    nav: list[NavItem],
    script: str | None = None,
) -> str:
    """The shared frame: skip link, nav (only what this role may open), name, 退出."""
    items = []
    for item in nav:
        here = ' aria-current="page"' if item.path == current else ""
        items.append(
            f'<li><a href="{html.escape(item.path)}"{here}>{html.escape(item.title)}</a></li>'
        )
    script_tag = f'<script type="module" src="{html.escape(script)}"></script>' if script else ""
    role = ROLE_LABELS.get(Role(viewer.caller.role), viewer.caller.role)
    return template("layout.html").substitute(
        title=html.escape(title),
        csrf=html.escape(viewer.csrf),
        context=_json_block(page_context(viewer)),
        script=script_tag,
        nav="\n".join(items),
        user=html.escape(viewer.display_name or viewer.caller.username),
        role=html.escape(role),
        body=body,
    )


def bare_page(title: str, message: str, status: int) -> HTMLResponse:
    """A page without the layout: for answers given before we know who is asking."""
    return html_page(
        template("bare.html").substitute(title=html.escape(title), body=message_body(message)),
        status,
    )


def message_body(message: str, detail: str = "") -> str:
    extra = f"<p>{html.escape(detail)}</p>" if detail else ""
    return f'<div class="notice" role="alert"><p>{html.escape(message)}</p>{extra}</div>'


def is_html_client(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def no_content_redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)
