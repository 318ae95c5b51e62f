"""会话: hand-overs waiting for a person and the conversations staff own. Claim one (one owner
at a time), read the whole conversation, reply on the resident's channel, hand it back to the
bot or close it; supervisors are alerted here about hand-overs nobody claimed."""

from __future__ import annotations

from workorders.console.pages import Page

PAGE = Page("/console/conversations", "会话", scope="conversations:read", nav_order=20)
