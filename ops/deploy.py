"""A city's deployment from one inventory of hosts (ops/inventory.example.json).

    python -m ops.deploy haproxy ops/inventory.example.json > /etc/haproxy/haproxy.cfg
    python -m ops.deploy pgbackrest ops/inventory.example.json > /etc/pgbackrest/pgbackrest.conf
    python -m ops.deploy archiving ops/inventory.example.json >> postgresql.conf

The multi-host tests (tests/cluster) render their balancer from an inventory of their own
network namespaces with this same code, so what operators deploy is what the tests ran.

HAProxy in front of every HTTP service that runs on several hosts (the API, the conversation
gateway, the dialogue workers): a host is taken out of rotation after two failed health checks
half a second apart and back after two good ones; a request whose connection failed is sent to
another host (`redispatch`, `retry-on conn-failure`). A request whose host died before it
answered is replayed on another only when that is safe: a GET, or a write that carries an
Idempotency-Key (the API answers its replay with what it made the first time). Any other write
fails back to its client, which knows whether to repeat it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# service → (its health path, how long a request may take: the API's long polls wait 30 s)
SERVICES = {
    "api": ("/health", "45s"),
    "gateway": ("/health", "45s"),
    "dialogue": ("/", "30s"),
}

# Replays only what is safe to repeat (module docstring).
SAFE_REPLAYS = "http-request disable-l7-retry if !METH_GET !{ req.hdr(idempotency-key) -m found }"

HEAD = """\
# Made by `python -m ops.deploy haproxy {inventory}`; edit the inventory, not this file.
global
    maxconn 4096
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout queue 10s
    retries 3
    option redispatch
    retry-on conn-failure empty-response
"""


def haproxy(inventory: dict[str, Any], source: str = "inventory") -> str:
    hosts: dict[str, str] = inventory["hosts"]
    balancer = inventory["balancer"]
    bind = hosts[balancer["host"]]
    parts = [HEAD.format(inventory=source)]
    for service, spec in inventory["services"].items():
        health, timeout = SERVICES[service]
        listen = balancer["ports"][service]
        parts.append(
            f"\nfrontend {service}\n"
            f"    bind {bind}:{listen}\n"
            f"    default_backend {service}\n"
            f"\nbackend {service}\n"
            f"    timeout server {timeout}\n"
            f"    option httpchk GET {health}\n"
            f"    http-check expect status 200\n"
            f"    default-server inter 500ms fall 2 rise 2\n"
            f"    {SAFE_REPLAYS}\n"
        )
        for name in spec["hosts"]:
            parts.append(f"    server {name} {hosts[name]}:{spec['port']} check\n")
    return "".join(parts)


# Backups: pgBackRest, full and incremental base backups plus every WAL segment archived as
# PostgreSQL closes it, so a restore recovers up to the last archived segment.
PGBACKREST = """\
# Made by `python -m ops.deploy pgbackrest {inventory}`; edit the inventory, not this file.
[global]
repo1-path={repo}
repo1-retention-full=4
log-path={repo}/log
lock-path={repo}/lock
start-fast=y
compress-type=zst

[{stanza}]
pg1-path={data}
pg1-socket-path={socket}
pg1-port={port}
"""


def pgbackrest(inventory: dict[str, Any], source: str = "inventory") -> str:
    spec = inventory["backup"]
    return PGBACKREST.format(inventory=source, **spec)


def archiving(config: str, stanza: str) -> str:
    """PostgreSQL's settings that hand each finished WAL segment to pgBackRest."""
    return (
        "archive_mode = on\n"
        f"archive_command = 'pgbackrest --config={config} --stanza={stanza} archive-push %p'\n"
        "archive_timeout = 60\n"  # a quiet database still archives at least once a minute
        "wal_level = replica\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.deploy")
    parser.add_argument("what", choices=["haproxy", "pgbackrest", "archiving"])
    parser.add_argument("inventory", type=Path)
    args = parser.parse_args()
    inventory = json.loads(args.inventory.read_text())
    if args.what == "archiving":  # postgresql.conf's lines, for /etc/pgbackrest/pgbackrest.conf
        stanza = inventory["backup"]["stanza"]
        sys.stdout.write(archiving("/etc/pgbackrest/pgbackrest.conf", stanza))
        return
    render = {"haproxy": haproxy, "pgbackrest": pgbackrest}[args.what]
    sys.stdout.write(render(inventory, str(args.inventory)))


if __name__ == "__main__":
    main()
