"""People in SQL, on a real SQLite file and a real PostgreSQL: link/create rules and races."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.pg import PostgresServer
from tests.util import PROMPTLY, free_port
from wxpush.errors import Conflict, Forbidden, Unavailable
from wxpush.infra.sql import SQLITE_BUSY_MS, open_engine
from wxpush.people.schema import PROVIDER, Identity, identities, users
from wxpush.people.store import People
from wxpush.sms.phone import mask_phone

APPID = "wx0123456789abcdef"
PHONE = "+8613800138000"
OTHER_PHONE = "+8613900139000"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_db_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def people(engine: AsyncEngine) -> People:
    people = People(engine)
    await people.create_schema()
    return people


async def count(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        n_users = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
        n_ids = (await conn.execute(select(func.count()).select_from(identities))).scalar_one()
    return n_users, n_ids


def bind(people: People, openid: str, phone: str = PHONE, **rules: bool) -> Awaitable[Any]:
    options = {"link_by_phone": True, "login_only": False, **rules}
    return people.bind_phone(APPID, openid, phone, **options)


async def test_new_phone_creates_a_user(people: People, engine: AsyncEngine) -> None:
    user, created = await bind(people, "o-alice")
    assert created
    assert user.phone == PHONE
    assert len(user.id) == 32
    assert user.created_at.tzinfo is not None
    assert user.identities == (Identity(PROVIDER, APPID, "o-alice", None),)
    assert await people.get_user(user.id) == user
    assert await people.find_by_openid(APPID, "o-alice") == user
    assert await count(engine) == (1, 1)


async def test_same_openid_again_is_the_same_user(people: People, engine: AsyncEngine) -> None:
    first, _ = await bind(people, "o-alice")
    again, created = await bind(people, "o-alice")
    assert (again.id, created) == (first.id, False)
    assert await count(engine) == (1, 1)


async def test_openid_bound_to_another_phone_conflicts(people: People) -> None:
    await bind(people, "o-alice")
    with pytest.raises(Conflict) as caught:
        await bind(people, "o-alice", OTHER_PHONE)
    assert (caught.value.status, caught.value.code) == (409, "already_bound")
    assert "already bound to another phone" in caught.value.message


async def test_phone_links_a_second_openid(people: People, engine: AsyncEngine) -> None:
    first, _ = await bind(people, "o-alice")
    linked, created = await bind(people, "o-alice-2")
    assert (linked.id, created) == (first.id, False)
    assert {i.openid for i in linked.identities} == {"o-alice", "o-alice-2"}
    user = await people.get_user(first.id)
    assert user is not None and len(user.identities) == 2
    assert await count(engine) == (1, 2)


async def test_phone_taken_without_linking(people: People, engine: AsyncEngine) -> None:
    await bind(people, "o-alice")
    with pytest.raises(Conflict) as caught:
        await bind(people, "o-mallory", link_by_phone=False)
    assert (caught.value.status, caught.value.code) == (409, "phone_taken")
    assert await people.find_by_openid(APPID, "o-mallory") is None
    assert await count(engine) == (1, 1)


async def test_login_only_refuses_new_people(people: People, engine: AsyncEngine) -> None:
    with pytest.raises(Forbidden) as caught:
        await bind(people, "o-stranger", login_only=True)
    assert (caught.value.status, caught.value.code) == (403, "login_only")
    assert await count(engine) == (0, 0)
    with pytest.raises(Forbidden) as caught:
        await people.register_openid(APPID, "o-stranger", login_only=True)
    assert caught.value.code == "login_only"
    assert await count(engine) == (0, 0)


async def test_login_only_still_lets_known_people_in(people: People, engine: AsyncEngine) -> None:
    first, _ = await bind(people, "o-alice")
    again, created = await bind(people, "o-alice", login_only=True)
    linked, _ = await bind(people, "o-alice-2", login_only=True)
    assert again.id == linked.id == first.id
    assert not created
    assert await count(engine) == (1, 2)


async def test_concurrent_binds_of_one_openid_make_one_user(
    people: People, engine: AsyncEngine
) -> None:
    results = await asyncio.gather(*(bind(people, "o-alice") for _ in range(10)))
    assert len({user.id for user, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await count(engine) == (1, 1)


async def test_concurrent_binds_of_one_phone_link_both(people: People, engine: AsyncEngine) -> None:
    for round_ in range(5):
        phone = f"+86139001390{round_:02d}"
        results = await asyncio.gather(
            bind(people, f"a{round_}", phone), bind(people, f"b{round_}", phone)
        )
        assert results[0][0].id == results[1][0].id
        assert sum(created for _, created in results) == 1
        user = await people.get_user(results[0][0].id)
        assert user is not None
        assert {i.openid for i in user.identities} == {f"a{round_}", f"b{round_}"}
    assert await count(engine) == (5, 10)


async def test_concurrent_binds_of_one_phone_without_linking(
    people: People, engine: AsyncEngine
) -> None:
    results = await asyncio.gather(
        bind(people, "o-1", link_by_phone=False),
        bind(people, "o-2", link_by_phone=False),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], Conflict)
    assert errors[0].code == "phone_taken"
    assert await count(engine) == (1, 1)


async def test_register_openid_without_phone(people: People, engine: AsyncEngine) -> None:
    results = await asyncio.gather(*(people.register_openid(APPID, "o-tv") for _ in range(5)))
    assert len({user.id for user, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    user = results[0][0]
    assert user.phone is None
    assert user.identities == (Identity(PROVIDER, APPID, "o-tv", None),)
    # Phoneless people never collide with each other under the UNIQUE phone column.
    await people.register_openid(APPID, "o-tv-2")
    # A phoneless person who later proves a phone keeps their account.
    bound, created = await bind(people, "o-tv")
    assert (bound.id, bound.phone, created) == (user.id, PHONE, False)
    assert await count(engine) == (2, 2)


async def test_unknown_people(people: People) -> None:
    assert await people.find_by_openid(APPID, "nobody") is None
    assert await people.get_user("0" * 32) is None


async def test_create_schema_is_idempotent(people: People) -> None:
    await people.create_schema()
    await people.create_schema()
    await people.ping()


async def test_sqlite_file_uses_wal(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    try:
        await People(engine).create_schema()
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        assert (mode, busy) == ("wal", SQLITE_BUSY_MS)
    finally:
        await engine.dispose()


async def test_plain_postgres_url_gets_the_async_driver() -> None:
    engine = open_engine("postgresql://postgres@127.0.0.1:5432/wxpush")
    try:
        assert engine.url.drivername == "postgresql+asyncpg"
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+8613800138000", "+86 138****8000"),
        ("+16502530000", "+1 650***0000"),
        ("+447911123456", "+44 791***3456"),
        ("not a phone", "****"),
    ],
)
def test_mask_phone(e164: str, masked: str) -> None:
    assert mask_phone(e164) == masked


# -- the database away -------------------------------------------------------------------------


# A hung database (a stopped server, a lock never released) answers nothing, so every wait
# is bounded: the 503 comes within about a second all the same, asserted with room to spare
# for a loaded machine (PROMPTLY).


async def within_a_second(call: Callable[[], Awaitable[Any]]) -> Unavailable:
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await call()
    assert time.monotonic() - started < PROMPTLY
    assert (caught.value.status, caught.value.code) == (503, "database_unavailable")
    return caught.value


async def test_closed_port_is_unavailable_fast() -> None:
    engine = open_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        people = People(engine)
        await within_a_second(lambda: people.find_by_openid(APPID, "o"))
        await within_a_second(lambda: bind(people, "o"))
        await within_a_second(people.create_schema)
        await within_a_second(people.ping)
    finally:
        await engine.dispose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word, like a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


async def test_hung_server_is_unavailable_within_a_second(silent_port: int) -> None:
    engine = open_engine(f"postgresql://postgres@127.0.0.1:{silent_port}/postgres")
    try:
        await within_a_second(lambda: People(engine).find_by_openid(APPID, "o"))
    finally:
        await engine.dispose()


async def test_postgres_outage_and_recovery(
    postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    engine = open_engine(postgres_db_url)
    try:
        people = People(engine)
        await people.create_schema()
        user, _ = await bind(people, "o-alice")
        postgres_server.stop()
        try:
            await within_a_second(lambda: people.find_by_openid(APPID, "o-alice"))
            await within_a_second(lambda: bind(people, "o-bob", OTHER_PHONE))
            await within_a_second(people.ping)
        finally:
            postgres_server.start()
        # The same People, the same engine: the dead pooled connections are replaced.
        assert await people.find_by_openid(APPID, "o-alice") == user
        bob, created = await bind(people, "o-bob", OTHER_PHONE)
        assert created and bob.phone == OTHER_PHONE
    finally:
        await engine.dispose()


async def test_a_hung_postgres_is_unavailable_within_a_second_and_then_used_again(
    postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    engine = open_engine(postgres_db_url)
    try:
        people = People(engine)
        await people.create_schema()
        user, _ = await bind(people, "o-alice")  # the pool now holds a connection
        with postgres_server.frozen():
            await within_a_second(lambda: people.user_id_of(APPID, "o-alice"))
            await within_a_second(lambda: bind(people, "o-bob", OTHER_PHONE))
            await within_a_second(people.ping)
            # More callers than the pool has connections: the queue for one is bounded too.
            started = time.monotonic()
            many = await asyncio.gather(
                *(people.find_by_openid(APPID, "o-alice") for _ in range(30)),
                return_exceptions=True,
            )
            assert time.monotonic() - started < PROMPTLY
            assert {getattr(e, "code", e) for e in many} == {"database_unavailable"}
        # The same engine, without a restart of ours.
        assert await people.find_by_openid(APPID, "o-alice") == user
        bob, created = await bind(people, "o-bob", OTHER_PHONE)
        assert created and bob.phone == OTHER_PHONE
    finally:
        await engine.dispose()


async def test_a_restarted_postgres_costs_no_request(
    postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    """The pooled connections a restart closed are replaced at checkout (there is no
    pre-ping): the first request after the restart is served."""
    engine = open_engine(postgres_db_url)
    try:
        people = People(engine)
        await people.create_schema()
        user, _ = await bind(people, "o-alice")
        await asyncio.gather(*(people.get_user(user.id) for _ in range(5)))  # 5 pooled
        # In threads, so that this loop sees its sockets close, as a server's loop does.
        await asyncio.to_thread(postgres_server.stop)
        await asyncio.to_thread(postgres_server.start)
        assert await asyncio.gather(*(people.get_user(user.id) for _ in range(5))) == [user] * 5
    finally:
        await engine.dispose()


async def test_a_sqlite_lock_never_released_is_unavailable_within_a_second(
    sqlite_url: str,
) -> None:
    engine = open_engine(sqlite_url)
    people = People(engine)
    try:
        await people.create_schema()
        user, _ = await bind(people, "o-alice")
        people.close()
        await engine.dispose()  # pooled connections would keep the lock from being taken
        locker = sqlite3.connect(engine.url.database or "", isolation_level=None)
        locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")  # a writer that hangs, holding the file
        try:
            await within_a_second(lambda: people.user_id_of(APPID, "o-alice"))
            await within_a_second(lambda: bind(people, "o-bob", OTHER_PHONE))
        finally:
            locker.execute("COMMIT")
            locker.close()
        assert await people.user_id_of(APPID, "o-alice") == user.id
        assert (await bind(people, "o-bob", OTHER_PHONE))[1]
    finally:
        people.close()
        await engine.dispose()


async def test_the_scan_lookup_on_sqlite_sees_every_commit_and_gives_way_to_a_lock(
    sqlite_url: str,
) -> None:
    """``user_id_of`` reads SQLite in place (wxpush.infra.sqlite_read): it must see what another
    process just committed, and fall back to the async engine when the file is locked."""
    mine, theirs = open_engine(sqlite_url), open_engine(sqlite_url)  # two processes' engines
    try:
        here, there = People(mine), People(theirs)
        await here.create_schema()
        assert await here.user_id_of("wxA", "oQuick1") is None
        user, _ = await there.register_openid("wxA", "oQuick1")
        assert await here.user_id_of("wxA", "oQuick1") == user.id
        # An exclusive lock held by another connection: the quick read cannot tell, and the
        # async engine waits its turn (busy timeout) and answers once the lock is gone.
        here.close()
        await mine.dispose()  # pooled connections would keep the lock from being taken
        await theirs.dispose()
        locker = sqlite3.connect(mine.url.database or "", isolation_level=None)
        locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        lookup = asyncio.create_task(here.user_id_of("wxA", "oQuick1"))
        await asyncio.sleep(0.3)
        assert not lookup.done()  # waiting on the lock, not answering "nobody"
        locker.execute("COMMIT")
        locker.close()
        assert await asyncio.wait_for(lookup, 10) == user.id
        here.close()
    finally:
        await mine.dispose()
        await theirs.dispose()
