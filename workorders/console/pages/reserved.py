"""Places in the nav kept for pages still to come. A module here with a page at the same
path replaces its placeholder; the right each needs is checked already (403 without it)."""

from __future__ import annotations

from workorders.console.pages import Page


def _reserved(path: str, title: str, scope: str, nav_order: int) -> Page:
    return Page(path, title, scope, nav_order, body="reserved.html", script=None, reserved=True)


PAGES = [
    _reserved("/console/conversations", "会话", "conversations:read", 20),
    _reserved("/console/residents", "居民", "residents:read", 40),
    _reserved("/console/stats", "统计", "stats:read", 50),
    _reserved("/console/audit", "审计", "audit:read", 60),
]
