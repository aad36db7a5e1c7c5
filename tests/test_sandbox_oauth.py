"""WeChat's OAuth doors in the stand-in core (wxpush.sandbox.oauth): codes, their exchange,
``sns/userinfo`` and ``user/info``'s unionid, on each store the core runs on; then one script
of HTTP calls answered alike by a sandbox server (codes from its pages) and by the test fake
(codes from ``fake.authorize``)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests import test_sandbox_core as core
from tests.fakewechat import FakeWeChat
from tests.server import serve
from tests.util import TIMEOUT, free_port
from wxpush.app import create_app
from wxpush.config.settings import Settings
from wxpush.sandbox.persons import openid_at, snapshot_openid, unionid_of, website_openid
from wxpush.sandbox.shapes import App, Call
from wxpush.sandbox.state import Store
from wxpush.sandbox.wechatapi import Platform

APPID, SECRET = "wxoauthtest00001", "oauthsecret0123456789"
WEB, WEB_SECRET = "wxoauthweb000001", "websecret0123456789ab"
OTHER_WEB, OTHER_WEB_SECRET = "wxoauthweb000002", "otherwebsecret01234567"
ALICE, BOB = "oSandboxAlice000000000000001", "oSandboxBob00000000000000002"
EXCHANGE = ["access_token", "expires_in", "openid", "refresh_token", "scope"]
clock, store = core.clock, core.store  # the fake clock and the three stores the core runs on
Clock = core.Clock
USERINFO = ["city", "country", "headimgurl", "nickname", "openid", "privilege", "province", "sex"]


def platform(store: Store, clock: Clock, **kwargs: Any) -> Platform:
    apps = {
        APPID: App(APPID, SECRET),
        WEB: App(WEB, WEB_SECRET, "website"),
        OTHER_WEB: App(OTHER_WEB, OTHER_WEB_SECRET, "website"),
    }
    return Platform(apps, store, clock=clock, **kwargs)


async def get(wechat: Platform, path: str, **params: str) -> dict[str, Any]:
    answer = await wechat.answer(Call("GET", path, params))
    assert isinstance(answer.body, dict) and answer.status == 200
    if answer.body.get("errcode"):
        assert " rid: " in answer.body["errmsg"]  # WeChat's shape, request id and all
    return answer.body


async def exchange(
    wechat: Platform, code: str, appid: str = WEB, secret: str = WEB_SECRET, **extra: str
) -> dict[str, Any]:
    params = {"appid": appid, "secret": secret, "code": code,
              "grant_type": "authorization_code", **extra}  # fmt: skip
    return await get(wechat, "/sns/oauth2/access_token", **params)


# --- the exchange -----------------------------------------------------------------------------


async def test_a_website_code_gives_its_person_once(store: Store, clock: Clock) -> None:
    wechat = platform(store, clock)
    openid = website_openid(WEB, ALICE)
    code = await wechat.issue_code(WEB, openid, unionid=unionid_of(ALICE), scope="snsapi_login")
    got = await exchange(wechat, code)
    assert sorted(got) == sorted([*EXCHANGE, "unionid"])
    assert (got["openid"], got["unionid"], got["scope"]) == (
        openid, unionid_of(ALICE), "snsapi_login"
    )  # fmt: skip
    assert got["expires_in"] == 7200 and got["access_token"] != got["refresh_token"]
    again = await exchange(wechat, code)
    assert (again["errcode"], again["errmsg"].split(" rid:")[0]) == (40163, "code been used")


async def test_a_code_without_unionid_or_from_a_snapshot(store: Store, clock: Clock) -> None:
    wechat = platform(store, clock)
    base = await wechat.issue_code(APPID, BOB, scope="snsapi_base")
    got = await exchange(wechat, base, APPID, SECRET)
    assert sorted(got) == EXCHANGE and (got["openid"], got["scope"]) == (BOB, "snsapi_base")
    virtual = snapshot_openid(APPID, BOB)
    snap = await wechat.issue_code(APPID, virtual, scope="snsapi_base", snapshot=True)
    got = await exchange(wechat, snap, APPID, SECRET)
    assert sorted(got) == sorted([*EXCHANGE, "is_snapshotuser"])
    assert (got["is_snapshotuser"], got["openid"]) == (1, virtual)


@pytest.mark.parametrize(
    ("change", "errcode"),
    [({"grant_type": "client_credential"}, 40002), ({"grant_type": ""}, 40002),
     ({"appid": "wxunknown"}, 40013), ({"secret": "wrong"}, 40125), ({"secret": "密码"}, 40125),
     ({"code": "nope"}, 40029), ({"code": ""}, 40029),
     ({"appid": OTHER_WEB, "secret": OTHER_WEB_SECRET}, 40029)],
)  # fmt: skip
async def test_exchange_refusals(
    store: Store,
    clock: Clock,
    change: dict[str, str],
    errcode: int,
) -> None:
    """Each refusal leaves the code good: the right app still exchanges it after."""
    wechat = platform(store, clock)
    code = await wechat.issue_code(WEB, "o1", scope="snsapi_login")
    params = {"appid": WEB, "secret": WEB_SECRET, "code": code,
              "grant_type": "authorization_code", **change}  # fmt: skip
    assert (await get(wechat, "/sns/oauth2/access_token", **params))["errcode"] == errcode
    assert (await exchange(wechat, code))["openid"] == "o1"


async def test_a_code_lives_300_seconds(store: Store, clock: Clock) -> None:
    wechat = platform(store, clock)
    early = await wechat.issue_code(WEB, "o1", scope="snsapi_login")
    late = await wechat.issue_code(WEB, "o2", scope="snsapi_login")
    clock.now += 299
    assert (await exchange(wechat, early))["openid"] == "o1"
    clock.now += 1
    expired = await exchange(wechat, late)
    assert (expired["errcode"], expired["errmsg"].split(" rid:")[0]) == (40029, "invalid code")


async def test_codes_only_for_an_app_and_its_scopes(store: Store, clock: Clock) -> None:
    wechat = platform(store, clock)
    for appid, scope in [("wxunknown", "snsapi_login"), (WEB, "snsapi_base"),
                         (APPID, "snsapi_login")]:  # fmt: skip
        with pytest.raises(ValueError, match="no snsapi"):
            await wechat.issue_code(appid, "o1", scope=scope)  # type: ignore[arg-type]


async def test_a_website_app_has_no_server_token(store: Store, clock: Clock) -> None:
    wechat = platform(store, clock)
    creds = {"appid": WEB, "secret": WEB_SECRET}
    plain = await get(wechat, "/cgi-bin/token", grant_type="client_credential", **creds)
    assert plain["errcode"] == 40013


# --- sns/userinfo and user/info --------------------------------------------------------------


async def test_userinfo_of_the_tokens_person(store: Store, clock: Clock) -> None:
    profiles = {"o_alice": {"nickname": "Alice", "sex": 2, "subscribe": 1}}
    wechat = platform(store, clock, profiles=profiles)
    code = await wechat.issue_code(WEB, "o_alice", unionid="u_alice", scope="snsapi_login")
    token = (await exchange(wechat, code))["access_token"]
    info = await get(wechat, "/sns/userinfo", access_token=token, openid="o_alice", lang="zh_CN")
    assert sorted(info) == sorted([*USERINFO, "unionid"])  # no user/info field leaks in
    assert (info["openid"], info["unionid"], info["nickname"], info["sex"]) == (
        "o_alice", "u_alice", "Alice", 2
    )  # fmt: skip
    assert info["privilege"] == []
    refusals = [({"openid": "o_bob"}, 40003), ({}, 40003), ({"access_token": "nope"}, 40001),
                ({"access_token": ""}, 41001)]  # fmt: skip
    for params, errcode in refusals:
        refused = await get(wechat, "/sns/userinfo", **{"access_token": token, **params})
        assert refused["errcode"] == errcode, params
    clock.now += 7200
    expired = await get(wechat, "/sns/userinfo", access_token=token, openid="o_alice")
    assert expired["errcode"] == 42001


async def test_userinfo_by_scope(store: Store, clock: Clock) -> None:
    wechat = platform(store, clock)
    for scope, unionid, errcode in [("snsapi_base", None, 48001),
                                    ("snsapi_userinfo", "u1", 0)]:  # fmt: skip
        code = await wechat.issue_code(APPID, "o1", unionid=unionid, scope=scope)  # type: ignore[arg-type]
        token = (await exchange(wechat, code, APPID, SECRET))["access_token"]
        info = await get(wechat, "/sns/userinfo", access_token=token, openid="o1")
        assert info.get("errcode", 0) == errcode, scope
    assert info["unionid"] == "u1" and sorted(info) == sorted([*USERINFO, "unionid"])


async def test_user_info_carries_a_known_unionid(store: Store, clock: Clock) -> None:
    creds = {"appid": APPID, "secret": SECRET, "grant_type": "client_credential"}
    sandbox = platform(store, clock, unionids=unionid_of)
    token = (await get(sandbox, "/cgi-bin/token", **creds))["access_token"]
    for person in (ALICE, BOB):
        info = await get(sandbox, "/cgi-bin/user/info", access_token=token, openid=person)
        assert (info["openid"], info["unionid"]) == (person, unionid_of(person))
    plain = platform(store, clock, profiles={"o_set": {"unionid": "u_set"}})
    for openid, unionid in [("o_set", "u_set"), ("o_unset", None)]:
        info = await get(plain, "/cgi-bin/user/info", access_token=token, openid=openid)
        assert info.get("unionid") == unionid and info["subscribe"] == 1


def test_a_person_has_one_unionid_and_an_openid_per_app() -> None:
    service, web, other = App(APPID, SECRET), App(WEB, None, "website"), App(OTHER_WEB, None)
    assert openid_at(service, ALICE) == ALICE
    assert openid_at(web, ALICE) == website_openid(WEB, ALICE) == website_openid(WEB, ALICE)
    ids = {ALICE, website_openid(WEB, ALICE), website_openid(OTHER_WEB, ALICE),
           website_openid(WEB, BOB), snapshot_openid(WEB, ALICE), unionid_of(ALICE),
           unionid_of(BOB)}  # fmt: skip
    assert len(ids) == 7  # each one different
    for derived in ids - {ALICE}:
        assert re.fullmatch(r"o[A-Za-z0-9_-]{27}", derived), derived
    assert openid_at(other, BOB) == BOB  # a service account: the person id itself


# --- one script over HTTP, from the sandbox and from the test fake ----------------------------

Codes = Callable[[httpx.Client, str, str], str]  # (client, "website" | "base", person) → code


@contextmanager
def sandbox_server(
    tmp_path: Path, redis_url: str, apps: tuple[str, str, str, str]
) -> Iterator[str]:
    """A server with the sandbox on and its API and connect bases pointing at it, for a
    service account and a website app (``apps``: appid, secret, website appid, secret)."""
    port = free_port()
    appid, secret, web, web_secret = apps
    env = {
        "WXPUSH_APPID": appid, "WXPUSH_APPSECRET": secret, "WXPUSH_TOKEN": "sandboxtoken",
        "WXPUSH_WEBSITE_APPID": web, "WXPUSH_WEBSITE_SECRET": web_secret,
        "WXPUSH_REDIS_URL": redis_url, "WXPUSH_SANDBOX": "1", "WXPUSH_UNIONID": "1",
        "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'people.db'}",
        "WXPUSH_JWT_KEY_FILE": str(tmp_path / "jwt.pem"), "WXPUSH_LOG_LEVEL": "WARNING",
        "WXPUSH_WECHAT_API_BASE": f"http://127.0.0.1:{port}/sandbox",
        "WXPUSH_WECHAT_CONNECT_BASE": f"http://127.0.0.1:{port}/sandbox",
    }  # fmt: skip
    with serve(create_app(Settings.from_env(env, dotenv=None)), port) as base:
        yield base


@pytest.fixture
def sandbox_api(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, Codes]]:
    with sandbox_server(tmp_path, redis_url, (APPID, SECRET, WEB, WEB_SECRET)) as base:
        yield base + "/sandbox", sandbox_code


def sandbox_code(http: httpx.Client, door: str, person: str) -> str:
    """A code as a person gets it from the sandbox's pages: the website QR code confirmed on
    the phone, or the consent inside WeChat."""
    back = {"redirect_uri": "https://site.example/back", "state": "S1"}
    if door == "base":
        form = {"appid": APPID, "response_type": "code", "scope": "snsapi_base", **back,
                "person": person, "action": "continue"}  # fmt: skip
        location = http.post("/connect/oauth2/authorize", data=form).headers["location"]
    else:
        page = http.get("/connect/qrconnect", params={"appid": WEB, "scope": "snsapi_login",
                                                      **back})  # fmt: skip
        link = re.search(r'href="([^"]+)"[^>]*\s+data-sandbox="connect-phone-link"', page.text)
        assert link, page.text
        uuid = parse_qs(urlsplit(html.unescape(link[1])).query)["uuid"][0]
        answer = http.post("/phone/connect", json={"uuid": uuid, "person": person,
                                                   "confirm": True})  # fmt: skip
        assert answer.status_code == 200, answer.text
        location = http.get("/connect/poll", params={"uuid": uuid}).json()["location"]
    return parse_qs(urlsplit(location).query)["code"][0]


@pytest.fixture
def fake_api() -> Iterator[tuple[str, Codes]]:
    fake = FakeWeChat(appid=APPID, secret=SECRET, website_appid=WEB,
                      website_secret=WEB_SECRET, sandbox_unionids=True)  # fmt: skip

    def code(http: httpx.Client, door: str, person: str) -> str:
        if door == "base":
            return fake.authorize(APPID, person, scope="snsapi_base")
        return fake.authorize(WEB, website_openid(WEB, person), unionid=unionid_of(person))

    with fake.running():
        yield fake.url, code


def script(base: str, codes: Codes) -> list[Any]:
    """The same calls in the same order; what a client sees of each answer (less tokens)."""
    seen: list[Any] = []
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:

        def get(path: str, **params: str) -> Any:
            answer = http.get(path, params=params)
            assert answer.status_code == 200
            body = answer.json()
            return body.get("errcode") or {k: v for k, v in body.items() if "token" not in k}

        def swap(code: str, appid: str = WEB, secret: str = WEB_SECRET, **extra: str) -> Any:
            return get("/sns/oauth2/access_token", appid=appid, secret=secret, code=code,
                       **{"grant_type": "authorization_code", **extra})  # fmt: skip

        code = codes(http, "website", ALICE)
        seen += [swap(code, grant_type="x"), swap(code, appid="wxnope"),
                 swap(code, secret="wrong"), swap(code, APPID, SECRET), swap("nope")]  # fmt: skip
        answer = http.get("/sns/oauth2/access_token", params={
            "appid": WEB, "secret": WEB_SECRET, "code": code, "grant_type": "authorization_code"
        }).json()  # fmt: skip
        token, openid = answer.pop("access_token"), answer["openid"]
        seen += [sorted(answer), answer["openid"], answer["unionid"], answer["scope"],
                 swap(code)]  # fmt: skip
        seen += [get("/sns/userinfo", access_token=token, openid=openid, lang="zh_CN"),
                 get("/sns/userinfo", access_token=token, openid=ALICE),
                 get("/sns/userinfo", access_token="nope", openid=openid),
                 get("/sns/userinfo", openid=openid)]  # fmt: skip
        base = codes(http, "base", BOB)
        based = http.get("/sns/oauth2/access_token", params={
            "appid": APPID, "secret": SECRET, "code": base, "grant_type": "authorization_code"
        }).json()  # fmt: skip
        seen += [get("/sns/oauth2/access_token", appid=APPID, secret=SECRET, code=base,
                     grant_type="authorization_code"),
                 get("/sns/userinfo", access_token=based["access_token"], openid=BOB)]  # fmt: skip
        creds = {"appid": APPID, "secret": SECRET, "grant_type": "client_credential"}
        server = http.get("/cgi-bin/token", params=creds).json()["access_token"]
        alice = http.get("/cgi-bin/user/info", params={"access_token": server, "openid": ALICE})
        seen += [alice.json()["unionid"] == answer["unionid"]]
    return seen


def test_the_sandbox_and_the_fake_answer_oauth_alike(
    sandbox_api: tuple[str, Codes], fake_api: tuple[str, Codes]
) -> None:
    sandbox, fake = script(*sandbox_api), script(*fake_api)
    assert sandbox == fake
    assert sandbox[:5] == [40002, 40013, 40125, 40029, 40029]
    assert sandbox[5] == sorted(["expires_in", "openid", "refresh_token", "scope", "unionid"])
    assert sandbox[6:10] == [website_openid(WEB, ALICE), unionid_of(ALICE), "snsapi_login", 40163]
    assert sandbox[10]["unionid"] == unionid_of(ALICE) and sandbox[11:14] == [40003, 40001, 41001]
    assert sandbox[14:16] == [40163, 48001]  # the base code was used to get its token
    assert sandbox[16] is True  # one person, one unionid at the website app and the account
