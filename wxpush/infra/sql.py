"""The SQL engine: SQLite (aiosqlite) or PostgreSQL (asyncpg), tuned to fail fast.

An unreachable or hung database becomes :class:`~wxpush.errors.Unavailable` (503) within
about a second, and the engine goes on by itself once the database is back. Every wait is
bounded: a connect (:data:`CONNECT_TIMEOUT`), each statement (:data:`COMMAND_TIMEOUT`), the
queue for a pooled connection (:data:`POOL_TIMEOUT`), SQLite's lock (:data:`SQLITE_BUSY_MS`).
There is no pre-ping (with asyncpg it is three round trips on every checkout, and on a hung
server a wait of its own): a pooled connection that the server closed (a restart) is known
closed without asking and replaced at checkout, and one whose statement timed out is
dropped at once, without the polite goodbye a hung server would never answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from wxpush.errors import Unavailable

# A down or hung database must give a 503 within about a second (and a scan callback must
# answer well within WeChat's 5 s); a healthy one connects in milliseconds.
CONNECT_TIMEOUT = 0.8
COMMAND_TIMEOUT = 1.0  # our statements are point reads and short inserts: longer means hung
POOL_TIMEOUT = 0.5  # the connections ahead are stuck when the queue does not move for this long
SQLITE_BUSY_MS = 1_000  # concurrent SQLite writers queue for this long instead of failing


def open_engine(url: str) -> AsyncEngine:
    """Open an async engine for ``url`` (SQLite or PostgreSQL), tuned to fail fast.

    ``postgresql://`` (or ``postgres://``) gets the asyncpg driver and ``sqlite://`` the
    aiosqlite one. SQLite runs in WAL mode with a busy timeout, so readers never block the
    writer and concurrent writers wait their turn instead of failing at once.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    options: dict[str, Any] = {}
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
        options["pool_timeout"] = POOL_TIMEOUT
        options["connect_args"] = {"timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT}
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            options["pool_timeout"] = POOL_TIMEOUT  # a memory database has a single connection
        options["connect_args"] = {"timeout": SQLITE_BUSY_MS / 1000}
    else:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
    engine = create_async_engine(parsed, **options)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine.sync_engine.pool, "checkout", _replace_closed)
        event.listen(engine.sync_engine.pool, "invalidate", _abort)
    return engine


def _replace_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """At checkout: a pooled connection the server has closed (a restart or a killed
    backend; asyncpg saw the socket close) is replaced by a fresh one, with no round trip."""
    if record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")  # only this one


def _abort(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
    """An invalidated connection (a statement timed out on it, or it was cut) is closed at
    once. SQLAlchemy's own close first asks the server to end the session and waits up to
    2 s for that, which a hung server never does."""
    driver = record.driver_connection
    if driver is not None:
        driver.terminate()


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
    _into_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, and far fewer fsyncs
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


@asynccontextmanager
async def guarded(
    opening: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    """Use a connection; an unreachable database becomes a 503, anything else passes."""
    try:
        async with opening as conn:
            yield conn
    except Exception as exc:
        raise_if_unreachable(exc)
        raise


# SQLSTATE classes that mean "no usable server" rather than a bad query: 08 connection
# exception, 53 insufficient resources (too many connections), 57P operator intervention
# (shutting down, starting up).
_UNREACHABLE_SQLSTATES = ("08", "53", "57P")


def raise_if_unreachable(exc: Exception) -> None:
    """Turn every flavour of "the database is not there" into one 503."""
    if isinstance(exc, IntegrityError):
        return
    unreachable = isinstance(exc, OSError | asyncio.TimeoutError | PoolTimeoutError)
    if isinstance(exc, DBAPIError):
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        unreachable = (
            exc.connection_invalidated
            or isinstance(exc, OperationalError | InterfaceError)
            or sqlstate.startswith(_UNREACHABLE_SQLSTATES)
        )
    if unreachable:
        raise unavailable() from exc


def unavailable() -> Unavailable:
    return Unavailable(
        "The database is not reachable; try again shortly.", code="database_unavailable"
    )


def _into_wal(cursor: Any) -> None:
    """Switch the file to WAL. While another process switches a fresh file at the same time,
    SQLite answers "database is locked" at once, without waiting the busy timeout (its busy
    handler is not called there): try again, for up to that timeout. This runs inside the
    async engine's connect (SQLAlchemy's greenlet, on the event loop's thread), so the pause
    between tries is awaited, not slept: the loop goes on serving meanwhile."""
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            await_only(asyncio.sleep(0.01))
