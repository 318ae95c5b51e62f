"""The one-button SOS terminal end to end: mock GPIO pins with real timing, the device's real
queue and sender, the API as a real process (SQLite and PostgreSQL), real Redis.

The escalation chain and the silence check run the scheduler's sweep in-process with a
controllable clock, as the SLA tests do.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from gpiozero.pins.mock import MockFactory
from sqlalchemy import func, select, text

from channels.sos_terminal.audio import CONFIRM_TONE, RecordingSink
from channels.sos_terminal.device import SPEECH, DeviceConfig, SosTerminal
from channels.sos_terminal.queue import Backoff, EventQueue, event_body
from channels.sos_terminal.signing import Credentials, Signer
from channels.sos_terminal.transport import Transport
from tests.factories import resident_body, unique_phone
from tests.servers import free_port
from tests.support import ROOT, Api, ApiProcess, Backend, hotline_token, seed_principals
from workorders import signing
from workorders.contract import SosTrigger
from workorders.models import EmergencyEscalation, Event, OrderHistory, Terminal, WorkOrder
from workorders.services import events, sweep
from workorders.services.sla import load_policy
from workorders.settings import get_settings

POLICY = load_policy(ROOT / "data" / "sla.json")
STREAM = get_settings().event_stream
HEARTBEAT = timedelta(minutes=5)
S = timedelta(seconds=1)
FAST = Backoff(base=0.05, maximum=0.3, rejected=0.5)
# Real hold time (2 s, as on the device); shorter timers elsewhere keep the suite quick.
CONFIG = DeviceConfig(
    bounce_seconds=None, press_gap=0.4, unconfirmed_warning_seconds=30, heartbeat_seconds=3600
)


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Home:
    """A resident with a provisioned terminal."""

    resident: dict[str, Any]
    terminal_id: int
    device_id: str
    secret: str

    @property
    def resident_id(self) -> int:
        return int(self.resident["id"])

    @property
    def community(self) -> str:
        return str(self.resident["community"])

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.device_id, self.secret)


def provision(api: Api, contacts: list[dict[str, Any]] | None = None) -> Home:
    body = resident_body(
        community=f"终端社区{uuid.uuid4().hex[:6]}",
        address={"building": "5", "unit": "1", "room": "302"},
        service_notes={"mobility": "行动不便", "chronic_illness": "冠心病，服用硝酸甘油"},
        contacts=contacts
        if contacts is not None
        else [
            {"name": "李明", "relation": "儿子", "phone": unique_phone()},
            {"name": "李芳", "relation": "女儿", "phone": unique_phone()},
        ],
    )
    resident = api.call("bot", "POST", "/residents", json=body)
    assert resident.status_code == 201, resident.text
    device_id = f"sos-{uuid.uuid4().hex[:10]}"
    made = api.call(
        "agent",
        "POST",
        "/terminals",
        json={"device_id": device_id, "resident_id": resident.json()["id"]},
    )
    assert made.status_code == 201, made.text
    return Home(resident.json(), made.json()["id"], device_id, made.json()["secret"])


def post_event(
    base_url: str,
    device_id: str,
    secret: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    signed = signing.signed_headers(secret, device_id, body, timestamp=timestamp, nonce=nonce)
    signed.update(headers or {})
    return httpx.post(
        f"{base_url}{signing.EVENTS_PATH}",
        content=body,
        headers={"Content-Type": "application/json", **signed},
        timeout=30,
    )


def sos_body(trigger: str = "hold", **kwargs: Any) -> bytes:
    return event_body("sos", datetime.now(timezone.utc), trigger=trigger, **kwargs)[1]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def emergencies(backend: Backend, resident_id: int) -> list[WorkOrder]:
    with backend.session() as session:
        return list(
            session.execute(
                select(WorkOrder)
                .where(WorkOrder.resident_id == resident_id, WorkOrder.kind == "emergency")
                .order_by(WorkOrder.id)
            ).scalars()
        )


def wait_follow_up(backend: Backend, order_id: int) -> None:
    """The SOS follow-up (family, callback, chain) runs right after the answer: wait for it,
    committed and published."""

    def done() -> bool:
        with backend.session() as session:
            started = session.get(EmergencyEscalation, order_id) is not None
            unpublished = session.execute(
                select(func.count())
                .select_from(Event)
                .where(Event.order_id == order_id, Event.published_at.is_(None))
            ).scalar_one()
        return started and unpublished == 0

    wait_for(done, 10, "the SOS follow-up")


def history(backend: Backend, order_id: int, action: str | None = None) -> list[OrderHistory]:
    with backend.session() as session:
        query = select(OrderHistory).where(OrderHistory.order_id == order_id)
        if action is not None:
            query = query.where(OrderHistory.action == action)
        return list(session.execute(query.order_by(OrderHistory.id)).scalars())


def stream_events(
    client: redis.Redis, home: Home, order_id: int
) -> list[tuple[str, dict[str, Any]]]:
    """Events of one order. Both backends share the stream and number orders alike, so the
    home's community (unique per test) tells them apart."""
    out = []
    for _, fields in client.xrange(STREAM):
        data = json.loads(fields[b"data"])
        if fields[b"order_id"] == str(order_id).encode() and data["community"] == home.community:
            out.append((fields[b"type"].decode(), data))
    return out


@dataclass
class Device:
    terminal: SosTerminal
    pins: MockFactory
    sink: RecordingSink
    said: list[str] = field(default_factory=list)
    talks: list[float] = field(default_factory=list)

    def press(self, seconds: float = 0.1) -> None:
        pin = self.pins.pin(CONFIG.button_pin)
        pin.drive_low()
        time.sleep(seconds)
        pin.drive_high()

    def hold(self) -> None:
        self.press(CONFIG.hold_seconds + 0.3)  # really held past 2 s

    def triple(self) -> None:
        for _ in range(3):
            self.press(0.08)
            time.sleep(0.12)

    def wait_confirmed(self, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.terminal.confirmed) >= count, timeout, "confirmation")
        self.terminal.audio.flush()
        return [body for _, body in self.terminal.confirmed]

    @property
    def led_on(self) -> bool:
        return bool(self.pins.pin(CONFIG.led_pin).state)


@pytest.fixture
def make_device(tmp_path: Path) -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(
        base_url: str,
        home: Home,
        *,
        queue_path: Path | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] | None = None,
        start: bool = True,
    ) -> Device:
        pins = MockFactory()
        sink = RecordingSink()
        device = Device(None, pins, sink)  # type: ignore[arg-type]
        device.terminal = SosTerminal(
            CONFIG,
            EventQueue(queue_path or tmp_path / f"{uuid.uuid4().hex}.db"),
            Transport(base_url, Signer(home.credentials), client=client),
            pin_factory=pins,
            sink=sink,
            speak=device.said.append,
            on_talk=lambda: device.talks.append(time.monotonic()),
            clock=clock,
            backoff=FAST,
        )
        if start:
            device.terminal.start(heartbeat=False, reminders=False)
        made.append(device)
        return device

    yield make
    for device in made:
        device.terminal.close()


# --- SOS ------------------------------------------------------------------------------------


def test_hold_makes_a_p0_emergency_with_address_and_health_notes_and_alerts_staff(
    api: Api, backend: Backend, make_device: Callable[..., Device], redis_client: redis.Redis
) -> None:
    home = provision(api)
    device = make_device(api.base_url, home)
    started = time.monotonic()
    device.hold()
    [answer] = device.wait_confirmed()
    assert answer["status"] == "created"
    assert time.monotonic() - started < CONFIG.hold_seconds + 5

    wait_follow_up(backend, answer["order_id"])
    order = api.call("bot", "GET", f"/work-orders/{answer['order_id']}").json()
    assert (order["kind"], order["priority"], order["channel"], order["status"]) == (
        "emergency",
        "P0",
        "terminal",
        "new",
    )
    assert order["resident_id"] == home.resident_id
    assert order["details"]["address"] == {"building": "5", "unit": "1", "room": "302"}
    assert order["details"]["service_notes"]["chronic_illness"] == "冠心病，服用硝酸甘油"
    assert "长按求助键" in order["details"]["description"]
    assert order["sla"]["response_due_at"]  # the ordinary P0 SLA: a person within 60 s
    actions = [h["action"] for h in order["history"]]
    assert actions.count("family_notified") == 2
    assert "callback_requested" in actions

    # Staff alert on the stream, and one notification request per family contact.
    seen = stream_events(redis_client, home, order["id"])
    types = [t for t, _ in seen]
    assert types[:2] == ["order.created", "emergency.raised"]
    assert dict(seen)["emergency.raised"]["to_role"] == "agent"
    notified = [d for t, d in seen if t == "notification.requested"]
    contact_ids = [c["id"] for c in home.resident["contacts"]]
    assert [(d["contact_id"], d["purpose"]) for d in notified] == [
        (contact_ids[0], "sos"),
        (contact_ids[1], "sos"),
    ]
    assert ("callback.requested", home.terminal_id) in [(t, d.get("terminal_id")) for t, d in seen]
    assert all("phone" not in d and "address" not in d for _, d in seen)  # no personal data

    # The resident hears and sees it: distinct chime, steady light, the server's message.
    assert (CONFIRM_TONE, 16000) in device.sink.played
    assert device.terminal.light == "confirmed" and device.led_on
    assert device.said[-1] == answer["message"]
    assert device.talks == []
    assert device.terminal.queue.depth() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_short_press_talks_and_three_quick_presses_are_sos(
    api: Api, backend: Backend, make_device: Callable[..., Device]
) -> None:
    home = provision(api)
    device = make_device(api.base_url, home)
    device.press(0.15)
    wait_for(lambda: device.talks, 3, "talk hook")
    time.sleep(CONFIG.press_gap + 0.2)
    assert len(device.talks) == 1
    assert device.terminal.queue.depth() == 0 and device.terminal.confirmed == []
    assert emergencies(backend, home.resident_id) == []

    device.triple()
    [answer] = device.wait_confirmed()
    assert answer["status"] == "created"
    [order] = emergencies(backend, home.resident_id)
    assert "连按三次求助键" in order.details["description"]
    assert len(device.talks) == 1  # the three presses were not taken as talk


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_two_presses_spread_out_are_not_sos(
    api: Api, backend: Backend, make_device: Callable[..., Device]
) -> None:
    home = provision(api)
    device = make_device(api.base_url, home)
    for _ in range(3):  # three presses, but too slow to be the SOS pattern
        device.press(0.08)
        time.sleep(CONFIG.press_gap + 0.3)
    assert len(device.talks) == 3
    assert device.terminal.queue.depth() == 0
    assert emergencies(backend, home.resident_id) == []


def test_repeated_presses_join_the_one_open_emergency(
    api: Api, backend: Backend, make_device: Callable[..., Device], redis_client: redis.Redis
) -> None:
    home = provision(api)
    device = make_device(api.base_url, home)
    device.hold()
    device.wait_confirmed(1)
    device.triple()
    device.wait_confirmed(2)
    device.triple()
    answers = device.wait_confirmed(3)
    assert [a["status"] for a in answers] == ["created", "joined", "joined"]
    [order] = emergencies(backend, home.resident_id)
    assert {a["order_id"] for a in answers} == {order.id}
    joins = history(backend, order.id, "sos_repeated")
    assert len(joins) == 2 and all(h.reason.startswith("再次按下求助键") for h in joins)
    wait_follow_up(backend, order.id)
    assert [t for t, _ in stream_events(redis_client, home, order.id)].count(
        "emergency.repeated"
    ) == 2
    assert len(history(backend, order.id, "family_notified")) == 2  # the family told once

    # Once that emergency is over, a new press is a new emergency.
    for target in ("accepted", "resolved"):
        moved = api.call(
            "agent", "POST", f"/work-orders/{order.id}/transitions", json={"to": target}
        )
        assert moved.status_code == 200, moved.text
    again = post_event(api.base_url, home.device_id, home.secret, sos_body())
    assert again.status_code == 201 and again.json()["status"] == "created"
    assert len(emergencies(backend, home.resident_id)) == 2


def test_simultaneous_presses_from_two_terminals_make_one_emergency(
    api: Api, backend: Backend
) -> None:
    """Two terminals of one resident (bedroom, bathroom), ten events at the same moment."""
    home = provision(api)
    second = f"sos-{uuid.uuid4().hex[:10]}"
    made = api.call(
        "agent", "POST", "/terminals", json={"device_id": second, "resident_id": home.resident_id}
    )
    assert made.status_code == 201, made.text
    devices = [(home.device_id, home.secret), (second, made.json()["secret"])]

    def send(i: int) -> httpx.Response:
        device_id, secret = devices[i % 2]
        return post_event(api.base_url, device_id, secret, sos_body("triple"))

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, range(10)))
    assert all(a.status_code in (200, 201) for a in answers), [
        a.text for a in answers if a.status_code not in (200, 201)
    ]
    assert sorted(a.json()["status"] for a in answers) == ["created"] + ["joined"] * 9
    [order] = emergencies(backend, home.resident_id)
    assert {a.json()["order_id"] for a in answers} == {order.id}
    assert len(history(backend, order.id, "sos_repeated")) == 9


# --- nothing is lost, nothing happens twice ---------------------------------------------------


@pytest.fixture
def own_api(backend: Backend, fhir_url: str) -> Iterator[Api]:
    """An API process of this test's own, to stop and restart at will."""
    process = ApiProcess(backend.url, fhir_url, seed_principals(backend, uuid.uuid4().hex[:6]))
    process.start()
    try:
        yield Api(process)
    finally:
        process.stop()


def test_press_while_the_server_is_down_is_delivered_exactly_once_after_restart(
    own_api: Api, backend: Backend, make_device: Callable[..., Device]
) -> None:
    home = provision(own_api)
    device = make_device(own_api.base_url, home)
    own_api.process.stop()
    device.hold()
    wait_for(lambda: device.terminal.queue.depth() == 1, 5, "queued on disk")
    time.sleep(1.0)  # several failed attempts meanwhile
    [entry] = device.terminal.queue.pending()
    assert entry.attempts >= 1
    assert device.terminal.light == "sending" and device.terminal.confirmed == []
    assert emergencies(backend, home.resident_id) == []
    # On disk, not just in memory: another connection sees it.
    with closing(sqlite3.connect(device.terminal.queue.path)) as raw:
        assert raw.execute("SELECT event_id FROM outbox").fetchall() == [(entry.event_id,)]

    own_api.process.start()  # same address
    [answer] = device.wait_confirmed(timeout=30)
    assert answer["status"] == "created"
    [order] = emergencies(backend, home.resident_id)
    assert answer["order_id"] == order.id
    assert device.terminal.queue.depth() == 0
    assert device.terminal.light == "confirmed"
    time.sleep(0.5)  # nothing else arrives
    assert len(emergencies(backend, home.resident_id)) == 1
    assert history(backend, order.id, "sos_repeated") == []


def test_lost_confirmation_is_retried_and_acted_on_once(
    api: Api, backend: Backend, make_device: Callable[..., Device]
) -> None:
    """The server made the order but its answer never reached the device (network cut)."""
    dropped: list[int] = []

    def drop_first_answer(response: httpx.Response) -> None:
        if not dropped:
            dropped.append(response.status_code)
            raise httpx.ReadError("connection reset after the server answered")

    home = provision(api)
    client = httpx.Client(timeout=5, event_hooks={"response": [drop_first_answer]})
    device = make_device(api.base_url, home, client=client)
    device.terminal.raise_sos(SosTrigger.hold)
    [answer] = device.wait_confirmed()
    assert dropped == [201]
    assert answer["status"] == "duplicate"  # recognised by its event id
    [order] = emergencies(backend, home.resident_id)
    assert answer["order_id"] == order.id
    assert history(backend, order.id, "sos_repeated") == []
    wait_follow_up(backend, order.id)
    assert len(history(backend, order.id, "family_notified")) == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_device_killed_with_a_queued_sos_delivers_it_after_restart(
    api: Api, backend: Backend, make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """The simulator (a real process) queues an SOS while offline and is killed -9."""
    home = provision(api)
    state = tmp_path / "device"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "channels.sos_terminal",
            "--simulate",
            "--no-heartbeat",
            "--api",
            f"http://127.0.0.1:{free_port()}",  # nothing listens: offline
            "--device-id",
            home.device_id,
            "--state-dir",
            str(state),
        ],
        cwd=ROOT,
        env={**os.environ, "LINLI_TERMINAL_SECRET": home.secret, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    queue_file = state / f"{home.device_id}.queue.db"

    def queued() -> int:
        if not queue_file.exists():
            return 0
        with closing(sqlite3.connect(queue_file)) as raw:
            try:
                return int(raw.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    try:
        assert simulator.stdin is not None
        simulator.stdin.write(b"s\n")  # three quick presses
        simulator.stdin.flush()
        wait_for(lambda: queued() == 1, 20, "the simulator's queue")
    finally:
        simulator.kill()
        output = simulator.communicate(timeout=10)[0].decode()
    assert "连按三次" in output and "长按 2 秒" in output  # it told the person what to do
    assert emergencies(backend, home.resident_id) == []

    device = make_device(api.base_url, home, queue_path=queue_file)
    [answer] = device.wait_confirmed()
    assert answer["status"] == "created"
    [order] = emergencies(backend, home.resident_id)
    assert "连按三次求助键" in order.details["description"]
    assert queued() == 0


# --- refused requests -------------------------------------------------------------------------


def test_forged_wrong_key_stale_and_replayed_events_are_refused(api: Api, backend: Backend) -> None:
    home = provision(api)
    other = provision(api)
    url, body = api.base_url, sos_body()

    def refused(response: httpx.Response, status: int, code: str) -> None:
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
        assert response.json()["message"]  # a sentence a person can act on

    unsigned = httpx.post(f"{url}{signing.EVENTS_PATH}", content=body, timeout=10)
    refused(unsigned, 401, "signature_missing")
    forged = {signing.HEADER_SIGNATURE: "0" * 64}
    refused(
        post_event(url, home.device_id, home.secret, body, headers=forged), 401, "bad_signature"
    )
    refused(post_event(url, home.device_id, other.secret, body), 401, "bad_signature")  # wrong key
    refused(post_event(url, "sos-nobody", home.secret, body), 401, "terminal_unknown")
    tampered = signing.signed_headers(home.secret, home.device_id, body)
    changed = body.replace(b'"hold"', b'"triple"')
    response = httpx.post(
        f"{url}{signing.EVENTS_PATH}",
        content=changed,
        headers={"Content-Type": "application/json", **tampered},
    )
    refused(response, 401, "bad_signature")
    now = int(time.time())
    for skewed in (now - 400, now + 400):
        stale = post_event(url, home.device_id, home.secret, body, timestamp=skewed)
        refused(stale, 401, "stale_timestamp")
        assert abs(stale.json()["details"]["server_timestamp"] - now) <= 5
    assert emergencies(backend, home.resident_id) == []

    # A genuine request, then the very same bytes again (a replay): refused by its nonce.
    nonce = signing.new_nonce()
    first = post_event(url, home.device_id, home.secret, body, timestamp=now, nonce=nonce)
    assert first.status_code == 201, first.text
    replay = post_event(url, home.device_id, home.secret, body, timestamp=now, nonce=nonce)
    refused(replay, 409, "replayed")
    # The same event id with different content is not a retry.
    event_id = json.loads(body)["event_id"]
    reused = sos_body("triple", event_id=event_id)
    refused(post_event(url, home.device_id, home.secret, reused), 422, "idempotency_key_reused")
    # A rotated secret: the old one stops working at once.
    rotated = api.call("agent", "POST", f"/terminals/{home.terminal_id}/secret")
    assert rotated.status_code == 200 and rotated.json()["secret"] != home.secret
    refused(post_event(url, home.device_id, home.secret, sos_body()), 401, "bad_signature")
    ok = post_event(url, home.device_id, rotated.json()["secret"], sos_body())
    assert ok.status_code == 200 and ok.json()["status"] == "joined"
    assert len(emergencies(backend, home.resident_id)) == 1
    assert emergencies(backend, other.resident_id) == []


def audited(api: Api, home: Home) -> list[str]:
    """What the audit log says was done to the terminal, oldest first."""
    entries = api.call(
        "admin",
        "GET",
        "/audit",
        params={"resource_type": "terminal", "resource_id": home.terminal_id},
    ).json()["items"]
    return [e["action"] for e in sorted(entries, key=lambda e: e["id"])]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_provisioning_shows_the_secret_once_and_keeps_it_encrypted(
    api: Api, backend: Backend
) -> None:
    home = provision(api)
    shown = api.call("agent", "GET", f"/terminals/{home.terminal_id}").json()
    assert "secret" not in shown
    assert shown["masked"] is True and shown["device_id"] != home.device_id
    assert shown["online"] is False and shown["last_seen_at"] is None
    with backend.engine.connect() as conn:  # raw SQL: no decrypting column types
        raw = conn.execute(
            text("SELECT secret, device_id FROM terminals WHERE id = :id"),
            {"id": home.terminal_id},
        ).one()
    assert raw.secret.startswith("v2:") and raw.device_id.startswith("v2:")
    assert home.secret not in raw.secret and home.device_id not in raw.device_id
    # The terminal is the resident's channel identity, found like any other.
    found = api.call(
        "bot", "GET", "/residents/lookup", params={"kind": "terminal", "value": home.device_id}
    )
    assert found.status_code == 200 and found.json()["id"] == home.resident_id
    again = api.call(
        "agent",
        "POST",
        "/terminals",
        json={"device_id": home.device_id, "resident_id": home.resident_id},
    )
    assert again.status_code == 409 and again.json()["details"]["terminal_id"] == home.terminal_id
    # Service accounts cannot provision devices; staff acts are audited.
    bot = api.call(
        "bot",
        "POST",
        "/terminals",
        json={"device_id": f"sos-{uuid.uuid4().hex[:8]}", "resident_id": home.resident_id},
    )
    assert bot.status_code == 403
    assert audited(api, home) == ["provision_terminal"]
    post_event(api.base_url, home.device_id, home.secret, sos_body())
    log = api.process.log_text()
    assert home.secret not in log and home.device_id not in log
    assert "POST /terminals/events 201" in log


def test_the_hotline_reads_a_terminals_sip_digest_never_its_secret(
    api: Api, backend: Backend
) -> None:
    """GET /terminals/sip-digest: HA1 of the derived SIP password for one realm, for the
    telephony service only, audited; rotating the secret changes it."""
    home = provision(api)
    headers = {"Authorization": f"Bearer {hotline_token(backend)}"}
    path = f"{api.base_url}/terminals/sip-digest"

    def read(device_id: str, token_headers: dict[str, str] = headers) -> httpx.Response:
        return httpx.get(
            path,
            params={"realm": "linli"},
            headers={**token_headers, "X-Linli-Terminal": device_id},
        )

    answer = read(home.device_id)
    assert answer.status_code == 200, answer.text
    user = f"terminal-{home.device_id}"
    password = signing.sip_password(home.secret)
    assert answer.json() == {
        "terminal_id": home.terminal_id,
        "resident_id": home.resident_id,
        "username": user,
        "realm": "linli",
        "ha1": {
            "MD5": signing.digest_ha1(user, "linli", password, "MD5"),
            "SHA-256": signing.digest_ha1(user, "linli", password, "SHA-256"),
        },
    }
    assert home.secret not in answer.text and password not in answer.text
    assert password != home.secret and len(password) == 64

    unknown = read(f"sos-{uuid.uuid4().hex[:10]}")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "terminal_not_found")
    for account in ("agent", "bot"):  # staff and other services may not
        refused = api.call(
            account,
            "GET",
            "/terminals/sip-digest",
            params={"realm": "linli"},
            headers={"X-Linli-Terminal": home.device_id},
        )
        assert refused.status_code == 403, (account, refused.text)
    assert audited(api, home) == ["provision_terminal", "read_terminal_sip_digest"]

    rotated = api.call("agent", "POST", f"/terminals/{home.terminal_id}/secret").json()["secret"]
    after = read(home.device_id).json()["ha1"]["MD5"]
    new_password = signing.sip_password(rotated)
    assert after == signing.digest_ha1(user, "linli", new_password, "MD5")
    assert after != answer.json()["ha1"]["MD5"]
    assert home.device_id not in api.process.log_text()


# --- escalation chain, on a controllable clock ---------------------------------------------------


def _raise(api: Api, backend: Backend, home: Home) -> tuple[int, datetime]:
    answer = post_event(api.base_url, home.device_id, home.secret, sos_body())
    assert answer.status_code == 201, answer.text
    order_id = answer.json()["order_id"]
    wait_follow_up(backend, order_id)
    with backend.session() as session:
        return order_id, session.get(WorkOrder, order_id).created_at


def _sweep(backend: Backend, now: datetime) -> sweep.SosSweepResult:
    """What the scheduler does each round, at `now`: sweep, then publish at once."""
    result = sweep.sweep_sos(backend.factory, POLICY, now, HEARTBEAT)
    events.publish(backend.factory, result.event_ids)
    return result


def _steps(backend: Backend, order_id: int) -> list[str]:
    return [h.reason for h in history(backend, order_id, "escalation_step")]


def test_escalation_chain_calls_family_in_order_then_the_supervisor(
    api: Api, backend: Backend, redis_client: redis.Redis
) -> None:
    home = provision(
        api,
        contacts=[
            {"name": "王强", "relation": "儿子", "phone": unique_phone()},
            {
                "name": "张阿姨",
                "relation": "邻居",
                "phone": unique_phone(),
                "notify_on_emergency": False,
            },
            {"name": "王丽", "relation": "女儿", "phone": unique_phone()},
        ],
    )
    order_id, t0 = _raise(api, backend, home)
    _sweep(backend, t0 + 59 * S)
    assert _steps(backend, order_id) == []
    _sweep(backend, t0 + 60 * S)
    assert _steps(backend, order_id) == ["已60秒无人受理，第1步：电话通知紧急联系人王强（儿子）"]
    _sweep(backend, t0 + 119 * S)
    assert len(_steps(backend, order_id)) == 1
    _sweep(backend, t0 + 120 * S)
    _sweep(backend, t0 + 150 * S)
    assert _steps(backend, order_id)[1:] == [
        "已2分钟无人受理，第2步：电话通知紧急联系人王丽（女儿）"
    ]
    _sweep(backend, t0 + 180 * S)
    assert _steps(backend, order_id)[2:] == ["已3分钟无人受理，第3步：通知值班主管"]
    _sweep(backend, t0 + 600 * S)  # the chain is done; nothing more
    assert len(_steps(backend, order_id)) == 3
    with backend.session() as session:
        chain = session.get(EmergencyEscalation, order_id)
        assert (chain.step, chain.finish_reason, chain.next_due_at) == (3, "exhausted", None)
    with backend.session() as session:
        at = [
            h.at
            for h in session.execute(
                select(OrderHistory).where(
                    OrderHistory.order_id == order_id, OrderHistory.action == "escalation_step"
                )
            ).scalars()
        ]
    assert at == [t0 + 60 * S, t0 + 120 * S, t0 + 180 * S]
    seen = stream_events(redis_client, home, order_id)
    calls = [
        (d["audience"], d.get("contact_id"), d["step"])
        for t, d in seen
        if t == "notification.requested" and d["purpose"] == "escalation"
    ]
    ids = {c["name"]: c["id"] for c in home.resident["contacts"]}
    assert calls == [
        ("family", ids["王强"], 1),
        ("family", ids["王丽"], 2),
        ("supervisor", None, 3),
    ]
    assert [d["to"] for t, d in seen if t == "emergency.escalation_step"] == [
        "contact",
        "contact",
        "supervisor",
    ]


def test_a_staff_acknowledgement_stops_the_chain(api: Api, backend: Backend) -> None:
    home = provision(api)
    order_id, t0 = _raise(api, backend, home)
    _sweep(backend, t0 + 60 * S)
    assert len(_steps(backend, order_id)) == 1
    accepted = api.call(
        "agent", "POST", f"/work-orders/{order_id}/transitions", json={"to": "accepted"}
    )
    assert accepted.status_code == 200
    _sweep(backend, t0 + 120 * S)
    _sweep(backend, t0 + 600 * S)
    assert len(_steps(backend, order_id)) == 1
    assert [h.reason for h in history(backend, order_id, "escalation_stopped")] == [
        "工作人员已受理，停止逐级通知"
    ]
    with backend.session() as session:
        chain = session.get(EmergencyEscalation, order_id)
        assert chain.finish_reason == "acknowledged" and chain.acknowledged_at is not None

    # Acknowledged within the first 60 s: nobody is called at all.
    quick = provision(api)
    quick_id, q0 = _raise(api, backend, quick)
    api.call("agent", "POST", f"/work-orders/{quick_id}/transitions", json={"to": "accepted"})
    _sweep(backend, q0 + 600 * S)
    assert _steps(backend, quick_id) == []
    assert history(backend, quick_id, "escalation_stopped") == []


def test_a_family_contact_who_confirms_stops_the_chain_once(api: Api, backend: Backend) -> None:
    """The hotline phoned the son at step 1 and he pressed 1: recorded once (the hotline may
    report again after a restart), and nobody further is called."""
    home = provision(api)
    order_id, t0 = _raise(api, backend, home)
    _sweep(backend, t0 + 60 * S)
    with backend.session() as session:
        step_one = session.execute(
            select(Event).where(Event.order_id == order_id, Event.type == "notification.requested")
        ).scalars()
        event = next(e for e in step_one if e.payload.get("step") == 1)
        event_id, contact_id = event.id, event.payload["contact_id"]
    headers = {"Authorization": f"Bearer {hotline_token(backend)}"}
    path = f"{api.base_url}/work-orders/{order_id}/notifications"
    body = {"event_id": event_id, "outcome": "acknowledged", "contact_id": contact_id}
    first = httpx.post(path, json=body, headers=headers)
    again = httpx.post(path, json=body, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    _sweep(backend, t0 + 600 * S)

    assert len(_steps(backend, order_id)) == 1
    son = home.resident["contacts"][0]
    assert [h.reason for h in history(backend, order_id, "notification_result")] == [
        f"电话通知紧急联系人{son['name']}（{son['relation']}）：已接听并按1确认收到"
    ]
    assert [h.reason for h in history(backend, order_id, "escalation_stopped")] == [
        f"紧急联系人{son['name']}（{son['relation']}）已确认，停止逐级通知"
    ]
    with backend.session() as session:
        chain = session.get(EmergencyEscalation, order_id)
        assert chain.finish_reason == "acknowledged" and chain.acknowledged_at is not None
        assert session.get(WorkOrder, order_id).status == "new"  # staff still take it on

    changed = httpx.post(path, json={**body, "outcome": "answered"}, headers=headers)
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
    stranger = provision(api).resident["contacts"][0]["id"]
    wrong = httpx.post(
        path, json={**body, "event_id": event_id + 10_000, "contact_id": stranger}, headers=headers
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "contact_mismatch"
    assert api.call("bot", "POST", path, json=body).status_code == 403  # telephony only


# --- heartbeats and silence --------------------------------------------------------------------


def _heartbeat(api: Api, home: Home) -> datetime:
    body = event_body("heartbeat", datetime.now(timezone.utc), info={"queue_depth": 0})[1]
    answer = post_event(api.base_url, home.device_id, home.secret, body)
    assert answer.status_code == 200 and answer.json()["status"] == "recorded", answer.text
    assert answer.json()["heartbeat_seconds"] == 300
    shown = api.call("agent", "GET", f"/terminals/{home.terminal_id}").json()
    assert shown["online"] is True and shown["status"] == {"queue_depth": 0}
    return datetime.fromisoformat(shown["last_seen_at"])


def _visits(backend: Backend, resident_id: int) -> list[WorkOrder]:
    with backend.session() as session:
        return list(
            session.execute(
                select(WorkOrder)
                .where(WorkOrder.resident_id == resident_id, WorkOrder.kind == "repair")
                .order_by(WorkOrder.id)
            ).scalars()
        )


def test_a_silent_terminal_gets_one_visit_order(api: Api, backend: Backend) -> None:
    home = provision(api)
    _sweep(backend, datetime.now(timezone.utc) + timedelta(days=1))
    assert _visits(backend, home.resident_id) == []  # never reported: not watched yet
    seen = _heartbeat(api, home)
    _sweep(backend, seen + 2 * HEARTBEAT - S)
    assert _visits(backend, home.resident_id) == []
    _sweep(backend, seen + 2 * HEARTBEAT)
    [visit] = _visits(backend, home.resident_id)
    assert (visit.priority, visit.channel, visit.status) == ("P1", "terminal", "new")
    assert visit.details["category"] == "终端" and visit.details["location"] == "home"
    assert visit.details["address"] == {"building": "5", "unit": "1", "room": "302"}
    assert "10分钟没有心跳" in visit.details["description"]
    shown = api.call("agent", "GET", f"/terminals/{home.terminal_id}").json()
    assert shown["online"] is False and shown["visit_order_id"] == visit.id
    silent = api.call("agent", "GET", "/terminals", params={"silent": "true", "limit": 500})
    assert home.terminal_id in [t["id"] for t in silent.json()["items"]]
    for later in (3, 10, 100):
        _sweep(backend, seen + later * HEARTBEAT)
    assert len(_visits(backend, home.resident_id)) == 1

    # Back, then silent again while the visit is still open: a note, not a second order.
    seen = _heartbeat(api, home)
    _sweep(backend, seen + 2 * HEARTBEAT)
    notes = [h.reason for h in history(backend, visit.id, "note")]
    assert any(n.startswith("终端已恢复在线") for n in notes)
    assert any(n.startswith("终端再次失联") for n in notes)
    assert len(_visits(backend, home.resident_id)) == 1

    # The visit done, a new silence is a new visit.
    for target in ("accepted", "resolved"):
        moved = api.call(
            "agent", "POST", f"/work-orders/{visit.id}/transitions", json={"to": target}
        )
        assert moved.status_code == 200, moved.text
    seen = _heartbeat(api, home)
    result = _sweep(backend, seen + 2 * HEARTBEAT)
    assert len(_visits(backend, home.resident_id)) == 2, result


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_device_heartbeats_and_monthly_self_test(
    api: Api, backend: Backend, make_device: Callable[..., Device]
) -> None:
    home = provision(api)
    local = timezone(timedelta(hours=8))
    now = [datetime(2026, 11, 2, 10, 0, tzinfo=local)]
    device = make_device(api.base_url, home, clock=lambda: now[0])
    assert device.terminal.send_heartbeat().outcome == "delivered"
    assert device.terminal.heartbeat_interval == 300  # as the server asked
    with backend.session() as session:
        terminal = session.get(Terminal, home.terminal_id)
        assert terminal.last_seen_at is not None and terminal.last_self_test_at is None
        assert terminal.status["firmware"] == CONFIG.firmware

    now[0] += timedelta(days=29)
    assert device.terminal.check_self_test() is False  # not a month yet
    now[0] = datetime(2026, 12, 3, 22, 0, tzinfo=local)
    assert device.terminal.check_self_test() is False  # a month, but late at night
    now[0] = datetime(2026, 12, 4, 10, 0, tzinfo=local)
    assert device.terminal.check_self_test() is True
    device.terminal.audio.flush()
    assert device.said[-1] == SPEECH["reminder"]
    device.press(0.1)  # the test press
    wait_for(lambda: SPEECH["self_test_ok"] in device.said, 10, "self-test answer")
    device.terminal.audio.flush()
    assert (CONFIRM_TONE, 16000) in device.sink.played
    assert device.talks == []  # the press was the test, not a request to talk
    with backend.session() as session:
        assert session.get(Terminal, home.terminal_id).last_self_test_at is not None
    assert emergencies(backend, home.resident_id) == []
    assert device.terminal.check_self_test() is False  # reminded this month already


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_heartbeat_loop_reports_on_its_own(
    api: Api, backend: Backend, make_device: Callable[..., Device]
) -> None:
    home = provision(api)
    device = make_device(api.base_url, home, start=False)
    reports: list[str] = []
    send = device.terminal.transport.send

    def counting(body: bytes) -> Any:
        reports.append(json.loads(body)["type"])
        return send(body)

    device.terminal.transport.send = counting  # type: ignore[method-assign]
    device.terminal.start(heartbeat=True, reminders=False)

    def seen() -> bool:
        with backend.session() as session:
            return session.get(Terminal, home.terminal_id).last_seen_at is not None

    wait_for(seen, 10, "the first heartbeat to arrive")
    assert reports[0] == "heartbeat"


def test_every_refusal_leaves_no_trace(api: Api, backend: Backend) -> None:
    """Refused events create nothing: no order, no idempotency key, no last-seen."""
    home = provision(api)
    body = sos_body()
    post_event(api.base_url, home.device_id, "x" * 43, body)
    post_event(api.base_url, home.device_id, home.secret, body, timestamp=0)
    with backend.session() as session:
        terminal = session.get(Terminal, home.terminal_id)
        assert terminal.last_seen_at is None
        assert (
            session.execute(
                select(func.count())
                .select_from(WorkOrder)
                .where(WorkOrder.resident_id == home.resident_id)
            ).scalar_one()
            == 0
        )


# Threads left running by a failed test would disturb the next ones.
@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    time.sleep(0.05)
    stray = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("sos-") and t.is_alive()
    ]
    assert stray == [], stray
