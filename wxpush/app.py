"""The application factory: routes, error handlers, lifespan.

``uvicorn --factory wxpush.app:create_app`` builds one app per worker from the environment;
tests call :func:`create_app` with their own :class:`Settings`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

import wxpush
from wxpush import sandbox
from wxpush.callback.scan import ScanHandler
from wxpush.config.settings import Settings
from wxpush.errors import WxpushError
from wxpush.infra.metrics import Metrics
from wxpush.lifespan import lifespan
from wxpush.web import (
    access,
    health,
    oidc,
    oidc_pages,
    openapi,
    people,
    redirect,
    scenes,
    sockets,
    tokens,
    wechat,
)
from wxpush.web.errors import error_answer, error_response
from wxpush.wechat.errors import ProtocolError

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    scan_handler: ScanHandler | None = None,
    static_dir: Path | None = None,
) -> Starlette:
    """Build the wxpush ASGI app (settings from the environment when not given).

    ``static_dir`` is served at ``/static`` (and its ``index.html`` at ``/``); by default the
    repository's ``static/`` (see :data:`STATIC_DIR`).
    """
    settings = settings or Settings.from_env()
    metrics = Metrics()
    scene = "/api/v1/scenes/{scene}"
    callback = Route(CALLBACK_ROUTE, wechat.Callback(), methods=["GET", "POST"])
    socket = WebSocketRoute(SOCKET_ROUTE, sockets.SceneSocket())
    routes: list[BaseRoute] = [  # the one table of every route, HTTP and WebSocket
        callback,
        socket,
        Route(REDIRECT_ROUTE, redirect.redirect, methods=["GET"]),
        Route("/api/v1/scenes", scenes.create, methods=["POST"]),
        Route(scene, scenes.read, methods=["GET"]),
        Route(scene + "/qr.svg", scenes.qr_svg, methods=["GET"]),
        Route(scene + "/qr.png", scenes.qr_png, methods=["GET"]),
        Route(scene + "/wait", scenes.wait, methods=["GET"]),
        Route(scene + "/sms", scenes.send_sms, methods=["POST"]),
        Route(scene + "/bind", scenes.bind, methods=["POST"]),
        Route("/api/v1/token/refresh", tokens.refresh, methods=["POST"]),
        Route("/api/v1/logout", tokens.logout, methods=["POST"]),
        Route("/api/v1/me", people.me, methods=["GET"]),
        Route("/api/v1/me", people.delete_me, methods=["DELETE"]),
        Route("/api/v1/me/identities", people.link, methods=["POST"]),
        Route("/api/v1/me/identities/{identity}", people.unlink, methods=["DELETE"]),
        Route("/.well-known/jwks.json", tokens.jwks, methods=["GET"]),
        Route("/.well-known/openid-configuration", oidc.configuration, methods=["GET"]),
        Route("/oidc/authorize", oidc_pages.authorize, methods=["GET", "POST"]),
        Route("/oidc/token", oidc.token, methods=["POST"]),
        Route("/oidc/userinfo", oidc.userinfo, methods=["GET", "POST"]),
        Route("/oidc/revoke", oidc.revoke, methods=["POST"]),
        Route("/oidc/introspect", oidc.introspect, methods=["POST"]),
        Route("/oidc/logout", oidc_pages.logout, methods=["GET", "POST"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]
    if settings.sandbox:  # a stand-in WeChat: never mounted unless WXPUSH_SANDBOX=1
        routes.append(sandbox.mount())
    routes += _static_routes(static_dir or STATIC_DIR)
    return App(
        hot=[callback, socket],
        routes=routes,
        middleware=_middleware(settings),
        lifespan=lifespan(settings, metrics, scan_handler),
        exception_handlers={
            kind: _error
            for kind in (
                WxpushError,
                ProtocolError,
                RedisConnectionError,
                RedisTimeoutError,
                HTTPException,
                Exception,
            )
        },
    )


class App(Starlette):
    """Starlette, with its busiest routes served without routing or middleware.

    The ``hot`` routes are routes of the app's one table, matched first and run as the plain
    ASGI apps they are: WeChat's callback POST (the busiest request) and ``WS
    /ws/v1/scenes/{scene}`` (SPEC §3), the one WebSocket route. A waiting socket lives for
    minutes and there may be tens of thousands, so it keeps no routing or middleware frames
    alive (CORS does not apply to WebSockets; origins are checked by the handler). Every
    HTTP request, the callback included, passes through the access log's wrapper
    (:mod:`wxpush.web.access`: one frame, and only while INFO is on); sockets write their own
    line.
    """

    def __init__(self, *, hot: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert all(route in self.router.routes for route in hot), "hot routes are in the table"
        self._hot_http = [r for r in hot if isinstance(r, Route)]
        self._hot_sockets = [r for r in hot if isinstance(r, WebSocketRoute)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and access.enabled():
            await access.logged(self._dispatch, scope, receive, send)
        else:
            await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope["app"] = self
            if not await _serve_hot(self._hot_sockets, scope, receive, send):
                await sockets.no_such_socket(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            scope["app"] = self
            if await _serve_hot(self._hot_http, scope, receive, send):
                return
        await super().__call__(scope, receive, send)


async def _serve_hot(
    routes: Sequence[Route | WebSocketRoute], scope: Scope, receive: Receive, send: Send
) -> bool:
    """Run the first of ``routes`` that matches fully (path and method) as its ASGI app."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope["path_params"] = child["path_params"]
            scope[access.ROUTE] = route.path
            await route.app(scope, receive, send)
            return True
    return False


SOCKET_ROUTE = "/ws/v1/scenes/{scene}"
CALLBACK_ROUTE = "/wechat/{account}/callback"
REDIRECT_ROUTE = "/wechat/{name}/oauth/redirect"


def _static_dir() -> Path:
    """The widget and the demo page: ``wxpush/static`` inside an installed package (the wheel
    carries the top-level ``static/`` there), else ``static/`` beside the package (a source
    checkout or an editable install)."""
    package = Path(wxpush.__file__).resolve().parent
    installed = package / "static"
    return installed if installed.is_dir() else package.parent / "static"


STATIC_DIR = _static_dir()


def _static_routes(directory: Path) -> list[BaseRoute]:
    """``/static`` (the widget) and ``/`` (``static/index.html``, the demo login page)."""
    if not directory.is_dir():
        return []
    routes: list[BaseRoute] = [Mount("/static", StaticFiles(directory=directory), name="static")]
    index = directory / "index.html"
    if index.is_file():
        routes.append(Route("/", IndexPage(index), include_in_schema=False))
    return routes


class IndexPage:
    """``static/index.html`` at ``/``: a page, not part of the API. As a plain ASGI app its
    route has no ``methods`` list and stays out of the OpenAPI description."""

    def __init__(self, file: Path) -> None:
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if scope["method"] in ("GET", "HEAD"):
            response = FileResponse(self.file, headers={"Cache-Control": "no-cache"})
        else:
            message = "Method Not Allowed"
            response = error_response(405, "method_not_allowed", message, {"Allow": "GET, HEAD"})
        await response(scope, receive, send)


def _middleware(settings: Settings) -> list[Middleware]:
    """CORS for the origins in WXPUSH_ALLOWED_ORIGINS (none: same-origin only)."""
    if not settings.allowed_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    ]


async def _openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi.document())


async def _error(request: Request, exc: Exception) -> Response:
    """Every handler's errors, answered in JSON (:func:`.common.error_answer`)."""
    return error_answer(exc)[1]
