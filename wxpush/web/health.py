"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from wxpush.errors import Unavailable
from wxpush.people.store import People

READY_TIMEOUT = 1.0


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: Redis and the database answer within a second each."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await request.state.redis.ping()
    except Exception as exc:
        raise Unavailable("Redis is not reachable.", code="redis_unavailable") from exc
    people: People = request.state.people
    await people.ping(timeout=READY_TIMEOUT)
    return JSONResponse({"status": "ok", "redis": "ok", "database": "ok"})
