"""Engine and sessions. SQLite by default, PostgreSQL through DATABASE_URL; same code for both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, declarative_base, sessionmaker
from sqlalchemy.pool import QueuePool

from workorders.settings import get_settings

Base = declarative_base()


# Per process. Two API workers and the scheduler stay well under PostgreSQL's default
# max_connections (100). The API has one worker thread per pooled connection (app.py); the
# overflow serves the rest (a second connection for an audit entry, background threads), so
# no request waits for a connection while holding another.
POOL_SIZE = 10
# A connection idle this long is pinged before use (PostgreSQL restarted, a firewall forgot
# it). Pinging every checkout cost a round trip per request; a connection in steady use that
# breaks fails its statement, and SQLAlchemy then replaces the whole pool at once.
PING_AFTER_IDLE_SECONDS = 10.0


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            future=True,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=QueuePool,
            pool_size=POOL_SIZE,
            max_overflow=POOL_SIZE,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(url, future=True, pool_size=POOL_SIZE, max_overflow=POOL_SIZE)
    event.listen(engine, "checkin", _checked_in)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _checked_in(_dbapi_conn: Any, record: Any) -> None:
    if record is not None:
        record.info["linli_idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get("linli_idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return  # just connected, or in use moments ago
    try:
        cursor = dbapi_conn.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_conn.rollback()
    except Exception as exc:  # the driver's own error types; the pool reconnects and retries
        raise DisconnectionError(str(exc)) from exc


def _sqlite_begin(conn: Any) -> None:
    # Writers take SQLite's write lock up front (BEGIN IMMEDIATE) so that read-then-write
    # races queue on busy_timeout instead of failing; readers stay concurrent (WAL).
    mode = conn.get_execution_options().get("linli_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener issue BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


@lru_cache
def engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def session_factory(write: bool = True) -> sessionmaker[Session]:
    """Writers: one transaction, committed or rolled back. Readers on PostgreSQL run in
    autocommit: each statement sees what is committed (as in READ COMMITTED), without a BEGIN
    and a ROLLBACK round trip around it. Readers never write (audit entries of reads commit
    in a session of their own: audit.record_now)."""
    base = engine()
    if write:
        bind = base.execution_options(linli_begin="IMMEDIATE")
    elif base.dialect.name == "sqlite":
        bind = base.execution_options(linli_begin="DEFERRED")
    else:
        bind = base.execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=bind, expire_on_commit=False, future=True)


def read_connection() -> Connection:
    """A reader's connection without a session (Core statements), as `session_factory(False)`."""
    return session_factory(False).kw["bind"].connect()  # type: ignore[no-any-return]


async def get_session() -> AsyncIterator[Session]:
    """FastAPI dependency for requests that write: rolled back unless committed.

    Async only so that FastAPI does not spend a thread-pool hop on it; the session itself is
    used synchronously by the (thread-pool) endpoint.
    """
    with session_factory(True)() as session:
        yield session


async def get_read_session() -> AsyncIterator[Session]:
    """FastAPI dependency for requests that only read (concurrent on SQLite too)."""
    with session_factory(False)() as session:
        yield session
