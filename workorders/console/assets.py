"""The console's own files (CSS, JS modules) and vendored libraries from node_modules.

Everything comes from Linli itself (no CDN), and only to a signed-in browser: the log-in page
needs nothing but the style sheet. Libraries are installed by `make` with `npm ci` from the
committed package-lock.json; VENDOR maps the address a page uses to the installed file.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from workorders.console import pages, web
from workorders.errors import ApiError
from workorders.settings import ROOT

router = APIRouter(prefix="/console/static", include_in_schema=False)

STATIC = web.HERE / "static"
NODE_MODULES = ROOT / "node_modules"
# /console/static/vendor/<name> -> node_modules/<path>
VENDOR = {
    "chart.umd.js": "chart.js/dist/chart.umd.js",
}
# What the log-in page needs; everything else needs a session.
PUBLIC = frozenset({"console.css"})
TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*\.js$")


def resolve(path: str) -> Path | None:
    """The file behind an address, or None: nothing outside the console's folders."""
    folder, _, name = path.partition("/")
    if folder == "pages":
        return pages.script_file(name) if _NAME.match(name) else None
    if folder == "vendor":
        installed = VENDOR.get(name)
        if installed is None:
            return None
        file = NODE_MODULES / installed
        if not file.is_file():
            raise ApiError(
                503, "vendor_missing", "工作台的前端库还没有安装：请运行 make venv（npm ci）。"
            )
        return file
    file = (STATIC / path).resolve()
    if not file.is_relative_to(STATIC) or not file.is_file() or file.suffix not in TYPES:
        return None
    return file


@router.get("/{path:path}")
async def asset(path: str, request: Request) -> Response:
    if path not in PUBLIC and await web.viewer_of(request) is None:
        return web.to_login(request, back=False)
    file = resolve(path)
    if file is None:
        raise ApiError(404, "not_found", "请求的地址不存在。")
    return FileResponse(
        file,
        media_type=TYPES.get(file.suffix, "application/octet-stream"),
        headers={**web.SECURITY_HEADERS, "Cache-Control": "private, no-cache"},
    )
