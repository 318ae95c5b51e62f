"""The daemons of a multi-host test, each started on its host as an operator would start it."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Postgres:
    host: Host
    folder: Path  # owned by postgres: db/ (the cluster), the socket, and what a test adds

    @property
    def data(self) -> Path:
        return self.folder / "db"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host.address}:5432/postgres"

    def start(self) -> None:
        self.host.start([str(PG_BIN / "postgres"), "-D", str(self.data)], user="postgres", log="pg")
        ready = f"{PG_BIN / 'pg_isready'} -q -h {self.host.address}"
        until("PostgreSQL on " + self.host.name, lambda: os.system(ready) == 0)


def postgres(host: Host, settings: str = "", start: bool = True) -> Postgres:
    """A PostgreSQL server of its own on `host` (trust on the LAN, as a test needs)."""
    folder = Path(tempfile.mkdtemp(prefix=f"linli-{host.name}-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    host.scratch.append(folder)
    server = Postgres(host, folder)
    host.run([str(PG_BIN / "initdb"), "-D", str(server.data), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--locale=C.UTF-8"], user="postgres")  # fmt: skip
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '{host.address}'\nunix_socket_directories = '{folder}'\n")
        conf.write(settings)
    with (server.data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 10.0.0.0/8 trust\n")
    if start:
        server.start()
    return server


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
