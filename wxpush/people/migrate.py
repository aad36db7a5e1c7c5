"""The people database's schema versions, and the runner that brings a database to the latest.

A table ``schema_version`` holds one row: the version the database is at. :data:`STEPS` is
the ordered list of versions, each a function of a (sync) connection that takes the
database from the version before to its own. :func:`upgrade` runs on every start-up:

- a fresh database gets every table at the latest version at once (``create_all``) and that
  version recorded;
- a database from before schema versions (``users``/``identities`` but no
  ``schema_version``) is version 1, and is upgraded from there;
- a database at an older version runs the steps after it, each in its own transaction
  together with the new version number, so a step that fails leaves the database at the
  version before it (DDL is transactional on PostgreSQL, and on SQLite too once the
  transaction is begun explicitly, see :func:`_sqlite_exclusive`);
- a database at a version newer than this code knows is refused
  (:class:`~wxpush.errors.SettingsError` naming ``WXPUSH_DATABASE_URL``) and left untouched.

Several processes start at once (``--workers 2``, or several hosts): each checks and
upgrades holding the database's one migration lock, so one migrates and the others then
find the work done. PostgreSQL: a transaction-scoped advisory lock. SQLite: ``BEGIN
IMMEDIATE``, the file's write lock. A start-up at the latest version (the usual case) costs
one read and takes no lock. A database that is down is a 503 (:mod:`wxpush.infra.sql`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Final

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from wxpush.errors import SettingsError
from wxpush.infra.sql import CONNECT_TIMEOUT, guarded
from wxpush.people.schema import audit, identities, metadata, now, unionid_index, users

logger = logging.getLogger(__name__)

# A step may build an index on a large table, and a process may wait for another's step:
# neither fits the engine's one-second budget for a statement, made for point reads.
MIGRATION_TIMEOUT: Final = 600.0
# The PostgreSQL advisory lock key of "migrating the people schema" (any constant the
# database's other users do not take: b"wxpush" read as a number).
LOCK_KEY: Final = int.from_bytes(b"wxpush", "big")

_versions = MetaData()
schema_version = Table(
    "schema_version",
    _versions,
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Step:
    """Reaching ``version`` from the one before: ``apply`` runs inside its transaction."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_tables(conn: Connection) -> None:
    """``users`` and ``identities`` (its unique constraint, its user_id index), as wxpush
    created them before schema versions; only what is missing is made."""
    metadata.create_all(conn, tables=[users, identities], checkfirst=True)


def _v2_unionid_index(conn: Connection) -> None:
    unionid_index.create(conn, checkfirst=True)


def _v3_audit(conn: Connection) -> None:
    metadata.create_all(conn, tables=[audit], checkfirst=True)


STEPS: Final[Sequence[Step]] = (
    Step(1, "the users and identities tables", _v1_tables),
    Step(2, "an index on identities.unionid", _v2_unionid_index),
    Step(3, "the audit table", _v3_audit),
)


async def upgrade(engine: AsyncEngine, steps: Sequence[Step] = STEPS) -> int:
    """Bring the database to the last of ``steps``; return that version.

    Raises :class:`SettingsError` for a database newer than ``steps`` (untouched) and
    :class:`~wxpush.errors.Unavailable` for one that is down.
    """
    latest = steps[-1].version
    found = await refuse_newer(engine, steps)
    if found == latest:
        return latest
    async with _exclusive(engine) as locked:
        while found != latest:
            async with locked() as conn:
                found = await conn.run_sync(_advance, steps)
    return latest


async def refuse_newer(engine: AsyncEngine, steps: Sequence[Step] = STEPS) -> int | None:
    """Only the check (no lock, nothing written): :class:`SettingsError` for a database newer
    than ``steps``, else its version (see :func:`version_of`)."""
    async with guarded(engine.connect()) as conn:
        found = await conn.run_sync(version_of)
    _refuse_newer(found, steps[-1].version)
    return found


def version_of(conn: Connection) -> int | None:
    """The recorded version; 1 for tables from before versions; ``None`` for a fresh one."""
    recorded = _recorded(conn)
    if recorded is not None:
        return recorded
    names = set(inspect(conn).get_table_names())
    return 1 if names & {users.name, identities.name} else None


def _recorded(conn: Connection) -> int | None:
    if not inspect(conn).has_table(schema_version.name):
        return None
    value = conn.execute(select(schema_version.c.version)).scalar()
    return None if value is None else int(value)


def _advance(conn: Connection, steps: Sequence[Step]) -> int:
    """One transaction, under the migration lock: look again (another process may have
    moved on meanwhile), then create everything or take one step. Returns the version."""
    latest = steps[-1].version
    found = version_of(conn)
    _refuse_newer(found, latest)
    if found == latest:
        return latest
    if found is None:
        metadata.create_all(conn)
        _record(conn, latest)
        logger.info("people database: created at schema version %d", latest)
        return latest
    legacy = _recorded(conn) is None  # tables from before versions: version 1, recorded so
    step = steps[0] if legacy else next(s for s in steps if s.version > found)
    step.apply(conn)
    _record(conn, step.version)
    logger.info("people database: at schema version %d (%s)", step.version, step.description)
    return step.version


def _record(conn: Connection, version: int) -> None:
    schema_version.create(conn, checkfirst=True)
    values = {"version": version, "updated_at": now()}
    if conn.execute(update(schema_version).values(values)).rowcount == 0:
        conn.execute(insert(schema_version).values(values))


def _refuse_newer(found: int | None, latest: int) -> None:
    if found is not None and found > latest:
        raise SettingsError(
            "WXPUSH_DATABASE_URL",
            f"the database is at schema version {found}, newer than this wxpush knows "
            f"({latest}); run a newer wxpush (the database was not changed)",
        )


Locked = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


@asynccontextmanager
async def _exclusive(engine: AsyncEngine) -> AsyncIterator[Locked]:
    """A maker of transactions that each hold the migration lock.

    On PostgreSQL they run on a connection of their own with :data:`MIGRATION_TIMEOUT` as
    the statement budget (the engine's pooled connections keep theirs)."""
    if engine.dialect.name != "postgresql":
        yield lambda: _sqlite_exclusive(engine)
        return
    patient = create_async_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": MIGRATION_TIMEOUT},
    )
    try:
        yield lambda: _pg_exclusive(patient)
    finally:
        await patient.dispose()


@asynccontextmanager
async def _pg_exclusive(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction holding the advisory lock, released at its end (commit or rollback)."""
    async with guarded(engine.begin()) as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        yield conn


@asynccontextmanager
async def _sqlite_exclusive(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction holding SQLite's write lock from its first statement.

    The sqlite3 module left to itself begins a transaction only before an INSERT, UPDATE
    or DELETE: its DDL would run outside any transaction, and its first read would take
    no lock. So the driver is set to autocommit (it emits nothing of its own) and the
    transaction is begun, committed or rolled back here, explicitly. A writer ahead (the
    other worker migrating) is waited for, up to :data:`MIGRATION_TIMEOUT`.
    """
    async with guarded(engine.connect()) as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await _begin_immediate(conn)
        try:
            yield conn
        except BaseException:
            with suppress(Exception):  # a connection gone bad is rolled back by the pool
                await conn.exec_driver_sql("ROLLBACK")
            raise
        await conn.exec_driver_sql("COMMIT")


async def _begin_immediate(conn: AsyncConnection) -> None:
    """Take the write lock; each try waits the engine's busy timeout, then gives up."""
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    for attempt in itertools.count():
        try:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:  # "database is locked"
            if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                raise
            if attempt == 0:
                logger.info("people database: waiting for another process's migration")
            await asyncio.sleep(0)
