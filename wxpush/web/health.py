"""Liveness, readiness and the metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wxpush.errors import Unavailable
from wxpush.infra.redis_client import ping
from wxpush.people.store import People

READY_TIMEOUT = 1.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: Redis and the database answer within a second each."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await ping(request.state.redis)
    except Exception as exc:
        raise Unavailable("Redis is not reachable.", code="redis_unavailable") from exc
    people: People = request.state.people
    await people.ping(timeout=READY_TIMEOUT)
    target = request.state.settings.redis
    mode = "embedded" if target is None else target.mode
    return JSONResponse({"status": "ok", "redis": "ok", "redis_mode": mode, "database": "ok"})


async def metrics(request: Request) -> Response:
    """The app's Prometheus registry, in the text format."""
    registry = request.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
