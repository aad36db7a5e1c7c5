"""Redis Cluster (SPEC §17): wxpush on a real three-master cluster with a replica each.

The login's flows run here as they do on one Redis (the same tests, imported: scenes and
their scans, SMS limits, binds, refresh tokens, OIDC codes, the redirect doors' states, an
erasure), and then what only a cluster has: two servers, a scan on one and the browser on the
other; a master killed while browsers wait, its replica promoted, no frame lost and no token
handed out twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests import fakewechat, test_doors, test_login, test_oidc, test_people_links, test_push
from tests.cluster import FAILOVER, RedisCluster, redis_cluster
from tests.sentinel import ask
from tests.test_cli import wxpush
from tests.test_login import NEW_OPENID, Site
from tests.test_people_links import log_in
from tests.test_sentinel import deliver  # WeChat's callback, delivered again while not 200
from tests.util import TIMEOUT

fake_wechat = fakewechat.fake_wechat
sms_inbox, start, site = test_login.sms_inbox, test_login.start, test_login.site
oidc, doors = test_oidc.oidc, test_doors.doors
cluster = test_push.cluster  # real `wxpush serve` processes
__all__ = ["redis_cluster"]

# the flows, as on one Redis
test_a_new_person_binds_a_phone_and_logs_in = test_login.test_a_new_person_binds_a_phone_and_logs_in
test_a_known_person_logs_in_by_a_scan_alone = test_login.test_a_known_person_logs_in_by_a_scan_alone
test_fifty_concurrent_polls_of_a_reg_scene_give_tokens_once = (
    test_login.test_fifty_concurrent_polls_of_a_reg_scene_give_tokens_once
)
test_a_second_sms_within_60_s_is_rate_limited = (
    test_login.test_a_second_sms_within_60_s_is_rate_limited
)
test_refresh_rotation_reuse_detection_and_logout = (
    test_login.test_refresh_rotation_reuse_detection_and_logout
)
test_scene_creation_is_rate_limited_per_ip = test_login.test_scene_creation_is_rate_limited_per_ip
test_a_login_gives_the_client_a_code_and_the_code_its_tokens = (
    test_oidc.test_a_login_gives_the_client_a_code_and_the_code_its_tokens
)
test_rp_initiated_logout_ends_the_login_at_that_client = (
    test_oidc.test_rp_initiated_logout_ends_the_login_at_that_client
)
test_a_state_logs_in_once = test_doors.test_a_state_logs_in_once
test_a_declined_login_leaves_the_scene_waiting = (
    test_doors.test_a_declined_login_leaves_the_scene_waiting
)
test_delete_me_erases_the_person_and_ends_their_tokens = (
    test_people_links.test_delete_me_erases_the_person_and_ends_their_tokens
)
# two `wxpush serve` processes: 200 sockets opened as their scene is scanned on the other
test_no_change_is_lost_between_subscribe_and_read = (
    test_push.test_no_change_is_lost_between_subscribe_and_read
)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One cluster for the flows (none of them kills a node)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A cluster of the test's own if it asks for ``redis_cluster`` (to kill a master), else
    the module's, emptied."""
    if "redis_cluster" in request.fixturenames:
        return str(request.getfixturevalue("redis_cluster").seed_url)
    cluster: RedisCluster = request.getfixturevalue("shared_cluster")
    for port in cluster.masters():
        ask(port, "FLUSHALL")
    return cluster.seed_url


@pytest.fixture
def redis_env() -> dict[str, str]:
    return {"WXPUSH_REDIS_CLUSTER": "1"}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite: what the cluster changes is all in Redis."""
    return f"sqlite+aiosqlite:///{tmp_path / 'people.db'}"


def slot_owner(cluster: RedisCluster, scene_id: str) -> int:
    return cluster.master_of("wxpush:scene:{" + scene_id + "}")


def test_a_scan_on_one_server_logs_in_the_browser_on_the_other(
    start: Callable[..., Site], shared_cluster: RedisCluster, tmp_path: Path
) -> None:
    one = start()
    other = start()
    for server in (one, other):
        ready = server.client.get("/readyz").json()
        assert ready["redis_mode"] == "cluster" and ready["redis"] == "ok", ready
    checked = wxpush("check", cwd=tmp_path, **one.env)
    assert "redis: ok (cluster, reachable; 3 masters answer: " in checked.stdout, checked.stdout
    log_in(one, NEW_OPENID)  # bound: the next scan logs them in
    scenes = [one.new_scene() for _ in range(6)]
    owners = {slot_owner(shared_cluster, created["scene"]) for created in scenes}

    async def run() -> list[list[dict[str, Any]]]:
        # the browsers wait at the other server, on its shards' connections
        urls = [created["ws_url"].replace(one.client.base_url.netloc.decode(),
                                          other.client.base_url.netloc.decode())
                for created in scenes]  # fmt: skip
        sockets = [await connect(url) for url in urls]
        try:
            frames = [[json.loads(await ws.recv())] for ws in sockets]
            for created in scenes:
                one.scan(created, NEW_OPENID)  # WeChat calls the first server
            for ws, seen in zip(sockets, frames, strict=True):
                while seen[-1]["status"] == "LOOP":
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            return frames
        finally:
            for ws in sockets:
                await ws.close()

    frames = asyncio.run(run())
    assert len(owners) > 1  # the scenes are on several shards
    for seen in frames:
        assert [f["status"] for f in seen] == ["LOOP", "REG"], seen
        assert "access_token" in seen[-1]
    refreshed = other.client.post(
        "/api/v1/token/refresh", json={"refresh_token": frames[0][-1]["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text


def test_a_retried_scan_on_a_cluster_changes_the_scene_once(site: Site) -> None:
    created = site.new_scene()
    first = site.scan(created, "oStranger0000000000000000001")
    again = site.scan(created, "oStranger0000000000000000001")  # WeChat's retry
    assert again == first
    assert site.poll(created["scene"])["status"] == "NOT_REG"


def test_a_master_killed_while_browsers_wait_loses_no_login(
    start: Callable[..., Site], redis_cluster: RedisCluster
) -> None:
    one, other = start(), start()
    log_in(one, NEW_OPENID)
    scenes = [one.new_scene() for _ in range(6)]
    victim = slot_owner(redis_cluster, scenes[0]["scene"])
    while len(doomed := [c for c in scenes if slot_owner(redis_cluster, c["scene"]) == victim]) < 2:
        scenes.append(one.new_scene())  # two on the master to kill: one scanned in the gap
    assert len(doomed) < len(scenes)  # some wait on the masters that live on
    strangers = [f"oStranger{i:019d}" for i in range(len(scenes))]
    servers = [(one, other)[n % 2] for n in range(len(scenes))]

    async def run() -> list[list[dict[str, Any]]]:
        urls = [created["ws_url"].replace(one.client.base_url.netloc.decode(),
                                          server.client.base_url.netloc.decode())
                for created, server in zip(scenes, servers, strict=True)]  # fmt: skip
        sockets = [await connect(url) for url in urls]
        try:
            frames = [[json.loads(await ws.recv())] for ws in sockets]
            redis_cluster.replicate(victim)  # its replica has it all
            redis_cluster.kill(victim)
            # a scan of a scene on the dead master, before its replica stands: 503s, then it
            # lands once promoted
            during = await asyncio.to_thread(deliver, one, doomed[-1], strangers[-1])
            assert during[-1] == 200, during
            await asyncio.to_thread(redis_cluster.wait_failover, victim)
            for created, openid in zip(scenes, [NEW_OPENID, *strangers[:-1]], strict=True):
                if created is not doomed[-1]:
                    assert await asyncio.to_thread(deliver, one, created, openid) == [200]
            for ws, seen in zip(sockets, frames, strict=True):
                while seen[-1]["status"] == "LOOP":
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), FAILOVER)))
            for ws, seen in zip(sockets, frames, strict=True):  # nothing more comes
                with pytest.raises((TimeoutError, ConnectionClosed)):
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            return frames
        finally:
            for ws in sockets:
                await ws.close()

    frames = asyncio.run(run())
    last = [seen[-1] for seen in frames]
    assert last[0]["status"] == "REG" and "access_token" in last[0]
    assert [f["status"] for f in last[1:]] == ["NOT_REG"] * (len(scenes) - 1)
    tokens = [f for seen in frames for f in seen if "access_token" in f]
    assert len(tokens) == 1  # one login, its tokens once
    me = other.client.get(
        "/api/v1/me", headers={"Authorization": "Bearer " + tokens[0]["access_token"]}
    )
    assert me.status_code == 200, me.text
    assert other.client.get("/readyz").status_code == 200


def test_a_process_holds_one_pubsub_connection_per_master_it_waits_on(
    cluster: test_push.Cluster, shared_cluster: RedisCluster
) -> None:
    server = cluster.start_server(WXPUSH_SOCKETS_PER_IP="5000")
    assert server.proc is not None
    name = f"wxpush-{server.proc.pid}"

    def connections() -> dict[int, list[dict[str, Any]]]:
        """The server's connections to each master, as its CLIENT LIST shows them."""
        return {port: [c for c in ask_list(port) if c["name"] == name]
                for port in shared_cluster.masters()}  # fmt: skip

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT * 4) as client:
            scenes = [await cluster.new_scene(server, client) for _ in range(300)]
            sockets = [await connect(f"{server.ws_url}/ws/v1/scenes/{s['scene']}") for s in scenes]
            assert [json.loads(await ws.recv())["status"] for ws in sockets] == ["LOOP"] * 300
            held = connections()
            for port, mine in held.items():
                subscribed = [c for c in mine if int(c.get("ssub", 0)) > 0]
                assert len(subscribed) == 1, (port, mine)  # one pub/sub connection a shard
                # its lane, its pub/sub, and the pool's (WXPUSH_REDIS_CONNECTIONS - 2, two more
                # for a moment after an error)
                assert len(mine) <= 5, (port, mine)
            assert sum(int(c.get("ssub", 0)) for m in held.values() for c in m) == 300
            await asyncio.gather(*(cluster.scan(server, client, s) for s in scenes[::10]))
            for ws in sockets[::10]:
                assert json.loads(await ws.recv())["status"] == "NOT_REG"
            await asyncio.gather(*(ws.close() for ws in sockets))

        async def closed() -> bool:
            return all(int(c.get("ssub", 0)) == 0 for m in connections().values() for c in m)

        async with asyncio.timeout(TIMEOUT):  # the shards let go of their connections
            while not await closed():
                await asyncio.sleep(0.05)

    asyncio.run(go())


def ask_list(port: int) -> list[dict[str, Any]]:
    """CLIENT LIST of the node on ``port``."""
    with redis.Redis(port=port, socket_timeout=TIMEOUT) as client:
        return list(client.client_list())


def test_a_resharding_while_a_browser_waits_misses_nothing(
    start: Callable[..., Site], shared_cluster: RedisCluster
) -> None:
    """The waited scene's slot moves to another master (its keys with it): the server's
    shard there hears the server end its subscription, re-reads the map, subscribes at the
    new master, and the scan that comes next (at another server, on the moved slot) reaches
    the browser."""
    site, scanner = start(), start()
    created = site.new_scene()
    key = "wxpush:scene:{" + created["scene"] + "}"
    source = shared_cluster.master_of(key)
    target = next(p for p in shared_cluster.masters() if p != source)

    async def run() -> list[dict[str, Any]]:
        async with connect(created["ws_url"]) as ws:
            seen = [json.loads(await ws.recv())]
            await asyncio.to_thread(shared_cluster.move_slot, key, target)
            stranger = "oStranger0000000000000000009"
            assert await asyncio.to_thread(deliver, scanner, created, stranger) == [200]
            while seen[-1]["status"] == "LOOP":
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            return seen

    seen = asyncio.run(run())
    assert shared_cluster.master_of(key) == target
    assert seen[-1]["status"] == "NOT_REG", seen
    assert site.poll(created["scene"])["status"] == "NOT_REG"  # the lane follows the MOVED
