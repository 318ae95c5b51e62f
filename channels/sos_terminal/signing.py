"""The device's side of signing: credentials, a clock that learns the server's time, headers.

What is signed, and how, is defined once in `workorders/signing.py` (public, shared with the
server); this module only supplies the device's id, secret and clock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from workorders.signing import EVENTS_PATH, signed_headers


@dataclass(frozen=True)
class Credentials:
    device_id: str
    secret: str

    def __repr__(self) -> str:  # never print the secret, not even in a traceback
        return f"Credentials(device_id={self.device_id!r}, secret=***)"

    @classmethod
    def load(cls, path: Path) -> Credentials:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["device_id"], data["secret"])

    def save(self, path: Path) -> None:
        """Readable by the owner only: the secret lets anyone raise alarms as this device."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"device_id": self.device_id, "secret": self.secret}, out)
        tmp.replace(path)


class Signer:
    """Signs requests with the device's secret and its best idea of the server's time.

    A Raspberry Pi has no battery clock: until NTP answers, its time may be far off. When the
    server refuses a request as stale it says its own time, and `adjust` keeps the offset.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def device_id(self) -> str:
        return self.credentials.device_id

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def adjust(self, server_timestamp: float) -> None:
        with self._lock:
            self._offset = server_timestamp - time.time()

    def headers(self, body: bytes, path: str = EVENTS_PATH) -> dict[str, str]:
        """New timestamp and nonce on every call: one call per attempt."""
        return signed_headers(
            self.credentials.secret,
            self.credentials.device_id,
            body,
            path=path,
            timestamp=int(self.now()),
        )
