"""工单: the work queue. Filters, SLA countdowns, every action of the life cycle, the history;
live from the event stream."""

from __future__ import annotations

from workorders.console.pages import Page

PAGE = Page("/console/orders", "工单", scope="orders:read", nav_order=30)
