"""Picking one item from a list read out to the resident: by number, by position, by time."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

_DIGITS = {
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}


def _number(text: str) -> int | None:
    match = re.search(r"第?\s*(\d{1,2})\s*(?:个|号|项)?", text)
    if match:
        return int(match[1])
    match = re.search(r"第?([一二两三四五六七八九十])(?:个|号|项)", text) or re.search(
        r"第([一二两三四五六七八九十])", text
    )
    if match:
        return _DIGITS[match[1]]
    return None


def pick(text: str, starts: Sequence[datetime]) -> int | None:
    """Index (0-based) of the item the resident means, or None when it is unclear."""
    if not starts:
        return None
    text = text.strip()
    if any(word in text for word in ("最早", "第一个", "头一个", "最前面")):
        return 0
    if any(word in text for word in ("最后", "最晚", "最末")):
        return len(starts) - 1
    number = _number(text)
    # "三点那个" names a time, not a position.
    names_a_time = re.search(r"\d+\s*点|[一二两三四五六七八九十]+点", text)
    if number is not None and 1 <= number <= len(starts) and not names_a_time:
        return number - 1
    hour_match = re.search(r"(\d{1,2}|[一二两三四五六七八九十]{1,2})\s*点(半)?", text)
    if hour_match:
        raw = hour_match[1]
        hour = int(raw) if raw.isdigit() else _chinese_hour(raw)
        minute = 30 if hour_match[2] else None
        afternoon = "下午" in text or "晚上" in text or (hour is not None and hour < 7)
        for index, start in enumerate(starts):
            local_hour = start.hour - 12 if afternoon and start.hour > 12 else start.hour
            if (
                hour is not None
                and local_hour == hour
                and (minute is None or start.minute == minute)
            ):
                return index
    if "下午" in text:
        return next((i for i, s in enumerate(starts) if s.hour >= 12), None)
    if "上午" in text:
        return next((i for i, s in enumerate(starts) if s.hour < 12), None)
    return None


def _chinese_hour(raw: str) -> int | None:
    if raw == "十":
        return 10
    if raw.startswith("十"):
        return 10 + _DIGITS[raw[1]]
    if len(raw) == 2 and raw[1] == "十":
        return _DIGITS[raw[0]] * 10
    return _DIGITS.get(raw)
