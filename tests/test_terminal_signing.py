"""Terminal request signing: one canonical string, fixed by a vector computed with openssl.

The device and the server must sign the very same text; these tests pin it down so that a
change on either side breaks here, not in the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from channels.sos_terminal import signing as device_signing
from channels.sos_terminal.queue import Backoff, EventQueue, event_body
from channels.sos_terminal.transport import Outcome
from workorders import signing

BODY = b'{"event_id":"e1"}'
# printf ... | openssl dgst -sha256 -hmac 'test-secret-0123456789' (see the module docstring).
CANONICAL = (
    "LINLI-HMAC-SHA256\nPOST\n/terminals/events\nsos-0000\n1795000000\n"
    + "a" * 32
    + "\n337d3a6f8277aa12ab43dd3a843cf8023ea867e4fe181b19b3a733c2268e53c7"
)
SIGNATURE = "7ae0bd12cbf59181d06927136e05691c9db72c63aafff0073f9e321c5643bb43"


def test_canonical_string_and_signature_match_the_reference_vector() -> None:
    canonical = signing.canonical_request(
        "post", "/terminals/events", "sos-0000", 1795000000, "a" * 32, BODY
    )
    assert canonical == CANONICAL
    assert hashlib.sha256(BODY).hexdigest() in canonical
    assert signing.sign("test-secret-0123456789", canonical) == SIGNATURE
    assert signing.verify("test-secret-0123456789", canonical, SIGNATURE.upper())


@pytest.mark.parametrize(
    "field, value",
    [
        ("method", "PUT"),
        ("path", "/terminals/event"),
        ("terminal", "sos-0001"),
        ("timestamp", 1795000001),
        ("nonce", "b" * 32),
        ("body", b'{"event_id":"e2"}'),
    ],
)
def test_every_signed_part_changes_the_signature(field: str, value: object) -> None:
    parts: dict[str, object] = {
        "method": "POST",
        "path": "/terminals/events",
        "terminal": "sos-0000",
        "timestamp": 1795000000,
        "nonce": "a" * 32,
        "body": BODY,
    }
    parts[field] = value
    canonical = signing.canonical_request(*parts.values())  # type: ignore[arg-type]
    assert not signing.verify("test-secret-0123456789", canonical, SIGNATURE)


def test_device_headers_use_the_shared_canonical_string() -> None:
    signer = device_signing.Signer(device_signing.Credentials("sos-0000", "k" * 43))
    headers = signer.headers(BODY)
    canonical = signing.canonical_request(
        "POST",
        signing.EVENTS_PATH,
        "sos-0000",
        int(headers[signing.HEADER_TIMESTAMP]),
        headers[signing.HEADER_NONCE],
        BODY,
    )
    assert signing.verify("k" * 43, canonical, headers[signing.HEADER_SIGNATURE])
    again = signer.headers(BODY)
    assert again[signing.HEADER_NONCE] != headers[signing.HEADER_NONCE]  # a new one per attempt
    # The device has no signing code of its own to drift from the server's.
    assert device_signing.signed_headers is signing.signed_headers


def test_signer_learns_the_servers_clock() -> None:
    signer = device_signing.Signer(device_signing.Credentials("sos-0000", "k" * 43))
    signer.adjust(1795000000)
    assert abs(int(signer.headers(BODY)[signing.HEADER_TIMESTAMP]) - 1795000000) <= 1


def test_credentials_file_is_private_and_the_secret_never_printed(tmp_path: Path) -> None:
    creds = device_signing.Credentials("sos-0000", "very-secret-value")
    path = tmp_path / "creds" / "sos-0000.json"
    creds.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert device_signing.Credentials.load(path) == creds
    assert "very-secret-value" not in repr(creds)


def test_queue_survives_reopening_and_keeps_the_exact_bytes(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    path = tmp_path / "q.db"
    queue = EventQueue(path)
    event_id, body = event_body("sos", datetime.now(timezone.utc), trigger="hold")
    queue.put(event_id, "sos", body)
    queue.failed(queue.pending()[0].seq, 0.0, "ConnectError")
    queue.close()
    reopened = EventQueue(path)
    [entry] = reopened.pending()
    assert (entry.event_id, entry.body, entry.attempts) == (event_id, body, 1)
    reopened.done(entry.seq)
    assert reopened.depth() == 0
    reopened.close()


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(base=0.5, factor=2, maximum=30, jitter=0)
    assert [backoff.delay(n, Outcome.retry) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff.delay(20, Outcome.retry) == 30
    assert backoff.delay(1, Outcome.rejected) == backoff.rejected
