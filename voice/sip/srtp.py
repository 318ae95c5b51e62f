"""SRTP for calls signalled over TLS: SDES keys in SDP (RFC 4568), libsrtp through pylibsrtp.

Each side picks its own master key and salt and sends it in an `a=crypto` line of its SDP;
we encrypt with ours and decrypt with the far end's. SDES keys are only as secret as the
signalling that carries them, so the endpoint offers and accepts RTP/SAVP only on TLS
connections. Suites: AES_CM_128_HMAC_SHA1_80 (preferred) and _32, what every SIP phone has.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from pylibsrtp import Error, Policy, Session

SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
KEY_BYTES = 30  # 16-byte master key + 14-byte master salt


class SrtpError(Exception):
    """A packet failed authentication (forged, corrupted or replayed) or could not be sealed."""


@dataclass(frozen=True)
class SdesKey:
    """One `a=crypto:<tag> <suite> inline:<key||salt>` line."""

    tag: int
    suite: str
    key: bytes

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"SdesKey(tag={self.tag}, suite={self.suite!r}, key=***)"

    @classmethod
    def new(cls, suite: str = "AES_CM_128_HMAC_SHA1_80", tag: int = 1) -> SdesKey:
        return cls(tag, suite, secrets.token_bytes(KEY_BYTES))

    @classmethod
    def parse(cls, value: str) -> SdesKey | None:
        """An `a=crypto` value we can use; None for unknown suites, MKIs or session params."""
        parts = value.split()
        if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in SUITES:
            return None
        method, _, rest = parts[2].partition(":")
        material, *params = rest.split("|")
        if method != "inline" or any(":" in p for p in params):  # an MKI: not supported
            return None
        try:
            key = base64.b64decode(material, validate=True)
        except (binascii.Error, ValueError):
            return None
        return cls(int(parts[0]), parts[1], key) if len(key) == KEY_BYTES else None

    def attribute(self) -> str:
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


class SrtpContext:
    """Encrypts what we send with our key, decrypts what arrives with theirs."""

    def __init__(self, local: SdesKey, remote: SdesKey) -> None:
        profile = SUITES[remote.suite]
        self._tx = Session(Policy(local.key, Policy.SSRC_ANY_OUTBOUND, profile))
        self._rx = Session(Policy(remote.key, Policy.SSRC_ANY_INBOUND, profile))

    def protect(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect(packet)
        except Error as exc:
            raise SrtpError(str(exc)) from exc

    def unprotect(self, packet: bytes) -> bytes:
        try:
            return self._rx.unprotect(packet)
        except Error as exc:
            raise SrtpError(str(exc)) from exc
