"""supervisord event listener: back-off for processes that keep failing, said in the log.

supervisord restarts a process that exits at once, and retries one that dies within
`startsecs` of its start after 1, 2, … s; after `startretries` such failures it gives up
(FATAL) and never tries again. Neither is right for a hotline left running at night:
- FATAL is not the end: the process is started again after `hold` seconds, then twice as long
  each time it fails again (at most `max_hold`), so it comes back once its cause is gone;
- a process that crashes `crashes` times within `window` seconds although it starts fine is
  held stopped for the same growing pause instead of being restarted at once forever.
The pause shrinks back to `hold` after `window` seconds without trouble. A process that runs
but stops answering its HTTP address (`--check name=url`) is restarted by ops.health's rules.
Every decision is a line in the log of `make run`, with where the process's own log is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import xmlrpc.client
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from supervisor import childutils

from ops.health import FAILURES, INTERVAL, Liveness, check_all, parse_checks


@dataclass
class Track:
    crashes: deque[float] = field(default_factory=deque)
    holds: int = 0  # pauses in a row; resets after a quiet window
    trouble_at: float = float("-inf")
    due: float | None = None  # when to start it again


@dataclass
class Policy:
    """Decisions only (no I/O), so the rules can be read and tested apart from supervisord."""

    hold: float = 30.0
    max_hold: float = 600.0
    window: float = 600.0
    crashes: int = 5
    tracks: dict[str, Track] = field(default_factory=dict)

    def _track(self, name: str, now: float) -> Track:
        track = self.tracks.setdefault(name, Track())
        if now - track.trouble_at > self.window:
            track.holds = 0
        while track.crashes and now - track.crashes[0] > self.window:
            track.crashes.popleft()
        return track

    def _pause(self, track: Track, now: float) -> float:
        pause = min(self.hold * 2**track.holds, self.max_hold)
        track.holds += 1
        track.trouble_at, track.due = now, now + pause
        track.crashes.clear()
        return pause

    def crashed(self, name: str, now: float) -> float | None:
        """It exited unexpectedly after it had started: the pause to hold it for, or None."""
        track = self._track(name, now)
        track.crashes.append(now)
        track.trouble_at = now
        if len(track.crashes) < self.crashes:
            return None
        return self._pause(track, now)

    def gave_up(self, name: str, now: float) -> float:
        """supervisord gave up on it (FATAL): the pause before the next start."""
        return self._pause(self._track(name, now), now)

    def due(self, now: float) -> list[str]:
        names = [n for n, t in self.tracks.items() if t.due is not None and t.due <= now]
        for name in names:
            self.tracks[name].due = None
        return names


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} watchdog  | {text}", file=sys.stderr, flush=True)


class Watchdog:
    def __init__(
        self,
        policy: Policy,
        logs: Path,
        rpc: Callable[[], xmlrpc.client.ServerProxy],
        checks: dict[str, str] | None = None,
    ) -> None:
        self.policy, self.logs, self._rpc = policy, logs, rpc
        self.checks, self.liveness = checks or {}, Liveness()
        self.running: set[str] = set()  # checked only while supervisord says RUNNING
        self.checked_at = float("-inf")

    def handle(self, event: str, about: dict[str, str], now: float) -> None:
        name = about.get("processname", "")
        log = self.logs / f"{name}.log"
        if event.startswith("PROCESS_STATE_"):
            self.liveness.started(name)
            if event == "PROCESS_STATE_RUNNING":
                self.running.add(name)
            else:
                self.running.discard(name)
        if event == "PROCESS_STATE_EXITED" and about.get("expected") == "0":
            pause = self.policy.crashed(name, now)
            if pause is not None:
                _say(
                    f"{name} crashed {self.policy.crashes} times in "
                    f"{self.policy.window:g} s: holding it stopped for {pause:g} s "
                    f"(back-off) before the next start. Its log: {log}"
                )
                self._call("stopProcess", name)
        elif event == "PROCESS_STATE_FATAL":
            pause = self.policy.gave_up(name, now)
            _say(
                f"{name} keeps failing to start; supervisord gave up, the watchdog tries "
                f"again in {pause:g} s (back-off). Its log: {log}"
            )
        elif event.startswith("TICK"):
            for due in self.policy.due(now):
                _say(f"starting {due} again after its pause")
                self._call("startProcess", due)
            if now - self.checked_at >= INTERVAL - 0.5:
                self.checked_at = now
                self._check_liveness()

    def _check_liveness(self) -> None:
        urls = {name: url for name, url in self.checks.items() if name in self.running}
        for name, answered in check_all(urls).items():
            if self.liveness.observe(name, answered):
                _say(
                    f"{name} runs but has not answered {urls[name]} {FAILURES} times in a "
                    f"row: killing it to be restarted. Its log: {self.logs / f'{name}.log'}"
                )
                self._kill(name)

    def _kill(self, name: str) -> None:
        """SIGKILL: a hung process would not act on SIGTERM. supervisord then restarts it as
        after any crash (and the back-off counts it as one)."""
        try:
            self._rpc().supervisor.signalProcess(name, "KILL")
        except xmlrpc.client.Fault as fault:
            _say(f"signalProcess({name}): {fault.faultString}")

    def _call(self, method: str, name: str) -> None:
        try:
            getattr(self._rpc().supervisor, method)(name, False)
        except xmlrpc.client.Fault as fault:  # already started, shutting down: nothing to do
            _say(f"{method}({name}): {fault.faultString}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.watchdog")
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--max-hold", type=float, default=600.0)
    parser.add_argument("--window", type=float, default=600.0)
    parser.add_argument("--crashes", type=int, default=5)
    parser.add_argument("--logs", type=Path, default=Path("var/log"))
    parser.add_argument("--check", action="append", default=[], metavar="NAME=URL")
    args = parser.parse_args(argv)
    watchdog = Watchdog(
        Policy(args.hold, args.max_hold, args.window, args.crashes),
        args.logs,
        lambda: childutils.getRPCInterface(os.environ),
        parse_checks(args.check),
    )
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        about = childutils.get_headers(payload.split("\n", 1)[0]) if payload.strip() else {}
        watchdog.handle(headers["eventname"], about, time.monotonic())
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
