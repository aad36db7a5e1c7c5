"""The widget's doors (SPEC §13) and the demo's door switch, in a real Chromium against
``wxpush demo``.

The sandbox plays WeChat: its WxLogin.js embeds the website QR code, its phone confirm page
plays the person's phone, and its consent page plays WeChat's OAuth screen inside WeChat. A
sandbox person is one id through every door, so the same person is the same user (``sub``)
whichever door they take.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api

from tests import test_widget
from tests.procs import ServerProcess, run_demo
from tests.test_widget import LOGGED_IN, MS, qr_href, scan_known, shot
from tests.util import TIMEOUT

STORED = "wxpush:scene"  # where the widget keeps the in-WeChat door's scene
browser = test_widget.browser
IN_WECHAT = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36 MicroMessenger/8.0.47.2560(0x28002F30) "
    "WeChat/arm64 Weixin NetType/WIFI Language/zh_CN"
)
STATUS = '[data-wxpush="status"]'
DOOR = '[data-demo="door"]'
WXLOGIN_FRAME = '[data-wxpush="wxlogin"] iframe'
BUTTON = '[data-wxpush="wechat-login"]'


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_demo(tmp_path_factory.mktemp("doors")) as base:
        yield base


@contextlib.contextmanager
def browsing(browser: sync_api.Browser, **options: Any) -> Iterator[sync_api.BrowserContext]:
    """A browser context (English unless told); an uncaught error on any of its pages fails."""
    ctx = browser.new_context(**{"locale": "en-US", "viewport": {"width": 560, "height": 900}}
                              | options)  # fmt: skip
    ctx.set_default_timeout(MS)
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    try:
        yield ctx
    finally:
        ctx.close()
    assert errors == []


@pytest.fixture
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    with browsing(browser) as ctx:
        yield ctx


def new_person() -> str:
    """A sandbox person nobody has seen: an id shaped like the phone page's."""
    return "oDoors" + secrets.token_hex(11)


def claims(access_token: str) -> dict[str, Any]:
    """The access token's claims (the test reads them; the server's signature is its business)."""
    payload = access_token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def pick_person(page: sync_api.Page, person: str) -> None:
    """Chooses ``person`` on a sandbox page's ``data-sandbox="person"`` (a select or a field)."""
    page.locator('[data-sandbox="person"]').evaluate(
        """(el, id) => {
            if (el.tagName === "SELECT") el.add(new Option(id, id, true, true));
            else el.value = id;
            el.dispatchEvent(new Event("change", {bubbles: true}));
        }""",
        person,
    )


def record_frames(page: sync_api.Page) -> list[dict[str, Any]]:
    """Every frame the page's WebSockets receive, in order (across the page's navigations)."""
    frames: list[dict[str, Any]] = []
    page.on(
        "websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(json.loads(data)))
    )
    return frames


def stored_scene(page: sync_api.Page) -> Any:
    return page.evaluate("key => JSON.parse(sessionStorage.getItem(key))", STORED)


def choose_door(page: sync_api.Page, door: str) -> None:
    """The demo page's door switch, as a person uses it."""
    page.locator(DOOR).select_option(door)
    assert page.evaluate("() => new URL(location.href).searchParams.get('door')") == (
        None if door == "auto" else door
    )


def logged_in_as(page: sync_api.Page, sub: str) -> None:
    sync_api.expect(page.locator(LOGGED_IN)).to_contain_text(f"Logged in as user {sub}")


def sms_code(base: str, number: str) -> str:
    """The latest code the demo's console SMS sent to ``number`` (the sandbox phone's inbox)."""
    answer = httpx.get(base + "/sandbox/phone/sms", params={"phone": number}, timeout=TIMEOUT)
    code = str(answer.json()["code"])
    assert re.fullmatch(r"\d{6}", code), code
    return code


def website_qr(page: sync_api.Page) -> str:
    """Waits for the sandbox's website QR code in the widget; returns its phone confirm link."""
    frame = page.locator(WXLOGIN_FRAME)
    sync_api.expect(frame).to_have_count(1)
    assert "/sandbox/connect/qrconnect?" in (frame.get_attribute("src") or "")
    link = page.frame_locator(WXLOGIN_FRAME).locator('[data-sandbox="connect-phone-link"]')
    href: str = link.evaluate("a => a.href")
    assert href.startswith("http")
    return href


@pytest.fixture(scope="module")
def website_user(demo: str, browser: sync_api.Browser) -> dict[str, str]:
    """A new person logs in through the website door and binds a phone; returns the person's
    sandbox id and their user id (``sub``)."""
    person, number = new_person(), "13900139201"
    with browsing(browser) as ctx:
        page = ctx.new_page()
        page.goto(demo + "/")
        choose_door(page, "website")
        confirm_link = website_qr(page)
        sync_api.expect(page.locator(STATUS)).to_have_text(
            "Scan with WeChat and confirm on your phone."
        )
        sync_api.expect(page.locator('[data-wxpush="countdown"]')).to_contain_text("valid for")
        page.frame_locator(WXLOGIN_FRAME).locator('[data-sandbox="connect-qr"] svg').wait_for()
        shot(page, "6-website-qr")
        assert page.locator('[data-wxpush="qr"]').count() == 0
        assert page.locator(BUTTON).count() == 0

        phone = ctx.new_page()
        phone.goto(confirm_link)
        pick_person(phone, person)
        phone.locator('[data-sandbox="confirm"]').click()

        field = page.locator('[data-wxpush="phone"]')
        sync_api.expect(field).to_be_visible()
        sync_api.expect(field).to_be_focused()
        sync_api.expect(page.locator(STATUS)).to_contain_text("Enter your phone number")
        sync_api.expect(page.locator(WXLOGIN_FRAME)).to_be_hidden()
        field.fill(number)
        page.locator('[data-wxpush="send-code"]').click()
        sync_api.expect(page.locator('[data-wxpush="send-code"]')).to_contain_text("Resend in")
        page.locator('[data-wxpush="code"]').fill(sms_code(demo, number))
        with page.expect_response(lambda answer: answer.url.endswith("/bind")) as bound:
            page.locator('[data-wxpush="submit"]').click()
        tokens = bound.value.json()
        said = claims(tokens["access_token"])
        assert said["amr"] == ["wechat_open"]
        logged_in_as(page, said["sub"])
        sync_api.expect(page.locator(LOGGED_IN)).to_contain_text("139****9201")
    return {"person": person, "sub": said["sub"]}


def test_follow_door_is_unchanged(demo: str, context: sync_api.BrowserContext) -> None:
    """By default (a browser outside WeChat) and when chosen: the service account's QR code."""
    page = context.new_page()
    page.goto(demo + "/")
    assert page.locator(DOOR).input_value() == "auto"
    qr = page.locator('[data-wxpush="qr"]')
    sync_api.expect(qr).to_be_visible()
    sync_api.expect(page.locator(STATUS)).to_contain_text("Scan the QR code with WeChat")
    assert page.locator(BUTTON).count() == 0 and page.locator(WXLOGIN_FRAME).count() == 0
    assert "/sandbox/phone?ticket=" in qr_href(page)
    with page.expect_request(lambda r: r.url.endswith("/api/v1/scenes")) as created:
        choose_door(page, "follow")
    assert "kind" not in (created.value.post_data_json or {})  # what any server makes
    sync_api.expect(qr).to_be_visible()
    sync_api.expect(page.locator(STATUS)).to_contain_text("Scan the QR code with WeChat")
    page.reload()  # the chosen door is in the address
    assert page.locator(DOOR).input_value() == "follow"
    sync_api.expect(qr).to_be_visible()


def test_website_door_then_the_follow_door_is_the_same_user(
    demo: str, context: sync_api.BrowserContext, website_user: dict[str, str]
) -> None:
    """The person who came in through the website door (and bound a phone there) scans the
    service account's QR code: logged in at once, no phone step, the same user."""
    page = context.new_page()
    page.goto(demo + "/?door=follow")
    frames = record_frames(page)
    qr_url = qr_href(page)
    assert "/sandbox/phone?ticket=" in qr_url
    scan_known(context, qr_url, website_user["person"])
    logged_in_as(page, website_user["sub"])
    assert [f["status"] for f in frames] == ["LOOP", "REG"]  # no NOT_REG: no phone step
    said = claims(frames[-1]["access_token"])
    assert (said["sub"], said["amr"]) == (website_user["sub"], ["wechat_mp"])


def test_website_door_renews_its_qr_code_with_one_script(
    demo: str, context: sync_api.BrowserContext
) -> None:
    page = context.new_page()
    page.goto(demo + "/?door=website")
    website_qr(page)
    first = page.locator(WXLOGIN_FRAME).get_attribute("src")
    page.locator('[data-wxpush="refresh"]').click()
    sync_api.expect(page.locator(WXLOGIN_FRAME)).not_to_have_attribute("src", first or "")
    website_qr(page)
    scripts = page.evaluate("() => [...document.scripts].map(s => s.src).filter(Boolean)")
    loaded = [src for src in scripts if "/sandbox/connect/" in src]
    assert loaded == [demo + "/sandbox/connect/wxLogin.js"]


def test_in_wechat_door_leaves_for_consent_and_resumes(
    demo: str, browser: sync_api.Browser, website_user: dict[str, str]
) -> None:
    """Inside WeChat: a button, not a QR code; WeChat's consent, then back on the page, logged
    in by the scene the widget kept: the same user as through the website door."""
    with browsing(browser, user_agent=IN_WECHAT) as ctx:
        page = ctx.new_page()
        frames = record_frames(page)
        with page.expect_response(lambda r: r.url.endswith("/api/v1/scenes")) as created:
            page.goto(demo + "/#fragment")
        scene = created.value.json()
        assert scene["kind"] == "oauth"
        assert (created.value.request.post_data_json or {})["return_to"] == demo + "/"
        button = page.locator(BUTTON)
        sync_api.expect(button).to_be_enabled()
        sync_api.expect(button).to_have_text("Log in with WeChat")
        sync_api.expect(page.locator(STATUS)).to_have_text("Tap the button to log in with WeChat.")
        assert page.locator('[data-wxpush="qr"]').count() == 0
        sync_api.expect(page.locator('[data-wxpush="refresh"]')).to_be_hidden()
        shot(page, "7-in-wechat-button")

        button.click()
        page.wait_for_url(re.compile(re.escape(demo) + r"/sandbox/connect/oauth2/authorize\?"))
        assert scene["scene"] not in page.url
        kept = stored_scene(page)
        assert (kept["scene"], kept["kind"]) == (scene["scene"], "oauth")
        assert kept["server"] == demo + "/"
        pick_person(page, website_user["person"])
        page.locator('[data-sandbox="continue"]').click()

        page.wait_for_url(demo + "/")  # 303 back to return_to, nothing added to it
        logged_in_as(page, website_user["sub"])
        assert stored_scene(page) is None
        assert [f["status"] for f in frames][-1] == "REG"
        said = claims(frames[-1]["access_token"])
        assert (said["sub"], said["amr"]) == (website_user["sub"], ["wechat_mp"])


def test_new_door_texts_in_chinese_and_english(demo: str, browser: sync_api.Browser) -> None:
    texts = {
        "zh-CN": ("微信登录", "请点击按钮，用微信登录。", "请用微信扫码，并在手机上确认登录。"),
        "en-US": (
            "Log in with WeChat",
            "Tap the button to log in with WeChat.",
            "Scan with WeChat and confirm on your phone.",
        ),
    }
    for locale, (button, tap, scan) in texts.items():
        with browsing(browser, locale=locale, user_agent=IN_WECHAT) as ctx:
            page = ctx.new_page()
            page.goto(demo + "/")
            sync_api.expect(page.locator(BUTTON)).to_have_text(button)
            sync_api.expect(page.locator(STATUS)).to_have_text(tap)
            sync_api.expect(page.locator(".wxpush-title")).to_have_text(button)
            choose_door(page, "website")
            website_qr(page)
            sync_api.expect(page.locator(STATUS)).to_have_text(scan)


def plant(page: sync_api.Page, base: str, scene: dict[str, Any], expires_at: str) -> None:
    """Keeps ``scene`` in the page's sessionStorage as the in-WeChat door does."""
    fields = ("scene", "kind", "ws_url", "wait_url")
    record = {"server": base + "/", "expires_at": expires_at} | {k: scene[k] for k in fields}
    value = json.dumps(record)
    page.evaluate("([key, value]) => sessionStorage.setItem(key, value)", [STORED, value])


def test_an_expired_kept_scene_is_not_resumed(demo: str, context: sync_api.BrowserContext) -> None:
    """A kept scene whose time is up is dropped and a new one starts, even though the server
    would still hand out its tokens; the same scene kept with time left logs in."""
    person = new_person()
    with httpx.Client(base_url=demo, timeout=TIMEOUT) as client:
        scene = client.post("/api/v1/scenes").json()
        sub = bind(client, scene, person, "13900139202")  # scene is REG, tokens unclaimed
        scene = client.post("/api/v1/scenes").json()
        ticket = scene["qr_url"].split("ticket=")[1]
        scan = {"ticket": ticket, "openid": person, "follow": False}
        assert client.post("/sandbox/phone/scan", json=scan).status_code == 200

    page = context.new_page()
    page.goto(demo + "/static/wxpush.css")  # the demo's origin, for its sessionStorage
    plant(page, demo, scene, "2000-01-01T00:00:00+00:00")
    page.goto(demo + "/?door=oauth")
    sync_api.expect(page.locator(BUTTON)).to_be_enabled()  # a new scene of the page's door
    sync_api.expect(page.locator(STATUS)).to_have_text("Tap the button to log in with WeChat.")
    assert stored_scene(page) is None
    assert page.locator(LOGGED_IN).is_hidden()

    plant(page, demo, scene, scene["expires_at"])
    page.reload()
    logged_in_as(page, sub)  # its tokens were still there: the expired copy claimed nothing
    assert stored_scene(page) is None


def bind(client: httpx.Client, scene: dict[str, Any], person: str, number: str) -> str:
    """Makes ``person`` known (a follow and a phone bound) on ``scene``; returns their user id."""
    ticket, api = scene["qr_url"].split("ticket=")[1], f"/api/v1/scenes/{scene['scene']}"
    scan = {"ticket": ticket, "openid": person, "follow": True}
    assert client.post("/sandbox/phone/scan", json=scan).status_code == 200
    assert client.post(api + "/sms", json={"phone": number}).status_code == 202
    code = client.get("/sandbox/phone/sms", params={"phone": number}).json()["code"]
    bound = client.post(api + "/bind", json={"phone": number, "code": code})
    assert bound.status_code == 200, bound.text
    return str(bound.json()["user"]["id"])


def test_a_door_the_server_has_not_set_up_is_said_in_words(
    tmp_path: Path, browser: sync_api.Browser
) -> None:
    """A server with a service account only: the website door is refused (kind_unavailable),
    said in the page's language and handed to onError (the demo page logs it); a new try is
    refused the same way."""
    env = {"WXPUSH_APPID": "wx1", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok"}
    server = ServerProcess(env, tmp_path).start()
    said = {
        "en-US": "This way of logging in with WeChat is not set up on this server.",
        "zh-CN": "此服务器没有开通这种微信登录方式。",
    }
    try:
        for locale, text in said.items():
            with browsing(browser, locale=locale) as ctx:
                refused_website_door(ctx, server.url, text)
    finally:
        server.stop()


def refused_website_door(ctx: sync_api.BrowserContext, base: str, text: str) -> None:
    page = ctx.new_page()
    warnings: list[sync_api.ConsoleMessage] = []
    page.on("console", lambda m: warnings.append(m) if m.type == "warning" else None)
    created: list[int] = []
    page.on("response", lambda r: created.append(r.status) if "/scenes" in r.url else None)
    page.goto(base + "/?door=website")
    error = page.locator('[data-wxpush="error"]')
    sync_api.expect(error).to_have_text(text)
    assert created == [400]
    assert [w.args[1].json_value()["error"] for w in warnings] == ["kind_unavailable"]
    with page.expect_response(lambda r: "/scenes" in r.url):
        page.locator('[data-wxpush="refresh"]').click()
    sync_api.expect(error).to_have_text(text)
    assert created == [400, 400]
