"""Schema versions of the people database, on a real SQLite file and a real PostgreSQL.

A database from before schema versions is built from ``tests/data/people_v1_*.sql``: the DDL
that code created, captured once (the files say how) and never regenerated.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import test_accounts
from tests.procs import ServerProcess
from tests.util import TIMEOUT, wait_for
from wxpush.errors import SettingsError
from wxpush.infra.sql import open_engine
from wxpush.people.migrate import STEPS, Step, schema_version, upgrade
from wxpush.people.schema import PROVIDER, Identity, identities, users
from wxpush.people.store import People

DATA = Path(__file__).parent / "data"
LATEST = STEPS[-1].version
APPID = "wx0123456789abcdef"
PHONE = "+8613800138000"
STAMP = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


db_url, engine = test_accounts.db_url, test_accounts.engine  # SQLite and PostgreSQL, each


async def build_v1(engine: AsyncEngine, *, rows: bool = True) -> None:
    """The tables as wxpush created them before schema versions, with a person in them."""
    ddl = (DATA / f"people_v1_{engine.dialect.name}.sql").read_text()
    code = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    async with engine.begin() as conn:
        for statement in filter(None, (part.strip() for part in code.split(";"))):
            await conn.exec_driver_sql(statement)
        if rows:
            await conn.execute(
                insert(users).values(id="u" * 32, phone=PHONE, created_at=STAMP, updated_at=STAMP)
            )
            await conn.execute(
                insert(identities).values(
                    provider=PROVIDER, appid=APPID, openid="o-alice", unionid="un-alice",
                    user_id="u" * 32, created_at=STAMP,
                )
            )  # fmt: skip


def _snapshot(conn: Connection) -> dict[str, Any]:
    """Every table, index, unique constraint and row (the schema_version row too)."""
    inspector = inspect(conn)
    tables = sorted(inspector.get_table_names())

    def indexes(table: str) -> list[tuple[Any, ...]]:
        found = inspector.get_indexes(table)
        return sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found)

    def uniques(table: str) -> list[tuple[Any, ...]]:
        found = inspector.get_unique_constraints(table)
        return sorted((tuple(u["column_names"]), u["name"]) for u in found)

    def rows(table: str) -> list[tuple[Any, ...]]:
        return sorted((tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}"))), key=repr)

    return {
        "tables": tables,
        "indexes": {table: indexes(table) for table in tables},
        "uniques": {table: uniques(table) for table in tables},
        "rows": {table: rows(table) for table in tables},
    }


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await conn.run_sync(_snapshot)


def assert_latest(state: dict[str, Any]) -> None:
    """The latest schema: today's tables, their constraints and indexes, one version row."""
    assert {"users", "identities", "schema_version"} <= set(state["tables"])
    indexes = state["indexes"]["identities"]
    assert ("ix_identities_unionid", ("unionid",), False) in indexes
    assert ("ix_identities_user_id", ("user_id",), False) in indexes
    uniques = state["uniques"]["identities"]
    assert (("provider", "appid", "openid"), "uq_identities_provider_appid_openid") in uniques
    assert [u[0] for u in state["uniques"]["users"]] == [("phone",)]
    assert [row[0] for row in state["rows"]["schema_version"]] == [LATEST]


async def test_a_fresh_database_is_created_at_the_latest_version(engine: AsyncEngine) -> None:
    await People(engine).create_schema()
    state = await snapshot(engine)
    assert_latest(state)
    assert state["rows"]["users"] == state["rows"]["identities"] == []


async def test_a_v1_database_upgrades_keeping_every_row(engine: AsyncEngine) -> None:
    await build_v1(engine)
    before = await snapshot(engine)
    assert "schema_version" not in before["tables"]
    assert "ix_identities_unionid" not in [i[0] for i in before["indexes"]["identities"]]
    people = People(engine)
    await people.create_schema()
    after = await snapshot(engine)
    assert_latest(after)
    for table in ("users", "identities"):
        assert after["rows"][table] == before["rows"][table]
    user = await people.find_by_openid(APPID, "o-alice")
    assert user is not None and (user.id, user.phone) == ("u" * 32, PHONE)
    assert user.identities == (Identity(PROVIDER, APPID, "o-alice", "un-alice"),)
    people.close()
    await people.create_schema()  # again: nothing to do, nothing changed (not even updated_at)
    assert await snapshot(engine) == after


async def test_a_newer_database_is_refused_and_left_as_it_is(engine: AsyncEngine) -> None:
    await build_v1(engine)
    async with engine.begin() as conn:
        await conn.run_sync(schema_version.create)
        await conn.execute(insert(schema_version).values(version=LATEST + 1, updated_at=STAMP))
    before = await snapshot(engine)
    with pytest.raises(SettingsError) as refused:
        await People(engine).create_schema()
    assert str(refused.value) == (
        f"WXPUSH_DATABASE_URL: the database is at schema version {LATEST + 1}, newer than this "
        f"wxpush knows ({LATEST}); run a newer wxpush (the database was not changed)"
    )
    assert await snapshot(engine) == before  # not even the unionid index it lacks


async def test_a_failed_step_leaves_the_version_before_it(engine: AsyncEngine) -> None:
    """Each step and its version commit together or not at all: DDL is transactional on
    PostgreSQL, and on SQLite as the runner begins its transactions."""

    def half_done(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE audit_trial (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE INDEX ix_audit_trial_id ON audit_trial (id)")
        raise RuntimeError("the step failed half-way")

    await build_v1(engine)
    with pytest.raises(RuntimeError, match="half-way"):
        await upgrade(engine, (*STEPS, Step(LATEST + 1, "a step that fails", half_done)))
    state = await snapshot(engine)
    assert "audit_trial" not in state["tables"]
    assert_latest(state)  # the steps before it are kept
    assert await upgrade(engine) == LATEST


@pytest.mark.parametrize("start", ["fresh", "v1"])
async def test_two_runners_at_once_migrate_once(db_url: str, start: str) -> None:
    engines = [open_engine(db_url) for _ in range(3)]
    try:
        if start == "v1":
            await build_v1(engines[0])
        before = await snapshot(engines[0])
        assert await asyncio.gather(*(People(e).create_schema() for e in engines)) == [None] * 3
        after = await snapshot(engines[0])
        assert_latest(after)
        for table in ("users", "identities"):
            assert after["rows"][table] == before["rows"].get(table, [])
    finally:
        for engine in engines:
            await engine.dispose()


# A process that waits for the file named by its second argument, then starts up on the
# database named by its first, as each uvicorn worker does.
_WORKER = """
import asyncio, pathlib, sys, time
from wxpush.infra.sql import open_engine
from wxpush.people.store import People

async def start(url):
    engine = open_engine(url)
    try:
        await People(engine).create_schema()
    finally:
        await engine.dispose()

deadline = time.monotonic() + float(sys.argv[3])
while not pathlib.Path(sys.argv[2]).exists() and time.monotonic() < deadline:
    time.sleep(0.001)
asyncio.run(start(sys.argv[1]))
"""


@pytest.mark.parametrize("start", ["fresh", "v1"])
async def test_processes_starting_at_once_on_sqlite_migrate_once(
    tmp_path: Path, start: str
) -> None:
    for attempt in range(3):  # the processes race for a few milliseconds: give them a few tries
        url = f"sqlite+aiosqlite:///{tmp_path / f'people-{attempt}.db'}"
        engine = open_engine(url)
        try:
            if start == "v1":
                await build_v1(engine)
                await engine.dispose()  # no connection of ours in the way
            go = tmp_path / f"go-{attempt}"
            workers = [
                subprocess.Popen(
                    [sys.executable, "-c", _WORKER, url, str(go), str(TIMEOUT * 2)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(4)
            ]
            go.touch()
            for worker in workers:
                output, _ = worker.communicate(timeout=TIMEOUT * 4)
                assert worker.returncode == 0, output
            state = await snapshot(engine)
            assert_latest(state)
            assert len(state["rows"]["users"]) == (1 if start == "v1" else 0)
        finally:
            await engine.dispose()


# -- the server ---------------------------------------------------------------------------------


def _server_env(tmp_path: Path, database: Path, redis_url: str) -> dict[str, str]:
    return {
        "WXPUSH_APPID": APPID,
        "WXPUSH_APPSECRET": "s",
        "WXPUSH_TOKEN": "tok123",
        "WXPUSH_REDIS_URL": redis_url,
        "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "WXPUSH_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
        "WXPUSH_WECHAT_API_BASE": "http://127.0.0.1:9",
        "WXPUSH_LOG_LEVEL": "info",
    }


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_the_server_comes_up_on_a_v1_sqlite_file(
    tmp_path: Path, redis_url: str, workers: str
) -> None:
    database = tmp_path / "people.db"
    engine = open_engine(f"sqlite+aiosqlite:///{database}")
    try:
        await build_v1(engine)
        await engine.dispose()
        env = _server_env(tmp_path, database, redis_url)
        server = ServerProcess(env, tmp_path, args=["--workers", workers]).start()
        try:
            assert httpx.get(server.url + "/readyz", timeout=TIMEOUT).status_code == 200
            started = "Application startup complete"
            assert wait_for(lambda: server.log().count(started) == int(workers)), server.log()
            assert "Traceback" not in server.log()
        finally:
            server.stop()
        state = await snapshot(engine)
        assert_latest(state)
        assert [row[1] for row in state["rows"]["users"]] == [PHONE]
    finally:
        await engine.dispose()


async def test_the_server_refuses_a_newer_database_in_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    database = tmp_path / "people.db"
    engine = open_engine(f"sqlite+aiosqlite:///{database}")
    try:
        await People(engine).create_schema()
        async with engine.begin() as conn:
            await conn.execute(schema_version.update().values(version=LATEST + 1))
            count = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
        await engine.dispose()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
        done = subprocess.run(
            [sys.executable, "-m", "wxpush", "serve", "--host", "127.0.0.1", "--port", "0"],
            env={**clean, **_server_env(tmp_path, database, redis_url)},
            cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT * 4,
        )  # fmt: skip
        assert (done.returncode, done.stderr.splitlines()) == (2, [
            f"wxpush: WXPUSH_DATABASE_URL: the database is at schema version {LATEST + 1}, "
            f"newer than this wxpush knows ({LATEST}); run a newer wxpush (the database was "
            "not changed)"
        ])  # fmt: skip
        state = await snapshot(engine)
        assert [row[0] for row in state["rows"]["schema_version"]] == [LATEST + 1]
        assert count == 0
    finally:
        await engine.dispose()
