"""The daemons of a multi-host test, each started on its host as an operator would start it."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ops import deploy, units
from ops.supervisor import PLACEHOLDER
from tests.cluster.hosts import Host
from tests.support import hotline_token, make_backend, seed_principals

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


def seeded_database(host: Host) -> tuple[str, dict[str, str]]:
    """PostgreSQL on `host` with the demo's principals: its URL, and their tokens by role (the
    hotline's too)."""
    url = postgres(host).url
    backend = make_backend(url)
    try:
        return url, {**seed_principals(backend), "hotline": hotline_token(backend)}
    finally:
        backend.dispose()


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


def program(host: Host, name: str, env: dict[str, str]) -> None:
    """The Procfile's program `name` as its systemd unit runs it (ops/units.py): the unit's
    ExecStart, its ${…} filled from the host.env rendered with it and from `env` (the test's
    part of /etc/linli/linli.env)."""
    section, role = units.ROLES[name]
    where = {"hosts": [host.name]} if section == "services" else [host.name]
    inventory = {"hosts": {host.name: host.address}, section: {role: where}}
    files = units.render(inventory, host.name, ROOT, ROOT / "Procfile", "the test's inventory")
    values = {**dict(line.split("=", 1) for line in files["host.env"].splitlines()), **env}
    [command] = re.findall(r"^ExecStart=(.*)$", files[f"linli-{name}.service"], flags=re.M)
    fill = lambda word: PLACEHOLDER.sub(lambda m: values[m.group(1)], word)  # noqa: E731
    host.start([fill(word) for word in shlex.split(command)], env=values, cwd=ROOT, log=name)


def api(host: Host, env: dict[str, str]) -> str:
    """The API on the host's LAN address, as its unit runs it."""
    program(host, "api", env)
    url = f"http://{host.address}:8000"
    until("the API on " + host.name, lambda: answers(f"{url}/health"))
    return url


def balancer(host: Host, inventory: dict[str, object], folder: Path) -> None:
    """HAProxy with the configuration ops.deploy renders from the inventory."""
    config = folder / "haproxy.cfg"
    config.write_text(deploy.haproxy(inventory, "the test's inventory"))
    host.start(["haproxy", "-db", "-f", str(config)], log="haproxy")


def _own_folder(host: Host, what: str, user: str) -> Path:
    """A folder of `user` for one daemon's files, removed with the host. The test's hosts share
    one disk, so each gets folders of its own where machines would use the same paths."""
    folder = Path(tempfile.mkdtemp(prefix=f"linli-{host.name}-{what}-"))
    shutil.chown(folder, user, user)
    host.scratch.append(folder)
    return folder


def etcd(host: Host, inventory: dict[str, Any]) -> str:
    """An etcd member as Debian's unit starts it: user etcd, the lines ops.deploy renders for
    /etc/default/etcd as its environment. Healthy once a quorum of members runs."""
    folder = _own_folder(host, "etcd", "etcd")
    database = {**inventory["database"], "etcd_data": str(folder / "data")}
    lines = deploy.etcd({**inventory, "database": database}, host.name, "the test's inventory")
    env = dict(line.split("=", 1) for line in lines.splitlines() if not line.startswith("#"))
    host.start(["etcd"], env=env, user="etcd", cwd=folder, log="etcd")
    return f"http://{host.address}:{deploy.ETCD_CLIENT_PORT}"


def patroni(host: Host, inventory: dict[str, Any]) -> str:
    """Patroni (and the PostgreSQL it runs) as Debian's unit starts it: user postgres, the
    patroni.yml ops.deploy renders. Returns its REST API's address."""
    folder = _own_folder(host, "patroni", "postgres")
    database = {**inventory["database"], "data": str(folder / "db"), "socket": str(folder)}
    config = folder / "patroni.yml"
    config.write_text(
        deploy.patroni({**inventory, "database": database}, host.name, "the test's inventory")
    )
    host.start(["patroni", str(config)], user="postgres", cwd=folder, log="patroni")
    return f"http://{host.address}:{deploy.PATRONI_PORT}"


def redis_node(host: Host, inventory: dict[str, Any]) -> None:
    """redis-server with the redis.conf ops.deploy renders (master or replica by the inventory)."""
    folder = _own_folder(host, "redis", "redis")
    config = folder / "redis.conf"
    spec = {**inventory["redis"], "data": str(folder)}
    config.write_text(deploy.redis({**inventory, "redis": spec}, host.name, "the test's inventory"))
    shutil.chown(config, "redis", "redis")
    host.start(["redis-server", str(config)], user="redis", log="redis")
    ping = f"redis-cli -h {host.address} ping >/dev/null 2>&1"
    until("Redis on " + host.name, lambda: os.system(ping) == 0)


def sentinel(host: Host, inventory: dict[str, Any]) -> None:
    """redis-sentinel with the sentinel.conf ops.deploy renders (it rewrites the file)."""
    folder = _own_folder(host, "sentinel", "redis")
    config = folder / "sentinel.conf"
    config.write_text(deploy.sentinel(inventory, host.name, "the test's inventory"))
    shutil.chown(config, "redis", "redis")
    host.start(["redis-sentinel", str(config)], user="redis", log="sentinel")
    ping = f"redis-cli -h {host.address} -p {deploy.SENTINEL_PORT} ping >/dev/null 2>&1"
    until("Sentinel on " + host.name, lambda: os.system(ping) == 0)


def dialogue(host: Host, env: dict[str, str]) -> str:
    """A dialogue worker as its units run it: the action server, then Rasa with the trained
    model and bot/endpoints.yml (tracker and locks in the shared Redis)."""
    program(host, "actions", env)
    until(f"the actions on {host.name}", lambda: answers(f"http://{host.address}:5055/health"), 60)
    program(host, "rasa", env)
    url = f"http://{host.address}:5005"
    until(f"Rasa on {host.name}", lambda: answers(f"{url}/status"), 240)
    return url


def gateway(host: Host, env: dict[str, str]) -> str:
    program(host, "gateway", env)
    url = f"http://{host.address}:8010"
    until("the gateway on " + host.name, lambda: answers(f"{url}/health"), 60)
    return url


def kamailio(host: Host, inventory: dict[str, Any]) -> str:
    """Kamailio with the kamailio.cfg and dispatcher.list ops.deploy renders, checked first with
    `kamailio -c`. As Debian's unit runs it (user kamailio, in the foreground here), with the
    capability to bind port 5060 that docs/deployment.md's drop-in gives the unit. Returns its
    control socket, for `kamcmd -s`."""
    folder = _own_folder(host, "kamailio", "kamailio")
    ctl = folder / "kamailio_ctl"
    sip = {**inventory["sip"], "list_file": str(folder / "dispatcher.list"), "ctl": str(ctl)}
    config = folder / "kamailio.cfg"
    config.write_text(deploy.kamailio({**inventory, "sip": sip}, "the test's inventory"))
    (folder / "dispatcher.list").write_text(deploy.dispatcher(inventory, "the test's inventory"))
    host.run(["kamailio", "-c", "-f", str(config)], user="kamailio")
    as_kamailio = ["setpriv", "--reuid=kamailio", "--regid=kamailio", "--init-groups",
                   "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]  # fmt: skip
    host.start([*as_kamailio, "kamailio", "-DD", "-E", "-f", str(config)], log="kamailio")
    until("Kamailio on " + host.name, ctl.exists)
    return f"unix:{ctl}"


def hotline(host: Host, inventory: dict[str, Any], env: dict[str, str]) -> None:
    """The hotline as its unit runs it, with the host.env ops/units.py makes of the whole
    inventory: its SIP address, and behind Kamailio, Kamailio as the one peer it trusts. Up
    once it says where it listens (its prompts are synthesised first). Its /tmp is its own and
    goes with the host, as the unit's PrivateTmp does (a killed one leaves synthesis files)."""
    tmp = {"TMPDIR": str(_own_folder(host, "hotline-tmp", "root"))}
    program(host, "hotline", {**units.host_env(inventory, host.name), **env, **tmp})
    log = host.logs / f"{host.name}-hotline.log"
    until(f"the hotline on {host.name}", lambda: "Linli hotline on udp" in log.read_text(), 120)
