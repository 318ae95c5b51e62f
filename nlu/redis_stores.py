"""Rasa's Redis stores on Linli's REDIS_URL, and a tracker store that builds each turn's
tracker from its events once.

Both stores take the URL every other service uses (workorders/redis_url.py), so the dialogue
follows a Sentinel failover like the rest; Rasa's own stores know one host and port only.

Rasa 3.6's RedisTrackerStore rebuilds the whole conversation (every session it ever had) from
its events four times a turn: once to load it and once more to cut out the last session, then,
to save, once to read back what is stored and once to compare it with the new tracker. Each
rebuild copies every slot of the domain and replays every event, so a turn got slower the
longer a resident had talked to us (about a quarter of a turn's CPU in the Rasa process after
the action server's validation was fixed, py-spy; bench/README.md `dialogue_turns.py`).

Here the stored JSON is the same (`{"name", "events"}`, so either store reads the other's
keys): loading rebuilds the last session only, from the events after its `action_session_start`,
which is what Rasa's split gives; saving joins the events as dictionaries, as Rasa's merge
does (the stored events before the tracker's session, then the tracker's), without rebuilding
anything. Rasa's lock store still keeps one turn per conversation at a time, in every worker.
Used through bot/endpoints.yml (`type: nlu.redis_stores.RedisTrackerStore`, `RedisLockStore`).
"""

from __future__ import annotations

import json
from typing import Any

from rasa.core import lock_store, tracker_store
from rasa.core.brokers.broker import EventBroker
from rasa.shared.core.conversation import Dialogue
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from workorders.redis_url import connect

__all__ = ["RedisLockStore", "RedisTrackerStore", "last_session_start", "merge_events"]

SESSION_START = "action_session_start"
Event = dict[str, Any]


def last_session_start(events: list[Event]) -> int:
    """Where the last conversation session begins (0: the whole list)."""
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if event.get("event") == "action" and event.get("name") == SESSION_START:
            return index
    return 0


def merge_events(stored: list[Event], ours: list[Event]) -> list[Event]:
    """What Rasa's `_merge_trackers` keeps, on the serialised events: the tracker's own
    events when they hold everything stored; else the stored sessions before the tracker's
    one, then the tracker's; else (the store holds events the tracker never saw) the stored
    events and then every event of the tracker that is not among them."""
    if ours[: len(stored)] == stored:
        return ours
    start = last_session_start(stored)
    if stored[start:] == ours[: len(stored) - start]:
        return stored[:start] + ours
    seen = {json.dumps(event, sort_keys=True) for event in stored}
    return stored + [event for event in ours if json.dumps(event, sort_keys=True) not in seen]


class RedisLockStore(lock_store.RedisLockStore):
    def __init__(self, endpoint_config: EndpointConfig) -> None:
        super().__init__(key_prefix=endpoint_config.kwargs.get("key_prefix"))
        self.red = connect(
            endpoint_config.url, socket_timeout=lock_store.DEFAULT_SOCKET_TIMEOUT_IN_SECONDS
        )


class RedisTrackerStore(tracker_store.RedisTrackerStore):
    def __init__(
        self,
        domain: Domain,
        host: str,
        event_broker: EventBroker | None = None,
        record_exp: float | None = None,
        key_prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`host` is the endpoint's `url`: a Redis URL (Rasa passes it under that name)."""
        super().__init__(domain, event_broker=event_broker, record_exp=record_exp,
                         key_prefix=key_prefix, **kwargs)  # fmt: skip
        self.red = connect(host, decode_responses=True)

    def _tracker(self, sender_id: str, events: list[Event]) -> DialogueStateTracker:
        tracker = self.init_tracker(sender_id)
        tracker.recreate_from_dialogue(
            Dialogue.from_parameters({"name": sender_id, "events": events})
        )
        return tracker

    async def _retrieve(
        self, sender_id: str, fetch_all_sessions: bool
    ) -> DialogueStateTracker | None:
        stored = self.red.get(self.key_prefix + sender_id)
        if stored is None:
            return None
        events = json.loads(stored).get("events", [])
        if not fetch_all_sessions:
            events = events[last_session_start(events) :]
        return self._tracker(sender_id, events)

    async def save(self, tracker: DialogueStateTracker, timeout: float | None = None) -> None:
        await self.stream_events(tracker)  # nothing without an event broker
        key = self.key_prefix + tracker.sender_id
        dialogue = tracker.as_dialogue().as_dict()
        stored = self.red.get(key)
        if stored is not None:
            dialogue["events"] = merge_events(
                json.loads(stored).get("events", []), dialogue["events"]
            )
        self.red.set(key, json.dumps(dialogue), ex=timeout or self.record_exp or None)
