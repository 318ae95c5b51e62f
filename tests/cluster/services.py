"""The daemons of a multi-host test, each started on its host as an operator would start it."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ops.deploy import haproxy
from tests.cluster.hosts import Host

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])


def until(what: str, check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def postgres(host: Host) -> str:
    """A PostgreSQL server of its own on `host` (trust on the LAN, as a test needs); its URL."""
    data = Path(tempfile.mkdtemp(prefix=f"linli-{host.name}-pg-"))
    shutil.chown(data, "postgres", "postgres")
    host.scratch.append(data)
    host.run([str(PG_BIN / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
             user="postgres")  # fmt: skip
    with (data / "db" / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '{host.address}'\nunix_socket_directories = '{data}'\n")
    with (data / "db" / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 10.0.0.0/8 trust\n")
    host.start([str(PG_BIN / "postgres"), "-D", str(data / "db")], user="postgres", log="pg")
    until(
        "PostgreSQL on " + host.name,
        lambda: os.system(f"{PG_BIN / 'pg_isready'} -q -h {host.address}") == 0,
    )
    return f"postgresql://postgres@{host.address}:5432/postgres"


def redis(host: Host) -> str:
    host.start(
        ["redis-server", "--bind", host.address, "--port", "6379", "--save", "",
         "--appendonly", "no", "--protected-mode", "no"],
    )  # fmt: skip
    until(
        "Redis on " + host.name,
        lambda: os.system(f"redis-cli -h {host.address} ping >/dev/null 2>&1") == 0,
    )
    return f"redis://{host.address}:6379/0"


def api(host: Host, env: dict[str, str]) -> str:
    """`python -m workorders serve` on the host's LAN address, as its unit runs it."""
    host.start(
        [sys.executable, "-m", "workorders", "serve", "--host", host.address, "--port", "8000"],
        env=env, cwd=ROOT, log="api",
    )  # fmt: skip
    url = f"http://{host.address}:8000"
    until("the API on " + host.name, lambda: answers(f"{url}/health"))
    return url


def balancer(host: Host, inventory: dict[str, object], folder: Path) -> None:
    """HAProxy with the configuration ops.deploy renders from the inventory."""
    config = folder / "haproxy.cfg"
    config.write_text(haproxy(inventory, "the test's inventory"))
    host.start(["haproxy", "-db", "-f", str(config)], log="haproxy")
