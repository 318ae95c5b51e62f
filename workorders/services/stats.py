"""Work-order statistics for a period, reconstructed from the order history.

The cohort of a period [start, end) is the set of orders *created* in it. Every figure about
those orders is evaluated "as of the period end": the status an order had at an instant is the
`to_status` of its last status-changing history row (`created`, `status`, `rated`) strictly
before `end`. Later changes (a resolution next month, a reopening, a rating) therefore never
alter the statistics of a past period.

Two queries load what is needed (the cohort's plain columns, then its status rows); nothing
encrypted is read. Everything else is computed here, in Python.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic.datetime_parse import parse_datetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from workorders.contract import DONE_STATUSES, OPEN_STATUSES, Channel, Kind, Status
from workorders.errors import ApiError
from workorders.models import OrderHistory, WorkOrder

MAX_SPAN = timedelta(days=366)
# The SLA resolution clock runs only in these statuses (see services/sla.py: it pauses while
# on hold, and while resolved until a reopening).
CLOCK_RUNNING = frozenset({Status.new, Status.accepted, Status.in_progress})
PERCENTILES = (50, 90)
RATING_SCORES = ("1", "2", "3", "4", "5")


class GroupBy(str, Enum):
    none = "none"
    community = "community"
    kind = "kind"
    channel = "channel"
    day = "day"
    week = "week"
    month = "month"


TIME_BUCKETS = frozenset({GroupBy.day, GroupBy.week, GroupBy.month})


# --- the period ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# "+08:00" typed into a URL without encoding arrives as " 08:00".
_UNENCODED_PLUS = re.compile(r"^(.+[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def _zone_label(tz: ZoneInfo) -> str:
    return "北京时间" if tz.key == "Asia/Shanghai" else tz.key


def _invalid(message: str, **details: Any) -> ApiError:
    return ApiError(422, "invalid_period", message, details or None)


def parse_bound(raw: str, tz: ZoneInfo, name: str) -> datetime:
    """A date (midnight in `tz`) or a timezone-aware ISO 8601 datetime; anything else is 422."""
    text = raw.strip()
    example = (
        f"请使用日期（如 2025-03-01，按{_zone_label(tz)}零点计）"
        "或带时区的时间（如 2025-03-01T08:00:00+08:00）。"
    )
    if _DATE.fullmatch(text):
        try:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=tz)
        except ValueError:
            message = f"统计区间的 {name} 不是有效日期：“{raw}”。{example}"
            raise _invalid(message, field=name) from None
    if not _DATETIME.match(text):
        raise _invalid(f"统计区间的 {name} 无法识别：“{raw}”。{example}", field=name)
    text = _UNENCODED_PLUS.sub(r"\1+\2", text)
    try:
        value = parse_datetime(text)
    except (ValueError, TypeError, OverflowError):
        raise _invalid(f"统计区间的 {name} 无法识别：“{raw}”。{example}", field=name) from None
    if value.tzinfo is None:
        raise _invalid(
            f"统计区间的 {name} 必须带时区（如 2025-03-01T08:00:00+08:00），"
            f"或只写日期（按{_zone_label(tz)}计）。",
            field=name,
        )
    return value


def make_period(raw_from: str, raw_to: str, tz: ZoneInfo) -> Period:
    start, end = parse_bound(raw_from, tz, "from"), parse_bound(raw_to, tz, "to")
    if start >= end:
        raise _invalid(
            "统计区间的开始时间（from）必须早于结束时间（to）。区间包含开始、不包含结束，"
            "例如统计 2025 年 3 月请用 from=2025-03-01&to=2025-04-01。",
            field="from",
        )
    if end - start > MAX_SPAN:
        days = (end - start) / timedelta(days=1)
        raise _invalid(
            f"统计区间最长 {MAX_SPAN.days} 天，当前约 {days:.0f} 天，请缩短区间或分段查询。",
            field="to",
            max_days=MAX_SPAN.days,
        )
    return Period(start.astimezone(tz), end.astimezone(tz))


# --- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    count: int
    p50: float | None
    p90: float | None


@dataclass(frozen=True)
class SlaFigures:
    response_breaches: int
    resolution_breaches: int


@dataclass(frozen=True)
class Satisfaction:
    rated: int
    average: float | None
    distribution: dict[str, int]
    rating_rate: float | None


@dataclass(frozen=True)
class Figures:
    created: int
    cancelled: int
    open_at_end: int
    completed: int
    completion_rate: float | None
    reopened: int
    first_response_seconds: Durations
    awaiting_first_response: int
    resolution_seconds: Durations
    sla: SlaFigures
    satisfaction: Satisfaction


@dataclass(frozen=True)
class Group:
    key: str | None
    start: datetime | None
    end: datetime | None
    figures: Figures


@dataclass(frozen=True)
class Report:
    period: Period
    timezone: str
    group_by: GroupBy
    overall: Figures
    groups: list[Group]


def nearest_rank(sorted_values: list[float], percent: int) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `percent`% of values <= it.

    For n values sorted ascending that is the value at 1-based rank ceil(percent/100 * n).
    Always an observed value; None for no values.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, -(-percent * n // 100))
    return sorted_values[rank - 1]


def _ratio(numerator: int, denominator: int, places: str = "0.0001") -> float | None:
    if denominator == 0:
        return None
    exact = Decimal(numerator) / Decimal(denominator)
    return float(exact.quantize(Decimal(places), rounding=ROUND_HALF_UP))


def _durations(values: list[float]) -> Durations:
    ordered = sorted(values)
    p50, p90 = (nearest_rank(ordered, p) for p in PERCENTILES)
    return Durations(len(ordered), p50, p90)


@dataclass
class _Order:
    """One cohort order: its plain columns and its state reconstructed at the period end."""

    id: int
    kind: str
    channel: str
    community: str | None
    created_at: datetime
    response_breached_at: datetime | None
    resolution_breached_at: datetime | None
    rating: int | None
    rated_at: datetime | None
    status: Status = Status.new
    first_response: timedelta | None = None
    resolution: timedelta | None = None
    reopened: bool = False


@dataclass
class _Tally:
    created: int = 0
    cancelled: int = 0
    open_at_end: int = 0
    completed: int = 0
    reopened: int = 0
    awaiting: int = 0
    response_breaches: int = 0
    resolution_breaches: int = 0
    first_response: list[float] = field(default_factory=list)
    resolution: list[float] = field(default_factory=list)
    ratings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RATING_SCORES, 0))

    def add(self, order: _Order, end: datetime) -> None:
        self.created += 1
        if order.status == Status.cancelled:
            self.cancelled += 1
        elif order.status in DONE_STATUSES:
            self.completed += 1
            if order.resolution is not None:
                self.resolution.append(order.resolution.total_seconds())
        else:
            self.open_at_end += 1
        if order.reopened:
            self.reopened += 1
        if order.first_response is not None:
            self.first_response.append(order.first_response.total_seconds())
        elif order.status != Status.cancelled:
            self.awaiting += 1
        if order.response_breached_at is not None and order.response_breached_at < end:
            self.response_breaches += 1
        if order.resolution_breached_at is not None and order.resolution_breached_at < end:
            self.resolution_breaches += 1
        if order.rating is not None and order.rated_at is not None and order.rated_at < end:
            key = str(order.rating)
            self.ratings[key] = self.ratings.get(key, 0) + 1

    def figures(self) -> Figures:
        rated = sum(self.ratings.values())
        score_sum = sum(int(score) * n for score, n in self.ratings.items())
        return Figures(
            created=self.created,
            cancelled=self.cancelled,
            open_at_end=self.open_at_end,
            completed=self.completed,
            completion_rate=_ratio(self.completed, self.created - self.cancelled),
            reopened=self.reopened,
            first_response_seconds=_durations(self.first_response),
            awaiting_first_response=self.awaiting,
            resolution_seconds=_durations(self.resolution),
            sla=SlaFigures(self.response_breaches, self.resolution_breaches),
            satisfaction=Satisfaction(
                rated=rated,
                average=_ratio(score_sum, rated, "0.01"),
                distribution=dict(self.ratings),
                rating_rate=_ratio(rated, self.completed),
            ),
        )


def _status(value: str) -> Status | None:
    try:
        return Status(value)
    except ValueError:
        return None


def replay(order: _Order, rows: Iterable[tuple[datetime, str]]) -> None:
    """Reconstruct `order`'s state at the period end from its status rows, in (at, id) order.

    - status: the last row's `to_status` (`new` when there is none);
    - first response: the first change out of `new` to anything but `cancelled`;
    - reopened: some change out of `resolved` back to an open status;
    - resolution: for the last change to `resolved`, the time spent in new/accepted/in_progress
      from creation to it (the SLA clock: on-hold time and time resolved before a reopening are
      excluded).
    """
    current, since = Status.new, order.created_at
    running = timedelta(0)
    resolution: timedelta | None = None
    for at, to_status in rows:
        target = _status(to_status)
        if target is None:
            continue
        if at > since:
            if current in CLOCK_RUNNING:
                running += at - since
            since = at
        responds = current == Status.new and target not in (Status.new, Status.cancelled)
        if responds and order.first_response is None:
            order.first_response = max(at - order.created_at, timedelta(0))
        if current == Status.resolved and target in OPEN_STATUSES:
            order.reopened = True
        if target == Status.resolved:
            resolution = running
        current = target
    order.status = current
    order.resolution = resolution if current in DONE_STATUSES else None


# --- grouping -----------------------------------------------------------------------------


def _bucket_date(local: date, unit: GroupBy) -> date:
    if unit == GroupBy.week:
        return local - timedelta(days=local.weekday())
    if unit == GroupBy.month:
        return local.replace(day=1)
    return local


def _next_bucket(day: date, unit: GroupBy) -> date:
    if unit == GroupBy.day:
        return day + timedelta(days=1)
    if unit == GroupBy.week:
        return day + timedelta(days=7)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _bucket_key(day: date, unit: GroupBy) -> str:
    return f"{day:%Y-%m}" if unit == GroupBy.month else day.isoformat()


Bucket = tuple[str, datetime, datetime]


def _buckets(period: Period, unit: GroupBy, tz: ZoneInfo) -> Iterator[Bucket]:
    """Every day/week (Monday-based)/month overlapping the period, clipped to it."""
    day = _bucket_date(period.start.astimezone(tz).date(), unit)
    while True:
        lower = datetime.combine(day, time(), tzinfo=tz)
        if lower >= period.end:
            return
        following = _next_bucket(day, unit)
        upper = datetime.combine(following, time(), tzinfo=tz)
        yield _bucket_key(day, unit), max(lower, period.start), min(upper, period.end)
        day = following


def _group_key(order: _Order, unit: GroupBy, tz: ZoneInfo) -> str | None:
    if unit == GroupBy.community:
        return order.community
    if unit == GroupBy.kind:
        return order.kind
    if unit == GroupBy.channel:
        return order.channel
    return _bucket_key(_bucket_date(order.created_at.astimezone(tz).date(), unit), unit)


def _sort_key(unit: GroupBy, key: str | None) -> tuple[int, int, str]:
    known: list[str] = []
    if unit == GroupBy.kind:
        known = [k.value for k in Kind]
    elif unit == GroupBy.channel:
        known = [c.value for c in Channel]
    if key is None:
        return (2, 0, "")
    if key in known:
        return (0, known.index(key), key)
    return (1, 0, key)


# --- the computation ----------------------------------------------------------------------


def compute(
    session: Session,
    period: Period,
    tz: ZoneInfo,
    *,
    community: str | None = None,
    kind: str | None = None,
    channel: str | None = None,
    group_by: GroupBy = GroupBy.none,
) -> Report:
    cohort = [WorkOrder.created_at >= period.start, WorkOrder.created_at < period.end]
    for column, value in (
        (WorkOrder.community, community),
        (WorkOrder.kind, kind),
        (WorkOrder.channel, channel),
    ):
        if value is not None:
            cohort.append(column == str(value))

    orders: dict[int, _Order] = {}
    for row in session.execute(
        select(
            WorkOrder.id,
            WorkOrder.kind,
            WorkOrder.channel,
            WorkOrder.community,
            WorkOrder.created_at,
            WorkOrder.response_breached_at,
            WorkOrder.resolution_breached_at,
            WorkOrder.rating,
            WorkOrder.rated_at,
        ).where(*cohort)
    ):
        orders[row.id] = _Order(*row)

    history: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    if orders:
        for order_id, at, to_status in session.execute(
            select(OrderHistory.order_id, OrderHistory.at, OrderHistory.to_status)
            .join(WorkOrder, WorkOrder.id == OrderHistory.order_id)
            .where(*cohort, OrderHistory.to_status.is_not(None), OrderHistory.at < period.end)
            .order_by(OrderHistory.order_id, OrderHistory.at, OrderHistory.id)
        ):
            history[order_id].append((at, to_status))

    overall = _Tally()
    tallies: dict[str | None, _Tally] = defaultdict(_Tally)
    for order in orders.values():
        replay(order, history.get(order.id, ()))
        overall.add(order, period.end)
        if group_by != GroupBy.none:
            tallies[_group_key(order, group_by, tz)].add(order, period.end)

    groups: list[Group] = []
    if group_by in TIME_BUCKETS:
        for key, lower, upper in _buckets(period, group_by, tz):
            groups.append(Group(key, lower, upper, tallies.get(key, _Tally()).figures()))
    elif group_by != GroupBy.none:
        for key in sorted(tallies, key=lambda k: _sort_key(group_by, k)):
            groups.append(Group(key, None, None, tallies[key].figures()))
    return Report(period, tz.key, group_by, overall.figures(), groups)
