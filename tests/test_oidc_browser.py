"""wxpush as an OpenID Connect provider, end to end: a relying party on Authlib, real Chromium.

``wxpush demo`` runs as a real process with three ``[[client]]`` tables; a small Starlette app
(Authlib's Starlette client, sessions in a signed cookie) is the relying party, under a real
uvicorn. Chromium goes to the RP's ``/login``, is sent to the hosted page of
``/oidc/authorize``, logs in through the client's door on the sandbox WeChat and lands on the
RP's ``/callback``. Authlib checks the id_token; the test checks it again on its own with PyJWT
and the server's JWKS. One person goes through every door — the follow QR code (a new person:
a phone is bound), the website QR code, the in-WeChat button — and is one ``sub`` throughout.
The HTTP-level edges of the endpoints are ``test_oidc.py``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from playwright import sync_api
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests import test_widget
from tests.procs import run_demo, stop_group
from tests.server import serve
from tests.test_widget import choose_new_person, phone_page, scan_known
from tests.test_widget_doors import (
    BUTTON,
    IN_WECHAT,
    STATUS,
    browsing,
    pick_person,
    sms_code,
    website_qr,
)
from tests.util import TIMEOUT, free_port, wait_for

with warnings.catch_warnings():  # Authlib's notice that it would rather use httpx2 than httpx
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError

browser = test_widget.browser

SECRETS = {"shop": "s3cret-of-the-shop-0001", "mobile": "s3cret-of-the-mobile-01"}
# name: (door, scope, how the client authenticates at the token endpoint)
CLIENTS = {
    "shop": ("follow", "openid phone offline_access", "client_secret_basic"),
    "spa": ("website", "openid", "none"),  # a public client: PKCE only
    "mobile": ("auto", "openid phone", "client_secret_post"),
}
NUMBER = "13900139301"


@dataclass
class Servers:
    demo: str  # wxpush demo, also the issuer
    rp: str  # the relying party
    readme_rp: str  # where the README's example site is to run (client ``demo``)


@dataclass
class Login:
    """What one login through the hosted page gave the relying party."""

    asked: dict[str, str]  # the authorization request Authlib sent (state, nonce, PKCE …)
    back: dict[str, str]  # the query wxpush sent the browser back to the RP with
    shown: dict[str, Any]  # the RP's callback page: Authlib's userinfo and the tokens

    @property
    def sub(self) -> str:
        return str(self.shown["userinfo"]["sub"])


def accounts_file(path: Path, rp: str, readme_rp: str) -> str:
    tables = []
    for name, (door, _, _) in CLIENTS.items():
        secret = f'client_secret = "{SECRETS[name]}"\n' if name in SECRETS else ""
        tables.append(
            f'[[client]]\nclient_id = "{name}"\n{secret}redirect_uris = ["{rp}/callback/{name}"]\n'
            f'post_logout_redirect_uris = ["{rp}/bye/{name}"]\ndoor = "{door}"\n'
        )
    tables.append(f'[[client]]\nclient_id = "demo"\nredirect_uris = ["{readme_rp}/callback"]\n')
    path.write_text("\n".join(tables), encoding="utf-8")
    return str(path)


def relying_party(demo: str, rp: str) -> Starlette:
    """The RP: ``/login/{name}``, ``/callback/{name}``, ``/logout/{name}``, ``/bye/{name}``."""
    oauth, apps = OAuth(), {}
    for name, (_, scope, method) in CLIENTS.items():
        apps[name] = oauth.register(
            name, client_id=name, client_secret=SECRETS.get(name),
            server_metadata_url=demo + "/.well-known/openid-configuration",
            client_kwargs={"scope": scope, "code_challenge_method": "S256",
                           "token_endpoint_auth_method": method},
        )  # fmt: skip

    def client(request: Request) -> Any:
        return apps[request.path_params["name"]]

    async def login(request: Request) -> Response:
        callback = f"{rp}/callback/{request.path_params['name']}"
        response: Response = await client(request).authorize_redirect(request, callback)
        return response

    async def callback(request: Request) -> Response:
        try:
            token = await client(request).authorize_access_token(request)
        except OAuthError as exc:
            return HTMLResponse(f'<p data-rp="error">{html.escape(str(exc))}</p>', 400)
        request.session["id_token"] = token["id_token"]
        shown = {"userinfo": dict(token["userinfo"])} | {
            key: token.get(key) for key in ("access_token", "refresh_token", "id_token", "scope")
        }
        return HTMLResponse(f'<pre data-rp="tokens">{html.escape(json.dumps(shown))}</pre>')

    async def logout(request: Request) -> Response:
        bye = f"{rp}/bye/{request.path_params['name']}"
        hint = request.session.pop("id_token")
        response: Response = await client(request).logout_redirect(
            request, post_logout_redirect_uri=bye, id_token_hint=hint
        )
        return response

    async def bye(request: Request) -> Response:
        try:
            await client(request).validate_logout_response(request)  # the state is ours
        except OAuthError as exc:
            return HTMLResponse(f'<p data-rp="error">{html.escape(str(exc))}</p>', 400)
        return HTMLResponse('<p data-rp="bye">Logged out.</p>')

    routes = [Route(f"/{path}/{{name}}", endpoint)
              for path, endpoint in (("login", login), ("callback", callback),
                                     ("logout", logout), ("bye", bye))]  # fmt: skip
    session = Middleware(SessionMiddleware, secret_key="rp-session-key", session_cookie="rp")
    return Starlette(routes=routes, middleware=[session])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("oidc-browser")
    demo_port, rp_port = free_port(), free_port()
    demo, rp = f"http://127.0.0.1:{demo_port}", f"http://127.0.0.1:{rp_port}"
    readme_rp = f"http://127.0.0.1:{free_port()}"
    clients = accounts_file(workdir / "clients.toml", rp, readme_rp)
    with (
        run_demo(workdir, demo_port, WXPUSH_ACCOUNTS_FILE=clients, WXPUSH_JWT_ISSUER=demo) as up,
        serve(relying_party(demo, rp), rp_port),
    ):
        assert up == demo
        yield Servers(demo, rp, readme_rp)


def to_hosted_page(page: sync_api.Page, servers: Servers, name: str) -> dict[str, str]:
    """The browser at the RP's /login, sent on to wxpush's hosted page; returns the request."""
    page.goto(f"{servers.rp}/login/{name}")
    url = urlsplit(page.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == servers.demo + "/oidc/authorize"
    asked = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (asked["client_id"], asked["scope"]) == (name, CLIENTS[name][1])
    assert asked["code_challenge_method"] == "S256" and asked["nonce"] and asked["state"]
    return asked


def hosted_page_says(page: sync_api.Page, name: str, lang: str) -> None:
    title, lead = {"en": ("Log in with WeChat", f"Log in to {name} with WeChat."),
                   "zh": ("微信登录", f"使用微信登录 {name}。")}[lang]  # fmt: skip
    sync_api.expect(page.locator("h1")).to_have_text(title)
    sync_api.expect(page.locator('[data-wxpush-page="oidc_login"] p').first).to_have_text(lead)
    assert page.locator("html").get_attribute("lang") == ("zh-CN" if lang == "zh" else "en")


def at_the_rp(page: sync_api.Page, servers: Servers, name: str, asked: dict[str, str]) -> Login:
    """Waits for the RP's callback page; returns what it shows."""
    page.wait_for_url(re.compile(re.escape(f"{servers.rp}/callback/{name}?")))
    back = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert set(back) == {"code", "state", "iss"}
    assert (back["state"], back["iss"]) == (asked["state"], servers.demo)
    assert page.locator('[data-rp="error"]').count() == 0, page.content()
    shown = json.loads(page.locator('[data-rp="tokens"]').inner_text())
    return Login(asked, back, shown)


def half_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def verified(servers: Servers, login: Login, name: str) -> dict[str, Any]:
    """The id_token checked here, apart from Authlib: signature by the JWKS, iss, aud, nonce,
    at_hash; returns its claims."""
    config = httpx.get(servers.demo + "/.well-known/openid-configuration", timeout=TIMEOUT).json()
    id_token = login.shown["id_token"]
    key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(id_token)
    assert jwt.get_unverified_header(id_token)["kid"] == key.key_id
    claims: dict[str, Any] = jwt.decode(
        id_token, key, algorithms=config["id_token_signing_alg_values_supported"],
        audience=name, issuer=servers.demo,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash"]},
    )  # fmt: skip
    assert claims["nonce"] == login.asked["nonce"]
    assert claims["at_hash"] == half_hash(login.shown["access_token"])
    assert claims["sub"] == login.sub and login.shown["userinfo"]["nonce"] == claims["nonce"]
    return claims


def bearer(base: str, path: str, access_token: str) -> httpx.Response:
    auth = {"Authorization": "Bearer " + access_token}
    return httpx.get(base + path, headers=auth, timeout=TIMEOUT)


def userinfo(servers: Servers, login: Login) -> dict[str, Any]:
    answer = bearer(servers.demo, "/oidc/userinfo", login.shown["access_token"])
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def refresh(servers: Servers, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    auth = ("shop", SECRETS["shop"])
    return httpx.post(servers.demo + "/oidc/token", data=form, auth=auth, timeout=TIMEOUT)


@dataclass
class First:
    login: Login
    person: str  # the sandbox person
    page: sync_api.Page  # on the RP's callback, in the browser session of the login


@pytest.fixture(scope="module")
def first(servers: Servers, browser: sync_api.Browser) -> Iterator[First]:
    """A new person logs in to ``shop`` (confidential, the follow door): scans the QR code of
    the hosted page, follows, binds a phone there and lands on the RP (the browser session
    stays open for the test to log out)."""
    with browsing(browser) as ctx:
        page = ctx.new_page()
        asked = to_hosted_page(page, servers, "shop")
        hosted_page_says(page, "shop", "en")
        sync_api.expect(page.locator(STATUS)).to_contain_text("Scan the QR code with WeChat")
        link = page.locator('[data-wxpush="qr-link"]')
        sync_api.expect(link).to_have_attribute("href", re.compile(r"/sandbox/phone\?ticket="))
        phone = phone_page(ctx, link.get_attribute("href") or "")
        person = choose_new_person(phone)
        phone.locator('[data-sandbox="follow"]').click()

        field = page.locator('[data-wxpush="phone"]')
        sync_api.expect(field).to_be_visible()
        field.fill(NUMBER)
        page.locator('[data-wxpush="send-code"]').click()
        sync_api.expect(page.locator('[data-wxpush="send-code"]')).to_contain_text("Resend in")
        page.locator('[data-wxpush="code"]').fill(sms_code(servers.demo, NUMBER))
        page.locator('[data-wxpush="submit"]').click()
        yield First(at_the_rp(page, servers, "shop", asked), person, page)


def test_follow_door_confidential_client_phone_and_logout(servers: Servers, first: First) -> None:
    login, page = first.login, first.page
    claims = verified(servers, login, "shop")
    assert claims["amr"] == ["wechat_mp"]
    assert login.shown["scope"] == "openid phone offline_access" and login.shown["refresh_token"]
    assert userinfo(servers, login) == {
        "sub": login.sub, "phone_number": "+86" + NUMBER, "phone_number_verified": True,
    }  # fmt: skip
    me = bearer(servers.demo, "/api/v1/me", login.shown["access_token"])
    assert me.status_code == 200 and me.json()["id"] == login.sub, me.text
    renewed = refresh(servers, login.shown["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    later = renewed.json()

    # RP-initiated logout, in the same browser session as the login (the RP's cookie).
    with page.expect_request(lambda r: "/oidc/logout?" in r.url) as sent:
        page.goto(f"{servers.rp}/logout/shop")
    told = {k: v[0] for k, v in parse_qs(urlsplit(sent.value.url).query).items()}
    assert told["id_token_hint"] == login.shown["id_token"]
    assert told["post_logout_redirect_uri"] == f"{servers.rp}/bye/shop" and told["state"]
    page.wait_for_url(f"{servers.rp}/bye/shop?state={told['state']}")
    sync_api.expect(page.locator('[data-rp="bye"]')).to_have_text("Logged out.")

    refused = refresh(servers, later["refresh_token"])
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant"), refused.text
    for token in (login.shown["access_token"], later["access_token"]):
        answer = bearer(servers.demo, "/oidc/userinfo", token)
        assert answer.status_code == 401, answer.text
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert bearer(servers.demo, "/api/v1/me", login.shown["access_token"]).status_code == 401


def test_website_door_public_client_in_chinese(
    servers: Servers, first: First, browser: sync_api.Browser
) -> None:
    """``spa``: a public client (PKCE, no secret), the website QR code, the page in zh; the
    same person is the same ``sub``, and without the phone scope userinfo is ``sub`` only."""
    with browsing(browser, locale="zh-CN") as ctx:
        page = ctx.new_page()
        asked = to_hosted_page(page, servers, "spa")
        hosted_page_says(page, "spa", "zh")
        confirm = website_qr(page)
        sync_api.expect(page.locator(STATUS)).to_have_text("请用微信扫码，并在手机上确认登录。")
        assert page.locator('[data-wxpush="qr"]').count() == 0
        phone = ctx.new_page()
        phone.goto(confirm)
        pick_person(phone, first.person)
        phone.locator('[data-sandbox="confirm"]').click()
        login = at_the_rp(page, servers, "spa", asked)
    claims = verified(servers, login, "spa")
    assert (login.sub, claims["amr"]) == (first.login.sub, ["wechat_open"])
    assert login.shown["scope"] == "openid" and login.shown["refresh_token"] is None
    assert userinfo(servers, login) == {"sub": first.login.sub}


def test_in_wechat_door_leaves_for_consent_and_comes_back(
    servers: Servers, first: First, browser: sync_api.Browser
) -> None:
    """``mobile`` (door ``auto``, secret in the form) opened inside WeChat: the button, WeChat's
    consent, back on the hosted page, whose widget resumes its kept scene and goes on to the RP."""
    with browsing(browser, user_agent=IN_WECHAT) as ctx:
        page = ctx.new_page()
        asked = to_hosted_page(page, servers, "mobile")
        hosted_page_says(page, "mobile", "en")
        button = page.locator(BUTTON)
        sync_api.expect(button).to_have_text("Log in with WeChat")
        assert page.locator('[data-wxpush="qr"]').count() == 0
        button.click()
        consent = servers.demo + "/sandbox/connect/oauth2/authorize?"
        page.wait_for_url(re.compile(re.escape(consent)))
        visited: list[str] = []
        page.on("framenavigated", lambda f: visited.append(f.url) if f == page.main_frame else None)
        pick_person(page, first.person)
        page.locator('[data-sandbox="continue"]').click()
        login = at_the_rp(page, servers, "mobile", asked)
    assert [urlsplit(url).path for url in visited][-2:] == ["/oidc/authorize", "/callback/mobile"]
    claims = verified(servers, login, "mobile")
    assert (login.sub, claims["amr"]) == (first.login.sub, ["wechat_mp"])
    assert login.shown["refresh_token"] is None
    assert userinfo(servers, login) == {
        "sub": first.login.sub, "phone_number": "+86" + NUMBER, "phone_number_verified": True,
    }  # fmt: skip


def readme_example(demo: str, rp: str) -> str:
    """The README's Authlib site, pointed at this demo and this port."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(# rp\.py:.*?)```", readme, re.S)
    assert found, "the README's OIDC example is gone"
    return found.group(1).replace("http://127.0.0.1:8000", demo).replace(
        "http://127.0.0.1:8001", rp).replace("port=8001", f"port={urlsplit(rp).port}")  # fmt: skip


def test_the_readme_example_logs_in(
    servers: Servers, first: First, browser: sync_api.Browser, tmp_path: Path
) -> None:
    """The README's few lines of Authlib, run as they are: a known person logs in to them."""
    script = tmp_path / "rp.py"
    script.write_text(readme_example(servers.demo, servers.readme_rp), encoding="utf-8")
    log = (tmp_path / "rp.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: _answers(servers.readme_rp, proc, tmp_path / "rp.log"))
        with browsing(browser) as ctx:
            page = ctx.new_page()
            page.goto(servers.readme_rp + "/")
            link = page.locator('[data-wxpush="qr-link"]')
            sync_api.expect(link).to_have_attribute("href", re.compile(r"/sandbox/phone\?ticket="))
            scan_known(ctx, link.get_attribute("href") or "", first.person)
            page.wait_for_url(re.compile(re.escape(servers.readme_rp + "/callback?")))
            shown = json.loads(page.locator("body").inner_text())
        assert shown == {"sub": first.login.sub, "phone_number": "+86" + NUMBER,
                         "phone_number_verified": True}  # fmt: skip
    finally:
        stop_group(proc, signal.SIGTERM)
        log.close()


def _answers(base: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, log.read_text(errors="replace")
    try:
        return httpx.get(base + "/", timeout=1).status_code == 302
    except httpx.TransportError:
        return False
