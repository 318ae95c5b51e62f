"""SOS press → staff alert: how long from the moment a terminal recognises an SOS until the
`emergency.raised` alert is on the Redis stream staff consoles read; goal p99 < 1 s.

For each backend (a temp SQLite file; a fresh PostgreSQL database, created and dropped here)
the bench migrates, seeds residents (address, health notes, a family contact) each with a
provisioned terminal, starts `python -m workorders serve` on 127.0.0.1, and drives the real
device code (`channels.sos_terminal`: mock pins, the on-disk queue, the signing sender) against
it. A reader thread blocks on XREAD and stamps each alert as it arrives.

  sequential  one press after another, each from a different terminal (a quiet evening)
  burst       BENCH_SOS_BURST terminals pressed at the same instant (a building-wide event)

"press" is the moment the device has recognised the SOS (2 s hold reached, or the third
press); the hold itself is by design and not counted. "alert" is the XREAD arrival of the
order's `emergency.raised`; "confirmed" is when the device got the server's answer (light on,
chime). The bench prints a table, writes var/bench/sos_alert.json and never asserts: exit 1
only when Redis, PostgreSQL or the API would not start.

Knobs: BENCH_BACKENDS=sqlite,postgresql, BENCH_POSTGRES_URL, BENCH_SOS_PRESSES=200,
BENCH_SOS_BURST=50, BENCH_SOS_WARMUP=5, BENCH_SOS_WORKERS=1.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/sos_alert.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import redis
from gpiozero.pins.mock import MockFactory
from sqlalchemy.orm import Session

# Imported before `workorders`: it sets a throwaway data key and event stream for this run (see
# its header); its database and API helpers serve both benches.
from bench.workorders_api import (
    POSTGRES_URL,
    RUN_ID,
    ApiServer,
    Database,
    cpu_between,
    fresh_database,
    services_answer,
    snapshot,
)
from channels.sos_terminal.audio import RecordingSink
from channels.sos_terminal.device import DeviceConfig, SosTerminal
from channels.sos_terminal.queue import Backoff, EventQueue, QueuedEvent
from channels.sos_terminal.signing import Credentials, Signer
from channels.sos_terminal.transport import Transport
from workorders.contract import Role, SosTrigger
from workorders.db import make_engine
from workorders.models import Principal
from workorders.schemas import ResidentCreate, TerminalCreate
from workorders.security import caller_of
from workorders.services import residents as resident_service
from workorders.services import terminals as terminal_service
from workorders.settings import get_settings

BACKENDS = [
    b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",") if b.strip()
]
PRESSES = int(os.environ.get("BENCH_SOS_PRESSES", "200"))
BURST = int(os.environ.get("BENCH_SOS_BURST", "50"))
WARMUP = int(os.environ.get("BENCH_SOS_WARMUP", "5"))
WORKERS = int(os.environ.get("BENCH_SOS_WORKERS", "1"))
GOAL_MS = 1000.0
_WATCHED = (b"emergency.raised", b"callback.requested")
WAIT_S = 10.0  # an alert later than this counts as missing
OUT_DIR = ROOT / "var" / "bench"
OUT = OUT_DIR / "sos_alert.json"


# --- database and seed data ------------------------------------------------------------------


def _phone(i: int) -> str:
    return f"139{(int(RUN_ID, 16) + i) % 100_000_000:08d}"


def seed(db: Database, count: int) -> list[Credentials]:
    """`count` residents, each with a terminal provisioned as staff would; their credentials."""
    engine = make_engine(db.url)
    now = datetime.now(timezone.utc)
    try:
        with Session(engine, future=True) as session:
            admin = Principal(username="bench-admin", display_name="bench", role=Role.admin)
            session.add(admin)
            session.flush()
            staff = caller_of(admin)
            out = []
            for i in range(count):
                resident = resident_service.create(
                    session,
                    ResidentCreate(
                        name="王秀英",
                        phone=_phone(2 * i),
                        community="阳光社区",
                        address={"building": str(1 + i % 12), "unit": "2", "room": "502"},
                        birth_year=1940,
                        service_notes={"mobility": "拄拐杖", "chronic_illness": "冠心病"},
                        contacts=[{"name": "王强", "relation": "儿子", "phone": _phone(2 * i + 1)}],
                    ),
                )
                device_id = f"bench-{RUN_ID}-{i:04d}"
                _, secret = terminal_service.provision(
                    session,
                    staff,
                    TerminalCreate(device_id=device_id, resident_id=resident.id),
                    now,
                )
                out.append(Credentials(device_id, secret))
            session.commit()
            return out
    finally:
        engine.dispose()


# --- the API -----------------------------------------------------------------------------------


# --- measuring ----------------------------------------------------------------------------------


class AlertWatcher:
    """Blocks on XREAD like a staff console; stamps each order's `emergency.raised` (the alert)
    and `callback.requested` (its follow-up's last word) on arrival, and counts both: each must
    come exactly once per order."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client = client
        self.stream = stream
        self.seen: dict[int, float] = {}
        self.followed: dict[int, float] = {}
        self.counts: Counter[tuple[bytes, int]] = Counter()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        last = client.xrevrange(stream, count=1)
        self._last = last[0][0] if last else b"0"
        self._thread = threading.Thread(target=self._run, name="bench-xread", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            reply = self.client.xread({self.stream: self._last}, count=500, block=200)
            now = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    self._last = entry_id
                    kind, order = fields.get(b"type"), fields.get(b"order_id")
                    if kind not in _WATCHED or not order:
                        continue
                    with self._cond:
                        self.counts[kind, int(order)] += 1
                        stamps = self.seen if kind == b"emergency.raised" else self.followed
                        stamps.setdefault(int(order), now)
                        self._cond.notify_all()

    def wait(self, order_id: int, timeout: float, *, follow_up: bool = False) -> float | None:
        stamps = self.followed if follow_up else self.seen
        deadline = time.monotonic() + timeout
        with self._cond:
            while order_id not in stamps:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return stamps[order_id]

    def doubled(self, order_ids: list[int]) -> int:
        """Orders whose alert or follow-up reached the stream more than once."""
        with self._cond:
            return sum(
                1
                for o in order_ids
                if self.counts[b"emergency.raised", o] > 1
                or self.counts[b"callback.requested", o] > 1
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Press:
    pressed: float = 0.0
    confirmed: float | None = None
    order_id: int | None = None
    alert: float | None = None
    follow_up: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Fleet:
    """Real device stacks (mock pins, on-disk queue, signing sender), made as needed."""

    def __init__(self, base_url: str, workdir: Path) -> None:
        self.base_url = base_url
        self.workdir = workdir
        self.config = DeviceConfig(bounce_seconds=None, heartbeat_seconds=3600)

    def device(self, creds: Credentials) -> tuple[SosTerminal, Press]:
        record = Press()

        def confirmed(_entry: QueuedEvent, body: dict[str, Any]) -> None:
            record.confirmed = time.perf_counter()
            record.order_id = body.get("order_id")
            record.done.set()

        device = SosTerminal(
            self.config,
            EventQueue(self.workdir / f"{creds.device_id}.db"),
            Transport(self.base_url, Signer(creds), timeout=WAIT_S),
            pin_factory=MockFactory(),
            sink=RecordingSink(),
            speak=lambda _text: None,
            on_confirmed=confirmed,
            backoff=Backoff(base=0.05, maximum=1.0),
        )
        device.start(heartbeat=False, reminders=False)
        return device, record

    @staticmethod
    def press(device: SosTerminal, record: Press) -> None:
        record.pressed = time.perf_counter()
        device.raise_sos(SosTrigger.hold)


def _own_cpu() -> float:
    """This process: the device stacks (queue, signing, HTTP) and the stream reader."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Measured:
    """A phase's presses, and what the machine spent on them (alerts and follow-ups)."""

    presses: list[Press]
    cpu: dict[str, float]
    api_s_to_alerts: float  # the API's CPU until the last alert arrived
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    doubled: int


def summarise(backend: str, phase: str, m: Measured) -> dict[str, Any]:
    presses = m.presses
    alert = [1000 * (p.alert - p.pressed) for p in presses if p.alert is not None]
    confirm = [1000 * (p.confirmed - p.pressed) for p in presses if p.confirmed is not None]
    follow = [1000 * (p.follow_up - p.pressed) for p in presses if p.follow_up is not None]
    p99 = _pct(alert, 99)
    complete = len(alert) == len(presses)
    return {
        "backend": backend,
        "phase": phase,
        "presses": len(presses),
        "alerts": len(alert),
        "missing_alerts": len(presses) - len(alert),
        "alert_ms": {
            "p50": _pct(alert, 50),
            "p95": _pct(alert, 95),
            "p99": p99,
            "max": max(alert) if alert else None,
            "mean": sum(alert) / len(alert) if alert else None,
        },
        "confirmed_ms": {
            "p50": _pct(confirm, 50),
            "p99": _pct(confirm, 99),
            "max": max(confirm) if confirm else None,
        },
        "follow_ups": len(follow),
        # Follow-ups that reached the stream before the phase's last alert: they ran first.
        "follow_ups_before_last_alert": sum(
            1
            for p in presses
            if p.follow_up is not None
            and any(q.alert is not None and q.alert > p.follow_up for q in presses)
        ),
        "follow_up_ms": {
            "p50": _pct(follow, 50),
            "p99": _pct(follow, 99),
            "max": max(follow) if follow else None,
        },
        "doubled": m.doubled,
        "cpu_s": {k: round(v, 3) for k, v in m.cpu.items()},
        "api_cpu_ms_per_press": round(1000 * m.cpu["api_s"] / max(len(presses), 1), 2),
        "api_cpu_ms_per_alert": round(1000 * m.api_s_to_alerts / max(len(presses), 1), 2),
        "load_avg_before": m.load_before,
        "load_avg_after": m.load_after,
        "goal": {
            "p99_ms": GOAL_MS,
            "pass": bool(complete and p99 is not None and p99 < GOAL_MS),
        },
    }


def run_backend(backend: str, watcher_client: redis.Redis, workdir: Path) -> list[dict[str, Any]]:
    db = fresh_database(backend, "sos", workdir)
    api: ApiServer | None = None
    watcher: AlertWatcher | None = None
    try:
        t = time.monotonic()
        creds = seed(db, WARMUP + PRESSES + BURST)
        print(f"  seeded {len(creds)} residents with terminals in {time.monotonic() - t:.1f} s")
        api = ApiServer(db.url, WORKERS, OUT_DIR / f"sos-api-{backend}.log")
        api.start()
        fleet = Fleet(api.base_url, workdir / f"devices-{backend}")
        watcher = AlertWatcher(watcher_client, get_settings().event_stream)

        def settle(record: Press) -> Press:
            record.done.wait(WAIT_S)
            if record.order_id is not None:
                record.alert = watcher.wait(record.order_id, WAIT_S)  # type: ignore[union-attr]
            return record

        def one(c: Credentials) -> Press:
            device, record = fleet.device(c)
            try:
                fleet.press(device, record)
                return settle(record)
            finally:
                device.close()

        def measured(run: Callable[[], list[Press]]) -> Measured:
            """The phase, then its follow-ups; CPU over both (the API's, PostgreSQL's, ...)."""
            load, before, mine = os.getloadavg(), snapshot(), _own_cpu()
            records = run()
            alerted = snapshot()  # every alert is in: what they cost, before the follow-ups
            for r in records:
                if r.order_id is not None:
                    r.follow_up = watcher.wait(  # type: ignore[union-attr]
                        r.order_id, WAIT_S, follow_up=True
                    )
            time.sleep(0.3)  # a doubled follow-up would arrive about now
            pid = api.proc.pid  # type: ignore[union-attr]
            cpu = cpu_between(before, snapshot(), pid, _own_cpu() - mine)
            to_alerts = cpu_between(before, alerted, pid, 0.0)["api_s"]
            ids = [r.order_id for r in records if r.order_id is not None]
            doubled = watcher.doubled(ids)  # type: ignore[union-attr]
            return Measured(records, cpu, to_alerts, load, os.getloadavg(), doubled)

        for c in creds[:WARMUP]:
            one(c)
        sequential = creds[WARMUP : WARMUP + PRESSES]
        rows = [summarise(backend, "sequential", measured(lambda: [one(c) for c in sequential]))]
        show(rows[-1])
        burst = [fleet.device(c) for c in creds[WARMUP + PRESSES :]]
        if burst:
            gate = threading.Barrier(len(burst))

            def press_at_once(device: SosTerminal, record: Press) -> None:
                gate.wait()
                fleet.press(device, record)

            def at_once() -> list[Press]:
                threads = [threading.Thread(target=press_at_once, args=pair) for pair in burst]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return [settle(record) for _, record in burst]

            m = measured(at_once)
            for device, _ in burst:
                device.close()
            rows.append(summarise(backend, f"burst x{len(burst)}", m))
            show(rows[-1])
        return rows
    finally:
        if watcher:
            watcher.stop()
        if api:
            api.stop()
        db.drop()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def show(row: dict[str, Any]) -> None:
    a, c = row["alert_ms"], row["confirmed_ms"]
    print(
        f"  {row['phase']:<11} alerts {row['alerts']}/{row['presses']}  "
        f"p50 {_ms(a['p50'])} ms  p99 {_ms(a['p99'])} ms  (device confirmed p99 "
        f"{_ms(c['p99'])} ms; follow-ups {row['follow_ups']}, p99 "
        f"{_ms(row['follow_up_ms']['p99'])} ms; API CPU-ms a press {row['api_cpu_ms_per_alert']} "
        f"to the alerts, {row['api_cpu_ms_per_press']} with follow-ups; "
        f"load {row['load_avg_before'][0]:.1f})",
        flush=True,
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print("SOS press → staff alert on the Redis stream (ms); goal p99 < 1,000 ms")
    print(
        "follow p99: press → its callback.requested; CPU alert / all: the API's CPU-ms a press "
        "until the last alert / with the follow-ups"
    )
    header = (
        f"{'backend':<11}{'phase':<12}{'presses':>8}{'alerts':>8}{'p50':>9}{'p95':>9}"
        f"{'p99':>9}{'max':>9}{'confirm p99':>13}{'follow p99':>12}{'doubled':>8}"
        f"{'CPU alert':>10}{'CPU all':>8}  goal"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        a = r["alert_ms"]
        print(
            f"{r['backend']:<11}{r['phase']:<12}{r['presses']:>8}{r['alerts']:>8}"
            f"{_ms(a['p50']):>9}{_ms(a['p95']):>9}{_ms(a['p99']):>9}{_ms(a['max']):>9}"
            f"{_ms(r['confirmed_ms']['p99']):>13}{_ms(r['follow_up_ms']['p99']):>12}"
            f"{r['doubled']:>8}{r['api_cpu_ms_per_alert']:>10}{r['api_cpu_ms_per_press']:>8}  "
            f"{'PASS' if r['goal']['pass'] else 'MISS'}"
        )


def main() -> int:
    started = time.monotonic()
    settings = get_settings()
    client = services_answer(BACKENDS)
    if client is None:
        return 1
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"bench: SOS press → staff alert, backends {','.join(BACKENDS)}, {PRESSES} sequential "
        f"presses + a burst of {BURST}, distinct terminals; API logs in "
        f"{OUT_DIR.relative_to(ROOT)}/"
    )
    rows: list[dict[str, Any]] = []
    failure = None
    with tempfile.TemporaryDirectory(prefix="linli-sos-bench-") as tmp:
        try:
            for backend in BACKENDS:
                print(f"bench: {backend}", flush=True)
                (OUT_DIR / f"sos-api-{backend}.log").unlink(missing_ok=True)
                try:
                    rows += run_backend(backend, client, Path(tmp))
                except RuntimeError as exc:
                    failure = f"{backend}: {exc}"
                    print(f"bench: {failure}", file=sys.stderr)
                    break
        finally:
            # Device event ids are not personal; the stream is the bench's own.
            client.delete(settings.event_stream)
    print_table(rows)
    report = {
        "bench": "sos_alert",
        "run_id": RUN_ID,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg": os.getloadavg(),
        },
        "config": {
            "presses": PRESSES,
            "burst": BURST,
            "warmup": WARMUP,
            "api_workers": WORKERS,
            "press": "SosTerminal.raise_sos (hold recognised): on-disk queue, signed POST",
            "alert": "XREAD arrival of emergency.raised for the order",
            "postgres_url": POSTGRES_URL,
        },
        "goal": {"p99_ms": GOAL_MS},
        "results": rows,
        "failure": failure,
    }
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nbench: results in {OUT.relative_to(ROOT)} ({report['elapsed_s']} s)")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
