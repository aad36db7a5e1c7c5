"""The stand-in WeChat's core (wxpush.sandbox.wechatapi) on each store it runs on.

The sandbox runs :class:`Platform` on the server's Redis (a real redis-server, or the embedded
fakeredis in ``wxpush demo``), the test fake on a :class:`MemoryStore`: every test here runs
on all three and expects the same errcodes. The last tests send one script of HTTP calls to
a sandbox server and to the test fake and expect the same answers from both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis

from tests.fakewechat import FakeWeChat
from tests.server import serve
from tests.util import TIMEOUT, free_port
from wxpush.app import create_app
from wxpush.config.settings import Settings
from wxpush.errors import NotFound
from wxpush.sandbox.shapes import App, Call
from wxpush.sandbox.state import MemoryStore, RedisStore, Store
from wxpush.sandbox.wechatapi import Platform

APPID, SECRET = "wxcoretest000001", "coresecret0123456789"
OTHER, OTHER_SECRET = "wxcoretest000002", "othersecret0123456789"
QR = {"expire_seconds": 300, "action_name": "QR_STR_SCENE",
      "action_info": {"scene": {"scene_str": "login:abc"}}}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis-server", "fakeredis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    url = request.getfixturevalue("redis_url")
    redis: Redis = Redis.from_url(url) if request.param == "redis-server" else FakeAsyncRedis()
    try:
        yield RedisStore(redis, "wxpush:sandbox:")
    finally:
        await redis.aclose()


def platform(store: Store, clock: Clock, **kwargs: Any) -> Platform:
    apps = {
        APPID: App(APPID, SECRET),
        OTHER: App(OTHER, OTHER_SECRET),
        "wxnosecret": App("wxnosecret", None),
    }
    return Platform(apps, store, clock=clock, **kwargs)


async def call(wechat: Platform, path: str, body: Any = None, **params: str) -> dict[str, Any]:
    method = "POST" if body is not None else "GET"
    answer = await wechat.answer(Call(method, "/cgi-bin/" + path, params, body))
    assert isinstance(answer.body, dict) and answer.status == 200
    return answer.body


async def stable(wechat: Platform, appid: str = APPID, secret: str = SECRET, **extra: Any) -> Any:
    return await call(wechat, "stable_token", {"appid": appid, "secret": secret, **extra})


def errcode(answer: dict[str, Any]) -> int:
    code: int = answer.get("errcode", 0)
    if code:
        assert " rid: " in answer["errmsg"]  # WeChat's shape, request id and all
    return code


# --- access tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("appid", "secret", "code"),
    [("wxunknown", SECRET, 40013), (APPID, "wrong", 40125), (APPID, "é", 40125),
     (OTHER, SECRET, 40125), ("wxnosecret", "", 40125), (APPID, SECRET, 0)],
)  # fmt: skip
async def test_credentials(store: Store, clock: Clock, appid: str, secret: str, code: int):
    wechat = platform(store, clock)
    assert errcode(await stable(wechat, appid, secret)) == code
    plain = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    assert errcode(await call(wechat, "token", **plain)) == code


@pytest.mark.parametrize("body", [[], "text", 1])
async def test_stable_token_body_must_be_an_object(store: Store, clock: Clock, body: Any):
    assert errcode(await call(platform(store, clock), "stable_token", body)) == 47001


async def test_token_needs_its_grant_type(store: Store, clock: Clock):
    answer = await call(platform(store, clock), "token", appid=APPID, secret=SECRET)
    assert errcode(answer) == 40002


async def test_stable_token_is_one_token_until_forced(store: Store, clock: Clock):
    wechat = platform(store, clock)
    first = await stable(wechat)
    assert first["expires_in"] == 7200
    clock.now += 100
    assert await stable(wechat) == {"access_token": first["access_token"], "expires_in": 7100}
    forced = await stable(wechat, force_refresh=True)
    assert forced["access_token"] != first["access_token"]
    assert errcode(await call(wechat, "menu/get", access_token=first["access_token"])) == 40001
    assert errcode(await call(wechat, "menu/get", access_token=forced["access_token"])) == 46003
    other = await stable(wechat, OTHER, OTHER_SECRET)  # each app has its own
    assert other["access_token"] not in (first["access_token"], forced["access_token"])


async def test_plain_token_is_new_each_time_and_the_old_ones_stay(store: Store, clock: Clock):
    wechat = platform(store, clock)
    plain = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    tokens = [(await call(wechat, "token", **plain))["access_token"] for _ in range(2)]
    assert tokens[0] != tokens[1]
    for token in tokens:
        assert errcode(await call(wechat, "menu/get", access_token=token)) == 46003


async def test_stable_token_renews_in_its_last_five_minutes(store: Store, clock: Clock):
    wechat = platform(store, clock)
    first = (await stable(wechat))["access_token"]
    clock.now += 6899  # 301 s left: still the same
    assert (await stable(wechat))["access_token"] == first
    clock.now += 2  # 299 s left: a new one, the old one revoked
    renewed = await stable(wechat)
    assert renewed["access_token"] != first and renewed["expires_in"] == 7200
    assert errcode(await call(wechat, "menu/get", access_token=first)) == 40001


async def test_missing_unknown_and_expired_tokens(store: Store, clock: Clock):
    wechat = platform(store, clock)
    token = (await stable(wechat))["access_token"]
    assert errcode(await call(wechat, "qrcode/create", QR)) == 41001
    assert errcode(await call(wechat, "qrcode/create", QR, access_token="nope")) == 40001
    clock.now += 7200
    assert errcode(await call(wechat, "qrcode/create", QR, access_token=token)) == 42001
    assert errcode(await call(wechat, "user/info", access_token=token, openid="o1")) == 42001


async def test_invalidate_refuses_every_older_token(store: Store, clock: Clock):
    wechat = platform(store, clock)
    plain = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    old = [
        (await stable(wechat))["access_token"],
        (await call(wechat, "token", **plain))["access_token"],
    ]
    untouched = (await stable(wechat, OTHER, OTHER_SECRET))["access_token"]
    await wechat.invalidate(APPID)
    for token in old:
        assert errcode(await call(wechat, "menu/get", access_token=token)) == 40001
    assert errcode(await call(wechat, "menu/get", access_token=untouched)) == 46003
    fresh = (await stable(wechat))["access_token"]  # normal mode no longer hands out the old one
    assert fresh not in old
    assert errcode(await call(wechat, "menu/get", access_token=fresh)) == 46003


async def test_sticky_stable_token_must_be_forced(store: Store, clock: Clock):
    wechat = platform(store, clock, sticky_stable=True)
    old = (await stable(wechat))["access_token"]
    await wechat.invalidate(APPID)
    assert (await stable(wechat))["access_token"] == old
    assert errcode(await call(wechat, "menu/get", access_token=old)) == 40001
    forced = (await stable(wechat, force_refresh=True))["access_token"]
    assert errcode(await call(wechat, "menu/get", access_token=forced)) == 46003


async def test_records_of_an_older_sandbox_are_unknown(store: Store, clock: Clock):
    """What the sandbox stored before this core (a token → its appid, a ticket without its
    url) reads as unknown: the client fetches a new token, the phone says "unknown ticket"."""
    wechat = platform(store, clock)
    await store.set("token:oldtoken", APPID, 7200)
    old_ticket = json.dumps({"scene_str": "login:x", "appid": APPID, "expires_at": 0})
    await store.set("ticket:gQold", old_ticket, 60)
    assert errcode(await call(wechat, "menu/get", access_token="oldtoken")) == 40001
    assert await wechat.ticket("gQold") is None


# --- QR codes, menu, users --------------------------------------------------------------------


async def test_qrcode_issued_shown_and_expired(store: Store, clock: Clock):
    wechat = platform(store, clock, qr_url=lambda ticket: f"https://phone.test/?t={ticket}")
    token = (await stable(wechat))["access_token"]
    long = {**QR, "expire_seconds": 10**9}
    issued = await call(wechat, "qrcode/create", long, access_token=token)
    assert issued["expire_seconds"] == 2_592_000 and issued["ticket"].startswith("gQ")
    assert issued["url"] == f"https://phone.test/?t={issued['ticket']}"
    qr = await wechat.ticket(issued["ticket"])
    assert qr is not None and (qr.scene_str, qr.appid) == ("login:abc", APPID)
    image = await wechat.answer(Call("GET", "/cgi-bin/showqrcode", {"ticket": issued["ticket"]}))
    assert (image.media_type, bytes(image.body)[:4]) == ("image/png", b"\x89PNG")  # type: ignore[arg-type]
    with pytest.raises(NotFound) as unknown:
        await wechat.answer(Call("GET", "/cgi-bin/showqrcode", {"ticket": "gQnope"}))
    assert unknown.value.code == "unknown_ticket"
    assert await wechat.ticket("") is None


@pytest.mark.parametrize(
    "body",
    [None, "{", {}, {**QR, "action_name": "QR_NOPE"}, {**QR, "expire_seconds": 0},
     {**QR, "expire_seconds": "soon"}, {"action_name": "QR_STR_SCENE", "action_info": {}},
     {**QR, "action_info": {"scene": {"scene_str": ""}}},
     {**QR, "action_info": {"scene": {"scene_str": "x" * 65}}}],
)  # fmt: skip
async def test_qrcode_bad_arguments(store: Store, clock: Clock, body: Any):
    wechat = platform(store, clock)
    token = (await stable(wechat))["access_token"]
    answer = await wechat.answer(
        Call("POST", "/cgi-bin/qrcode/create", {"access_token": token}, body)
    )
    assert errcode(answer.body) == 40097  # type: ignore[arg-type]


async def test_menu_of_each_app(store: Store, clock: Clock):
    wechat = platform(store, clock)
    mine = {"access_token": (await stable(wechat))["access_token"]}
    theirs = {"access_token": (await stable(wechat, OTHER, OTHER_SECRET))["access_token"]}
    menu = {"button": [{"type": "click", "name": "登录", "key": "LOGIN"}]}
    assert errcode(await call(wechat, "menu/create", {"button": "no"}, **mine)) == 40016
    assert errcode(await call(wechat, "menu/create", menu, **mine)) == 0
    assert await call(wechat, "menu/get", **mine) == {"menu": menu}
    assert errcode(await call(wechat, "menu/get", **theirs)) == 46003
    assert errcode(await call(wechat, "menu/delete", **mine)) == 0
    assert errcode(await call(wechat, "menu/get", **mine)) == 46003


async def test_user_info(store: Store, clock: Clock):
    wechat = platform(store, clock, profiles={"o_alice": {"unionid": "u_alice"}})
    token = (await stable(wechat))["access_token"]
    assert errcode(await call(wechat, "user/info", access_token=token)) == 40003
    alice = await call(wechat, "user/info", access_token=token, openid="o_alice")
    assert (alice["openid"], alice["subscribe"], alice["unionid"]) == ("o_alice", 1, "u_alice")
    bob = await call(wechat, "user/info", access_token=token, openid="o_bob")
    assert bob["subscribe_time"] == int(clock.now) and "unionid" not in bob


async def test_unknown_path_or_method(store: Store, clock: Clock):
    wechat = platform(store, clock)
    for method, path in [("GET", "/cgi-bin/nope"), ("GET", "/cgi-bin/stable_token")]:
        assert (await wechat.answer(Call(method, path))).status == 404


# --- one answer over HTTP, from the sandbox and from the test fake ----------------------------


@pytest.fixture
def sandbox_api(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, str, str]]:
    port = free_port()
    env = {
        "WXPUSH_APPID": APPID, "WXPUSH_APPSECRET": SECRET, "WXPUSH_TOKEN": "coretoken",
        "WXPUSH_REDIS_URL": redis_url, "WXPUSH_SANDBOX": "1",
        "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'people.db'}",
        "WXPUSH_JWT_KEY_FILE": str(tmp_path / "jwt.pem"), "WXPUSH_LOG_LEVEL": "WARNING",
        "WXPUSH_WECHAT_API_BASE": f"http://127.0.0.1:{port}/sandbox",
    }  # fmt: skip
    with serve(create_app(Settings.from_env(env, dotenv=None)), port) as base:
        yield base + "/sandbox", APPID, SECRET


@pytest.fixture
def fake_api() -> Iterator[tuple[str, str, str]]:
    with FakeWeChat(appid=APPID, secret=SECRET, sandbox_unionids=True).running() as fake:
        yield fake.url, APPID, SECRET


def script(base: str, appid: str, secret: str) -> list[Any]:
    """The same calls in the same order; what a client sees of each answer."""
    seen: list[Any] = []
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:

        def post(path: str, **kwargs: Any) -> Any:
            return http.post("/cgi-bin/" + path, **kwargs).json()

        def get(path: str, **params: str) -> Any:
            return http.get("/cgi-bin/" + path, params=params).json()

        creds = {"appid": appid, "secret": secret}
        seen += [post("stable_token", content=b"{").get("errcode"),
                 post("stable_token", json={**creds, "appid": "wxother"}).get("errcode"),
                 post("stable_token", json={**creds, "secret": "é"}).get("errcode"),
                 get("token", **creds).get("errcode")]  # fmt: skip
        first = post("stable_token", json=creds)
        token = first["access_token"]
        again = post("stable_token", json=creds)["access_token"]
        seen += [first["expires_in"] > 7000, again == token]
        forced = post("stable_token", json={**creds, "force_refresh": True})["access_token"]
        seen += [get("menu/get", access_token=token).get("errcode"), forced != token]
        q, no_action = {"access_token": forced}, {"action_info": QR["action_info"]}
        seen += [post("qrcode/create", json={}).get("errcode"),
                 post("qrcode/create", params=q, json=no_action).get("errcode"),
                 sorted(post("qrcode/create", params=q, json=QR)),
                 get("menu/get", **q).get("errcode"),
                 post("menu/create", params=q, json={"button": {}}).get("errcode"),
                 get("user/info", **q).get("errcode"),
                 sorted(get("user/info", **q, openid="o1"))]  # fmt: skip
        unknown = http.get("/cgi-bin/showqrcode", params={"ticket": "nope"})
        seen += [unknown.status_code, unknown.json()["error"]]
    return seen


def test_the_sandbox_and_the_fake_answer_alike(
    sandbox_api: tuple[str, str, str], fake_api: tuple[str, str, str]
):
    sandbox, fake = script(*sandbox_api), script(*fake_api)
    assert sandbox == fake
    assert sandbox[:4] == [47001, 40013, 40125, 40002]
    assert sandbox[6] == 40001 and sandbox[8:10] == [41001, 40097]
    assert sandbox[10] == ["expire_seconds", "ticket", "url"]
    assert sandbox[11:14] == [46003, 40016, 40003]
    assert sandbox[-2:] == [404, "unknown_ticket"]
