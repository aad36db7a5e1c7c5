"""The application factory: routes, error handlers, lifespan.

``uvicorn --factory wxpush.app:create_app`` builds one app per worker from the environment;
tests call :func:`create_app` with their own :class:`Settings`.
"""

from __future__ import annotations

import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from wxpush import openapi
from wxpush.callback import ScanHandler
from wxpush.endpoints import health, scenes, tokens, wechat, ws
from wxpush.errors import WxpushError, error_response, from_protocol_error
from wxpush.lifespan import lifespan
from wxpush.metrics import Metrics
from wxpush.settings import Settings
from wxpush.wechat.errors import ProtocolError

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, scan_handler: ScanHandler | None = None
) -> Starlette:
    """Build the wxpush ASGI app (settings from the environment when not given)."""
    settings = settings or Settings.from_env()
    metrics = Metrics()
    scene = "/api/v1/scenes/{scene}"
    routes = [  # WeChat's callbacks are the busiest route: matched first
        Route("/wechat/{account}/callback", wechat.receive, methods=["POST"]),
        Route("/wechat/{account}/callback", wechat.verify, methods=["GET"]),
        Route("/api/v1/scenes", scenes.create, methods=["POST"]),
        Route(scene, scenes.read, methods=["GET"]),
        Route(scene + "/qr.svg", scenes.qr_svg, methods=["GET"]),
        Route(scene + "/qr.png", scenes.qr_png, methods=["GET"]),
        Route(scene + "/wait", scenes.wait, methods=["GET"]),
        WebSocketRoute("/ws/v1/scenes/{scene}", ws.scene_socket),
        Route(scene + "/sms", scenes.send_sms, methods=["POST"]),
        Route(scene + "/bind", scenes.bind, methods=["POST"]),
        Route("/api/v1/token/refresh", tokens.refresh, methods=["POST"]),
        Route("/api/v1/logout", tokens.logout, methods=["POST"]),
        Route("/api/v1/me", tokens.me, methods=["GET"]),
        Route("/.well-known/jwks.json", tokens.jwks, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=_middleware(settings),
        lifespan=lifespan(settings, metrics, scan_handler),
        exception_handlers={
            WxpushError: _wxpush_error,
            ProtocolError: _protocol_error,
            RedisConnectionError: _redis_down,
            RedisTimeoutError: _redis_down,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )


def _middleware(settings: Settings) -> list[Middleware]:
    """CORS for the origins in WXPUSH_ALLOWED_ORIGINS (none: same-origin only)."""
    if not settings.allowed_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    ]


async def _openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi.document())


async def _wxpush_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WxpushError)
    return exc.response()


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return from_protocol_error(exc).response()


async def _redis_down(request: Request, exc: Exception) -> Response:
    logger.warning("Redis is unavailable: %s", type(exc).__name__)
    return error_response(503, "redis_unavailable", "Redis is not reachable; try again shortly.")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "Something went wrong on the server.")
