"""The browser widget (static/wxpush.js) and the demo page in a real Chromium, via Playwright.

``wxpush demo`` runs as a real process; a second page plays the phone on the sandbox page.
Screenshots of each widget state go to tests/screenshots/ and are copied to static/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from tests.procs import run_demo
from tests.util import TIMEOUT, free_port, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
assert CHROMIUM, "chromium is not installed; run the README's test command"

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "screenshots"
PUBLISHED = ROOT / "static" / "screenshots"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
LOGGED_IN = '[data-demo="logged-in"]'
MS = int(TIMEOUT * 2000)

# WebSockets to the scene channel go to a port that refuses them: a real error, then close 1006.
BREAK_WEBSOCKETS = """
(() => {
  const Real = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    if (String(url).includes("/ws/")) url = "ws://127.0.0.1:1/";
    return new Real(url, protocols);
  };
  window.WebSocket.prototype = Real.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""

RECORD_CLOSES = """
(() => {
  window.__wsCloses = [];
  const Real = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const ws = new Real(url, protocols);
    ws.addEventListener("close", (ev) => window.__wsCloses.push(ev.code));
    return ws;
  };
  window.WebSocket.prototype = Real.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_demo(tmp_path_factory.mktemp("demo")) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    """An English browser context; any uncaught error on its pages fails the test."""
    ctx = browser.new_context(locale="en-US", viewport={"width": 560, "height": 720})
    ctx.set_default_timeout(MS)
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    yield ctx
    ctx.close()
    assert errors == []


def shot(page: sync_api.Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    PUBLISHED.mkdir(parents=True, exist_ok=True)
    target = page.locator("#me") if page.locator("#me").is_visible() else page.locator("#login")
    target.screenshot(path=SHOTS / f"{name}.png")
    # The published copy (for the README) is only written when missing or when asked for, so
    # a test run does not dirty the checkout (every QR code differs).
    if os.environ.get("WXPUSH_UPDATE_SCREENSHOTS") or not (PUBLISHED / f"{name}.png").exists():
        shutil.copyfile(SHOTS / f"{name}.png", PUBLISHED / f"{name}.png")


def open_widget(context: sync_api.BrowserContext, base: str) -> tuple[sync_api.Page, str]:
    """The demo page with a QR code on it; returns the page and the QR's phone-page URL."""
    page = context.new_page()
    page.goto(base + "/")
    qr = page.locator('[data-wxpush="qr"]')
    qr.wait_for(state="visible")
    wait_for(lambda: qr.evaluate("img => img.complete && img.naturalWidth > 0"))
    href = qr_href(page)
    assert href and "/sandbox/phone?ticket=" in href
    return page, href


def phone_page(context: sync_api.BrowserContext, qr_url: str) -> sync_api.Page:
    phone = context.new_page()
    phone.goto(qr_url)
    return phone


def choose_new_person(phone: sync_api.Page) -> str:
    phone.locator('[data-sandbox="new-person"]').click()
    return str(phone.locator('[data-sandbox="person"]').input_value())


def bind_over_http(base: str, openid: str, number: str) -> None:
    """Makes ``openid`` a known person (phone bound) through the HTTP API and the sandbox."""
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        created = client.post("/api/v1/scenes").json()
        ticket = created["qr_url"].split("ticket=")[1]
        scan = {"ticket": ticket, "openid": openid, "follow": True}
        assert client.post("/sandbox/phone/scan", json=scan).status_code == 200
        scene = created["scene"]
        assert client.post(f"/api/v1/scenes/{scene}/sms", json={"phone": number}).status_code == 202
        code = client.get("/sandbox/phone/sms", params={"phone": number}).json()["code"]
        bound = client.post(f"/api/v1/scenes/{scene}/bind", json={"phone": number, "code": code})
        assert bound.status_code == 200, bound.text


def scan_known(context: sync_api.BrowserContext, qr_url: str, openid: str) -> None:
    """Taps Scan on the phone page as ``openid``."""
    phone = phone_page(context, qr_url)
    phone.locator('[data-sandbox="person"]').evaluate(
        "(sel, id) => sel.add(new Option(id, id, true, true))", openid
    )
    phone.locator('[data-sandbox="scan"]').click()


def assert_logged_in(page: sync_api.Page) -> None:
    who = page.locator(LOGGED_IN)
    sync_api.expect(who).to_contain_text("Logged in as user", timeout=MS)


def qr_href(page: sync_api.Page) -> str:
    """The QR code's link, once the widget has its scene (the link is in the page before its
    ``href`` is)."""
    return page.locator('[data-wxpush="qr-link"][href]').get_attribute("href") or ""


def test_known_person_is_logged_in_by_the_push(demo: str, context: sync_api.BrowserContext) -> None:
    """The tokens come in a frame on the page's socket: no read, no long-poll (how fast is
    measured by bench/push.py, not asserted)."""
    openid = "oWidgetKnown0000000000000001"
    bind_over_http(demo, openid, "13900139101")
    page, qr_url = open_widget(context, demo)
    sync_api.expect(page.locator('[data-wxpush="status"]')).to_contain_text("Scan the QR code")
    assert page.locator("#login").get_attribute("data-wxpush-transport") == "ws"
    shot(page, "1-qr")
    frames: list[dict[str, object]] = []
    page.on(
        "websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(json.loads(data)))
    )
    old_src = page.locator('[data-wxpush="qr"]').get_attribute("src") or ""
    page.locator('[data-wxpush="refresh"]').click()
    sync_api.expect(page.locator('[data-wxpush="qr"]')).not_to_have_attribute("src", old_src)
    qr_url = qr_href(page)
    assert "/sandbox/phone?ticket=" in qr_url
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    reads: list[str] = []
    page.on("request", lambda request: reads.append(request.url))
    scan_known(context, qr_url, openid)
    assert_logged_in(page)
    assert [f["status"] for f in frames] == ["LOOP", "REG"]
    assert {"access_token", "refresh_token"} <= frames[1].keys()
    assert [url for url in reads if "/api/v1/scenes" in url] == []
    sync_api.expect(page.locator(LOGGED_IN)).to_contain_text("139****9101")
    assert navigations == []  # no reload
    shot(page, "5-logged-in")

    page.locator('[data-demo="logout"]').click()
    sync_api.expect(page.locator('[data-wxpush="qr"]')).to_be_visible()
    assert page.locator('[data-wxpush="qr-link"]').get_attribute("href") != qr_url


def test_new_person_binds_a_phone(demo: str, context: sync_api.BrowserContext) -> None:
    number = "13900139102"
    page, qr_url = open_widget(context, demo)
    phone = phone_page(context, qr_url)
    choose_new_person(phone)
    phone.locator('[data-sandbox="follow"]').click()

    field = page.locator('[data-wxpush="phone"]')
    sync_api.expect(field).to_be_visible()
    assert field.get_attribute("type") == "tel"
    code_field = page.locator('[data-wxpush="code"]')
    assert code_field.get_attribute("autocomplete") == "one-time-code"
    assert code_field.get_attribute("inputmode") == "numeric"
    sync_api.expect(field).to_be_focused()
    shot(page, "2-phone-form")

    field.fill(number)
    field.press("Enter")  # the keyboard sends the code
    send = page.locator('[data-wxpush="send-code"]')
    sync_api.expect(send).to_be_disabled()
    sync_api.expect(send).to_contain_text("Resend in")

    phone.locator('[data-sandbox="phone"]').fill(number)
    phone.locator('[data-sandbox="sms-lookup"]').click()
    sms = phone.locator('[data-sandbox="sms-code"]')
    sync_api.expect(sms).to_have_text(re.compile(r"^\d{6}$"))
    code = sms.inner_text().strip()
    assert code.isdigit() and len(code) == 6

    wrong = "000000" if code != "000000" else "111111"
    code_field.fill(wrong)
    with page.expect_response(lambda answer: answer.url.endswith("/bind")) as bound:
        page.locator('[data-wxpush="submit"]').click()
    assert (bound.value.status, bound.value.json()["error"]) == (400, "wrong_code")
    error = page.locator('[data-wxpush="error"]')
    sync_api.expect(error).to_have_text("The code is wrong; 4 tries left.")
    shot(page, "3-wrong-code")

    code_field.fill(code)
    code_field.press("Enter")
    assert_logged_in(page)
    sync_api.expect(page.locator(LOGGED_IN)).to_contain_text("139****9102")


def test_expired_qr_is_replaced(tmp_path: Path, context: sync_api.BrowserContext) -> None:
    with run_demo(tmp_path, WXPUSH_QR_EXPIRE_SECONDS="3") as base:
        page, qr_url = open_widget(context, base)
        first = page.locator('[data-wxpush="qr"]').get_attribute("src")
        sync_api.expect(page.locator('[data-wxpush="qr"]')).not_to_have_attribute(
            "src", first or "", timeout=3000 + MS
        )
        assert page.locator('[data-wxpush="qr-link"]').get_attribute("href") != qr_url
        sync_api.expect(page.locator('[data-wxpush="status"]')).to_contain_text("expired")
        shot(page, "4-expired-renewed")


def test_falls_back_to_long_poll_then_polling(demo: str, context: sync_api.BrowserContext) -> None:
    openid = "oWidgetFallback0000000000001"
    bind_over_http(demo, openid, "13900139103")
    context.add_init_script(BREAK_WEBSOCKETS)

    page, qr_url = open_widget(context, demo)
    sync_api.expect(page.locator('[data-wxpush="status"]')).to_contain_text("long requests")
    assert page.locator("#login").get_attribute("data-wxpush-transport") == "wait"
    scan_known(context, qr_url, openid)
    assert_logged_in(page)
    page.close()

    waits: list[str] = []

    def block(route: sync_api.Route) -> None:
        waits.append(route.request.url)
        route.abort()

    context.route("**/wait*", block)
    page, qr_url = open_widget(context, demo)
    sync_api.expect(page.locator('[data-wxpush="status"]')).to_contain_text("every few seconds")
    assert page.locator("#login").get_attribute("data-wxpush-transport") == "poll"
    assert waits
    scan_known(context, qr_url, openid)
    assert_logged_in(page)


def test_claimed_elsewhere_and_chinese(demo: str, browser: sync_api.Browser) -> None:
    """A REG without tokens (another tab claimed them) is said in words; zh text by locale."""
    ctx = browser.new_context(locale="zh-CN")
    ctx.set_default_timeout(MS)
    try:
        ctx.add_init_script(BREAK_WEBSOCKETS)
        ctx.route("**/wait*", lambda route: route.abort())
        page = ctx.new_page()
        page.goto(demo + "/")
        status = page.locator('[data-wxpush="status"]')
        sync_api.expect(status).to_contain_text("微信")
        assert page.locator('[data-wxpush="refresh"]').inner_text() == "换一个二维码"
        href = qr_href(page)
        assert href
        sync_api.expect(page.locator("#login")).to_have_attribute("data-wxpush-transport", "poll")
        # Another tab (here: this test) reads the REG first and takes the tokens.
        openid = "oWidgetClaimed00000000000001"
        bind_over_http(demo, openid, "13900139104")
        with httpx.Client(base_url=demo, timeout=TIMEOUT) as client:
            ticket = href.split("ticket=")[1]
            scan = {"ticket": ticket, "openid": openid, "follow": False}
            assert client.post("/sandbox/phone/scan", json=scan).status_code == 200
            scene = page.evaluate(
                "() => new URL(document.querySelector('[data-wxpush=qr]').src).pathname"
            ).split("/")[4]
            taken = client.get(f"/api/v1/scenes/{scene}").json()
            assert taken["status"] == "REG" and "access_token" in taken
        sync_api.expect(status).to_contain_text("另一个标签页")
        assert page.locator(LOGGED_IN).is_hidden()
    finally:
        ctx.close()


def test_reconnects_after_a_server_restart(
    tmp_path: Path, context: sync_api.BrowserContext
) -> None:
    """Shutdown closes the socket with 1012; the widget reconnects and carries on."""
    port = free_port()
    context.add_init_script(RECORD_CLOSES)
    with run_demo(tmp_path, port) as base:
        page, qr_url = open_widget(context, base)
        first = page.locator('[data-wxpush="qr"]').get_attribute("src")
    # The embedded store went with the process: the old scene is unknown to the new one, so the
    # reconnected socket hears EXPIRED and the widget shows a new QR code by itself.
    with run_demo(tmp_path, port) as base:
        sync_api.expect(page.locator('[data-wxpush="qr"]')).not_to_have_attribute(
            "src", first or "", timeout=MS * 2
        )
        assert page.locator("#login").get_attribute("data-wxpush-transport") == "ws"
        assert page.evaluate("window.__wsCloses")[0] == 1012
        openid = "oWidgetRestart00000000000001"
        bind_over_http(base, openid, "13900139105")
        href = page.locator('[data-wxpush="qr-link"]').get_attribute("href")
        assert href and href != qr_url
        scan_known(context, href, openid)
        assert_logged_in(page)
