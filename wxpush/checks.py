"""``wxpush check``: reach every service the settings name, and say how each answered.

One line per service (``redis: ok``, ``database: failed — …``), never a traceback; the
command exits 1 when any failed. An SMS vendor is named with what it will be called with,
not called: every call of ``SendSms`` sends a message and costs money. Also the clients
``wxpush menu`` uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from wxpush.clients.wechat import WeChatAPI
from wxpush.clients.wechat_oauth import OAuthClient
from wxpush.config.accounts import WebsiteApp
from wxpush.config.settings import Settings
from wxpush.errors import WeChatAPIError, WxpushError
from wxpush.infra.redis_client import open_redis, ping
from wxpush.infra.sql import open_engine
from wxpush.people.store import People


async def services(settings: Settings) -> int:
    failures = 0
    async with clients(settings) as (redis, http):
        try:
            await asyncio.wait_for(ping(redis), timeout=3)
            target = settings.redis
            where = "embedded, single process" if target is None else f"{target.mode}, reachable"
            if target is not None and target.sentinels:
                host, port = await redis.connection_pool.get_master_address()
                where += f"; master of {target.service!r} at {host}:{port}"
            if target is not None and target.cluster:
                masters = sorted(node.name for node in redis.get_primaries())
                where += f"; {len(masters)} masters answer: {', '.join(masters)}"
            print(f"redis: ok ({where})")
        except Exception as exc:
            print(f"redis: failed — {type(exc).__name__}: {exc}")
            return 1
        failures += await database(settings.database_url)
        if (line := sms_vendor(settings)) is not None:
            print(line)
        for account in settings.accounts.values():
            api = WeChatAPI(account, http=http, redis=redis, base_url=settings.wechat_api_base)
            try:
                await api.access_token()
                print(f"wechat token ({account.name}): ok")
            except WxpushError as exc:
                failures += 1
                print(f"wechat token ({account.name}): failed — {exc.message}")
        oauth = OAuthClient(http=http, base_url=settings.wechat_api_base)
        for app in settings.websites.values():
            failures += await website(app, oauth)
    return 1 if failures else 0


def sms_vendor(settings: Settings) -> str | None:
    """``sms: aliyun (…)`` for a configured vendor, ``None`` for the console and the webhook."""
    policy = settings.sms_policy()
    if policy.aliyun is not None:
        a = policy.aliyun
        where = (f"{a.endpoint}, key {a.access_key_id}, sign {a.sign_name}, "
                 f"template {a.template_code}")  # fmt: skip
    elif policy.tencent is not None:
        t = policy.tencent
        where = (f"{t.endpoint}, {t.region}, key {t.secret_id}, app {t.sdk_app_id}, "
                 f"sign {t.sign_name}, template {t.template_id}")  # fmt: skip
    else:
        return None
    return f"sms: {policy.provider} ({where}); not called — a check sends no message"


async def website(app: WebsiteApp, oauth: OAuthClient) -> int:
    """A website app has no call without a person's code; a made-up code that WeChat calls
    invalid (40029) proves the appid and secret are right and WeChat is reachable."""
    try:
        await oauth.exchange(app.appid, app.secret, CHECK_CODE)
    except WeChatAPIError as exc:
        if exc.errcode in (40029, 40163):
            print(f"wechat website app ({app.name}): ok")
            return 0
        print(f"wechat website app ({app.name}): failed — {exc.message}")
        return 1
    except WxpushError as exc:
        print(f"wechat website app ({app.name}): failed — {exc.message}")
        return 1
    print(f"wechat website app ({app.name}): failed — WeChat accepted a made-up code")
    return 1


CHECK_CODE = "wxpushcheck0000000000000000000000"


async def database(url: str) -> int:
    """``database: ok (<kind>)`` when a query answers, else the failure in words (1)."""
    engine = open_engine(url)
    people = People(engine)
    kind = engine.dialect.name
    try:
        await people.ping(timeout=3)
        print(f"database: ok ({kind})")
        return 0
    except WxpushError as exc:
        print(f"database: failed — {exc.message}")
        return 1
    finally:
        people.close()
        await engine.dispose()


@asynccontextmanager
async def clients(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    redis = open_redis(settings.redis, connections=settings.redis_connections)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
    try:
        yield redis, http
    finally:
        await http.aclose()
        await redis.aclose()
