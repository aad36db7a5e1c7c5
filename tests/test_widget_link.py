"""Linking another WeChat from the widget (``link``, SPEC §15) in a real Chromium: the demo
page's "Link another WeChat" mounts a link scene with the person's access token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright import sync_api

from tests import test_widget
from tests.test_widget import MS, assert_logged_in, bind_over_http, open_widget, scan_known
from tests.test_widget_doors import browsing

browser = test_widget.browser
demo = test_widget.demo
LINK = "#link"
IDENTITIES = '[data-demo="identities"]'


@pytest.fixture
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    with browsing(browser) as ctx:
        yield ctx


def logged_in(context: sync_api.BrowserContext, demo: str, openid: str) -> sync_api.Page:
    page, qr_url = open_widget(context, demo)
    scan_known(context, qr_url, openid)
    assert_logged_in(page)
    sync_api.expect(page.locator(IDENTITIES)).to_have_text("WeChat identities: wechat_mp …0001")
    return page


def link_qr(page: sync_api.Page) -> str:
    page.locator('[data-demo="link"]').click()
    link = page.locator(f'{LINK} [data-wxpush="qr-link"][href]')  # once its scene is there
    link.wait_for(state="visible")
    href = link.get_attribute("href")
    assert href and "/sandbox/phone?ticket=" in href
    return href


def test_a_person_links_a_second_wechat_from_the_page(
    demo: str, context: sync_api.BrowserContext
) -> None:
    bind_over_http(demo, "oLinkFirst000000000000000001", "13900139301")
    page = logged_in(context, demo, "oLinkFirst000000000000000001")
    scan_known(context, link_qr(page), "oLinkSecond00000000000000002")
    status = page.locator(f'{LINK} [data-wxpush="status"]')
    sync_api.expect(status).to_have_text("WeChat linked to your account.", timeout=MS)
    sync_api.expect(page.locator(IDENTITIES)).to_have_text(
        "WeChat identities: wechat_mp …0001, wechat_mp …0002"
    )


def test_a_wechat_of_another_person_is_refused_in_words(
    demo: str, context: sync_api.BrowserContext
) -> None:
    bind_over_http(demo, "oLinkMine0000000000000000001", "13900139302")
    bind_over_http(demo, "oLinkTheirs00000000000000003", "13900139303")
    page = logged_in(context, demo, "oLinkMine0000000000000000001")
    scan_known(context, link_qr(page), "oLinkTheirs00000000000000003")
    error = page.locator(f'{LINK} [data-wxpush="error"]')
    sync_api.expect(error).to_have_text(
        "This WeChat already belongs to another account; nothing was changed.", timeout=MS
    )
    sync_api.expect(page.locator(IDENTITIES)).to_have_text("WeChat identities: wechat_mp …0001")
