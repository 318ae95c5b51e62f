"""nlu/redis_stores.py against Rasa's own RedisTrackerStore, on real Redis and the project's
domain: the same trackers loaded, the same JSON stored, each reading the other's keys."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rasa.core import tracker_store as rasa_stores
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from nlu.redis_stores import RedisTrackerStore, merge_events

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = Domain.load(str(ROOT / "bot" / "domain.yml"))


@pytest.fixture
def stores(
    redis_client: redis.Redis,
) -> Iterator[tuple[RedisTrackerStore, rasa_stores.RedisTrackerStore]]:
    settings = redis_client.connection_pool.connection_kwargs
    prefix = f"linlitest{uuid.uuid4().hex[:8]}"
    kwargs = {"host": settings["host"], "port": settings["port"], "db": settings.get("db", 0)}
    url = "redis://{host}:{port}/{db}".format(**kwargs)
    ours = RedisTrackerStore(DOMAIN, host=url, key_prefix=prefix, record_exp=600)
    theirs = rasa_stores.RedisTrackerStore(DOMAIN, key_prefix=prefix, record_exp=600, **kwargs)
    yield ours, theirs
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


def session(tracker: DialogueStateTracker, start: float, words: str) -> None:
    """A session as Rasa writes one: its start, a message, a slot and an answer."""
    for event in (
        ActionExecuted("action_session_start", timestamp=start),
        SessionStarted(timestamp=start + 0.1),
        ActionExecuted("action_listen", timestamp=start + 0.2),
        UserUttered(words, {"name": "greet", "confidence": 0.9}, timestamp=start + 1),
        SlotSet("requested_slot", None, timestamp=start + 1.5),
        BotUttered("您好", timestamp=start + 2),
        ActionExecuted("action_listen", timestamp=start + 3),
    ):
        tracker.update(event)


def stored(store: rasa_stores.RedisTrackerStore, sender: str) -> dict:
    return json.loads(store.red.get(store.key_prefix + sender))


def test_loads_the_last_session_and_saves_what_rasa_saves(
    stores: tuple[RedisTrackerStore, rasa_stores.RedisTrackerStore],
) -> None:
    ours, theirs = stores

    async def run() -> None:
        for store, sender in ((ours, "a"), (theirs, "b")):
            tracker = DialogueStateTracker(sender, DOMAIN.slots)
            session(tracker, 1000.0, "你好")
            session(tracker, 5000.0, "又是我")
            await store.save(tracker)
            # a turn: the last session loaded, one message and an answer more, saved
            loaded = await store.retrieve(sender)
            assert loaded is not None
            loaded.update(
                UserUttered("谢谢", {"name": "thank", "confidence": 1.0}, timestamp=6000.0)
            )
            loaded.update(ActionExecuted("action_listen", timestamp=6001.0))
            await store.save(loaded)
        ours_a, theirs_b = stored(ours, "a"), stored(theirs, "b")
        assert ours_a["events"] == theirs_b["events"]
        assert len(ours_a["events"]) == 16
        for sender in ("a", "b"):
            mine, rasas = await ours.retrieve(sender), await theirs.retrieve(sender)
            assert mine is not None and rasas is not None
            assert [e.as_dict() for e in mine.events] == [e.as_dict() for e in rasas.events]
            assert mine.current_state() == rasas.current_state()
            full = await ours.retrieve_full_tracker(sender)
            assert full is not None and len(full.events) == 16

    asyncio.run(run())


def test_merge_keeps_stored_events_the_tracker_never_saw() -> None:
    a, b, c = ({"event": "bot", "text": t, "timestamp": n} for n, t in enumerate("abc"))
    start = {"event": "action", "name": "action_session_start", "timestamp": 10}
    assert merge_events([a, b], [a, b, c]) == [a, b, c]
    assert merge_events([a, start, b], [start, b, c]) == [a, start, b, c]
    assert merge_events([a, c], [a, b]) == [a, c, b]
    assert merge_events([], [a]) == [a]
