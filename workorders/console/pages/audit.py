"""审计: who read or revealed which resident's data, when and why (GET /audit), with staff
names from GET /principals; for administrators only (audit:read)."""

from __future__ import annotations

from workorders.console.pages import Page

PAGE = Page("/console/audit", "审计", scope="audit:read", nav_order=60)
