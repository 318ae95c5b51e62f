"""/stats: completion rate (办结率), response and resolution times, SLA, satisfaction."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from sqlalchemy.orm import Session

from workorders.contract import Channel, Kind
from workorders.db import get_read_session
from workorders.schemas import ErrorOut, Out
from workorders.security import Caller, require
from workorders.services import stats
from workorders.services.stats import GroupBy
from workorders.settings import get_settings

router = APIRouter(tags=["statistics"])

DESCRIPTION = """
Statistics of the work orders **created** in a period, evaluated as of the period's end, for
supervisors and administrators (`stats:read`). Only plain columns and the status history are
read; no personal data.

**Period.** `from` (inclusive) and `to` (exclusive): the period is `[from, to)`. Each is a date
(`2025-03-01`, meaning 00:00 in the service time zone, Asia/Shanghai by default) or an ISO 8601
datetime with an offset (`2025-03-01T08:00:00+08:00`; encode `+` as `%2B` in a URL). A whole month
is `from=2025-03-01&to=2025-04-01`. `from` must be before `to`, and the period may span at most
366 days; otherwise 422 with code `invalid_period`.

**Cohort.** The orders whose creation time lies in `[from, to)` and that match the optional
filters `community`, `kind` and `channel`. Orders created before `from` are never counted, even
if they are resolved within the period.

**As of the period end.** An order's status at the period end is the `to_status` of its last
status change (history rows `created`, `status`, `rated`, including the system's automatic
close) made strictly before `to`. Changes at or after `to` are ignored, so the figures of a
past period never change later. A period reaching into the future shows the current state.

**Figures** (overall, and per group):

- `created`: size of the cohort.
- `cancelled`: cohort orders cancelled at the period end.
- `completed`: cohort orders resolved or closed at the period end. An order resolved only after
  `to` counts as open; a reopened order counts by its status at the period end (reopened and
  still being worked on: not completed; reopened and resolved again: completed).
- `open_at_end`: cohort orders new, accepted, in progress or on hold at the period end.
  `created = cancelled + completed + open_at_end`.
- `completion_rate` (办结率) = `completed / (created − cancelled)`: cancelled orders are left out
  of the denominator; orders still open at the period end count as not completed. Rounded to
  4 decimals (half up); `null` when the denominator is 0.
- `reopened`: cohort orders reopened (resolved → in progress) at least once before `to`,
  whatever their status at the period end.
- `first_response_seconds`: from creation to the first response, over the cohort orders whose
  first response happened before `to`, including orders cancelled afterwards. The first
  response is the first change out of `new` to anything but `cancelled`.
- `awaiting_first_response`: cohort orders not cancelled and still without a first response at
  the period end.
- `resolution_seconds`: for the cohort orders completed at the period end, the SLA clock from
  creation to their last change to `resolved` before `to`: the time spent new, accepted or in
  progress. Time on hold and time spent resolved before a reopening are excluded.
- `{count, p50, p90}`: the number of values and their 50th and 90th percentiles in seconds, by the
  **nearest-rank** method: with the `n` values sorted ascending, the p-th percentile is the value
  at rank `ceil(p/100 × n)` (always an observed value; p50 of 1, 2, 3, 4 is 2); `null` when
  `n` is 0.
- `sla.response_breaches` / `sla.resolution_breaches`: cohort orders whose first-response or
  resolution deadline was marked breached (by the SLA sweep) before `to`, including orders
  cancelled or completed since.
- `satisfaction`: residents' 1–5 ratings given before `to` on cohort orders: `rated` (how many),
  `average` (2 decimals, half up; `null` when none), `distribution` (`"1"`…`"5"` → count) and
  `rating_rate` = `rated / completed` (4 decimals; `null` when nothing is completed).

**Groups.** `group_by` splits the cohort: `none` (no groups), `community` (orders without a
resident have community `null`, listed last), `kind`, `channel` (only values that occur, in the
contract's order), or `day` / `week` (weeks start on Monday; the key is the Monday's date) /
`month` (key `YYYY-MM`) by creation time in the service time zone (Asia/Shanghai). Time groups
list every bucket overlapping the period, empty ones included, with `start`/`end` clipped to the
period. Groups partition the cohort and are evaluated as of the same period end `to`, so their
counts add up to the overall figures.
"""


class DurationsOut(Out):
    count: int = Field(..., description="Number of values")
    p50: float | None = Field(..., description="Median in seconds (nearest rank); null when none")
    p90: float | None = Field(..., description="90th percentile in seconds (nearest rank)")


class SlaStatsOut(Out):
    response_breaches: int = Field(..., description="First-response deadline breached before `to`")
    resolution_breaches: int = Field(..., description="Resolution deadline breached before `to`")


class SatisfactionOut(Out):
    rated: int = Field(..., description="Cohort orders rated before `to`")
    average: float | None = Field(..., description="Mean score, 2 decimals; null when none")
    distribution: dict[str, int] = Field(..., description='Score "1"…"5" → number of ratings')
    rating_rate: float | None = Field(..., description="rated / completed; null when 0 completed")


class FiguresOut(Out):
    created: int = Field(..., description="Orders created in [from, to) (the cohort)")
    cancelled: int = Field(..., description="Cohort orders cancelled at the period end")
    open_at_end: int = Field(..., description="Cohort orders not resolved/closed/cancelled at `to`")
    completed: int = Field(..., description="Cohort orders resolved or closed at the period end")
    completion_rate: float | None = Field(
        ..., description="办结率 = completed / (created − cancelled); null when that is 0"
    )
    reopened: int = Field(..., description="Cohort orders reopened at least once before `to`")
    first_response_seconds: DurationsOut
    awaiting_first_response: int = Field(
        ..., description="Cohort orders not cancelled and without a first response at `to`"
    )
    resolution_seconds: DurationsOut
    sla: SlaStatsOut
    satisfaction: SatisfactionOut


class GroupOut(FiguresOut):
    key: str | None = Field(
        ..., description="community, kind, channel, day (YYYY-MM-DD), week (its Monday) or YYYY-MM"
    )
    start: datetime | None = Field(
        None, description="Time groups: bucket start, clipped to the period"
    )
    end: datetime | None = Field(None, description="Time groups: bucket end (exclusive), clipped")


class StatsOut(Out):
    from_: datetime = Field(..., alias="from", description="Period start (inclusive)")
    to: datetime = Field(..., description="Period end (exclusive); figures are as of this instant")
    timezone: str = Field(..., description="Time zone of dates and of day/week/month groups")
    group_by: GroupBy
    overall: FiguresOut
    groups: list[GroupOut]

    class Config:
        allow_population_by_field_name = True


@router.get(
    "/stats",
    response_model=StatsOut,
    response_model_by_alias=True,
    summary="Work-order statistics: 办结率, response and resolution times, SLA, ratings",
    description=DESCRIPTION,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def read_stats(
    from_: str = Query(
        ...,
        alias="from",
        max_length=64,
        description="Period start, inclusive: a date (Asia/Shanghai midnight) or an aware datetime",
    ),
    to: str = Query(
        ...,
        max_length=64,
        description="Period end, exclusive: a date (Asia/Shanghai midnight) or an aware datetime",
    ),
    community: str | None = Query(None, min_length=1, max_length=64),
    kind: Kind | None = None,
    channel: Channel | None = None,
    group_by: GroupBy = GroupBy.none,
    _caller: Caller = Depends(require("stats:read")),
    session: Session = Depends(get_read_session),
) -> StatsOut:
    tz = ZoneInfo(get_settings().timezone)
    period = stats.make_period(from_, to, tz)
    report = stats.compute(
        session, period, tz, community=community, kind=kind, channel=channel, group_by=group_by
    )
    return StatsOut(
        from_=report.period.start,
        to=report.period.end,
        timezone=report.timezone,
        group_by=report.group_by,
        overall=FiguresOut(**asdict(report.overall)),
        groups=[
            GroupOut(key=g.key, start=g.start, end=g.end, **asdict(g.figures))
            for g in report.groups
        ],
    )
