"""The access log: one line per request or socket, naming its route, never its secrets.

A scene's id is a bearer secret (whoever knows it may wait for its login), and a callback's
query string is WeChat's signature over that request (whoever has it may replay the
request). uvicorn's access log writes both; ``wxpush serve`` turns it off, and this one
writes the route template instead: ``GET /api/v1/scenes/{scene}/wait``,
``POST /wechat/{account}/callback``. Never a path as sent, never a query string.

The line is ``client method route status duration``, at INFO on the ``wxpush.web.access``
logger. An HTTP request's line is written by :func:`logged`, a wrapper around the app. A
WebSocket's is written by its handler (:mod:`.sockets`) with :func:`write`: a waiting
socket lives for minutes, tens of thousands at a time, and the wrapper's frame and closure
would cost each one about 0.5 KiB. Its method is ``WS``, its status 101 once accepted (the
line is written when it ends; the duration is its lifetime) or the status it was refused with.
"""

from __future__ import annotations

import logging
import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wxpush.web.requests import client_host

logger = logging.getLogger("wxpush.access")  # the name operators filter on (README)

ROUTE = "wxpush.route"  # the scope key naming the route of a request that skips the router
NO_ROUTE = "-"  # nothing matched: the path is not written, it may hold a mistyped secret


def enabled() -> bool:
    return logger.isEnabledFor(logging.INFO)


async def logged(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` on an HTTP request, then write its access line (status ``-``: the client
    left before an answer)."""
    started = time.perf_counter()
    status = 0

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, sending)
    finally:
        write(scope, status, started)


def write(scope: Scope, status: int, started: float) -> None:
    """The access line of ``scope``, served since ``started`` (``time.perf_counter()``)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "%s %s %s %s %.1fms",
            client_host(scope),
            scope.get("method", "WS"),
            route_of(scope),
            status or "-",
            (time.perf_counter() - started) * 1000,
        )


def route_of(scope: Scope) -> str:
    """The template of the route that served ``scope`` (after it was served)."""
    named: str | None = scope.get(ROUTE)
    if named is not None:
        return named
    route = scope.get("route")
    path: str | None = getattr(route, "path", None)
    if path is None:
        return NO_ROUTE
    if isinstance(route, Mount):  # static files: whatever follows is a file name
        return path + "/{path}"
    # a route inside a mount (the sandbox): the mount's prefix is in root_path
    root, top = scope.get("root_path", ""), scope.get("app_root_path")
    return (root[len(top) :] if top is not None and root.startswith(top) else "") + path
