"""The WeChat API client against the fake WeChat over HTTP and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests import fakewechat
from tests.conftest import TIMEOUT, free_port
from tests.fakewechat import FakeWeChat
from tests.util import PROMPTLY
from wxpush.clients.wechat import QRCode, WeChatAPI
from wxpush.config.accounts import Account
from wxpush.errors import BadGateway, Unavailable, WeChatAPIError
from wxpush.infra.redis_client import open_connections, open_redis

fake_wechat = fakewechat.fake_wechat  # the fixture, shared with later tests
ROOT = Path(__file__).resolve().parents[1]
QR = "/cgi-bin/qrcode/create"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        yield client


class Clock:
    """A clock the test moves by hand, shared by the client and the fake."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_api(
    fake: FakeWeChat,
    http: httpx.AsyncClient,
    redis: Redis,
    account: Account | None = None,
    **kwargs: Any,
) -> WeChatAPI:
    return WeChatAPI(account or fake.account(), http=http, redis=redis, base_url=fake.url, **kwargs)


# --- one fetch for everyone -------------------------------------------------------------------


def test_two_processes_make_one_fetch(fake_wechat: FakeWeChat, redis_url: str, tmp_path: Path):
    go = tmp_path / "go"
    command = [sys.executable, "-m", "tests._token_worker", fake_wechat.url, redis_url, str(go)]
    workers = [
        subprocess.Popen([*command, "20"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        go.touch()
        outputs = [worker.communicate(timeout=TIMEOUT * 4)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [worker.returncode for worker in workers] == [0, 0]
    tickets = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert [len(t) for t in tickets] == [20, 20]
    assert len(set(tickets[0]) | set(tickets[1])) == 40
    assert fake_wechat.token_fetches == 1
    assert fake_wechat.calls[QR] == 40


async def test_concurrent_calls_in_two_clients_make_one_fetch(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    apis = [make_api(fake_wechat, http, redis) for _ in range(2)]
    qrs = await asyncio.gather(
        *(api.create_qrcode(f"login:{i}", 300) for api in apis for i in range(20))
    )
    assert len({qr.ticket for qr in qrs}) == 40
    assert fake_wechat.token_fetches == 1
    assert await redis.exists("wxpush:wechat:token-lock:" + fake_wechat.appid) == 0
    assert 7100 < await redis.ttl("wxpush:wechat:token:" + fake_wechat.appid) <= 7200


async def test_qrcode_request_and_answer(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    qr = await make_api(fake_wechat, http, redis).create_qrcode("login:abc", 300)
    assert isinstance(qr, QRCode)
    assert qr.url.startswith("http://weixin.qq.com/q/")
    assert qr.expire_seconds == 300
    assert fake_wechat.scene_of(qr.ticket) == "login:abc"
    image = await http.get(fake_wechat.url + "/cgi-bin/showqrcode", params={"ticket": qr.ticket})
    assert image.content.startswith(b"\x89PNG")
    stable = next(r for r in fake_wechat.requests if r.path == "/cgi-bin/stable_token")
    assert stable.body == {
        "grant_type": "client_credential",
        "appid": fake_wechat.appid,
        "secret": fake_wechat.secret,
        "force_refresh": False,
    }
    create = next(r for r in fake_wechat.requests if r.path == QR)
    assert create.body == {
        "expire_seconds": 300,
        "action_name": "QR_STR_SCENE",
        "action_info": {"scene": {"scene_str": "login:abc"}},
    }


# --- invalid tokens ---------------------------------------------------------------------------


async def test_invalid_token_refreshes_once_and_retries(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    api = make_api(fake_wechat, http, redis)
    old = await api.access_token()
    fake_wechat.invalidate()
    await api.create_qrcode("login:1", 60)
    assert fake_wechat.token_fetches == 2
    assert fake_wechat.calls[QR] == 2
    assert await api.access_token() != old


async def test_stable_token_giving_the_bad_token_back_is_forced(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    fake_wechat.sticky_stable = True
    api = make_api(fake_wechat, http, redis)
    await api.access_token()
    fake_wechat.invalidate()
    await api.create_qrcode("login:1", 60)
    assert fake_wechat.token_fetches == 3
    assert fake_wechat.forced_fetches == 1
    assert fake_wechat.calls[QR] == 2


async def test_persistent_invalid_token_fails_after_one_retry(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    fake_wechat.fail(QR, errcode=40001, times=None)
    with pytest.raises(WeChatAPIError) as caught:
        await make_api(fake_wechat, http, redis).create_qrcode("login:1", 60)
    assert caught.value.errcode == 40001
    assert fake_wechat.calls[QR] == 2


async def test_invalid_token_of_one_client_is_renewed_once_for_all(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    apis = [make_api(fake_wechat, http, redis) for _ in range(3)]
    await apis[0].access_token()
    fake_wechat.invalidate()
    await asyncio.gather(*(api.create_qrcode(f"login:{i}", 60) for i, api in enumerate(apis)))
    assert fake_wechat.token_fetches == 2


# --- where the token comes from ---------------------------------------------------------------


async def test_access_token_url_reads_the_owner_and_never_fetches(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    account = fake_wechat.account(secret=None, access_token_url=fake_wechat.owner_url)
    api = make_api(fake_wechat, http, redis, account)
    await api.create_qrcode("login:1", 60)
    await api.create_qrcode("login:2", 60)
    assert fake_wechat.owner_reads == 1
    fake_wechat.invalidate()  # the owner renewed its token: we re-read it once and retry
    await api.create_qrcode("login:3", 60)
    assert fake_wechat.owner_reads == 2
    assert fake_wechat.calls[QR] == 4
    assert fake_wechat.token_fetches == 0


@pytest.mark.parametrize("answer", [{"status": 404}, {"body": "<html>no such page</html>"}])
async def test_stable_token_unavailable_falls_back_to_token(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis, answer: dict[str, Any]
):
    fake_wechat.fail("/cgi-bin/stable_token", **answer)
    api = make_api(fake_wechat, http, redis)
    await api.create_qrcode("login:1", 60)
    assert (fake_wechat.stable_fetches, fake_wechat.plain_fetches) == (1, 1)
    await redis.flushdb()
    await api.access_token()  # the process now goes straight to /cgi-bin/token
    assert (fake_wechat.stable_fetches, fake_wechat.plain_fetches) == (1, 2)


async def test_wrong_secret_is_a_typed_error_without_fallback(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    api = make_api(fake_wechat, http, redis, fake_wechat.account(secret="wrong"))
    with pytest.raises(WeChatAPIError, match="appsecret") as caught:
        await api.access_token()
    assert caught.value.errcode == 40125
    assert fake_wechat.plain_fetches == 0


# --- errors in words --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errcode", "words"),
    [
        (40164, "IP is not on the account's IP whitelist"),
        (45009, "daily API quota reached"),
        (48001, "not a verified service account"),
        (-1, "busy"),
        (61234, "61234"),
    ],
)
async def test_errcodes_become_sentences(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis, errcode: int, words: str
):
    fake_wechat.fail(errcode=errcode, times=None)
    with pytest.raises(WeChatAPIError) as caught:
        await make_api(fake_wechat, http, redis).create_qrcode("login:1", 60)
    assert caught.value.errcode == errcode
    assert words in caught.value.message
    assert caught.value.status == 502


async def test_quota_on_the_call_itself(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    fake_wechat.fail(QR, errcode=45009)
    with pytest.raises(WeChatAPIError, match="daily API quota reached"):
        await make_api(fake_wechat, http, redis).create_qrcode("login:1", 60)
    assert fake_wechat.calls[QR] == 1


# --- refresh ahead of expiry ------------------------------------------------------------------


async def test_token_is_refreshed_ahead_of_expiry(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    clock = Clock()
    fake_wechat.clock = clock
    api = make_api(fake_wechat, http, redis, clock=clock)
    first = await api.access_token()
    clock.now += 7000  # 200 s left: one process renews, the others keep the valid one
    lock = "wxpush:wechat:token-lock:" + fake_wechat.appid
    await redis.set(lock, "another process", px=60_000)
    assert await api.access_token() == first
    assert fake_wechat.token_fetches == 1
    await redis.delete(lock)
    second = await api.access_token()
    assert second != first
    assert fake_wechat.token_fetches == 2
    assert await api.access_token() == second
    assert fake_wechat.token_fetches == 2


async def test_expired_token_in_redis_is_not_used(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis
):
    clock = Clock()
    fake_wechat.clock = clock
    api = make_api(fake_wechat, http, redis, clock=clock)
    first = await api.access_token()
    clock.now += 7300
    assert await api.access_token() != first
    assert fake_wechat.token_fetches == 2


# --- outages ----------------------------------------------------------------------------------


async def test_wechat_unreachable_is_bad_gateway(http: httpx.AsyncClient, redis: Redis):
    account = Account(name="default", appid="wxclosed", secret="s", token="faketoken")
    api = WeChatAPI(account, http=http, redis=redis, base_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BadGateway, match="WeChat cannot be reached") as caught:
        await api.create_qrcode("login:1", 60)
    assert time.monotonic() - started < PROMPTLY
    assert (type(caught.value), caught.value.code) == (BadGateway, "bad_gateway")


async def test_redis_down_is_unavailable(fake_wechat: FakeWeChat, http: httpx.AsyncClient):
    down = open_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await make_api(fake_wechat, http, down).create_qrcode("login:1", 60)
        assert time.monotonic() - started < PROMPTLY
    finally:
        await down.aclose()
    assert (type(caught.value), caught.value.status) == (Unavailable, 503)
    assert fake_wechat.token_fetches == 0


async def test_redis_down_is_the_same_error_as_everywhere(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient
) -> None:
    down = open_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(Unavailable) as caught:
            await make_api(fake_wechat, http, down).create_qrcode("login:1", 60)
    finally:
        await down.aclose()
    assert caught.value.code == "redis_unavailable"


# --- menu and users ---------------------------------------------------------------------------


async def test_menu_round_trip(fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis):
    api = make_api(fake_wechat, http, redis)
    menu = {"button": [{"type": "click", "name": "登录", "key": "LOGIN"}]}
    await api.menu_create(menu)
    sent = next(r for r in fake_wechat.requests if r.path == "/cgi-bin/menu/create")
    assert "登录".encode() in sent.raw  # not \\u escapes, which WeChat would show as is
    assert await api.menu_get() == {"menu": menu}
    await api.menu_delete()
    with pytest.raises(WeChatAPIError, match="no custom menu"):
        await api.menu_get()


async def test_user_info(fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis):
    fake_wechat.users["o_alice"] = {"unionid": "u_alice"}
    info = await make_api(fake_wechat, http, redis).user_info("o_alice")
    assert info["openid"] == "o_alice"
    assert info["subscribe"] == 1
    assert info["unionid"] == "u_alice"
    seen = next(r for r in fake_wechat.requests if r.path == "/cgi-bin/user/info")
    assert seen.params["lang"] == "zh_CN"


async def test_token_and_secret_never_logged(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient, redis: Redis, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    api = make_api(fake_wechat, http, redis)
    token = await api.access_token()
    fake_wechat.invalidate()
    await api.create_qrcode("login:1", 60)
    fake_wechat.fail(errcode=40164)
    with pytest.raises(WeChatAPIError) as caught:
        await api.menu_get()
    assert caught.value.errcode == 40164
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("wxpush"))
    assert "errcode 40001" in ours
    for secret in (token, await api.access_token(), fake_wechat.secret):
        assert secret not in ours


async def test_embedded_redis_runs_the_lua_scripts(
    fake_wechat: FakeWeChat, http: httpx.AsyncClient
):
    embedded = open_redis(None)  # fakeredis, as in `wxpush demo`
    try:
        api = make_api(fake_wechat, http, embedded)
        await api.access_token()
        fake_wechat.invalidate()
        await api.create_qrcode("login:1", 60)
    finally:
        await embedded.aclose()
    assert fake_wechat.token_fetches == 2


@pytest.mark.parametrize("connections", [3, 5])
async def test_a_process_holds_at_most_the_configured_redis_connections(
    redis_url: str, connections: int
) -> None:
    """WXPUSH_REDIS_CONNECTIONS bounds a process's connections, the hot path's pipelined connection
    included; busy callers of the pool wait their turn, the pipelined connection's never wait."""
    client, hot = open_connections(redis_url, connections=connections)
    watcher = open_redis(redis_url)
    pool = client.connection_pool
    try:
        # Every pooled connection taken: the pipelined connection still serves its commands.
        pooled = connections - 1
        taken = [await pool.get_connection() for _ in range(pooled)]
        try:
            lane = asyncio.gather(*(hot.get("wxpush:test:none") for _ in range(50)))
            assert await lane == [None] * 50
        finally:
            for connection in taken:
                await pool.release(connection)
        # Twice as many blocking commands as pooled connections: all finish, in two waves.
        blocking = [client.blpop(["wxpush:test:empty"], timeout=0.2) for _ in range(2 * pooled)]
        assert await asyncio.gather(*blocking) == [None] * (2 * pooled)
        rows = await watcher.client_list()
        mine = [r for r in rows if r.get("name") == f"wxpush-{os.getpid()}"]
        held = len(mine) - 1  # the watcher's own connection has the same name
        assert held == connections
    finally:
        await hot.aclose()  # type: ignore[attr-defined]
        await client.aclose()
        await watcher.aclose()
