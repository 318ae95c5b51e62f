"""The headless simulator: the simulated terminal with a tiny HTTP control server instead of
the keyboard, so it runs under `make run` and anyone can press the button with curl.

    curl -X POST 127.0.0.1:8095/sos      three quick presses: SOS
    curl -X POST 127.0.0.1:8095/hold     held for 2 s: SOS
    curl -X POST 127.0.0.1:8095/press    one short press: talk (or the self-test, when asked)
    curl 127.0.0.1:8095/state            light, last spoken text, queue length, last answer

A POST answers when the gesture is done (a hold takes 2.3 s) with the state; `?wait=N` also
waits up to N seconds for the server to confirm what is queued. It listens on loopback only and
refuses requests that come from a web page (they carry `Origin`, or a foreign `Host` after DNS
rebinding): a page the developer happens to open must not be able to raise an emergency.

Under `make run` the API may start (or be restarted) after this process, and supervisord
would start an exited process again and again: so it never exits on its own; until the
terminal is registered (provisioned once the API answers) /state says why it is not ready and
presses get 503.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.sos_terminal.device import SosTerminal
from channels.sos_terminal.signing import Credentials
from channels.sos_terminal.simulator import Finger, Panel, api_up, build, credentials, provision
from workorders.contract import TerminalEventType

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8095
RETRY_SECONDS = 2.0
MAX_WAIT_SECONDS = 60.0
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_GESTURES = {"/press": "press", "/sos": "triple", "/hold": "hold"}


class Headless:
    """The simulated device and what the control server may do with it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.panel = Panel()
        self.stop = threading.Event()
        self.terminal: SosTerminal | None = None
        self.finger: Finger | None = None
        self.problem: str | None = "正在启动…"
        self._lock = threading.Lock()

    # --- life cycle ------------------------------------------------------------------------

    def bring_up(self) -> None:
        """Credentials from the environment or var/, else provisioned once the API answers."""
        creds: Credentials | None = credentials(self.args)
        while creds is None and not self.stop.is_set():
            if api_up(self.args.api):
                try:
                    creds = provision(self.args)
                except SystemExit as exc:  # wrong password, no resident: say why, try again
                    self._set_problem(f"{exc}（稍后自动重试）")
            else:
                self._set_problem(f"服务器 {self.args.api} 还没有响应；它启动后自动登记终端。")
            if creds is None:
                self.stop.wait(RETRY_SECONDS)
        if creds is None:
            return
        terminal, finger = build(self.args, creds, self.panel)
        with self._lock:
            if self.stop.is_set():  # stopped while it was being registered
                terminal.close()
                return
            self.terminal, self.finger, self.problem = terminal, finger, None
        waiting = terminal.queue.depth()
        if waiting:
            print(f"  本机还有 {waiting} 条求助没送出，正在重试。", flush=True)
        print(f"  终端 {creds.device_id} 已就绪。", flush=True)

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            terminal, self.terminal, self.finger = self.terminal, None, None
        if terminal is not None:
            left = terminal.queue.depth()
            if left:
                print(f"  还有 {left} 条求助没送出：保存在本机，下次启动后继续发送。", flush=True)
            terminal.close()

    def _set_problem(self, problem: str) -> None:
        if problem != self.problem:  # once per change, not every retry, in make run's log
            print(f"  ⏳ {problem}", flush=True)
        self.problem = problem

    # --- what the control server does -------------------------------------------------------

    def state(self) -> dict[str, Any]:
        terminal = self.terminal
        return {
            "device_id": self.args.device_id,
            "api": self.args.api,
            "ready": terminal is not None,
            "problem": self.problem,
            "queue_length": terminal.queue.depth() if terminal is not None else None,
            **self.panel.snapshot(),
        }

    def act(self, gesture: str, wait: float) -> dict[str, Any] | None:
        """Press as asked; None when the device is not ready yet."""
        terminal, finger = self.terminal, self.finger
        if terminal is None or finger is None:
            return None
        getattr(finger, gesture)()
        # The device decides what the gesture was only after its press gap: answer after it,
        # so the state shows the call being placed or the SOS being sent.
        time.sleep(terminal.config.press_gap + 0.1)
        if wait > 0:
            deadline = time.monotonic() + wait
            while terminal.queue.pending(TerminalEventType.sos.value):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
            terminal.audio.flush(2)  # so the confirmation's words are in `last_spoken`
        return self.state()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    headless: Headless


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path, _ = self._target()
        if not self._allowed():
            return
        if path == "/state":
            self._reply(200, self.server.headless.state())
        elif path in _GESTURES:
            self._reply(405, {"error": "按键请用 POST，例如 curl -X POST …/sos"}, allow="POST")
        else:
            self._not_found()

    def do_POST(self) -> None:
        path, query = self._target()
        self._discard_body()
        if not self._allowed():
            return
        if path not in _GESTURES:
            if path == "/state":
                self._reply(405, {"error": "状态请用 GET"}, allow="GET")
            else:
                self._not_found()
            return
        try:
            wait = min(max(float(query.get("wait", ["0"])[0]), 0.0), MAX_WAIT_SECONDS)
        except ValueError:
            self._reply(400, {"error": "wait 应为秒数，例如 ?wait=10"})
            return
        state = self.server.headless.act(_GESTURES[path], wait)
        if state is None:
            state = self.server.headless.state()
            self._reply(503, {"error": f"终端还没有准备好：{state['problem']}", "state": state})
            return
        self._reply(200, {"pressed": path.strip("/"), "state": state})

    # --- helpers ---------------------------------------------------------------------------

    def _target(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path.rstrip("/") or "/", parse_qs(parts.query)

    def _allowed(self) -> bool:
        host = (self.headers.get("Host") or HOST).strip().lower()
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]" in host else host
        if self.headers.get("Origin") is None and name in _LOOPBACK_NAMES:
            return True
        self._reply(403, {"error": "只接受本机命令行的请求（例如 curl），不接受网页发来的请求。"})
        return False

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(min(length, 1 << 16))

    def _not_found(self) -> None:
        self._reply(404, {"error": "没有这个地址；可用：POST /press、/sos、/hold，GET /state"})

    def _reply(self, status: int, body: dict[str, Any], allow: str | None = None) -> None:
        payload = json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control: " + format, *args)


def serve(args: argparse.Namespace) -> None:
    """Run until SIGINT or SIGTERM (Ctrl-C in make run), then stop cleanly."""
    headless = Headless(args)
    try:
        server = _Server((HOST, args.control_port), _Handler)
    except OSError as exc:
        raise SystemExit(f"控制端口 {HOST}:{args.control_port} 无法使用：{exc.strerror}") from exc
    server.headless = headless
    port = server.server_address[1]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: headless.stop.set())
    threads = [
        threading.Thread(target=server.serve_forever, name="sos-control", daemon=True),
        threading.Thread(target=headless.bring_up, name="sos-bring-up", daemon=True),
    ]
    for thread in threads:
        thread.start()
    print(
        f"一键呼叫终端模拟器（无键盘）：设备 {args.device_id}，服务器 {args.api}\n"
        f"  控制：curl -X POST {HOST}:{port}/sos（连按三次）| /hold（长按 2 秒）| "
        f"/press（短按）；curl {HOST}:{port}/state",
        flush=True,
    )
    try:
        headless.stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        threads[1].join(RETRY_SECONDS + 12)
        headless.close()
