"""/health: is the service able to do its job (database and Redis reachable)?"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import text
from sqlalchemy.orm import Session

from workorders.db import get_read_session
from workorders.services.events import redis_client

router = APIRouter(tags=["health"])


@router.get("/health")
def health(response: Response, session: Session = Depends(get_read_session)) -> dict[str, str]:
    checks = {"status": "ok", "database": "ok", "redis": "ok"}
    try:
        session.execute(text("SELECT 1"))
    except Exception:  # any failure means "not healthy", whatever the driver raised
        checks["database"] = checks["status"] = "down"
    try:
        redis_client().ping()
    except Exception:
        # Redis down degrades events (the outbox keeps them), it does not stop the API.
        checks["redis"] = "down"
    if checks["status"] != "ok":
        response.status_code = 503
    return checks
