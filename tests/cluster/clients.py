"""A channel creating orders as the real ones do, for the multi-host tests' storms of creates."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
from sqlalchemy import func, select

from tests.factories import repair_body, resident_body
from tests.support import Backend
from workorders.models import IdempotencyKey, WorkOrder


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


@dataclass
class Storm:
    """`count` clients creating orders for one new resident, on threads, until `end()`."""

    clients: list[Client]
    threads: list[threading.Thread]
    stop: threading.Event
    resident_id: int

    @classmethod
    def start(cls, url: str, token: str, count: int, patience: float = 30.0) -> Storm:
        with httpx.Client(base_url=url, timeout=10) as http:
            made = http.post(
                "/residents", json=resident_body(), headers={"Authorization": f"Bearer {token}"}
            )
        assert made.status_code == 201, made.text
        resident_id, stop = made.json()["id"], threading.Event()
        clients = [Client(url, token, resident_id, stop, patience) for _ in range(count)]
        threads = [threading.Thread(target=c.run) for c in clients]
        for thread in threads:
            thread.start()
        return cls(clients, threads, stop, resident_id)

    def end(self, seconds: float) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(seconds)

    def each_order_once(self, backend: Backend) -> dict[str, int]:
        """Every accepted request has exactly one order, under its key: none lost, none twice.
        The accepted requests, key → order id."""
        assert [key for c in self.clients for key in c.abandoned] == []
        accepted = {k: v for c in self.clients for k, v in c.results.items()}
        assert len(accepted) == sum(len(c.results) for c in self.clients)  # keys are unique
        assert len(set(accepted.values())) == len(accepted)  # one order per request
        with backend.session() as session:
            stored = session.execute(
                select(func.count())
                .select_from(WorkOrder)
                .where(WorkOrder.resident_id == self.resident_id)
            ).scalar_one()
            keys = session.execute(
                select(IdempotencyKey.key, IdempotencyKey.resource_id).where(
                    IdempotencyKey.key.in_(list(accepted))
                )
            ).all()
        assert stored == len(accepted)  # none lost, none twice
        assert dict(keys) == accepted
        return accepted
