"""`make run`'s process manager: supervisord configured from the Procfile (ops/supervisor.py),
the terminal's log (ops/console.py) and the back-off for processes that keep failing
(ops/watchdog.py). The rules on their own, then a real supervisord with small processes."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ops.console import Console
from ops.health import INTERVAL, Liveness, answers, parse_checks
from ops.supervisor import ProcfileError, read_procfile, write
from ops.watchdog import Policy
from tests.servers import free_port
from tests.supervised import Supervised, until

ROOT = Path(__file__).resolve().parent.parent


def test_the_procfile_is_the_one_list_and_every_placeholder_must_be_set(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("# comment\n\napi: serve --port ${PORT}\nsos: press 100%\n")
    programs = read_procfile(procfile, {"PORT": "8123"})
    assert [(p.name, p.command) for p in programs] == [
        ("api", "serve --port 8123"),
        ("sos", "press 100%"),
    ]
    with pytest.raises(ProcfileError, match=r"\$\{PORT\} is not set"):
        read_procfile(procfile, {})
    for bad in ("api serve\n", "api: one\napi: two\n", "# nothing\n"):
        procfile.write_text(bad)
        with pytest.raises(ProcfileError):
            read_procfile(procfile, {})


def test_make_run_s_procfile_names_every_process_of_the_readme() -> None:
    env = {name: "1" for name in ("LINLI_FHIR_PORT", "LINLI_API_PORT", "LINLI_ACTIONS_PORT")}
    env |= {"LINLI_RASA_PORT": "1", "LINLI_SOS_PORT": "1", "LINLI_RUN_DIR": "/run"}
    env |= {"LINLI_GATEWAY_PORT": "1", "WECHAT_STANDIN_PORT": "1", "GATEWAY_URL": "http://x"}
    env |= {"LINLI_BIND": "127.0.0.1"}
    names = [p.name for p in read_procfile(ROOT / "Procfile", env)]
    assert names == [
        *("fhir", "api", "scheduler", "actions", "rasa", "gateway", "wechat", "outbox"),
        *("health", "sos", "hotline"),
    ]


def test_the_console_prefixes_whole_lines_with_the_process_name() -> None:
    out = io.StringIO()
    console = Console(out, width=7, color=False)
    console.feed("api", "started\nhalf a ")
    console.feed("hotline", "ringing\n")
    console.feed("api", "line\nEpochs 1%\rEpochs 50%\rEpochs 100%\n")
    lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in out.getvalue().splitlines()]
    assert lines == [
        "api     | started",
        "hotline | ringing",
        "api     | half a line",
        "api     | Epochs 100%",
    ]


def test_the_watchdog_backs_off_a_process_that_keeps_failing_and_forgives_it_later() -> None:
    policy = Policy(hold=30, max_hold=100, window=600, crashes=3)
    assert policy.crashed("api", 0) is None
    assert policy.crashed("api", 10) is None
    assert policy.crashed("api", 20) == 30  # the third crash in ten minutes: held 30 s
    assert policy.due(49) == [] and policy.due(50) == ["api"] and policy.due(51) == []
    assert policy.gave_up("api", 60) == 60  # and it failed again: twice as long
    assert policy.gave_up("api", 130) == 100  # never more than max_hold
    assert policy.crashed("rasa", 130) is None  # each process on its own
    assert policy.gave_up("api", 130 + 601) == 30  # ten quiet minutes: forgiven
    assert policy.crashed("api", 2000) is None  # an old crash no longer counts


def test_liveness_restarts_a_process_only_after_it_answered_and_then_fell_silent() -> None:
    liveness = Liveness(failures=3)
    assert [liveness.observe("rasa", False) for _ in range(10)] == [False] * 10  # still loading
    assert liveness.observe("rasa", True) is False
    assert [liveness.observe("rasa", False) for _ in range(3)] == [False, False, True]
    assert liveness.observe("rasa", False) is False  # restarted: waits for an answer again
    assert liveness.observe("api", True) is False
    assert liveness.observe("api", False) is False
    assert liveness.observe("api", True) is False  # one answer forgives the silence
    assert [liveness.observe("api", False) for _ in range(3)] == [False, False, True]
    liveness.observe("gateway", True)
    liveness.started("gateway")  # restarted by its supervisor meanwhile
    assert [liveness.observe("gateway", False) for _ in range(5)] == [False] * 5


def test_parse_checks_says_what_is_wrong() -> None:
    assert parse_checks(["linli-api=http://10.0.0.11:8000/health"]) == {
        "linli-api": "http://10.0.0.11:8000/health"
    }
    for bad in ("linli-api", "=http://x", "api=ftp://x"):
        with pytest.raises(ValueError, match="--check wants name=http://"):
            parse_checks([bad])


def test_a_process_that_stops_answering_is_restarted_alone(tmp_path: Path) -> None:
    port = free_port()
    procfile = (
        f"web: {sys.executable} -m http.server --bind 127.0.0.1 {port}\n"
        "other: sh -c 'exec sleep 600'\n"
    )
    liveness = {"web": "http://127.0.0.1:${WEB_PORT}/"}
    supervised = _supervisord(tmp_path, procfile, liveness, WEB_PORT=str(port))
    supervised.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        both = lambda: answers(url) and supervised.running("web", "other")  # noqa: E731
        before = until("web answers", both, 30)
        time.sleep(INTERVAL + 2)  # a round of checks saw it answer: it is not loading
        os.kill(before["web"], signal.SIGSTOP)  # hung: alive to supervisord, silent to HTTP
        after = until(
            "web restarted",
            lambda: (p := supervised.running("web")) and p["web"] != before["web"] and p,
            60,
        )
        assert after["other"] == before["other"], "only the silent process is restarted"
        until("web answers again", lambda: answers(url), 30)
    finally:
        status = supervised.stop()
        text = supervised.text()
        shutil.rmtree(supervised.run_dir, ignore_errors=True)
    assert status == 0, text
    assert (
        f"web runs but has not answered http://127.0.0.1:{port}/ 3 times in a row: killing it"
        in text
    ), text


def _supervisord(
    tmp_path: Path, procfile: str, liveness: dict[str, str] | None = None, **env: str
) -> Supervised:
    # Short (the unix socket's path has a limit) and unique (another test run may be beside us).
    run_dir = Path(tempfile.mkdtemp(prefix="linli-sv-"))
    (tmp_path / "Procfile").write_text(procfile)
    conf = write(
        tmp_path / "Procfile", run_dir, {**os.environ, **env}, hold=2, liveness=liveness or {}
    )
    binary = str(Path(sys.executable).parent / "supervisord")
    return Supervised(
        [binary, "--nodaemon", "--configuration", str(conf)], run_dir, dict(os.environ)
    )


def test_a_crash_restarts_that_process_alone_and_one_that_keeps_failing_is_retried_later(
    tmp_path: Path,
) -> None:
    procfile = (
        "steady: sh -c 'echo \"hello ${WHO}\"; exec sleep 600'\n"
        "other: sh -c 'exec sleep 600'\n"
        "broken: sh -c 'echo cannot start; exit 3'\n"
    )
    supervised = _supervisord(tmp_path, procfile, WHO="world")
    supervised.start()
    try:
        before = until("steady and other up", lambda: supervised.running("steady", "other"), 30)
        os.kill(before["steady"], signal.SIGKILL)
        after = until(
            "steady restarted",
            lambda: (p := supervised.running("steady")) and p["steady"] != before["steady"] and p,
            30,
        )
        assert after["other"] == before["other"], "only the crashed process is restarted"

        # supervisord retries `broken` after 1, 2, … 5 s, gives up; the watchdog starts it again.
        until(
            "supervisord gave up", lambda: "gave up: broken entered FATAL" in supervised.text(), 60
        )
        until("the watchdog's retry", lambda: "starting broken again" in supervised.text(), 30)
        assert supervised.pids()["other"] == before["other"]
    finally:
        status = supervised.stop()
        text, own_log = supervised.text(), supervised.log("broken")
        shutil.rmtree(supervised.run_dir, ignore_errors=True)
    assert status == 0, text
    assert re.search(r"\d\d:\d\d:\d\d steady +\| hello world", text), text
    assert re.search(r"broken +\| cannot start", text), text
    assert (
        "broken keeps failing to start; supervisord gave up, the watchdog tries again in 2 s"
        in text
    )
    assert "exited: other" not in text and "exited: steady (terminated by SIGKILL" in text
    assert "cannot start" in own_log  # each process's own log file too
