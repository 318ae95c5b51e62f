"""The dialogue stack as real processes: the Rasa server (trained model, Redis tracker and lock
stores) and the action server, in front of a work-order API and FHIR stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port
from tests.support import ApiProcess

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "current.tar.gz"
BIN = Path(sys.executable).parent
GAS_LINE = "96777"  # the gas company's emergency line the actions are configured with


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url}: process exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {seconds} s:\n{log.read_text()[-3000:]}")


@dataclass
class Process:
    argv: list[str]
    env: dict[str, str]
    health: str
    startup: float = 120.0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="linli-", suffix=".log")[1])
    )

    @property
    def url(self) -> str:
        """The server's root: its health URL without the path."""
        return self.health.rsplit("/", 1)[0]

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def start(self) -> None:
        self.spawn()
        assert self.proc is not None
        _wait(self.health, self.proc, self.log, self.startup)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def action_server(api_url: str, token: str, redis_url: str, prefix: str) -> Process:
    port = free_port()
    return Process(
        [str(BIN / "python"), "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
        {
            "WORKORDERS_URL": api_url,
            "LINLI_TOKEN_ACTIONS": token,
            "REDIS_URL": redis_url,
            "LINLI_REDIS_PREFIX": prefix,
            "LINLI_GAS_EMERGENCY_LINE": GAS_LINE,
        },
        f"http://127.0.0.1:{port}/health",
        startup=60,
    )


def rasa_server(action_url: str | None = None, redis_db: int = 0, prefix: str = "") -> Process:
    """Rasa with the trained model; with an action server, also its endpoints (the tracker
    store in Redis) and channels. The model alone parses, and starts sooner."""
    port = free_port()
    argv = [str(BIN / "rasa"), "run", "--enable-api", "--model", str(MODEL)]
    argv += ["--port", str(port), "--interface", "127.0.0.1"]
    env: dict[str, str] = {}
    if action_url is not None:
        argv += ["--endpoints", "bot/endpoints.yml", "--credentials", "bot/credentials.yml"]
        env = {
            "ACTION_SERVER_URL": f"{action_url}/webhook",
            "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "RASA_REDIS_PREFIX": prefix,
        }
    return Process(argv, env, f"http://127.0.0.1:{port}/status", startup=240)


class Chat:
    """One conversation through Rasa's REST channel."""

    def __init__(self, rasa_url: str, sender: str, metadata: dict[str, Any] | None = None) -> None:
        self.rasa_url, self.sender, self.metadata = rasa_url, sender, metadata or {}

    def say(self, text: str) -> list[dict[str, Any]]:
        response = httpx.post(
            f"{self.rasa_url}/webhooks/rest/webhook",
            json={"sender": self.sender, "message": text, "metadata": self.metadata},
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    def text(self, text: str) -> str:
        return "\n".join(m.get("text", "") for m in self.say(text) if m.get("text"))

    def tracker(self) -> dict[str, Any]:
        return httpx.get(f"{self.rasa_url}/conversations/{self.sender}/tracker", timeout=30).json()


@dataclass
class DialogueStack:
    """The running dialogue core in front of an API process: what test modules share."""

    api: ApiProcess
    rasa_url: str
    actions: Process
    rasa: Process  # stop() and start() again: same port, same tracker store


@contextmanager
def running_stack(
    database_url: str, fhir_url: str, tokens: dict[str, str], redis_prefix: str, tracker_prefix: str
) -> Iterator[DialogueStack]:
    """API, action server and Rasa server, started in that order and stopped in reverse."""
    with ExitStack() as stack:
        api_process = ApiProcess(database_url, fhir_url, tokens)
        api_process.start()
        stack.callback(api_process.stop)
        actions = action_server(
            api_process.base_url, tokens["bot"], os.environ["REDIS_URL"], redis_prefix
        )
        actions.start()
        stack.callback(actions.stop)
        rasa = rasa_server(actions.url, 15, tracker_prefix)
        rasa.start()
        stack.callback(rasa.stop)
        yield DialogueStack(api_process, rasa.url, actions, rasa)


def agent_token(stack: DialogueStack, run_id: str) -> str:
    """A bearer token of the dialogue stack's staff agent (seeded as agent-dlg<run id>)."""
    from tests.support import PASSWORD

    login = httpx.post(
        f"{stack.api.base_url}/auth/token",
        json={"username": f"agent-dlg{run_id}", "password": PASSWORD},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])
