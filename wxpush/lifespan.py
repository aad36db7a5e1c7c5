"""Resources of a running server, opened and closed in one place.

:func:`lifespan` is an async context manager yielding a :class:`State`; Starlette hands that
state to every request as ``request.state``. Nothing lives in module globals.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypedDict

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette

from wxpush.callback import CallbackService, ScanHandler, ignore_scan
from wxpush.settings import Settings
from wxpush.store import open_redis
from wxpush.wechat.api import WeChatAPI

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class State(TypedDict):
    settings: Settings
    redis: Redis
    http: httpx.AsyncClient
    wechat: dict[str, WeChatAPI]
    callbacks: CallbackService


def lifespan(
    settings: Settings, scan_handler: ScanHandler = ignore_scan
) -> Callable[[Starlette], AbstractAsyncContextManager[State]]:
    """Build the lifespan of an app serving ``settings``."""

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[State]:
        redis = open_redis(settings.redis_url)
        http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)
        try:
            wechat = {
                name: WeChatAPI(account, http=http, redis=redis, base_url=settings.wechat_api_base)
                for name, account in settings.accounts.items()
            }
            callbacks = CallbackService(settings, redis=redis, http=http, scan_handler=scan_handler)
            logger.info("wxpush ready: accounts %s", ", ".join(settings.accounts))
            yield State(
                settings=settings, redis=redis, http=http, wechat=wechat, callbacks=callbacks
            )
        finally:
            await http.aclose()
            await redis.aclose()

    return run
