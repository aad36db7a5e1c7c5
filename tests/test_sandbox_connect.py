"""The sandbox's OAuth screens over HTTP and in a real Chromium: the website QR code and the
phone's confirm, the consent inside WeChat, the stand-in WxLogin.js; and that what they hand
the site exchanges to the person the sandbox says it is (one unionid through every door)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from playwright import sync_api
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests import test_widget
from tests.server import serve
from tests.test_sandbox_oauth import sandbox_server
from tests.util import TIMEOUT
from wxpush.sandbox.persons import snapshot_openid, unionid_of, website_openid

APPID, SECRET = "wxconnecttest001", "connectsecret0123456789"
WEB, WEB_SECRET = "wxconnectweb0001", "connectwebsecret0123456"
BOB = "oSandboxBob00000000000000002"
BACK = "https://site.example/wechat/back?keep=1"
STATE = "St4te0123456789abcdef"
MS = int(TIMEOUT * 2000)
browser = test_widget.browser


@pytest.fixture
def base(tmp_path: Path, redis_url: str) -> Iterator[str]:
    with sandbox_server(tmp_path, redis_url, (APPID, SECRET, WEB, WEB_SECRET)) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=TIMEOUT) as c:
        yield c


def exchange(client: httpx.Client, code: str, appid: str, secret: str) -> dict[str, Any]:
    params = {"appid": appid, "secret": secret, "code": code, "grant_type": "authorization_code"}
    answer: dict[str, Any] = client.get("/sandbox/sns/oauth2/access_token", params=params).json()
    return answer


def unionid_at_the_account(client: httpx.Client, openid: str) -> str | None:
    creds = {"appid": APPID, "secret": SECRET, "grant_type": "client_credential"}
    token = client.get("/sandbox/cgi-bin/token", params=creds).json()["access_token"]
    info = client.get(
        "/sandbox/cgi-bin/user/info", params={"access_token": token, "openid": openid}
    )
    unionid: str | None = info.json().get("unionid")
    return unionid


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


# --- the website door: qrconnect and the phone ------------------------------------------------


def qrconnect(client: httpx.Client, **change: str) -> httpx.Response:
    params = {"appid": WEB, "scope": "snsapi_login", "redirect_uri": BACK, "state": STATE,
              "login_type": "jssdk", "self_redirect": "true", **change}  # fmt: skip
    return client.get("/sandbox/connect/qrconnect", params=params)


def phone_link(page: httpx.Response) -> str:
    link = re.search(r'href="([^"]+)"[^>]*\s+data-sandbox="connect-phone-link"', page.text)
    assert link, page.text
    return html.unescape(link[1])


def test_website_login_confirmed_on_the_phone(client: httpx.Client, base: str) -> None:
    page = qrconnect(client)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert re.search(r'data-sandbox="connect-qr"[^>]*>\s*<svg', page.text)
    phone = phone_link(page)
    assert phone.startswith(base + "/sandbox/phone/connect?uuid=")
    uuid = query(phone)["uuid"][0]
    poll = {"uuid": uuid}
    assert client.get("/sandbox/connect/poll", params=poll).json() == {"status": "waiting"}

    screen = client.get(phone)
    assert screen.status_code == 200
    for hook in ("person", "confirm", "decline", "result"):
        assert f'data-sandbox="{hook}"' in screen.text
    assert client.get("/sandbox/connect/poll", params=poll).json() == {"status": "scanned"}

    tap = {"uuid": uuid, "person": BOB, "confirm": True}
    assert client.post("/sandbox/phone/connect", json=tap).json() == {"outcome": "confirmed"}
    done = client.get("/sandbox/connect/poll", params=poll).json()
    assert done["status"] == "confirmed"
    assert done["location"].startswith("https://site.example/wechat/back?keep=1&code=")
    back = query(done["location"])
    assert back["state"] == [STATE] and back["keep"] == ["1"]
    again = client.post("/sandbox/phone/connect", json=tap)
    assert (again.status_code, again.json()["error"]) == (409, "answered")

    person = exchange(client, back["code"][0], WEB, WEB_SECRET)
    assert (person["openid"], person["scope"]) == (website_openid(WEB, BOB), "snsapi_login")
    assert person["unionid"] == unionid_of(BOB) == unionid_at_the_account(client, BOB)
    assert "is_snapshotuser" not in person
    assert exchange(client, back["code"][0], WEB, WEB_SECRET)["errcode"] == 40163


def test_website_login_declined_on_the_phone(client: httpx.Client) -> None:
    uuid = query(phone_link(qrconnect(client, state="")))["uuid"][0]
    tap = {"uuid": uuid, "person": BOB, "confirm": False}
    assert client.post("/sandbox/phone/connect", json=tap).json() == {"outcome": "declined"}
    done = client.get("/sandbox/connect/poll", params={"uuid": uuid}).json()
    assert done == {"status": "declined", "location": BACK + "&state="}


@pytest.mark.parametrize(
    "change",
    [{"appid": "wxunknown"}, {"appid": APPID}, {"appid": ""}, {"scope": "snsapi_base"},
     {"redirect_uri": "/relative"}, {"redirect_uri": "javascript:alert(1)"},
     {"redirect_uri": "ftp://site.example/"}, {"redirect_uri": "https://"},
     {"redirect_uri": "https://site.example/\r\nSet-Cookie: x=1"}, {"state": "not-letters"},
     {"state": "a" * 129}, {"response_type": "token"}],
)  # fmt: skip
def test_qrconnect_wrong_parameters(client: httpx.Client, change: dict[str, str]) -> None:
    page = qrconnect(client, **change)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert 'data-sandbox="wrong-parameters"' in page.text and "参数错误" in page.text
    assert "connect-qr" not in page.text


def test_the_phone_with_an_unknown_or_wrong_login(client: httpx.Client) -> None:
    gone = client.get("/sandbox/phone/connect", params={"uuid": "nope"})
    assert gone.status_code == 404 and 'data-sandbox="expired"' in gone.text
    assert client.get("/sandbox/connect/poll", params={"uuid": "nope"}).json() == {
        "status": "expired"
    }
    uuid = query(phone_link(qrconnect(client)))["uuid"][0]
    for body, status, error in [
        ({"uuid": "nope", "person": BOB, "confirm": True}, 404, "unknown_uuid"),
        ({"uuid": uuid, "person": "<b>", "confirm": True}, 400, "bad_request"),
        ({"uuid": uuid, "person": BOB, "confirm": "yes"}, 400, "bad_request"),
        ([uuid], 400, "bad_json"),
    ]:
        answer = client.post("/sandbox/phone/connect", json=body)
        assert (answer.status_code, answer.json()["error"]) == (status, error), body


def test_wxlogin_js_is_javascript(client: httpx.Client) -> None:
    script = client.get("/sandbox/connect/wxLogin.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert "window.WxLogin = function (opts)" in script.text
    assert "login_type=jssdk&self_redirect=" in script.text


# --- the oauth door: the consent inside WeChat -----------------------------------------------


def consent(client: httpx.Client, **change: str) -> httpx.Response:
    form = {"appid": APPID, "redirect_uri": BACK, "response_type": "code",
            "scope": "snsapi_base", "state": STATE, "person": BOB, "action": "continue",
            **change}  # fmt: skip
    return client.post("/sandbox/connect/oauth2/authorize", data=form)


def test_the_consent_page(client: httpx.Client) -> None:
    params = {"appid": APPID, "redirect_uri": BACK, "response_type": "code",
              "scope": "snsapi_userinfo", "state": STATE}  # fmt: skip
    page = client.get("/sandbox/connect/oauth2/authorize", params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hook in ("person", "continue", "decline", "snapshot", "new-person"):
        assert f'data-sandbox="{hook}"' in page.text
    assert f'value="{html.escape(BACK)}"' in page.text and "snsapi_userinfo" in page.text
    for change in [{"appid": WEB}, {"appid": "wxunknown"}, {"scope": "snsapi_login"},
                   {"response_type": ""}, {"redirect_uri": "data:text/html,hi"}]:  # fmt: skip
        wrong = client.get("/sandbox/connect/oauth2/authorize", params={**params, **change})
        assert wrong.status_code == 400 and 'data-sandbox="wrong-parameters"' in wrong.text


@pytest.mark.parametrize("scope", ["snsapi_base", "snsapi_userinfo"])
def test_consent_continue_gives_a_code_for_the_person(client: httpx.Client, scope: str) -> None:
    answer = consent(client, scope=scope)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(BACK + "&code=")
    back = query(location)
    assert back["state"] == [STATE]
    person = exchange(client, back["code"][0], APPID, SECRET)
    assert (person["openid"], person["scope"]) == (BOB, scope)
    # WeChat's exchange names the unionid for snsapi_userinfo; user/info always does
    assert person.get("unionid") == (unionid_of(BOB) if scope == "snsapi_userinfo" else None)
    assert unionid_at_the_account(client, person["openid"]) == unionid_of(BOB)


def test_consent_declined_or_as_a_snapshot_user(client: httpx.Client) -> None:
    declined = consent(client, action="decline")
    assert declined.status_code == 302 and declined.headers["location"] == (f"{BACK}&state={STATE}")
    snapshot = consent(client, scope="snsapi_userinfo", snapshot="1")
    person = exchange(client, query(snapshot.headers["location"])["code"][0], APPID, SECRET)
    assert (person["is_snapshotuser"], person["scope"]) == (1, "snsapi_base")
    assert person["openid"] == snapshot_openid(APPID, BOB) != BOB and "unionid" not in person


@pytest.mark.parametrize(
    "change",
    [{"redirect_uri": "javascript:alert(1)"}, {"appid": WEB}, {"person": ""},
     {"person": "x y"}, {"action": "maybe"}, {"state": "a+b"}, {"scope": "snsapi_login"}],
)  # fmt: skip
def test_consent_answer_never_goes_elsewhere(client: httpx.Client, change: dict[str, str]) -> None:
    answer = consent(client, **change)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert 'data-sandbox="wrong-parameters"' in answer.text


# --- WxLogin.js in a browser ------------------------------------------------------------------


@pytest.fixture
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    """A browser context; any uncaught error on its pages fails the test."""
    ctx = browser.new_context(locale="en-US")
    ctx.set_default_timeout(MS)
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    yield ctx
    ctx.close()
    assert errors == []


@pytest.fixture
def site(base: str) -> Iterator[str]:
    """Another site (another origin on the loopback) whose page embeds the website QR code as
    WeChat's docs show it: ``{site}/login?self_redirect=true|false``."""

    async def login(request: Request) -> HTMLResponse:
        self_redirect = request.query_params.get("self_redirect") == "true"
        return HTMLResponse(f"""<!doctype html><title>site</title><div id="login"></div>
<script src="{base}/sandbox/connect/wxLogin.js"></script>
<script>new WxLogin({{id: "login", appid: "{WEB}", scope: "snsapi_login",
  redirect_uri: encodeURIComponent("{base}/healthz"), state: "{STATE}",
  self_redirect: {"true" if self_redirect else "false"}}});</script>""")

    with serve(Starlette(routes=[Route("/login", login)])) as url:
        yield url


def embed(context: sync_api.BrowserContext, site: str, *, self_redirect: bool) -> sync_api.Page:
    page = context.new_page()
    page.goto(f"{site}/login?self_redirect={'true' if self_redirect else 'false'}")
    return page


def tap_on_the_phone(
    context: sync_api.BrowserContext, frame: sync_api.Frame, hook: str, words: str
) -> None:
    link = frame.locator('[data-sandbox="connect-phone-link"]').get_attribute("href")
    assert link
    phone = context.new_page()
    phone.goto(link)
    phone.select_option('[data-sandbox="person"]', BOB)
    phone.click(f'[data-sandbox="{hook}"]')
    sync_api.expect(phone.locator('[data-sandbox="result"]')).to_contain_text(words)


def test_wxlogin_embed_goes_to_redirect_uri_in_its_frame(
    context: sync_api.BrowserContext, site: str, client: httpx.Client
) -> None:
    page = embed(context, site, self_redirect=True)
    frame = page.locator("#login iframe").element_handle().content_frame()
    assert frame is not None
    sync_api.expect(frame.locator('[data-sandbox="connect-qr"] svg')).to_be_visible()
    sync_api.expect(frame.locator('[data-sandbox="connect-status"]')).to_have_text(
        "Scan with WeChat to log in"
    )
    tap_on_the_phone(context, frame, "confirm", "Confirmed")
    frame.wait_for_url(re.compile(r"/healthz\?code=[0-9a-f]+&state=" + STATE + "$"))
    assert page.url.startswith(site)  # the site's page stays; only the embed moved
    person = exchange(client, query(frame.url)["code"][0], WEB, WEB_SECRET)
    assert (person["openid"], person["unionid"]) == (website_openid(WEB, BOB), unionid_of(BOB))


def test_wxlogin_embed_takes_the_top_window_without_self_redirect(
    context: sync_api.BrowserContext, site: str, base: str
) -> None:
    page = embed(context, site, self_redirect=False)
    frame = page.locator("#login iframe").element_handle().content_frame()
    assert frame is not None
    tap_on_the_phone(context, frame, "decline", "Declined")
    page.wait_for_url(f"{base}/healthz?state={quote(STATE)}")
