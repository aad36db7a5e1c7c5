"""The people's tables and the rows read from them (SQLAlchemy Core, no ORM).

``users``: a uuid4-hex id, a phone in E.164 that is unique but may be NULL (people
registered without one). ``identities``: one WeChat openid of one appid, unique together,
pointing at its user, with the person's unionid when WeChat gave one (indexed: a person is
found by unionid among all identities, SPEC §12). ``audit``: one row per login, bind, link,
unlink and delete (SPEC §15, :mod:`wxpush.people.audit`); it names the user by id only, with
no key to ``users``, so that it outlives a person's erasure.

These are the tables at the latest schema version; :mod:`wxpush.people.migrate` brings an
older database here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    select,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

PROVIDER = "wechat_mp"  # a service account's openid: the follow and oauth doors
OPEN_PROVIDER = "wechat_open"  # an Open Platform website app's openid: the website door

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

# Schema version 2: most identities have no unionid, but a person is looked up by one.
unionid_index = Index("ix_identities_unionid", identities.c.unionid)

# Schema version 3.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("event", String(16), nullable=False),
    Column("door", String(16), nullable=True),
    Column("client_id", String(128), nullable=True),
    Column("ip", String(45), nullable=True),
    Column("detail", String(64), nullable=True),
    Index("ix_audit_user_at", "user_id", "at"),
)


@dataclass(frozen=True, slots=True)
class Identity:
    """One way a person signs in: a WeChat openid of one appid."""

    provider: str
    appid: str
    openid: str
    unionid: str | None
    id: int = field(default=0, compare=False)  # its row's id (``/api/v1/me/identities/{id}``)
    linked_at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class User:
    """A person, with every identity that logs them in."""

    id: str
    phone: str | None
    created_at: datetime
    identities: tuple[Identity, ...]


def identity_row(
    user_id: str, appid: str, openid: str, provider: str = PROVIDER, unionid: str | None = None
) -> dict[str, Any]:
    return {
        "provider": provider,
        "appid": appid,
        "openid": openid,
        "unionid": unionid,
        "user_id": user_id,
        "created_at": now(),
    }


OPENID_QUERY = select(identities.c.user_id).where(
    identities.c.provider == bindparam("provider"),
    identities.c.appid == bindparam("appid"),
    identities.c.openid == bindparam("openid"),
)


async def user_id_by_openid(
    conn: AsyncConnection, appid: str, openid: str, provider: str = PROVIDER
) -> str | None:
    params = {"provider": provider, "appid": appid, "openid": openid}
    value: str | None = (await conn.execute(OPENID_QUERY, params)).scalar_one_or_none()
    return value


async def user_id_by_unionid(conn: AsyncConnection, unionid: str) -> str | None:
    """The user one of whose identities carries ``unionid`` (WeChat's id of a person across
    the apps of one Open Platform account); the oldest such identity's, should two users
    ever hold it."""
    query = (
        select(identities.c.user_id)
        .where(identities.c.unionid == unionid)
        .order_by(identities.c.id)
        .limit(1)
    )
    value: str | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def user_id_by_phone(conn: AsyncConnection, phone: str) -> str | None:
    query = select(users.c.id).where(users.c.phone == phone)
    value: str | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def load_user(conn: AsyncConnection, user_id: str) -> User | None:
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
    return tuple(
        Identity(r.provider, r.appid, r.openid, r.unionid, r.id, _aware(r.created_at)) for r in rows
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)
