"""Real-time push: real ``wxpush serve`` processes on one real redis-server, real WebSockets."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from tests import fakewechat, wire
from tests.conftest import RedisServer
from tests.procs import ServerProcess
from tests.util import PROMPTLY, TIMEOUT, wait_for
from wxpush.login.messages import channel
from wxpush.wechat.crypto import MessageCrypto

fake_wechat = fakewechat.fake_wechat
AES_KEY = wire.new_aes_key()
NEW = "oNewPerson000000000000000001"


@dataclass
class Cluster:
    """Server processes sharing one Redis, and helpers acting as browser and as WeChat."""

    fake: fakewechat.FakeWeChat
    start_server: Callable[..., ServerProcess]

    async def new_scene(self, server: ServerProcess, client: httpx.AsyncClient) -> dict[str, Any]:
        answer = await client.post(server.url + "/api/v1/scenes", json={})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    async def scan(
        self, server: ServerProcess, client: httpx.AsyncClient, scene: dict[str, Any],
        openid: str = NEW,
    ) -> None:  # fmt: skip
        """Fire WeChat's SCAN callback at ``server``; returns once its answer has arrived."""
        xml = wire.event_xml("SCAN", self.fake.scene_of(scene["qr_url"]), openid=openid)
        crypto = MessageCrypto(self.fake.appid, AES_KEY)
        params, body = wire.signed(xml, mode="safe", crypto=crypto, openid=openid)
        answer = await client.post(
            server.url + "/wechat/default/callback", params=params, content=body
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
def cluster(
    redis_url: str, redis_env: dict[str, str], tmp_path: Path, fake_wechat: fakewechat.FakeWeChat
) -> Iterator[Cluster]:
    servers: list[ServerProcess] = []

    def start_server(*args: str, **env: str) -> ServerProcess:
        base = {
            "WXPUSH_APPID": fake_wechat.appid,
            "WXPUSH_APPSECRET": fake_wechat.secret,
            "WXPUSH_TOKEN": wire.TOKEN,
            "WXPUSH_AES_KEY": AES_KEY,
            "WXPUSH_REDIS_URL": redis_url,
            "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'people.db'}",
            "WXPUSH_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
            "WXPUSH_WECHAT_API_BASE": fake_wechat.url,
            "WXPUSH_SCENES_PER_MINUTE_PER_IP": "100000",
            "WXPUSH_SMS_INTERVAL_SECONDS": "1",
            **redis_env,
        }
        server = ServerProcess({**base, **env}, tmp_path, args=list(args)).start()
        servers.append(server)
        return server

    yield Cluster(fake_wechat, start_server)
    for server in servers:
        server.stop(signal.SIGKILL)
        print(f"-- server {server.port}:\n{server.log()}")  # shown when the test failed


async def frame(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def published_before(redis_url: str, scene_id: str, act: Awaitable[None]) -> list[str]:
    """The statuses the scene published before ``act`` (a request) had its answer.

    A subscriber of the scene's channel listens while ``act`` runs; once ``act`` has its
    answer the subscriber PINGs. Redis handles commands one at a time and answers each
    connection in order, so whatever was published before the answer reaches the subscriber
    before the pong, and nothing published after it does.
    """
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
    try:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(channel(scene_id))
            assert (await pubsub.get_message(timeout=TIMEOUT) or {}).get("type") == "subscribe"
            await act
            await pubsub.ping()
            heard: list[str] = []
            while (message := await pubsub.get_message(timeout=TIMEOUT)) is not None:
                if message["type"] == "pong":
                    return heard
                heard.append(message["data"].decode().partition(" ")[0])
            raise AssertionError(f"no pong; heard {heard}")
    finally:
        await client.aclose()


def gauge(metrics: str, series: str) -> float:
    """The value of one series of the /metrics text; 0 for a labelled series never set."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.M)
    return float(match[1]) if match else 0.0


# -- across processes -----------------------------------------------------------------------


def test_a_scan_on_process_a_reaches_a_socket_on_process_b(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """The change is published before the callback answers (how long the frame then takes
    is measured by bench/push.py, not asserted)."""
    a, b = cluster.start_server(), cluster.start_server()

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            scene = await cluster.new_scene(b, client)
            async with connect(f"{b.ws_url}/ws/v1/scenes/{scene['scene']}") as ws:
                first = await frame(ws)
                assert (first["status"], first["code"]) == ("LOOP", 2)
                scan = cluster.scan(a, client, scene)
                assert await published_before(redis_server.url, scene["scene"], scan) == ["NOT_REG"]
                assert await frame(ws) == {"status": "NOT_REG", "code": 4}

                sms = f"{a.url}/api/v1/scenes/{scene['scene']}/sms"
                assert (await client.post(sms, json={"phone": "13800138000"})).status_code == 202
                code = redis_server.client().get("wxpush:sms:console:last:+8613800138000")
                assert code is not None  # the console provider keeps the latest code
                body = {"phone": "13800138000", "code": code.decode()}
                bind = await client.post(f"{a.url}/api/v1/scenes/{scene['scene']}/bind", json=body)
                assert bind.status_code == 200, bind.text
                final = await frame(ws)
                assert final == {"status": "REG", "code": 3, "claimed": True}  # no second token
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                assert ws.close_code == 1000

    run(go())


def test_no_change_is_lost_between_subscribe_and_read(cluster: Cluster) -> None:
    a, b = cluster.start_server(), cluster.start_server()

    async def round_(client: httpx.AsyncClient) -> str:
        scene = await cluster.new_scene(b, client)

        async def watch() -> str:
            async with connect(f"{b.ws_url}/ws/v1/scenes/{scene['scene']}") as ws:
                while True:
                    state = await frame(ws)
                    if state["status"] != "LOOP":
                        return str(state["status"])

        watcher = asyncio.create_task(watch())
        await cluster.scan(a, client, scene)  # at the same moment as the socket opens
        return await watcher

    async def go() -> list[str]:
        async with httpx.AsyncClient(timeout=TIMEOUT * 2) as client:
            results: list[str] = []
            for _ in range(10):
                results += await asyncio.gather(*(round_(client) for _ in range(20)))
            return results

    results = run(go())
    assert results == ["NOT_REG"] * 200


# -- one process, many sockets --------------------------------------------------------------


def test_a_thousand_sockets_share_one_pubsub_connection(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    server = cluster.start_server(WXPUSH_SOCKETS_PER_IP="5000")

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT * 4) as client:
            scenes = [await cluster.new_scene(server, client) for _ in range(1000)]
            sockets = []
            for scene in scenes:
                ws = await connect(f"{server.ws_url}/ws/v1/scenes/{scene['scene']}")
                sockets.append(ws)
            assert [(await frame(ws))["status"] for ws in sockets] == ["LOOP"] * 1000
            mine = [c for c in redis_server.client().client_list()
                    if c["name"] == f"wxpush-{server.proc.pid}"]  # type: ignore[union-attr]  # fmt: skip
            assert len(mine) <= 3
            assert sum(int(c["sub"]) > 0 for c in mine) == 1
            assert max(int(c["sub"]) for c in mine) >= 1000  # every scene on that connection
            chosen = range(0, 1000, 20)
            await asyncio.gather(*(cluster.scan(server, client, scenes[i]) for i in chosen))
            for i in chosen:
                assert (await frame(sockets[i]))["status"] == "NOT_REG"
            # Nobody else heard a thing: the next frame of each other socket is its own scan's.
            others = [i for i in range(1000) if i not in chosen][::9]
            await asyncio.gather(*(cluster.scan(server, client, scenes[i]) for i in others))
            for i in others:
                assert await frame(sockets[i]) == {"status": "NOT_REG", "code": 4}
            await asyncio.gather(*(ws.close() for ws in sockets))

    run(go())


def test_sockets_survive_a_redis_restart(cluster: Cluster, redis_server: RedisServer) -> None:
    server = cluster.start_server(WXPUSH_SOCKETS_PER_IP="500")

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT * 2) as client:
            scenes = [await cluster.new_scene(server, client) for _ in range(100)]
            sockets = [await connect(f"{server.ws_url}/ws/v1/scenes/{s['scene']}")
                       for s in scenes]  # fmt: skip
            for ws in sockets:
                assert (await frame(ws))["status"] == "LOOP"
            await asyncio.to_thread(redis_server.restart)

            def resubscribed() -> bool:  # the hub noticed, backed off and subscribed again
                name = f"wxpush-{server.proc.pid}"  # type: ignore[union-attr]
                return any(c["name"] == name and int(c["sub"]) >= 100
                           for c in redis_server.client().client_list())  # fmt: skip

            await asyncio.to_thread(wait_for, resubscribed, TIMEOUT * 2)
            for scene in scenes:
                await wait_async(lambda s=scene: cluster.scan(server, client, s))
            states = [(await frame(ws, TIMEOUT * 2))["status"] for ws in sockets]
            assert states == ["NOT_REG"] * 100
            metrics = (await client.get(server.url + "/metrics")).text
            assert re.search(r"^wxpush_hub_reconnects_total [1-9]", metrics, re.M)
            # pushed live through the new subscription (not found by a re-read)
            assert re.search(r"^wxpush_push_latency_seconds_count 100\.0", metrics, re.M)
            await asyncio.gather(*(ws.close() for ws in sockets))

    run(go())


async def wait_async(action: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await action()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_a_client_that_never_reads_does_not_delay_the_others(cluster: Cluster) -> None:
    """The other socket hears its change while the stuck one has read nothing. (Two frames fit
    in any socket buffer; a waiter whose queue overflows is pinned down in test_hub_unit.)"""
    server = cluster.start_server()

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            stuck_scene = await cluster.new_scene(server, client)
            raw = socket.create_connection(("127.0.0.1", server.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            raw.sendall(
                f"GET /ws/v1/scenes/{stuck_scene['scene']} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )  # and never read a byte
            scene = await cluster.new_scene(server, client)
            async with connect(f"{server.ws_url}/ws/v1/scenes/{scene['scene']}") as ws:
                await frame(ws)
                await cluster.scan(server, client, stuck_scene)
                await cluster.scan(server, client, scene)
                assert await frame(ws) == {"status": "NOT_REG", "code": 4}
            raw.close()

    run(go())


def _raw_socket(server: ServerProcess, scene_id: str) -> socket.socket:
    """A WebSocket opened by hand, so that the test sees (and answers) every frame itself."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    raw.sendall(
        f"GET /ws/v1/scenes/{scene_id} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


def _read_frame(raw: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, size = raw.recv(1)[0], raw.recv(1)[0] & 0x7F
    assert size < 126
    payload = b""
    while len(payload) < size:
        payload += raw.recv(size - len(payload))
    return first & 0x0F, payload


PING, PONG, CLOSE = 0x9, 0xA, 0x8


def test_every_socket_is_pinged_each_interval_and_a_silent_one_is_closed(
    cluster: Cluster,
) -> None:
    server = cluster.start_server("--ws-ping-interval", "1")

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            return [await cluster.new_scene(server, client) for _ in range(2)]

    answering, silent = (_raw_socket(server, s["scene"]) for s in run(go()))
    for raw in (answering, silent):
        assert _read_frame(raw)[0] == 0x1  # the first state, as text
    previous = time.monotonic()
    for _ in range(3):  # the answering client: pinged each interval (1 s), and it answers
        opcode, payload = _read_frame(answering)
        assert opcode == PING
        assert time.monotonic() - previous < 1 + PROMPTLY
        previous = time.monotonic()
        answering.sendall(bytes([0x80 | PONG, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
    # The silent client never answered: after one unanswered interval, 1011 and the end.
    (first, _), (last, reason) = _read_frame(silent), _read_frame(silent)
    assert (first, last) == (PING, CLOSE)
    assert int.from_bytes(reason[:2], "big") == 1011
    assert silent.recv(1) == b""  # closed
    assert _read_frame(answering)[0] == PING  # the answering one is still served
    answering.close()
    silent.close()


# -- long-poll ------------------------------------------------------------------------------


def test_long_poll_answers_at_the_event_or_at_the_timeout(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """Asked to wait 55 s (the most), a long-poll answers within TIMEOUT once the scene has
    changed, and at once when it has changed already; else after its own timeout."""
    server = cluster.start_server()

    def subscribers(scene_id: str) -> int:  # the long-poll's waiter is subscribed
        return int(redis_server.client().pubsub_numsub(channel(scene_id))[0][1])

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT * 2) as client:
            scene = await cluster.new_scene(server, client)
            wait = f"{server.url}/api/v1/scenes/{scene['scene']}/wait"
            started = time.monotonic()
            idle = await client.get(wait, params={"timeout": "1"})
            assert idle.json()["status"] == "LOOP"
            assert 1 <= time.monotonic() - started < 1 + TIMEOUT

            poll = asyncio.create_task(client.get(wait, params={"timeout": "55"}))
            await asyncio.to_thread(wait_for, lambda: subscribers(scene["scene"]) == 1)
            await cluster.scan(server, client, scene)
            result = await asyncio.wait_for(poll, TIMEOUT)  # at the event, not at 55 s
            assert result.json() == {"status": "NOT_REG", "code": 4}
            # a state other than LOOP answers at once
            again = await asyncio.wait_for(client.get(wait, params={"timeout": "55"}), TIMEOUT)
            assert again.json() == {"status": "NOT_REG", "code": 4}
            for bad in ("0", "56", "ten", "-1"):
                answer = await client.get(wait, params={"timeout": bad})
                assert answer.status_code == 400
                assert answer.json()["error"] == "invalid_timeout"

    run(go())


# -- handshake rules, expiry, shutdown ------------------------------------------------------


def test_origins_are_enforced_on_the_handshake(cluster: Cluster) -> None:
    server = cluster.start_server(WXPUSH_ALLOWED_ORIGINS="https://shop.example")

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            scene = await cluster.new_scene(server, client)
        url = f"{server.ws_url}/ws/v1/scenes/{scene['scene']}"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin="https://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body or b"{}")["error"] == "origin_not_allowed"
        for origin in ("https://shop.example", None, f"http://127.0.0.1:{server.port}"):
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                assert (await frame(ws))["status"] == "LOOP"

    run(go())


def test_an_unknown_scene_gets_one_expired_frame_and_a_close(cluster: Cluster) -> None:
    server = cluster.start_server()

    async def go() -> None:
        async with connect(f"{server.ws_url}/ws/v1/scenes/{'Z' * 22}") as ws:
            assert await frame(ws) == {"status": "EXPIRED", "code": 1}
            with pytest.raises(ConnectionClosedOK):
                await frame(ws)
            assert ws.close_code == 1000

    run(go())


def test_expiry_is_pushed_without_asking(cluster: Cluster) -> None:
    """EXPIRED comes when the QR code's 2 s are up: not before, and promptly after."""
    server = cluster.start_server(WXPUSH_QR_EXPIRE_SECONDS="2")

    async def go() -> None:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            scene = await cluster.new_scene(server, client)
        async with connect(f"{server.ws_url}/ws/v1/scenes/{scene['scene']}") as ws:
            assert (await frame(ws))["status"] == "LOOP"
            assert await frame(ws, 2 + TIMEOUT) == {"status": "EXPIRED", "code": 1}
            assert 2 <= time.monotonic() - started < 2 + PROMPTLY

    run(go())


def test_the_per_ip_socket_cap(cluster: Cluster) -> None:
    server = cluster.start_server(WXPUSH_SOCKETS_PER_IP="2")

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            scene = await cluster.new_scene(server, client)
        url = f"{server.ws_url}/ws/v1/scenes/{scene['scene']}"
        async with connect(url) as one, connect(url) as two:
            await frame(one)
            await frame(two)
            with pytest.raises(InvalidStatus) as refused:
                await connect(url)
            assert refused.value.response.status_code == 429
        async with connect(url) as again:  # closed sockets free their places
            await frame(again)

    run(go())


def test_shutdown_closes_sockets_with_1012(cluster: Cluster) -> None:
    server = cluster.start_server()

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            scene = await cluster.new_scene(server, client)
            text = (await client.get(server.url + "/metrics")).text
        async with connect(f"{server.ws_url}/ws/v1/scenes/{scene['scene']}") as ws:
            await frame(ws)
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                metrics = (await client.get(server.url + "/metrics")).text
            series = 'wxpush_waiters{transport="websocket"}'
            assert (gauge(text, series), gauge(metrics, series)) == (0.0, 1.0)
            await asyncio.to_thread(server.stop)
            with pytest.raises(ConnectionClosedError):
                await frame(ws)
            assert ws.close_code == 1012

    run(go())


def test_idle_keep_alive_connections_outlive_a_proxys_reuse(cluster: Cluster) -> None:
    """An idle HTTP connection stays open past uvicorn's own 5 s (proxies reuse theirs for
    60 s); ``--keep-alive`` sets how long."""
    default, short = cluster.start_server(), cluster.start_server("--keep-alive", "1")
    request = b"GET /healthz HTTP/1.1\r\nHost: wxpush\r\n\r\n"
    conns = [
        socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) for s in (default, short)
    ]
    try:
        for conn in conns:
            conn.sendall(request)
            assert read_answer(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # the idleness itself is what is tested: longer than uvicorn's default
        kept, closed = conns
        kept.sendall(request)
        assert read_answer(kept).startswith(b"HTTP/1.1 200")
        assert closed.recv(4096) == b""  # the server closed it after 1 s
    finally:
        for conn in conns:
            conn.close()


def read_answer(conn: socket.socket) -> bytes:
    """One whole HTTP answer (headers and a Content-Length body), however it is segmented."""

    def more() -> bytes:
        chunk = conn.recv(4096)
        assert chunk, "the server closed the connection mid-answer"
        return chunk

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        body += more()
    return head + b"\r\n\r\n" + body
