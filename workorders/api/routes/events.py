"""/events: the work-order event stream for staff consoles (resume from the last id seen)."""

from __future__ import annotations

import json

import redis
from fastapi import APIRouter, Depends, Query

from workorders.errors import ApiError
from workorders.schemas import ErrorOut, EventOut, EventPage
from workorders.security import Caller, require
from workorders.services import events

router = APIRouter(tags=["events"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


@router.get("/events", response_model=EventPage, responses={503: {"model": ErrorOut}})
async def read_events(
    after: str = Query(
        "0",
        regex=r"^(0|\$|\d{1,20}-\d{1,20})$",
        description='Last stream id seen; "$": only events from now on (`last_id` says where)',
    ),
    limit: int = Query(100, ge=1, le=1000),
    wait_ms: int = Query(0, ge=0, le=30_000, description="Long-poll this long when nothing is new"),
    _caller: Caller = Depends(require("events:read")),
) -> EventPage:
    try:
        if after == "$":  # "from now on" as a concrete id, so nothing between polls is lost
            after = await events.last_id()
        entries = await events.read(after, limit, wait_ms or None)
    except redis.RedisError as exc:
        raise ApiError(503, "events_unavailable", "事件服务暂时不可用，请稍后再试。") from exc
    items = [
        EventOut(
            id=entry_id,
            type=fields["type"],
            order_id=int(fields["order_id"]) if fields.get("order_id") else None,
            data={
                **json.loads(fields["data"]),
                "event_id": int(fields["event_id"]),
                "at": fields["at"],
            },
        )
        for entry_id, fields in entries
    ]
    return EventPage(items=items, last_id=items[-1].id if items else after)
