"""Idempotency-Key handling shared by every create that a client may retry."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from workorders.errors import ApiError
from workorders.models import IdempotencyKey
from workorders.security import Caller


def request_hash(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(session: Session, caller: Caller, key: str, resource: str, body_hash: str) -> int | None:
    """Claim `key` inside the current transaction.

    Returns None when the key is new (the caller goes on and later calls `bind`), or the id of
    the resource an earlier identical request created. Concurrent claims of one key serialise on
    the primary key: the losers wait for the winner's commit and then see its resource.
    """
    if not key or len(key) > 200:
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key 应为1到200个字符。")
    existing = session.get(IdempotencyKey, (caller.id, key))
    if existing is None:
        try:
            with session.begin_nested():
                session.add(
                    IdempotencyKey(
                        principal_id=caller.id, key=key, request_hash=body_hash, resource=resource
                    )
                )
            return None
        except IntegrityError:
            existing = session.get(IdempotencyKey, (caller.id, key), populate_existing=True)
            if existing is None:  # the winner rolled back; nothing to return
                raise ApiError(
                    409, "idempotency_retry", "同一请求正在处理中，请稍后重试。"
                ) from None
    if existing.request_hash != body_hash or existing.resource != resource:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "这个 Idempotency-Key 已用于内容不同的请求；请为新请求使用新的键。",
        )
    if existing.resource_id is None:
        raise ApiError(409, "idempotency_retry", "同一请求正在处理中，请稍后重试。")
    return int(existing.resource_id)


def bind(session: Session, caller: Caller, key: str, resource_id: int) -> None:
    row = session.get(IdempotencyKey, (caller.id, key))
    assert row is not None
    row.resource_id = resource_id
