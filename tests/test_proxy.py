"""Per-IP limits behind (and without) a reverse proxy: ``WXPUSH_TRUSTED_PROXIES``.

Real ``wxpush serve`` processes on loopback. Without trusted proxies, ``X-Forwarded-For`` is
a header like any other and every request here comes from 127.0.0.1; with the loopback
named as a proxy, the address the proxy forwards is the client's and has its own budgets.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests import fakewechat, test_push
from tests.test_cli import wxpush
from tests.test_push import Cluster, frame
from tests.util import TIMEOUT
from wxpush.config.settings import Settings
from wxpush.errors import SettingsError

fake_wechat = fakewechat.fake_wechat
cluster = test_push.cluster

LIMITS = {
    "WXPUSH_SCENES_PER_MINUTE_PER_IP": "3",
    "WXPUSH_SMS_PER_HOUR_PER_IP": "2",
    "WXPUSH_SOCKETS_PER_IP": "2",
}
BASE = {"WXPUSH_APPID": "wx0123456789abcdef", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok123"}


def forwarded(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


class Browser:
    """Requests to one server, each naming the address a proxy would forward."""

    def __init__(self, cluster: Cluster, server: Any, client: httpx.AsyncClient) -> None:
        self.cluster, self.server, self.client = cluster, server, client

    async def new_scene(self, ip: str | None) -> httpx.Response:
        headers = forwarded(ip) if ip else {}
        return await self.client.post(self.server.url + "/api/v1/scenes", json={}, headers=headers)

    async def scanned_scene(self) -> str:
        """A scene scanned by a new person (``NOT_REG``: ready for SMS), made without a
        forwarded address."""
        created = await self.new_scene(None)
        assert created.status_code == 201, created.text
        await self.cluster.scan(self.server, self.client, created.json())
        return str(created.json()["scene"])

    async def sms(self, scene: str, phone: str, ip: str) -> httpx.Response:
        url = f"{self.server.url}/api/v1/scenes/{scene}/sms"
        return await self.client.post(url, json={"phone": phone}, headers=forwarded(ip))

    def socket(self, scene: str, ip: str) -> Any:
        url = f"{self.server.ws_url}/ws/v1/scenes/{scene}"
        return connect(url, additional_headers=forwarded(ip))


def assert_refused(answer: httpx.Response, code: str) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"] == code


async def assert_socket_refused(browser: Browser, scene: str, ip: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await browser.socket(scene, ip)
    assert refused.value.response.status_code == 429
    assert json.loads(refused.value.response.body or b"{}")["error"] == "too_many_sockets"


# -- no trusted proxy (the default) ---------------------------------------------------------


def test_rotating_x_forwarded_for_does_not_reset_the_per_ip_limits(cluster: Cluster) -> None:
    server = cluster.start_server(**LIMITS)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            browser = Browser(cluster, server, client)
            scene = await browser.scanned_scene()  # the first of 3 scenes from 127.0.0.1
            for n in (1, 2):
                assert (await browser.new_scene(f"203.0.113.{n}")).status_code == 201
            for ip in ("203.0.113.3", "198.51.100.7, 203.0.113.4", None):
                assert_refused(await browser.new_scene(ip), "scene_rate_limited")

            for n in (1, 2):
                sent = await browser.sms(scene, f"1380013800{n}", f"203.0.113.{10 + n}")
                assert sent.status_code == 202, sent.text
            refused = await browser.sms(scene, "13800138003", "203.0.113.13")
            assert_refused(refused, "sms_rate_limited")
            assert "network" in refused.json()["message"]

            one, two = browser.socket(scene, "203.0.113.21"), browser.socket(scene, "203.0.113.22")
            async with one as first, two as second:
                await frame(first)
                await frame(second)
                await assert_socket_refused(browser, scene, "203.0.113.23")

    asyncio.run(go())


# -- the loopback named as a trusted proxy ---------------------------------------------------


@pytest.mark.parametrize("trusted", ["127.0.0.1", "10.0.0.0/8, 127.0.0.0/8,::1"])
def test_a_trusted_proxy_forwards_each_client_its_own_budget(
    cluster: Cluster, trusted: str
) -> None:
    server = cluster.start_server(WXPUSH_TRUSTED_PROXIES=trusted, **LIMITS)
    a, b = "203.0.113.1", "198.51.100.2"

    async def go() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            browser = Browser(cluster, server, client)
            for _ in range(3):
                assert (await browser.new_scene(a)).status_code == 201
            assert_refused(await browser.new_scene(a), "scene_rate_limited")
            # nginx appends the address it saw: what the client wrote before it is not trusted
            assert_refused(await browser.new_scene(f"192.0.2.99, {a}"), "scene_rate_limited")
            for _ in range(3):
                assert (await browser.new_scene(b)).status_code == 201
            scene = await browser.scanned_scene()  # the proxy's own address: a third budget

            for phone in ("13800138001", "13800138002"):
                assert (await browser.sms(scene, phone, a)).status_code == 202
            assert_refused(await browser.sms(scene, "13800138003", a), "sms_rate_limited")
            assert (await browser.sms(scene, "13800138003", b)).status_code == 202

            async with browser.socket(scene, a) as one, browser.socket(scene, a) as two:
                await frame(one)
                await frame(two)
                await assert_socket_refused(browser, scene, a)
                async with browser.socket(scene, b) as other:
                    assert (await frame(other))["status"] == "NOT_REG"

    asyncio.run(go())


# -- the setting ------------------------------------------------------------------------------


def test_trusted_proxies_are_addresses_and_networks() -> None:
    def load(raw: str) -> tuple[str, ...]:
        env = {**BASE, "WXPUSH_TRUSTED_PROXIES": raw}
        trusted: tuple[str, ...] = Settings.from_env(env, dotenv=None).trusted_proxies
        return trusted

    assert Settings.from_env(BASE, dotenv=None).trusted_proxies == ()
    assert load(" 10.0.0.1 , 172.16.0.0/12,,FD00::/8 ") == ("10.0.0.1", "172.16.0.0/12", "fd00::/8")


@pytest.mark.parametrize(
    "raw", ["nginx", "10.0.0.300", "10.0.0.1/8", "10.0.0.0/33", "*", "127.0.0.1:8080"]
)
def test_a_malformed_trusted_proxy_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "WXPUSH_TRUSTED_PROXIES": raw}, dotenv=None)
    assert caught.value.variable == "WXPUSH_TRUSTED_PROXIES"
    assert repr(raw.strip()) in str(caught.value)


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_stops_on_a_malformed_trusted_proxy_with_one_line(
    tmp_path: Path, command: str
) -> None:
    with socket.socket() as taken:  # were the setting ignored, start-up would fail on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = wxpush(command, "--host", "127.0.0.1", "--port", port, cwd=tmp_path,
                      WXPUSH_TRUSTED_PROXIES="10.0.0.1/8", **BASE)  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("wxpush: WXPUSH_TRUSTED_PROXIES: '10.0.0.1/8'")
