"""When staff answer the hotline, and how to tell a caller when they will be called back.

    hours = OfficeHours.parse("mon-fri 08:30-17:30", "Asia/Shanghai")
    hours.is_open(now)                        # transfer to staff, or promise a call back
    hours.say_when(hours.next_opening(now), now)   # "星期一上午八点半", "明天上午八点半"

The hotline takes a clock (a function returning an aware datetime), so tests can call "at
night" without waiting for it. Public holidays are not known here (调休 makes them a list
that changes every year); outside office hours on a holiday the caller is promised the next
weekday, and staff see the callback order when they are back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from voice.spoken import WEEKDAYS, say_time

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

    def say_when(self, moment: datetime, now: datetime) -> str:
        """今天下午两点 / 明天上午八点半 / 后天上午八点半 / 星期一上午八点半, as said aloud."""
        local, today = moment.astimezone(self.zone), now.astimezone(self.zone).date()
        return say_day(local.date(), today) + say_time(local.hour, local.minute)


def say_day(day: date, today: date) -> str:
    ahead = (day - today).days
    if 0 <= ahead <= 2:
        return ("今天", "明天", "后天")[ahead]
    if ahead < 7:
        return "星期" + ("天" if day.weekday() == 6 else WEEKDAYS[day.weekday()])
    return f"{day.month}月{day.day}号"
