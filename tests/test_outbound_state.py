"""Where the hotline's own calls stand (voice/outbound_state.py), on the real Redis: what one
holder wrote is what the next one reads, and a holder that lost the lease writes nothing."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest
import redis

from tests.test_hotline import own_calls_keys
from voice.outbound_state import SharedState
from workorders.redis_url import connect

ENTRY = {"item": {"id": "5-0", "type": "order.status_changed"}, "tries": 1, "due": "x"}


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    keys = own_calls_keys()
    yield keys
    redis_client.delete(f"{keys}:outbound", f"{keys}:cursor", f"{keys}:follow-ups")


def state(prefix: str, lease_seconds: float = 5.0) -> SharedState:
    return SharedState(connect(os.environ["REDIS_URL"]), prefix, lease_seconds)


async def test_the_next_holder_goes_on_from_where_the_last_one_was(prefix: str) -> None:
    first, second = state(prefix), state(prefix)
    assert await first.take() is True
    assert await second.take() is False  # one holder
    assert await first.load() == ("$", {})  # nobody handled anything yet: from now on
    first.stage_follow_up("rating:42", ENTRY)
    first.stage_follow_up("consent:7", ENTRY)
    first.stage_cursor("5-0")
    assert await first.flush() is True
    first.stage_follow_up("consent:7", None)  # done
    first.stage_cursor("6-0")
    assert await first.flush() is True
    await first.release()  # a clean stop: the lease is free at once

    assert await second.take() is True
    assert await second.load() == ("6-0", {"rating:42": ENTRY})


async def test_a_holder_whose_lease_lapsed_writes_nothing(
    prefix: str, redis_client: redis.Redis
) -> None:
    """It paused longer than the lease (or Redis failed over without its key); another host
    took over. Its late writes would move the position under the new holder: refused."""
    stale, current = state(prefix, lease_seconds=1.0), state(prefix)
    assert await stale.take() is True
    await asyncio.sleep(1.2)
    assert await current.take() is True
    current.stage_cursor("7-0")
    assert await current.flush() is True

    stale.stage_cursor("9-0")
    stale.stage_follow_up("rating:1", ENTRY)
    assert await stale.flush() is False
    assert redis_client.get(f"{prefix}:cursor") == b"7-0"
    assert redis_client.hgetall(f"{prefix}:follow-ups") == {}
    assert await stale.take() is False  # it stands by from now on
    assert stale.lease.held is False


async def test_an_unreadable_follow_up_is_dropped_and_the_rest_kept(
    prefix: str, redis_client: redis.Redis
) -> None:
    redis_client.hset(f"{prefix}:follow-ups", "rating:1", "{not json")
    redis_client.hset(f"{prefix}:follow-ups", "rating:2", json.dumps(ENTRY))
    assert await state(prefix).load() == ("$", {"rating:2": ENTRY})


async def test_with_redis_unreachable_nobody_takes_the_calls_over() -> None:
    """A host standing by cannot read where the calls stand: it keeps standing by."""
    gone = SharedState(redis.Redis(port=9, socket_connect_timeout=0.5), "linli:gone", 3.0)
    assert await gone.take() is False
