"""``wxpush demo`` as a real process with no WXPUSH_* variable: the page, then a whole login."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.procs import run_demo
from tests.util import TIMEOUT
from wxpush.sandbox.demo import DEMO_APPID, DEMO_WEBSITE_APPID, demo_settings

PHONE = "13900139000"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    with run_demo(tmp_path, timeout=TIMEOUT) as base:
        yield base
    assert (tmp_path / "wxpush-demo.db").is_file()
    assert (tmp_path / "wxpush-demo-jwt.pem").is_file()


def test_demo_serves_the_page(demo: str, tmp_path: Path) -> None:
    home = httpx.get(demo + "/", timeout=TIMEOUT)
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert "wxpush" in home.text
    assert f"open {demo}/" in (tmp_path / "demo.log").read_text()


def test_demo_login_over_http(demo: str) -> None:
    with httpx.Client(base_url=demo, timeout=TIMEOUT) as client:
        created = client.post("/api/v1/scenes")
        assert created.status_code == 201, created.text
        scene, qr_url = created.json()["scene"], created.json()["qr_url"]
        assert qr_url.startswith(demo + "/sandbox/phone?ticket=")
        assert client.get(qr_url).status_code == 200
        ticket = parse_qs(urlsplit(qr_url).query)["ticket"][0]

        scan = {"ticket": ticket, "openid": "oDemoPerson0001", "follow": True}
        followed = client.post("/sandbox/phone/scan", json=scan)
        assert followed.status_code == 200, followed.text
        assert followed.json()["reply"]  # safe mode: the sandbox decrypted the reply
        waited = client.get(f"/api/v1/scenes/{scene}/wait", params={"timeout": 1}).json()
        assert waited["status"] == "NOT_REG"

        sent = client.post(f"/api/v1/scenes/{scene}/sms", json={"phone": PHONE})
        assert sent.status_code == 202, sent.text
        code = client.get("/sandbox/phone/sms", params={"phone": PHONE}).json()["code"]
        bound = client.post(f"/api/v1/scenes/{scene}/bind", json={"phone": PHONE, "code": code})
        assert bound.status_code == 200, bound.text
        tokens = bound.json()
        assert tokens["status"] == "REG" and tokens["user"]["new"] is True
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200, me.text


def test_demo_settings_have_every_door(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's service account and sandbox website app, bound to one Open Platform
    account, with WeChat's API and OAuth screens both on the demo's own /sandbox."""
    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.startswith("WXPUSH_")]:
        monkeypatch.delenv(name)
    settings = demo_settings("0.0.0.0", 8123)
    assert (
        settings.wechat_api_base
        == settings.wechat_connect_base
        == ("http://127.0.0.1:8123/sandbox")
    )
    assert [w.appid for w in settings.websites.values()] == [DEMO_WEBSITE_APPID]
    assert settings.unionid and all(a.unionid for a in settings.accounts.values())
    again = demo_settings("127.0.0.1", 8123)
    assert again.websites["website"].secret != settings.websites["website"].secret
    # an OIDC provider too: its own URL is the issuer, and the README's Authlib site its client
    assert settings.jwt_issuer == "http://127.0.0.1:8123"
    demo_client = settings.clients["demo"]
    assert demo_client.public and "http://127.0.0.1:8001/callback" in demo_client.redirect_uris


def test_demo_shows_wechats_oauth_screens(demo: str) -> None:
    back = {"redirect_uri": demo + "/healthz", "state": "abc", "response_type": "code"}
    with httpx.Client(base_url=demo + "/sandbox/connect", timeout=TIMEOUT) as client:
        qr = client.get("/qrconnect", params={"appid": DEMO_WEBSITE_APPID,
                                              "scope": "snsapi_login", **back})  # fmt: skip
        assert qr.status_code == 200 and 'data-sandbox="connect-qr"' in qr.text
        params = {"appid": DEMO_APPID, "scope": "snsapi_base", **back}
        consent = client.get("/oauth2/authorize", params=params)
        assert consent.status_code == 200 and 'data-sandbox="continue"' in consent.text
        form = {**params, "person": "oSandboxAlice000000000000001", "action": "continue"}
        went = client.post("/oauth2/authorize", data=form)
        assert went.status_code == 302
        assert went.headers["location"].startswith(demo + "/healthz?code=")
        assert client.get("/wxLogin.js").status_code == 200
