"""systemd units for one host of the inventory, made from the Procfile (the one list of processes).

    python -m ops.units ops/inventory.example.json app1 --root /opt/linli --into /etc/systemd/system

Each program the inventory places on the host gets `linli-<name>.service`: its Procfile command,
restarted alone whenever it exits (`Restart=always`, no start limit: a hotline must come back
once its cause is gone), SIGTERM then SIGKILL after 15 s (a hotline hangs up its calls first).
`linli-health.service` kills a program that runs but stops answering its HTTP address
(ops/health.py), so that it is restarted too; `linli.target` starts and stops them together.
The Procfile's ${…} are left for systemd to fill in from two environment files:
/etc/linli/linli.env (secrets and addresses every host shares; docs/deployment.md) and
/etc/linli/host.env, written here beside the units (this host's address and ports).

Where programs run: the API and the scheduler on `services.api`'s hosts, the gateway on
`services.gateway`'s, Rasa, the action server and its outbox on `services.dialogue`'s, the
hotline on `sip.hotlines`'. The rest of the Procfile (the FHIR and WeChat stand-ins, the SOS
terminal simulator, the banner) is `make run`'s alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ops.health import LIVENESS
from ops.supervisor import PLACEHOLDER, STOPWAITSECS, Program, expand, read_procfile

ROOT = Path(__file__).resolve().parent.parent
ROLES = {
    "api": ("services", "api"),
    "scheduler": ("services", "api"),
    "gateway": ("services", "gateway"),
    "actions": ("services", "dialogue"),
    "rasa": ("services", "dialogue"),
    "outbox": ("services", "dialogue"),
    "hotline": ("sip", "hotlines"),
}
PORTS = {"api": 8000, "gateway": 8010, "dialogue": 5005}
METRICS = {"SCHEDULER": 9101, "GATEWAY": 9102, "HOTLINE": 9103}
RUN_DIR = "/var/lib/linli"  # StateDirectory=linli
SHARED_ENV = "/etc/linli/linli.env"
HOST_ENV = "/etc/linli/host.env"

SERVICE = """\
# Made by `python -m ops.units {inventory} {host}` from the Procfile; edit those, not this file.
[Unit]
Description=Linli {name}
Wants=network-online.target
After=network-online.target
PartOf=linli.target
StartLimitIntervalSec=0

[Service]
Type=simple
{user}WorkingDirectory={root}
EnvironmentFile={shared_env}
EnvironmentFile={host_env}
Environment=PYTHONUNBUFFERED=1
ExecStart={command}
Restart=always
RestartSec=2
KillMode=mixed
TimeoutStopSec={stop}
NoNewPrivileges=yes
PrivateTmp=yes
StateDirectory=linli

[Install]
WantedBy=linli.target
"""

TARGET = """\
# Made by `python -m ops.units {inventory} {host}`.
[Unit]
Description=Linli on {host}: {names}
Wants={units}

[Install]
WantedBy=multi-user.target
"""


def programs_on(inventory: dict[str, Any], host: str, procfile: Path) -> list[Program]:
    """The Procfile's programs that run on `host`, in the Procfile's order, ${…} kept."""
    keep = {name: f"${{{name}}}" for name in _placeholders(procfile)}
    placed = []
    for program in read_procfile(procfile, keep):
        section, role = ROLES.get(program.name, ("", ""))
        hosts = inventory.get(section, {}).get(role, {})
        hosts = hosts.get("hosts", []) if isinstance(hosts, dict) else hosts
        if host in hosts:
            placed.append(program)
    return placed


def _placeholders(procfile: Path) -> set[str]:
    return set(PLACEHOLDER.findall(procfile.read_text(encoding="utf-8")))


def host_env(inventory: dict[str, Any], host: str) -> dict[str, str]:
    """What differs from host to host: where it listens."""
    address = inventory["hosts"][host]
    services = inventory.get("services", {})
    port = {name: services.get(name, {}).get("port", PORTS[name]) for name in PORTS}
    sip = inventory.get("sip", {})
    return {
        "LINLI_BIND": address,
        "LINLI_RUN_DIR": RUN_DIR,
        "LINLI_API_PORT": str(port["api"]),
        "LINLI_GATEWAY_PORT": str(port["gateway"]),
        "LINLI_RASA_PORT": str(port["dialogue"]),
        "LINLI_ACTIONS_PORT": "5055",
        "ACTION_SERVER_URL": "http://127.0.0.1:5055/webhook",  # Rasa's own host's actions
        "HOTLINE_SIP_HOST": address,
        "HOTLINE_SIP_PORT": str(sip.get("hotline_port", 5070)),
        "HOTLINE_AUDIO_DIR": f"{RUN_DIR}/calls",
        # Prometheus scrapes each host here (docs/deployment.md, "Metrics").
        **{f"{what}_METRICS_HOST": address for what in METRICS},
        **{f"{what}_METRICS_PORT": str(port) for what, port in METRICS.items()},
        # Behind Kamailio (ops/deploy.py, "SIP") every call comes from it, and it admits only
        # the trusted peers: the hotline trusts Kamailio's address alone.
        **({"HOTLINE_TRUSTED_PEERS": inventory["hosts"][sip["host"]]} if "host" in sip else {}),
    }


def _command(program: Program, root: Path) -> str:
    """The Procfile's command with its program made absolute, as ExecStart wants."""
    first, _, rest = program.command.partition(" ")
    if "/" in first and not first.startswith("/"):
        first = str(root / first)
    return f"{first} {rest}".rstrip()


def render(
    inventory: dict[str, Any], host: str, root: Path, procfile: Path, source: str = "inventory"
) -> dict[str, str]:
    """File name → text: the units, linli.target and host.env."""
    programs = programs_on(inventory, host, procfile)
    if not programs:
        raise ValueError(f"the inventory runs no Linli program on {host!r}")
    env = host_env(inventory, host)
    files = {}
    for program in programs:
        files[f"linli-{program.name}.service"] = SERVICE.format(
            inventory=source, host=host, name=program.name, root=root,
            shared_env=SHARED_ENV, host_env=HOST_ENV, command=_command(program, root),
            stop=STOPWAITSECS, user="User=linli\nGroup=linli\n",
        )  # fmt: skip
    checks = [
        f"--check linli-{p.name}.service={expand(LIVENESS[p.name], env, p.name)}"
        for p in programs
        if p.name in LIVENESS
    ]
    python = root / ".venv" / "bin" / "python"
    files["linli-health.service"] = SERVICE.format(
        inventory=source, host=host, name="health (restarts a program that stopped answering)",
        root=root, shared_env=SHARED_ENV, host_env=HOST_ENV,
        command=" ".join([f"{python} -m ops.health", *checks]), stop=5,
        user="",  # root: it kills other units (systemctl kill)
    )  # fmt: skip
    units = sorted(name for name in files if name.endswith(".service"))
    files["linli.target"] = TARGET.format(
        inventory=source, host=host, names=", ".join(p.name for p in programs),
        units=" ".join(units),
    )  # fmt: skip
    files["host.env"] = "".join(f"{key}={value}\n" for key, value in env.items())
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.units", description=__doc__)
    parser.add_argument("inventory", type=Path)
    parser.add_argument("host")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout on the host")
    parser.add_argument("--into", type=Path, default=Path("/etc/systemd/system"))
    parser.add_argument("--procfile", type=Path, default=ROOT / "Procfile")
    args = parser.parse_args(argv)
    inventory = json.loads(args.inventory.read_text())
    if args.host not in inventory["hosts"]:
        parser.error(f"{args.host!r} is not one of the inventory's hosts")
    try:
        files = render(inventory, args.host, args.root, args.procfile, str(args.inventory))
    except ValueError as exc:
        parser.error(str(exc))
    args.into.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.into / name).write_text(text, encoding="utf-8")
        print(args.into / name)


if __name__ == "__main__":
    main()
