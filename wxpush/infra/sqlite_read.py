"""The one query on a scan's path, read straight from a local SQLite file.

A scan asks the database one thing: which user does this openid log in? Through SQLAlchemy's
async engine and aiosqlite that indexed read takes 1–2 ms (a pool checkout, three hand-offs
to aiosqlite's thread and back, a rollback), the largest part of the time from WeChat's
callback to the browser's frame. On SQLite the same read, on a plain ``sqlite3`` connection
in the event loop's own thread, takes tens of microseconds: the database is a local file in
WAL mode, where a reader never waits for a writer, and the read is one primary-key lookup.

The connection is in autocommit mode, so every read sees everything committed before it
(no snapshot is held between reads). Anything unusual (the file busy or locked, the table
missing) answers :data:`UNKNOWN` and the caller asks the async engine as usual. PostgreSQL
needs none of this: asyncpg reads over one round trip.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

UNKNOWN: Final = object()  # "could not tell here": ask the async engine
BUSY_MS = 20  # wait this long for a lock at most, then give way to the async path


class SqliteReader:
    """Runs one compiled ``SELECT`` returning one value, on SQLite, in the calling thread."""

    def __init__(self, path: str, query: Select[tuple[str]], dialect: object) -> None:
        compiled = query.compile(dialect=dialect)  # type: ignore[arg-type]
        self._sql = str(compiled)
        self._order = list(compiled.positiontup or [])
        self._path = path
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_engine(cls, engine: AsyncEngine, query: Select[tuple[str]]) -> SqliteReader | None:
        """A reader when ``engine`` is a SQLite file (``None`` for PostgreSQL or memory)."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(url.database, query, engine.dialect)

    def one(self, **params: str) -> str | object | None:
        """The first column of the first row, ``None`` when there is none, or :data:`UNKNOWN`."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self._path, isolation_level=None, timeout=BUSY_MS / 1000
                )
            row = self._conn.execute(self._sql, [params[name] for name in self._order]).fetchone()
        except sqlite3.Error as exc:
            logger.debug("quick read gave way to the async engine: %s", exc)
            self.close()
            return UNKNOWN
        return None if row is None else row[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
