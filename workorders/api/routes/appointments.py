"""/appointments: departments and free slots at the health centre (through the hospital adapter)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from workorders.api.deps import get_hospital
from workorders.errors import ApiError
from workorders.hospital.base import HospitalAdapter, HospitalUnavailable
from workorders.schemas import ErrorOut, Out
from workorders.security import Caller, require
from workorders.settings import get_settings

router = APIRouter(
    prefix="/appointments",
    tags=["appointments"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)


class SlotOut(Out):
    slot_id: str
    department: str
    start: datetime
    end: datetime
    practitioner: str | None


async def _call(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except HospitalUnavailable as exc:
        raise ApiError(503, "hospital_unavailable", "医院预约系统暂时连不上，请稍后再试。") from exc


@router.get("/departments", response_model=list[str])
async def departments(
    _caller: Caller = Depends(require("appointments")),
    hospital: HospitalAdapter = Depends(get_hospital),
) -> list[str]:
    return await _call(hospital.departments)


@router.get("/slots", response_model=list[SlotOut], responses={422: {"model": ErrorOut}})
async def free_slots(
    department: str = Query(..., min_length=1, max_length=64),
    date_from: date = Query(..., description="First day (Asia/Shanghai)"),
    days: int = Query(1, ge=1, le=31),
    limit: int = Query(20, ge=1, le=200),
    _caller: Caller = Depends(require("appointments")),
    hospital: HospitalAdapter = Depends(get_hospital),
) -> list[SlotOut]:
    """Free slots of a department from `date_from` for `days` days, earliest first."""
    if department not in await _call(hospital.departments):
        raise ApiError(422, "unknown_department", f"卫生服务中心没有“{department}”这个科室。")
    tz = ZoneInfo(get_settings().timezone)
    day = datetime.combine(date_from, time(0), tz)
    start = max(day, datetime.now(tz))  # a slot that has begun cannot be booked
    slots = await _call(hospital.free_slots, department, start, day + timedelta(days=days), limit)
    return [SlotOut(**s.__dict__) for s in slots]
