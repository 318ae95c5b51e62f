"""Several hosts on one machine: a network namespace each, joined by veth pairs to a bridge.

The bridge is the hosts' LAN (10.<net>.0.0/24, the bridge itself .1, which is how the test in
the root namespace reaches them). A host has its own loopback, addresses and ports, so two
API hosts both listen on :8000 as they would on two machines, and killing a host's processes
and taking its link down is what a dead machine looks like to the others. Needs root (CI and
this machine run as root).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

LOCK = "/tmp/linli-test-networks.lock"


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(command, check=True, capture_output=True)


def _as(user: str | None) -> list[str]:
    """Run as `user` by exec (setpriv, not su/runuser, which fork): the process a test starts is
    the daemon itself, so killing it kills the daemon."""
    if not user:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


@dataclass
class Host:
    name: str
    ns: str
    address: str
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # removed with the host (data dirs)

    def start(
        self, argv: Sequence[str], env: dict[str, str] | None = None, user: str | None = None,
        cwd: Path | None = None, log: str | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        """A process on this host; its output in logs/<host>-<log>.log."""
        prefix = ["ip", "netns", "exec", self.ns, *_as(user)]
        out = (self.logs / f"{self.name}-{log or Path(argv[0]).name}.log").open("ab")
        process = subprocess.Popen(
            [*prefix, *argv],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], env: dict[str, str] | None = None, user: str | None = None
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        prefix = ["ip", "netns", "exec", self.ns, *_as(user)]
        done = subprocess.run(
            [*prefix, *argv], env={**os.environ, **(env or {})}, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise AssertionError(f"{argv} on {self.name}: exit {done.returncode}\n"
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")  # fmt: skip
        return done

    def kill(self) -> None:
        """The machine dies: every process at once (SIGKILL), then its network."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        self._sweep()
        for process in self.processes:
            process.wait(10)
        _ip("link", "set", "eth0", "down", ns=self.ns)

    def _sweep(self, seconds: float = 10.0) -> None:
        """SIGKILL whatever still runs in the namespace. A daemon may leave the process group the
        test started it in: Patroni starts PostgreSQL in a session of its own (setsid)."""
        deadline = time.monotonic() + seconds
        while pids := self._pids():
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {pids} of {self.name} outlived SIGKILL")
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self._sweep()


def _free_net() -> int:
    """A 10.<net>.0.0/24 no other bridge routes yet (call with the lock held)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for net in range(77, 200):
        if f"10.{net}.0.0/24" not in routes:
            return net
    raise AssertionError("no free 10.<net>.0.0/24 for the test's hosts")


@contextmanager
def network(names: Sequence[str], logs: Path, net: int | None = None) -> Iterator[dict[str, Host]]:
    """Hosts `names` (addresses .10, .11, … in that order) on a bridge of their own, on a /24
    that no other test's hosts use at the same time (`net`: that one)."""
    run = uuid.uuid4().hex[:4]
    bridge = f"lbr{run}"
    hosts: dict[str, Host] = {}
    _ip("link", "add", bridge, "type", "bridge")
    try:
        with open(LOCK, "w") as lock:  # two tests starting at once must not pick the same
            fcntl.flock(lock, fcntl.LOCK_EX)
            net = net if net is not None else _free_net()
            _ip("addr", "add", f"10.{net}.0.1/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
        for number, name in enumerate(names):
            ns, outside = f"linli-{run}-{name}", f"lv{run}{number}"
            address = f"10.{net}.0.{10 + number}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            hosts[name] = Host(name, ns, address, logs)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()
            subprocess.run(["ip", "netns", "del", host.ns], check=False)
            for folder in host.scratch:
                shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
