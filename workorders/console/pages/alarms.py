"""报警: the alarm board, the console's home. Open emergencies appear live, with sound, until
a person takes each one on ("我来处理")."""

from __future__ import annotations

from workorders.console.pages import Page

PAGE = Page("/console/", "报警", scope="orders:read", nav_order=10)
