"""The Aliyun and Tencent Cloud SMS providers, against stand-ins that check every request's
signature as the vendors do (``tests/fakesms.py``), on a real redis-server; and a phone bound
through the HTTP API with a code each vendor delivered.

The signers are first held to the worked examples the vendors publish.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests import fakesms, fakewechat
from tests.fakesms import Answer, FakeVendor
from tests.test_cli import wxpush
from tests.test_login import NEW_OPENID, Site, sms_inbox, start
from tests.util import free_port
from wxpush.clients import outbound
from wxpush.config.settings import Settings
from wxpush.errors import BadGateway, RateLimited, SettingsError
from wxpush.sms import signing, vendor
from wxpush.sms.aliyun import AliyunProvider
from wxpush.sms.codes import SmsCodes
from wxpush.sms.providers import make_provider
from wxpush.sms.tencent import TencentProvider

__all__ = ["fake_wechat", "sms_inbox", "start"]  # fixtures used from other modules

fake_wechat = fakewechat.fake_wechat
PHONE = "+8613800138000"
IP = "203.0.113.7"
SCENE = "scene-1"
BASE = {"WXPUSH_APPID": "wx0123456789abcdef", "WXPUSH_APPSECRET": "s", "WXPUSH_TOKEN": "tok123"}
VENDORS = ["aliyun", "tencent"]


# -- the published worked examples ---------------------------------------------------------------


def test_acs3_reproduces_alibaba_clouds_worked_example() -> None:
    """Alibaba Cloud, "Request syntax and signature method V3" (help.aliyun.com / alibabacloud
    .com, sdk/product-overview/v3-request-structure-and-signature), "Fixed parameter values":
    RunInstances on ecs.cn-shanghai with YourAccessKeyId / YourAccessKeySecret."""
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    headers = {
        "host": "ecs.cn-shanghai.aliyuncs.com", "x-acs-action": "RunInstances",
        "x-acs-content-sha256": empty, "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
        "x-acs-version": "2014-05-26",
    }  # fmt: skip
    query = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
             "RegionId": "cn-shanghai"}  # fmt: skip
    request, _ = signing.canonical_request("POST", "/", query, headers, empty)
    assert request == (
        "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
        "host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n"
        f"x-acs-content-sha256:{empty}\nx-acs-date:2023-10-26T10:22:32Z\n"
        "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n\n"
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n"
        f"{empty}"
    )
    assert signing.sha256_hex(request.encode()) == (
        "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )
    assert signing.acs3_authorization(
        access_key_id="YourAccessKeyId", access_key_secret="YourAccessKeySecret",
        method="POST", path="/", query=query, headers=headers, body_hash=empty,
    ) == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )  # fmt: skip


TENCENT_PAYLOAD = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)


def test_tc3_reproduces_tencent_clouds_worked_example() -> None:
    """Tencent Cloud API 3.0, "Signature v3" (cloud.tencent.com/document/api/213/30654; the
    edition whose example still shows the SecretKey, Gu5t9xGARNpq86cd98joQYCN3EXAMPLE):
    DescribeInstances on cvm, timestamp 1551113065, content-type and host signed."""
    assert signing.sha256_hex(TENCENT_PAYLOAD) == (
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Host": "cvm.tencentcloudapi.com"}  # fmt: skip
    request, _ = signing.canonical_request(
        "POST", "/", {}, headers, signing.sha256_hex(TENCENT_PAYLOAD), lower_values=True
    )
    assert signing.sha256_hex(request.encode()) == (
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    assert signing.tc3_authorization(
        secret_id="AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", service="cvm", timestamp=1551113065,
        date="2019-02-25", method="POST", path="/", query={}, headers=headers,
        body_hash=signing.sha256_hex(TENCENT_PAYLOAD),
    ) == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )  # fmt: skip


def test_tc3_canonical_request_of_the_current_document() -> None:
    """The same document today signs x-tc-action too, its value in lowercase, and publishes
    the canonical request's hash (its SecretKey is masked, so the signature is not checkable)."""
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Host": "cvm.tencentcloudapi.com", "X-TC-Action": "DescribeInstances"}  # fmt: skip
    request, signed = signing.canonical_request(
        "POST", "/", {}, headers, signing.sha256_hex(TENCENT_PAYLOAD), lower_values=True
    )
    assert (
        "x-tc-action:describeinstances\n" in request and signed == "content-type;host;x-tc-action"
    )
    assert signing.sha256_hex(request.encode()) == (
        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    )


def test_percent_encoding_is_rfc_3986() -> None:
    assert signing.percent_encode("a b*c+d/e=f~g_h.i-j") == "a%20b%2Ac%2Bd%2Fe%3Df~g_h.i-j"
    assert signing.percent_encode("阿里云") == "%E9%98%BF%E9%87%8C%E4%BA%91"


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vendors() -> Iterator[dict[str, FakeVendor]]:
    with fakesms.running(fakesms.aliyun()) as a, fakesms.running(fakesms.tencent()) as t:
        yield {"aliyun": a, "tencent": t}


@pytest.fixture(params=VENDORS)
def fake(request: pytest.FixtureRequest, vendors: dict[str, FakeVendor]) -> Iterator[FakeVendor]:
    stand_in = vendors[request.param]
    stand_in.reset()
    yield stand_in
    stand_in.released.set()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(limits=outbound.LIMITS) as client:
        yield client


def vendor_env(fake: FakeVendor, **override: str) -> dict[str, str]:
    """The settings an operator writes for the vendor ``fake`` stands in for."""
    if isinstance(fake, fakesms.FakeTencent):
        env = {
            "WXPUSH_SMS_PROVIDER": "tencent", "WXPUSH_TENCENT_SECRET_ID": fake.key_id,
            "WXPUSH_TENCENT_SECRET_KEY": fake.secret,
            "WXPUSH_TENCENT_SDK_APP_ID": fake.sdk_app_id,
            "WXPUSH_TENCENT_SIGN_NAME": fake.sign_name,
            "WXPUSH_TENCENT_TEMPLATE_ID": fake.template, "WXPUSH_TENCENT_ENDPOINT": fake.url,
        }  # fmt: skip
    else:
        env = {
            "WXPUSH_SMS_PROVIDER": "aliyun", "WXPUSH_ALIYUN_ACCESS_KEY_ID": fake.key_id,
            "WXPUSH_ALIYUN_ACCESS_KEY_SECRET": fake.secret,
            "WXPUSH_ALIYUN_SIGN_NAME": fake.sign_name,
            "WXPUSH_ALIYUN_TEMPLATE_CODE": fake.template, "WXPUSH_ALIYUN_ENDPOINT": fake.url,
        }  # fmt: skip
    return {**env, **override}


def settings_for(fake: FakeVendor, **override: str) -> Settings:
    return Settings.from_env({**BASE, **vendor_env(fake, **override)}, dotenv=None)


def codes_for(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient, *,
    clock: Callable[[], float] | None = None, **override: str,
) -> SmsCodes:  # fmt: skip
    """Codes sent through the vendor, as the server builds them (``make_provider``)."""
    policy = settings_for(fake, **override).sms_policy()
    provider: Any = make_provider(policy, http=http, redis=redis)
    if clock is not None:  # the same provider with a clock of its own (a host's clock gone off)
        config = policy.aliyun or policy.tencent
        provider = type(provider)(http, config, clock=clock)
    return SmsCodes(policy, redis, provider)


async def assert_nothing_spent(fake: FakeVendor, codes: SmsCodes, redis: Redis) -> None:
    """The failed send counted against no limit: asking again at once reaches the vendor, and
    the new code verifies."""
    assert await redis.exists(f"wxpush:sms:{{{PHONE}}}:next") == 0
    assert await redis.zcard(f"wxpush:sms:{{{PHONE}}}:day") == 0
    assert await redis.zcard(f"wxpush:sms:ip:{IP}") == 0
    fake.tamper = False
    await codes.send(PHONE, ip=IP, scope=SCENE)
    await codes.verify(PHONE, fake.last_code(PHONE), scope=SCENE)


# -- delivery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "aliyun_gets"), [(PHONE, "13800138000"), ("+447911123456", "447911123456")]
)
async def test_a_code_goes_out_through_the_vendor_and_verifies(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient, phone: str, aliyun_gets: str
) -> None:
    codes = codes_for(fake, redis, http)
    assert await codes.send(phone, ip=IP, scope=SCENE) == 60
    [sent] = fake.delivered
    assert sent.phone == (aliyun_gets if isinstance(fake, fakesms.FakeAliyun) else phone)
    assert (sent.sign_name, sent.template) == (fake.sign_name, fake.template)
    assert re.fullmatch(r"\d{6}", sent.code)
    await codes.verify(phone, sent.code, scope=SCENE)


async def test_two_codes_in_a_row_are_two_signed_requests(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    """A fresh nonce and signature each time (Aliyun refuses a nonce used before)."""
    codes = codes_for(fake, redis, http, WXPUSH_SMS_INTERVAL_SECONDS="1")
    await codes.send(PHONE, ip=IP, scope=SCENE)
    await codes.send("+8613900139000", ip=IP, scope=SCENE)
    assert len(fake.delivered) == 2 and fake.refusals == []


# -- what the vendor refuses -------------------------------------------------------------------

SIGNATURE_REFUSAL = {"aliyun": "SignatureDoesNotMatch", "tencent": "AuthFailure.SignatureFailure"}
EXPIRED = {"aliyun": "InvalidTimeStamp.Expired", "tencent": "AuthFailure.SignatureExpire"}


def vendor_of(fake: FakeVendor) -> str:
    return "tencent" if isinstance(fake, fakesms.FakeTencent) else "aliyun"


def words_of(fake: FakeVendor) -> str:
    return "Tencent Cloud SMS" if isinstance(fake, fakesms.FakeTencent) else "Aliyun SMS"


async def send_refused(codes: SmsCodes) -> BadGateway:
    with pytest.raises(BadGateway) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    assert (caught.value.status, caught.value.code) == (502, "sms_failed")
    return caught.value


async def test_a_wrong_secret_is_refused_by_the_vendor_and_costs_nothing(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    secret_var = ("WXPUSH_TENCENT_SECRET_KEY" if vendor_of(fake) == "tencent"
                  else "WXPUSH_ALIYUN_ACCESS_KEY_SECRET")  # fmt: skip
    wrong = codes_for(fake, redis, http, **{secret_var: "NotTheSecret0000000000000000aaaa"})
    error = await send_refused(wrong)
    code = SIGNATURE_REFUSAL[vendor_of(fake)]
    assert error.message.startswith(f"{words_of(fake)} refused the message ({code}): ")
    assert fake.refusals == [code] and fake.delivered == []
    await assert_nothing_spent(fake, codes_for(fake, redis, http), redis)


async def test_a_body_changed_on_the_way_is_refused(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    """A proxy that rewrites the number after signing: the vendor sees a body whose hash was
    not the one signed, and sends nothing."""
    codes = codes_for(fake, redis, http)
    fake.tamper = True
    error = await send_refused(codes)
    assert f"({SIGNATURE_REFUSAL[vendor_of(fake)]})" in error.message
    assert fake.delivered == []
    await assert_nothing_spent(fake, codes, redis)


async def test_a_clock_20_minutes_off_is_refused(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    late = codes_for(fake, redis, http, clock=lambda: time.time() - 20 * 60)
    error = await send_refused(late)
    assert f"({EXPIRED[vendor_of(fake)]})" in error.message
    await assert_nothing_spent(fake, codes_for(fake, redis, http), redis)


async def test_a_sign_name_the_vendor_does_not_know_is_refused(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    var = "WXPUSH_TENCENT_SIGN_NAME" if vendor_of(fake) == "tencent" else "WXPUSH_ALIYUN_SIGN_NAME"
    error = await send_refused(codes_for(fake, redis, http, **{var: "没有这个签名"}))
    expected = {"aliyun": "isv.SMS_SIGNATURE_ILLEGAL",
                "tencent": "FailedOperation.SignatureIncorrectOrUnapproved"}  # fmt: skip
    assert f"({expected[vendor_of(fake)]}): " in error.message


REFUSALS = {
    "aliyun": Answer("isv.AMOUNT_NOT_ENOUGH", "账户余额不足"),
    "tencent": Answer("FailedOperation.InsufficientBalanceInSmsPackage", "套餐包余量不足"),
}


async def test_a_refusal_is_502_with_the_vendors_code_in_words(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    codes = codes_for(fake, redis, http)
    answer = REFUSALS[vendor_of(fake)]
    fake.then(answer)
    error = await send_refused(codes)
    assert (
        error.message == f"{words_of(fake)} refused the message ({answer.code}): {answer.message}"
    )
    await assert_nothing_spent(fake, codes, redis)


async def test_a_vendor_message_quoting_the_code_or_number_does_not_show_them(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    codes = codes_for(fake, redis, http)
    fake.then(Answer("isv.BLACK_KEY_CONTROL_LIMIT", "variable {code} for 13800138000\nis held"))
    error = await send_refused(codes)
    assert fake.codes_seen[-1] not in error.message
    assert error.message.endswith(
        "(isv.BLACK_KEY_CONTROL_LIMIT): variable ****** for +86 138****8000 is held"
    )


def midnight_in_china() -> float:
    now = datetime.now(UTC) + timedelta(hours=8)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


THROTTLING = [
    ("aliyun", Answer("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"), 60),
    ("aliyun", Answer("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5"), 3600),
    ("aliyun", Answer("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10"), "midnight"),
    ("aliyun", Answer("isv.DAY_LIMIT_CONTROL", "触发日发送限额"), "midnight"),
    ("aliyun", Answer("Throttling.User", "Request was denied due to user flow control.", 400), 10),
    ("tencent", Answer("LimitExceeded.PhoneNumberThirtySecondLimit", "30 s limit"), 30),
    ("tencent", Answer("LimitExceeded.PhoneNumberOneHourLimit", "1 h limit"), 3600),
    ("tencent", Answer("LimitExceeded.PhoneNumberDailyLimit", "daily limit"), "midnight"),
    ("tencent", Answer("LimitExceeded.DeliveryFrequencyLimit", "frequency"), 60),
    ("tencent", Answer("RequestLimitExceeded", "too many requests", whole=True), 10),
]


@pytest.mark.parametrize(("which", "answer", "seconds"), THROTTLING,
                         ids=[f"{w}-{a.code}" for w, a, _ in THROTTLING])  # fmt: skip
async def test_throttling_is_429_with_retry_after(
    vendors: dict[str, FakeVendor], redis: Redis, http: httpx.AsyncClient,
    which: str, answer: Answer, seconds: int | str,
) -> None:  # fmt: skip
    fake = vendors[which]
    fake.reset()
    codes = codes_for(fake, redis, http)
    fake.then(answer)
    with pytest.raises(RateLimited) as caught:
        await codes.send(PHONE, ip=IP, scope=SCENE)
    error = caught.value
    assert (error.status, error.code) == (429, "sms_rate_limited")
    assert f"({answer.code})" in error.message
    retry_after = int(error.headers["Retry-After"])
    if seconds == "midnight":
        assert abs(retry_after - midnight_in_china()) < 5 or retry_after == 60
    else:
        assert retry_after == seconds
    await assert_nothing_spent(fake, codes, redis)


# -- what never answers, or answers nonsense ----------------------------------------------------


async def test_a_hung_vendor_is_502(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vendor, "VENDOR_TIMEOUT", 0.3)
    codes = codes_for(fake, redis, http)
    fake.then("hang")
    error = await send_refused(codes)
    assert error.message == f"{words_of(fake)} could not be reached; try again."
    await assert_nothing_spent(fake, codes, redis)


@pytest.mark.parametrize(
    "garbage",
    ["garble", (503, b"<html>503 Service Unavailable</html>"), (200, b'{"unexpected": [1]}'),
     (200, b"[]"), (502, b"")],
    ids=["bytes", "proxy-page", "other-json", "json-list", "empty-502"],
)  # fmt: skip
async def test_an_answer_that_is_not_the_vendors_is_502(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient, garbage: Any
) -> None:
    codes = codes_for(fake, redis, http)
    fake.then(garbage)
    error = await send_refused(codes)
    assert error.message.startswith(f"{words_of(fake)} gave an answer that could not be read")
    await assert_nothing_spent(fake, codes, redis)


async def test_an_unreachable_vendor_is_502(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient
) -> None:
    var = f"WXPUSH_{vendor_of(fake).upper()}_ENDPOINT"
    codes = codes_for(fake, redis, http, **{var: f"http://127.0.0.1:{free_port()}"})
    error = await send_refused(codes)
    assert error.message == f"{words_of(fake)} could not be reached; try again."
    assert await redis.exists(f"wxpush:sms:{{{PHONE}}}:next") == 0


# -- logs --------------------------------------------------------------------------------------


async def test_no_secret_code_or_number_reaches_a_log(
    fake: FakeVendor, redis: Redis, http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name in ("", "httpx", "httpcore", "wxpush"):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.setattr(vendor, "VENDOR_TIMEOUT", 0.3)
    codes = codes_for(fake, redis, http, WXPUSH_SMS_INTERVAL_SECONDS="1")
    wrong_var = (
        "WXPUSH_TENCENT_SECRET_KEY" if vendor_of(fake) == "tencent"
        else "WXPUSH_ALIYUN_ACCESS_KEY_SECRET"
    )  # fmt: skip
    wrong_secret = "AnotherSecretThatIsWrong0000000a"
    wrong = codes_for(fake, redis, http, **{wrong_var: wrong_secret})
    await codes.send(PHONE, ip=IP, scope=SCENE)  # sent
    await redis.flushdb()
    fake.then(REFUSALS[vendor_of(fake)])
    await send_refused(codes)  # refused
    await send_refused(wrong)  # bad signature
    fake.then("hang")
    await send_refused(codes)  # no answer
    fake.then(Answer("LimitExceeded.PhoneNumberDailyLimit"
                     if vendor_of(fake) == "tencent" else "isv.DAY_LIMIT_CONTROL"))  # fmt: skip
    with pytest.raises(RateLimited):
        await codes.send(PHONE, ip=IP, scope=SCENE)  # throttled
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert len(fake.codes_seen) == 5
    for secret in [fake.secret, wrong_secret, *fake.codes_seen, "13800138000"]:
        assert secret not in logged
    assert "+86 138****8000" in logged and SIGNATURE_REFUSAL[vendor_of(fake)] in logged
    assert "HTTP Request: POST" in logged  # httpx's own line was captured, and held no code


# -- the settings --------------------------------------------------------------------------------

ALIYUN_NEEDS = ["WXPUSH_ALIYUN_ACCESS_KEY_ID", "WXPUSH_ALIYUN_ACCESS_KEY_SECRET",
                "WXPUSH_ALIYUN_SIGN_NAME", "WXPUSH_ALIYUN_TEMPLATE_CODE"]  # fmt: skip
TENCENT_NEEDS = ["WXPUSH_TENCENT_SECRET_ID", "WXPUSH_TENCENT_SECRET_KEY",
                 "WXPUSH_TENCENT_SDK_APP_ID", "WXPUSH_TENCENT_SIGN_NAME",
                 "WXPUSH_TENCENT_TEMPLATE_ID"]  # fmt: skip
FULL = {
    "aliyun": vendor_env(fakesms.aliyun(), WXPUSH_ALIYUN_ENDPOINT="https://dysmsapi.aliyuncs.com"),
    "tencent": vendor_env(fakesms.tencent(),
                          WXPUSH_TENCENT_ENDPOINT="https://sms.tencentcloudapi.com"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("which", "missing"),
    [("aliyun", v) for v in ALIYUN_NEEDS] + [("tencent", v) for v in TENCENT_NEEDS],
)
def test_a_missing_vendor_setting_stops_start_up_naming_it(which: str, missing: str) -> None:
    env = {**BASE, **FULL[which]}
    del env[missing]
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env, dotenv=None)
    assert str(caught.value) == f"{missing}: missing; the {which} SMS provider needs it"
    assert caught.value.variable == missing


def test_the_first_missing_setting_is_the_one_named() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "WXPUSH_SMS_PROVIDER": "tencent"}, dotenv=None)
    assert caught.value.variable == "WXPUSH_TENCENT_SECRET_ID"


@pytest.mark.parametrize(
    ("which", "variable", "value"),
    [
        ("aliyun", "WXPUSH_ALIYUN_ENDPOINT", "dysmsapi.aliyuncs.com"),
        ("aliyun", "WXPUSH_ALIYUN_ACCESS_KEY_ID", "LTAI with spaces"),
        ("tencent", "WXPUSH_TENCENT_ENDPOINT", "ftp://sms.tencentcloudapi.com"),
        ("tencent", "WXPUSH_TENCENT_SDK_APP_ID", "app-1400006666"),
        ("tencent", "WXPUSH_TENCENT_TEMPLATE_ID", "SMS_1110"),
        ("tencent", "WXPUSH_TENCENT_REGION", "Guangzhou"),
    ],
)
def test_a_malformed_vendor_setting_is_named(which: str, variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, **FULL[which], variable: value}, dotenv=None)
    assert caught.value.variable == variable and "\n" not in str(caught.value)


def test_vendor_defaults_and_secrets_kept_out_of_reprs() -> None:
    env = {**BASE, **FULL["aliyun"]}
    del env["WXPUSH_ALIYUN_ENDPOINT"]
    aliyun = Settings.from_env(env, dotenv=None)
    assert aliyun.sms_policy().aliyun is not None
    assert aliyun.sms_policy().aliyun.endpoint == "https://dysmsapi.aliyuncs.com"
    env = {**BASE, **FULL["tencent"]}
    del env["WXPUSH_TENCENT_ENDPOINT"]
    tencent = Settings.from_env(env, dotenv=None)
    config = tencent.sms_policy().tencent
    assert config is not None
    assert (config.region, config.endpoint) == ("ap-guangzhou", "https://sms.tencentcloudapi.com")
    for settings, secret in [
        (aliyun, fakesms.aliyun().secret),
        (tencent, fakesms.tencent().secret),
    ]:
        policy = settings.sms_policy()
        shown = (
            repr(policy) + repr(policy.aliyun) + repr(policy.tencent) + repr(settings.redacted())
        )
        assert secret not in shown
    assert tencent.sms_policy().aliyun is None  # only the chosen vendor is built


async def test_make_provider_builds_the_chosen_vendor(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    for which, kind in [("aliyun", AliyunProvider), ("tencent", TencentProvider)]:
        policy = Settings.from_env({**BASE, **FULL[which]}, dotenv=None).sms_policy()
        assert isinstance(make_provider(policy, http=http, redis=redis), kind)


def test_check_names_the_vendor_without_calling_it(tmp_path: Path) -> None:
    env = {**BASE, **FULL["aliyun"], "WXPUSH_WECHAT_API_BASE": "http://127.0.0.1:9"}
    done = wxpush("check", cwd=tmp_path, **env)
    lines = done.stdout.strip().splitlines()
    assert lines[3] == (
        "sms: aliyun (https://dysmsapi.aliyuncs.com, key LTAI5tTestKeyId0000000000, "
        "sign 阿里云短信测试, template SMS_154950909); not called — a check sends no message"
    )
    assert fakesms.aliyun().secret not in done.stdout + done.stderr


# -- through the HTTP API ----------------------------------------------------------------------


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only here: the binding itself is tested on both databases in test_login."""
    return f"sqlite+aiosqlite:///{tmp_path / 'people.db'}"


def test_a_person_binds_a_phone_with_a_code_the_vendor_delivered(
    start: Callable[..., Site], fake: FakeVendor
) -> None:
    site = dataclasses.replace(start(**vendor_env(fake)), inbox=fake)
    created = site.new_scene()
    site.scan(created, NEW_OPENID, follow=True)
    scene = created["scene"]
    url = f"/api/v1/scenes/{scene}/sms"

    fake.then(REFUSALS[vendor_of(fake)])  # refused: a 502 in words, nothing spent
    refused = site.client.post(url, json={"phone": "13800138000"})
    assert refused.status_code == 502, refused.text
    assert refused.json() == {"error": "sms_failed", "message": (
        f"{words_of(fake)} refused the message ({REFUSALS[vendor_of(fake)].code}): "
        f"{REFUSALS[vendor_of(fake)].message}")}  # fmt: skip

    throttle = (Answer("LimitExceeded.PhoneNumberOneHourLimit") if vendor_of(fake) == "tencent"
                else Answer("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5"))  # fmt: skip
    fake.then(throttle)  # throttled: a 429 with the vendor's window, nothing spent
    limited = site.client.post(url, json={"phone": "13800138000"})
    assert limited.status_code == 429, limited.text
    assert limited.headers["Retry-After"] == "3600"
    assert limited.json()["error"] == "sms_rate_limited"

    sent = site.client.post(url, json={"phone": "13800138000"})  # at once: nothing was spent
    assert (sent.status_code, sent.json()) == (202, {"resend_in": 1})
    code = fake.last_code(PHONE)
    bound = site.client.post(f"/api/v1/scenes/{scene}/bind",
                             json={"phone": "13800138000", "code": code})  # fmt: skip
    assert bound.status_code == 200, bound.text
    assert bound.json()["status"] == "REG" and bound.json()["user"]["new"] is True
    assert json.dumps(bound.json()).count(code) == 0
