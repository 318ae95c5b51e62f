"""Turn latency of the dialogue core under 20 concurrent conversations, memory and training time.

Starts the whole dialogue stack as real processes on loopback, the way `make run` does: the
FHIR stand-in, the work-order API on a fresh SQLite database, the action server and the Rasa
server (the trained model of `make model`, Redis tracker and lock stores). Then N residents
(default 20) hold conversations at the same time through Rasa's REST channel, each one a
realistic mix that runs custom actions against the API: greeting, a policy question, a repair
report (creates an order), a doctor's appointment (real free slots from the FHIR stand-in, a
choice, a read-back, the booking), the status of their orders, thanks, goodbye.

A turn's latency is the time from POSTing the resident's message to receiving all replies
(NLU, policies, every action call and the API calls they make). The first conversation of each
resident warms up and is not counted. The bench prints p50/p95/p99 per turn type and overall,
the Rasa server's resident memory (after loading, and peak), the action server's, and the
model's training time as recorded by `scripts/train`; it writes var/bench/dialogue_turns.json.
It measures and does not assert (goal: p95 < 300 ms on 2 cores; training < 10 minutes).

Knobs (environment): BENCH_CONVERSATIONS=20, BENCH_ROUNDS=3 (conversations per resident,
the first one a warm-up), BENCH_REDIS_URL (default $REDIS_URL or redis://127.0.0.1:6379/0),
BENCH_THINK=0 (mean seconds between a reply and the resident's next message, uniform 0.5-1.5x;
0 = back to back, a saturation test), BENCH_SHOW=1 (print every reply).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import quantiles
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/dialogue_turns.py`
    sys.path.insert(0, str(ROOT))

RUN_ID = uuid.uuid4().hex[:8]

# ruff: noqa: E402
import httpx
import redis

# Importing it sets a throwaway data key and event stream for this run (see its header).
from bench._proc import descendants
from bench.workorders_api import ApiServer, free_port, fresh_database, seed

MODEL = ROOT / "models" / "current.tar.gz"
OUT = ROOT / "var" / "bench" / "dialogue_turns.json"
CONVERSATIONS = int(os.environ.get("BENCH_CONVERSATIONS", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# Seconds a resident takes before the next message (reading, thinking, typing); 0 = back to
# back, which measures saturation rather than what a resident waits.
THINK = float(os.environ.get("BENCH_THINK", "0"))
REDIS_URL = os.environ.get(
    "BENCH_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
)
PREFIX = f"linli:bench:{RUN_ID}"
GOAL_P95_MS = 300.0
SHOW = os.environ.get("BENCH_SHOW") == "1"  # print every turn's replies (for debugging)
GOAL_TRAINING_S = 600
# Rasa's worker processes (SANIC_WORKERS), as the Procfile starts it.
RASA_WORKERS = int(os.environ.get("BENCH_RASA_WORKERS", "1"))

# (turn type, what the resident says). The repair is told in one breath, so the form fills at
# once and creates the order; the doctor's booking lists real FHIR slots, takes the first one
# (it may just have been taken by another resident: then the nearest are offered) and books it.
SCRIPT: list[tuple[str, str]] = [
    ("greet", "喂，你好"),
    ("policy", "高龄津贴怎么申请"),
    ("repair", "楼道的灯坏了，晚上黑乎乎的"),
    ("medical: ask", "帮我挂个下礼拜二的内科"),
    ("medical: choose", "第一个"),
    ("medical: confirm", "对"),
    ("status", "我报修的那个啥时候来修"),
    ("thanks", "好的谢谢你了"),
    ("goodbye", "那就这样，再见"),
]


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory of the process and its workers, in MB."""
        fields: dict[str, float] = {"VmRSS": 0.0, "VmHWM": 0.0}
        for pid in descendants(self.proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for line in status.splitlines():
                key, _, value = line.partition(":")
                if key in fields:
                    fields[key] += int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and every process under it (Sanic's workers)."""
        return sum(cpu_of(pid) for pid in descendants(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start(name: str, argv: list[str], env: dict[str, str], health: str, workdir: Path) -> Service:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return Service(name, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{name} did not come up: {log.read_text()[-2000:]}")


async def converse(
    client: httpx.AsyncClient, rasa_url: str, sender: str
) -> list[tuple[str, float, bool]]:
    """One conversation; (turn type, ms, answered) per turn."""
    timings = []
    for kind, text in SCRIPT:
        started = time.perf_counter()
        response = await client.post(
            f"{rasa_url}/webhooks/rest/webhook", json={"sender": sender, "message": text}
        )
        elapsed = (time.perf_counter() - started) * 1000
        answered = response.status_code == 200 and bool(response.json())
        if SHOW:
            print(f"  [{sender}] {text} -> {response.status_code} {response.text[:300]}")
        timings.append((kind, elapsed, answered))
        if THINK:
            await asyncio.sleep(random.uniform(0.5, 1.5) * THINK)
    return timings


async def load(rasa_url: str, senders: list[list[str]]) -> list[tuple[str, float, bool]]:
    """Every resident runs its conversations one after another, all residents at once."""

    async def resident(own: list[str]) -> list[tuple[str, float, bool]]:
        counted: list[tuple[str, float, bool]] = []
        for round_no, sender in enumerate(own):
            timings = await converse(client, rasa_url, sender)
            if round_no > 0:
                counted += timings
        return counted

    limits = httpx.Limits(max_connections=len(senders) + 5)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        results = await asyncio.gather(*(resident(own) for own in senders))
    return [t for r in results for t in r]


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        v = values[0] if values else 0.0
        return {"p50": v, "p95": v, "p99": v, "max": v, "n": len(values)}
    cuts = quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 1),
        "p95": round(cuts[94], 1),
        "p99": round(cuts[98], 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def training_record() -> dict[str, Any] | None:
    """What scripts/train wrote next to the cached model in use."""
    if not MODEL.exists():
        return None
    record = MODEL.resolve().with_suffix("").with_suffix(".json")
    return json.loads(record.read_text()) if record.exists() else None


def main() -> int:
    if not MODEL.exists():
        print("bench/dialogue_turns.py: no trained model; run `make model` first", file=sys.stderr)
        return 1
    services: list[Service] = []
    redis_client = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="linli-bench-") as tmp:
        workdir = Path(tmp)
        db = fresh_database("sqlite", "dialogue", workdir)
        api = ApiServer(db.url, 1, workdir / "api.log")
        try:
            token, _ = seed(db, 0)
            fhir_port = free_port()
            services.append(
                start(
                    "fhir",
                    [sys.executable, "-m", "workorders.hospital.standin", "--port",
                     str(fhir_port), "--state", str(workdir / "fhir.json")],
                    {},
                    f"http://127.0.0.1:{fhir_port}/fhir/metadata",
                    workdir,
                )
            )  # fmt: skip
            os.environ["FHIR_BASE_URL"] = f"http://127.0.0.1:{fhir_port}/fhir"
            os.environ["REDIS_URL"] = REDIS_URL
            api.start()
            action_port = free_port()
            actions = start(
                "actions",
                [sys.executable, "-m", "rasa_sdk", "--actions", "actions", "--port",
                 str(action_port)],
                {
                    "WORKORDERS_URL": api.base_url,
                    "LINLI_TOKEN_ACTIONS": token,
                    "REDIS_URL": REDIS_URL,
                    "LINLI_REDIS_PREFIX": PREFIX,
                },
                f"http://127.0.0.1:{action_port}/health",
                workdir,
            )  # fmt: skip
            services.append(actions)
            rasa_port = free_port()
            rasa = start(
                "rasa",
                [str(Path(sys.executable).parent / "rasa"), "run", "--enable-api", "--model",
                 str(MODEL), "--port", str(rasa_port), "--endpoints", "bot/endpoints.yml",
                 "--credentials", "bot/credentials.yml", "--interface", "127.0.0.1"],
                {
                    "ACTION_SERVER_URL": f"http://127.0.0.1:{action_port}/webhook",
                    "REDIS_URL": REDIS_URL,
                    "RASA_REDIS_PREFIX": f"linlibench{RUN_ID}",
                    "SANIC_WORKERS": str(RASA_WORKERS),
                },
                f"http://127.0.0.1:{rasa_port}/status",
                workdir,
            )  # fmt: skip
            services.append(rasa)
            rasa_loaded = rasa.rss_mb()[0]

            senders = []
            headers = {"Authorization": f"Bearer {token}"}
            for i in range(CONVERSATIONS):
                own = [f"bench-{RUN_ID}-{i}-{r}" for r in range(ROUNDS)]
                body = {
                    "name": "王秀英",
                    "phone": f"139{(int(RUN_ID, 16) + i) % 100_000_000:08d}",
                    "community": "阳光社区",
                    "address": {"building": str(1 + i % 12), "unit": "2", "room": "502"},
                    "identities": [{"kind": "wechat_openid", "value": s} for s in own],
                }
                httpx.post(
                    f"{api.base_url}/residents", json=body, headers=headers, timeout=30
                ).raise_for_status()
                senders.append(own)

            url = f"http://127.0.0.1:{rasa_port}"
            assert api.proc is not None
            cpu_before = (rasa.cpu_seconds(), actions.cpu_seconds(), cpu_of(api.proc.pid))
            started = time.perf_counter()
            timings = asyncio.run(load(url, senders))
            wall = time.perf_counter() - started
            cpu_after = (rasa.cpu_seconds(), actions.cpu_seconds(), cpu_of(api.proc.pid))
            rasa_now, rasa_peak = rasa.rss_mb()
            actions_now, actions_peak = actions.rss_mb()
            orders = httpx.get(
                f"{api.base_url}/work-orders", params={"kind": "repair", "limit": 200},
                headers=headers, timeout=30,
            ).json()  # fmt: skip
        finally:
            for service in reversed(services):
                service.stop()
            api.stop()
            db.drop()
            for key in redis_client.scan_iter(f"{PREFIX}:*"):
                redis_client.delete(key)
            for key in redis_client.scan_iter(f"linlibench{RUN_ID}*"):
                redis_client.delete(key)
            redis_client.delete(os.environ["EVENT_STREAM"])

    unanswered = sum(1 for _, _, ok in timings if not ok)
    sent = CONVERSATIONS * ROUNDS * len(SCRIPT)  # the warm-up's turns cost CPU too
    cpu_ms = {
        name: round((after - before) * 1000 / sent, 1)
        for name, before, after in zip(
            ("rasa", "actions", "api"), cpu_before, cpu_after, strict=True
        )
    }
    load_average = [round(x, 2) for x in os.getloadavg()]
    overall = percentiles([ms for _, ms, _ in timings])
    by_kind = {kind: percentiles([ms for k, ms, _ in timings if k == kind]) for kind, _ in SCRIPT}
    training = training_record()
    print(
        f"\n{CONVERSATIONS} concurrent conversations x {ROUNDS - 1} counted rounds, "
        f"think time {THINK:g} s "
        f"({len(timings)} turns in {wall:.1f} s, {len(timings) / wall:.1f} turns/s); "
        f"{unanswered} turns without a reply; repair orders created: {orders.get('total', '?')}"
    )
    print(f"  {'turn':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'no reply':>10}")
    for kind, p in [*by_kind.items(), ("ALL", overall)]:
        silent = sum(1 for k, _, ok in timings if not ok and kind in (k, "ALL"))
        print(
            f"  {kind:<22}{p['p50']:>9.0f}{p['p95']:>9.0f}{p['p99']:>9.0f}{p['max']:>9.0f}"
            f"{silent:>10}"
        )
    verdict = "PASS" if overall["p95"] < GOAL_P95_MS else "MISS"
    print(f"  goal p95 < {GOAL_P95_MS:.0f} ms: {verdict} ({overall['p95']:.0f} ms)")
    print(
        f"memory: Rasa server {rasa_loaded:.0f} MB after loading, {rasa_now:.0f} MB after the "
        f"load, peak {rasa_peak:.0f} MB; action server {actions_now:.0f} MB "
        f"(peak {actions_peak:.0f} MB)"
    )
    print(
        f"CPU per turn: Rasa {cpu_ms['rasa']:.0f} ms, action server {cpu_ms['actions']:.0f} ms, "
        f"API {cpu_ms['api']:.0f} ms ({sent} turns, warm-up included); Rasa workers "
        f"{RASA_WORKERS}; load average {' '.join(f'{x:.1f}' for x in load_average)}"
    )
    if training:
        verdict = "PASS" if training["seconds"] < GOAL_TRAINING_S else "MISS"
        print(
            f"training: {training['seconds']} s for {training['model']} at {training['at']} "
            f"(goal < {GOAL_TRAINING_S // 60} min: {verdict})"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "conversations": CONVERSATIONS,
                "think_seconds": THINK,
                "rounds_counted": ROUNDS - 1,
                "turns": len(timings),
                "unanswered": unanswered,
                "wall_seconds": round(wall, 1),
                "overall_ms": overall,
                "by_turn_ms": by_kind,
                "goal_p95_ms": GOAL_P95_MS,
                "memory_mb": {
                    "rasa_loaded": round(rasa_loaded),
                    "rasa_after": round(rasa_now),
                    "rasa_peak": round(rasa_peak),
                    "actions_after": round(actions_now),
                    "actions_peak": round(actions_peak),
                },
                "cpu_ms_per_turn": cpu_ms,
                "rasa_workers": RASA_WORKERS,
                "load_average": load_average,
                "training": training,
                "repair_orders": orders.get("total"),
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
