"""wxpush as an OpenID Connect provider over HTTP (SPEC §14): every endpoint and error path.

A real uvicorn server, redis-server, SQLite and PostgreSQL; the browser's part is played by
httpx (the hosted page's widget opens a scene for the request and reads it once logged in);
the relying party's part by Authlib's OAuth 2 client, and the id_token is verified here
independently with PyJWT and the server's JWKS. The flow in real Chromium through the hosted
page, with a relying-party app, is ``test_oidc_browser.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests import fakewechat, test_login
from tests.test_login import NEW_OPENID, Site

fake_wechat = fakewechat.fake_wechat
database_url, sms_inbox, start = test_login.database_url, test_login.sms_inbox, test_login.start

SECRET = "s3cret-of-the-shop-0001"
SHOP = "https://shop.example/auth/callback"
APP = "http://127.0.0.1:9/app/callback"
AFTER_LOGOUT = "https://shop.example/bye"


def clients_file(tmp_path: Path) -> str:
    path = tmp_path / "clients.toml"
    path.write_text(
        f"""
[[client]]
client_id = "shop"
client_secret = "{SECRET}"
redirect_uris = ["{SHOP}"]
post_logout_redirect_uris = ["{AFTER_LOGOUT}"]

[[client]]
client_id = "app"
redirect_uris = ["{APP}"]
door = "follow"
""",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def oidc(start: Callable[..., Site], tmp_path: Path) -> Site:
    return start(WXPUSH_ACCOUNTS_FILE=clients_file(tmp_path), WXPUSH_REQUIRE_PHONE="false")


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(site: Site, **params: str) -> httpx.Response:
    query = {"response_type": "code", "client_id": "shop", "redirect_uri": SHOP,
             "scope": "openid", "state": "st-1", "nonce": "n-1", **params}  # fmt: skip
    return site.client.get("/oidc/authorize", params={k: v for k, v in query.items() if v})


def request_id(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    found = re.search(r'"request": "([A-Za-z0-9_-]+)"', page.text)
    assert found, page.text
    return found.group(1)


def log_in(site: Site, openid: str = NEW_OPENID, **params: str) -> dict[str, list[str]]:
    """The hosted page's part: a scene for the request, the person scans, the page reads
    its redirect; returns the query the client's redirect URI gets."""
    rid = request_id(authorize(site, **params))
    created = site.client.post("/api/v1/scenes", json={"oidc": rid}).json()
    site.scan(created, openid)
    state = site.poll(created["scene"])
    assert state["status"] == "REG" and "access_token" not in state, state
    url = urlsplit(state["redirect"])
    return parse_qs(url.query) | {"_base": [f"{url.scheme}://{url.netloc}{url.path}"]}


def token(site: Site, auth: tuple[str, str] | None = ("shop", SECRET), **form: str) -> httpx.Response:
    return site.client.post("/oidc/token", data=form, auth=auth)


def code_tokens(site: Site, **params: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    back = log_in(site, code_challenge=challenge, code_challenge_method="S256", **params)
    answer = token(site, grant_type="authorization_code", code=back["code"][0],
                   redirect_uri=SHOP, code_verifier=verifier)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def assert_rfc(answer: httpx.Response, status: int, error: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error and body["error_description"], body
    assert "message" not in body


def test_smoke(oidc: Site) -> None:
    tokens = code_tokens(oidc)
    assert tokens["token_type"] == "Bearer"
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["aud"] == "shop" and claims["nonce"] == "n-1"
    info = oidc.client.get("/oidc/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert info.status_code == 200, info.text
