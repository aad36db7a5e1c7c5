"""A hung, not dead, Redis or PostgreSQL, against a real ``wxpush serve``.

A stopped process (SIGSTOP) is the hard case of an outage: connects and writes succeed and
no answer ever comes, so only the server's own timeouts end a wait. Every route must still
answer its 503 within about a second (asserted as :data:`tests.util.PROMPTLY`, room for a
loaded machine),
a scan callback well within WeChat's 5 s, and once the process goes on (SIGCONT) the same
requests succeed again, with no restart of the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests import fakewechat, wire
from tests.conftest import RedisServer
from tests.pg import PostgresServer
from tests.procs import ServerProcess
from tests.test_login import AES_KEY, NEW_OPENID, Site, SmsInbox, assert_error
from tests.test_login import sms_inbox as sms_inbox
from tests.util import PROMPTLY, TIMEOUT

fake_wechat = fakewechat.fake_wechat
WECHAT_WAIT = 4.5  # WeChat gives up at 5 s, its network included: WeChat's bound, not scaled
OTHER_OPENID = "oOtherPerson0000000000000002"
OTHER_PHONE = "13900139000"


@dataclass(frozen=True)
class Call:
    """One request, sendable by a sync or an async client."""

    name: str
    method: str
    url: str
    options: dict[str, Any]

    def send(self, client: httpx.Client) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        answer = client.request(self.method, self.url, **self.options)
        return answer, time.monotonic() - started

    async def send_async(self, client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        answer = await client.request(self.method, self.url, **self.options)
        return answer, time.monotonic() - started


@pytest.fixture
def start(
    redis_url: str, tmp_path: Path, fake_wechat: fakewechat.FakeWeChat, sms_inbox: SmsInbox
) -> Iterator[Callable[[str], Site]]:
    """``wxpush serve`` on the given database, as a :class:`Site`."""
    servers: list[ServerProcess] = []
    clients: list[httpx.Client] = []

    def run(database_url: str) -> Site:
        env = {
            "WXPUSH_APPID": fake_wechat.appid, "WXPUSH_APPSECRET": fake_wechat.secret,
            "WXPUSH_TOKEN": wire.TOKEN, "WXPUSH_AES_KEY": AES_KEY, "WXPUSH_REDIS_URL": redis_url,
            "WXPUSH_DATABASE_URL": database_url, "WXPUSH_JWT_KEY_FILE": str(tmp_path / "k.pem"),
            "WXPUSH_WECHAT_API_BASE": fake_wechat.url, "WXPUSH_SMS_PROVIDER": "webhook",
            "WXPUSH_SMS_WEBHOOK_URL": sms_inbox.url, "WXPUSH_SMS_INTERVAL_SECONDS": "1",
            "WXPUSH_SCENES_PER_MINUTE_PER_IP": "100000",
        }  # fmt: skip
        servers.append(ServerProcess(env, tmp_path).start())
        clients.append(httpx.Client(base_url=servers[-1].url, timeout=TIMEOUT * 2))
        return Site(clients[-1], fake_wechat, sms_inbox)

    yield run
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def scan_call(site: Site, scene: dict[str, Any], openid: str) -> Call:
    params, body = site.scan_event(site.fake.scene_of(scene["qr_url"]), openid)
    return Call("scan callback", "POST", "/wechat/default/callback",
                {"params": params, "content": body})  # fmt: skip


def log_in(site: Site) -> dict[str, Any]:
    """A person known from now on (NEW_OPENID with PHONE), and their tokens."""
    created = site.new_scene()
    site.scan(created, NEW_OPENID)
    return site.bind(created["scene"])


def not_reg_scene(site: Site) -> str:
    """A scene a new person (OTHER_OPENID) has scanned: it waits for a phone."""
    created = site.new_scene()
    site.scan(created, OTHER_OPENID)
    return str(created["scene"])


def all_within(answers: list[tuple[httpx.Response, float]], calls: list[Call], code: str) -> None:
    for call, (answer, took) in zip(calls, answers, strict=True):
        assert_error(answer, 503, code)
        assert took < PROMPTLY, f"{call.name} took {took:.2f} s"


def at_once(site: Site, calls: list[Call]) -> list[tuple[httpx.Response, float]]:
    async def gather() -> list[tuple[httpx.Response, float]]:
        base = str(site.client.base_url)
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT * 2) as client:
            return list(await asyncio.gather(*(c.send_async(client) for c in calls)))

    return asyncio.run(gather())


# -- Redis ----------------------------------------------------------------------------------


def redis_calls(
    site: Site, tokens: dict[str, Any], waiting: str, loop: dict[str, Any]
) -> list[Call]:
    """Every route that needs Redis; ``waiting`` is a NOT_REG scene, ``loop`` a LOOP one."""
    scene = f"/api/v1/scenes/{waiting}"
    refresh = {"json": {"refresh_token": tokens["refresh_token"]}}
    return [
        Call("create", "POST", "/api/v1/scenes", {"json": {}}),
        Call("read", "GET", scene, {}),
        Call("qr", "GET", scene + "/qr.svg", {}),
        Call("wait", "GET", scene + "/wait", {"params": {"timeout": "5"}}),
        Call("sms", "POST", scene + "/sms", {"json": {"phone": OTHER_PHONE}}),
        Call("bind", "POST", scene + "/bind", {"json": {"phone": OTHER_PHONE, "code": "123456"}}),
        Call("refresh", "POST", "/api/v1/token/refresh", refresh),
        Call("logout", "POST", "/api/v1/logout", refresh),
        Call("readyz", "GET", "/readyz", {}),
        scan_call(site, loop, NEW_OPENID),
    ]


def test_a_hung_redis_gives_every_route_a_503_within_a_second_and_recovers(
    start: Callable[[str], Site], tmp_path: Path, redis_server: RedisServer
) -> None:
    site = start(f"sqlite+aiosqlite:///{tmp_path / 'people.db'}")
    tokens = log_in(site)
    waiting = not_reg_scene(site)
    one_by_one = redis_calls(site, tokens, waiting, site.new_scene())
    all_at_once = redis_calls(site, tokens, waiting, site.new_scene())
    with redis_server.frozen():
        # One after the other: each finds the connections the one before it timed out on.
        all_within([c.send(site.client) for c in one_by_one], one_by_one, "redis_unavailable")
    with redis_server.frozen():
        # All at once: more callers than connections, so most of them queue for one.
        all_within(at_once(site, all_at_once), all_at_once, "redis_unavailable")
    # The same server goes on, on the same Redis.
    assert site.client.get("/readyz").status_code == 200
    assert site.poll(waiting) == {"status": "NOT_REG", "code": 4}
    assert site.bind(waiting, OTHER_PHONE)["status"] == "REG"
    body = {"refresh_token": tokens["refresh_token"]}
    refreshed = site.client.post("/api/v1/token/refresh", json=body)
    assert refreshed.status_code == 200, refreshed.text
    body = {"refresh_token": refreshed.json()["refresh_token"]}
    assert site.client.post("/api/v1/logout", json=body).status_code == 204
    assert_a_scan_reaches_a_waiting_browser(site)


def assert_a_scan_reaches_a_waiting_browser(site: Site) -> None:
    """Through the hub's pub/sub: a socket that is already waiting gets the scan's frame."""
    created = site.new_scene()

    async def go() -> None:
        ws_url = str(site.client.base_url).replace("http", "ws", 1)
        async with connect(f"{ws_url}/ws/v1/scenes/{created['scene']}") as ws:
            assert (await frame(ws))["status"] == "LOOP"
            scan = scan_call(site, created, NEW_OPENID)
            answer, _ = await asyncio.to_thread(scan.send, site.client)
            assert answer.status_code == 200, answer.text
            pushed = await frame(ws)
            assert pushed["status"] == "REG" and pushed["access_token"]

    asyncio.run(go())


async def frame(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))


# -- PostgreSQL -----------------------------------------------------------------------------


def test_a_hung_postgres_gives_a_quick_503_and_the_scan_is_retried_after(
    start: Callable[[str], Site], postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    """The scan of a known person needs the database (who is this openid?). Hung, it gets a
    503 well within WeChat's deadline, having changed nothing, so WeChat's retry of the same
    event logs the person in once the database is back. (``success`` would tell WeChat the
    event was handled: the scan would be lost and the browser would wait on.)"""
    site = start(postgres_db_url)
    tokens = log_in(site)
    waiting = not_reg_scene(site)
    scanned = site.new_scene()
    scan = scan_call(site, scanned, NEW_OPENID)
    me = Call("me", "GET", "/api/v1/me",
              {"headers": {"Authorization": f"Bearer {tokens['access_token']}"}})  # fmt: skip
    ready = Call("readyz", "GET", "/readyz", {})
    with postgres_server.frozen():
        answer, took = scan.send(site.client)  # the first to meet the hung database
        assert took < WECHAT_WAIT
        rest = [me, bind_call(site, waiting), ready]
        all_within([(answer, took)] + [c.send(site.client) for c in rest], [scan, *rest],
                   "database_unavailable")  # fmt: skip
        calls = [scan, me, bind_call(site, waiting), ready]
        all_within(at_once(site, calls), calls, "database_unavailable")
        # What needs only Redis goes on meanwhile.
        assert site.poll(waiting) == {"status": "NOT_REG", "code": 4}
    # WeChat's retry of the very same event, once the database answers again.
    answer, _ = scan.send(site.client)
    assert answer.status_code == 200, answer.text
    assert site.poll(scanned["scene"])["status"] == "REG"
    assert me.send(site.client)[0].status_code == 200
    assert site.bind(waiting, OTHER_PHONE)["status"] == "REG"
    assert ready.send(site.client)[0].status_code == 200


def bind_call(site: Site, scene: str) -> Call:
    """A bind with a code just sent (sending needs only Redis)."""
    body = {"phone": OTHER_PHONE, "code": site.send_code(scene, OTHER_PHONE)}
    return Call("bind", "POST", f"/api/v1/scenes/{scene}/bind", {"json": body})
