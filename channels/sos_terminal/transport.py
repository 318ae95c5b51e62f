"""Sends one signed event to the work-order API and says what to do next.

delivered: the server confirmed (2xx) and the event may be forgotten; retry: try again later
(network down, server down or busy, clock corrected); rejected: the server refused it for good
(unknown device, wrong key, invalid body). A rejected SOS is still kept and retried slowly, but
the resident is told to phone for help.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx

from channels.sos_terminal.signing import Signer
from workorders.signing import EVENTS_PATH

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)


class Outcome(str, Enum):
    delivered = "delivered"
    retry = "retry"
    rejected = "rejected"


@dataclass
class SendResult:
    outcome: Outcome
    status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def code(self) -> str:
        return str(self.body.get("code", ""))


# Refusals that a later attempt can get past.
_TRANSIENT_CODES = frozenset({"replayed", "idempotency_retry"})


class Transport:
    def __init__(
        self,
        base_url: str,
        signer: Signer,
        *,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def send(self, body: bytes) -> SendResult:
        """One attempt; a stale-clock refusal is corrected and tried once more at once."""
        result = self._attempt(body)
        if result.code == "stale_timestamp":
            server_ts = (result.body.get("details") or {}).get("server_timestamp")
            if isinstance(server_ts, int | float):
                self.signer.adjust(float(server_ts))
                log.info("terminal clock corrected from the server's time")
                result = self._attempt(body)
        return result

    def _attempt(self, body: bytes) -> SendResult:
        headers = {"Content-Type": "application/json", **self.signer.headers(body)}
        try:
            response = self._client.post(
                f"{self.base_url}{EVENTS_PATH}", content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            return SendResult(Outcome.retry, error=type(exc).__name__)
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(Outcome.delivered, status, payload)
        message = f"HTTP {status} {payload.get('code', '')}".strip()
        if status >= 500 or status in (408, 429) or payload.get("code") in _TRANSIENT_CODES:
            return SendResult(Outcome.retry, status, payload, message)
        if payload.get("code") == "stale_timestamp":
            return SendResult(Outcome.retry, status, payload, message)
        return SendResult(Outcome.rejected, status, payload, message)
