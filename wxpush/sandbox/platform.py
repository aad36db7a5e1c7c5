"""WeChat's API over HTTP: the routes of :data:`~wxpush.sandbox.wechatapi.ENDPOINTS`.

:func:`routes` turns a request into a :class:`~wxpush.sandbox.shapes.Call` and an
:class:`~wxpush.sandbox.shapes.Answer` into a response; whoever calls it says which
:class:`~wxpush.sandbox.wechatapi.Platform` answers. The sandbox's (:func:`sandbox_routes`)
knows the accounts the server is configured with, keeps its state in the server's Redis under
``wxpush:sandbox:*`` and issues QR codes that encode its phone page; the test fake wraps the
same routes with its counters and scripted failures.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from wxpush.errors import WxpushError
from wxpush.sandbox.persons import unionid_of
from wxpush.sandbox.shapes import Answer, App, Call
from wxpush.sandbox.state import RedisStore
from wxpush.sandbox.wechatapi import ENDPOINTS, Platform
from wxpush.web.errors import response_of

KEY_PREFIX = "wxpush:sandbox:"
Handler = Callable[[Request, Call], Awaitable[Answer]]


def routes(handler: Handler) -> list[BaseRoute]:
    """One route per WeChat endpoint, each answered by ``handler``."""
    return [route(path, e.method, handler) for path, e in ENDPOINTS.items()]


def route(path: str, method: str, handler: Handler) -> Route:
    """A route that hands ``handler`` the request and its :class:`Call` (JSON parsed)."""

    async def endpoint(request: Request) -> Response:
        query, body = dict(request.query_params), parse_json(await request.body())
        try:
            answer = await handler(request, Call(request.method, path, query, body))
        except WxpushError as exc:
            return response_of(exc)
        return respond(answer)

    return Route(path, endpoint, methods=[method])


def parse_json(raw: bytes) -> Any:
    """The JSON of a body; ``None`` when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None


def respond(answer: Answer) -> Response:
    headers = dict(answer.headers)
    if isinstance(answer.body, bytes):
        return Response(answer.body, answer.status, headers, media_type=answer.media_type)
    return JSONResponse(dict(answer.body), answer.status, headers)


# --- the sandbox's platform -------------------------------------------------------------------


def sandbox_routes() -> list[BaseRoute]:
    """The ``/sandbox/cgi-bin/*`` and ``/sandbox/sns/*`` routes: the sandbox's platform
    answers each request."""

    async def handler(request: Request, call: Call) -> Answer:
        return await sandbox_platform(request).answer(call)

    return routes(handler)


def sandbox_platform(request: Request) -> Platform:
    """The sandbox's :class:`Platform` for this request: the server's service accounts and
    website apps, its Redis, and every person's one unionid (:mod:`wxpush.sandbox.persons`:
    a person id is their openid at a service account)."""
    settings = request.state.settings
    apps = {a.appid: App(a.appid, a.secret) for a in settings.accounts.values()}
    apps.update({w.appid: App(w.appid, w.secret, "website") for w in settings.websites.values()})
    store = RedisStore(request.state.redis, KEY_PREFIX)
    return Platform(
        apps, store, qr_url=lambda ticket: phone_url(request, ticket), unionids=unionid_of
    )


def public_base(request: Request) -> str:
    """``WXPUSH_PUBLIC_URL``, or the scheme and host this request came to."""
    configured: str | None = request.state.settings.public_url
    return configured or f"{request.url.scheme}://{request.url.netloc}"


def phone_url(request: Request, ticket: str) -> str:
    return f"{public_base(request)}/sandbox/phone?ticket={quote(ticket, safe='')}"
