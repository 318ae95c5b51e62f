"""The headless SOS terminal simulator (`--control-port`), as `make run` starts it:
a real subprocess, started before the API, pressed over HTTP; the API a real process (SQLite).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.factories import resident_body
from tests.servers import free_port
from tests.support import PASSWORD, ROOT, Api, ApiProcess, Backend
from workorders.models import WorkOrder


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_headless_simulator_waits_for_the_api_then_curl_presses_the_button(
    api: Api, backend: Backend, fhir_url: str, tmp_path: Path
) -> None:
    resident = api.call("bot", "POST", "/residents", json=resident_body())
    assert resident.status_code == 201, resident.text
    resident_id = resident.json()["id"]
    device_id = f"sos-{uuid.uuid4().hex[:10]}"
    late_api = ApiProcess(backend.url, fhir_url, {}, port=free_port())
    control = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "LINLI_TERMINAL_SECRET"}
    log_path = tmp_path / "simulator.log"
    with log_path.open("wb") as log:
        simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "channels.sos_terminal",
                "--control-port",
                control.rsplit(":", 1)[1],
                "--api",
                late_api.base_url,  # nothing listens there yet, as under make run at start-up
                "--device-id",
                device_id,
                "--state-dir",
                str(tmp_path / "device"),
                "--staff-user",
                "admin",
                "--resident-id",
                str(resident_id),
                "--no-heartbeat",
            ],
            cwd=ROOT,
            env={**env, "LINLI_DEMO_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def get(path: str, **kwargs: Any) -> httpx.Response | None:
        try:
            return httpx.get(f"{control}{path}", timeout=10, **kwargs)
        except httpx.TransportError:
            return None

    def post(path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{control}{path}", timeout=30, **kwargs)

    try:
        waiting = wait_for(lambda: get("/state"), 20, "the control server").json()
        assert waiting["ready"] is False and waiting["queue_length"] is None
        early = post("/sos")
        assert early.status_code == 503 and "没有准备好" in early.json()["error"]

        late_api.start()
        ready = wait_for(lambda: get("/state").json()["ready"], 30, "provisioning")
        assert ready is True
        assert (tmp_path / "device" / f"{device_id}.json").exists()  # its secret, kept

        sos = post("/sos", params={"wait": 20})
        assert sos.status_code == 200, sos.text
        state = sos.json()["state"]
        assert state["queue_length"] == 0 and state["light"] == "confirmed"
        answer = state["last_answer"]
        assert answer["status"] == "created"
        assert state["last_spoken"] == answer["message"]

        with backend.session() as session:
            [order] = session.execute(
                select(WorkOrder).where(
                    WorkOrder.resident_id == resident_id, WorkOrder.kind == "emergency"
                )
            ).scalars()
        assert order.id == answer["order_id"]
        assert (order.priority, order.channel) == ("P0", "terminal")
        assert "连按三次求助键" in order.details["description"]

        held = post("/hold", params={"wait": 20}).json()["state"]["last_answer"]
        assert (held["status"], held["order_id"]) == ("joined", order.id)

        assert post("/press").status_code == 200
        wait_for(lambda: get("/state").json()["talks"] == 1, 5, "the short press")

        # Only a command line on this machine may press: not a web page, not another host name.
        assert post("/sos", headers={"Origin": "http://evil.example"}).status_code == 403
        assert post("/sos", headers={"Host": "evil.example:8095"}).status_code == 403
        assert get("/sos").status_code == 405  # type: ignore[union-attr]
        assert post("/reboot").status_code == 404
        assert post("/sos", params={"wait": "soon"}).status_code == 400
        time.sleep(1)  # a press would have been answered by now
        after = get("/state").json()  # type: ignore[union-attr]
        assert after["confirmed"] == 2 and after["queue_length"] == 0

        simulator.send_signal(signal.SIGTERM)  # what honcho sends on Ctrl-C
        assert simulator.wait(20) == 0
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.wait(10)
        late_api.stop()
    output = log_path.read_text(encoding="utf-8")
    assert "curl -X POST" in output and "还没有响应" in output
    assert f"✅ 服务器已确认：工单 #{order.id}（created）" in output
