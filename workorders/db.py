"""Engine and sessions. SQLite by default, PostgreSQL through DATABASE_URL; same code for both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, declarative_base, sessionmaker
from sqlalchemy.pool import QueuePool

from workorders.settings import get_settings

Base = declarative_base()


# Per process. Two API workers and the scheduler stay well under PostgreSQL's default
# max_connections (100); the API's thread pool is sized to match (app.py), so no request
# waits for a connection while holding another.
POOL_SIZE = 10


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
    return create_engine(
        url, future=True, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_pre_ping=True
    )


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
    bind = engine().execution_options(linli_begin="IMMEDIATE" if write else "DEFERRED")
    return sessionmaker(bind=bind, expire_on_commit=False, future=True)


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
