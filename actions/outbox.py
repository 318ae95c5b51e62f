"""Requests kept in Redis while the work-order API is down, replayed when it returns.

Each entry is the exact request with its idempotency key, so a replay (or two replayers, or a
replay of a request that had in fact arrived) creates the order exactly once.
`python -m actions.outbox` runs the replayer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from typing import Any

import redis.asyncio as aioredis

from actions.settings import settings
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.redis_url import connect_async


def queue() -> str:
    return f"{settings().redis_prefix}:outbox"


def done_key() -> str:
    """Hash: idempotency key -> result, for the channels to confirm to the resident."""
    return f"{settings().redis_prefix}:outbox:done"


log = logging.getLogger(__name__)


def _redis() -> aioredis.Redis:
    return connect_async(settings().redis_url)


async def keep(
    method: str,
    path: str,
    body: dict[str, Any],
    key: str,
    conversation: str,
    *,
    order_of: str | None = None,
) -> None:
    """Queue a request. `order_of`: the key of an earlier queued create whose order this
    request is about; `{order_id}` in `path` becomes that order's id when it is replayed."""
    entry = {"method": method, "path": path, "body": body, "key": key, "conversation": conversation}
    if order_of is not None:
        entry["order_of"] = order_of
    client = _redis()
    try:
        # One entry per key even if the action runs again while the API is still down.
        if await client.hsetnx(f"{queue()}:keys", key, "1"):
            await client.rpush(queue(), json.dumps(entry, ensure_ascii=False))
    finally:
        await client.close()


async def replay_once(api: WorkOrdersClient, client: aioredis.Redis) -> int:
    """Replay queued requests in order; stop at the first that cannot get through yet."""
    done = 0
    while raw := await client.lindex(queue(), 0):
        entry = json.loads(raw)
        path = entry["path"]
        order_id = None
        if entry.get("order_of"):
            created = json.loads(await client.hget(done_key(), entry["order_of"]) or "{}")
            order_id = created.get("order_id")
            path = path.format(order_id=order_id)
        try:
            if entry.get("order_of") and order_id is None:  # that order was never created
                raise ApiError(409, "order_not_created", "所属工单没有建成，这条补充无法送达。")
            result = await api.request(entry["method"], path, json=entry["body"], key=entry["key"])
            outcome = {
                "ok": True,
                "order_id": result.get("id") if isinstance(result, dict) else None,
            }
        except ApiUnavailable:
            return done
        except ApiError as exc:  # refused for good: record why, never retry forever
            outcome = {"ok": False, "code": exc.code, "message": exc.message}
        outcome["conversation"] = entry["conversation"]
        await client.hset(done_key(), entry["key"], json.dumps(outcome, ensure_ascii=False))
        await client.lpop(queue())
        await client.hdel(f"{queue()}:keys", entry["key"])
        done += 1
    return done


async def run(interval: float = 2.0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    api = WorkOrdersClient(settings().api_url, settings().api_token)
    client = _redis()
    log.info("outbox replayer: every %.1f s", interval)
    while not stop.is_set():
        try:
            replayed = await replay_once(api, client)
            if replayed:
                log.info("outbox: replayed %d requests", replayed)
        except Exception:  # Redis hiccup: try again next round
            log.exception("outbox replay failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    await api.aclose()
    await client.close()


if __name__ == "__main__":
    from workorders import logs

    logs.setup()
    asyncio.run(run())
