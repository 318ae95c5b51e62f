"""Liveness: a process that is running but no longer answers is restarted, alone.

A crash is the supervisor's to see (supervisord, systemd). A process that hangs (a deadlocked
event loop, a wedged worker) looks alive to both, and the balancers only take it out of
rotation. So every few seconds each program with an HTTP address is asked anything; once it
has answered since its start, `FAILURES` checks in a row without an answer (no connection, or
nothing within `TIMEOUT`) get it killed (SIGKILL: a hung process may not act on SIGTERM), and
its supervisor restarts it as after any crash. Any answer counts, a 503 too: a 503 says a
dependency is down (Redis, the database), which a restart would not mend; readiness is the
balancers' check.

    python -m ops.health --check linli-api=http://10.0.0.11:8000/health …   # under systemd

Under `make run` the supervisord watchdog (ops/watchdog.py) uses the same rules.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

INTERVAL = 5.0  # seconds between two rounds
TIMEOUT = 3.0
FAILURES = 3  # so a process is restarted after ~15 s without an answer

# What `make run` and a host's units check, by Procfile name. ${…} are the Procfile's values.
LIVENESS = {
    "fhir": "http://127.0.0.1:${LINLI_FHIR_PORT}/fhir/metadata",
    "api": "http://${LINLI_BIND}:${LINLI_API_PORT}/health",
    "actions": "http://127.0.0.1:${LINLI_ACTIONS_PORT}/health",
    "rasa": "http://${LINLI_BIND}:${LINLI_RASA_PORT}/",
    "gateway": "http://${LINLI_BIND}:${LINLI_GATEWAY_PORT}/health",
    "wechat": "http://127.0.0.1:${WECHAT_STANDIN_PORT}/",
}


@dataclass
class _State:
    answered: bool = False  # since its (re)start: a loading Rasa is not hung
    failures: int = 0


@dataclass
class Liveness:
    """Decisions only, no I/O: which programs to restart after a round of checks."""

    failures: int = FAILURES
    states: dict[str, _State] = field(default_factory=dict)

    def observe(self, name: str, answered: bool) -> bool:
        """One check's outcome; True: restart it now."""
        state = self.states.setdefault(name, _State())
        if answered:
            state.answered, state.failures = True, 0
            return False
        if not state.answered:
            return False
        state.failures += 1
        if state.failures < self.failures:
            return False
        self.states[name] = _State()
        return True

    def started(self, name: str) -> None:
        """It was (re)started by someone: wait for its first answer again."""
        self.states[name] = _State()


def answers(url: str, timeout: float = TIMEOUT) -> bool:
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return True


def check_all(urls: Mapping[str, str]) -> dict[str, bool]:
    """Every program at once, so one hung program does not delay the others' checks."""
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        results = pool.map(answers, urls.values())
        return dict(zip(urls, results, strict=True))


def parse_checks(items: Iterable[str]) -> dict[str, str]:
    """`name=url` arguments."""
    checks = {}
    for item in items:
        name, equals, url = item.partition("=")
        if not equals or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"--check wants name=http://…, not {item!r}")
        checks[name] = url
    return checks


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} health  | {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Under systemd: each `--check unit=url`; a hung unit is killed, and its Restart=always
    starts it again."""
    parser = argparse.ArgumentParser(prog="python -m ops.health", description=__doc__)
    parser.add_argument("--check", action="append", default=[], metavar="UNIT=URL")
    args = parser.parse_args(argv)
    try:
        checks = parse_checks(args.check)
    except ValueError as exc:
        parser.error(str(exc))
    liveness = Liveness()
    while True:
        for unit, answered in check_all(checks).items():
            if liveness.observe(unit, answered):
                _say(f"{unit} has not answered {FAILURES} checks in a row: killing it to restart")
                subprocess.run(["systemctl", "kill", "--signal=SIGKILL", unit], check=False)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
