"""People in SQL: users, their WeChat identities, and the rules that link or create them.

Two tables (SQLAlchemy Core, no ORM): ``users`` (a uuid4-hex id, a phone in E.164 that is
unique but may be NULL for people registered without one) and ``identities`` (one WeChat
openid of one appid, unique together, pointing at its user).

Races are settled by the unique constraints, not by locks: two processes binding the same
openid or the same phone at once both try to insert, one insert fails with an
``IntegrityError``, and the loser re-reads the winner's rows and resolves from there. So no
phone and no openid can ever end up with two users, on SQLite or PostgreSQL alike.

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
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from wxpush.errors import Conflict, Forbidden, Unavailable
from wxpush.infra.sqlite_read import UNKNOWN, SqliteReader

logger = logging.getLogger(__name__)

PROVIDER = "wechat_mp"
# A down or hung database must give a 503 within about a second (and a scan callback must
# answer well within WeChat's 5 s); a healthy one connects in milliseconds.
CONNECT_TIMEOUT = 0.8
COMMAND_TIMEOUT = 1.0  # our statements are point reads and short inserts: longer means hung
POOL_TIMEOUT = 0.5  # the connections ahead are stuck when the queue does not move for this long
SQLITE_BUSY_MS = 1_000  # concurrent SQLite writers queue for this long instead of failing
_ATTEMPTS = 3  # one try, then re-read and resolve after losing a race (twice, to be safe)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    # NULL for people registered without a phone (WXPUSH_REQUIRE_PHONE=false); NULLs never
    # collide under UNIQUE in SQLite or PostgreSQL.
    Column("phone", String(20), nullable=True, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

identities = Table(
    "identities",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("appid", String(64), nullable=False),
    Column("openid", String(128), nullable=False),
    Column("unionid", String(128), nullable=True),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("provider", "appid", "openid", name="uq_identities_provider_appid_openid"),
)


@dataclass(frozen=True, slots=True)
class Identity:
    """One way a person signs in: a WeChat openid of one appid."""

    provider: str
    appid: str
    openid: str
    unionid: str | None


@dataclass(frozen=True, slots=True)
class User:
    """A person, with every identity that logs them in."""

    id: str
    phone: str | None
    created_at: datetime
    identities: tuple[Identity, ...]


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
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, and far fewer fsyncs
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def mask_phone(e164: str) -> str:
    """Show a phone number the way people recognise theirs without exposing it.

    ``+8613800138000`` becomes ``+86 138****8000``: the country code, the first three and
    the last four digits of the national number.
    """
    try:
        number = phonenumbers.parse(e164, None)
        country, national = f"+{number.country_code}", str(number.national_number)
    except phonenumbers.NumberParseException:
        digits = "".join(ch for ch in e164 if ch.isdigit())
        return "****" + digits[-2:]
    tail = 4 if len(national) >= 8 else 2
    head = min(3, max(0, len(national) - tail - 3))
    hidden = len(national) - head - tail
    return f"{country} {national[:head]}{'*' * hidden}{national[len(national) - tail :]}"


class People:
    """Find, create and link people; every rule of :func:`bind_phone` lives here."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._quick = SqliteReader.for_engine(engine, _OPENID_QUERY)

    def close(self) -> None:
        """Close the quick reader's own connection (the engine is disposed by its owner)."""
        if self._quick is not None:
            self._quick.close()

    async def create_schema(self) -> None:
        """Create the tables when missing (idempotent; run on every start-up)."""
        async with self._begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def ping(self, *, timeout: float = 1.0) -> None:  # noqa: ASYNC109 - readiness's own budget
        """Readiness: a trivial query answers within ``timeout`` s, else a 503.

        The budget is a parameter (not the caller's ``asyncio.timeout``) so that a slow
        database is reported as the database's fault, in the same words as when it is down.
        """
        try:
            async with asyncio.timeout(timeout), self._connect() as conn:
                await conn.execute(select(1))
        except TimeoutError as exc:
            raise _unavailable() from exc

    async def get_user(self, user_id: str) -> User | None:
        """The user with this id and all their identities, or ``None``."""
        async with self._connect() as conn:
            return await _load_user(conn, user_id)

    async def find_by_openid(self, appid: str, openid: str) -> User | None:
        """The user this WeChat openid logs in, or ``None`` for a person never seen."""
        async with self._connect() as conn:
            user_id = await _user_id_by_openid(conn, appid, openid)
            return None if user_id is None else await _load_user(conn, user_id)

    async def user_id_of(self, appid: str, openid: str) -> str | None:
        """Only the id of the user this openid logs in (one indexed read: the scan's path;
        on SQLite read in place, see :mod:`wxpush.infra.sqlite_read`)."""
        if self._quick is not None:
            found = self._quick.one(provider=PROVIDER, appid=appid, openid=openid)
            if found is not UNKNOWN:
                return found  # type: ignore[return-value]
        async with self._connect() as conn:
            return await _user_id_by_openid(conn, appid, openid)

    async def register_openid(
        self, appid: str, openid: str, *, login_only: bool = False
    ) -> tuple[User, bool]:
        """Log in an openid with no phone step (``WXPUSH_REQUIRE_PHONE=false``).

        Returns ``(user, created)``; a new person gets a user without a phone, unless
        ``login_only`` refuses new people (403, nothing created).
        """
        for attempt in range(_ATTEMPTS):
            existing = await self.find_by_openid(appid, openid)
            if existing is not None:
                return existing, False
            if login_only:
                raise _login_only()
            try:
                return await self._create(appid, openid, None), True
            except IntegrityError:  # the same openid registered concurrently: read theirs
                if attempt == _ATTEMPTS - 1:
                    raise _busy() from None
        raise AssertionError("unreachable")

    async def bind_phone(
        self, appid: str, openid: str, phone: str, *, link_by_phone: bool, login_only: bool
    ) -> tuple[User, bool]:
        """Tie a WeChat openid to a verified phone; return ``(user, created_new_user)``.

        The openid's own user wins (409 if it holds another phone); else an existing user with
        the phone gets this identity when ``link_by_phone`` (409 ``phone_taken`` when not);
        else a new user is created, unless ``login_only`` (403 ``login_only``, nothing
        created). Losing a race to a concurrent bind re-reads and resolves again.
        """
        for attempt in range(_ATTEMPTS):
            try:
                return await self._bind_once(appid, openid, phone, link_by_phone, login_only)
            except IntegrityError:
                logger.debug("bind lost a race to a concurrent bind; resolving again")
                if attempt == _ATTEMPTS - 1:
                    raise _busy() from None
        raise AssertionError("unreachable")

    async def _bind_once(
        self, appid: str, openid: str, phone: str, link_by_phone: bool, login_only: bool
    ) -> tuple[User, bool]:
        async with self._connect() as conn:
            owner_id = await _user_id_by_openid(conn, appid, openid)
            owner = None if owner_id is None else await _load_user(conn, owner_id)
            holder_id = await _user_id_by_phone(conn, phone)
        if owner is not None:
            if owner.phone == phone:
                return owner, False
            if owner.phone is not None:
                raise _already_bound()
            if holder_id is not None:
                raise _phone_taken()
            return await self._set_phone(owner.id, phone), False
        if holder_id is not None:
            if not link_by_phone:
                raise _phone_taken()
            return await self._link(holder_id, appid, openid), False
        if login_only:
            raise _login_only()
        return await self._create(appid, openid, phone), True

    async def _create(self, appid: str, openid: str, phone: str | None) -> User:
        now = _now()
        user_id = uuid.uuid4().hex
        async with self._begin() as conn:
            await conn.execute(
                insert(users).values(id=user_id, phone=phone, created_at=now, updated_at=now)
            )
            await conn.execute(insert(identities).values(_identity_row(user_id, appid, openid)))
        identity = Identity(PROVIDER, appid, openid, None)
        return User(user_id, phone, now, (identity,))

    async def _link(self, user_id: str, appid: str, openid: str) -> User:
        async with self._begin() as conn:
            await conn.execute(insert(identities).values(_identity_row(user_id, appid, openid)))
            await conn.execute(update(users).where(users.c.id == user_id).values(updated_at=_now()))
            user = await _load_user(conn, user_id)
        assert user is not None, "a linked user exists: users are never deleted"
        return user

    async def _set_phone(self, user_id: str, phone: str) -> User:
        async with self._begin() as conn:
            await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.phone.is_(None))
                .values(phone=phone, updated_at=_now())
            )
            user = await _load_user(conn, user_id)
        assert user is not None, "users are never deleted"
        if user.phone != phone:  # a concurrent bind gave it another phone first
            raise _already_bound()
        return user

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads (rolled back on exit)."""
        return _guarded(self._engine.connect())

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction that commits on success."""
        return _guarded(self._engine.begin())


@asynccontextmanager
async def _guarded(
    opening: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    """Use a connection; an unreachable database becomes a 503, anything else passes."""
    try:
        async with opening as conn:
            yield conn
    except Exception as exc:
        _raise_if_unreachable(exc)
        raise


# SQLSTATE classes that mean "no usable server" rather than a bad query: 08 connection
# exception, 53 insufficient resources (too many connections), 57P operator intervention
# (shutting down, starting up).
_UNREACHABLE_SQLSTATES = ("08", "53", "57P")


def _raise_if_unreachable(exc: Exception) -> None:
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
        raise _unavailable() from exc


def _unavailable() -> Unavailable:
    return Unavailable(
        "The database is not reachable; try again shortly.", code="database_unavailable"
    )


def _already_bound() -> Conflict:
    return Conflict("This WeChat account is already bound to another phone.", code="already_bound")


def _phone_taken() -> Conflict:
    return Conflict(
        "This phone number is already bound to another WeChat account.", code="phone_taken"
    )


def _login_only() -> Forbidden:
    return Forbidden(
        "Sign-up is closed: only people who already have an account can log in.",
        code="login_only",
    )


def _busy() -> Conflict:
    return Conflict("Another sign-in for this account is in progress; try again.", code="busy")


def _now() -> datetime:
    return datetime.now(UTC)


def _identity_row(user_id: str, appid: str, openid: str) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "appid": appid,
        "openid": openid,
        "unionid": None,
        "user_id": user_id,
        "created_at": _now(),
    }


_OPENID_QUERY = select(identities.c.user_id).where(
    identities.c.provider == bindparam("provider"),
    identities.c.appid == bindparam("appid"),
    identities.c.openid == bindparam("openid"),
)


async def _user_id_by_openid(conn: AsyncConnection, appid: str, openid: str) -> str | None:
    params = {"provider": PROVIDER, "appid": appid, "openid": openid}
    value: str | None = (await conn.execute(_OPENID_QUERY, params)).scalar_one_or_none()
    return value


async def _user_id_by_phone(conn: AsyncConnection, phone: str) -> str | None:
    query = select(users.c.id).where(users.c.phone == phone)
    value: str | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def _load_user(conn: AsyncConnection, user_id: str) -> User | None:
    row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    if row is None:
        return None
    query = (
        select(identities)
        .where(identities.c.user_id == user_id)
        .order_by(identities.c.created_at, identities.c.id)
    )
    found = (await conn.execute(query)).all()
    return User(row.id, row.phone, _aware(row.created_at), _identities(found))


def _identities(rows: Sequence[Row[Any]]) -> tuple[Identity, ...]:
    return tuple(Identity(r.provider, r.appid, r.openid, r.unionid) for r in rows)


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
