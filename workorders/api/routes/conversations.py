"""/conversations: every written conversation, its takeover by staff and the way back."""

from __future__ import annotations

from fastapi import APIRouter

from workorders.schemas import ErrorOut

router = APIRouter(
    prefix="/conversations",
    tags=["conversations"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
