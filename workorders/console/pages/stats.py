"""统计: GET /stats as charts, each with its data table beside it (the table is what screen
readers and keyboards use), the formulas in Chinese, drill-down to the orders, CSV export."""

from __future__ import annotations

from workorders.console.pages import Page

PAGE = Page("/console/stats", "统计", scope="stats:read", nav_order=50)
