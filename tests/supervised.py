"""Processes under the real supervisord of `make run`: start it (scripts/run, or supervisord on
a configuration made by ops.supervisor), ask it about its processes over its socket, stop it
as Ctrl-C does and check that nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from supervisor.xmlrpc import SupervisorTransport

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def until(what: str, check: Callable[[], T | None], seconds: float, every: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail saying `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(every)


def make_run_env(
    run_dir: Path, ports: dict[str, int], prefix: str, rasa_prefix: str
) -> dict[str, str]:
    """The environment of a `scripts/run` of its own: ports (api, fhir, actions, rasa, sos,
    gateway, wechat, sip), new tokens, a SQLite database in `run_dir`, Redis keys under the
    prefixes. What scripts/run derives from the ports is dropped from this process's own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RASA_", "HOTLINE_", "LINLI_TOKEN_", "WECHAT_"))
        and key not in ("WORKORDERS_URL", "FHIR_BASE_URL", "ACTION_SERVER_URL", "GATEWAY_URL")
    }
    env.update(
        {
            f"LINLI_TOKEN_{name}": secrets.token_urlsafe(24)
            for name in ("ACTIONS", "WECHAT", "HOTLINE", "TERMINAL", "GATEWAY")
        },
        LINLI_RUN_DIR=str(run_dir),
        LINLI_API_PORT=str(ports["api"]),
        LINLI_FHIR_PORT=str(ports["fhir"]),
        LINLI_ACTIONS_PORT=str(ports["actions"]),
        LINLI_RASA_PORT=str(ports["rasa"]),
        LINLI_SOS_PORT=str(ports["sos"]),
        LINLI_GATEWAY_PORT=str(ports["gateway"]),
        WECHAT_STANDIN_PORT=str(ports["wechat"]),
        HOTLINE_SIP_PORT=str(ports["sip"]),
        DATABASE_URL=f"sqlite:///{run_dir}/workorders.db",
        EVENT_STREAM=f"{prefix}:events",
        LINLI_REDIS_PREFIX=prefix,
        RASA_REDIS_PREFIX=rasa_prefix,
        HEALTH_TIMEOUT="600",
    )
    return env


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


class Supervised:
    """supervisord (what `argv` execs into) with its runtime files in `run_dir`."""

    def __init__(self, argv: list[str], run_dir: Path, env: dict[str, str]) -> None:
        self.argv, self.run_dir, self.env = argv, run_dir, env
        self.output = run_dir / "output.txt"  # the terminal of `make run`
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[int] = set()  # every pid it ever reported, for the final check

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.output.open("ab") as out:  # appended to, as scripts/run makes sure
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def log(self, name: str) -> str:
        path = self.run_dir / "log" / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def rpc(self) -> Any:
        socket_path = self.run_dir / "supervisor" / "supervisor.sock"
        transport = SupervisorTransport(None, None, f"unix://{socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport).supervisor

    def processes(self) -> dict[str, dict[str, Any]]:
        infos = {info["name"]: info for info in self.rpc().getAllProcessInfo()}
        self.seen.update(info["pid"] for info in infos.values() if info["pid"])
        return infos

    def pids(self) -> dict[str, int]:
        return {name: info["pid"] for name, info in self.processes().items()}

    def running(self, *names: str) -> dict[str, int] | None:
        """The pids once all `names` are RUNNING (None until then, or while it cannot say)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"supervisord exited ({self.proc.returncode}):\n{self.tail()}")
        try:
            infos = self.processes()
        except (OSError, xmlrpc.client.Fault):
            return None
        if all(infos.get(n, {}).get("statename") == "RUNNING" for n in names):
            return {name: info["pid"] for name, info in infos.items()}
        return None

    def tail(self, characters: int = 4000) -> str:
        return self.text()[-characters:]

    def stop(self, seconds: float = 90.0) -> int:
        """SIGINT, as Ctrl-C in `make run`; its exit status once every process is gone."""
        assert self.proc is not None
        if self.proc.poll() is None:
            with_pids = self.running() or {}
            self.seen.update(p for p in with_pids.values() if p)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(f"supervisord did not stop:\n{self.tail()}") from None
        until("every process gone", lambda: not any(alive(p) for p in self.seen), 30)
        return self.proc.returncode


class Squatter:
    """Holds a TCP port the way a dead server leaves it: connections are refused at once (reset),
    and a program that tries to listen there fails, as a restarted server would while its
    port, database or disk is not back yet."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._thread = threading.Thread(target=self._refuse, daemon=True)

    def take(self) -> bool:
        try:
            self.sock.bind(("127.0.0.1", self.port))
        except OSError:
            return False
        self.sock.listen(64)
        self._thread.start()
        return True

    def _refuse(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: released
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def release(self) -> None:
        # shutdown() wakes the accept() of the thread; close() alone would not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
