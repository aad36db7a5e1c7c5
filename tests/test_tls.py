"""``rediss://`` (SPEC §17): the hot path's pipelined connection speaks TLS with the URL's
``ssl_*`` options as redis-py's own connections do, against a real redis-server on a TLS port
and a certificate authority of the test's own; and a login end to end over it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import connect

from tests import fakewechat
from tests.test_login import NEW_OPENID, Site, database_url, sms_inbox, start
from tests.tls import TlsRedisServer, make_authority, tls_redis
from tests.util import PROMPTLY, TIMEOUT
from wxpush.infra.pipeline import PipelinedConnection
from wxpush.infra.redis_client import open_connections

__all__ = ["database_url", "sms_inbox", "start", "tls_redis"]
fake_wechat = fakewechat.fake_wechat


def named_connections(server: TlsRedisServer) -> int:
    name = f"wxpush-{os.getpid()}"
    return sum(1 for row in server.client().client_list() if row.get("name") == name)


@pytest.mark.uvloop
async def test_rediss_keeps_the_pipelined_hot_path(tls_redis: TlsRedisServer) -> None:
    client, hot = open_connections(tls_redis.url)
    assert isinstance(hot, PipelinedConnection)
    try:
        echo = hot.register_script("return {KEYS[1], ARGV[1]}")
        await asyncio.gather(*(hot.set(f"k{i}", str(i), ex=60) for i in range(50)))
        replies = await asyncio.gather(*(hot.get(f"k{i}") for i in range(50)), echo(["a"], ["1"]))
        assert replies == [str(i).encode() for i in range(50)] + [[b"a", b"1"]]
        assert named_connections(tls_redis) == 1  # all of it on the one lane, none pooled
        assert tls_redis.client().get("k7") == b"7"
    finally:
        await hot.aclose()
        await client.aclose()


async def test_a_certificate_of_another_authority_is_refused_quickly(
    tls_redis: TlsRedisServer, tmp_path: Path
) -> None:
    other = make_authority(tmp_path / "other", name="someone else")
    url = tls_redis.url.replace(str(tls_redis.authority.ca), str(other.ca))  # type: ignore[union-attr]
    client, hot = open_connections(url)
    try:
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="TLS with Redis failed"):
            await hot.get("k")
        assert time.monotonic() - started < PROMPTLY
    finally:
        await hot.aclose()  # type: ignore[attr-defined]
        await client.aclose()
    # the operator's own choice, as with redis-py: no certificate check
    client, hot = open_connections(url.split("?")[0] + "?ssl_cert_reqs=none")
    try:
        assert await hot.set("k", "v") == b"OK"
    finally:
        await hot.aclose()  # type: ignore[attr-defined]
        await client.aclose()


async def test_tls_redis_away_fails_fast_and_the_lane_reconnects(
    tls_redis: TlsRedisServer,
) -> None:
    client, hot = open_connections(tls_redis.url)
    assert isinstance(hot, PipelinedConnection)
    try:
        await hot.set("before", "1")
        tls_redis.stop()
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await hot.get("before")
        assert time.monotonic() - started < PROMPTLY
        tls_redis.start()
        assert await hot.set("after", "2") == b"OK"
        assert tls_redis.client().get("after") == b"2"
    finally:
        await hot.aclose()
        await client.aclose()


def test_a_scan_reaches_the_waiting_browser_over_tls(
    start: Callable[..., Site], tls_redis: TlsRedisServer
) -> None:
    site = start(WXPUSH_REDIS_URL=tls_redis.url)
    created = site.new_scene()

    async def watch() -> list[dict[str, Any]]:
        async with connect(created["ws_url"]) as ws:
            first = json.loads(await ws.recv())
            await asyncio.to_thread(site.scan, created, NEW_OPENID, follow=True)
            return [first, json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))]

    frames = asyncio.run(watch())
    assert [f["status"] for f in frames] == ["LOOP", "NOT_REG"]
    assert site.poll(created["scene"])["status"] == "NOT_REG"
    assert 1 <= named_connections(tls_redis) <= 3  # the pool, the lane and the pub/sub
