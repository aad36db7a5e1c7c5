"""Every WeChat door to tokens, and one person across them (SPEC §12, §13).

A real uvicorn server, a real redis-server, a real SQLite file and a real PostgreSQL, and the
fake WeChat speaking WeChat's JSON (``sns/oauth2/access_token``, ``user/info``) and redirect
shapes: a code comes back on ``redirect_uri?code=…&state=…`` as WeChat would send it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import jwt
import pytest

from tests import fakewechat, test_login
from tests.test_login import NEW_OPENID, Site, count_rows
from tests.util import wait_for

fake_wechat = fakewechat.fake_wechat
database_url, sms_inbox, start = test_login.database_url, test_login.sms_inbox, test_login.start
WEB_OPENID = "oWebPerson00000000000000001"  # the same person's openid at the website app
UNIONID = "uPersonUnion000000000000001"
EXCHANGE = "/sns/oauth2/access_token"
USER_INFO = "/cgi-bin/user/info"


def doors_env(fake: fakewechat.FakeWeChat, **extra: str) -> dict[str, str]:
    return {
        "WXPUSH_WEBSITE_APPID": fake.website_appid,
        "WXPUSH_WEBSITE_SECRET": fake.website_secret,
        "WXPUSH_WECHAT_CONNECT_BASE": "https://open.weixin.qq.com",
        **extra,
    }


@pytest.fixture
def doors(start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat) -> Site:
    return start(**doors_env(fake_wechat, WXPUSH_UNIONID="1"))


def new_scene(site: Site, kind: str, **body: Any) -> dict[str, Any]:
    answer = site.client.post("/api/v1/scenes", json={"kind": kind, **body})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def state_of(created: dict[str, Any]) -> str:
    """The state in the WeChat URL the scene answers (what WeChat hands back)."""
    query = parse_qs(urlsplit(created["authorize_url"]).query)
    return query["state"][0]


def redirect_uri(created: dict[str, Any]) -> str:
    return parse_qs(urlsplit(created["authorize_url"]).query)["redirect_uri"][0]


def come_back(
    site: Site, created: dict[str, Any], code: str | None, **headers: str
) -> httpx.Response:
    """The browser arrives at ``redirect_uri`` as WeChat sends it back."""
    params = (
        {"state": state_of(created)} if code is None else {"code": code, "state": state_of(created)}
    )
    return site.client.get(redirect_uri(created), params=params, headers=headers)


def website_code(site: Site, openid: str = WEB_OPENID, **kwargs: Any) -> str:
    return site.fake.authorize(site.fake.website_appid, openid, **kwargs)


def oauth_code(site: Site, openid: str = NEW_OPENID, **kwargs: Any) -> str:
    return site.fake.authorize(site.fake.appid, openid, scope="snsapi_base", **kwargs)


def amr(tokens: dict[str, Any]) -> list[str]:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return list(claims["amr"])


def assert_page(answer: httpx.Response, status: int, hook: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert f'data-wxpush-page="{hook}"' in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"


# -- each door, end to end ----------------------------------------------------------------


def test_the_website_door_answers_wechats_qr_options(doors: Site) -> None:
    created = new_scene(doors, "website")
    assert created["kind"] == "website" and created["status"] == "LOOP"
    assert "qr_url" not in created and "qr_image" not in created
    url = urlsplit(created["authorize_url"])
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "open.weixin.qq.com",
        "/connect/qrconnect",
    )
    assert url.fragment == "wechat_redirect"
    query = parse_qs(url.query)
    assert query["appid"] == [doors.fake.website_appid] and query["scope"] == ["snsapi_login"]
    assert query["response_type"] == ["code"]
    state = query["state"][0]
    assert state.isalnum() and state.isascii() and 32 <= len(state) <= 128
    assert created["scene"] not in created["authorize_url"]
    assert redirect_uri(created).endswith("/wechat/website/oauth/redirect")
    assert created["wxlogin"] == {
        "appid": doors.fake.website_appid, "scope": "snsapi_login",
        "redirect_uri": quote(redirect_uri(created), safe=""), "state": state,
        "self_redirect": True,
    }  # fmt: skip
    assert created["wxlogin_script"].startswith("https://res.wx.qq.com/")
    assert 0 < created["expires_in"] <= 600


def test_a_new_person_through_the_website_door_binds_a_phone(doors: Site) -> None:
    created = new_scene(doors, "website")
    answer = come_back(doors, created, website_code(doors, unionid=UNIONID))
    assert_page(answer, 200, "finish_on_screen")
    assert doors.poll(created["scene"]) == {"status": "NOT_REG", "code": 4}
    tokens = doors.bind(created["scene"])
    assert tokens["user"]["new"] is True and amr(tokens) == ["wechat_open"]
    refreshed = doors.client.post(
        "/api/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200 and amr(refreshed.json()) == ["wechat_open"]


def test_a_known_person_through_the_website_door_is_logged_in_once(doors: Site) -> None:
    first = new_scene(doors, "website")
    come_back(doors, first, website_code(doors))
    user = doors.bind(first["scene"])["user"]["id"]
    created = new_scene(doors, "website")
    answer = come_back(doors, created, website_code(doors), **{"Accept-Language": "zh-CN,zh;q=0.9"})
    assert_page(answer, 200, "logged_in")
    assert "登录成功" in answer.text
    tokens = doors.poll(created["scene"])
    assert tokens["status"] == "REG" and tokens["user"] == {"id": user, "new": False}
    assert amr(tokens) == ["wechat_open"]
    assert doors.poll(created["scene"]) == {"status": "REG", "code": 3, "claimed": True}


def test_the_in_wechat_door_sends_the_person_back_to_return_to(doors: Site) -> None:
    back = str(doors.client.base_url) + "/shop/cart?item=1"
    created = new_scene(doors, "oauth", return_to=back)
    url = urlsplit(created["authorize_url"])
    assert url.path == "/connect/oauth2/authorize" and url.fragment == "wechat_redirect"
    query = parse_qs(url.query)
    assert query["appid"] == [doors.fake.appid] and query["scope"] == ["snsapi_base"]
    assert redirect_uri(created).endswith("/wechat/default/oauth/redirect")
    assert "wxlogin" not in created
    answer = come_back(doors, created, oauth_code(doors))
    assert answer.status_code == 303
    assert answer.headers["location"] == back  # nothing added: no token, code or scene id
    assert doors.poll(created["scene"])["status"] == "NOT_REG"
    tokens = doors.bind(created["scene"])
    assert amr(tokens) == ["wechat_mp"]
    # the same openid through the follow door is the same person: no phone step
    follow = doors.new_scene()
    assert doors.scan(follow, NEW_OPENID) == "Logged in"
    assert doors.poll(follow["scene"])["user"]["id"] == tokens["user"]["id"]


@pytest.mark.parametrize("kind", ["follow", "website", "oauth"])
def test_each_door_hands_its_tokens_out_once(doors: Site, kind: str) -> None:
    created = doors.new_scene() if kind == "follow" else new_scene(doors, kind)
    if kind == "follow":
        doors.scan(created, NEW_OPENID)
    elif kind == "website":
        come_back(doors, created, website_code(doors))
    else:
        come_back(doors, created, oauth_code(doors))
    doors.bind(created["scene"])  # the bind is the claim
    assert doors.poll(created["scene"]) == {"status": "REG", "code": 3, "claimed": True}
    again = new_scene(doors, kind) if kind != "follow" else doors.new_scene()
    if kind == "follow":
        doors.scan(again, NEW_OPENID)
    else:
        come_back(doors, again, website_code(doors) if kind == "website" else oauth_code(doors))
    wait = doors.client.get(f"/api/v1/scenes/{again['scene']}/wait", params={"timeout": 5})
    polled = doors.poll(again["scene"])
    answers = [wait.json(), polled]
    assert sum("access_token" in a for a in answers) == 1, answers
    assert {"status": "REG", "code": 3, "claimed": True} in answers


# -- the state ----------------------------------------------------------------------------


def test_a_state_logs_in_once(doors: Site) -> None:
    created = new_scene(doors, "website")
    assert come_back(doors, created, website_code(doors)).status_code == 200
    replay = come_back(doors, created, website_code(doors))
    assert_page(replay, 400, "state_invalid")
    unknown = doors.client.get(redirect_uri(created), params={"code": "abc", "state": "A" * 40})
    assert_page(unknown, 400, "state_invalid")
    for junk in ("", "has space", "x" * 129, "ünï"):
        answer = doors.client.get(redirect_uri(created), params={"code": "abc", "state": junk})
        assert_page(answer, 400, "state_invalid")


def test_a_state_dies_with_its_scene(
    start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat
) -> None:
    site = start(**doors_env(fake_wechat, WXPUSH_QR_EXPIRE_SECONDS="1"))
    created = new_scene(site, "website")
    assert created["expires_in"] <= 1
    wait_for(lambda: site.poll(created["scene"])["status"] == "EXPIRED" or None)
    assert_page(come_back(site, created, website_code(site)), 400, "state_invalid")


def test_another_apps_redirect_cannot_spend_a_state(doors: Site) -> None:
    created = new_scene(doors, "website")
    wrong = redirect_uri(created).replace("/wechat/website/", "/wechat/default/")
    answer = doors.client.get(wrong, params={"code": oauth_code(doors), "state": state_of(created)})
    assert_page(answer, 400, "state_invalid")
    assert come_back(doors, created, website_code(doors)).status_code == 200  # still usable


# -- failures leave the scene waiting ------------------------------------------------------


def test_a_declined_login_leaves_the_scene_waiting(doors: Site) -> None:
    created = new_scene(doors, "oauth")
    answer = come_back(doors, created, None, **{"Accept-Language": "en-US,en;q=0.9"})
    assert_page(answer, 400, "declined")
    assert "declined" in answer.text
    assert doors.poll(created["scene"])["status"] == "LOOP"
    assert come_back(doors, created, oauth_code(doors)).status_code == 200  # try again


@pytest.mark.parametrize("errcode", [40029, 40163, 40125])
def test_wechats_refusal_is_a_502_in_words(doors: Site, errcode: int) -> None:
    created = new_scene(doors, "website")
    doors.fake.fail(EXCHANGE, errcode=errcode)
    answer = come_back(doors, created, website_code(doors), **{"Accept-Language": "zh"})
    assert_page(answer, 502, "wechat_error")
    assert f"errcode {errcode}" in answer.text and "微信" in answer.text
    assert doors.poll(created["scene"])["status"] == "LOOP"


def test_a_code_used_twice_is_wechats_40163(doors: Site) -> None:
    code = website_code(doors)
    assert come_back(doors, new_scene(doors, "website"), code).status_code == 200
    answer = come_back(doors, new_scene(doors, "website"), code)
    assert_page(answer, 502, "wechat_error")
    assert "errcode 40163" in answer.text


def test_an_unknown_code_is_wechats_40029(doors: Site) -> None:
    answer = come_back(doors, new_scene(doors, "website"), "notacodewechatgave")
    assert_page(answer, 502, "wechat_error")
    assert "errcode 40029" in answer.text


def test_wechat_unreachable_is_a_502_page(doors: Site) -> None:
    doors.fake.fail(EXCHANGE, status=500)
    answer = come_back(doors, new_scene(doors, "website"), website_code(doors))
    assert_page(answer, 502, "bad_gateway")


def test_a_snapshot_visitor_is_refused_and_nothing_is_stored(
    doors: Site, database_url: str
) -> None:
    before = count_rows(database_url, "identities"), count_rows(database_url, "users")
    created = new_scene(doors, "oauth")
    answer = come_back(doors, created, oauth_code(doors, snapshot=True))
    assert_page(answer, 400, "snapshot_user")
    assert doors.poll(created["scene"])["status"] == "LOOP"
    after = count_rows(database_url, "identities"), count_rows(database_url, "users")
    assert after == before


def test_nothing_about_the_person_or_the_code_reaches_the_page_or_the_log(
    doors: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="wxpush")
    created = new_scene(doors, "website")
    code = website_code(doors, unionid=UNIONID)
    answers = [come_back(doors, created, code), come_back(doors, new_scene(doors, "website"), code)]
    for answer in answers:
        for secret in (code, WEB_OPENID, UNIONID, state_of(created), created["scene"]):
            assert secret not in answer.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (code, WEB_OPENID, UNIONID, doors.fake.website_secret):
        assert secret not in logged


# -- what a scene may ask for --------------------------------------------------------------


def test_return_to_must_be_on_an_allowed_origin(
    start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat
) -> None:
    site = start(**doors_env(fake_wechat, WXPUSH_ALLOWED_ORIGINS="https://shop.example"))
    own = str(site.client.base_url) + "/back"
    long = "https://shop.example/?" + "q" * 1000
    for good in (own, "https://shop.example/after-login?x=1", "https://SHOP.example:443/", long):
        assert new_scene(site, "oauth", return_to=good)["kind"] == "oauth"
    refused = [
        "https://evil.example/", "http://shop.example/", "https://shop.example:8443/",
        "javascript:alert(1)", "/relative", "https://user@shop.example/", "//shop.example/",
        "https://shop.example/\nx", "https://shop.example/" + "a" * 2100,
    ]  # fmt: skip
    for bad in refused:
        answer = site.client.post("/api/v1/scenes", json={"kind": "oauth", "return_to": bad})
        assert answer.status_code == 400 and answer.json()["error"] == "bad_return_to", bad


def test_kinds_and_their_apps(
    start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat
) -> None:
    site = start()  # no website app configured
    answer = site.client.post("/api/v1/scenes", json={"kind": "website"})
    assert answer.status_code == 400 and answer.json()["error"] == "kind_unavailable"
    for bad in ("qr", "", "FOLLOW"):
        answer = site.client.post("/api/v1/scenes", json={"kind": bad})
        assert answer.status_code == 400 and answer.json()["error"] == "bad_kind", bad
    answer = site.client.post("/api/v1/scenes", json={"kind": 3})
    assert answer.status_code == 400
    answer = site.client.post("/api/v1/scenes", json={"kind": "oauth", "account": "nobody"})
    assert answer.status_code == 400 and answer.json()["error"] == "unknown_account"
    assert new_scene(site, "follow")["kind"] == "follow"


def test_a_server_of_website_logins_only(
    start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat
) -> None:
    site = start(**doors_env(fake_wechat), WXPUSH_APPID="")
    assert new_scene(site, "website")["kind"] == "website"
    for kind in ("follow", "oauth"):
        answer = site.client.post("/api/v1/scenes", json={"kind": kind})
        assert answer.status_code == 400 and answer.json()["error"] == "kind_unavailable"


def test_a_redirect_scene_has_no_qr_code(doors: Site) -> None:
    created = new_scene(doors, "website")
    answer = doors.client.get(f"/api/v1/scenes/{created['scene']}/qr.svg")
    assert answer.status_code == 404


# -- one person, one user -----------------------------------------------------------------


def test_website_first_then_follow_is_one_user(doors: Site) -> None:
    web = new_scene(doors, "website")
    come_back(doors, web, website_code(doors, unionid=UNIONID))
    user = doors.bind(web["scene"])["user"]["id"]
    doors.fake.users[NEW_OPENID] = {"unionid": UNIONID}
    follow = doors.new_scene()
    assert doors.scan(follow, NEW_OPENID, follow=True) == "Logged in"  # no phone step
    tokens = doors.poll(follow["scene"])
    assert tokens["user"] == {"id": user, "new": False} and amr(tokens) == ["wechat_mp"]
    me = doors.client.get(
        "/api/v1/me", headers={"Authorization": "Bearer " + tokens["access_token"]}
    )
    providers = sorted(i["provider"] for i in me.json()["identities"])
    assert providers == ["wechat_mp", "wechat_open"]


def test_follow_first_then_website_is_one_user(doors: Site) -> None:
    doors.fake.users[NEW_OPENID] = {"unionid": UNIONID}
    follow = doors.new_scene()
    doors.scan(follow, NEW_OPENID)
    user = doors.bind(follow["scene"])["user"]["id"]
    web = new_scene(doors, "website")
    assert_page(come_back(doors, web, website_code(doors, unionid=UNIONID)), 200, "logged_in")
    tokens = doors.poll(web["scene"])
    assert tokens["user"] == {"id": user, "new": False} and amr(tokens) == ["wechat_open"]


def test_the_website_door_asks_userinfo_when_the_exchange_gave_no_unionid(doors: Site) -> None:
    doors.fake.users[NEW_OPENID] = {"unionid": UNIONID}
    follow = doors.new_scene()
    doors.scan(follow, NEW_OPENID)
    user = doors.bind(follow["scene"])["user"]["id"]
    web = new_scene(doors, "website")
    code = website_code(doors)  # an exchange without unionid; sns/userinfo has it
    doors.fake.users[WEB_OPENID] = {"unionid": UNIONID}
    answer = come_back(doors, web, code)
    if doors.fake.calls["/sns/userinfo"] == 0:
        pytest.fail("sns/userinfo was not asked")
    assert answer.status_code == 200
    assert doors.poll(web["scene"])["user"]["id"] == user


def test_user_info_is_asked_once_for_an_unknown_openid_never_for_a_known_one(doors: Site) -> None:
    doors.fake.users[NEW_OPENID] = {"unionid": UNIONID}
    created = doors.new_scene()
    doors.scan(created, NEW_OPENID)
    assert doors.fake.calls[USER_INFO] == 1
    doors.bind(created["scene"])
    again = doors.new_scene()
    assert doors.scan(again, NEW_OPENID) == "Logged in"
    assert doors.fake.calls[USER_INFO] == 1


def test_without_the_unionid_flag_no_user_info_is_asked(
    start: Callable[..., Site], fake_wechat: fakewechat.FakeWeChat
) -> None:
    site = start(**doors_env(fake_wechat))
    site.scan(site.new_scene(), NEW_OPENID)
    assert site.fake.calls[USER_INFO] == 0


def test_a_user_info_that_fails_decides_the_scan_without_it(doors: Site) -> None:
    doors.fake.users[NEW_OPENID] = {"unionid": UNIONID}
    doors.fake.fail(USER_INFO, errcode=45009)
    created = doors.new_scene()
    assert doors.scan(created, NEW_OPENID) != "Logged in"
    assert doors.poll(created["scene"])["status"] == "NOT_REG"


def test_a_user_info_that_hangs_still_answers_wechat_in_time(doors: Site) -> None:
    doors.fake.users[NEW_OPENID] = {"unionid": UNIONID}
    doors.fake.hang(USER_INFO, seconds=3.0)  # past the look-up's 1.5 s, within 5 s
    created = doors.new_scene()
    started = time.monotonic()
    reply = doors.scan(created, NEW_OPENID)
    took = time.monotonic() - started
    assert took < 5.0, f"the callback took {took:.1f} s; WeChat gives up at 5 s"
    assert reply != "Logged in"
    assert doors.poll(created["scene"])["status"] == "NOT_REG"
