"""A person's own links (SPEC §15): attach a WeChat identity, detach one, erase oneself; and
what the operator's ``wxpush users`` reads.

Every change runs in one transaction that begins by touching the person's ``users`` row
(``updated_at``): on PostgreSQL that locks the row, on SQLite it takes the file's write lock,
so two changes to one person run one after the other — two unlinks at once cannot each
leave the other's identity as "the last way in" and end with none; a link cannot land on a
person being erased. Each change writes its audit row in the same transaction
(:mod:`wxpush.people.audit`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Literal

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wxpush.errors import BadRequest, Conflict, NotFound
from wxpush.infra.sql import guarded
from wxpush.people import audit
from wxpush.people.audit import Entry, Origin
from wxpush.people.schema import (
    User,
    identities,
    identity_row,
    load_user,
    now,
    user_id_by_openid,
    user_id_by_unionid,
    users,
)
from wxpush.sms.phone import normalize_phone

logger = logging.getLogger(__name__)

Attached = Literal["linked", "already", "taken", "gone"]
_ATTEMPTS = 3
EXPORT_PAGE = 500


class Links:
    """Changes a person makes to their own account, and the operator's reads."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def attach(
        self, user_id: str, appid: str, openid: str, *, provider: str,
        unionid: str | None, origin: Origin,
    ) -> Attached:  # fmt: skip
        """Attach this WeChat identity to ``user_id`` (a link scene's end).

        ``linked``: attached now; ``already``: it was theirs; ``taken``: it (or, by its
        unionid, the person behind it) is another user's, and nothing moves; ``gone``: the
        user was erased meanwhile.
        """
        for _ in range(_ATTEMPTS):
            async with self._connect() as conn:
                owner = await user_id_by_openid(conn, appid, openid, provider)
                holder = None if unionid is None else await user_id_by_unionid(conn, unionid)
            if owner is not None:
                return "already" if owner == user_id else "taken"
            if holder is not None and holder != user_id:
                return "taken"
            try:
                async with self._begin() as conn:
                    if not await _lock(conn, user_id):
                        return "gone"
                    row = identity_row(user_id, appid, openid, provider, unionid)
                    await conn.execute(insert(identities).values(row))
                    await audit.write(conn, "link", user_id, origin, provider)
            except IntegrityError:  # the same identity attached concurrently: look again
                continue
            return "linked"
        raise Conflict("Another change to this account is in progress; try again.", code="busy")

    async def detach(
        self, user_id: str, identity_id: int, origin: Origin, *, phone_is_a_way_in: bool
    ) -> None:
        """Remove one of ``user_id``'s identities.

        Raises:
            NotFound: ``identity_not_found`` (no such identity of this user).
            Conflict: ``last_identity`` — no other identity, and no phone that could log the
                person in again (``phone_is_a_way_in``: ``WXPUSH_LINK_BY_PHONE``).
        """
        async with self._begin() as conn:
            mine = (identities.c.id == identity_id, identities.c.user_id == user_id)
            found = (
                await _lock(conn, user_id)
                and (await conn.execute(select(identities.c.id).where(*mine))).first()
            )
            if not found:
                raise NotFound("This account has no such identity.", code="identity_not_found")
            count = select(func.count()).where(identities.c.user_id == user_id)
            others = int((await conn.execute(count)).scalar_one()) - 1
            phone = (
                await conn.execute(select(users.c.phone).where(users.c.id == user_id))
            ).scalar()
            if others == 0 and not (phone_is_a_way_in and phone):
                raise Conflict(
                    "This is the last way to log in to this account; link another WeChat "
                    "first (or delete the account).",
                    code="last_identity",
                )
            await conn.execute(delete(identities).where(*mine))
            await audit.write(conn, "unlink", user_id, origin, f"identity {identity_id}")

    async def erase(self, user_id: str, origin: Origin) -> bool:
        """Delete the user and every identity (the audit rows stay, naming only the id);
        ``False`` when there is no such user."""
        async with self._begin() as conn:
            if not await _lock(conn, user_id):
                return False
            await conn.execute(delete(identities).where(identities.c.user_id == user_id))
            await conn.execute(delete(users).where(users.c.id == user_id))
            await audit.write(conn, "delete", user_id, origin)
        return True

    async def find(self, term: str) -> list[str]:
        """The ids of users with this phone, openid or unionid (or this id)."""
        term = term.strip()
        if not term:
            raise BadRequest("Give a phone number, an openid or a unionid.", code="bad_term")
        matches = [identities.c.openid == term, identities.c.unionid == term]
        query = select(identities.c.user_id).where(or_(*matches))
        found = select(users.c.id).where(users.c.id == term)
        try:
            phone = normalize_phone(term)
        except BadRequest:
            phone = None
        if phone is not None:
            found = select(users.c.id).where(or_(users.c.id == term, users.c.phone == phone))
        async with self._connect() as conn:
            ids = [*(await conn.execute(found)).scalars(), *(await conn.execute(query)).scalars()]
        return sorted(set(ids))

    async def user(self, user_id: str) -> User | None:
        async with self._connect() as conn:
            return await load_user(conn, user_id)

    async def history(self, user_id: str, limit: int = 20) -> list[Entry]:
        """The last audit rows of ``user_id`` (also once erased)."""
        async with self._connect() as conn:
            return await audit.recent(conn, user_id, limit)

    async def everyone(self) -> AsyncIterator[User]:
        """Every user with their identities, oldest first, read a page at a time."""
        after = ""
        while True:
            query = select(users.c.id).where(users.c.id > after).order_by(users.c.id)
            async with self._connect() as conn:
                page = list((await conn.execute(query.limit(EXPORT_PAGE))).scalars())
                found = [await load_user(conn, user_id) for user_id in page]
            for user in found:
                if user is not None:
                    yield user
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1]

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return guarded(self._engine.connect())

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return guarded(self._engine.begin())


async def _lock(conn: AsyncConnection, user_id: str) -> bool:
    """Lock the user's row for this transaction (see the module); ``False`` when there is no
    such user."""
    touched = await conn.execute(
        update(users).where(users.c.id == user_id).values(updated_at=now())
    )
    return bool(touched.rowcount)
