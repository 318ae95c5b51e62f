"""How to tell a caller when staff will call back, said aloud ("星期一上午八点半").

    when = say_when(hours.next_opening(now), now, hours.zone)

When staff are at work is `workorders.office_hours.OfficeHours` (the hotline takes a clock,
so tests can call "at night" without waiting for it).
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from voice.spoken import WEEKDAYS, say_time


def say_when(moment: datetime, now: datetime, zone: ZoneInfo) -> str:
    """今天下午两点 / 明天上午八点半 / 后天上午八点半 / 星期一上午八点半, as said aloud."""
    local, today = moment.astimezone(zone), now.astimezone(zone).date()
    return say_day(local.date(), today) + say_time(local.hour, local.minute)


def say_day(day: date, today: date) -> str:
    ahead = (day - today).days
    if 0 <= ahead <= 2:
        return ("今天", "明天", "后天")[ahead]
    if ahead < 7:
        return "星期" + ("天" if day.weekday() == 6 else WEEKDAYS[day.weekday()])
    return f"{day.month}月{day.day}号"
