"""SOS follow-ups after alerts: held back while presses are answered, done exactly once, also
when the API dies between a press's alert and its follow-up, and for a burst of 50 presses.

The API is a real process (SQLite and PostgreSQL), the stream real Redis; the follow-up queue's
own rules are checked on a real `FollowUps` thread in-process.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import redis
from sqlalchemy import func, select

from tests.factories import unique_phone
from tests.support import Api, Backend
from tests.test_sos_terminal import (
    HEARTBEAT,
    POLICY,
    STREAM,
    emergencies,
    history,
    post_event,
    provision,
    sos_body,
    wait_follow_up,
)
from workorders.models import EmergencyEscalation, Terminal
from workorders.schemas import TerminalEventIn
from workorders.services import events, sweep, terminals
from workorders.services.follow_ups import FollowUps

BURST = 50


def test_follow_ups_wait_while_a_terminal_request_is_in_flight() -> None:
    queue = FollowUps(max_wait=30)
    ran: list[str] = []
    published: list[list[int]] = []
    with queue.alerting():
        queue.submit(lambda: ran.append("first") or [1], published.append)
        queue.submit(lambda: ran.append("second") or [2, 3], published.append)
        assert not queue.drain(0.3)  # a press is being answered: nothing runs
        assert ran == []
    assert queue.drain(10)
    assert ran == ["first", "second"]
    assert published == [[1, 2, 3]]  # one publication for the batch


def test_a_follow_up_runs_after_max_wait_even_while_presses_keep_coming() -> None:
    queue = FollowUps(max_wait=0.2)
    ran: list[int] = []
    with queue.alerting():
        queue.submit(lambda: ran.append(1) or [], lambda ids: None)
        assert queue.drain(10)  # not starved by requests that never stop
    assert ran == [1]


def test_a_failing_follow_up_does_not_stop_the_others() -> None:
    queue = FollowUps(max_wait=30)
    published: list[list[int]] = []

    def broken() -> list[int]:
        raise RuntimeError("database gone")

    queue.submit(broken, published.append)
    queue.submit(lambda: [7], published.append)
    assert queue.drain(10)
    assert published == [[7]]


def test_a_follow_up_cut_off_by_a_restart_is_finished_once_by_the_sweep(
    api: Api, backend: Backend
) -> None:
    """The alert was committed and announced, then the API died before the follow-up ran:
    the order without a chain is what the sweep finishes; the lost follow-up arriving late
    (another API process) and the device's resend change nothing."""
    home = provision(api)
    body = sos_body()
    with backend.session() as session:
        principal_id = session.get(Terminal, home.terminal_id).principal_id
    verified = terminals.VerifiedTerminal(home.terminal_id, principal_id, home.resident_id)
    pressed = datetime.now(timezone.utc)
    with backend.session() as session:
        result = terminals.handle(
            session,
            verified,
            TerminalEventIn.parse_raw(body),
            None,  # type: ignore[arg-type]  # an emergency books nothing
            POLICY,
            pressed,
            lambda rows: events.publish(backend.factory, [e.id for e in rows]),
        )
    assert result.status == "created" and result.follow_up is not None
    order_id = result.order_id
    with backend.session() as session:
        assert session.get(EmergencyEscalation, order_id) is None  # the crash: no follow-up
    assert history(backend, order_id, "family_notified") == []

    sweep.sweep_sos(backend.factory, POLICY, pressed + timedelta(seconds=1), HEARTBEAT)
    assert not _chain(backend, order_id)  # within the grace period the API may still do it
    repaired = sweep.sweep_sos(backend.factory, POLICY, pressed + timedelta(seconds=11), HEARTBEAT)
    events.publish(backend.factory, repaired.event_ids)
    assert _chain(backend, order_id)
    assert len(history(backend, order_id, "family_notified")) == 2
    assert len(history(backend, order_id, "callback_requested")) == 1

    assert result.follow_up() == []  # the lost follow-up, run after all: nothing to do
    again = post_event(api.base_url, home.device_id, home.secret, body)  # the device's resend
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert again.json()["order_id"] == order_id
    wait_follow_up(backend, order_id)
    sweep.sweep_sos(backend.factory, POLICY, pressed + timedelta(seconds=12), HEARTBEAT)
    assert len(history(backend, order_id, "family_notified")) == 2
    assert len(history(backend, order_id, "callback_requested")) == 1
    assert len(emergencies(backend, home.resident_id)) == 1


def test_a_burst_of_50_presses_gives_50_alerts_and_50_follow_ups_exactly_once(
    api: Api, backend: Backend, redis_client: redis.Redis
) -> None:
    contact = {"name": "王强", "relation": "儿子"}
    homes = [provision(api, contacts=[{**contact, "phone": unique_phone()}]) for _ in range(BURST)]
    start = redis_client.xrevrange(STREAM, count=1)
    after = start[0][0] if start else b"0"
    gate = threading.Barrier(BURST)
    answers: list[httpx.Response | None] = [None] * BURST

    def press(i: int) -> None:
        body = sos_body()
        gate.wait()
        answers[i] = post_event(api.base_url, homes[i].device_id, homes[i].secret, body)

    threads = [threading.Thread(target=press, args=(i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code if a else None for a in answers] == [201] * BURST
    order_ids = [a.json()["order_id"] for a in answers if a]
    assert len(set(order_ids)) == BURST
    for order_id in order_ids:
        wait_follow_up(backend, order_id)

    with backend.session() as session:
        chains = session.execute(
            select(func.count())
            .select_from(EmergencyEscalation)
            .where(EmergencyEscalation.order_id.in_(order_ids))
        ).scalar_one()
    assert chains == BURST
    for order_id in order_ids:
        assert len(history(backend, order_id, "family_notified")) == 1
        assert len(history(backend, order_id, "callback_requested")) == 1
    seen = Counter(
        (fields[b"type"].decode(), int(fields[b"order_id"]))
        for _, fields in redis_client.xrange(STREAM, min=_after(after))
        if fields[b"order_id"] and int(fields[b"order_id"]) in order_ids
    )
    for kind in ("emergency.raised", "callback.requested", "notification.requested"):
        assert [seen[kind, o] for o in order_ids] == [1] * BURST, kind


def _chain(backend: Backend, order_id: int) -> bool:
    with backend.session() as session:
        return session.get(EmergencyEscalation, order_id) is not None


def _after(stream_id: bytes) -> str:
    """The first id after `stream_id` (XRANGE's lower bound is inclusive)."""
    ms, _, seq = stream_id.decode().partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
