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
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import LargeBinary, Text
from sqlalchemy.types import TypeDecorator

from workorders.settings import get_settings

# v2 values name the key that sealed them; v1 values (before keys could be rotated) do not,
# and are opened with each configured key in turn.
_V1, _V2 = "v1:", "v2:"
_BYTES_V1, _BYTES_V2 = b"v1", b"v2"
_KID_BYTES = 4


class _Key:
    """One master key and what is derived from it."""

    def __init__(self, master_key: str) -> None:
        raw = base64.urlsafe_b64decode(master_key.encode() + b"=" * (-len(master_key) % 4))
        self.aead = AESGCM(_derive(raw, b"linli field encryption"))
        self.hash_key = _derive(raw, b"linli lookup hash")
        self.kid = _derive(raw, b"linli key id")[:_KID_BYTES].hex()


class FieldCipher:
    """Seals with the current key; opens with it or any retired key (a rotation in progress).

    Look-up hashes are keyed too, so a value stored before the rotation hashes differently:
    queries match any of `lookup_hashes` until `workorders.rotation` has rewritten the rows.
    """

    def __init__(self, master_key: str, retired: Sequence[str] = ()) -> None:
        self.current = _Key(master_key)
        self.keys = [self.current, *(_Key(key) for key in retired if key != master_key)]
        self._by_kid = {key.kid: key for key in self.keys}

    @property
    def kid(self) -> str:
        return self.current.kid

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self.current.aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"{_V2}{self.kid}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str) -> str:
        if token.startswith(_V2):
            kid, _, body = token[len(_V2) :].partition(":")
            return self._open(self._key(kid), base64.b64decode(body)).decode("utf-8")
        if token.startswith(_V1):
            return self._open_v1(base64.b64decode(token[len(_V1) :])).decode("utf-8")
        raise ValueError("not an encrypted field")

    def encrypt_bytes(self, plaintext: bytes) -> bytes:
        """Binary fields (photos): version, key id, nonce and ciphertext as raw bytes."""
        nonce = os.urandom(12)
        sealed = self.current.aead.encrypt(nonce, plaintext, None)
        return _BYTES_V2 + bytes.fromhex(self.kid) + nonce + sealed

    def decrypt_bytes(self, sealed: bytes) -> bytes:
        sealed = bytes(sealed)  # PostgreSQL drivers may hand back a memoryview
        if sealed.startswith(_BYTES_V2):
            kid = sealed[2 : 2 + _KID_BYTES].hex()
            return self._open(self._key(kid), sealed[2 + _KID_BYTES :])
        if sealed.startswith(_BYTES_V1):
            return self._open_v1(sealed[len(_BYTES_V1) :])
        raise ValueError("not an encrypted field")

    def sealed_with(self, value: str | bytes) -> str | None:
        """The key id a stored value names; None for a v1 value (which names none)."""
        if isinstance(value, str):
            return value[len(_V2) :].partition(":")[0] if value.startswith(_V2) else None
        value = bytes(value)
        return value[2 : 2 + _KID_BYTES].hex() if value.startswith(_BYTES_V2) else None

    def lookup_hash(self, kind: str, value: str) -> str:
        """Deterministic keyed hash for equality look-ups (who is calling from this number?),
        under the current key: what is written."""
        return _hmac(self.current, kind, value)

    def lookup_hashes(self, kind: str, value: str) -> list[str]:
        """What a stored row may hold for this value: its hash under every configured key."""
        return [_hmac(key, kind, value) for key in self.keys]

    def _key(self, kid: str) -> _Key:
        key = self._by_kid.get(kid)
        if key is None:
            raise ValueError(f"data key {kid} is not configured (LINLI_DATA_KEYS_RETIRED)")
        return key

    @staticmethod
    def _open(key: _Key, blob: bytes) -> bytes:
        return key.aead.decrypt(blob[:12], blob[12:], None)

    def _open_v1(self, blob: bytes) -> bytes:
        for key in self.keys:
            try:
                return self._open(key, blob)
            except InvalidTag:
                continue
        raise ValueError("no configured data key opens this value")


def _hmac(key: _Key, kind: str, value: str) -> str:
    return hmac.new(key.hash_key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(master)


@lru_cache
def cipher() -> FieldCipher:
    settings = get_settings()
    return FieldCipher(settings.data_key, settings.retired_keys())


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


class EncryptedBytes(TypeDecorator[bytes]):
    """Binary data (a resident's photo) stored as AES-GCM ciphertext in a binary column
    (bytea, BLOB): 34 bytes more than the plaintext, where base64 in text would add a third."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Any) -> bytes | None:
        return None if value is None else cipher().encrypt_bytes(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> bytes | None:
        return None if value is None else cipher().decrypt_bytes(value)


# --- normalisation and masking -------------------------------------------------------------

_DIGITS = re.compile(r"\D+")

# Numbers in free text are found in a copy where spoken and written digit forms are mapped one
# character to one (ASR writes 幺三八…), so a match there is a match at the same place in the
# original. A number is written either in groups, set apart by a space, dash or comma
# (138-1234-5678, 021 6234 5678, 幺三八，零零幺三，八零零零 as voice/spoken.py says it), or
# spaced digit by digit (ASR tokens: 幺 三 八 …); never a mix, so neighbouring numbers in a
# sentence do not merge into one.
_DIGIT_FORMS = str.maketrans("零〇幺一二两三四五六七八九叉", "0011223456789X")
_S = r"[ \-，,、]?"

ID_RE = re.compile(
    r"(?<![0-9A-Za-z])"
    rf"(?:\d{{6}}{_S}\d{{8}}{_S}\d{{3}}|\d(?: \d){{16}} )[0-9Xx](?![0-9A-Za-z])"
)
# 11-digit mobiles, also after +86 / 0086 / 86 or a trunk 0.
MOBILE_RE = re.compile(
    rf"(?<!\d)(?:(?:\+|00)?86{_S}|0)?1[3-9]\d{_S}\d{{4}}{_S}\d{{4}}(?!\d)"
    r"|(?<!\d)(?:(?:\+ ?)?8 6 |0 )?1 [3-9](?: \d){9}(?!\d)"
)
# Landlines with the area code (010, 02x, 0xxx) and a 7-8 digit local number: 010-12345678,
# (0571)88886666, 021 6234 5678. The area code names a city, not a person: it stays visible.
LANDLINE_RE = re.compile(
    rf"(?<!\d)[(（]?(?:010|02\d|0[3-9]\d\d)[)）]?{_S}[1-9]\d{{2,3}}{_S}\d{{4}}(?!\d)"
    r"|(?<!\d)0 (?:1 0|2 \d|[3-9] \d \d)(?: \d){7,8}(?!\d)"
)
# A local number without its area code is only a phone number when the words say so
# (座机是…); elsewhere 7-8 digits are as likely a date or an amount.
LOCAL_PHONE_RE = re.compile(
    r"(?:电话|座机|固话)(?:号码|号)?(?:是|为|：|:| ){0,3}"
    rf"(?:[2-9]\d{{2,3}}{_S}\d{{4}}|[2-9](?: \d){{6,7}})(?!\d)"
)
_AREA_3 = ("010", "02")


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


def mask_address(building: str, unit: str | None, room: str) -> str:
    """The building helps staff route work; the unit and the door stay private."""
    return f"{building}号楼{'*单元' if unit else ''}{'*' * len(room)}"


def format_address(building: str, unit: str | None, room: str) -> str:
    """3号楼2单元502; 5号楼1201 where the building has no units (towers, many older blocks)."""
    return f"{building}号楼{f'{unit}单元' if unit else ''}{room}"


def mask_text(text: str | None) -> str | None:
    """Mask ID, mobile and landline numbers inside free text (transcripts, descriptions, log
    lines), written or spoken: 1101**********123X, 138****5678, 010****5678, 幺三八****五六七八.

    What stays visible: an ID's first and last 4, a mobile's first 3 (and country prefix) and
    last 4, a landline's area code and last 4, a local number's last 4.
    """
    if not text:
        return text
    probe = text.translate(_DIGIT_FORMS)
    cuts: list[tuple[int, int, str]] = []  # (start, end, stars): text[start:end] is hidden

    def cut(match: re.Match[str], keep: int, stars: str = "****") -> None:
        digits = [i for i in range(*match.span()) if probe[i] in "0123456789Xx"]
        if keep >= len(digits) - 4:
            return
        start = digits[keep - 1] + 1 if keep else digits[0]
        if probe[start] in ")）":
            start += 1
        end = digits[-4]
        if not any(start < e and s < end for s, e, _ in cuts):
            cuts.append((start, end, stars))

    for match in ID_RE.finditer(probe):
        cut(match, 4, "*" * 10)
    for match in MOBILE_RE.finditer(probe):
        cut(match, sum(c.isdigit() for c in match.group()) - 8)
    for match in LANDLINE_RE.finditer(probe):
        cut(match, 3 if match.group().lstrip("(（").replace(" ", "").startswith(_AREA_3) else 4)
    for match in LOCAL_PHONE_RE.finditer(probe):
        cut(match, 0)
    if not cuts:
        return text
    out, at = [], 0
    for start, end, stars in sorted(cuts):
        out += [text[at:start], stars]
        at = end
    out.append(text[at:])
    return "".join(out)
