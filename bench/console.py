"""The staff console: SOS press → alarm painted in Chromium, hand-over → visible, the pages with
10,000 orders, and 50 consoles on the live stream at once.

For each backend (a fresh PostgreSQL database `linli_bench_<run>_console`, created and dropped
here; with BENCH_BACKENDS=postgresql,sqlite also a temp SQLite file) the bench migrates, seeds
in-process 10,000 work orders over 90 days with their life cycles (history rows, SLA clocks,
ratings: what the 统计 page reconstructs), 2,000 residents, a few hundred conversations, staff
accounts and SOS terminals, then starts `python -m workorders serve` on 127.0.0.1 with a
throwaway data key and a Redis stream of its own (`linli:bench:<run>:events`, deleted at the
end). The live parts run on the first backend only:

  alarm       a signed `POST /terminals/events` SOS, as the terminal sends it (fresh resident and
              terminal per press) → the 报警 page (/console/) in Debian's Chromium, long-polling
              /events, has the alarm's card in its DOM and painted. The page stamps it itself
              (MutationObserver, then requestAnimationFrame and a message after the frame, with
              performance.timeOrigin + performance.now()); the press time is time.time() just
              before the request, both on this machine's clock (the offset between the two is
              measured before every press). Each alarm is accepted and resolved before the next.
  handover    `POST /conversations/{key}/handoff` as the dialogue sends it → `li[data-key]` painted
              on the 会话 page (/console/conversations); each is claimed and closed afterwards.
  pages       server time of each page's HTML and of the API calls the page makes on load (taken
              from what Chromium actually requested), with a signed-in cookie session.
  stream      50 consoles (httpx, their own sessions) long-polling `GET /events?wait_ms=25000`
              at once: the API's CPU and memory while they wait, `GET /work-orders/{id}` every
              250 ms and an SOS press meanwhile (a request not answered within 60 s is given
              up), then events published in-process and their delivery to all 50.
  tabs        with BENCH_CONSOLE_TABS=50: 50 real Chromium tabs on the alarm board (own
              sessions): how many connect (within 30 s of opening the last), Chromium's memory,
              one SOS press → painted in each connected tab (within 45 s of the press's answer).

It measures and reports, never asserts; results in var/bench/console.json, bench/README.md
explains them. Exit status 1 only when Redis, PostgreSQL, Chromium or the API would not start.

Knobs: BENCH_BACKENDS=postgresql (postgresql,sqlite adds SQLite's pages), BENCH_POSTGRES_URL,
BENCH_CONSOLE_ORDERS=10000, BENCH_CONSOLE_RESIDENTS=2000, BENCH_CONSOLE_PRESSES=30,
BENCH_CONSOLE_HANDOFFS=30, BENCH_CONSOLE_REPEAT=30, BENCH_CONSOLE_CLIENTS=50,
BENCH_CONSOLE_EVENTS=10, BENCH_CONSOLE_STREAM_SOS=1, BENCH_CONSOLE_TABS=0 (50: the tabs part),
LINLI_CHROMIUM=/usr/bin/chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/console.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

# Imported before `workorders`: it sets a throwaway data key and event stream for this run (see
# its header); its database and API helpers serve every bench.
from bench import workorders_api as api_bench
from bench.workorders_api import (
    POSTGRES_URL,
    RUN_ID,
    ApiServer,
    Database,
    fresh_database,
    services_answer,
)
from channels.sos_terminal.queue import event_body
from workorders.contract import Channel, Kind, Priority, Role, Status
from workorders.db import make_engine
from workorders.models import OrderHistory, Principal, WorkOrder
from workorders.schemas import (
    HandoffIn,
    MessagesIn,
    OrderCreate,
    ResidentCreate,
    TerminalCreate,
)
from workorders.security import caller_of, hash_password, issue_token
from workorders.services import conversations as conversation_service
from workorders.services import events as event_service
from workorders.services import orders as order_service
from workorders.services import residents as resident_service
from workorders.services import sla
from workorders.services import terminals as terminal_service
from workorders.settings import get_settings
from workorders.signing import EVENTS_PATH, signed_headers

BACKENDS = [
    b.strip() for b in os.environ.get("BENCH_BACKENDS", "postgresql").split(",") if b.strip()
]
ORDERS = int(os.environ.get("BENCH_CONSOLE_ORDERS", "10000"))
RESIDENTS = int(os.environ.get("BENCH_CONSOLE_RESIDENTS", "2000"))
PRESSES = int(os.environ.get("BENCH_CONSOLE_PRESSES", "30"))
HANDOFFS = int(os.environ.get("BENCH_CONSOLE_HANDOFFS", "30"))
REPEAT = int(os.environ.get("BENCH_CONSOLE_REPEAT", "30"))
CLIENTS = int(os.environ.get("BENCH_CONSOLE_CLIENTS", "50"))
EVENTS = int(os.environ.get("BENCH_CONSOLE_EVENTS", "10"))
STREAM_SOS = int(os.environ.get("BENCH_CONSOLE_STREAM_SOS", "1"))
TABS = int(os.environ.get("BENCH_CONSOLE_TABS", "0"))  # 50 for the tabs part (2-3 minutes)
CHROMIUM = Path(os.environ.get("LINLI_CHROMIUM", "/usr/bin/chromium"))
WARMUP = 3  # presses and hand-overs before the measured ones
CONVERSATIONS = 300  # bot conversations seeded (the 会话 page lists only open hand-overs)
WAITING_HANDOFFS = 8  # hand-overs already waiting when the console opens
QUIET_S = 5.0  # the stream part's quiet window (no events): CPU, memory, probes
POLL_WAIT_MS = 25_000  # what live.js asks for
WAIT_S = 15.0  # a paint or delivery later than this counts as missing
DELIVERY_WAIT_S = 5.0  # the same for the stream part's published orders (normally < 0.3 s)
TABS_CONNECT_S = 30.0  # tabs not connected this long after the last was opened count as not
TABS_PAINT_S = 45.0  # after the SOS press's answer: a tab not painted by then counts as missing
STALL_S = 60.0  # a request of the stream and tabs parts unanswered after this is given up
GOAL_ALARM_MS = 1000.0
GOAL_PAGE_MS = 300.0
OUT_DIR = ROOT / "var" / "bench"
OUT = OUT_DIR / "console.json"
PASSWORD = "bench-console-" + RUN_ID  # throwaway accounts in a throwaway database
SESSION_COOKIE = "linli_session"
PAGES = [
    "/console/",
    "/console/orders",
    "/console/conversations",
    "/console/stats",
    "/console/residents",
]
COMMUNITIES = ["阳光社区", "幸福里社区", "和平街社区", "东湖社区", "青年路社区"]
# The bot as deployed (tests/support.py): bench/workorders_api.py's, and it opens hand-overs.
BOT_SCOPES = [*api_bench.BOT_SCOPES, "conversations:write"]
GATEWAY_SCOPES = ["conversations:write", "events:read", "residents:lookup"]
TICK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (as bench/sos_alert.py)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def dist(values: list[float]) -> dict[str, float | int | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "n": len(values),
        "p50": r(_pct(values, 50)),
        "p90": r(_pct(values, 90)),
        "p99": r(_pct(values, 99)),
        "max": r(max(values)) if values else None,
        "mean": r(sum(values) / len(values)) if values else None,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- database and seed data ------------------------------------------------------------------


@dataclass(frozen=True)
class Terminal:
    device_id: str
    secret: str

    def __repr__(self) -> str:
        return f"Terminal({self.device_id!r})"


@dataclass
class Seeded:
    admin: str
    agent: str
    tokens: dict[str, str]  # admin, agent, bot, gateway (bearer tokens)
    consoles: list[str]  # one staff token per console of the stream and tabs parts
    terminals: list[Terminal]  # each for a resident of its own, one press each
    residents: list[int]
    order_ids: list[int]
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _phone(i: int) -> str:
    return f"139{(int(RUN_ID, 16) + i) % 100_000_000:08d}"


_STEPS: dict[Status, list[Status]] = {
    Status.new: [],
    Status.accepted: [Status.accepted],
    Status.in_progress: [Status.accepted, Status.in_progress],
    Status.on_hold: [Status.accepted, Status.in_progress, Status.on_hold],
    Status.resolved: [Status.accepted, Status.in_progress, Status.resolved],
    Status.closed: [Status.accepted, Status.in_progress, Status.resolved, Status.closed],
    Status.cancelled: [Status.cancelled],
}
_KINDS = [
    (Kind.repair, 30),
    (Kind.home_care, 22),
    (Kind.medical_appointment, 15),
    (Kind.policy_question, 15),
    (Kind.callback, 8),
    (Kind.complaint, 5),
    (Kind.emergency, 5),
]


def _weighted(rng: random.Random, pairs: list[tuple[Any, float]]) -> Any:
    return rng.choices([p[0] for p in pairs], [p[1] for p in pairs])[0]


def _final_status(rng: random.Random, kind: Kind, age: timedelta) -> Status:
    if kind == Kind.emergency:  # the alarm board starts empty: every seeded emergency is over
        return Status.closed
    if age < timedelta(hours=2):
        return _weighted(rng, [(Status.new, 60), (Status.accepted, 25), (Status.in_progress, 15)])
    if age < timedelta(days=3):
        return _weighted(
            rng,
            [
                (Status.new, 10),
                (Status.accepted, 15),
                (Status.in_progress, 25),
                (Status.on_hold, 10),
                (Status.resolved, 25),
                (Status.closed, 10),
                (Status.cancelled, 5),
            ],
        )
    return _weighted(
        rng,
        [
            (Status.closed, 75),
            (Status.resolved, 5),
            (Status.cancelled, 8),
            (Status.in_progress, 5),
            (Status.on_hold, 4),
            (Status.accepted, 3),
        ],
    )


def _details(kind: Kind, i: int, resident: dict[str, Any], created: datetime) -> dict[str, Any]:
    address = resident["address"]
    if kind == Kind.repair:
        return {
            "category": ["水管", "电路", "门窗", "燃气灶"][i % 4],
            "location": "home",
            "description": "厨房水管漏水了，地上都是水",
            "address": address,
        }
    if kind == Kind.home_care:
        start = (created + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        return {
            "service": ["助餐", "助浴", "助洁"][i % 3],
            "window_start": start.isoformat(),
            "window_end": (start + timedelta(hours=2)).isoformat(),
            "address": address,
        }
    if kind == Kind.medical_appointment:
        start = (created + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        return {
            "department": ["内科", "外科", "中医科"][i % 3],
            "slot_id": f"bench-slot-{i}",
            "appointment_id": f"bench-appt-{i}",
            "slot_start": start.isoformat(),
            "slot_end": (start + timedelta(minutes=15)).isoformat(),
        }
    if kind == Kind.policy_question:
        return {"question": "高龄津贴怎么申请？需要带什么材料？", "topic": "高龄津贴"}
    if kind == Kind.callback:
        return {"reason": "居民要求人工服务", "phone": resident["phone"]}
    if kind == Kind.complaint:
        return {"text": "上门服务的师傅迟到了两个小时，也没有打电话说一声"}
    return {
        "description": "一键呼叫终端求助",
        "source": "terminal",
        "address": address,
        "service_notes": resident["service_notes"],
    }


def _order(
    rng: random.Random,
    i: int,
    resident: dict[str, Any],
    staff: list[Any],
    bot: Any,
    policy: sla.SlaPolicy,
    now: datetime,
) -> WorkOrder:
    """One order with a plausible life so far: the same clocks and history rows the services
    write (services/orders.py, services/sla.py), without a commit per order."""
    kind = _weighted(rng, _KINDS)
    if kind == Kind.emergency:
        priority = Priority.P0
        channel = Channel.terminal if rng.random() < 0.7 else Channel.hotline
        created = now - timedelta(seconds=rng.uniform(86_400, 90 * 86_400))
    else:
        priority = (
            Priority.P1
            if kind == Kind.complaint
            else _weighted(rng, [(Priority.P2, 85), (Priority.P1, 10), (Priority.P3, 5)])
        )
        channel = _weighted(rng, [(Channel.wechat, 50), (Channel.hotline, 35), (Channel.web, 15)])
        # A quarter of the last day's orders in the last two hours: an open queue.
        if rng.random() < 0.03:
            created = now - timedelta(seconds=rng.uniform(60, 7200))
        else:
            created = now - timedelta(seconds=rng.uniform(0, 90 * 86_400))
    targets = policy.targets(kind, priority)
    details = _details(kind, i, resident, created)
    order = WorkOrder(
        kind=kind,
        status=Status.new,
        priority=priority,
        channel=channel,
        resident_id=resident["id"],
        community=resident["community"],
        details=details,
        scheduled_at=datetime.fromisoformat(details["slot_start"])
        if "slot_start" in details
        else None,
        created_by=bot.id,
    )
    sla.start_clock(order, targets, created)
    order.history.append(
        OrderHistory(at=created, actor_id=bot.id, action="created", to_status=Status.new)
    )
    final = _final_status(rng, kind, now - created)
    steps = list(_STEPS[final])
    if final == Status.cancelled and rng.random() < 0.5:
        steps = [Status.accepted, Status.cancelled]
    at, current = created, Status.new
    actor = rng.choice(staff)
    for target in steps:
        if target == Status.accepted:
            factor = 0.02 if kind == Kind.emergency else rng.uniform(0.05, 1.3)
            at += targets.response * factor
        elif target == Status.closed:
            at += timedelta(hours=rng.uniform(1, 48))
        elif target == Status.resolved:
            at += targets.resolution * rng.uniform(0.05, 1.1)
        else:
            at += targets.resolution * rng.uniform(0.01, 0.15)
        if at >= now:
            break
        if target == Status.closed:  # the resident's rating closes it (services/orders.rate)
            score = _weighted(rng, [(5, 60), (4, 25), (3, 10), (2, 3), (1, 2)])
            order.rating, order.rated_at = score, at
            order.status = Status.closed
            order.closed_at = order.updated_at = at
            order.paused_since = None
            order.history.append(
                OrderHistory(
                    at=at,
                    actor_id=bot.id,
                    action="rated",
                    from_status=Status.resolved,
                    to_status=Status.closed,
                    reason=f"评分 {score}",
                )
            )
        else:
            sla.on_transition(order, current, target, targets, at)
            order.status = target
            order.history.append(
                OrderHistory(
                    at=at, actor_id=actor.id, action="status", from_status=current, to_status=target
                )
            )
            if target == Status.accepted:
                order.assignee_id = actor.id
        current = target
    if order.first_response_at is None and order.status == Status.new:
        if order.response_due_at <= now:
            order.response_breached_at = order.response_due_at
    elif order.first_response_at is not None and order.first_response_at > order.response_due_at:
        order.response_breached_at = order.response_due_at
    done = order.resolved_at or (now if order.status in sla.OPEN - sla.PAUSED else None)
    if done is not None and done > order.resolution_due_at:
        order.resolution_breached_at = order.resolution_due_at
    return order


def seed(db: Database, terminals: int, consoles: int) -> Seeded:
    """Everything in-process: accounts and tokens, residents, terminals, orders, conversations."""
    started = time.monotonic()
    rng = random.Random(int(RUN_ID, 16))
    settings = get_settings()
    policy = sla.load_policy(settings.sla_config)
    now = datetime.now(timezone.utc)
    engine = make_engine(db.url)
    try:
        with Session(engine, future=True) as session:
            password = hash_password(PASSWORD)

            def account(name: str, display: str, role: Role, **more: Any) -> Principal:
                return Principal(
                    username=f"bench-{name}-{RUN_ID}", display_name=display, role=role, **more
                )

            main = {
                "admin": account("admin", "值班管理员", Role.admin, password_hash=password),
                "agent": account("agent", "值班网格员", Role.agent, password_hash=password),
                "bot": account("bot", "bot", Role.service, scopes=BOT_SCOPES),
                "gateway": account("gateway", "gateway", Role.service, scopes=GATEWAY_SCOPES),
            }
            staff = [account(f"staff-{i}", f"网格员{i + 1}", Role.agent) for i in range(8)]
            watchers = [
                account(f"console-{i}", f"工作台{i + 1}", Role.agent) for i in range(consoles)
            ]
            session.add_all([*main.values(), *staff, *watchers])
            session.flush()
            tokens = {name: issue_token(session, p, None) for name, p in main.items()}
            console_tokens = [issue_token(session, w, None) for w in watchers]
            session.commit()
            admin, agent, bot = main["admin"], main["agent"], main["bot"]

            residents: list[dict[str, Any]] = []
            for i in range(RESIDENTS + terminals):
                notes = {"mobility": "拄拐杖", "chronic_illness": "高血压，服用硝苯地平"}
                made = resident_service.create(
                    session,
                    ResidentCreate(
                        name=["王秀英", "李桂兰", "张建国", "刘淑珍", "陈德明"][i % 5],
                        phone=_phone(2 * i),
                        community=COMMUNITIES[i % len(COMMUNITIES)],
                        address={
                            "building": str(1 + i % 12),
                            "unit": str(1 + i % 3),
                            "room": f"{1 + i % 6}0{1 + i % 4}",
                        },
                        birth_year=1930 + i % 30,
                        service_notes=notes,
                        contacts=[{"name": "王强", "relation": "儿子", "phone": _phone(2 * i + 1)}],
                    ),
                )
                residents.append(
                    {
                        "id": made.id,
                        "community": made.community,
                        "address": made.address,
                        "phone": _phone(2 * i),
                        "service_notes": notes,
                    }
                )
                if i % 500 == 499:
                    session.commit()
            session.commit()

            # The last `terminals` residents each get a terminal and never an order before.
            staff_caller = caller_of(admin)
            creds = []
            for r in residents[RESIDENTS:]:
                device_id = f"bench-{RUN_ID}-{r['id']}"
                _, secret = terminal_service.provision(
                    session,
                    staff_caller,
                    TerminalCreate(device_id=device_id, resident_id=r["id"]),
                    now,
                )
                creds.append(Terminal(device_id, secret))
            session.commit()

            with_orders = residents[:RESIDENTS]
            history = 0
            batch: list[WorkOrder] = []
            for i in range(ORDERS):
                order = _order(rng, i, rng.choice(with_orders), staff, bot, policy, now)
                history += len(order.history)
                batch.append(order)
                if len(batch) == 500:
                    session.add_all(batch)
                    session.commit()
                    batch = []
            session.add_all(batch)
            session.commit()
            order_ids = [
                row[0]
                for row in session.execute(text("SELECT id FROM work_orders ORDER BY id")).all()
            ]

            # Conversations: the bot's, and a few hand-overs already waiting for staff.
            hours = settings.hours()
            alert_after = timedelta(seconds=settings.handoff_alert_seconds)
            for i in range(CONVERSATIONS + WAITING_HANDOFFS):
                r = with_orders[i % len(with_orders)]
                key = f"web-bench-{RUN_ID}-seed-{i}"
                at = now - timedelta(minutes=rng.uniform(1, 600))
                conversation_service.record(
                    session,
                    key,
                    MessagesIn(
                        channel="web",
                        can_push=True,
                        resident_id=r["id"],
                        messages=[
                            {"role": "resident", "text": "我家水管漏水了，能派人来修吗？"},
                            {"role": "bot", "text": "好的，已经为您登记报修，师傅会联系您。"},
                        ],
                    ),
                    at,
                )
                if i >= CONVERSATIONS:
                    conversation_service.hand_over(
                        session,
                        key,
                        HandoffIn(
                            channel="web",
                            reason="request_human",
                            summary="居民：找人工",
                            resident_id=r["id"],
                        ),
                        at,
                        hours,
                        alert_after,
                    )
            # Seeded events are not for the live stream (no relay runs here).
            session.execute(text("UPDATE events SET published_at = :now"), {"now": now})
            session.commit()
            counts = {
                "orders": len(order_ids),
                "order_history": history,
                "residents": len(residents),
                "terminals": len(creds),
                "conversations": CONVERSATIONS + WAITING_HANDOFFS,
                "waiting_handoffs": WAITING_HANDOFFS,
                "console_accounts": consoles,
            }
            return Seeded(
                admin=admin.username,
                agent=agent.username,
                tokens=tokens,
                consoles=console_tokens,
                terminals=creds,
                residents=[r["id"] for r in with_orders],
                order_ids=order_ids,
                counts=counts,
                seconds=round(time.monotonic() - started, 1),
            )
    finally:
        engine.dispose()


# --- acting as a terminal, the dialogue, staff -----------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sos_request(terminal: Terminal) -> tuple[bytes, dict[str, str]]:
    """What the device sends (channels/sos_terminal: event_body, then signed headers)."""
    _, body = event_body("sos", datetime.now(timezone.utc), trigger="hold")
    headers = signed_headers(terminal.secret, terminal.device_id, body)
    return body, {"Content-Type": "application/json", **headers}


def settle_emergency(client: httpx.Client, token: str, order_id: int) -> bool:
    """A person takes it on (我来处理) and resolves it: off the board, the chain stopped.
    False when the API did not answer (the database is dropped at the end anyway)."""
    for target in ("accepted", "resolved"):
        for _ in range(5):
            try:
                answer = client.post(
                    f"/work-orders/{order_id}/transitions",
                    json={"to": target, "reason": "压测：已处理"},
                    headers=bearer(token),
                )
            except httpx.HTTPError:
                return False
            if answer.status_code in (200, 409):
                break
            time.sleep(0.2)
    return True


# --- processes: CPU and memory -----------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int, int] | None:
    """(ppid, comm, utime+stime ticks, rss pages) of a process, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), comm, int(rest[11]) + int(rest[12]), int(rest[21])


def _all() -> dict[int, tuple[int, str, int, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry))) is not None:
            out[int(entry)] = s
    return out


def tree(root: int, procs: dict[int, tuple[int, str, int, int]] | None = None) -> list[int]:
    procs = procs if procs is not None else _all()
    found, frontier = set(), {root}
    while frontier:
        found |= frontier
        frontier = {p for p, s in procs.items() if s[0] in frontier} - found
    return sorted(p for p in found if p in procs)


def cpu_ticks(root: int) -> int:
    procs = _all()
    return sum(procs[p][2] for p in tree(root, procs))


def rss_mb(root: int) -> float:
    procs = _all()
    return round(sum(procs[p][3] for p in tree(root, procs)) * PAGE_SIZE / 2**20, 1)


def pss_mb(pids: list[int]) -> float:
    """Proportional set size: shared pages split among the processes that share them."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return round(total / 1024, 1)


def chromium_pids() -> list[int]:
    procs = _all()
    return [p for p in tree(os.getpid(), procs) if procs[p][1].startswith(("chrom", "headless"))]


def machine_ticks() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


# --- the browser -----------------------------------------------------------------------------

# Stamps the first time each item appears in a list: when the node is in the DOM (the
# observer's microtask), in the next animation frame (just before paint) and after that frame
# (a message posted from the frame callback runs once the frame is done: painted).
OBSERVER_JS = """
([listSelector, dataKey]) => {
  if (window.__bench) return true;
  const stamp = () => performance.timeOrigin + performance.now();
  const painted = (window.__painted = {});
  const pending = new Set();
  window.__bench = new MutationObserver((records) => {
    const fresh = [];
    for (const record of records) {
      for (const node of record.addedNodes) {
        const key = node.nodeType === 1 ? node.dataset[dataKey] : undefined;
        if (key && !(key in painted) && !pending.has(key)) {
          pending.add(key);
          fresh.push(key);
        }
      }
    }
    if (!fresh.length) return;
    const dom = stamp();
    requestAnimationFrame(() => {
      const frame = stamp();
      const channel = new MessageChannel();
      channel.port1.onmessage = () => {
        const after = stamp();
        for (const key of fresh) {
          painted[key] = { dom, frame, painted: after };
          pending.delete(key);
        }
      };
      channel.port2.postMessage(null);
    });
  });
  window.__bench.observe(document.querySelector(listSelector), { childList: true });
  return true;
}
"""


def clock_offset_ms(page: Any) -> float:
    """The page's clock (timeOrigin + now) minus time.time(), in ms: the best of five tries."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.time()
        js = page.evaluate("performance.timeOrigin + performance.now()")
        after = time.time()
        width = after - before
        offset = js - 1000 * (before + after) / 2
        if best is None or width < best[0]:
            best = (width, offset)
    assert best is not None
    return best[1]


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--autoplay-policy=no-user-gesture-required"],
        timeout=30_000,
    )


def signed_in_page(browser: Any, base_url: str, username: str, path: str) -> Any:
    """A fresh context signed in through the log-in form, as staff do."""
    context = browser.new_context(base_url=base_url, locale="zh-CN", timezone_id="Asia/Shanghai")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(path)
    page.wait_for_url("**/console/login**")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"**{path}**")
    return page


def wait_js(page: Any, function: str, arg: Any = None, timeout_s: float = 30.0) -> Any:
    """Poll a function in the page until it returns something truthy (None after the timeout).
    Not `wait_for_function`: the console's Content-Security-Policy refuses the string eval it
    needs; `evaluate` goes through DevTools and is not subject to it. The polling interval does
    not matter for the figures: the page stamps its own times."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(function, arg)
        if value or time.monotonic() > deadline:
            return value or None
        page.wait_for_timeout(20)


LIVE_JS = "() => document.documentElement.dataset.live === 'connected'"


def wait_live(page: Any) -> None:
    """The page's first poll has answered and the long poll is on its way."""
    if not wait_js(page, LIVE_JS):
        raise RuntimeError(f"{page.url}: the live stream did not connect within 30 s")
    page.wait_for_timeout(300)


def painted_at(page: Any, key: str, timeout_s: float) -> dict[str, float] | None:
    return wait_js(page, "key => window.__painted && window.__painted[key]", key, timeout_s)


# --- part 1: SOS press → alarm painted ---------------------------------------------------------


def run_alarm(
    browser: Any, base_url: str, seeded: Seeded, terminals: list[Terminal]
) -> dict[str, Any]:
    page = signed_in_page(browser, base_url, seeded.agent, "/console/")
    try:
        wait_js(page, "() => document.getElementById('alarm-summary').textContent !== '正在加载……'")
        wait_live(page)
        page.evaluate(OBSERVER_JS, ["#alarm-list", "orderId"])
        samples: list[dict[str, Any]] = []
        load_before = load()
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for n, terminal in enumerate(terminals):
                offset = clock_offset_ms(page)
                body, headers = sos_request(terminal)
                t0 = time.time()
                answer = client.post(EVENTS_PATH, content=body, headers=headers)
                t1 = time.time()
                if answer.status_code != 201:
                    samples.append({"error": f"{answer.status_code} {answer.text[:200]}"})
                    continue
                order_id = answer.json()["order_id"]
                stamps = painted_at(page, str(order_id), WAIT_S)
                sample: dict[str, Any] = {
                    "order_id": order_id,
                    "warmup": n < WARMUP,
                    "answered_ms": round(1000 * (t1 - t0), 1),
                    "clock_offset_ms": round(offset, 2),
                }
                if stamps:
                    for name in ("dom", "frame", "painted"):
                        sample[f"{name}_ms"] = round(stamps[name] - offset - 1000 * t0, 1)
                samples.append(sample)
                settle_emergency(client, seeded.tokens["agent"], order_id)
                page.locator(f"#alarm-{order_id}").wait_for(state="detached", timeout=15_000)
                page.wait_for_timeout(200)
        measured = [s for s in samples if not s.get("warmup")]
        painted = [s["painted_ms"] for s in measured if "painted_ms" in s]
        sounding = page.evaluate("document.getElementById('alarm-board').dataset.alarmSounding")
        p99 = _pct(painted, 99)
        return {
            "presses": len(measured),
            "painted": len(painted),
            "missing": len(measured) - len(painted),
            "painted_ms": dist(painted),
            "dom_ms": dist([s["dom_ms"] for s in measured if "dom_ms" in s]),
            "answered_ms": dist([s["answered_ms"] for s in measured if "answered_ms" in s]),
            "errors": [s["error"] for s in samples if "error" in s],
            "sound_state_after": sounding,
            "goal": {
                "p99_ms": GOAL_ALARM_MS,
                "pass": bool(painted and len(painted) == len(measured) and p99 < GOAL_ALARM_MS),
            },
            "load_before": load_before,
            "load_after": load(),
            "samples": samples,
        }
    finally:
        page.context.close()


# --- part 2: hand-over → visible ----------------------------------------------------------------


def run_handover(browser: Any, base_url: str, seeded: Seeded) -> dict[str, Any]:
    page = signed_in_page(browser, base_url, seeded.agent, "/console/conversations")
    try:
        wait_js(page, "() => document.querySelectorAll('#conv-list li[data-key]').length >= 1")
        wait_live(page)
        page.evaluate(OBSERVER_JS, ["#conv-list", "key"])
        samples: list[dict[str, Any]] = []
        load_before = load()
        bot, gateway, agent = (seeded.tokens[k] for k in ("bot", "gateway", "agent"))
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for n in range(WARMUP + HANDOFFS):
                key = f"web-bench-{RUN_ID}-{n}"
                resident_id = seeded.residents[n % len(seeded.residents)]
                # What happened before the hand-over (not timed): the resident's message
                # through the gateway, the callback order the dialogue opens.
                said = client.post(
                    f"/conversations/{key}/messages",
                    json={
                        "channel": "web",
                        "can_push": True,
                        "resident_id": resident_id,
                        "messages": [{"role": "resident", "text": "我要找人工"}],
                    },
                    headers=bearer(gateway),
                )
                order = client.post(
                    "/work-orders",
                    json={
                        "kind": "callback",
                        "channel": "web",
                        "resident_id": resident_id,
                        "details": {"reason": "居民要求人工服务"},
                    },
                    headers=bearer(bot),
                )
                if said.status_code != 200 or order.status_code != 201:
                    samples.append({"error": f"{said.status_code}/{order.status_code}"})
                    continue
                offset = clock_offset_ms(page)
                t0 = time.time()
                opened = client.post(
                    f"/conversations/{key}/handoff",
                    json={
                        "channel": "web",
                        "reason": "request_human",
                        "summary": "居民：我要找人工",
                        "order_id": order.json()["id"],
                        "resident_id": resident_id,
                    },
                    headers=bearer(bot),
                )
                t1 = time.time()
                if opened.status_code != 201:
                    samples.append({"error": f"{opened.status_code} {opened.text[:200]}"})
                    continue
                stamps = painted_at(page, key, WAIT_S)
                sample: dict[str, Any] = {
                    "key": key,
                    "warmup": n < WARMUP,
                    "answered_ms": round(1000 * (t1 - t0), 1),
                    "clock_offset_ms": round(offset, 2),
                }
                if stamps:
                    for name in ("dom", "frame", "painted"):
                        sample[f"{name}_ms"] = round(stamps[name] - offset - 1000 * t0, 1)
                samples.append(sample)
                # Staff take it and close it, so the list stays as it was.
                client.post(f"/conversations/{key}/claim", headers=bearer(agent))
                client.post(
                    f"/conversations/{key}/close",
                    json={"outcome": "压测：已回电"},
                    headers=bearer(agent),
                )
                page.locator(f'#conv-list li[data-key="{key}"]').wait_for(
                    state="detached", timeout=15_000
                )
                page.wait_for_timeout(200)
        measured = [s for s in samples if not s.get("warmup")]
        painted = [s["painted_ms"] for s in measured if "painted_ms" in s]
        return {
            "handovers": len(measured),
            "painted": len(painted),
            "missing": len(measured) - len(painted),
            "painted_ms": dist(painted),
            "dom_ms": dist([s["dom_ms"] for s in measured if "dom_ms" in s]),
            "answered_ms": dist([s["answered_ms"] for s in measured if "answered_ms" in s]),
            "errors": [s["error"] for s in samples if "error" in s],
            "note": "conversations.js reloads its list 150 ms after a conversation event "
            "(debounce): included",
            "load_before": load_before,
            "load_after": load(),
            "samples": samples,
        }
    finally:
        page.context.close()


# --- part 3: the pages and their API calls -----------------------------------------------------


def capture_calls(browser: Any, base_url: str, seeded: Seeded) -> dict[str, list[str]]:
    """The API requests each page makes on load, as Chromium sent them (signed in as admin,
    who may open every page). The long poll itself is left out: it waits by design."""
    page = signed_in_page(browser, base_url, seeded.admin, "/console/")
    context = page.context
    page.close()
    calls: dict[str, list[str]] = {}
    try:
        for path in PAGES:
            seen: list[str] = []
            tab = context.new_page()

            def keep(request: Any, seen: list[str] = seen) -> None:
                if request.resource_type not in ("fetch", "xhr"):
                    return
                parts = urlsplit(request.url)
                url = parts.path + (f"?{parts.query}" if parts.query else "")
                if "wait_ms=25000" in url or url in seen:
                    return
                seen.append(url)

            tab.on("request", keep)
            tab.goto(path)
            tab.wait_for_load_state("load")
            tab.wait_for_timeout(2500)  # modules, the first poll, the page's data
            tab.close()
            calls[path] = seen
    finally:
        context.close()
    return calls


def console_session(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
    answer = client.post(
        "/console/login", data={"username": username, "password": PASSWORD, "next": "/console/"}
    )
    if answer.status_code != 303 or SESSION_COOKIE not in client.cookies:
        raise RuntimeError(f"console log-in failed: {answer.status_code} {answer.text[:200]}")
    return client


def time_get(client: httpx.Client, url: str, times: int) -> dict[str, Any]:
    for _ in range(3):  # warm-up: caches, connections, query plans
        client.get(url)
    took, statuses, size = [], {}, 0
    for _ in range(times):
        start = time.perf_counter()
        answer = client.get(url)
        took.append(1000 * (time.perf_counter() - start))
        statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
        size = len(answer.content)
    d = dist(took)
    return {
        "url": url,
        "ms": d,
        "statuses": statuses,
        "bytes": size,
        "goal_pass": bool(d["p99"] is not None and d["p99"] < GOAL_PAGE_MS)
        and set(statuses) == {"200"},
    }


def extra_calls() -> list[str]:
    """Not made on load, but a click away: the whole queue unfiltered, and 统计 over the
    seeded 90 days by week (the default period is the current month)."""
    today = datetime.now(timezone(timedelta(hours=8))).date()
    return [
        "/work-orders?limit=50&offset=0",
        f"/stats?from={today - timedelta(days=90)}&to={today + timedelta(days=1)}&group_by=week",
    ]


def run_pages(base_url: str, seeded: Seeded, calls: dict[str, list[str]]) -> dict[str, Any]:
    load_before = load()
    client = console_session(base_url, seeded.admin)
    rows = []
    try:
        for path in PAGES:
            rows.append({"page": path, "what": "html", **time_get(client, path, REPEAT)})
            for url in calls.get(path, []):
                rows.append({"page": path, "what": "api", **time_get(client, url, REPEAT)})
        for url in extra_calls():
            rows.append({"page": "(a click away)", "what": "api", **time_get(client, url, REPEAT)})
    finally:
        client.close()
    return {
        "requests_each": REPEAT,
        "session": "console cookie (linli_session) of an admin, from the log-in form",
        "rows": rows,
        "goal": {
            "p99_ms": GOAL_PAGE_MS,
            "pass": all(r["goal_pass"] for r in rows if r["page"] in PAGES),
        },
        "load_before": load_before,
        "load_after": load(),
    }


# --- part 4: 50 consoles on the live stream ----------------------------------------------------


@dataclass
class Poller:
    """One console's live.js: `after=$` once, then long polls, every arrival stamped."""

    token: str
    last: str = "0"
    waiting: bool = False
    polls: int = 0
    failures: int = 0
    arrivals: dict[tuple[str, int | None], float] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.token}", "Accept": "application/json"}

    async def start(self, client: httpx.AsyncClient) -> None:
        first = await client.get("/events?after=%24&limit=1000", headers=self.headers)
        self.last = first.json()["last_id"]

    async def loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        wait = 0  # the first poll answers at once, as in live.js
        while not stop.is_set():
            self.waiting = wait > 0
            try:
                answer = await client.get(
                    "/events",
                    params={"after": self.last, "wait_ms": wait, "limit": 200},
                    headers=self.headers,
                    timeout=(POLL_WAIT_MS + 15_000) / 1000,  # live.js gives up after wait + 10 s
                )
            except httpx.HTTPError:
                self.failures += 1
                wait = 0
                await asyncio.sleep(0.5)
                continue
            now = time.time()
            self.polls += 1
            if answer.status_code != 200:
                self.failures += 1
                await asyncio.sleep(0.5)
                continue
            page = answer.json()
            for item in page["items"]:
                self.arrivals.setdefault((item["type"], item["order_id"]), now)
            self.last = page["last_id"]
            wait = POLL_WAIT_MS


async def _probe(
    client: httpx.AsyncClient, url: str, token: str, timeout: float = 60
) -> tuple[float, int | None]:
    """(ms, status); no answer within `timeout` gives status None and ms ≈ timeout."""
    start = time.perf_counter()
    try:
        answer = await client.get(url, headers=bearer(token), timeout=timeout)
        status: int | None = answer.status_code
    except httpx.HTTPError:
        status = None
    return 1000 * (time.perf_counter() - start), status


async def _wait_all(
    pollers: list[Poller], key: tuple[str, int], timeout: float
) -> list[float | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(key in p.arrivals for p in pollers):
            break
        await asyncio.sleep(0.01)
    return [p.arrivals.get(key) for p in pollers]


def publish_order(factory: sessionmaker[Session], bot: Any, resident_id: int) -> int:
    """An order made and published in-process (as the scheduler publishes its alerts): the
    stream's fan-out alone, no API request in the way."""
    body = OrderCreate(
        kind="repair",
        channel="wechat",
        resident_id=resident_id,
        details={"category": "水管", "location": "home", "description": "卫生间水管漏水"},
    )
    policy = sla.load_policy(get_settings().sla_config)
    with factory() as session:
        outcome = order_service.create(
            session,
            bot,
            body,
            None,
            None,  # type: ignore[arg-type]  # no hospital: a repair books nothing
            policy,
            datetime.now(timezone.utc),
        )
        order_id = outcome.order.id
    event_service.publish(factory, outcome.event_ids)
    return order_id


async def _press_while_waiting(
    api: ApiServer, terminal: Terminal, pollers: list[Poller], agent: str
) -> dict[str, Any]:
    """One SOS press while the consoles wait: its answer, then delivery to every console."""
    body, headers = sos_request(terminal)
    start = time.time()
    try:
        async with httpx.AsyncClient(base_url=api.base_url) as device:
            answer = await device.post(EVENTS_PATH, content=body, headers=headers, timeout=STALL_S)
    except httpx.HTTPError as exc:
        return {"error": f"no answer within {STALL_S:.0f} s ({type(exc).__name__})"}
    answered = 1000 * (time.time() - start)
    if answer.status_code != 201:
        return {"error": f"{answer.status_code} {answer.text[:200]}"}
    order_id = answer.json()["order_id"]
    got = await _wait_all(pollers, ("emergency.raised", order_id), WAIT_S)
    latencies = [1000 * (t - start) for t in got if t is not None]
    with httpx.Client(base_url=api.base_url, timeout=STALL_S) as client:
        await asyncio.to_thread(settle_emergency, client, agent, order_id)
    return {
        "order_id": order_id,
        "answered_ms": round(answered, 1),
        "delivered": len(latencies),
        "first_ms": round(min(latencies), 1) if latencies else None,
        "last_ms": round(max(latencies), 1) if latencies else None,
    }


async def stream_part(
    api: ApiServer, db: Database, seeded: Seeded, terminals: list[Terminal]
) -> dict[str, Any]:
    engine = make_engine(db.url)
    factory = sessionmaker(bind=engine, expire_on_commit=False, future=True)
    with Session(engine, future=True) as session:
        bot = caller_of(session.query(Principal).filter_by(username=f"bench-bot-{RUN_ID}").one())
    pid = api.proc.pid if api.proc else os.getpid()
    agent = seeded.tokens["agent"]
    rng = random.Random(1)
    probe_ids = [rng.choice(seeded.order_ids) for _ in range(REPEAT + 4 * int(QUIET_S) + 10)]
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    out: dict[str, Any] = {"consoles": CLIENTS, "load_before": load()}
    async with (
        httpx.AsyncClient(base_url=api.base_url, limits=limits, timeout=30) as client,
        httpx.AsyncClient(base_url=api.base_url, timeout=STALL_S) as probes,
    ):
        # Quiet API, no consoles: the reference.
        quiet = [await _probe(probes, f"/work-orders/{probe_ids[i]}", agent) for i in range(REPEAT)]
        out["get_order_without_consoles_ms"] = dist([ms for ms, _ in quiet])
        out["api_rss_mb_before"] = rss_mb(pid)

        # Every console takes its place in the stream first (as consoles opened over the
        # morning would have), then all start polling: a first poll that answers at once,
        # then long polls of 25 s.
        t = time.monotonic()
        pollers = [Poller(token) for token in seeded.consoles[:CLIENTS]]
        await asyncio.gather(*(p.start(client) for p in pollers))
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.loop(client, stop)) for p in pollers]
        while time.monotonic() - t < 30 and not all(p.waiting for p in pollers):
            await asyncio.sleep(0.05)
        out["connected_s"] = round(time.monotonic() - t, 2)
        out["long_polls_sent"] = sum(p.waiting for p in pollers)
        await asyncio.sleep(1.5)

        # The quiet window: the polls wait, nothing is published. CPU and memory; an order
        # read every 250 ms (open loop: each on its own, however long the others take) and,
        # 1 s in, SOS presses: what a resident gets while 50 consoles are open.
        cpu0, (busy0, total0), t0 = cpu_ticks(pid), machine_ticks(), time.monotonic()
        probe_tasks, press_tasks = [], []
        while time.monotonic() - t0 < QUIET_S:
            url = f"/work-orders/{probe_ids[REPEAT + len(probe_tasks)]}"
            probe_tasks.append(asyncio.create_task(_probe(probes, url, agent, STALL_S)))
            if len(probe_tasks) % 4 == 0 and len(press_tasks) < min(STREAM_SOS, len(terminals)):
                press_tasks.append(
                    asyncio.create_task(
                        _press_while_waiting(api, terminals[len(press_tasks)], pollers, agent)
                    )
                )
            await asyncio.sleep(0.25)
        cpu1, (busy1, total1), t1 = cpu_ticks(pid), machine_ticks(), time.monotonic()
        out["quiet_window_s"] = round(t1 - t0, 2)
        out["api_cpu_cores_waiting"] = round((cpu1 - cpu0) / TICK / (t1 - t0), 3)
        out["machine_busy_pct_waiting"] = round(100 * (busy1 - busy0) / max(1, total1 - total0), 1)
        out["api_rss_mb_waiting"] = rss_mb(pid)
        answered_in_window = sum(1 for task in probe_tasks if task.done())
        results = await asyncio.gather(*probe_tasks)
        answered = [ms for ms, status in results if status is not None]
        out["get_order_with_consoles_waiting"] = {
            "ms": dist(answered),
            "probes": len(results),
            "answered_within_window": answered_in_window,
            "over_1s": sum(1 for ms in answered if ms > 1000),
            "no_answer": sum(1 for _, status in results if status is None),
            "no_answer_after_s": STALL_S,
            "not_200": sum(1 for _, status in results if status not in (None, 200)),
        }
        out["sos_while_waiting"] = await asyncio.gather(*press_tasks)
        await asyncio.sleep(1.0)

        # Events published in-process: delivery to every console.
        per_event, every = [], []
        for i in range(EVENTS):
            start = time.time()
            order_id = await asyncio.to_thread(
                publish_order, factory, bot, seeded.residents[i % len(seeded.residents)]
            )
            got = await _wait_all(pollers, ("order.created", order_id), DELIVERY_WAIT_S)
            latencies = [1000 * (t - start) for t in got if t is not None]
            every += latencies
            per_event.append(
                {
                    "order_id": order_id,
                    "delivered": len(latencies),
                    "last_ms": round(max(latencies), 1) if latencies else None,
                }
            )
            await asyncio.sleep(0.5)
        out["publish"] = {
            "events": EVENTS,
            "deliveries_ms": dist(every),
            "all_consoles_ms": dist([e["last_ms"] for e in per_event if e["last_ms"] is not None]),
            "missing": EVENTS * CLIENTS - len(every),
            "per_event": per_event,
        }
        out["api_rss_mb_after"] = rss_mb(pid)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out["poll_failures"] = sum(p.failures for p in pollers)
    engine.dispose()
    out["load_after"] = load()
    return out


# --- part 5: 50 Chromium tabs on the alarm board -----------------------------------------------


def _safe(page: Any, function: str, arg: Any = None) -> Any:
    """Evaluate in a tab that may still be loading (its document replaced meanwhile)."""
    try:
        return page.evaluate(function, arg)
    except Exception:
        return None


def run_tabs(browser: Any, api: ApiServer, seeded: Seeded, terminal: Terminal) -> dict[str, Any]:
    base_url = api.base_url
    pid = api.proc.pid if api.proc else os.getpid()
    out: dict[str, Any] = {"tabs": TABS, "load_before": load()}
    out["chromium_pss_mb_empty"] = pss_mb(chromium_pids())
    contexts, pages = [], []
    start = time.monotonic()
    for token in seeded.consoles[:TABS]:
        # Each tab its own staff session (the cookie the log-in form would set), opened
        # without waiting for the page: a tab whose requests the API does not take yet must
        # not hold up the others for long.
        context = browser.new_context(
            base_url=base_url, locale="zh-CN", timezone_id="Asia/Shanghai"
        )
        context.add_cookies(
            [
                {
                    "name": SESSION_COOKIE,
                    "value": token,
                    "url": base_url,
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )
        page = context.new_page()
        # As if typed into the address bar (the SameSite=Strict cookie goes along); a page
        # not answered within 1 s goes on loading in its tab while the next one opens.
        with suppress(Exception):
            page.goto("/console/", wait_until="commit", timeout=1000)
        contexts.append(context)
        pages.append(page)
    out["opened_s"] = round(time.monotonic() - start, 1)
    connected: dict[int, float] = {}
    deadline = time.monotonic() + TABS_CONNECT_S
    while time.monotonic() < deadline and len(connected) < len(pages):
        for n, page in enumerate(pages):
            if n not in connected and _safe(page, LIVE_JS):
                connected[n] = round(time.monotonic() - start, 1)
        time.sleep(0.1)
    out["connected"] = len(connected)
    out["connected_within_s"] = TABS_CONNECT_S
    out["connect_s"] = dist(list(connected.values()))
    time.sleep(2.0)
    out["chromium_processes"] = len(chromium_pids())
    out["chromium_pss_mb"] = pss_mb(chromium_pids())
    out["api_rss_mb"] = rss_mb(pid)
    cpu0, t0 = cpu_ticks(pid), time.monotonic()
    ch0 = sum((_stat(p) or (0, "", 0, 0))[2] for p in chromium_pids())
    time.sleep(3.0)
    ch1 = sum((_stat(p) or (0, "", 0, 0))[2] for p in chromium_pids())
    elapsed = time.monotonic() - t0
    out["api_cpu_cores_idle_tabs"] = round((cpu_ticks(pid) - cpu0) / TICK / elapsed, 3)
    out["chromium_cpu_cores_idle_tabs"] = round((ch1 - ch0) / TICK / elapsed, 2)

    watching = []
    for n in sorted(connected):
        page = pages[n]
        if _safe(page, OBSERVER_JS, ["#alarm-list", "orderId"]):
            watching.append((page, clock_offset_ms(page)))
    out["watching"] = len(watching)
    body, headers = sos_request(terminal)
    t0w = time.time()
    with httpx.Client(base_url=base_url, timeout=STALL_S) as client:
        try:
            answer = client.post(EVENTS_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            answer = None
            out["sos_error"] = f"no answer within {STALL_S:.0f} s ({type(exc).__name__})"
        out["sos_answered_ms"] = round(1000 * (time.time() - t0w), 1)
        if answer is not None and answer.status_code == 201:
            order_id = str(answer.json()["order_id"])
            latencies = []
            deadline = time.monotonic() + TABS_PAINT_S
            for page, offset in watching:
                stamps = painted_at(page, order_id, max(0.1, deadline - time.monotonic()))
                if stamps:
                    latencies.append(stamps["painted"] - offset - 1000 * t0w)
            out["sos_painted_ms"] = dist(latencies)
            out["sos_painted_tabs"] = len(latencies)
            out["chromium_pss_mb_alarm"] = pss_mb(chromium_pids())
        elif answer is not None:
            out["sos_error"] = f"{answer.status_code} {answer.text[:200]}"
    for context in contexts:
        context.close()
    out["load_after"] = load()
    return out


# --- running it --------------------------------------------------------------------------------


@contextmanager
def api_server(db: Database, backend: str, tag: str) -> Iterator[ApiServer]:
    api = ApiServer(db.url, 1, OUT_DIR / f"console-api-{backend}-{tag}.log")
    api.start()
    try:
        yield api
    finally:
        api.stop()


def attempt(results: dict[str, Any], name: str, run: Callable[[], Any]) -> None:
    print(f"  {name} …", flush=True)
    started = time.monotonic()
    try:
        results[name] = run()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    if isinstance(results[name], dict):
        results[name]["elapsed_s"] = round(time.monotonic() - started, 1)
    show(name, results[name])


def run_backend(backend: str, live: bool, workdir: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    db = fresh_database(backend, "console", workdir)
    results: dict[str, Any] = {"backend": backend}
    try:
        spare = 1 + STREAM_SOS + (1 if TABS else 0)
        needed = (WARMUP + PRESSES + spare) if live else 0
        seeded = seed(db, needed, max(CLIENTS, TABS) if live else 0)
        results["seed"] = {**seeded.counts, "seconds": seeded.seconds}
        print(f"  seeded {seeded.counts} in {seeded.seconds} s", flush=True)
        presses = seeded.terminals[: WARMUP + PRESSES]
        stream_terms = seeded.terminals[WARMUP + PRESSES : WARMUP + PRESSES + STREAM_SOS]
        tab_term = seeded.terminals[-1] if seeded.terminals else None
        calls: dict[str, list[str]] = {}
        with api_server(db, backend, "main") as api:
            with sync_playwright() as playwright:
                browser = launch(playwright)
                try:
                    if live:
                        attempt(
                            results,
                            "alarm",
                            lambda: run_alarm(browser, api.base_url, seeded, presses),
                        )
                        attempt(
                            results, "handover", lambda: run_handover(browser, api.base_url, seeded)
                        )
                    calls = capture_calls(browser, api.base_url, seeded)
                finally:
                    browser.close()
            results["page_calls"] = calls
            attempt(results, "pages", lambda: run_pages(api.base_url, seeded, calls))
        if live and CLIENTS:
            with api_server(db, backend, "stream") as api:
                attempt(
                    results,
                    "stream",
                    lambda: asyncio.run(stream_part(api, db, seeded, stream_terms)),
                )
        if live and TABS and tab_term is not None:
            with api_server(db, backend, "tabs") as api, sync_playwright() as playwright:
                browser = launch(playwright)
                try:
                    attempt(results, "tabs", lambda: run_tabs(browser, api, seeded, tab_term))
                finally:
                    browser.close()
    finally:
        db.drop()
    return results


def show(name: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"    {name}: FAILED {r['error']}", flush=True)
        return
    if name in ("alarm", "handover"):
        d = r["painted_ms"]
        extra = ""
        if name == "alarm":
            extra = f"  goal p99<1000 ms {'PASS' if r['goal']['pass'] else 'MISS'}"
        print(
            f"    painted {r['painted']}/{r.get('presses', r.get('handovers'))}  p50 "
            f"{_ms(d['p50'])} ms  p99 {_ms(d['p99'])} ms  max {_ms(d['max'])} ms  (API answered "
            f"p50 {_ms(r['answered_ms']['p50'])} ms){extra}",
            flush=True,
        )
    elif name == "pages":
        for row in r["rows"]:
            d = row["ms"]
            print(
                f"    {row['page']:<24}{row['what']:<5} p50 {_ms(d['p50']):>7} p99 "
                f"{_ms(d['p99']):>7} ms  {row['bytes']:>8} B  {','.join(row['statuses'])}  "
                f"{'PASS' if row['goal_pass'] else 'MISS'}  {row['url'][:70]}",
                flush=True,
            )
    elif name == "stream":
        p, w = r["publish"], r["get_order_with_consoles_waiting"]
        print(
            f"    {r['consoles']} consoles: delivery p50 {_ms(p['deliveries_ms']['p50'])} p99 "
            f"{_ms(p['deliveries_ms']['p99'])} max {_ms(p['deliveries_ms']['max'])} ms, "
            f"missing {p['missing']}; API {r['api_cpu_cores_waiting']} cores, "
            f"{r['api_rss_mb_waiting']} MB while waiting",
            flush=True,
        )
        print(
            f"    GET /work-orders/{{id}}: alone p99 "
            f"{_ms(r['get_order_without_consoles_ms']['p99'])} ms; with the consoles waiting "
            f"p50 {_ms(w['ms']['p50'])} p99 {_ms(w['ms']['p99'])} max {_ms(w['ms']['max'])} ms "
            f"({w['over_1s']}/{w['probes']} over 1 s, {w['no_answer']} unanswered after "
            f"{w['no_answer_after_s']:.0f} s)",
            flush=True,
        )
        for press in r["sos_while_waiting"]:
            print(f"    SOS press while they wait: {press}", flush=True)
    elif name == "tabs":
        print(
            f"    opened in {r['opened_s']} s; {r['connected']}/{r['tabs']} connected within "
            f"{r['connected_within_s']:.0f} s more (since the first opened: p50 "
            f"{_ms(r['connect_s']['p50'])} s, last {_ms(r['connect_s']['max'])} s); "
            f"Chromium {r.get('chromium_pss_mb')} MB PSS",
            flush=True,
        )
        painted = r.get("sos_painted_ms") or {}
        print(
            f"    SOS answered after {r.get('sos_answered_ms')} ms {r.get('sos_error', '')}; "
            f"painted in {r.get('sos_painted_tabs', 0)} of {r.get('watching')} tabs: p50 "
            f"{_ms(painted.get('p50'))} "
            f"max {_ms(painted.get('max'))} ms",
            flush=True,
        )


def print_summary(report: dict[str, Any]) -> None:
    m = report["machine"]
    print()
    print(
        f"Staff console ({m['cores']} cores; load average {m['load_before']} before, "
        f"{m['load_after']} after)"
    )
    for r in report["results"]:
        b = r["backend"]
        for name, goal in (("alarm", "goal p99 < 1,000 ms"), ("handover", "")):
            part = r.get(name)
            if part and "error" not in part:
                d = part["painted_ms"]
                verdict = ("PASS" if part["goal"]["pass"] else "MISS") if "goal" in part else ""
                print(
                    f"  {b:<11}{name:<9} press → painted  p50 {_ms(d['p50']):>7} ms  p99 "
                    f"{_ms(d['p99']):>7} ms  max {_ms(d['max']):>7} ms  missing "
                    f"{part['missing']}  {goal} {verdict}"
                )
        part = r.get("pages")
        if part and "error" not in part:
            on_load = [row for row in part["rows"] if row["page"] in PAGES]
            worst = max(on_load, key=lambda row: row["ms"]["p99"] or 0)
            print(
                f"  {b:<11}pages     slowest on load p99 {_ms(worst['ms']['p99'])} ms "
                f"({worst['url'][:50]}); goal p99 < 300 ms: "
                f"{'PASS' if part['goal']['pass'] else 'MISS'}"
            )
            for row in part["rows"]:
                if row["page"] not in PAGES:
                    print(
                        f"  {'':<11}{'':<10}a click away p99 {_ms(row['ms']['p99'])} ms "
                        f"({row['url'][:60]})"
                    )
        part = r.get("stream")
        if part and "error" not in part:
            w = part["get_order_with_consoles_waiting"]
            print(
                f"  {b:<11}stream    {part['consoles']} consoles: delivery p99 "
                f"{_ms(part['publish']['deliveries_ms']['p99'])} ms; GET order while they wait "
                f"p50 {_ms(w['ms']['p50'])} ms ({w['no_answer']}/{w['probes']} unanswered); "
                f"API {part['api_rss_mb_waiting']} MB, {part['api_cpu_cores_waiting']} cores"
            )
            for press in part["sos_while_waiting"]:
                print(
                    f"  {'':<11}{'':<10}SOS press while they wait: answered "
                    f"{_ms(press.get('answered_ms'))} ms, on all consoles "
                    f"{_ms(press.get('last_ms'))} ms {press.get('error', '')}"
                )
        part = r.get("tabs")
        if part and "error" not in part:
            painted = part.get("sos_painted_ms") or {}
            print(
                f"  {b:<11}tabs      {part['connected']}/{part['tabs']} connected; Chromium "
                f"{part['chromium_pss_mb']} MB; SOS painted in {part.get('sos_painted_tabs', 0)} "
                f"tabs, max {_ms(painted.get('max'))} ms"
            )


def main() -> int:
    started = time.monotonic()
    settings = get_settings()
    client = services_answer(BACKENDS)
    if client is None:
        return 1
    if not CHROMIUM.exists():
        print(f"bench: {CHROMIUM} is missing (Debian chromium: make debian-deps)", file=sys.stderr)
        return 1
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"bench: staff console, backends {','.join(BACKENDS)} (live parts on {BACKENDS[0]}), "
        f"{ORDERS} orders, {PRESSES} presses, {HANDOFFS} hand-overs, {CLIENTS} consoles, "
        f"{TABS} tabs; API logs in {OUT_DIR.relative_to(ROOT)}/",
        flush=True,
    )
    load_before = load()
    results: list[dict[str, Any]] = []
    failure = None
    with tempfile.TemporaryDirectory(prefix="linli-console-bench-") as tmp:
        try:
            for n, backend in enumerate(BACKENDS):
                print(f"bench: {backend}", flush=True)
                for old in OUT_DIR.glob(f"console-api-{backend}-*.log"):
                    old.unlink(missing_ok=True)
                try:
                    results.append(run_backend(backend, n == 0, Path(tmp)))
                except RuntimeError as exc:
                    failure = f"{backend}: {exc}"
                    print(f"bench: {failure}", file=sys.stderr)
                    break
        finally:
            client.delete(settings.event_stream)
    report = {
        "bench": "console",
        "run_id": RUN_ID,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": load(),
            "chromium": str(CHROMIUM),
        },
        "config": {
            "orders": ORDERS,
            "residents": RESIDENTS,
            "presses": PRESSES,
            "handovers": HANDOFFS,
            "warmup": WARMUP,
            "repeat": REPEAT,
            "consoles": CLIENTS,
            "events": EVENTS,
            "stream_sos": STREAM_SOS,
            "tabs": TABS,
            "poll_wait_ms": POLL_WAIT_MS,
            "postgres_url": POSTGRES_URL,
            "event_stream": settings.event_stream,
        },
        "goals": {"alarm_p99_ms": GOAL_ALARM_MS, "page_p99_ms": GOAL_PAGE_MS},
        "results": results,
        "failure": failure,
    }
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_summary(report)
    print(f"\nbench: results in {OUT.relative_to(ROOT)} ({report['elapsed_s']} s)")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
