"""Small builders for request bodies, so tests say only what matters to them."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

_phones = itertools.count(10_000_000)


def unique_phone() -> str:
    """A valid, never-repeated mobile number (139 + 8 digits)."""
    return f"139{next(_phones) + int(uuid.uuid4().int % 80_000_000):08d}"[:11]


def resident_body(community: str = "阳光社区", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "王秀英",
        "phone": unique_phone(),
        "community": community,
        "address": {"building": "3", "unit": "2", "room": "502"},
        "birth_year": 1945,
        "service_notes": {
            "mobility": "拄拐杖",
            "hearing": "左耳听力弱",
            "chronic_illness": "高血压",
        },
        "contacts": [{"name": "王强", "relation": "儿子", "phone": unique_phone()}],
    }
    body.update(overrides)
    return body


def repair_body(resident_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "repair",
        "channel": "wechat",
        "resident_id": resident_id,
        "details": {"category": "水管", "location": "home", "description": "厨房水管漏水了"},
    }
    body.update(overrides)
    return body
