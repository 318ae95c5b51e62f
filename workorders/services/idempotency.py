"""Idempotency-Key handling shared by every create that a client may retry."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from workorders.errors import ApiError
from workorders.models import IdempotencyKey
from workorders.security import Caller

_KEYS = IdempotencyKey.__table__
_CLAIM = {
    name: dialect.insert(_KEYS).on_conflict_do_nothing(index_elements=["principal_id", "key"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_BIND = (
    update(_KEYS)
    .where(_KEYS.c.principal_id == bindparam("b_principal_id"), _KEYS.c.key == bindparam("b_key"))
    .values(resource_id=bindparam("b_resource_id"))
)


def request_hash(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(session: Session, caller: Caller, key: str, resource: str, body_hash: str) -> int | None:
    """Claim `key` inside the current transaction.

    Returns None when the key is new (the caller goes on and later calls `bind`), or the id of
    the resource an earlier identical request created. One statement when the key is new:
    concurrent claims of one key serialise on the primary key (the losers' INSERT waits for
    the winner's commit, then does nothing, and the SELECT sees the winner's resource).
    """
    if not key or len(key) > 200:
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key 应为1到200个字符。")
    # Core statements on the session's connection, built once: SQLAlchemy's ORM layer for DML,
    # and building a statement per call, cost more than the statement itself.
    connection = session.connection()
    claimed = connection.execute(
        _CLAIM[connection.dialect.name],
        {
            "principal_id": caller.id,
            "key": key,
            "request_hash": body_hash,
            "resource": resource,
            "created_at": datetime.now(timezone.utc),
        },
    )
    if claimed.rowcount == 1:
        return None
    existing = session.get(IdempotencyKey, (caller.id, key), populate_existing=True)
    if existing is None:  # the winner rolled back after all; nothing to return
        raise ApiError(409, "idempotency_retry", "同一请求正在处理中，请稍后重试。")
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
    """Record what the claimed key made (an UPDATE in the same transaction as the claim)."""
    session.connection().execute(
        _BIND, {"b_principal_id": caller.id, "b_key": key, "b_resource_id": resource_id}
    )
