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


def unique_id_number() -> str:
    """A never-repeated 18-digit ID number with a valid check digit (invented)."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    base = f"11010119450101{uuid.uuid4().int % 1000:03d}"[:14] + f"{uuid.uuid4().int % 1000:03d}"
    return base + "10X98765432"[sum(int(d) * w for d, w in zip(base, weights, strict=True)) % 11]
