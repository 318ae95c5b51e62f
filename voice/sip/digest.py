"""SIP digest authentication (RFC 3261 section 22, RFC 2617 / RFC 8760 hashes, qop=auth).

Server side (`NonceBook`, `parse_credentials`, `expected_response`): the hotline challenges a
caller that must prove who it is with 401 and a nonce; the caller re-sends the INVITE with an
Authorization header. Nonces are stateless to issue (a timestamp, randomness and an HMAC that
binds them to the caller's address) and stateful to spend: each is accepted once and only
within `lifetime` seconds, so a captured INVITE cannot be replayed later.

Client side (`authorization`): what a UAC (the SOS terminal's voice line) answers to a
challenge, for the first algorithm offered that it knows.

The server never needs the password, only HA1 = H(username:realm:password) for its realm.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from voice.sip.message import split_list

# The API computes HA1 for the hotline with the same function (GET /terminals/sip-digest).
from workorders.signing import DIGEST_ALGORITHMS as ALGORITHMS
from workorders.signing import digest_ha1

NONCE_LIFETIME = 60.0  # seconds from the 401 to the INVITE that answers it


def hash_hex(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm.upper()](text.encode()).hexdigest()


def parse_credentials(value: str) -> dict[str, str] | None:
    """`Digest username="…", realm="…", …` -> lower-cased names to unquoted values."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    fields: dict[str, str] = {}
    for item in split_list(rest, ","):
        name, _, raw = item.partition("=")
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        fields[name.strip().lower()] = raw
    return fields


def expected_response(
    algorithm: str, ha1_hex: str, method: str, fields: dict[str, str]
) -> str | None:
    """The `response` a caller knowing HA1 computes; None when qop is neither auth nor absent."""
    ha2 = hash_hex(algorithm, f"{method}:{fields.get('uri', '')}")
    qop = fields.get("qop")
    if qop is None:
        return hash_hex(algorithm, f"{ha1_hex}:{fields.get('nonce', '')}:{ha2}")
    if qop.lower() != "auth":
        return None
    return hash_hex(
        algorithm,
        f"{ha1_hex}:{fields.get('nonce', '')}:{fields.get('nc', '')}:"
        f"{fields.get('cnonce', '')}:{qop}:{ha2}",
    )


def challenge(realm: str, nonce: str, algorithm: str, *, stale: bool = False) -> str:
    value = f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm={algorithm}'
    return value + (", stale=true" if stale else "")


class NonceBook:
    """Issues nonces bound to a caller's host and spends each at most once, before it expires."""

    def __init__(
        self, lifetime: float = NONCE_LIFETIME, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)  # per process: a restart invalidates old nonces
        self._spent: dict[str, float] = {}  # nonce -> when it expires anyway

    def _mac(self, issued: str, salt: str, host: str) -> str:
        text = f"{issued}.{salt}.{host}".encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:32]

    def issue(self, host: str) -> str:
        issued = str(int(self._clock() * 1000))  # milliseconds: no "." inside
        salt = secrets.token_hex(8)
        return f"{issued}.{salt}.{self._mac(issued, salt, host)}"

    def check(self, nonce: str, host: str) -> str:
        """ "fresh", "stale" (ours, but expired or already spent) or "forged"."""
        issued, _, rest = nonce.partition(".")
        salt, _, mac = rest.partition(".")
        if not issued.isdigit():
            return "forged"
        age = self._clock() - int(issued) / 1000
        if not hmac.compare_digest(self._mac(issued, salt, host), mac):
            return "forged"
        if age < 0 or age > self.lifetime or nonce in self._spent:
            return "stale"
        return "fresh"

    def spend(self, nonce: str) -> None:
        now = self._clock()
        for old in [n for n, until in self._spent.items() if until < now]:
            del self._spent[old]
        self._spent[nonce] = now + self.lifetime


@dataclass(frozen=True)
class Credentials:
    """A UAC's digest credentials (the SOS terminal's SIP user and derived password)."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, not even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"


def authorization(
    challenges: Iterable[str], credentials: Credentials, method: str, uri: str
) -> str | None:
    """The Authorization header answering the first challenge with an algorithm we know."""
    for value in challenges:
        fields = parse_credentials(value)
        if fields is None:
            continue
        algorithm = (fields.get("algorithm") or "MD5").upper()
        qops = [q.strip().lower() for q in fields.get("qop", "").split(",") if q.strip()]
        if algorithm not in ALGORITHMS or (qops and "auth" not in qops):
            continue
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
        answer = {"uri": uri, "nonce": nonce}
        if qops:
            answer |= {"qop": "auth", "nc": "00000001", "cnonce": secrets.token_hex(8)}
        secret = digest_ha1(credentials.username, realm, credentials.password, algorithm)
        response = expected_response(algorithm, secret, method, answer)
        parts = [
            f'username="{credentials.username}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{uri}"',
            f'response="{response}"',
            f"algorithm={algorithm}",
        ]
        if qops:
            parts += [f'cnonce="{answer["cnonce"]}"', "qop=auth", f"nc={answer['nc']}"]
        if "opaque" in fields:
            parts.append(f'opaque="{fields["opaque"]}"')
        return "Digest " + ", ".join(parts)
    return None
