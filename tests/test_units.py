"""A host's systemd units (ops/units.py): made from the Procfile and the inventory, and valid to
systemd itself (`systemd-analyze verify`). The multi-host tests start their services from
these same units' command lines (tests/cluster/services.py)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from ops.supervisor import read_procfile
from ops.units import render

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = json.loads((ROOT / "ops" / "inventory.example.json").read_text())
PROCFILE = ROOT / "Procfile"


def _field(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, flags=re.M)


def test_an_application_host_gets_its_programs_from_the_procfile(tmp_path: Path) -> None:
    files = render(INVENTORY, "app1", ROOT, PROCFILE)
    services = ["api", "scheduler", "actions", "rasa", "gateway", "outbox", "hotline"]
    expected = [f"linli-{name}.service" for name in services]
    assert sorted(files) == sorted([*expected, "linli-health.service", "linli.target", "host.env"])
    placed = {p.name: p.command for p in read_procfile(PROCFILE, _kept())}
    for name in services:
        [command] = _field(files[f"linli-{name}.service"], "ExecStart")
        procfile = placed[name]
        assert command == (f"{ROOT}/{procfile}" if procfile.startswith(".venv/") else procfile)
        assert _field(files[f"linli-{name}.service"], "Restart") == ["always"]
        assert _field(files[f"linli-{name}.service"], "User") == ["linli"]
    env = dict(line.split("=", 1) for line in files["host.env"].splitlines())
    assert env["LINLI_BIND"] == INVENTORY["hosts"]["app1"] == env["HOTLINE_SIP_HOST"]
    assert [env[f"{what}_METRICS_PORT"] for what in ("SCHEDULER", "GATEWAY", "HOTLINE")] == [
        "9101",
        "9102",
        "9103",
    ]
    # Calls come through Kamailio (on the balancer), which admits only the trusted peers.
    assert env["HOTLINE_TRUSTED_PEERS"] == INVENTORY["hosts"][INVENTORY["sip"]["host"]]
    used = {
        name
        for unit, text in files.items()
        if unit.endswith(".service")
        for name in re.findall(r"\$\{(\w+)\}", text)
    }
    assert used <= set(env), used - set(env)  # nothing a unit needs is left unset
    [health] = _field(files["linli-health.service"], "ExecStart")
    address = INVENTORY["hosts"]["app1"]
    assert shlex.split(health)[1:] == [
        "-m", "ops.health",
        "--check", f"linli-api.service=http://{address}:8000/health",
        "--check", "linli-actions.service=http://127.0.0.1:5055/health",
        "--check", f"linli-rasa.service=http://{address}:5005/",
        "--check", f"linli-gateway.service=http://{address}:8010/health",
    ]  # fmt: skip
    assert _field(files["linli-health.service"], "User") == []  # root: it kills units

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    units = [str(tmp_path / name) for name in files if name != "host.env"]
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True
    )
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr


def test_a_host_without_linli_programs_is_refused() -> None:
    with pytest.raises(ValueError, match="the inventory runs no Linli program on 'db1'"):
        render(INVENTORY, "db1", ROOT, PROCFILE)


def _kept() -> dict[str, str]:
    names = set(re.findall(r"\$\{(\w+)\}", PROCFILE.read_text()))
    return {name: f"${{{name}}}" for name in names}
