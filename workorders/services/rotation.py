"""Rotating the data key: every encrypted value and look-up hash rewritten under the current key.

The runbook (README "Rotating the data key"):
1. LINLI_DATA_KEY becomes the new key and LINLI_DATA_KEYS_RETIRED the old one; restart. New
   writes use the new key; values and hashes under the old key are still read and found.
2. `python -m workorders rotate-key` rewrites what exists, a batch of rows per transaction,
   each row locked while it is rewritten so that a concurrent update is never overwritten
   with what was read before it. Stopping it loses nothing; running it again goes on.
3. `python -m workorders rotate-key --check` counts the values still under another key; at
   zero, remove LINLI_DATA_KEYS_RETIRED and restart.

Hashes need the plaintext, so a row is rewritten whole: its ciphertexts and its hashes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary, Table, Text, select, type_coerce
from sqlalchemy.orm import Session, sessionmaker

from workorders.contract import IdentityKind
from workorders.crypto import EncryptedBytes, EncryptedJSON, EncryptedText, FieldCipher
from workorders.models import Base  # the models' module: their tables are in its metadata

log = logging.getLogger(__name__)

_ENCRYPTED = (EncryptedText, EncryptedJSON, EncryptedBytes)
Plain = dict[str, Any]  # a row's columns, encrypted ones as plaintext (JSON as its text)
# The look-up hashes of a table, from a row's plaintext, as the services compute them.
_HASHES: dict[str, Callable[[FieldCipher, Plain], dict[str, str | None]]] = {
    "residents": lambda c, r: {
        "phone_hash": c.lookup_hash("phone", r["phone"]) if r["phone"] else None,
        "id_number_hash": (c.lookup_hash("id_number", r["id_number"]) if r["id_number"] else None),
    },
    "identities": lambda c, r: {"value_hash": c.lookup_hash(r["kind"], r["value"])},
    "proxies": lambda c, r: {
        "identity_hash": c.lookup_hash(r["identity_kind"], r["identity_value"])
    },
    "terminals": lambda c, r: {
        "device_hash": c.lookup_hash(IdentityKind.terminal.value, r["device_id"])
    },
    "call_records": lambda c, r: {
        "caller_hash": c.lookup_hash("phone", r["caller"]) if r["caller"] else None
    },
}


@dataclass
class Progress:
    rows: int = 0
    values: int = 0


def encrypted_tables() -> Iterator[tuple[Table, list[str]]]:
    """Every table with encrypted columns, and those columns' names."""
    for table in Base.metadata.sorted_tables:
        names = [c.name for c in table.columns if isinstance(c.type, _ENCRYPTED)]
        if names:
            yield table, names


def _raw(table: Table, name: str) -> Any:
    """The column as stored (ciphertext), past its type's decryption."""
    return type_coerce(table.c[name], _impl(table, name))


def _opened(cipher: FieldCipher, value: Any) -> Any:
    return cipher.decrypt(value) if isinstance(value, str) else cipher.decrypt_bytes(value)


def _sealed(cipher: FieldCipher, value: Any) -> Any:
    return cipher.encrypt(value) if isinstance(value, str) else cipher.encrypt_bytes(value)


def rotate(factory: sessionmaker[Session], cipher: FieldCipher, batch: int = 500) -> Progress:
    """Rewrite every row holding a value sealed with another key than the current one."""
    done = Progress()
    for table, names in encrypted_tables():
        (pk,) = table.primary_key.columns
        query = select(pk, *(_raw(table, n).label(n) for n in names), *_plain_columns(table))
        after = None
        while True:
            with factory() as session:
                page = query if after is None else query.where(pk > after)
                rows = session.execute(page.order_by(pk).limit(batch).with_for_update()).all()
                if not rows:
                    break
                after = rows[-1][0]
                for row in rows:
                    values = _rewritten(table, names, cipher, dict(row._mapping))
                    if values:
                        session.execute(table.update().where(pk == row[0]).values(values))
                        done.rows += 1
                        done.values += sum(n in values for n in names)
                session.commit()
        log.info("rotate-key: %s done (%d rows rewritten so far)", table.name, done.rows)
    return done


def _rewritten(
    table: Table, names: list[str], cipher: FieldCipher, row: dict[str, Any]
) -> dict[str, Any]:
    """The new stored values of a row with anything under another key; {} when none is."""
    stale = [n for n in names if row[n] is not None and cipher.sealed_with(row[n]) != cipher.kid]
    if not stale:
        return {}
    values: dict[str, Any] = {}
    for name in names:
        if row[name] is None:
            continue
        opened = _opened(cipher, row[name])
        values[name] = _as_stored(table, name, _sealed(cipher, opened))
        row[name] = opened
    if table.name in _HASHES:
        values.update(_HASHES[table.name](cipher, row))
    return values


def _plain_columns(table: Table) -> list[Any]:
    """The unencrypted columns a table's hashes need (an identity's kind)."""
    needed = {"identities": ["kind"], "proxies": ["identity_kind"]}.get(table.name, [])
    return [table.c[n] for n in needed]


def _impl(table: Table, name: str) -> type[Text] | type[LargeBinary]:
    return LargeBinary if isinstance(table.c[name].type, EncryptedBytes) else Text


def _as_stored(table: Table, name: str, ciphertext: Any) -> Any:
    """Ciphertext bound as is, past the column type's own encryption."""
    return type_coerce(ciphertext, _impl(table, name))


def census(factory: sessionmaker[Session], cipher: FieldCipher) -> Counter[str]:
    """How many stored values each key sealed ("v1": before key ids), all tables together."""
    counts: Counter[str] = Counter()
    with factory() as session:
        for table, names in encrypted_tables():
            for name in names:
                raw = _raw(table, name)
                query = select(raw).where(table.c[name].isnot(None))
                # Streamed: a city's photos do not fit in memory at once.
                for (value,) in session.execute(query.execution_options(yield_per=200)):
                    counts[cipher.sealed_with(value) or "v1"] += 1
    return counts
