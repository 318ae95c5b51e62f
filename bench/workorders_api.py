"""Throughput and latency of the work-order API under 50 concurrent clients, SQLite and PostgreSQL.

For each backend (a temp SQLite file; a fresh PostgreSQL database, created and dropped here) and
each uvicorn worker count, the bench migrates a fresh database, seeds one service account (the
bot) and residents in-process, and drives `python -m workorders serve` on 127.0.0.1 with `wrk`
(Lua scripts, one client thread) or, without wrk, an asyncio httpx client:

  create        POST /work-orders: a repair order for a pre-created resident, new Idempotency-Key
  read          GET /work-orders/{id} of orders that exist (those made in the create phase)
  create@300/s  the same, paced at the goal rate (PostgreSQL, its better worker count only)
  read@1000/s

Every phase gets a freshly started API (a stalled phase cannot spoil the next one), warms up,
runs a fixed time and stops by itself. The bench prints a results table (requests, req/s,
p50/p99, errors, goal verdicts) and a CPU table (where the two cores went), and writes it all
to var/bench/workorders_api.json. bench/README.md explains how to read them.

Exit status: 0 when it measured (missed goals included); 1 when PostgreSQL, Redis or the API
would not start, or a phase had more than 1 % errors (timeouts, non-2xx, socket errors).

Knobs (environment): BENCH_POSTGRES_URL, BENCH_BACKENDS=sqlite,postgresql, BENCH_WORKERS=1,2,
BENCH_CLIENTS=50, BENCH_DURATION=10, BENCH_WARMUP=2, BENCH_TIMEOUT=2 (seconds after which a
response counts as an error), BENCH_RESIDENTS=200, BENCH_PACED=1, BENCH_CLIENT=auto|wrk|httpx.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/workorders_api.py`
    sys.path.insert(0, str(ROOT))

RUN_ID = uuid.uuid4().hex[:8]
# Fixed before any `workorders` import, so the in-process seeding and the API subprocesses agree.
# The databases are fresh and dropped afterwards, so a throwaway data key is right (var/linli.env
# stays untouched); events go to a Redis stream of their own, deleted at the end.
os.environ["LINLI_DATA_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
os.environ["EVENT_STREAM"] = f"linli:bench:{RUN_ID}:events"

# ruff: noqa: E402
import httpx
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from workorders.contract import Role
from workorders.db import make_engine
from workorders.migrate import upgrade
from workorders.models import Principal, WorkOrder
from workorders.schemas import ResidentCreate
from workorders.security import issue_token
from workorders.services import residents as resident_service

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [
    b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",") if b.strip()
]
WORKERS = [int(w) for w in os.environ.get("BENCH_WORKERS", "1,2").split(",") if w.strip()]
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
TIMEOUT = int(os.environ.get("BENCH_TIMEOUT", "2"))
RESIDENTS = int(os.environ.get("BENCH_RESIDENTS", "200"))
CLIENT = os.environ.get("BENCH_CLIENT", "auto")
PACED = os.environ.get("BENCH_PACED", "1") != "0"
OUT_DIR = ROOT / "var" / "bench"
OUT = OUT_DIR / "workorders_api.json"

MAX_ERROR_RATE = 0.01
# The goals, for PostgreSQL with 50 concurrent clients.
GOALS = {"read": {"rps": 1000.0, "p99_ms": 50.0}, "create": {"rps": 300.0, "p99_ms": 50.0}}

# The bot as deployed (tests/support.py SERVICE_SCOPES): it creates and reads orders for residents.
BOT_SCOPES = [
    "residents:lookup",
    "residents:read",
    "residents:write",
    "residents:pii",
    "orders:create",
    "orders:read",
    "orders:update",
    "orders:rate",
    "appointments",
]
REPAIR_DETAILS = {"category": "水管", "location": "home", "description": "厨房水管漏水了"}
TICK = os.sysconf("SC_CLK_TCK")


# --- databases and seed data -----------------------------------------------------------------


@dataclass
class Database:
    backend: str
    url: str
    admin_url: str | None = None
    name: str | None = None
    sqlite_path: Path | None = None

    def drop(self) -> None:
        if self.admin_url and self.name:
            admin = make_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()
        if self.sqlite_path:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)


def fresh_database(backend: str, tag: str, workdir: Path) -> Database:
    if backend == "sqlite":
        path = workdir / f"bench-{tag}.db"
        db = Database(backend, f"sqlite:///{path}", sqlite_path=path)
    else:
        name = f"linli_bench_{RUN_ID}_{tag}"
        admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        db = Database(backend, url, admin_url=POSTGRES_URL, name=name)
    try:
        upgrade(db.url)
    except BaseException:
        db.drop()
        raise
    return db


def _phone(i: int) -> str:
    """A valid mobile number, distinct for every i within a run."""
    return f"139{(int(RUN_ID, 16) + i) % 100_000_000:08d}"


def seed(db: Database, residents: int) -> tuple[str, list[int]]:
    """The bot account with a token, and `residents` residents; returns (token, resident ids)."""
    engine = make_engine(db.url)
    try:
        with Session(engine, future=True) as session:
            bot = Principal(
                username="bench-bot", display_name="bench bot", role=Role.service, scopes=BOT_SCOPES
            )
            session.add(bot)
            session.flush()
            token = issue_token(session, bot, None)
            made = [
                resident_service.create(
                    session,
                    ResidentCreate(
                        name="王秀英",
                        phone=_phone(2 * i),
                        community="阳光社区",
                        address={"building": str(1 + i % 12), "unit": "2", "room": "502"},
                        birth_year=1945,
                        service_notes={
                            "mobility": "拄拐杖",
                            "hearing": "左耳听力弱",
                            "chronic_illness": "高血压",
                        },
                        contacts=[{"name": "王强", "relation": "儿子", "phone": _phone(2 * i + 1)}],
                    ),
                )
                for i in range(residents)
            ]
            session.commit()
            return token, [r.id for r in made]
    finally:
        engine.dispose()


def order_ids(db: Database) -> list[int]:
    engine = make_engine(db.url)
    try:
        with Session(engine, future=True) as session:
            return list(session.execute(select(WorkOrder.id).order_by(WorkOrder.id)).scalars())
    finally:
        engine.dispose()


# --- CPU accounting (what the two cores did during a phase) --------------------------------


def _procs() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, comm, utime+stime ticks) for every process we can see."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        out[int(entry)] = (int(rest[1]), comm, int(rest[11]) + int(rest[12]))
    return out


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


@dataclass
class Snapshot:
    procs: dict[int, tuple[int, str, int]]
    busy: int
    total: int


def snapshot() -> Snapshot:
    busy, total = _machine()
    return Snapshot(_procs(), busy, total)


def cpu_between(a: Snapshot, b: Snapshot, api_pid: int, client_s: float) -> dict[str, float]:
    """CPU seconds per group: the API process tree, PostgreSQL, Redis, the client, the rest."""
    tree, frontier = set(), {api_pid}
    while frontier:  # the uvicorn parent and its worker processes
        tree |= frontier
        frontier = {p for p, (pp, _, _) in b.procs.items() if pp in frontier} - tree

    def used(pid: int) -> float:  # processes that started during the phase count in full
        before = a.procs.get(pid)
        ticks = b.procs[pid][2] - (before[2] if before and before[1] == b.procs[pid][1] else 0)
        return max(0, ticks) / TICK

    groups = {"api_s": 0.0, "postgres_s": 0.0, "redis_s": 0.0}
    for pid, (_, comm, _) in b.procs.items():
        if pid in tree:
            groups["api_s"] += used(pid)
        elif comm.startswith("postgres"):
            groups["postgres_s"] += used(pid)
        elif comm.startswith("redis-server"):
            groups["redis_s"] += used(pid)
    busy_s = (b.busy - a.busy) / TICK
    wall_cores = (b.total - a.total) / TICK
    groups["client_s"] = client_s
    groups["other_s"] = max(0.0, busy_s - sum(groups.values()))
    groups["busy_pct"] = 100.0 * busy_s / max(wall_cores, 1e-9)
    return groups


def _client_cpu(tool: str) -> float:
    """wrk is a child (its CPU lands in RUSAGE_CHILDREN once it exits); httpx runs in-process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if tool == "wrk" else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the API under test ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """`python -m workorders serve` as a subprocess in its own session; its log in var/bench/."""

    def __init__(self, database_url: str, workers: int, log_path: Path) -> None:
        self.database_url = database_url
        self.workers = workers
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, "DATABASE_URL": self.database_url}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workorders",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the API exited with {self.proc.returncode} (log: {self.log_path})"
                )
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the API did not become healthy within 60 s (log: {self.log_path})")

    def answers(self, within: float) -> bool:
        """Does the API still answer at all (any status)? A deadlocked one does not."""
        try:
            httpx.get(f"{self.base_url}/health", timeout=within)
        except httpx.HTTPError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM; a server stuck with requests in flight gets SIGKILL (its group) after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session this bench started
            self.proc.wait(5)


# --- load generators -------------------------------------------------------------------------


@dataclass
class Load:
    requests: int  # responses received, whatever their status
    ok: int  # 2xx responses
    sent: int
    duration_s: float
    statuses: dict[str, int]  # responses by status class
    # connect/read/write: socket errors; slow: responses after more than TIMEOUT seconds;
    # stalled: requests still unanswered at the end when the API no longer answered at all.
    socket_errors: dict[str, int]
    slow: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    stalled: bool = False

    @property
    def unanswered(self) -> int:
        """Requests in flight when the phase ended (one per connection at most: closed loop)."""
        left = self.sent - self.requests - sum(self.socket_errors.values())
        return max(0, min(CLIENTS, left))

    @property
    def error_detail(self) -> dict[str, int]:
        detail = {k: v for k, v in self.statuses.items() if k != "2xx" and v}
        detail.update({k: v for k, v in self.socket_errors.items() if v})
        if self.slow:
            detail[f"slower than {TIMEOUT} s"] = self.slow
        if self.stalled and self.unanswered:
            detail["unanswered (API stalled)"] = self.unanswered
        return detail

    @property
    def errors(self) -> int:
        # A slow error response is one error, not two: cap the response errors at the responses.
        bad_responses = min(self.requests, (self.requests - self.ok) + self.slow)
        stalled = self.unanswered if self.stalled else 0
        return bad_responses + sum(self.socket_errors.values()) + stalled


# One wrk thread; setup() numbers the threads anyway, so scripts stay right with -t>1.
_LUA_COMMON = r"""
-- Per thread (globals, so that done() can read them with thread:get): requests sent, responses
-- received by status class. One wrk thread is used; the numbering keeps -t>1 right anyway.
sent, received, s2xx, s3xx, s4xx, s5xx = 0, 0, 0, 0, 0, 0
local threads, next_tid = {}, 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

function response(status, headers, body)
  received = received + 1
  if status < 300 then s2xx = s2xx + 1
  elseif status < 400 then s3xx = s3xx + 1
  elseif status < 500 then s4xx = s4xx + 1
  else s5xx = s5xx + 1 end
end

function done(summary, latency, requests)
  local t = {sent = 0, received = 0, s2xx = 0, s3xx = 0, s4xx = 0, s5xx = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"sent":%d,"received":%d,"2xx":%d,"3xx":%d,"4xx":%d,"5xx":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, t.sent, t.received, t.s2xx, t.s3xx, t.s4xx, t.s5xx))
end
"""


def lua_create(token: str, prefix: str, resident_ids: list[int]) -> str:
    head, tail = json.dumps(
        {
            "kind": "repair",
            "channel": "wechat",
            "resident_id": 999_999_999,
            "details": REPAIR_DETAILS,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).split("999999999")
    return (
        f"""
local token = "{token}"
local prefix = "{prefix}"
local residents = {{{",".join(map(str, resident_ids))}}}
local n = #residents
local head, tail = [==[{head}]==], [==[{tail}]==]

function request()
  sent = sent + 1
  return wrk.format("POST", "/work-orders", {{
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. sent,
  }}, head .. residents[(sent * 31 + tid) % n + 1] .. tail)
end
"""
        + _LUA_COMMON
    )


def lua_read(token: str, ids: list[int]) -> str:
    return (
        f"""
local token = "{token}"
local ids = {{{",".join(map(str, ids))}}}
local n = #ids

function request()
  sent = sent + 1
  return wrk.format("GET", "/work-orders/" .. ids[(sent * 7919 + tid * 104729) % n + 1], {{
    ["Authorization"] = "Bearer " .. token,
  }}, nil)
end
"""
        + _LUA_COMMON
    )


def lua_pace(rate: float) -> str:
    """delay() for a paced phase: request k is due at start + k/rate (one schedule for all
    connections, wrk2-style); a connection still waiting for its response sends nothing, so
    a slow API makes the achieved rate fall short of the target instead of queueing more."""
    return f"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local interval_ms = {1000.0 / rate!r}
local t0, due = nil, 0

function delay()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  local now = tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  if t0 == nil then t0 = now end
  due = due + 1
  local wait = t0 + due * interval_ms - now
  if wait < 0 then return 0 end
  return wait
end
"""


def run_wrk(base_url: str, script: str, seconds: int, workdir: Path) -> Load:
    path = workdir / f"phase-{uuid.uuid4().hex[:8]}.lua"
    path.write_text(script, encoding="utf-8")
    cmd = [
        "wrk",
        "-t1",
        f"-c{CLIENTS}",
        f"-d{seconds}s",
        f"--timeout={TIMEOUT}s",
        "-s",
        str(path),
        base_url,
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=seconds + 60)
    out = proc.stdout.decode(errors="replace")
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({proc.returncode}): {proc.stderr.decode()[-500:]} {out[-500:]}"
        )
    r = json.loads(line.split(" ", 1)[1])
    return Load(
        requests=r["requests"],
        ok=r["2xx"],
        sent=r["sent"],
        duration_s=r["duration_us"] / 1e6,
        statuses={k: r[k] for k in ("2xx", "3xx", "4xx", "5xx")},
        socket_errors={k: r[k] for k in ("connect", "read", "write")},
        slow=r["timeout"],  # wrk 4 counts a response slower than --timeout here
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        mean_ms=r["mean_us"] / 1000,
    )


Request = Callable[[int, int], tuple[str, str, dict[str, str], bytes]]


def run_httpx(base_url: str, make_request: Request, seconds: int, rate: float | None) -> Load:
    """Fallback without wrk: CLIENTS coroutines on one uvloop loop sharing a pooled AsyncClient.

    It runs in this process and costs far more CPU per request than wrk: on 2 cores it takes
    a visible share from the server (see the client column of the CPU table).
    """
    import asyncio

    async def main() -> Load:
        latencies: list[float] = []
        statuses = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
        failures: dict[str, int] = {}
        sent = 0
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT) as client:
            start = time.perf_counter()
            deadline = start + seconds
            scheduled = 0

            async def worker(wid: int) -> None:
                nonlocal sent, scheduled
                n = 0
                while time.perf_counter() < deadline:
                    if rate:  # the schedule of lua_pace: request k is due at start + k/rate
                        scheduled += 1
                        wait = start + scheduled / rate - time.perf_counter()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    n += 1
                    sent += 1
                    method, path, headers, body = make_request(wid, n)
                    t0 = time.perf_counter()
                    try:
                        response = await client.request(method, path, headers=headers, content=body)
                    except httpx.HTTPError as exc:  # no response: timed out, or the socket failed
                        key = "timeout" if isinstance(exc, httpx.TimeoutException) else "read"
                        failures[key] = failures.get(key, 0) + 1
                        continue
                    latencies.append(time.perf_counter() - t0)
                    statuses[f"{min(5, max(2, response.status_code // 100))}xx"] += 1

            await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
            elapsed = time.perf_counter() - start
        latencies.sort()

        def pct(p: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

        return Load(
            requests=len(latencies),
            ok=statuses["2xx"],
            sent=sent,
            duration_s=elapsed,
            statuses=statuses,
            socket_errors=failures,
            slow=0,  # a request slower than TIMEOUT raised and counts under "timeout"
            p50_ms=pct(50),
            p90_ms=pct(90),
            p99_ms=pct(99),
            max_ms=latencies[-1] * 1000 if latencies else 0.0,
            mean_ms=sum(latencies) / len(latencies) * 1000 if latencies else 0.0,
        )

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main())


# --- phases ----------------------------------------------------------------------------------


@dataclass
class Phase:
    backend: str
    workers: int
    operation: str
    load: Load
    cpu: dict[str, float] = field(default_factory=dict)
    rate: float | None = None  # the scheduled rate of a paced phase; None: saturation

    @property
    def label(self) -> str:
        return f"{self.operation}@{self.rate:g}/s" if self.rate else self.operation

    @property
    def rps(self) -> float:
        """Successful (2xx) responses per second: fast errors do not count as throughput."""
        return self.load.ok / self.load.duration_s if self.load.duration_s else 0.0

    @property
    def error_rate(self) -> float:
        load = self.load
        attempts = load.requests + sum(load.socket_errors.values())
        return load.errors / max(1, attempts + (load.unanswered if load.stalled else 0))

    @property
    def api_ms_per_response(self) -> float | None:
        """The API's CPU per response: what a request costs, whatever the throughput."""
        if not self.load.requests:
            return None
        return 1000 * self.cpu.get("api_s", 0.0) / self.load.requests


@dataclass
class Workload:
    """A seeded database and what the load generators need to drive it."""

    db: Database
    workers: int
    token: str
    resident_ids: list[int]
    order_ids: list[int] = field(default_factory=list)

    def _key_prefix(self, tag: str) -> str:
        return f"bench-{RUN_ID}-w{self.workers}-{tag}-{uuid.uuid4().hex[:6]}"

    def wrk_script(self, operation: str, tag: str, rate: float | None) -> str:
        if operation == "create":
            script = lua_create(self.token, self._key_prefix(tag), self.resident_ids)
        else:
            script = lua_read(self.token, self.order_ids)
        return script + (lua_pace(rate) if rate else "")

    def httpx_request(self, operation: str, tag: str) -> Request:
        auth = {"Authorization": f"Bearer {self.token}"}
        if operation == "read":
            ids = self.order_ids

            def read(wid: int, n: int) -> tuple[str, str, dict[str, str], bytes]:
                return "GET", f"/work-orders/{ids[(n * 7919 + wid * 104729) % len(ids)]}", auth, b""

            return read
        prefix, residents = self._key_prefix(tag), self.resident_ids

        def create(wid: int, n: int) -> tuple[str, str, dict[str, str], bytes]:
            body = {
                "kind": "repair",
                "channel": "wechat",
                "details": REPAIR_DETAILS,
                "resident_id": residents[(n * 31 + wid) % len(residents)],
            }
            headers = {
                **auth,
                "Content-Type": "application/json",
                "Idempotency-Key": f"{prefix}-{wid}-{n}",
            }
            return "POST", "/work-orders", headers, json.dumps(body, ensure_ascii=False).encode()

        return create


def run_phase(
    tool: str, work: Workload, operation: str, workdir: Path, rate: float | None = None
) -> Phase:
    """A freshly started API; warm-up; DURATION seconds measured; the API stopped again.

    rate None: the clients send as fast as the API answers (saturation). A rate: requests are
    scheduled at that many per second in total, never more than CLIENTS in flight.
    """
    db = work.db
    server = ApiServer(db.url, work.workers, OUT_DIR / f"api-{db.backend}-w{work.workers}.log")
    server.start()
    try:

        def drive(seconds: int, tag: str) -> Load:
            if tool == "wrk":
                script = work.wrk_script(operation, tag, rate)
                return run_wrk(server.base_url, script, seconds, workdir)
            return run_httpx(server.base_url, work.httpx_request(operation, tag), seconds, rate)

        if WARMUP > 0:
            drive(WARMUP, "warm")
        assert server.proc is not None
        before, client_before = snapshot(), _client_cpu(tool)
        load = drive(DURATION, "run")
        after, client_after = snapshot(), _client_cpu(tool)
        load.stalled = not server.answers(within=5.0)
        cpu = cpu_between(before, after, server.proc.pid, client_after - client_before)
        return Phase(db.backend, work.workers, operation, load, cpu, rate)
    finally:
        server.stop()


def run_config(tool: str, work: Workload, workdir: Path) -> tuple[list[Phase], dict[str, Any]]:
    """Saturation: the create phase, then reads of the orders it made."""
    phases = [run_phase(tool, work, "create", workdir)]
    work.order_ids = order_ids(work.db)
    info: dict[str, Any] = {
        "residents": len(work.resident_ids),
        "orders_after_create_phase": len(work.order_ids),
    }
    if work.order_ids:
        phases.append(run_phase(tool, work, "read", workdir))
    else:
        info["note"] = "the create phase made no orders, so there was nothing to read"
    return phases, info


# --- report ----------------------------------------------------------------------------------


def goal_check(phase: Phase) -> dict[str, Any] | None:
    goal = GOALS.get(phase.operation)
    if phase.backend != "postgresql" or goal is None:
        return None
    if phase.rate:  # paced at the goal rate: it has to keep up (5 % slack for the schedule)
        rate_ok = phase.rate >= goal["rps"] and phase.rps >= 0.95 * goal["rps"]
    else:
        rate_ok = phase.rps >= goal["rps"]
    p99_ok = phase.load.requests > 0 and phase.load.p99_ms < goal["p99_ms"]
    ok = rate_ok and p99_ok and phase.error_rate <= MAX_ERROR_RATE
    return {"pass": ok, "rps_ok": rate_ok, "p99_ok": p99_ok, **goal}


def verdict(phase: Phase) -> str:
    g = goal_check(phase)
    if g is None:
        return "-"
    parts = [
        f"≥{g['rps']:,.0f}/s {'ok' if g['rps_ok'] else 'no'}",
        f"p99<{g['p99_ms']:.0f}ms {'ok' if g['p99_ok'] else 'no'}",
    ]
    if phase.error_rate > MAX_ERROR_RATE:
        parts.append("errors")
    return f"{'PASS' if g['pass'] else 'MISS'} ({', '.join(parts)})"


def best_workers(phases: list[Phase], backend: str) -> int | None:
    """The worker count with the best geometric mean of create and read throughput."""
    saturated = [p for p in phases if p.backend == backend and p.rate is None]
    scores: dict[int, float] = {}
    for w in sorted({p.workers for p in saturated}):
        rates = [max(p.rps, 1e-3) for p in saturated if p.workers == w]
        product = 1.0
        for r in rates:
            product *= r
        scores[w] = product ** (1 / len(rates))
    return max(scores, key=lambda w: scores[w]) if scores else None


def print_tables(phases: list[Phase], tool: str, best: dict[str, int | None]) -> None:
    print()
    print(
        f"Work-order API, {CLIENTS} concurrent clients ({tool}), {DURATION} s measured after "
        f"{WARMUP} s warm-up. req/s counts 2xx responses; errors are non-2xx responses, socket "
        f"errors, responses slower than {TIMEOUT} s and requests left unanswered by a stalled API."
    )
    head = (
        f"{'backend':<11}{'workers':>7}  {'operation':<14}{'requests':>9}{'req/s':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  goal (PostgreSQL)"
    )
    print(head)
    print("-" * (len(head) + 34))
    for p in phases:
        mark = "*" if best.get(p.backend) == p.workers else " "
        p50 = f"{p.load.p50_ms:9.1f}" if p.load.requests else f"{'-':>9}"
        p99 = f"{p.load.p99_ms:9.1f}" if p.load.requests else f"{'-':>9}"
        note = "  STALLED" if p.load.stalled else ""
        print(
            f"{p.backend:<11}{p.workers:>6}{mark}  {p.label:<14}"
            f"{p.load.requests:>9}{p.rps:>8.0f}{p50}{p99}{p.load.errors:>8}  {verdict(p)}{note}"
        )
    print("* the better worker count for that backend (geometric mean of create and read req/s)")
    print()
    print(
        "CPU during each measured phase, in cores (CPU-seconds per second; the machine has "
        f"{os.cpu_count()}), and the API's CPU-ms per response. other = every other process on "
        "the machine: well above 0 means someone else's load disturbed the run."
    )
    print(
        f"{'backend':<11}{'workers':>7}  {'operation':<14}{'API':>6}{'postgres':>9}{'redis':>7}"
        f"{'client':>8}{'other':>7}{'busy %':>8}{'API ms/resp':>13}"
    )
    for p in phases:
        c = p.cpu
        wall = max(p.load.duration_s, 1e-9)
        ms = p.api_ms_per_response
        per = f"{ms:13.2f}" if ms is not None else f"{'-':>13}"
        print(
            f"{p.backend:<11}{p.workers:>7}  {p.label:<14}{c['api_s'] / wall:6.2f}"
            f"{c['postgres_s'] / wall:9.2f}{c['redis_s'] / wall:7.2f}{c['client_s'] / wall:8.2f}"
            f"{c['other_s'] / wall:7.2f}{c['busy_pct']:8.0f}{per}"
        )


def services_answer(backends: list[str]) -> redis.Redis | None:
    """Redis (returned, to be used) and, when asked for, PostgreSQL answer; else say which."""
    import psycopg2
    import redis

    from workorders.settings import get_settings

    url = get_settings().redis_url
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(
            f"bench: Redis does not answer at {url} ({exc}); scripts/ensure-redis starts one",
            file=sys.stderr,
        )
        return None
    if "postgresql" in backends:
        try:
            psycopg2.connect(POSTGRES_URL, connect_timeout=5).close()
        except Exception as exc:  # whatever the driver raised: say where, and stop
            print(
                f"bench: PostgreSQL does not answer at BENCH_POSTGRES_URL={POSTGRES_URL}: "
                f"{str(exc).strip()}",
                file=sys.stderr,
            )
            return None
    return client


def headline(phases: list[Phase], best_pg: int | None) -> dict[str, Any]:
    """The figures the issue asks for, PostgreSQL at its better worker count: the paced rows
    decide the goals, the saturated rows show capacity. Keys are stable (before/after
    harnesses read them)."""
    out: dict[str, Any] = {"backend": "postgresql", "workers": best_pg}
    for p in phases:
        if p.backend != "postgresql" or p.workers != best_pg:
            continue
        name = f"{p.operation}_{'paced' if p.rate else 'saturated'}"
        goal = goal_check(p)
        out[name] = {
            "rate": p.rate,
            "rps_2xx": round(p.rps, 1),
            "p50_ms": round(p.load.p50_ms, 1),
            "p99_ms": round(p.load.p99_ms, 1),
            "errors": p.load.errors,
            "api_cpu_ms_per_response": (
                None if p.api_ms_per_response is None else round(p.api_ms_per_response, 2)
            ),
            "api_cores": round(p.cpu.get("api_s", 0.0) / max(p.load.duration_s, 1e-9), 2),
            "other_cores": round(p.cpu.get("other_s", 0.0) / max(p.load.duration_s, 1e-9), 2),
            "pass": goal["pass"] if goal else None,
        }
    return out


def main() -> int:
    started = time.monotonic()
    load_at_start = os.getloadavg()
    tool = CLIENT if CLIENT != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    if tool == "wrk" and not shutil.which("wrk"):
        print(
            "bench: BENCH_CLIENT=wrk but wrk is not installed (apt-get install wrk)",
            file=sys.stderr,
        )
        return 1
    from workorders.settings import get_settings

    settings = get_settings()
    redis_client = services_answer(BACKENDS)
    if redis_client is None:
        return 1

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for backend in BACKENDS:
        for workers in WORKERS:
            (OUT_DIR / f"api-{backend}-w{workers}.log").unlink(missing_ok=True)
    print(
        f"bench: load generator {tool} ({CLIENTS} connections), backends {','.join(BACKENDS)}, "
        f"workers {','.join(map(str, WORKERS))}; API logs in {OUT_DIR.relative_to(ROOT)}/"
    )
    phases: list[Phase] = []
    infos: dict[str, Any] = {}
    failure: str | None = None
    workloads: dict[tuple[str, int], Workload] = {}

    def show(got: list[Phase]) -> None:
        for p in got:
            print(
                f"  {p.label:<14}{p.rps:7.0f} req/s  p50 {p.load.p50_ms:7.1f} ms  "
                f"p99 {p.load.p99_ms:7.1f} ms  errors {p.load.errors} {p.load.error_detail or ''}"
                f"{'  STALLED' if p.load.stalled else ''}",
                flush=True,
            )

    with tempfile.TemporaryDirectory(prefix="linli-bench-") as tmp:
        try:
            for backend in BACKENDS:
                for workers in WORKERS:
                    print(f"bench: {backend} --workers {workers}", flush=True)
                    try:
                        db = fresh_database(backend, f"w{workers}", Path(tmp))
                        work = workloads[backend, workers] = Workload(db, workers, "", [])
                        work.token, work.resident_ids = seed(db, RESIDENTS)
                        got, info = run_config(tool, work, Path(tmp))
                    except RuntimeError as exc:
                        failure = f"{backend} --workers {workers}: {exc}"
                        print(f"bench: {failure}", file=sys.stderr)
                        break
                    phases += got
                    infos[f"{backend}/w{workers}"] = info
                    show(got)
                if failure:
                    break
            # The goals at their own rates, on PostgreSQL with its better worker count.
            best_pg = best_workers(phases, "postgresql")
            if not failure and PACED and best_pg is not None:
                work = workloads["postgresql", best_pg]
                print(f"bench: postgresql --workers {best_pg}, paced at the goal rates", flush=True)
                got = []
                for operation in ("create", "read"):
                    if operation == "read" and not work.order_ids:
                        continue
                    try:
                        got.append(
                            run_phase(tool, work, operation, Path(tmp), GOALS[operation]["rps"])
                        )
                    except RuntimeError as exc:
                        failure = f"postgresql --workers {best_pg} {operation} paced: {exc}"
                        print(f"bench: {failure}", file=sys.stderr)
                        break
                phases += got
                show(got)
        finally:
            redis_client.delete(settings.event_stream)
            for work in workloads.values():
                work.db.drop()

    best = {b: best_workers(phases, b) for b in BACKENDS}
    print_tables(phases, tool, best)
    load_at_end = os.getloadavg()
    print(
        "load average (1/5/15 min): "
        f"{' '.join(f'{x:.2f}' for x in load_at_start)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in load_at_end)} at the end"
    )
    if best.get("postgresql") is not None:
        print()
        print(
            f"PostgreSQL goals ({CLIENTS} clients, --workers {best['postgresql']}): paced rows "
            "decide (the goal rate held with p99 < 50 ms); saturated rows show the capacity."
        )
        for p in phases:
            if p.backend == "postgresql" and p.workers == best["postgresql"]:
                print(f"  {p.label:<14} {verdict(p)}")
    too_many = [p for p in phases if p.error_rate > MAX_ERROR_RATE]
    for p in too_many:
        print(
            f"bench: {p.backend} --workers {p.workers} {p.label}: {p.load.errors} errors "
            f"({100 * p.error_rate:.1f} % > 1 %) {p.load.error_detail}; see "
            f"{(OUT_DIR / f'api-{p.backend}-w{p.workers}.log').relative_to(ROOT)}",
            file=sys.stderr,
        )

    report = {
        "bench": "workorders_api",
        "run_id": RUN_ID,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {
            "load_generator": tool,
            "wrk_threads": 1 if tool == "wrk" else None,
            "clients": CLIENTS,
            "duration_s": DURATION,
            "warmup_s": WARMUP,
            "timeout_s": TIMEOUT,
            "residents": RESIDENTS,
            "server": "python -m workorders serve --workers N (uvicorn; uvloop and httptools "
            "picked up "
            "automatically); a fresh server per phase",
            "account": "one service account with the bot's scopes, for create and read",
            "postgres_url": POSTGRES_URL,
        },
        "goals": {"backend": "postgresql", "clients": 50, **GOALS},
        "load_average": {"start": list(load_at_start), "end": list(load_at_end)},
        "headline": headline(phases, best.get("postgresql")),
        "best_workers": best,
        "configs": infos,
        "results": [
            {
                "backend": p.backend,
                "workers": p.workers,
                "operation": p.operation,
                "paced_rate": p.rate,
                **asdict(p.load),
                "errors": p.load.errors,
                "error_detail": p.load.error_detail,
                "unanswered_at_end": p.load.unanswered,
                "rps_2xx": round(p.rps, 1),
                "error_rate": round(p.error_rate, 4),
                "cpu_s": {k: round(v, 3) for k, v in p.cpu.items()},
                "api_cpu_ms_per_response": (
                    None if p.api_ms_per_response is None else round(p.api_ms_per_response, 2)
                ),
                "goal": goal_check(p),
            }
            for p in phases
        ],
        "failure": failure,
        "errors_over_1pct": [f"{p.backend}/w{p.workers}/{p.label}" for p in too_many],
    }
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nbench: results in {OUT.relative_to(ROOT)} ({report['elapsed_s']} s)")
    return 1 if failure or too_many else 0


if __name__ == "__main__":
    sys.exit(main())
