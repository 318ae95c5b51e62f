"""A channel creating orders as the real ones do, for the multi-host tests' storms of creates."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx

from tests.factories import repair_body


@dataclass
class Client:
    """One channel creating orders, each with its own idempotency key, retrying a failed try
    with the same key; what it sent and what it got."""

    url: str
    token: str
    resident_id: int
    stop: threading.Event
    patience: float = 30.0  # how long one order is retried before the client gives it up
    results: dict[str, int] = field(default_factory=dict)  # idempotency key → order id
    accepted: list[float] = field(default_factory=list)  # when each accepted try was sent
    retries: list[float] = field(default_factory=list)  # when a try failed (monotonic)
    abandoned: list[str] = field(default_factory=list)  # keys never accepted within patience

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=5) as http:
            while not self.stop.is_set():
                key = uuid.uuid4().hex
                body = repair_body(self.resident_id)
                deadline = time.monotonic() + self.patience
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    try:
                        answer = http.post(
                            "/work-orders", json=body, headers={"Idempotency-Key": key}
                        )
                        if answer.status_code in (200, 201):
                            self.results[key] = answer.json()["id"]
                            self.accepted.append(sent)
                            break
                    except httpx.HTTPError:
                        pass
                    self.retries.append(time.monotonic())
                    time.sleep(0.2)
                else:
                    self.abandoned.append(key)
                    return
