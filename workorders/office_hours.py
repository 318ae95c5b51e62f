"""When staff are at work: the hotline transfers or promises a call back by it, and an unclaimed
hand-over of a written conversation only counts its waiting time inside it.

    hours = OfficeHours.parse("mon-fri 08:30-17:30", "Asia/Shanghai")
    hours.is_open(now)          # staff answer now
    hours.next_opening(now)     # when they next start (now itself if open)

Public holidays are not known here (调休 makes them a list that changes every year); outside
office hours on a holiday the next weekday is promised, and staff see the order when back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"^\s*([a-z,\-\s]+?)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class OfficeHours:
    """Opening time and closing time on the given weekdays (0 = Monday), in `zone`."""

    opens: time = time(8, 30)
    closes: time = time(17, 30)
    days: frozenset[int] = frozenset(range(5))
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))

    def __post_init__(self) -> None:
        if not self.days or not self.opens < self.closes:
            raise ValueError("office hours need at least one day and opening before closing")

    @classmethod
    def parse(cls, spec: str, zone: str = "Asia/Shanghai") -> OfficeHours:
        """'mon-fri 08:30-17:30', 'mon,wed,sat 09:00-12:00' (ValueError when malformed)."""
        match = _SPEC.match(spec.lower())
        if not match:
            raise ValueError(f"office hours {spec!r}: expected e.g. 'mon-fri 08:30-17:30'")
        days: set[int] = set()
        for part in match[1].replace(" ", "").split(","):
            first, _, last = part.partition("-")
            if first not in DAY_NAMES or (last and last not in DAY_NAMES):
                raise ValueError(f"office hours {spec!r}: unknown day in {part!r}")
            a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
            days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
        return cls(
            opens=time(int(match[2]), int(match[3])),
            closes=time(int(match[4]), int(match[5])),
            days=frozenset(days),
            zone=ZoneInfo(zone),
        )

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        return local.weekday() in self.days and self.opens <= local.time() < self.closes

    def next_opening(self, moment: datetime) -> datetime:
        """The next moment staff start answering, after `moment` (`moment` itself if open)."""
        local = moment.astimezone(self.zone)
        if self.is_open(local):
            return local
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            start = datetime.combine(day, self.opens, self.zone)
            if day.weekday() in self.days and start > local:
                return start
        raise AssertionError("unreachable: some day of the week is open")
