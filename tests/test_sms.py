"""SMS codes on a real redis-server, delivered to a real webhook receiver over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.server import keepalive_closer, serve
from tests.util import free_port
from wxpush.config.settings import Settings
from wxpush.errors import BadGateway, BadRequest, Gone, RateLimited
from wxpush.sms import providers as sms
from wxpush.sms.codes import SmsCodes
from wxpush.sms.phone import normalize_phone
from wxpush.sms.providers import ConsoleProvider, SmsProvider, WebhookProvider, make_provider

PHONE = "+8613800138000"
IP = "203.0.113.7"
SCENE = "scene-1"
BASE = {"WXPUSH_APPID": "wx0123456789abcdef", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok123"}


def make_settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env}, dotenv=None)


class Clock:
    """A clock the test moves by hand: limits and expiry follow it, not the wall."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Receiver:
    """The far side of the SMS webhook: records each POST and answers ``status``."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def endpoint(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self.lock:
            self.calls.append(body)
        await asyncio.sleep(self.delay)
        return Response(status_code=self.status)

    def last_code(self) -> str:
        with self.lock:
            code: str = self.calls[-1]["code"]
        return code


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/sms", receiver.endpoint, methods=["POST"])])
    with serve(app) as base:
        receiver.url = base + "/sms"
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.status, receiver_server.delay = 200, 0.0
    receiver_server.calls.clear()
    return receiver_server


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codes(redis: Redis, http: httpx.AsyncClient, receiver: Receiver, clock: Clock) -> SmsCodes:
    return SmsCodes(
        make_settings().sms_policy(), redis, WebhookProvider(http, receiver.url), clock=clock
    )


def codes_with(redis: Redis, provider: SmsProvider, clock: Clock, **env: str) -> SmsCodes:
    return SmsCodes(make_settings(**env).sms_policy(), redis, provider, clock=clock)


# -- phone numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+86 13800138000", PHONE),
        ("13800138000", PHONE),
        (" 138 0013 8000 ", PHONE),
        ("+86 138-0013-8000", PHONE),
        ("+1 650 253 0000", "+16502530000"),
        ("+44 7911 123456", "+447911123456"),
    ],
)
def test_normalize_phone(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw", ["garbage", "", "123", "+86 138", "1" * 60, "+86 10 1234 5678", "+1 800 555 0199"]
)
def test_normalize_phone_refuses(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        normalize_phone(raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_phone")
    assert caught.value.message.endswith(".") and " " in caught.value.message


# -- sending and verifying ---------------------------------------------------------------------


async def test_webhook_delivers_a_code_that_verifies(
    codes: SmsCodes, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await codes.send(PHONE, ip=IP, scope=SCENE) == 60
    assert len(receiver.calls) == 1
    body = receiver.calls[0]
    assert set(body) == {"phone", "code", "expires_in"}
    assert (body["phone"], body["expires_in"]) == (PHONE, 300)
    assert len(body["code"]) == 6 and body["code"].isdigit()
    await codes.verify(PHONE, body["code"], scope=SCENE)
    with pytest.raises(BadRequest) as caught:  # one use only
        await codes.verify(PHONE, body["code"], scope=SCENE)
    assert caught.value.code == "no_code"
    assert body["code"] not in caplog.text
    assert PHONE not in caplog.text and "13800138000" not in caplog.text


async def test_code_belongs_to_its_scene(codes: SmsCodes, receiver: Receiver) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    with pytest.raises(BadRequest) as caught:
        await codes.verify(PHONE, receiver.last_code(), scope="another-scene")
    assert caught.value.code == "no_code"
    await codes.verify(PHONE, receiver.last_code(), scope=SCENE)


async def test_wrong_code_says_how_many_tries_are_left(codes: SmsCodes, receiver: Receiver) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    wrong = "000000" if receiver.last_code() != "000000" else "111111"
    with pytest.raises(BadRequest) as caught:
        await codes.verify(PHONE, wrong, scope=SCENE)
    assert (caught.value.status, caught.value.code) == (400, "wrong_code")
    assert caught.value.message == "The code is wrong; 4 tries left."


async def test_malformed_code_costs_no_try(codes: SmsCodes, receiver: Receiver) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    for bad in ("12345", "abcdef", "1234567"):
        with pytest.raises(BadRequest) as caught:
            await codes.verify(PHONE, bad, scope=SCENE)
        assert caught.value.code == "invalid_code"
    await codes.verify(PHONE, f" {receiver.last_code()} ", scope=SCENE)


async def test_too_many_wrong_tries_spend_the_code(codes: SmsCodes, receiver: Receiver) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    right = receiver.last_code()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    messages = []
    for _ in range(5):
        with pytest.raises(BadRequest) as caught:
            await codes.verify(PHONE, wrong, scope=SCENE)
        messages.append(caught.value.message)
    assert messages[:4] == [
        f"The code is wrong; {n} {'try' if n == 1 else 'tries'} left." for n in (4, 3, 2, 1)
    ]
    assert "no tries are left" in messages[4]
    with pytest.raises(Gone) as caught_gone:  # the sixth try, even with the right code
        await codes.verify(PHONE, right, scope=SCENE)
    assert (caught_gone.value.status, caught_gone.value.code) == (410, "code_spent")


async def test_concurrent_wrong_guesses_are_all_counted(
    codes: SmsCodes, receiver: Receiver
) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    right = receiver.last_code()
    guesses = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 21)]
    results = await asyncio.gather(
        *(codes.verify(PHONE, g, scope=SCENE) for g in guesses), return_exceptions=True
    )
    assert all(isinstance(r, BadRequest | Gone) for r in results)
    assert sum(isinstance(r, BadRequest) and r.code == "wrong_code" for r in results) == 5
    assert sum(isinstance(r, Gone) and r.code == "code_spent" for r in results) == 15
    with pytest.raises(Gone) as caught:
        await codes.verify(PHONE, right, scope=SCENE)
    assert caught.value.code == "code_spent"


async def test_a_checked_code_stays_until_it_is_consumed(
    codes: SmsCodes, receiver: Receiver
) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    right = receiver.last_code()
    for _ in range(3):  # the bind it allows failed on the way: it may be tried again
        await codes.check(PHONE, right, scope=SCENE)
    with pytest.raises(BadRequest) as caught:  # ...and right checks cost no try
        await codes.check(PHONE, f"{(int(right) + 1) % 1_000_000:06d}", scope=SCENE)
    assert caught.value.message == "The code is wrong; 4 tries left."
    await codes.consume(PHONE, right, scope=SCENE)
    with pytest.raises(BadRequest) as caught:
        await codes.check(PHONE, right, scope=SCENE)
    assert caught.value.code == "no_code"


async def test_concurrent_wrong_checks_are_all_counted(codes: SmsCodes, receiver: Receiver) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    right = receiver.last_code()
    guesses = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 21)] + [right] * 5
    results = await asyncio.gather(
        *(codes.check(PHONE, g, scope=SCENE) for g in guesses), return_exceptions=True
    )
    wrong = [r for r in results[:20] if isinstance(r, BadRequest) and r.code == "wrong_code"]
    assert len(wrong) == 5  # right checks between them cost no try
    assert sum(isinstance(r, Gone) and r.code == "code_spent" for r in results[:20]) == 15
    # Each right check passes until the fifth wrong one spends the code (the order in which
    # the 25 checks reach Redis is not fixed), then it is told so.
    assert all(r is None or (isinstance(r, Gone) and r.code == "code_spent") for r in results[20:])
    with pytest.raises(Gone) as caught:
        await codes.check(PHONE, right, scope=SCENE)
    assert caught.value.code == "code_spent"


async def test_consume_spares_a_newer_code(
    codes: SmsCodes, receiver: Receiver, clock: Clock
) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    old = receiver.last_code()
    await codes.check(PHONE, old, scope=SCENE)
    clock.advance(61)
    await codes.send(PHONE, ip=IP, scope=SCENE)
    new = receiver.last_code()
    if new == old:  # pragma: no cover - one chance in a million
        return
    await codes.consume(PHONE, old, scope=SCENE)  # a late bind with the code it checked
    await codes.verify(PHONE, new, scope=SCENE)


async def test_code_expires(codes: SmsCodes, receiver: Receiver, clock: Clock) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    clock.advance(300)
    with pytest.raises(Gone) as caught:
        await codes.verify(PHONE, receiver.last_code(), scope=SCENE)
    assert caught.value.code == "code_expired"


async def test_new_code_replaces_the_old(codes: SmsCodes, receiver: Receiver, clock: Clock) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    old = receiver.last_code()
    clock.advance(61)
    await codes.send(PHONE, ip=IP, scope=SCENE)
    new = receiver.last_code()
    if old != new:
        with pytest.raises(BadRequest) as caught:
            await codes.verify(PHONE, old, scope=SCENE)
        assert caught.value.code == "wrong_code"
    await codes.verify(PHONE, new, scope=SCENE)


async def test_no_code_sent(codes: SmsCodes) -> None:
    with pytest.raises(BadRequest) as caught:
        await codes.verify(PHONE, "123456", scope=SCENE)
    assert caught.value.code == "no_code"


async def test_codes_are_stored_hashed(codes: SmsCodes, receiver: Receiver, redis: Redis) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    code = receiver.last_code().encode()
    dump = b""
    async for key in redis.scan_iter("*"):
        dump += key + b"\n"
        kind = await redis.type(key)
        if kind == b"string":
            dump += await redis.get(key) or b""
        elif kind == b"hash":
            for name, value in (await redis.hgetall(key)).items():
                dump += name + b"=" + value + b"\n"
        elif kind == b"zset":
            for member in await redis.zrange(key, 0, -1):
                dump += member + b"\n"
    assert b"wxpush:sms:code:" in dump
    assert code not in dump


# -- limits ------------------------------------------------------------------------------------


async def test_resend_waits_for_the_interval(
    codes: SmsCodes, receiver: Receiver, clock: Clock
) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    with pytest.raises(RateLimited) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert (caught.value.status, caught.value.code) == (429, "sms_rate_limited")
    assert 0 < caught.value.retry_after <= 60
    assert caught.value.headers["Retry-After"] == str(caught.value.retry_after)
    clock.advance(45)
    with pytest.raises(RateLimited) as caught:
        await codes.send(PHONE, ip=IP, scope="another-scene")
    assert caught.value.retry_after == 15
    assert "15 s" in caught.value.message
    clock.advance(15)
    await codes.send(PHONE, ip=IP, scope=SCENE)
    assert len(receiver.calls) == 2


async def test_concurrent_sends_send_once(codes: SmsCodes, receiver: Receiver) -> None:
    results = await asyncio.gather(
        *(codes.send(PHONE, ip=IP, scope=SCENE) for _ in range(10)), return_exceptions=True
    )
    assert sum(r == 60 for r in results) == 1
    assert sum(isinstance(r, RateLimited) for r in results) == 9
    assert len(receiver.calls) == 1


async def test_daily_limit_per_phone(codes: SmsCodes, receiver: Receiver, clock: Clock) -> None:
    for _ in range(10):
        await codes.send(PHONE, ip=IP, scope=SCENE)
        clock.advance(61)
    with pytest.raises(RateLimited) as caught:
        await codes.send(PHONE, ip="198.51.100.1", scope=SCENE)
    assert caught.value.code == "sms_rate_limited"
    assert caught.value.retry_after == 86400 - 10 * 61
    assert "24 hours" in caught.value.message
    await codes.send("+8613900139000", ip=IP, scope=SCENE)  # another phone is not limited
    clock.advance(caught.value.retry_after)
    await codes.send(PHONE, ip=IP, scope=SCENE)  # the oldest send left the 24-hour window
    assert len(receiver.calls) == 12


async def test_hourly_limit_per_ip(
    redis: Redis, http: httpx.AsyncClient, receiver: Receiver, clock: Clock
) -> None:
    provider = WebhookProvider(http, receiver.url)
    codes = codes_with(redis, provider, clock, WXPUSH_SMS_PER_HOUR_PER_IP="3")
    for n in range(3):
        await codes.send(f"+86138001380{n:02d}", ip=IP, scope=SCENE)
        clock.advance(10)
    with pytest.raises(RateLimited) as caught:
        await codes.send("+8613800138099", ip=IP, scope=SCENE)
    assert caught.value.retry_after == 3600 - 30
    assert "network" in caught.value.message
    await codes.send("+8613800138099", ip="198.51.100.1", scope=SCENE)  # another IP is fine
    clock.advance(caught.value.retry_after)
    await codes.send("+8613800138098", ip=IP, scope=SCENE)


async def test_lowered_daily_limit(
    redis: Redis, http: httpx.AsyncClient, receiver: Receiver, clock: Clock
) -> None:
    provider = WebhookProvider(http, receiver.url)
    codes = codes_with(
        redis, provider, clock, WXPUSH_SMS_PER_DAY_PER_PHONE="2", WXPUSH_SMS_INTERVAL_SECONDS="1"
    )
    assert await codes.send(PHONE, ip=IP, scope=SCENE) == 1
    clock.advance(1)
    await codes.send(PHONE, ip=IP, scope=SCENE)
    clock.advance(1)
    with pytest.raises(RateLimited) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert caught.value.retry_after == 86400 - 2


# -- provider failures -------------------------------------------------------------------------


async def test_webhook_failure_is_502_and_costs_nothing(
    codes: SmsCodes, receiver: Receiver, redis: Redis
) -> None:
    receiver.status = 500
    for _ in range(3):
        with pytest.raises(BadGateway) as caught:
            await codes.send(PHONE, ip=IP, scope=SCENE)
        assert (caught.value.status, caught.value.code) == (502, "sms_failed")
    assert len(receiver.calls) == 3
    assert await redis.zcard(f"wxpush:sms:{{{PHONE}}}:day") == 0
    assert await redis.zcard(f"wxpush:sms:ip:{IP}") == 0
    receiver.status = 204
    assert await codes.send(PHONE, ip=IP, scope=SCENE) == 60  # at once: no interval was started
    await codes.verify(PHONE, receiver.last_code(), scope=SCENE)
    assert await redis.zcard(f"wxpush:sms:{{{PHONE}}}:day") == 1


async def test_failed_resend_keeps_the_previous_code(
    codes: SmsCodes, receiver: Receiver, clock: Clock
) -> None:
    await codes.send(PHONE, ip=IP, scope=SCENE)
    first = receiver.last_code()
    clock.advance(61)
    receiver.status = 503
    with pytest.raises(BadGateway) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert caught.value.code == "sms_failed"
    await codes.verify(PHONE, first, scope=SCENE)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_kept_alive_connection_the_receiver_just_dropped_costs_no_code(
    redis: Redis, http: httpx.AsyncClient, clock: Clock, how: Literal["close", "reset"]
) -> None:
    """The second code goes out on the connection the first one left open, which the
    receiver drops as it arrives (its keep-alive ran out): it is sent again on a new one."""
    other = "+8613900139000"
    with keepalive_closer(how=how) as closer:
        codes = codes_with(redis, WebhookProvider(http, closer.url), clock)
        await codes.send(PHONE, ip=IP, scope=SCENE)
        await codes.send(other, ip=IP, scope=SCENE)
        clock.advance(61)
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert [json.loads(body)["phone"] for body in closer.answered] == [PHONE, other, PHONE]
    assert closer.dropped == 2


async def test_a_receiver_that_drops_a_new_connection_is_not_sent_the_code_twice(
    redis: Redis, http: httpx.AsyncClient, clock: Clock
) -> None:
    """Dropped on a connection of its own, the request may have been acted on: a 502, once."""
    with keepalive_closer(drop="every") as closer:
        codes = codes_with(redis, WebhookProvider(http, closer.url), clock)
        with pytest.raises(BadGateway) as caught:
            await codes.send(PHONE, ip=IP, scope=SCENE)
    assert caught.value.code == "sms_failed"
    assert (closer.dropped, closer.answered) == (1, [])


async def test_unreachable_webhook(redis: Redis, http: httpx.AsyncClient, clock: Clock) -> None:
    provider = WebhookProvider(http, f"http://127.0.0.1:{free_port()}/sms")
    codes = codes_with(redis, provider, clock)
    with pytest.raises(BadGateway) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert caught.value.code == "sms_failed"
    assert await redis.exists(f"wxpush:sms:{{{PHONE}}}:next") == 0


async def test_slow_webhook_times_out(
    codes: SmsCodes, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sms, "WEBHOOK_TIMEOUT", 0.2)
    receiver.delay = 1.0
    with pytest.raises(BadGateway) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert caught.value.code == "sms_failed"
    receiver.delay = 0.0
    await codes.send(PHONE, ip=IP, scope=SCENE)


# -- the console provider ----------------------------------------------------------------------


async def test_console_prints_and_keeps_the_latest_code(
    redis: Redis, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    console = ConsoleProvider(redis)
    codes = codes_with(redis, console, clock)
    await codes.send(PHONE, ip=IP, scope=SCENE)
    code = await console.latest(PHONE)
    assert code is not None and len(code) == 6
    out = capsys.readouterr().out
    assert code in out and "+86 138****8000" in out and PHONE not in out
    assert 0 < await redis.ttl(f"wxpush:sms:console:last:{PHONE}") <= 300
    await codes.verify(PHONE, code, scope=SCENE)
    assert await console.latest("+8613900139000") is None


async def test_make_provider(redis: Redis, http: httpx.AsyncClient) -> None:
    assert isinstance(
        make_provider(make_settings().sms_policy(), http=http, redis=redis), ConsoleProvider
    )
    webhook = make_settings(
        WXPUSH_SMS_PROVIDER="webhook", WXPUSH_SMS_WEBHOOK_URL="https://sms.example/send"
    )
    assert isinstance(make_provider(webhook.sms_policy(), http=http, redis=redis), WebhookProvider)
