"""The staff console: pages and assets served by the API at /console/ (same origin).

Pages live in `pages/` (one module, HTML body and JS module each); log-in and the session
cookie in `session.py`; files in `assets.py`. See workorders/README.md, "Staff console".
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the console's pages and assets on the API application."""
    from workorders.console import assets, pages, session

    app.include_router(session.router)
    app.include_router(assets.router)
    app.include_router(pages.router())  # last: it ends with a catch-all under /console/
