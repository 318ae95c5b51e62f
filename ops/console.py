"""supervisord event listener: every process's output in the terminal of `make run`, each line
prefixed with the time and the process name, as honcho printed it.

supervisord writes each process's output to var/log/<name>.log; with `stdout_events_enabled`
it also sends it here as PROCESS_LOG events. This listener's stdout is the event protocol, so
it prints to stderr, which supervisord copies to its own stdout (the terminal).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from supervisor import childutils

COLORS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)
KEEP_PARTIAL = 8192  # a line longer than this is printed in pieces


class Console:
    """Turns chunks of output into prefixed lines; a chunk may end in the middle of a line."""

    def __init__(self, out: TextIO, width: int, color: bool) -> None:
        self.out, self.width, self.color = out, width, color
        self._partial: dict[str, str] = {}
        self._colors: dict[str, int] = {}

    def feed(self, name: str, data: str) -> None:
        text = self._partial.pop(name, "") + data.replace("\r\n", "\n")
        *lines, rest = text.split("\n")
        if len(rest) > KEEP_PARTIAL:
            lines.append(rest)
            rest = ""
        if rest:
            self._partial[name] = rest
        for line in lines:
            # A progress bar redraws itself with \r: show only its last state.
            shown = next((s for s in reversed(line.split("\r")) if s.strip()), "")
            self.out.write(f"{self._prefix(name)}{shown}\n")
        self.out.flush()

    def _prefix(self, name: str) -> str:
        label = f"{time.strftime('%H:%M:%S')} {name:<{self.width}} |"
        if not self.color:
            return label + " "
        code = self._colors.setdefault(name, COLORS[len(self._colors) % len(COLORS)])
        return f"\033[{code}m{label}\033[0m "


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.console")
    parser.add_argument("--width", type=int, default=9, help="room for the longest name")
    parser.add_argument("--color", action="store_true")
    args = parser.parse_args(argv)
    console = Console(sys.stderr, args.width, args.color)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers["eventname"].startswith("PROCESS_LOG"):
            about, data = childutils.eventdata(payload)
            console.feed(about["processname"], data)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
