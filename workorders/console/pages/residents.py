"""居民: find a resident, see the profile masked; showing it in full asks why, and the API
records that purpose in the audit log. The family members acting for the elder (代办家属), with
the elder's answer staff record; the resident's orders, calls and conversations too."""

from __future__ import annotations

from workorders.console.pages import Page

PAGE = Page("/console/residents", "居民", scope="residents:read", nav_order=40)
