"""Personal data at rest: AES-GCM field encryption, keyed lookup hashes, and masking.

A plaintext phone, ID number or address never reaches a table: columns typed `Encrypted*`
encrypt on the way in, and equality look-ups go through `lookup_hash` (HMAC), not the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

from workorders.settings import get_settings

_PREFIX = "v1:"


class FieldCipher:
    def __init__(self, master_key: str) -> None:
        raw = base64.urlsafe_b64decode(master_key.encode() + b"=" * (-len(master_key) % 4))
        self._aead = AESGCM(_derive(raw, b"linli field encryption"))
        self._hash_key = _derive(raw, b"linli lookup hash")

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str) -> str:
        if not token.startswith(_PREFIX):
            raise ValueError("not an encrypted field")
        blob = base64.b64decode(token[len(_PREFIX) :])
        return self._aead.decrypt(blob[:12], blob[12:], None).decode("utf-8")

    def lookup_hash(self, kind: str, value: str) -> str:
        """Deterministic keyed hash for equality look-ups (who is calling from this number?)."""
        digest = hmac.new(self._hash_key, f"{kind}\x00{value}".encode(), hashlib.sha256)
        return digest.hexdigest()


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(master)


@lru_cache
def cipher() -> FieldCipher:
    return FieldCipher(get_settings().data_key)


class EncryptedText(TypeDecorator[str]):
    """A text column stored as AES-GCM ciphertext."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else cipher().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else cipher().decrypt(value)


class EncryptedJSON(TypeDecorator[Any]):
    """JSON stored as AES-GCM ciphertext (order details carry addresses and free text)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return cipher().encrypt(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(cipher().decrypt(value))


# --- normalisation and masking -------------------------------------------------------------

_DIGITS = re.compile(r"\D+")
MOBILE_RE = re.compile(r"(?<!\d)(1[3-9]\d)[ -]?(\d{4})[ -]?(\d{4})(?!\d)")
ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{6})(\d{8})(\d{3}[0-9Xx])(?![0-9A-Za-z])")


def normalize_phone(value: str) -> str:
    """Digits only, without a +86/0086 prefix, so one number always hashes the same."""
    digits = _DIGITS.sub("", value)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) == 11:
            digits = digits[len(prefix) :]
    return digits


def mask_phone(value: str | None) -> str | None:
    if not value:
        return value
    digits = normalize_phone(value)
    if len(digits) <= 4:
        return "*" * len(digits)
    if len(digits) == 11:
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_id_number(value: str | None) -> str | None:
    if not value:
        return value
    return value[:4] + "*" * max(len(value) - 8, 0) + value[-4:] if len(value) > 8 else "****"


def mask_address(building: str, unit: str, room: str) -> str:
    """The building helps staff route work; the unit and the door stay private."""
    return f"{building}号楼*单元{'*' * len(room)}"


def format_address(building: str, unit: str, room: str) -> str:
    return f"{building}号楼{unit}单元{room}"


def mask_text(text: str | None) -> str | None:
    """Mask mobile and ID numbers inside free text (transcripts, descriptions, log lines)."""
    if not text:
        return text
    text = ID_RE.sub(lambda m: m.group(1)[:4] + "*" * 10 + m.group(3)[-4:], text)
    return MOBILE_RE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)
