"""The WeChat callback endpoint, end to end: a real uvicorn server and a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests import wire
from tests.conftest import RedisServer
from tests.server import keepalive_closer, serve
from tests.util import PROMPTLY, TIMEOUT
from wxpush.app import create_app
from wxpush.callback.scan import Scan
from wxpush.config.settings import Settings
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.errors import CiphertextError
from wxpush.wechat.messages import TextMessage, parse_fields, parse_message
from wxpush.wechat.signature import sign, verify

AES_KEY = wire.new_aes_key()
OLD_AES_KEY = wire.new_aes_key()
PATH = "/wechat/default/callback"


def make_settings(redis_url: str, workdir: Path, **env: str) -> Settings:
    base = {
        "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'wxpush.db'}",
        "WXPUSH_JWT_KEY_FILE": str(workdir / "jwt.pem"),
        "WXPUSH_APPID": wire.APPID,
        "WXPUSH_APPSECRET": "secret",
        "WXPUSH_TOKEN": wire.TOKEN,
        "WXPUSH_AES_KEY": AES_KEY,
        "WXPUSH_REDIS_URL": redis_url,
        "WXPUSH_WECHAT_API_BASE": "http://127.0.0.1:9",
    }
    return Settings.from_env({**base, **env}, dotenv=None)


@dataclass
class Scans:
    """A scan handler that records what reached it."""

    seen: list[Scan] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    delay: float = 0.0

    async def __call__(self, scan: Scan) -> str | None:
        self.seen.append(scan)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "Logged in" if scan.openid in self.known else "Finish on the screen"


@dataclass
class Server:
    url: str
    scans: Scans
    client: httpx.Client
    redis: redis.Redis

    def post(self, params: dict[str, str], body: bytes, **kw: Any) -> httpx.Response:
        return self.client.post(PATH, params=params, content=body, **kw)


@pytest.fixture
def start(
    redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    stack: list[Any] = []

    def run(**env: str) -> Server:
        scans = Scans()
        app = create_app(make_settings(redis_url, tmp_path, **env), scan_handler=scans)
        ctx = serve(app)
        url = ctx.__enter__()
        stack.append(ctx)
        client = httpx.Client(base_url=url, timeout=TIMEOUT * 2)
        stack.append(client)
        return Server(url, scans, client, redis_server.client())

    yield run
    for item in reversed(stack):
        if isinstance(item, httpx.Client):
            item.close()
        else:
            item.__exit__(None, None, None)


@pytest.fixture
def server(start: Callable[..., Server]) -> Server:
    return start()


def crypto(key: str = AES_KEY) -> MessageCrypto:
    return MessageCrypto(wire.APPID, key)


def open_encrypted_reply(response: httpx.Response, key: str = AES_KEY) -> TextMessage:
    fields = parse_fields(response.content)
    verify(
        fields["MsgSignature"],
        wire.TOKEN,
        fields["TimeStamp"],
        fields["Nonce"],
        fields["Encrypt"],
        window=60,
    )
    message = parse_message(crypto(key).decrypt(fields["Encrypt"]))
    assert isinstance(message, TextMessage)
    return message


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == code
    assert "Traceback" not in response.text


# -- URL verification -----------------------------------------------------------------------


def test_url_verification_echoes_echostr(server: Server) -> None:
    ts, nonce = str(int(time.time())), "4242"
    params = {
        "signature": sign(wire.TOKEN, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "echostr": "echo-7788",
    }
    answer = server.client.get(PATH, params=params)
    assert answer.status_code == 200
    assert answer.text == "echo-7788"


def test_url_verification_refuses_wrong_signature_and_stale_time(server: Server) -> None:
    ts, nonce = str(int(time.time())), "4242"
    bad = {"signature": "0" * 40, "timestamp": ts, "nonce": nonce, "echostr": "x"}
    assert_error(server.client.get(PATH, params=bad), 403, "bad_signature")
    old = str(int(time.time()) - 3600)
    stale = {
        "signature": sign(wire.TOKEN, old, nonce),
        "timestamp": old,
        "nonce": nonce,
        "echostr": "x",
    }
    assert_error(server.client.get(PATH, params=stale), 403, "stale_timestamp")
    assert_error(server.client.get(PATH, params={"timestamp": ts}), 400, "missing_parameter")
    assert_error(server.client.get("/wechat/nope/callback", params=bad), 404, "not_found")


# -- the three modes ------------------------------------------------------------------------


def test_plaintext_subscribe_from_login_qr_reaches_scan_handler(server: Server) -> None:
    server.scans.known.add(wire.OPENID)
    params, body = wire.signed(wire.event_xml("subscribe", "qrscene_login:abc123"))
    answer = server.post(params, body)
    assert answer.status_code == 200
    [scan] = server.scans.seen
    assert (scan.scene_id, scan.openid, scan.account.name) == ("abc123", wire.OPENID, "default")
    reply = parse_message(answer.content)
    assert isinstance(reply, TextMessage)
    assert reply.content == "Logged in"
    assert (reply.to_user, reply.from_user) == (wire.OPENID, wire.ACCOUNT_ID)


@pytest.mark.parametrize("mode", ["safe", "compat"])
def test_encrypted_scan_is_answered_encrypted(server: Server, mode: wire.Mode) -> None:
    params, body = wire.signed(wire.event_xml("SCAN", "login:xyz"), mode=mode, crypto=crypto())
    answer = server.post(params, body)
    assert answer.status_code == 200, answer.text
    assert [s.scene_id for s in server.scans.seen] == ["xyz"]
    assert open_encrypted_reply(answer).content == "Finish on the screen"


def test_previous_aes_key_is_accepted_and_replies_use_the_current_one(
    start: Callable[..., Server],
) -> None:
    server = start(WXPUSH_AES_KEY_PREVIOUS=OLD_AES_KEY)
    params, body = wire.signed(
        wire.event_xml("SCAN", "login:k1"), mode="safe", crypto=crypto(OLD_AES_KEY)
    )
    answer = server.post(params, body)
    assert answer.status_code == 200, answer.text
    assert open_encrypted_reply(answer, AES_KEY).content == "Finish on the screen"
    with pytest.raises(CiphertextError) as caught:  # the old key does not open the reply
        open_encrypted_reply(answer, OLD_AES_KEY)
    assert type(caught.value) is CiphertextError


def test_non_login_events_without_forward_url_answer_success(server: Server) -> None:
    for xml in (
        wire.event_xml("subscribe"),
        wire.event_xml("subscribe", "qrscene_campaign:7"),
        wire.event_xml("CLICK", "MENU_1"),
        wire.event_xml("unsubscribe"),
        wire.text_xml("hello"),
    ):
        answer = server.post(*wire.signed(xml))
        assert (answer.status_code, answer.text) == (200, "success")
    assert server.scans.seen == []


# -- bad input ------------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>&xxe;</ToUserName><FromUserName>o</FromUserName>
<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content></xml>"""

LAUGHS = (
    b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">"""
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"""]><xml><Content>&lol9;</Content></xml>"""
)


def bad_inputs() -> list[tuple[str, dict[str, str], bytes, int, str]]:
    event = wire.event_xml("SCAN", "login:bad")
    p, b = wire.signed(event)
    cases = [("wrong signature", {**p, "signature": "f" * 40}, b, 403, "bad_signature")]
    old = str(int(time.time()) - 3600)
    cases.append(("stale timestamp", *wire.signed(event, timestamp=old), 403, "stale_timestamp"))
    cases.append(("malformed XML", *wire.signed(b"<xml><ToUserName>x</xml"), 400, "bad_xml"))
    cases.append(("missing fields", *wire.signed(b"<xml><A>1</A></xml>"), 400, "bad_xml"))
    cases.append(("XXE", *wire.signed(XXE), 400, "doctype_forbidden"))
    cases.append(("billion laughs", *wire.signed(LAUGHS), 400, "doctype_forbidden"))
    cases.append(
        (
            "XXE inside the ciphertext",
            *wire.signed(XXE, mode="safe", crypto=crypto()),
            400,
            "doctype_forbidden",
        )
    )
    p, b = wire.signed(event, mode="safe", crypto=crypto())
    cases.append(
        (
            "wrong appid",
            *wire.signed(event, mode="safe", crypto=MessageCrypto("wxanotherappid00000", AES_KEY)),
            400,
            "wrong_appid",
        )
    )
    cases.append(
        (
            "wrong key",
            *wire.signed(event, mode="safe", crypto=crypto(OLD_AES_KEY)),
            400,
            "bad_ciphertext",
        )
    )
    for name, encrypt in (
        ("bad base64", "not*base64!"),
        ("bad length", "QUJD"),
        ("bad padding", "A" * 44),
    ):
        ts, nonce = str(int(time.time())), "1"
        body = b"<xml><ToUserName>gh</ToUserName><Encrypt>%s</Encrypt></xml>" % encrypt.encode()
        params = {
            "timestamp": ts,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": sign(wire.TOKEN, ts, nonce, encrypt),
        }
        cases.append((name, params, body, 400, "bad_ciphertext"))
    return cases


def test_bad_input_gets_its_status_and_changes_nothing(server: Server) -> None:
    for name, params, body, status, code in bad_inputs():
        started = time.monotonic()
        answer = server.post(params, body)
        assert_error(answer, status, code)
        assert time.monotonic() - started < PROMPTLY, name
        assert "root:" not in answer.text, name
    assert server.scans.seen == []
    assert server.redis.keys("wxpush:dedup:*") == []
    # and the server keeps serving
    answer = server.post(*wire.signed(wire.event_xml("SCAN", "login:after")))
    assert answer.status_code == 200
    assert [s.scene_id for s in server.scans.seen] == ["after"]


def test_body_over_64_kib_is_refused(server: Server) -> None:
    big = wire.text_xml("x" * (64 * 1024))
    params, body = wire.signed(big)
    assert_error(server.post(params, body), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    assert_error(server.post(params, chunks()), 413, "payload_too_large")  # type: ignore[arg-type]
    assert server.post(*wire.signed(wire.text_xml("small"))).status_code == 200


def test_safe_mode_without_an_aes_key_is_a_clear_400(start: Callable[..., Server]) -> None:
    server = start(WXPUSH_AES_KEY="")
    params, body = wire.signed(wire.event_xml("SCAN", "login:a"), mode="safe", crypto=crypto())
    assert_error(server.post(params, body), 400, "aes_key_missing")


# -- WeChat's retries -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "safe"])
def test_a_retried_event_reaches_the_handler_once_with_the_same_reply(
    server: Server, mode: wire.Mode
) -> None:
    event = wire.event_xml("subscribe", "qrscene_login:retry1", create_time=int(time.time()))
    answers = [server.post(*wire.signed(event, mode=mode, crypto=crypto())) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len(server.scans.seen) == 1
    assert answers[0].content == answers[1].content == answers[2].content
    assert answers[0].content != b"success"


def test_concurrent_retries_wait_for_the_first_reply(server: Server) -> None:
    server.scans.delay = 0.5
    event = wire.event_xml("SCAN", "login:together", create_time=int(time.time()))

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            calls = [
                client.post(PATH, params=p, content=b)
                for p, b in (wire.signed(event) for _ in range(3))
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(fire())
    assert len(server.scans.seen) == 1
    assert {a.content for a in answers} == {answers[0].content}
    assert b"Finish on the screen" in answers[0].content


def test_a_different_event_of_the_same_person_is_not_a_retry(server: Server) -> None:
    now = int(time.time())
    server.post(*wire.signed(wire.event_xml("SCAN", "login:one", create_time=now)))
    server.post(*wire.signed(wire.event_xml("SCAN", "login:two", create_time=now)))
    assert [s.scene_id for s in server.scans.seen] == ["one", "two"]


# -- forwarding -----------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    seen: list[tuple[str, bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got: list[tuple[str, bytes]] = []

    async def answer(request: Request) -> Response:
        got.append((request.url.query, await request.body()))
        if request.query_params.get("hang"):
            await asyncio.sleep(30)
        return Response(b"<xml><Forwarded>yes</Forwarded></xml>", media_type="application/xml")

    app = Starlette(routes=[Route("/hook", answer, methods=["POST"])])
    with serve(app, timeout_graceful_shutdown=0) as url:
        yield Receiver(url + "/hook", got)


def test_menu_click_is_forwarded_intact_and_its_reply_relayed(
    start: Callable[..., Server], receiver: Receiver
) -> None:
    server = start(WXPUSH_FORWARD_URL=receiver.url)
    params, body = wire.signed(wire.event_xml("CLICK", "MENU_A"), mode="safe", crypto=crypto())
    answer = server.post(params, body)
    assert answer.status_code == 200
    assert answer.content == b"<xml><Forwarded>yes</Forwarded></xml>"
    [(query, forwarded)] = receiver.seen
    assert forwarded == body
    sent = httpx.QueryParams(query)
    assert dict(sent) == params  # WeChat's signature survives: the receiver can verify it
    verify(
        sent["msg_signature"],
        wire.TOKEN,
        sent["timestamp"],
        sent["nonce"],
        parse_fields(forwarded)["Encrypt"],
        window=60,
    )


def test_login_scans_are_not_forwarded(start: Callable[..., Server], receiver: Receiver) -> None:
    server = start(WXPUSH_FORWARD_URL=receiver.url)
    server.post(*wire.signed(wire.event_xml("SCAN", "login:mine")))
    assert receiver.seen == []
    assert len(server.scans.seen) == 1


def test_a_hanging_receiver_still_leaves_the_callback_answered_within_5_s(
    start: Callable[..., Server], receiver: Receiver
) -> None:
    server = start(WXPUSH_FORWARD_URL=receiver.url + "?hang=1")
    started = time.monotonic()
    answer = server.post(*wire.signed(wire.text_xml("hello")))
    elapsed = time.monotonic() - started
    assert (answer.status_code, answer.text) == (200, "success")
    assert elapsed < 5  # WeChat's own deadline, so not scaled
    assert len(receiver.seen) == 1


@pytest.mark.parametrize("how", ["close", "reset"])
def test_an_event_on_a_kept_alive_connection_the_receiver_just_dropped_is_forwarded(
    start: Callable[..., Server], how: Literal["close", "reset"]
) -> None:
    """Each event after the first goes out on the connection the one before left open, and
    the receiver drops it as it arrives (its keep-alive ran out): it is sent again."""
    xml = b"<xml><Forwarded>yes</Forwarded></xml>"
    with keepalive_closer(how=how, body=xml, content_type="application/xml") as receiver:
        server = start(WXPUSH_FORWARD_URL=receiver.url)
        for n in range(3):
            answer = server.post(*wire.signed(wire.text_xml(f"hello {n}", msg_id=1000 + n)))
            assert (answer.status_code, answer.content) == (200, xml)
    assert [parse_fields(body)["Content"] for body in receiver.answered] == [
        "hello 0", "hello 1", "hello 2",
    ]  # fmt: skip
    assert receiver.dropped == 2


def test_an_unreachable_receiver_answers_success(start: Callable[..., Server]) -> None:
    server = start(WXPUSH_FORWARD_URL="http://127.0.0.1:9/hook")
    answer = server.post(*wire.signed(wire.text_xml("hello")))
    assert (answer.status_code, answer.text) == (200, "success")


# -- Redis outage ---------------------------------------------------------------------------


def test_redis_down_gives_503_fast_and_the_server_recovers(
    server: Server, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        started = time.monotonic()
        answer = server.post(*wire.signed(wire.event_xml("SCAN", "login:down")))
        assert_error(answer, 503, "redis_unavailable")
        assert time.monotonic() - started < PROMPTLY
        assert_error(server.client.get("/readyz"), 503, "redis_unavailable")
    finally:
        redis_server.start()
    answer = server.post(*wire.signed(wire.event_xml("SCAN", "login:up")))
    assert answer.status_code == 200
    assert [s.scene_id for s in server.scans.seen] == ["up"]
    assert server.client.get("/readyz").status_code == 200


def test_unknown_routes_and_methods_answer_json(server: Server) -> None:
    assert_error(server.client.get("/nope"), 404, "not_found")
    assert_error(server.client.put(PATH), 405, "method_not_allowed")


@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_told_the_callback_takes_get_and_post(
    server: Server, method: str
) -> None:
    answer = server.client.request(method, PATH)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, HEAD, POST"


def test_get_head_and_post_still_reach_the_callback(server: Server) -> None:
    ts, nonce = str(int(time.time())), "77"
    check = {"signature": sign(wire.TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
             "echostr": "echo-1"}  # fmt: skip
    assert server.client.get(PATH, params=check).text == "echo-1"
    assert server.client.head(PATH, params=check).status_code == 200
    assert server.post(*wire.signed(wire.text_xml("hi"))).status_code == 200
