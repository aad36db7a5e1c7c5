"""Redis Sentinel (SPEC §17): the master found through the sentinels and followed across a
failover. A real set (one master, one replica, three sentinels) and wxpush on it; the master
is killed while browsers wait, and every waiter still gets its frame, no token twice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests import fakewechat, test_push
from tests.sentinel import SentinelSet, ask, sentinel_set
from tests.test_cli import wxpush
from tests.test_login import NEW_OPENID, Site, database_url, sms_inbox, start
from tests.test_people_links import log_in
from tests.util import TIMEOUT, wait_for
from wxpush.infra.pipeline import PipelinedConnection
from wxpush.infra.redis_client import RedisTarget, open_connections

__all__ = ["database_url", "sentinel_set", "sms_inbox", "start"]
fake_wechat = fakewechat.fake_wechat
cluster = test_push.cluster  # real `wxpush serve` processes
# two of them on the set: 200 sockets opened as their scene is scanned on the other
test_no_change_is_lost_between_subscribe_and_read = (
    test_push.test_no_change_is_lost_between_subscribe_and_read
)

FAILOVER = TIMEOUT * 4  # down after 0.5 s, then the sentinels' vote and the promotion


@pytest.fixture
def redis_env(sentinel_set: SentinelSet) -> dict[str, str]:
    return {"WXPUSH_REDIS_URL": "", "WXPUSH_REDIS_SENTINELS": sentinel_set.sentinels}


def deliver(site: Site, created: dict[str, Any], openid: str) -> list[int]:
    """WeChat delivers a scan: the same signed message again while the answer is not 200
    (WeChat retries a failed callback), for at most :data:`FAILOVER` s; the statuses seen."""
    params, body = site.scan_event(site.fake.scene_of(created["qr_url"]), openid)
    deadline, seen = time.monotonic() + FAILOVER, []
    while True:
        try:
            answer = site.client.post("/wechat/default/callback", params=params, content=body)
            seen.append(answer.status_code)
            if answer.status_code == 200:
                return seen
            assert answer.status_code == 503, answer.text  # Redis away: a 503, never a 500
        except httpx.TimeoutException:
            seen.append(0)
        assert time.monotonic() < deadline, "the callback never succeeded after the failover"
        time.sleep(0.2)


async def test_the_hot_path_follows_the_master(sentinel_set: SentinelSet) -> None:
    target = RedisTarget(sentinels=tuple(("127.0.0.1", p) for p in sentinel_set.sentinel_ports))
    client, hot = open_connections(target)
    assert isinstance(hot, PipelinedConnection)
    try:
        assert await hot.set("k", "1") == b"OK"
        old = sentinel_set.master_port()
        assert ask(old, "GET", "k") == b"1"  # the lane writes to the master
        sentinel_set.replicate(old)
        sentinel_set.kill(old)
        await asyncio.to_thread(wait_for, lambda: sentinel_set.master_port() != old, FAILOVER)
        new = sentinel_set.master_port()

        async def written() -> bool:
            try:
                return bool(await hot.set("k", "2") == b"OK")
            except Exception:
                return False

        deadline = time.monotonic() + FAILOVER
        while not await written():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert ask(new, "GET", "k") == b"2"
        assert await client.get("k") == b"2"  # the pool follows too
    finally:
        await hot.aclose()
        await client.aclose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failover_while_browsers_wait_loses_no_login(
    start: Callable[..., Site], sentinel_set: SentinelSet, tmp_path: Path
) -> None:
    site = start(WXPUSH_REDIS_URL="", WXPUSH_REDIS_SENTINELS=sentinel_set.sentinels)
    ready = site.client.get("/readyz").json()
    assert ready["redis_mode"] == "sentinel" and ready["redis"] == "ok"
    checked = wxpush("check", cwd=tmp_path, **site.env)
    master = f"master of 'mymaster' at 127.0.0.1:{sentinel_set.master_port()}"
    assert f"redis: ok (sentinel, reachable; {master})" in checked.stdout, checked.stdout
    log_in(site, NEW_OPENID)  # a person bound beforehand: their next scan logs them in
    scenes = [site.new_scene() for _ in range(4)]
    strangers = [f"oStranger{i:019d}" for i in range(3)]

    other = start(WXPUSH_REDIS_URL="", WXPUSH_REDIS_SENTINELS=sentinel_set.sentinels)
    here, there = (s.client.base_url.netloc.decode() for s in (site, other))
    # half the browsers wait at another server: its frames cross processes
    urls = [c["ws_url"].replace(here, there) if n % 2 else c["ws_url"]
            for n, c in enumerate(scenes)]  # fmt: skip

    async def run() -> list[list[dict[str, Any]]]:
        sockets = [await connect(url) for url in urls]
        try:
            frames = [[json.loads(await ws.recv())] for ws in sockets]
            old = sentinel_set.master_port()
            sentinel_set.replicate(old)  # the replica has it all
            sentinel_set.kill(old)
            # a scan in the gap, before any replica is promoted: 503s, then it lands
            during = await asyncio.to_thread(deliver, site, scenes[-1], strangers[-1])
            assert during[0] == 503 and during[-1] == 200, during
            assert sentinel_set.master_port() != old
            for created, openid in zip(scenes[:-1], [NEW_OPENID, *strangers[:-1]], strict=True):
                assert await asyncio.to_thread(deliver, site, created, openid) == [200]
            for ws, seen in zip(sockets, frames, strict=True):
                while seen[-1]["status"] == "LOOP":
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), FAILOVER)))
            for ws, seen in zip(sockets, frames, strict=True):  # nothing more comes
                with pytest.raises((TimeoutError, ConnectionClosed)):  # closed, or silent
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            return frames
        finally:
            for ws in sockets:
                await ws.close()

    frames = asyncio.run(run())
    last = [seen[-1] for seen in frames]
    assert last[0]["status"] == "REG" and "access_token" in last[0]
    assert [f["status"] for f in last[1:]] == ["NOT_REG"] * 3
    tokens = [f for seen in frames for f in seen if "access_token" in f]
    assert len(tokens) == 1  # one login, its tokens once
    assert "access_token" not in site.poll(scenes[0]["scene"])  # claimed already
    me = site.client.get(
        "/api/v1/me", headers={"Authorization": "Bearer " + tokens[0]["access_token"]}
    )
    assert me.status_code == 200, me.text
