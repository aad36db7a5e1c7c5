"""The hot path's pipelined Redis connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import RedisServer
from tests.util import PROMPTLY, TIMEOUT
from wxpush.infra.pipeline import PipelinedConnection
from wxpush.infra.redis_client import open_connections, open_redis

ECHO = "return {KEYS[1], ARGV[1]}"


pytestmark = pytest.mark.uvloop  # on uvloop too, which `wxpush serve` runs


@pytest.fixture
async def pipelined(redis_url: str) -> AsyncIterator[PipelinedConnection]:
    client, hot = open_connections(redis_url)
    assert isinstance(hot, PipelinedConnection)
    yield hot
    await hot.aclose()
    await client.aclose()


def named(port: int, name: str) -> int:
    rows = redis.Redis(port=port).client_list()
    return sum(1 for row in rows if row.get("name") == name)


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(
    pipelined: PipelinedConnection, redis_server: RedisServer
) -> None:
    echo = pipelined.register_script(ECHO)
    await asyncio.gather(*(pipelined.set(f"k{i}", f"v{i}", ex=60) for i in range(300)))
    got, scripted, hashes = await asyncio.gather(
        asyncio.gather(*(pipelined.get(f"k{i}") for i in range(300))),
        asyncio.gather(*(echo(keys=[f"s{i}"], args=[i]) for i in range(300))),
        asyncio.gather(*(pipelined.hgetall(f"missing{i}") for i in range(10))),
    )
    assert got == [f"v{i}".encode() for i in range(300)]
    assert scripted == [[f"s{i}".encode(), str(i).encode()] for i in range(300)]
    assert hashes == [{}] * 10
    assert named(redis_server.port, f"wxpush-{os.getpid()}") == 1  # the pipelined alone
    assert redis_server.client().ttl("k7") == 60


async def test_hgetall_gives_what_redis_py_gives(
    pipelined: PipelinedConnection, redis_url: str
) -> None:
    plain = open_redis(redis_url)
    try:
        await plain.hset("h", mapping={"status": "LOOP", "account": "default"})
        assert await pipelined.hgetall("h") == await plain.hgetall("h")
    finally:
        await plain.aclose()


async def test_a_script_survives_a_flushed_script_cache(
    pipelined: PipelinedConnection, redis_server: RedisServer
) -> None:
    echo = pipelined.register_script(ECHO)
    assert await echo(keys=["a"], args=["1"]) == [b"a", b"1"]
    redis_server.client().script_flush()
    assert await echo(keys=["b"], args=["2"]) == [b"b", b"2"]


async def test_an_error_reply_is_raised_and_the_lane_goes_on(
    pipelined: PipelinedConnection,
) -> None:
    failing = pipelined.register_script("return redis.error_reply('no such thing')")
    results = await asyncio.gather(
        pipelined.set("x", "1"), failing(), pipelined.get("x"), return_exceptions=True
    )
    assert results[0] == b"OK"
    assert type(results[1]) is ResponseError
    assert "no such thing" in str(results[1])
    assert results[2] == b"1"


async def test_redis_away_fails_fast_and_the_lane_reconnects_by_itself(
    own_redis: RedisServer,
) -> None:
    client, pipelined = open_connections(own_redis.url)
    assert isinstance(pipelined, PipelinedConnection)
    try:
        await pipelined.set("before", "1")
        own_redis.stop()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(RedisConnectionError) as caught:
                await pipelined.get("before")
            assert type(caught.value) is RedisConnectionError
        assert time.monotonic() - started < PROMPTLY
        own_redis.start()
        assert await pipelined.set("after", "2") == b"OK"
        assert own_redis.client().get("after") == b"2"
    finally:
        await pipelined.aclose()
        await client.aclose()


async def test_a_frozen_redis_times_out_and_the_lane_recovers(own_redis: RedisServer) -> None:
    client = open_redis(own_redis.url)
    pipelined = PipelinedConnection(client, timeout=0.3, connect_timeout=0.3)
    try:
        await pipelined.set("k", "v")
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(pipelined.get("k") for _ in range(5)), return_exceptions=True
            )
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert time.monotonic() - started < 0.3 + TIMEOUT / 5
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert await pipelined.get("k") == b"v"
    finally:
        await pipelined.aclose()
        await client.aclose()


async def test_password_and_database_from_the_url(own_redis: RedisServer) -> None:
    own_redis.client().config_set("requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{own_redis.port}/2"
    client, pipelined = open_connections(url)
    assert isinstance(pipelined, PipelinedConnection)
    try:
        await pipelined.set("where", "db2")
        check = redis.Redis(port=own_redis.port, password="s3cret", db=2)
        assert check.get("where") == b"db2"
        names = [row.get("name") for row in check.client_list()]
        assert names.count(f"wxpush-{os.getpid()}") == 1
        wrong, wrong_lane = open_connections(f"redis://:nope@127.0.0.1:{own_redis.port}/2")
        with pytest.raises(RedisConnectionError, match="refused"):
            await wrong_lane.get("where")
        await wrong_lane.aclose()  # type: ignore[attr-defined]
        await wrong.aclose()
    finally:
        await pipelined.aclose()
        await client.aclose()


async def test_the_embedded_store_keeps_to_redis_py() -> None:
    assert PipelinedConnection.serves("redis://127.0.0.1:6379/0")
    assert PipelinedConnection.serves("unix:///run/redis.sock")
    assert PipelinedConnection.serves("rediss://cache.example:6380/0")  # tests/test_tls.py
    client, hot = open_connections(None)
    try:
        assert hot is client
        await hot.set("k", "v", ex=5)
        assert await hot.get("k") == b"v"
    finally:
        await client.aclose()


async def test_a_reply_that_came_while_the_loop_lagged_is_not_a_timeout(redis_url: str) -> None:
    """A busy process's loop can run a command's timeout after its reply has arrived (both
    due in the same turn): that is an answer, not a hung Redis."""
    client = open_redis(redis_url)
    pipelined = PipelinedConnection(client, timeout=0.05, connect_timeout=1)
    try:
        await pipelined.set("k", "v")
        answer = asyncio.ensure_future(pipelined.get("k"))
        await asyncio.sleep(0)  # the command is written on the next turn
        await asyncio.sleep(0)
        time.sleep(0.2)  # the loop is blocked: the reply arrives, the timeout falls due
        assert await answer == b"v"
        assert await pipelined.get("k") == b"v"  # the connection was kept
    finally:
        await pipelined.aclose()
        await client.aclose()


async def test_a_busy_pool_serves_every_caller_in_turn(redis_url: str) -> None:
    """32 callers on the pool's 3 connections, back to back: none may wait out the pool's
    second while the others keep taking connections (redis-py's own pool lets a caller that
    arrives as a connection comes back take it before the waiter that was woken for it, and
    under this load a few of 20,000 commands failed with "No connection available")."""
    client = open_redis(redis_url, connections=3)
    failed: list[BaseException] = []

    async def caller() -> None:
        for _ in range(625):
            try:
                await client.get("k")
            except RedisConnectionError as exc:
                failed.append(exc)

    try:
        await asyncio.gather(*(caller() for _ in range(32)))
    finally:
        await client.aclose()
    assert failed == []
