"""The whole login by polling: scenes, the scan callback, phone binding, tokens, JWKS.

A real uvicorn server, a real redis-server, a real SQLite file, the fake WeChat API, and a
webhook receiver standing in for the SMS vendor.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests import fakewechat, wire
from tests.conftest import RedisServer
from tests.server import serve
from tests.util import PROMPTLY, TIMEOUT, wait_for
from wxpush.app import create_app
from wxpush.config.settings import Settings
from wxpush.infra.sql import open_engine
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.messages import TextMessage, parse_fields, parse_message

fake_wechat = fakewechat.fake_wechat
AES_KEY = wire.new_aes_key()
NEW_OPENID = "oNewPerson000000000000000001"
PHONE = "13800138000"


@dataclass
class SmsInbox:
    url: str
    sent: list[dict[str, Any]] = field(default_factory=list)

    def last_code(self, phone: str = "+86" + PHONE) -> str:
        return str([m for m in self.sent if m["phone"] == phone][-1]["code"])


@pytest.fixture
def sms_inbox() -> Iterator[SmsInbox]:
    sent: list[dict[str, Any]] = []

    async def receive(request: Request) -> JSONResponse:
        sent.append(await request.json())
        return JSONResponse({"ok": True})

    with serve(Starlette(routes=[Route("/sms", receive, methods=["POST"])])) as url:
        yield SmsInbox(url + "/sms", sent)


@dataclass
class Site:
    """The server under test, with helpers that act as a browser and as WeChat."""

    client: httpx.Client
    fake: fakewechat.FakeWeChat
    inbox: SmsInbox
    env: dict[str, str] = field(default_factory=dict)  # its settings, as WXPUSH_* variables

    def new_scene(self) -> dict[str, Any]:
        answer = self.client.post("/api/v1/scenes", json={})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def poll(self, scene: str) -> dict[str, Any]:
        answer = self.client.get(f"/api/v1/scenes/{scene}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def scan_event(
        self, scene_str: str, openid: str, *, follow: bool = False
    ) -> tuple[dict[str, str], bytes]:
        """The signed, encrypted callback WeChat sends when ``openid`` scans ``scene_str``."""
        key = ("qrscene_" + scene_str) if follow else scene_str
        xml = wire.event_xml("subscribe" if follow else "SCAN", key, openid=openid)
        crypto = MessageCrypto(self.fake.appid, AES_KEY)
        return wire.signed(xml, mode="safe", crypto=crypto, openid=openid)

    def scan(self, created: dict[str, Any], openid: str, *, follow: bool = False) -> str:
        """WeChat tells us ``openid`` scanned the scene's QR code; returns the reply text."""
        params, body = self.scan_event(self.fake.scene_of(created["qr_url"]), openid, follow=follow)
        answer = self.client.post("/wechat/default/callback", params=params, content=body)
        assert answer.status_code == 200, answer.text
        crypto = MessageCrypto(self.fake.appid, AES_KEY)
        if answer.text == "success":
            return "success"
        reply = parse_message(crypto.decrypt(parse_fields(answer.content)["Encrypt"]))
        assert isinstance(reply, TextMessage)
        return reply.content

    def send_code(self, scene: str, phone: str = PHONE) -> str:
        def send() -> httpx.Response | None:
            sent = self.client.post(f"/api/v1/scenes/{scene}/sms", json={"phone": phone})
            return None if sent.status_code == 429 else sent  # a 1 s interval in these tests

        sent = wait_for(send)
        assert sent.status_code == 202, sent.text
        return self.inbox.last_code("+86" + phone)

    def bind(self, scene: str, phone: str = PHONE) -> dict[str, Any]:
        code = self.send_code(scene, phone)
        answer = self.client.post(f"/api/v1/scenes/{scene}/bind",
                                  json={"phone": phone, "code": code})  # fmt: skip
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every flow runs on a real SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'people.db'}"
    return str(request.getfixturevalue("postgres_db_url"))


def count_rows(database_url: str, table: str) -> int:
    return int(select_rows(database_url, f"SELECT count(*) FROM {table}")[0][0])


def select_rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    """The rows of a query, read apart from the server (its own engine)."""

    async def read() -> list[tuple[Any, ...]]:
        engine = open_engine(database_url)
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(query))).all()]
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.fixture
def start(
    redis_url: str,
    redis_env: dict[str, str],
    tmp_path: Path,
    database_url: str,
    fake_wechat: fakewechat.FakeWeChat,
    sms_inbox: SmsInbox,
) -> Iterator[Callable[..., Site]]:
    contexts: list[Any] = []

    def run(**env: str) -> Site:
        base = {
            "WXPUSH_APPID": fake_wechat.appid,
            "WXPUSH_APPSECRET": fake_wechat.secret,
            "WXPUSH_TOKEN": wire.TOKEN,
            "WXPUSH_AES_KEY": AES_KEY,
            "WXPUSH_REDIS_URL": redis_url,
            "WXPUSH_DATABASE_URL": database_url,
            "WXPUSH_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
            "WXPUSH_WECHAT_API_BASE": fake_wechat.url,
            "WXPUSH_SMS_PROVIDER": "webhook",
            "WXPUSH_SMS_WEBHOOK_URL": sms_inbox.url,
            "WXPUSH_SMS_INTERVAL_SECONDS": "1",
            **redis_env,
        }
        variables = {**base, **env}
        settings = Settings.from_env(variables, dotenv=None)
        ctx = serve(create_app(settings))
        url = ctx.__enter__()
        contexts.append(ctx)
        client = httpx.Client(base_url=url, timeout=TIMEOUT * 2)
        contexts.append(client)
        return Site(client, fake_wechat, sms_inbox, variables)

    yield run
    for item in reversed(contexts):
        if isinstance(item, httpx.Client):
            item.close()
        else:
            item.__exit__(None, None, None)


@pytest.fixture
def site(start: Callable[..., Site]) -> Site:
    return start()


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == code, answer.text
    assert answer.json()["message"]


# -- the two paths of a login ---------------------------------------------------------------


def test_a_new_person_binds_a_phone_and_logs_in(site: Site) -> None:
    created = site.new_scene()
    scene = created["scene"]
    assert created["status"] == "LOOP" and created["code"] == 2
    assert created["qr_url"].startswith("http://weixin.qq.com/q/")
    assert created["qr_image"].endswith(f"/api/v1/scenes/{scene}/qr.svg")
    assert created["ws_url"].startswith("ws://") and created["ws_url"].endswith(scene)
    assert created["wait_url"].endswith(f"/api/v1/scenes/{scene}/wait")
    assert created["expires_in"] == 300
    assert site.fake.scene_of(created["qr_url"]) == f"login:{scene}"
    assert site.poll(scene)["status"] == "LOOP"

    reply = site.scan(created, NEW_OPENID, follow=True)
    assert reply.startswith("Almost there")
    state = site.poll(scene)
    assert state == {"status": "NOT_REG", "code": 4}  # the openid stays server-side

    sent = site.client.post(f"/api/v1/scenes/{scene}/sms", json={"phone": PHONE})
    assert (sent.status_code, sent.json()) == (202, {"resend_in": 1})
    code = site.inbox.last_code()
    assert re.fullmatch(r"\d{6}", code)
    wrong = "000000" if code != "000000" else "111111"
    answer = site.client.post(f"/api/v1/scenes/{scene}/bind", json={"phone": PHONE, "code": wrong})
    assert_error(answer, 400, "wrong_code")
    assert "4" in answer.json()["message"]  # tries left, in words

    answer = site.client.post(f"/api/v1/scenes/{scene}/bind", json={"phone": PHONE, "code": code})
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["status"] == "REG" and tokens["token_type"] == "Bearer"
    assert tokens["user"]["new"] is True
    assert tokens["expires_in"] == 7200

    jwks = site.client.get("/.well-known/jwks.json").json()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(tokens["access_token"], key.key, algorithms=["ES256"], audience="wxpush",
                        issuer="wxpush")  # fmt: skip
    assert claims["sub"] == tokens["user"]["id"]
    assert claims["amr"] == ["wechat_mp"]

    me = site.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["id"] == tokens["user"]["id"]
    assert me.json()["phone"] == "+86 138****8000"
    identities = me.json()["identities"]
    assert [i["openid_hint"] for i in identities] == ["…" + NEW_OPENID[-4:]]  # never it all
    assert NEW_OPENID not in me.text
    assert [i["provider"] for i in identities] == ["wechat_mp"]

    # the bind was the scene's one claim
    assert site.poll(scene) == {"status": "REG", "code": 3, "claimed": True}


def test_a_known_person_logs_in_by_a_scan_alone(site: Site) -> None:
    first = site.new_scene()
    site.scan(first, NEW_OPENID, follow=True)
    user_id = site.bind(first["scene"])["user"]["id"]

    created = site.new_scene()
    assert site.scan(created, NEW_OPENID) == "Logged in"
    state = site.poll(created["scene"])
    assert state["status"] == "REG" and state["code"] == 3
    assert state["user"] == {"id": user_id, "new": False}
    assert state["access_token"] and state["refresh_token"]
    again = site.poll(created["scene"])
    assert again == {"status": "REG", "code": 3, "claimed": True}


def test_a_retried_scan_gets_the_same_reply_and_a_pointless_scan_writes_nothing(
    site: Site, redis_url: str
) -> None:
    store = redis.Redis.from_url(redis_url)
    dedup_keys = lambda: len(store.keys("wxpush:dedup:*"))  # noqa: E731
    before = dedup_keys()
    created = site.new_scene()
    params, body = site.scan_event(site.fake.scene_of(created["qr_url"]), NEW_OPENID)
    first = site.client.post("/wechat/default/callback", params=params, content=body)
    retry = site.client.post("/wechat/default/callback", params=params, content=body)
    assert first.status_code == retry.status_code == 200
    assert first.content == retry.content and first.content != b"success"
    assert dedup_keys() == before + 1
    assert site.poll(created["scene"])["status"] == "NOT_REG"
    transitions = 'wxpush_scene_transitions_total{status="NOT_REG"} 1.0'
    assert transitions in site.client.get("/metrics").text
    # A scan of an unknown scene, or of one already resolved by someone else: answered
    # "success" with nothing claimed or stored.
    for scene_str in ("login:" + "A" * 22, site.fake.scene_of(created["qr_url"])):
        params, body = site.scan_event(scene_str, "oSomeoneElse00000000000000001")
        answer = site.client.post("/wechat/default/callback", params=params, content=body)
        assert (answer.status_code, answer.text) == (200, "success")
    assert dedup_keys() == before + 1
    assert site.poll(created["scene"])["status"] == "NOT_REG"
    store.close()


def test_fifty_concurrent_polls_of_a_reg_scene_give_tokens_once(site: Site) -> None:
    first = site.new_scene()
    site.scan(first, NEW_OPENID, follow=True)
    site.bind(first["scene"])
    created = site.new_scene()
    site.scan(created, NEW_OPENID)

    async def poll_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=str(site.client.base_url), timeout=TIMEOUT) as c:
            answers = await asyncio.gather(
                *(c.get(f"/api/v1/scenes/{created['scene']}") for _ in range(50))
            )
        return [a.json() for a in answers]

    states = asyncio.run(poll_all())
    assert sum("access_token" in s for s in states) == 1
    assert sum(s.get("claimed") is True for s in states) == 49


def test_require_phone_off_registers_at_the_scan(start: Callable[..., Site]) -> None:
    site = start(WXPUSH_REQUIRE_PHONE="false")
    created = site.new_scene()
    assert site.scan(created, NEW_OPENID, follow=True) == "Logged in"
    state = site.poll(created["scene"])
    assert state["status"] == "REG" and state["user"]["new"] is True


# -- races and rules ------------------------------------------------------------------------


def test_the_same_phone_from_two_openids_links_or_conflicts(start: Callable[..., Site]) -> None:
    site = start()
    a = site.new_scene()
    site.scan(a, NEW_OPENID, follow=True)
    user = site.bind(a["scene"])["user"]
    b = site.new_scene()
    site.scan(b, "oSecondOpenid00000000000002", follow=True)
    linked = site.bind(b["scene"])["user"]
    assert linked == {"id": user["id"], "new": False}


def test_link_off_refuses_a_phone_bound_elsewhere(start: Callable[..., Site]) -> None:
    site = start(WXPUSH_LINK_BY_PHONE="false")
    a = site.new_scene()
    site.scan(a, NEW_OPENID, follow=True)
    site.bind(a["scene"])
    b = site.new_scene()
    site.scan(b, "oSecondOpenid00000000000002", follow=True)
    code = site.send_code(b["scene"])
    answer = site.client.post(f"/api/v1/scenes/{b['scene']}/bind",
                              json={"phone": PHONE, "code": code})  # fmt: skip
    assert_error(answer, 409, "phone_taken")


def test_login_only_refuses_a_new_person_and_creates_nothing(
    start: Callable[..., Site], database_url: str
) -> None:
    site = start(WXPUSH_LOGIN_ONLY="true")
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    code = site.send_code(created["scene"])
    answer = site.client.post(f"/api/v1/scenes/{created['scene']}/bind",
                              json={"phone": PHONE, "code": code})  # fmt: skip
    assert_error(answer, 403, "login_only")
    assert count_rows(database_url, "users") == 0
    assert count_rows(database_url, "identities") == 0


def test_a_second_sms_within_60_s_is_rate_limited(start: Callable[..., Site]) -> None:
    site = start(WXPUSH_SMS_INTERVAL_SECONDS="60")
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    url = f"/api/v1/scenes/{created['scene']}/sms"
    assert site.client.post(url, json={"phone": PHONE}).status_code == 202
    answer = site.client.post(url, json={"phone": PHONE})
    assert_error(answer, 429, "sms_rate_limited")
    assert 0 < int(answer.headers["Retry-After"]) <= 60


def test_sms_and_bind_need_a_not_reg_scene(site: Site) -> None:
    created = site.new_scene()
    url = f"/api/v1/scenes/{created['scene']}"
    assert_error(site.client.post(url + "/sms", json={"phone": PHONE}), 409, "scene_state")
    gone = "A" * 22
    assert_error(site.client.post(f"/api/v1/scenes/{gone}/sms", json={"phone": PHONE}), 410,
                 "scene_expired")  # fmt: skip
    assert_error(site.client.post("/api/v1/scenes/nope/sms", json={"phone": PHONE}), 404,
                 "scene_not_found")  # fmt: skip
    assert site.poll("nope") == {"status": "EXPIRED", "code": 1}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"{}", "missing_field"),
        (b'{"phone": 13800138000}', "invalid_field"),
        (b'{"phone": "not a phone"}', "invalid_phone"),
    ],
)
def test_bad_sms_requests_get_clear_errors(site: Site, body: bytes, code: str) -> None:
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    answer = site.client.post(f"/api/v1/scenes/{created['scene']}/sms", content=body,
                              headers={"Content-Type": "application/json"})  # fmt: skip
    assert_error(answer, 400, code)


# -- tokens ---------------------------------------------------------------------------------


def test_refresh_rotation_reuse_detection_and_logout(site: Site) -> None:
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    first = site.bind(created["scene"])
    second = site.client.post("/api/v1/token/refresh",
                              json={"refresh_token": first["refresh_token"]})  # fmt: skip
    assert second.status_code == 200
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    reused = site.client.post("/api/v1/token/refresh",
                              json={"refresh_token": first["refresh_token"]})  # fmt: skip
    assert_error(reused, 401, "refresh_token_reused")
    revoked = site.client.post("/api/v1/token/refresh",
                               json={"refresh_token": pair["refresh_token"]})  # fmt: skip
    assert revoked.status_code == 401  # the whole family went with the reuse

    again = site.new_scene()
    site.scan(again, NEW_OPENID)
    tokens = site.poll(again["scene"])
    out = site.client.post("/api/v1/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    after = site.client.post("/api/v1/token/refresh",
                             json={"refresh_token": tokens["refresh_token"]})  # fmt: skip
    assert after.status_code == 401


def test_me_needs_a_valid_bearer_token(site: Site) -> None:
    assert_error(site.client.get("/api/v1/me"), 401, "invalid_token")
    bad = {"Authorization": "Bearer not.a.jwt"}
    assert_error(site.client.get("/api/v1/me", headers=bad), 401, "invalid_token")


# -- QR images, docs, metrics ---------------------------------------------------------------


def test_qr_code_is_rendered_locally(site: Site) -> None:
    created = site.new_scene()
    fetched_before = site.fake.calls["/cgi-bin/showqrcode"]
    svg = site.client.get(created["qr_image"])
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content
    png = site.client.get(created["qr_image"].replace(".svg", ".png"))
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert site.fake.calls["/cgi-bin/showqrcode"] == fetched_before
    assert_error(site.client.get("/api/v1/scenes/" + "B" * 22 + "/qr.svg"), 404,
                 "scene_not_found")  # fmt: skip


def test_openapi_describes_every_route(site: Site) -> None:
    doc = site.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    env = {"WXPUSH_APPID": "wx1", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok"}
    app = create_app(Settings.from_env(env, dotenv=None))
    routes = {
        (m.lower(), r.path)
        for r in app.routes
        for m in getattr(r, "methods", None) or []
        if m != "HEAD"
    }  # type: ignore[attr-defined]
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert routes == described


def test_metrics_count_scenes_and_transitions(site: Site) -> None:
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    text = site.client.get("/metrics").text
    assert 'wxpush_scenes_created_total{account="default"} 1.0' in text
    assert 'wxpush_scene_transitions_total{status="NOT_REG"} 1.0' in text
    assert 'wxpush_callbacks_total{outcome="answered"} 1.0' in text
    assert 'wxpush_wechat_api_calls_total{outcome="ok",path="/cgi-bin/qrcode/create"} 1.0' in text


def test_scene_creation_is_rate_limited_per_ip(start: Callable[..., Site]) -> None:
    site = start(WXPUSH_SCENES_PER_MINUTE_PER_IP="3")
    for _ in range(3):
        site.new_scene()
    answer = site.client.post("/api/v1/scenes", json={})
    assert_error(answer, 429, "scene_rate_limited")
    assert int(answer.headers["Retry-After"]) > 0


# -- outages --------------------------------------------------------------------------------


def test_redis_down_gives_503_within_1_s_and_recovers(
    site: Site, redis_server: RedisServer
) -> None:
    created = site.new_scene()
    redis_server.stop()
    try:
        for call in (lambda: site.client.post("/api/v1/scenes", json={}),
                     lambda: site.client.get(f"/api/v1/scenes/{created['scene']}")):  # fmt: skip
            started = time.monotonic()
            assert_error(call(), 503, "redis_unavailable")
            assert time.monotonic() - started < PROMPTLY
    finally:
        redis_server.start()
    assert site.new_scene()["status"] == "LOOP"


def test_two_binds_of_one_scene_at_once_make_one_user(site: Site, database_url: str) -> None:
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    code = site.send_code(created["scene"])

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(site.client.base_url), timeout=TIMEOUT) as c:
            url = f"/api/v1/scenes/{created['scene']}/bind"
            body = {"phone": PHONE, "code": code}
            return list(await asyncio.gather(c.post(url, json=body), c.post(url, json=body)))

    answers = sorted(asyncio.run(both()), key=lambda a: a.status_code)
    assert [a.status_code for a in answers] == [200, 409]
    assert_error(answers[1], 409, "scene_state")
    assert count_rows(database_url, "users") == 1


def test_database_down_gives_503_within_1_s_and_recovers(
    redis_url: str, tmp_path: Path, postgres_server: Any, postgres_db_url: str,
    fake_wechat: fakewechat.FakeWeChat, sms_inbox: SmsInbox,
) -> None:  # fmt: skip
    env = {
        "WXPUSH_APPID": fake_wechat.appid, "WXPUSH_APPSECRET": fake_wechat.secret,
        "WXPUSH_TOKEN": wire.TOKEN, "WXPUSH_AES_KEY": AES_KEY, "WXPUSH_REDIS_URL": redis_url,
        "WXPUSH_DATABASE_URL": postgres_db_url, "WXPUSH_JWT_KEY_FILE": str(tmp_path / "k.pem"),
        "WXPUSH_WECHAT_API_BASE": fake_wechat.url, "WXPUSH_SMS_PROVIDER": "webhook",
        "WXPUSH_SMS_WEBHOOK_URL": sms_inbox.url,
    }  # fmt: skip
    with (
        serve(create_app(Settings.from_env(env, dotenv=None))) as url,
        httpx.Client(base_url=url, timeout=TIMEOUT * 2) as client,
    ):
        site = Site(client, fake_wechat, sms_inbox)
        created = site.new_scene()
        postgres_server.stop()
        try:
            started = time.monotonic()
            answer = client.get("/readyz")
            assert_error(answer, 503, "database_unavailable")
            assert time.monotonic() - started < PROMPTLY
            # a scan of a new person needs the database: WeChat gets a clear 503, and retries
            scene_str = fake_wechat.scene_of(created["qr_url"])
            crypto = MessageCrypto(fake_wechat.appid, AES_KEY)
            xml = wire.event_xml("SCAN", scene_str, openid=NEW_OPENID)
            params, body = wire.signed(xml, mode="safe", crypto=crypto)
            started = time.monotonic()
            answer = client.post("/wechat/default/callback", params=params, content=body)
            assert_error(answer, 503, "database_unavailable")
            assert time.monotonic() - started < PROMPTLY
        finally:
            postgres_server.start()
        assert wait_for(lambda: client.get("/readyz").status_code == 200)
        assert site.scan(created, NEW_OPENID).startswith("Almost there")
        assert site.poll(created["scene"])["status"] == "NOT_REG"
