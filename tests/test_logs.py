"""What a real ``wxpush serve`` writes to its log: routes, never the secrets in a request."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests import fakewechat, test_push, wire
from tests.conftest import RedisServer
from tests.procs import ServerProcess
from tests.test_cli import wxpush
from tests.test_proxy import BASE
from tests.test_push import AES_KEY, NEW, Cluster, frame
from tests.util import TIMEOUT, wait_for
from wxpush.wechat import replies
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.signature import sign

fake_wechat = fakewechat.fake_wechat
cluster = test_push.cluster
PHONE = "13800138000"


def nonce() -> str:
    return str(10**9 + secrets.randbelow(9 * 10**9))  # ten digits: not found in a log by chance


def signed_scan(fake: fakewechat.FakeWeChat, qr_url: str) -> dict[str, Any]:
    """A safe-mode SCAN callback as WeChat sends it: ``{"params", "body"}``."""
    ts, once = str(int(time.time())), nonce()
    xml = wire.event_xml("SCAN", fake.scene_of(qr_url), openid=NEW)
    body, msg_signature = replies.encrypted_request(
        xml, MessageCrypto(fake.appid, AES_KEY), wire.TOKEN,
        to_user=wire.ACCOUNT_ID, timestamp=ts, nonce=once,
    )  # fmt: skip
    params = {"signature": sign(wire.TOKEN, ts, once), "timestamp": ts, "nonce": once,
              "openid": NEW, "encrypt_type": "aes", "msg_signature": msg_signature}  # fmt: skip
    return {"params": params, "body": body}


async def a_whole_login(
    cluster: Cluster, server: ServerProcess, redis: RedisServer
) -> tuple[list[str], list[str]]:
    """Everything a login does, over HTTP, the socket and WeChat's callbacks; returns the
    secrets it used and the access lines it should have written."""
    secret: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        created = (await client.post("/api/v1/scenes", json={})).json()
        scene = created["scene"]
        secret.append(scene)
        path = f"/api/v1/scenes/{scene}"
        assert (await client.get(path)).status_code == 200
        assert (await client.get(path + "/qr.svg")).status_code == 200
        async with connect(created["ws_url"]) as ws:
            assert (await frame(ws))["status"] == "LOOP"
            scan = signed_scan(cluster.fake, created["qr_url"])
            secret += [scan["params"][name] for name in
                       ("signature", "msg_signature", "nonce", "timestamp", "openid")]  # fmt: skip
            answer = await client.post(
                "/wechat/default/callback", params=scan["params"], content=scan["body"]
            )
            assert answer.status_code == 200
            assert (await frame(ws))["status"] == "NOT_REG"
        ts, once, echo = str(int(time.time()) + 1), nonce(), secrets.token_hex(12)
        check = {"signature": sign(wire.TOKEN, ts, once), "timestamp": ts, "nonce": once,
                 "echostr": echo}  # fmt: skip
        secret += list(check.values())
        assert (await client.get("/wechat/default/callback", params=check)).text == echo
        waited = await client.get(path + "/wait", params={"timeout": "1"})
        assert waited.json()["status"] == "NOT_REG"
        assert (await client.post(path + "/sms", json={"phone": PHONE})).status_code == 202
        code = redis.client().get(f"wxpush:sms:console:last:+86{PHONE}")
        assert code is not None
        bound = await client.post(path + "/bind", json={"phone": PHONE, "code": code.decode()})
        assert bound.status_code == 200, bound.text
        tokens = bound.json()
        fresh = await client.post(
            "/api/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert fresh.status_code == 200
        secret += [tokens["access_token"], tokens["refresh_token"]]
        secret += [fresh.json()["access_token"], fresh.json()["refresh_token"]]
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await client.get("/api/v1/me", headers=bearer)).status_code == 200
        assert (await client.get(path + "/typo?scene=" + scene)).status_code == 404
    lines = [
        "POST /api/v1/scenes 201",
        "GET /api/v1/scenes/{scene} 200",
        "GET /api/v1/scenes/{scene}/qr.svg 200",
        "WS /ws/v1/scenes/{scene} 101",
        "POST /wechat/{account}/callback 200",
        "GET /wechat/{account}/callback 200",
        "GET /api/v1/scenes/{scene}/wait 200",
        "POST /api/v1/scenes/{scene}/sms 202",
        "POST /api/v1/scenes/{scene}/bind 200",
        "POST /api/v1/token/refresh 200",
        "GET /api/v1/me 200",
        "GET - 404",
    ]
    return secret, lines


@pytest.mark.parametrize("level", ["info", "debug"])
def test_the_log_names_routes_and_keeps_the_secrets_out(
    cluster: Cluster, redis_server: RedisServer, level: str
) -> None:
    server = cluster.start_server(WXPUSH_LOG_LEVEL=level)
    secrets_used, lines = asyncio.run(a_whole_login(cluster, server, redis_server))
    wait_for(lambda: " 404" in server.log())  # the last request's line (in any format)
    assert_kept_out(secrets_used, server.log())
    wait_for(lambda: "WS /ws/v1/scenes/{scene}" in server.log())  # written as the socket ends
    log = server.log()
    for line in lines:  # client, method, route, status, duration
        assert re.search(rf"wxpush\.access: 127\.0\.0\.1 {re.escape(line)} \d+\.\dms", log), line
    assert_kept_out(secrets_used, log)
    assert "?" not in "".join(ln for ln in log.splitlines() if "wxpush.access" in ln)


def assert_kept_out(values: list[str], log: str) -> None:
    for value in values:
        assert value not in log


def test_a_socket_refused_is_logged_by_its_route(cluster: Cluster) -> None:
    server = cluster.start_server(WXPUSH_LOG_LEVEL="debug", WXPUSH_SOCKETS_PER_IP="1")
    scene = httpx.post(server.url + "/api/v1/scenes", json={}, timeout=TIMEOUT).json()

    async def refused(**options: Any) -> int:
        with pytest.raises(InvalidStatus) as caught:
            await connect(scene["ws_url"], **options)
        return caught.value.response.status_code

    async def go() -> None:
        async with connect(scene["ws_url"]) as ws:
            await frame(ws)
            assert await refused() == 429
        assert await refused(origin="https://evil.example") == 403

    asyncio.run(go())
    for status in ("101", "429", "403"):
        line = f"127.0.0.1 WS /ws/v1/scenes/{{scene}} {status} "
        wait_for(lambda line=line: line in server.log())
    assert scene["scene"] not in server.log()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_wxpush_messages_follow_the_log_level(cluster: Cluster, workers: str) -> None:
    # first, so that the database's tables exist before two workers start on it at once
    quiet = cluster.start_server(WXPUSH_LOG_LEVEL="warning")
    assert httpx.post(quiet.url + "/api/v1/scenes", json={}, timeout=TIMEOUT).status_code == 201
    assert "wxpush ready" not in quiet.log()
    assert "wxpush.access" not in quiet.log()
    server = cluster.start_server("--workers", workers, WXPUSH_LOG_LEVEL="INFO")
    wait_for(lambda: server.log().count("wxpush ready: accounts default") == int(workers))
    assert "wxpush.lifespan: wxpush ready" in server.log()


def test_a_bad_log_level_names_the_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:  # were the setting not checked, start-up would fail here
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = wxpush("serve", "--host", "127.0.0.1", "--port", port, cwd=tmp_path,
                      WXPUSH_LOG_LEVEL="loud", **BASE)  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    levels = "critical, error, warning, info, debug, trace"
    assert line == f"wxpush: WXPUSH_LOG_LEVEL: must be one of {levels}"
