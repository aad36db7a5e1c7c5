"""People in SQL: users, their WeChat identities, and the rules that link or create them.

Two tables (SQLAlchemy Core, no ORM): ``users`` (a uuid4-hex id, a phone in E.164 that is
unique but may be NULL for people registered without one) and ``identities`` (one WeChat
openid of one appid, unique together, pointing at its user).

Races are settled by the unique constraints, not by locks: two processes binding the same
openid or the same phone at once both try to insert, one insert fails with an
``IntegrityError``, and the loser re-reads the winner's rows and resolves from there. So no
phone and no openid can ever end up with two users, on SQLite or PostgreSQL alike.

A database that is down or hung is a 503 (:mod:`wxpush.infra.sql`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import AbstractAsyncContextManager

from sqlalchemy import (
    insert,
    select,
    update,
)
from sqlalchemy.exc import (
    IntegrityError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wxpush.errors import Conflict, Forbidden
from wxpush.infra.sql import guarded, unavailable
from wxpush.infra.sqlite_read import UNKNOWN, SqliteReader
from wxpush.people import audit
from wxpush.people.audit import NOWHERE, LoginLog, Origin
from wxpush.people.links import Links
from wxpush.people.migrate import upgrade
from wxpush.people.schema import (
    OPENID_QUERY,
    PROVIDER,
    Identity,
    User,
    identities,
    identity_row,
    load_user,
    now,
    user_id_by_openid,
    user_id_by_phone,
    user_id_by_unionid,
    users,
)

logger = logging.getLogger(__name__)

_Key = tuple[str, str, str, str | None]  # appid, openid, provider, unionid
_ATTEMPTS = 3  # one try, then re-read and resolve after losing a race (twice, to be safe)


class People:
    """Find, create and link people; every rule of :func:`bind_phone` lives here."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._quick = SqliteReader.for_engine(engine, OPENID_QUERY)
        self.links = Links(engine)  # a person's own links, and the operator's tools
        self.logins = LoginLog(engine)  # the audit rows of logins, written in the background

    def close(self) -> None:
        """Close the quick reader's own connection (the engine is disposed by its owner)."""
        if self._quick is not None:
            self._quick.close()

    async def aclose(self) -> None:
        """Write the login rows still queued, then :meth:`close`."""
        await self.logins.aclose()
        self.close()

    async def create_schema(self) -> None:
        """Bring the tables to the latest schema version, creating them when missing
        (idempotent; run on every start-up, see :mod:`wxpush.people.migrate`)."""
        await upgrade(self._engine)

    async def ping(self, *, timeout: float = 1.0) -> None:  # noqa: ASYNC109 - readiness's own budget
        """Readiness: a trivial query answers within ``timeout`` s, else a 503.

        The budget is a parameter (not the caller's ``asyncio.timeout``) so that a slow
        database is reported as the database's fault, in the same words as when it is down.
        """
        try:
            async with asyncio.timeout(timeout), self._connect() as conn:
                await conn.execute(select(1))
        except TimeoutError as exc:
            raise unavailable() from exc

    async def get_user(self, user_id: str) -> User | None:
        """The user with this id and all their identities, or ``None``."""
        async with self._connect() as conn:
            return await load_user(conn, user_id)

    async def find_by_openid(
        self, appid: str, openid: str, provider: str = PROVIDER
    ) -> User | None:
        """The user this WeChat openid logs in, or ``None`` for a person never seen."""
        async with self._connect() as conn:
            user_id = await user_id_by_openid(conn, appid, openid, provider)
            return None if user_id is None else await load_user(conn, user_id)

    async def user_id_of(self, appid: str, openid: str, provider: str = PROVIDER) -> str | None:
        """Only the id of the user this openid logs in (one indexed read: the scan's path;
        on SQLite read in place, see :mod:`wxpush.infra.sqlite_read`)."""
        if self._quick is not None:
            found = self._quick.one(provider=provider, appid=appid, openid=openid)
            if found is not UNKNOWN:
                return found  # type: ignore[return-value]
        async with self._connect() as conn:
            return await user_id_by_openid(conn, appid, openid, provider)

    async def resolve(
        self, appid: str, openid: str, *, provider: str = PROVIDER, unionid: str | None = None,
        origin: Origin = NOWHERE,
    ) -> str | None:  # fmt: skip
        """The user a person arriving through a door is (SPEC §12): by their openid; else,
        with a ``unionid``, the user of any identity carrying it, this openid then linked to
        them (no phone step); else ``None``, a person never seen."""
        user_id = await self.user_id_of(appid, openid, provider)
        if user_id is not None or unionid is None:
            return user_id
        return await self.link_unionid(
            appid, openid, provider=provider, unionid=unionid, origin=origin
        )

    async def link_unionid(
        self, appid: str, openid: str, *, provider: str, unionid: str, origin: Origin = NOWHERE
    ) -> str | None:
        """Link this openid to the user who already holds ``unionid``; ``None`` when no one
        does. Two doors linking the same openid at once end with one identity: the insert
        that loses to the unique constraint re-reads the winner's."""
        for _ in range(_ATTEMPTS):
            async with self._connect() as conn:
                owner = await user_id_by_openid(conn, appid, openid, provider)
                holder = owner or await user_id_by_unionid(conn, unionid)
            if owner is not None or holder is None:
                return holder
            try:
                await self._link(holder, (appid, openid, provider, unionid), origin, "by unionid")
            except IntegrityError:
                continue
            return holder
        raise _busy()

    async def remember_unionid(
        self, appid: str, openid: str, *, provider: str, unionid: str
    ) -> None:
        """Keep the ``unionid`` WeChat gave for a known identity that had none, so that the
        person's next door finds them by it. Every login through the website door brings the
        unionid again, so it is read first: a write (and its commit) only the first time."""
        lacking = (
            identities.c.provider == provider,
            identities.c.appid == appid,
            identities.c.openid == openid,
            identities.c.unionid.is_(None),
        )
        async with self._connect() as conn:
            found = (await conn.execute(select(identities.c.id).where(*lacking))).first()
        if found is None:
            return
        async with self._begin() as conn:
            await conn.execute(update(identities).where(*lacking).values(unionid=unionid))

    async def register_openid(
        self, appid: str, openid: str, *, login_only: bool = False,
        provider: str = PROVIDER, unionid: str | None = None, origin: Origin = NOWHERE,
    ) -> tuple[User, bool]:  # fmt: skip
        """Log in an openid with no phone step (``WXPUSH_REQUIRE_PHONE=false``).

        Returns ``(user, created)``; a new person gets a user without a phone, unless
        ``login_only`` refuses new people (403, nothing created).
        """
        for attempt in range(_ATTEMPTS):
            existing = await self.find_by_openid(appid, openid, provider)
            if existing is not None:
                return existing, False
            if login_only:
                raise _login_only()
            try:
                key = (appid, openid, provider, unionid)
                return await self._create(key, None, origin, "register"), True
            except IntegrityError:  # the same openid registered concurrently: read theirs
                if attempt == _ATTEMPTS - 1:
                    raise _busy() from None
        raise AssertionError("unreachable")

    async def bind_phone(
        self, appid: str, openid: str, phone: str, *, link_by_phone: bool, login_only: bool,
        provider: str = PROVIDER, unionid: str | None = None, origin: Origin = NOWHERE,
    ) -> tuple[User, bool]:  # fmt: skip
        """Tie a WeChat openid to a verified phone; return ``(user, created_new_user)``.

        The openid's own user wins (409 if it holds another phone); else an existing user with
        the phone gets this identity when ``link_by_phone`` (409 ``phone_taken`` when not);
        else a new user is created, unless ``login_only`` (403 ``login_only``, nothing
        created). Losing a race to a concurrent bind re-reads and resolves again.
        """
        for attempt in range(_ATTEMPTS):
            try:
                key = (appid, openid, provider, unionid)
                return await self._bind_once(key, phone, link_by_phone, login_only, origin)
            except IntegrityError:
                logger.debug("bind lost a race to a concurrent bind; resolving again")
                if attempt == _ATTEMPTS - 1:
                    raise _busy() from None
        raise AssertionError("unreachable")

    async def _bind_once(
        self, key: _Key, phone: str, link_by_phone: bool, login_only: bool, origin: Origin
    ) -> tuple[User, bool]:
        appid, openid, provider, _ = key
        async with self._connect() as conn:
            owner_id = await user_id_by_openid(conn, appid, openid, provider)
            owner = None if owner_id is None else await load_user(conn, owner_id)
            holder_id = await user_id_by_phone(conn, phone)
        if owner is not None:
            if owner.phone == phone:
                return owner, False
            if owner.phone is not None:
                raise _already_bound()
            if holder_id is not None:
                raise _phone_taken()
            return await self._set_phone(owner.id, phone, origin), False
        if holder_id is not None:
            if not link_by_phone:
                raise _phone_taken()
            user = await self._link(holder_id, key, origin, "by phone", event="bind")
            return user, False
        if login_only:
            raise _login_only()
        return await self._create(key, phone, origin, "bind"), True

    async def _create(
        self, key: _Key, phone: str | None, origin: Origin, event: audit.Event
    ) -> User:
        """A new user with this identity (and phone), and its audit row."""
        appid, openid, provider, unionid = key
        stamp = now()
        user_id = uuid.uuid4().hex
        row = identity_row(user_id, appid, openid, provider, unionid)
        async with self._begin() as conn:
            await conn.execute(
                insert(users).values(id=user_id, phone=phone, created_at=stamp, updated_at=stamp)
            )
            await conn.execute(insert(identities).values(row))
            await audit.write(conn, event, user_id, origin, "new user")
        identity = Identity(provider, appid, openid, unionid, linked_at=stamp)
        return User(user_id, phone, stamp, (identity,))

    async def _link(
        self, user_id: str, key: _Key, origin: Origin, detail: str,
        event: audit.Event = "link",
    ) -> User:  # fmt: skip
        appid, openid, provider, unionid = key
        row = identity_row(user_id, appid, openid, provider, unionid)
        async with self._begin() as conn:
            touched = await conn.execute(
                update(users).where(users.c.id == user_id).values(updated_at=now())
            )
            if touched.rowcount == 0:  # erased meanwhile: nobody to link to
                raise _busy()
            await conn.execute(insert(identities).values(row))
            await audit.write(conn, event, user_id, origin, detail)
            user = await load_user(conn, user_id)
        assert user is not None, "the user was locked by the update above"
        return user

    async def _set_phone(self, user_id: str, phone: str, origin: Origin) -> User:
        async with self._begin() as conn:
            done = await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.phone.is_(None))
                .values(phone=phone, updated_at=now())
            )
            if done.rowcount:
                await audit.write(conn, "bind", user_id, origin, "phone added")
            user = await load_user(conn, user_id)
        if user is None:  # erased meanwhile
            raise _busy()
        if user.phone != phone:  # a concurrent bind gave it another phone first
            raise _already_bound()
        return user

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads (rolled back on exit)."""
        return guarded(self._engine.connect())

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction that commits on success."""
        return guarded(self._engine.begin())


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
