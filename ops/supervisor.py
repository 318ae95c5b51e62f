"""supervisord's configuration for `make run`, made from the Procfile, the one list of processes.

    python -m ops.supervisor [--procfile Procfile] [--run-dir var]   # prints the file it wrote

`${NAME}` in a command is taken from the environment (scripts/run sets ports and
LINLI_RUN_DIR); an unset one is an error, not an empty string. Every process gets the same
policy: restarted alone when it exits; one that dies within STARTSECS of its start is retried
after 1, 2, … STARTRETRIES s and then given up by supervisord (FATAL), which ops.watchdog
turns into a later retry with a growing pause. Runtime files go under the run directory:
`supervisor/` (configuration, socket, pid) and `log/` (one file per process).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ops.health import LIVENESS

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"[a-z][a-z0-9_-]*")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
STARTSECS = 10  # a process that dies sooner never really started: back off
STARTRETRIES = 5
STOPWAITSECS = 15  # then SIGKILL: a hotline hangs up its calls first


class ProcfileError(ValueError):
    pass


@dataclass(frozen=True)
class Program:
    name: str
    command: str


def read_procfile(path: Path, env: Mapping[str, str]) -> list[Program]:
    """`name: command` lines, in order; blank lines and `#` comments are skipped."""
    programs: list[Program] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}:{number}"
        name, colon, command = (part.strip() for part in text.partition(":"))
        if not colon or not NAME.fullmatch(name) or not command:
            raise ProcfileError(f"{where}: expected `name: command`, got {text!r}")
        if any(p.name == name for p in programs):
            raise ProcfileError(f"{where}: {name!r} is listed twice")
        programs.append(Program(name, expand(command, env, where)))
    if not programs:
        raise ProcfileError(f"{path}: no processes")
    return programs


def expand(command: str, env: Mapping[str, str], where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ProcfileError(f"{where}: ${{{name}}} is not set (scripts/run sets it)")
        return env[name]

    return PLACEHOLDER.sub(value, command)


def _section(title: str, options: Mapping[str, object]) -> str:
    lines = [f"[{title}]", *(f"{key}={value}" for key, value in options.items())]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    """supervisord expands %(...)s in values: a literal % must be doubled."""
    return value.replace("%", "%%")


def render(
    programs: list[Program],
    run_dir: Path,
    *,
    python: str = sys.executable,
    color: bool = False,
    hold: float = 30.0,
    checks: Mapping[str, str] | None = None,
) -> str:
    """The whole supervisord.conf. `hold`: the watchdog's first pause before it retries a
    process that supervisord gave up on (it doubles each time, up to 10 minutes). `checks`:
    program → the HTTP address whose silence gets it restarted (ops/health.py)."""
    conf, logs = run_dir / "supervisor", run_dir / "log"
    width = max(len(p.name) for p in programs)
    parts = [
        "; Made by ops/supervisor.py from the Procfile: edit that, not this file.\n",
        _section(
            "supervisord",
            {
                "nodaemon": "true",
                "identifier": "linli",
                "directory": ROOT,
                "logfile": logs / "supervisord.log",
                "logfile_maxbytes": "10MB",
                "logfile_backups": 2,
                "pidfile": conf / "supervisord.pid",
                "childlogdir": logs,
                "loglevel": "info",
                # As root (containers, CI) say so, or supervisord warns about it at every start.
                **({"user": "root"} if os.geteuid() == 0 else {}),
            },
        ),
        _section("unix_http_server", {"file": conf / "supervisor.sock", "chmod": "0700"}),
        _section(
            "rpcinterface:supervisor",
            {"supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"},
        ),
        _section("supervisorctl", {"serverurl": f"unix://{conf / 'supervisor.sock'}"}),
    ]
    for index, program in enumerate(programs):
        parts.append(
            _section(
                f"program:{program.name}",
                {
                    "command": _quoted(program.command),
                    "directory": ROOT,
                    "priority": 100 + index,  # start in Procfile order, stop in reverse
                    "autostart": "true",
                    "autorestart": "true",
                    "startsecs": STARTSECS,
                    "startretries": STARTRETRIES,
                    "stopsignal": "TERM",
                    "stopwaitsecs": STOPWAITSECS,
                    "stopasgroup": "true",
                    "killasgroup": "true",
                    "redirect_stderr": "true",
                    "stdout_logfile": logs / f"{program.name}.log",
                    "stdout_logfile_maxbytes": "10MB",
                    "stdout_logfile_backups": 2,
                    "stdout_events_enabled": "true",
                },
            )
        )
    listener = {
        "directory": ROOT,
        "priority": 10,  # up before the programs, down after them: no line is lost
        "autorestart": "true",
        "startsecs": 0,
        "stdout_logfile": "NONE",  # stdout is the event protocol
        "stderr_logfile": "/dev/stdout",  # what it prints: the terminal of `make run`
        "stderr_logfile_maxbytes": 0,
        "environment": 'PYTHONIOENCODING="utf-8",PYTHONUNBUFFERED="1"',
    }
    console = f"{python} -m ops.console --width {width}" + (" --color" if color else "")
    parts.append(
        _section(
            "eventlistener:console",
            {"command": console, "events": "PROCESS_LOG", "buffer_size": 8192, **listener},
        )
    )
    watchdog = f"{python} -m ops.watchdog --hold {hold:g} --logs {logs}" + "".join(
        f" --check {name}={url}" for name, url in (checks or {}).items()
    )
    parts.append(
        _section(
            "eventlistener:watchdog",
            {
                "command": watchdog,
                "events": "PROCESS_STATE,TICK_5",
                "buffer_size": 1024,
                **listener,
            },
        )
    )
    return "\n".join(parts)


def write(
    procfile: Path,
    run_dir: Path,
    env: Mapping[str, str],
    *,
    color: bool = False,
    hold: float = 30.0,
    liveness: Mapping[str, str] = LIVENESS,
) -> Path:
    """Write run_dir/supervisor/supervisord.conf (and make the log folder); its path.
    `liveness`: program → its address with the Procfile's ${…}, for those it runs."""
    programs = read_procfile(procfile, env)
    checks = {
        p.name: expand(liveness[p.name], env, f"liveness of {p.name}")
        for p in programs
        if p.name in liveness
    }
    text = render(programs, run_dir, color=color, hold=hold, checks=checks)
    for folder in (run_dir / "supervisor", run_dir / "log"):
        folder.mkdir(parents=True, exist_ok=True)
    path = run_dir / "supervisor" / "supervisord.conf"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.supervisor", description=__doc__)
    parser.add_argument("--procfile", type=Path, default=ROOT / "Procfile")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--color", action="store_true", help="colour process names (a terminal)")
    parser.add_argument(
        "--hold",
        type=float,
        default=float(os.environ.get("LINLI_WATCHDOG_HOLD_SECONDS", "30")),
        help="first pause before a process supervisord gave up on is tried again",
    )
    args = parser.parse_args(argv)
    try:
        path = write(
            args.procfile, args.run_dir.resolve(), os.environ, color=args.color, hold=args.hold
        )
    except ProcfileError as exc:
        raise SystemExit(f"ops.supervisor: {exc}") from None
    print(path)


if __name__ == "__main__":
    main()
