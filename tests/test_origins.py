"""Which pages may open a scene's socket: real ``wxpush serve`` processes, real handshakes.

The handshakes are written by hand so that the test, not a client library, chooses the
``Host`` header a DNS-rebinding page would send.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import fakewechat, test_push
from tests.procs import ServerProcess, run_demo
from tests.test_push import Cluster
from tests.util import TIMEOUT
from wxpush.config.settings import Settings
from wxpush.errors import SettingsError
from wxpush.web import origins

fake_wechat = fakewechat.fake_wechat
cluster = test_push.cluster


def handshake(port: int, path: str, origin: str | None, host: str | None = None) -> int:
    """Open a WebSocket by hand; the answer's status (101 accepted, 403 refused, …)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]  # fmt: skip
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = raw.recv(4096)
            assert chunk, answer
            answer += chunk
        status = int(answer.split(b" ", 2)[1])
        if status == 403:  # refused with the JSON error
            body = answer.partition(b"\r\n\r\n")[2]
            while b'"}' not in body:
                body += raw.recv(4096)
            assert json.loads(body)["error"] == "origin_not_allowed"
    return status


class Sockets:
    """Handshakes on one scene of one server."""

    def __init__(self, server: ServerProcess) -> None:
        created = httpx.post(server.url + "/api/v1/scenes", json={}, timeout=TIMEOUT)
        assert created.status_code == 201, created.text
        self.port, self.path = server.port, f"/ws/v1/scenes/{created.json()['scene']}"

    def status(self, origin: str | None, host: str | None = None) -> int:
        return handshake(self.port, self.path, origin, host)


@pytest.fixture
def plain(cluster: Cluster) -> Iterator[Sockets]:
    """A server with neither WXPUSH_PUBLIC_URL nor WXPUSH_ALLOWED_ORIGINS."""
    yield Sockets(cluster.start_server())


def test_a_page_whose_name_points_at_the_server_is_refused(plain: Sockets) -> None:
    port = plain.port
    assert plain.status("http://evil.example", host="evil.example") == 403
    assert plain.status(f"http://evil.example:{port}", host=f"evil.example:{port}") == 403
    assert plain.status(f"http://localhost:{port}", host="evil.example") == 101  # Host ignored


def test_without_a_public_url_the_own_origin_is_the_address_listened_on(plain: Sockets) -> None:
    port = plain.port
    assert plain.status(f"https://127.0.0.1:{port}") == 403  # the server speaks http
    assert plain.status(f"https://localhost:{port}", host=f"localhost:{port}") == 403
    assert plain.status(f"http://127.0.0.1:{port}") == 101
    assert plain.status(f"HTTP://LocalHost:{port}/") == 101  # loopback: localhost too
    assert plain.status(f"http://127.0.0.1:{port + 1}") == 403  # another port
    assert plain.status("http://127.0.0.1") == 403
    assert plain.status(f"http://127.0.0.2:{port}") == 403  # another address
    assert plain.status("null") == 403
    assert plain.status(None) == 101  # apps and TVs send no Origin


def test_a_public_url_is_the_own_origin_scheme_host_and_port(cluster: Cluster) -> None:
    sockets = Sockets(cluster.start_server(
        WXPUSH_PUBLIC_URL="https://Login.Example.com:443/wxpush",
        WXPUSH_ALLOWED_ORIGINS="https://shop.example:8443, http://[::1]:3000",
    ))  # fmt: skip
    port = sockets.port
    public = "https://login.example.com"
    assert sockets.status(public) == 101
    assert sockets.status(public, host="login.example.com") == 101
    assert sockets.status("https://login.example.com:443") == 101
    assert sockets.status("http://login.example.com") == 403  # the scheme differs
    assert sockets.status("https://login.example.com:8443") == 403  # the port differs
    assert sockets.status("https://example.com") == 403
    assert sockets.status(f"http://127.0.0.1:{port}") == 403  # not the public origin
    assert sockets.status(None) == 101
    # the allowed list still works, on its own scheme, host and port
    assert sockets.status("https://shop.example:8443") == 101
    assert sockets.status("http://[::1]:3000") == 101
    assert sockets.status("https://shop.example") == 403
    assert sockets.status("http://shop.example:8443", host="shop.example:8443") == 403


def test_a_star_lets_any_origin_in(cluster: Cluster) -> None:
    sockets = Sockets(cluster.start_server(WXPUSH_ALLOWED_ORIGINS="*"))
    assert sockets.status("http://evil.example", host="evil.example") == 101
    assert sockets.status("https://anything.example:1234") == 101
    assert sockets.status(None) == 101


def test_the_demo_page_opens_sockets_from_its_own_url(tmp_path: Path) -> None:
    with run_demo(tmp_path) as base:
        port = int(base.rsplit(":", 1)[1])
        created = httpx.post(base + "/api/v1/scenes", timeout=TIMEOUT).json()
        path = f"/ws/v1/scenes/{created['scene']}"
        assert created["ws_url"] == f"ws://127.0.0.1:{port}{path}"
        assert handshake(port, path, base) == 101  # the URL the demo prints
        assert handshake(port, path, f"http://localhost:{port}", f"localhost:{port}") == 101
        assert handshake(port, path, "http://evil.example", "evil.example") == 403


# -- the settings -----------------------------------------------------------------------------


def test_origins_are_compared_as_browsers_send_them() -> None:
    assert origins.canonical("https://Shop.Example:443/") == "https://shop.example"
    assert origins.canonical("http://shop.example:80") == "http://shop.example"
    assert origins.canonical("http://[::1]:3000") == "http://[::1]:3000"
    assert origins.canonical("https://shop.example:8443") == "https://shop.example:8443"
    for bad in ("null", "shop.example", "ftp://shop.example", "https://shop.example/path",
                "https://user@shop.example", "https://shop.example:99999", "https://"):  # fmt: skip
        assert origins.canonical(bad) is None, bad


def test_the_own_origin_of_an_ipv4_client_on_a_dual_stack_socket() -> None:
    env = {"WXPUSH_APPID": "wx0123456789abcdef", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok123"}
    settings = Settings.from_env(env, dotenv=None)
    mapped = {"server": ("::ffff:192.0.2.5", 8000), "scheme": "ws"}
    assert origins.own(settings, mapped) == {"http://192.0.2.5:8000"}
    loopback = {"server": ("::ffff:127.0.0.1", 443), "scheme": "wss"}
    assert origins.own(settings, loopback) == {"https://127.0.0.1", "https://localhost"}
    assert origins.own(settings, {"server": ("::1", 80), "scheme": "ws"}) == {
        "http://[::1]", "http://localhost",
    }  # fmt: skip


def test_allowed_origins_are_stored_in_that_form() -> None:
    env = {"WXPUSH_APPID": "wx0123456789abcdef", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok123"}
    settings = Settings.from_env(
        {**env, "WXPUSH_ALLOWED_ORIGINS": "https://Shop.Example:443/, http://a.example:8080"},
        dotenv=None,
    )
    assert settings.allowed_origins == ("https://shop.example", "http://a.example:8080")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**env, "WXPUSH_ALLOWED_ORIGINS": "https://a.example/app"}, dotenv=None)
    assert caught.value.variable == "WXPUSH_ALLOWED_ORIGINS"


def test_cors_answers_a_listed_origin_written_in_another_form(cluster: Cluster) -> None:
    server = cluster.start_server(WXPUSH_ALLOWED_ORIGINS="https://Shop.Example:443")
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    answer = httpx.options(server.url + "/api/v1/scenes", headers=preflight, timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    refused = {**preflight, "Origin": "http://shop.example"}
    answer = httpx.options(server.url + "/api/v1/scenes", headers=refused, timeout=TIMEOUT)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
