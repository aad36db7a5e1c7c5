"""The sandbox end to end: a real uvicorn server whose WeChat API base is its own /sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.server import serve
from tests.util import TIMEOUT, free_port
from tests.wire import new_aes_key
from wxpush.app import create_app
from wxpush.config.settings import Settings

APPID = "wxsandboxtest0001"
SECRET = "sandboxsecret0123456789"
PHONE = "13800138000"


def _settings(
    port: int, tmp_path: Path, redis_url: str, *, sandbox: bool = True, aes: bool = True
) -> Settings:
    return Settings.from_env(
        {
            "WXPUSH_APPID": APPID,
            "WXPUSH_APPSECRET": SECRET,
            "WXPUSH_TOKEN": "sandboxtoken",
            "WXPUSH_AES_KEY": new_aes_key() if aes else "",
            "WXPUSH_REDIS_URL": redis_url,
            "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'people.db'}",
            "WXPUSH_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
            "WXPUSH_SANDBOX": "1" if sandbox else "0",
            "WXPUSH_WECHAT_API_BASE": f"http://127.0.0.1:{port}/sandbox",
            "WXPUSH_LOG_LEVEL": "WARNING",
        },
        dotenv=None,
    )


@pytest.fixture
def base(tmp_path: Path, redis_url: str) -> Iterator[str]:
    port = free_port()
    with serve(create_app(_settings(port, tmp_path, redis_url)), port) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=TIMEOUT) as c:
        yield c


def _scene(client: httpx.Client) -> tuple[str, str]:
    """Create a scene; return its id and the sandbox ticket in its QR code."""
    created = client.post("/api/v1/scenes")
    assert created.status_code == 201, created.text
    body = created.json()
    parts = urlsplit(body["qr_url"])
    assert parts.path == "/sandbox/phone"
    return body["scene"], parse_qs(parts.query)["ticket"][0]


def _phone(client: httpx.Client, ticket: str, openid: str, *, follow: bool) -> dict[str, str]:
    answer = client.post(
        "/sandbox/phone/scan", json={"ticket": ticket, "openid": openid, "follow": follow}
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, str] = answer.json()
    return result


def test_login_through_the_sandbox(client: httpx.Client, base: str) -> None:
    scene, ticket = _scene(client)
    page = client.get("/sandbox/phone", params={"ticket": ticket})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hook in ("person", "new-person", "follow", "scan", "sms-code", "phone"):
        assert f'data-sandbox="{hook}"' in page.text
    assert client.get("/sandbox/cgi-bin/showqrcode", params={"ticket": ticket}).content[:4] == (
        b"\x89PNG"
    )

    followed = _phone(client, ticket, "oSandboxNew0001", follow=True)
    assert followed["event"] == "subscribe"
    assert followed["event_key"] == f"qrscene_login:{scene}"
    assert followed["reply"] and "phone" in followed["reply"]  # decrypted passive reply
    assert client.get(f"/api/v1/scenes/{scene}").json()["status"] == "NOT_REG"

    assert client.get("/sandbox/phone/sms", params={"phone": PHONE}).json()["code"] is None
    sent = client.post(f"/api/v1/scenes/{scene}/sms", json={"phone": PHONE})
    assert sent.status_code == 202, sent.text
    shown = client.get("/sandbox/phone/sms", params={"phone": PHONE}).json()
    assert shown["phone"] == "+8613800138000" and len(shown["code"]) == 6
    bound = client.post(
        f"/api/v1/scenes/{scene}/bind", json={"phone": PHONE, "code": shown["code"]}
    )
    assert bound.status_code == 200, bound.text
    assert bound.json()["status"] == "REG" and bound.json()["access_token"]

    scene, ticket = _scene(client)
    scanned = _phone(client, ticket, "oSandboxNew0001", follow=False)
    assert scanned["event"] == "SCAN" and scanned["event_key"] == f"login:{scene}"
    assert scanned["reply"] == "Logged in"
    state = client.get(f"/api/v1/scenes/{scene}").json()
    assert state["status"] == "REG" and state["access_token"]
    assert state["user"]["id"] == bound.json()["user"]["id"]


def test_wechat_api_shapes(client: httpx.Client) -> None:
    fetched = client.post(
        "/sandbox/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": APPID, "secret": SECRET},
    ).json()
    token = fetched["access_token"]
    assert fetched["expires_in"] > 7000
    again = client.post(
        "/sandbox/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": APPID, "secret": SECRET},
    ).json()
    assert again["access_token"] == token
    plain = client.get(
        "/sandbox/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": APPID, "secret": SECRET},
    ).json()
    assert plain["access_token"] != token

    q = {"access_token": token}
    assert client.get("/sandbox/cgi-bin/menu/get", params=q).json()["errcode"] == 46003
    menu = {"button": [{"type": "click", "name": "Hi", "key": "hi"}]}
    assert client.post("/sandbox/cgi-bin/menu/create", params=q, json=menu).json()["errcode"] == 0
    assert client.get("/sandbox/cgi-bin/menu/get", params=q).json() == {"menu": menu}
    assert client.get("/sandbox/cgi-bin/menu/delete", params=q).json()["errcode"] == 0
    info = client.get("/sandbox/cgi-bin/user/info", params={**q, "openid": "oX"}).json()
    assert info["openid"] == "oX" and info["subscribe"] == 1


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "errcode"),
    [
        ("POST", "stable_token", {"content": b"{"}, 47001),
        ("POST", "stable_token", {"json": {"appid": "wxother", "secret": SECRET}}, 40013),
        ("POST", "stable_token", {"json": {"appid": APPID, "secret": "wrong"}}, 40125),
        ("POST", "stable_token", {"json": {"appid": APPID, "secret": "密码"}}, 40125),
        ("POST", "stable_token", {"json": [APPID, SECRET]}, 47001),
        ("GET", "token", {"params": {"appid": APPID, "secret": SECRET}}, 40002),
        ("POST", "qrcode/create", {"json": {}}, 41001),
        ("POST", "qrcode/create", {"params": {"access_token": "nope"}, "json": {}}, 40001),
        ("GET", "menu/get", {"params": {"access_token": "nope"}}, 40001),
        ("GET", "user/info", {}, 41001),
    ],
)
def test_wechat_api_errors(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, object], errcode: int
) -> None:
    answer = client.request(method, f"/sandbox/cgi-bin/{path}", **kwargs)  # type: ignore[arg-type]
    assert answer.status_code == 200
    assert answer.json()["errcode"] == errcode


def test_bad_qrcode_arguments(client: httpx.Client) -> None:
    token = client.post(
        "/sandbox/cgi-bin/stable_token", json={"appid": APPID, "secret": SECRET}
    ).json()["access_token"]
    scene = {"scene": {"scene_str": "login:x"}}
    for body in [b"{", b"{}", json.dumps({"action_info": scene}).encode()]:
        bad = client.post(
            "/sandbox/cgi-bin/qrcode/create", params={"access_token": token}, content=body
        )
        assert (bad.status_code, bad.json()["errcode"]) == (200, 40097), body


@pytest.mark.parametrize(
    ("content", "status", "error"),
    [
        (b"{", 400, "bad_json"),
        (b"[1]", 400, "bad_json"),
        (b'{"ticket": 1, "openid": "o1"}', 400, "bad_request"),
        (b'{"ticket": "t", "openid": "<x/>"}', 400, "bad_request"),
        (b'{"ticket": "t", "openid": "o1", "follow": "yes"}', 400, "bad_request"),
        (b'{"ticket": "unknown", "openid": "o1"}', 404, "unknown_ticket"),
    ],
)
def test_phone_scan_bad_input(
    client: httpx.Client, content: bytes, status: int, error: str
) -> None:
    answer = client.post("/sandbox/phone/scan", content=content)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert answer.json()["message"]


def test_phone_page_and_sms_bad_input(client: httpx.Client) -> None:
    for path, params, status, error in [
        ("/sandbox/phone", {}, 404, "unknown_ticket"),
        ("/sandbox/phone", {"ticket": "nope"}, 404, "unknown_ticket"),
        ("/sandbox/cgi-bin/showqrcode", {"ticket": "nope"}, 404, "unknown_ticket"),
        ("/sandbox/phone/sms", {}, 400, "invalid_phone"),
        ("/sandbox/phone/sms", {"phone": "not a phone"}, 400, "invalid_phone"),
    ]:
        answer = client.get(path, params=params)
        assert (answer.status_code, answer.json()["error"]) == (status, error), path


def test_sandbox_absent_unless_enabled(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    with serve(create_app(_settings(port, tmp_path, redis_url, sandbox=False)), port) as base:
        paths = ("/sandbox/phone?ticket=x", "/sandbox/cgi-bin/token", "/sandbox/phone/sms",
                 "/sandbox/sns/oauth2/access_token", "/sandbox/connect/qrconnect",
                 "/sandbox/connect/wxLogin.js", "/sandbox/connect/oauth2/authorize")  # fmt: skip
        for path in paths:
            answer = httpx.get(base + path, timeout=TIMEOUT)
            assert answer.status_code == 404, path
            assert answer.json()["error"] == "not_found"
        assert httpx.post(base + "/sandbox/phone/scan", json={}, timeout=TIMEOUT).status_code == 404


def test_plaintext_account(tmp_path: Path, redis_url: str) -> None:
    """Without an EncodingAESKey the sandbox sends plaintext events and reads plain replies."""
    port = free_port()
    app = create_app(_settings(port, tmp_path, redis_url, aes=False))
    with serve(app, port) as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        scene, ticket = _scene(client)
        assert _phone(client, ticket, "oPlain01", follow=False)["reply"]
        assert client.get(f"/api/v1/scenes/{scene}").json()["status"] == "NOT_REG"


def test_home_and_static(client: httpx.Client) -> None:
    home = client.get("/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert client.get("/static/index.html").text == home.text
    refused = client.post("/")
    assert (refused.status_code, refused.json()["error"]) == (405, "method_not_allowed")
    assert client.get("/static/nope.js").status_code == 404
