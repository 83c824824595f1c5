"""The service's own engine over the registry, sized for its threadpool, and its write transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from jobs import registry

# Starlette runs sync endpoints on a threadpool of 40 (anyio's default): one connection each at most.
POOL_SIZE = 20
MAX_OVERFLOW = 20
SQLITE_BUSY_SECONDS = 30  # how long a SQLite writer waits for the lock instead of "database is locked"


def make_engine(url: str) -> Engine:
    """Migrate the database (as every registry user does) and open one pooled engine for the app."""
    registry.migrate(url)
    if url.startswith("sqlite"):
        return create_engine(
            url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, connect_args={"timeout": SQLITE_BUSY_SECONDS}
        )
    # pre_ping: a PostgreSQL restart must not turn the first request after it into a 500. connect_args:
    # our own schema on the search_path, never the customer's tables (registry.SCHEMA).
    return create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_pre_ping=True,
        connect_args=registry.connect_args(url),
    )


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction may read and then write safely under concurrent writers.

    SQLite: take the write lock up front (BEGIN IMMEDIATE). A deferred transaction that reads and then
    writes gets "database is locked" at once when another writer got in first, without waiting: SQLite
    skips its busy handler there to avoid a deadlock. PostgreSQL: rows are locked where read
    (SELECT ... FOR UPDATE), see store.apply.
    """
    with Session(engine, expire_on_commit=False) as s:
        if engine.dialect.name == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        yield s
