"""Resources of a running server, opened and closed in one place.

:func:`lifespan` is an async context manager yielding a :class:`State`; Starlette hands that
state to every request as ``request.state``. Nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from typing import Any, TypedDict

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from wxpush.callback.scan import ScanHandler, ignore_scan
from wxpush.callback.service import CallbackService
from wxpush.clients import outbound
from wxpush.clients.wechat import WeChatAPI
from wxpush.clients.wechat_oauth import OAuthClient
from wxpush.config.settings import Settings
from wxpush.infra.lanes import ClusterLanes
from wxpush.infra.metrics import Metrics
from wxpush.infra.pipeline import PipelinedConnection
from wxpush.infra.ratelimit import RateLimiter
from wxpush.infra.redis_client import open_connections
from wxpush.infra.sql import open_engine
from wxpush.login.arrival import Arrival
from wxpush.login.doors import Doors
from wxpush.login.flow import LoginFlow
from wxpush.login.linking import Linking
from wxpush.login.redirect_state import RedirectStates
from wxpush.login.scenes import SceneStore
from wxpush.oidc.provider import Provider
from wxpush.people.store import People
from wxpush.realtime.hub import Hub
from wxpush.sms.codes import SmsCodes
from wxpush.sms.providers import make_provider
from wxpush.tokens.service import TokenService
from wxpush.web.sockets import SocketCount

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class State(TypedDict):
    settings: Settings
    redis: Any
    engine: AsyncEngine
    http: httpx.AsyncClient
    wechat: dict[str, WeChatAPI]
    people: People
    tokens: TokenService
    login: LoginFlow
    doors: Doors
    oidc: Provider
    callbacks: CallbackService
    metrics: Metrics
    hub: Hub
    sockets: SocketCount


def quiet_secret_loggers() -> None:
    """httpx logs each request URL at INFO, and WeChat's URLs carry the access_token (and,
    for ``/cgi-bin/token``, the appsecret): keep those records out of every log."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def _stop(listener: asyncio.Task[None], hub: Hub) -> None:
    listener.cancel()
    with suppress(asyncio.CancelledError):
        await listener
    await hub.close()


def settle_gc() -> None:
    """Move everything built at start-up out of the collector's sight.

    A server holds a large, long-lived heap (modules, the app, its clients); without this,
    every full collection walks it again. The thresholds stay Python's own: larger young
    generations make each collection rarer but longer, and with thousands of open sockets a
    single generation-1 pass grew to a second-long stall of the event loop.
    """
    gc.collect()
    gc.freeze()


def lifespan(
    settings: Settings, metrics: Metrics, scan_handler: ScanHandler | None = None
) -> Callable[[Starlette], AbstractAsyncContextManager[State]]:
    """Build the lifespan of an app serving ``settings``.

    ``scan_handler`` replaces the login flow's own (tests of the callback layer use it).
    """

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[State]:
        quiet_secret_loggers()
        async with AsyncExitStack() as stack:
            redis, hot = open_connections(settings.redis, connections=settings.redis_connections)
            stack.push_async_callback(redis.aclose)
            if isinstance(hot, PipelinedConnection | ClusterLanes):
                stack.push_async_callback(hot.aclose)
            engine = open_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=outbound.LIMITS)
            )
            wechat_http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=HTTP_TIMEOUT, event_hooks=metrics.http_hooks())  # type: ignore[arg-type]
            )
            people = People(engine)
            stack.push_async_callback(people.aclose)  # before the engine is disposed
            await people.create_schema()
            wechat = {
                name: WeChatAPI(
                    account, http=wechat_http, redis=redis, base_url=settings.wechat_api_base
                )
                for name, account in settings.accounts.items()
            }
            tokens = TokenService(settings.token_policy(), redis, hot, clients=settings.clients)
            oidc = Provider(settings.clients, tokens, people, redis, hot)
            sms_policy = settings.sms_policy()
            sms = SmsCodes(sms_policy, redis, make_provider(sms_policy, http=http, redis=redis))
            hub = Hub(redis, on_reconnect=metrics.hub_reconnects.inc)
            sharded = settings.redis is not None and settings.redis.cluster  # SPUBLISH
            scenes = SceneStore(redis, hot, sharded=sharded, moved=hub.moved)
            login_policy = settings.login_policy()
            arrival = Arrival(login_policy, scenes, people, metrics)
            login = LoginFlow(
                policy=login_policy, accounts=settings.accounts, scenes=scenes, people=people,
                tokens=tokens, sms=sms, wechat=wechat, limiter=RateLimiter(redis),
                metrics=metrics, arrival=arrival, handover=oidc,
                linking=Linking(scenes, people, metrics),
            )  # fmt: skip
            doors = Doors(
                login, arrival, settings.websites, RedirectStates(redis),
                OAuthClient(http=wechat_http, base_url=settings.wechat_api_base),
                settings.wechat_connect_base,
            )  # fmt: skip
            stack.push_async_callback(login.settle)  # before Redis closes
            callbacks = CallbackService(
                settings.accounts, settings.callback_policy(), redis=redis, hot=hot, http=http,
                scan_handler=scan_handler or ignore_scan,
                once_handler=None if scan_handler else login.on_scan,
            )  # fmt: skip
            listener = asyncio.create_task(hub.run(), name="wxpush-hub")
            stack.push_async_callback(_stop, listener, hub)
            logger.info("wxpush ready: accounts %s", ", ".join(settings.accounts))
            issuer, public = settings.jwt_issuer, settings.public_url
            if settings.clients and (
                not issuer.startswith(("https://", "http://")) or public not in (None, issuer)
            ):
                logger.warning(
                    "OIDC clients are configured but WXPUSH_JWT_ISSUER (%s) is not "
                    "WXPUSH_PUBLIC_URL: strict OIDC clients refuse an issuer that is not the "
                    "URL they discovered it at", settings.jwt_issuer,
                )  # fmt: skip
            settle_gc()
            yield State(
                settings=settings, redis=redis, engine=engine, http=http, wechat=wechat,
                people=people, tokens=tokens, login=login, doors=doors, oidc=oidc,
                callbacks=callbacks, metrics=metrics,
                hub=hub, sockets=SocketCount(),
            )  # fmt: skip

    return run
