"""HMAC signing of SOS-terminal requests: the one canonical string device and server share.

This module is public: the device program (channels/sos_terminal) and the API both import it,
so the two sides can never disagree on what is signed. It imports nothing of the service.

A signed request carries four headers:

    X-Linli-Terminal   the device id (e.g. sos-0000), as provisioned
    X-Linli-Timestamp  Unix seconds when the request was signed (the server accepts ±5 min)
    X-Linli-Nonce      16-64 random characters, new for every attempt (replays are refused)
    X-Linli-Signature  hex HMAC-SHA256 of the canonical string, keyed with the device secret

The canonical string is these lines joined by "\\n":

    LINLI-HMAC-SHA256
    <METHOD>
    <path>
    <device id>
    <timestamp>
    <nonce>
    <hex SHA-256 of the exact body bytes>

The key is the provisioned secret string, encoded as ASCII. The event id inside the body is the
idempotency key: a retry re-signs the same body with a new timestamp and nonce, so the server
recognises it as the same event (never a second order), while a byte-for-byte replay of a
captured request is refused by its nonce.

The same secret gives the terminal's SIP password (`sip_password`): an HMAC of the secret with
a fixed label, so the secret itself never leaves the API and the device. The hotline only ever
sees `digest_ha1` of that password for its own realm (GET /terminals/sip-digest).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

SCHEME = "LINLI-HMAC-SHA256"
HEADER_TERMINAL = "X-Linli-Terminal"
HEADER_TIMESTAMP = "X-Linli-Timestamp"
HEADER_NONCE = "X-Linli-Nonce"
HEADER_SIGNATURE = "X-Linli-Signature"
EVENTS_PATH = "/terminals/events"
SIP_PASSWORD_LABEL = "LINLI-SIP-DIGEST-1"
DIGEST_ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

# Header formats; use fullmatch (a "$" would let a trailing newline through).
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str, path: str, terminal_id: str, timestamp: int, nonce: str, body: bytes
) -> str:
    """The exact text both sides sign; change it only together with a new SCHEME name."""
    return "\n".join(
        (SCHEME, method.upper(), path, terminal_id, str(timestamp), nonce, body_digest(body))
    )


def sign(secret: str, canonical: str) -> str:
    return hmac.new(secret.encode("ascii"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(secret: str, canonical: str, signature: str) -> bool:
    """Constant-time comparison, so a forger learns nothing from response timing."""
    return hmac.compare_digest(sign(secret, canonical), signature.lower())


def sip_password(secret: str) -> str:
    """The terminal's SIP digest password: derived, so a leaked SIP password is not the
    signing key (change the label only together with every terminal)."""
    return sign(secret, SIP_PASSWORD_LABEL)


def digest_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 of HTTP/SIP digest (RFC 2617, RFC 8760): hash of "username:realm:password"."""
    hash_ = DIGEST_ALGORITHMS[algorithm.upper()]
    return hash_(f"{username}:{realm}:{password}".encode()).hexdigest()


def new_secret() -> str:
    """A device secret: 32 random bytes, urlsafe base64 (43 ASCII characters)."""
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    return secrets.token_hex(16)


def signed_headers(
    secret: str,
    terminal_id: str,
    body: bytes,
    *,
    method: str = "POST",
    path: str = EVENTS_PATH,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers for one attempt; call again for a retry (new timestamp and nonce)."""
    ts = int(time.time()) if timestamp is None else timestamp
    once = nonce or new_nonce()
    signature = sign(secret, canonical_request(method, path, terminal_id, ts, once, body))
    return {
        HEADER_TERMINAL: terminal_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_NONCE: once,
        HEADER_SIGNATURE: signature,
    }
