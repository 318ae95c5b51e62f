"""Console pages, one module each, found by name: nothing else to register.

To add a page, put three files in this folder:

- `name.py` with `PAGE = Page("/console/name", "标题", scope="…:read", nav_order=…)`;
- `name.html`, the page's main content (the shared layout adds nav, name and 退出);
- `name.js`, an ES module served as /console/static/pages/name.js (shared modules are in
  ../static/js/: api.js, live.js, context.js, format.js, dom.js).

The nav lists the pages the signed-in role may open; a page's `scope` is checked by the server
(403 without it). A `reserved` page only holds a place: a real page with the same path
replaces it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from workorders.console import web
from workorders.security import SCOPES

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Page:
    path: str
    title: str
    scope: str | None = None  # the right needed to open it; None: any staff member
    nav_order: int | None = 100  # place in the nav; None: not in the nav
    body: str = ""  # HTML file in this folder; default <module>.html
    script: str | None = ""  # JS file in this folder; default <module>.js, None: no script
    reserved: bool = False  # a placeholder for a page still to come
    name: str = ""  # the module, filled in by discovery

    def allows(self, viewer: web.Viewer) -> bool:
        return self.scope is None or viewer.caller.can(self.scope)


def _with_defaults(page: Page, module: str) -> Page:
    if page.scope is not None and page.scope not in SCOPES:
        raise ValueError(f"console page {page.path}: unknown scope {page.scope}")
    name = page.name or module
    return replace(
        page,
        name=name,
        body=page.body or f"{name}.html",
        script=f"{name}.js" if page.script == "" else page.script,
    )


@lru_cache
def discover() -> tuple[Page, ...]:
    """Every PAGE (or PAGES) of the modules here, real pages replacing reserved ones."""
    found: dict[str, Page] = {}
    for info in sorted(pkgutil.iter_modules([str(HERE)]), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        declared = getattr(module, "PAGES", None) or [getattr(module, "PAGE", None)]
        for raw in declared:
            if raw is None:
                continue
            page = _with_defaults(raw, info.name)
            earlier = found.get(page.path)
            if earlier is not None and not earlier.reserved and not page.reserved:
                raise RuntimeError(f"two console pages at {page.path}: {earlier.name}, {page.name}")
            if earlier is None or (earlier.reserved and not page.reserved):
                found[page.path] = page
    return tuple(sorted(found.values(), key=lambda p: (p.nav_order is None, p.nav_order or 0)))


def nav_for(viewer: web.Viewer) -> list[web.NavItem]:
    return [
        web.NavItem(p.path, p.title)
        for p in discover()
        if p.nav_order is not None and p.allows(viewer)
    ]


@lru_cache
def _body(page: Page) -> str:
    return (HERE / page.body).read_text(encoding="utf-8")


def script_file(name: str) -> Path | None:
    """A page's JS module, for /console/static/pages/<name>.js."""
    for page in discover():
        if page.script == name:
            return HERE / name
    return None


def render(page: Page, viewer: web.Viewer) -> Response:
    nav = nav_for(viewer)
    if not page.allows(viewer):
        body = web.message_body("您的账号没有打开此页面的权限。", "如需查看，请联系系统管理员。")
        return web.html_page(
            web.layout(viewer, title="没有权限", body=body, current=page.path, nav=nav), 403
        )
    script = f"/console/static/pages/{page.script}" if page.script else None
    return web.html_page(
        web.layout(
            viewer, title=page.title, body=_body(page), current=page.path, nav=nav, script=script
        )
    )


def _handler(page: Page) -> Callable[[Request], Awaitable[Response]]:
    async def show(request: Request) -> Response:
        viewer = await web.viewer_of(request)
        if viewer is None:
            return web.to_login(request)
        return render(page, viewer)

    show.__name__ = f"console_page_{page.name}"
    return show


def router() -> APIRouter:
    """A GET route per page, then /console and a catch-all that still needs a session."""
    pages = APIRouter(include_in_schema=False)
    for page in discover():
        pages.add_api_route(page.path, _handler(page), methods=["GET"])

    @pages.get("/console")
    async def console_root() -> Response:
        return web.no_content_redirect(web.HOME_PATH)

    @pages.get("/console/{rest:path}")
    async def not_a_page(request: Request, rest: str) -> Response:
        viewer = await web.viewer_of(request)
        if viewer is None:
            return web.to_login(request)
        body = web.message_body("没有这个页面。", "请从上方导航进入需要的页面。")
        return web.html_page(
            web.layout(viewer, title="找不到页面", body=body, current="", nav=nav_for(viewer)),
            404,
        )

    return pages
