"""``WS /ws/v1/scenes/{scene}``: the scene's state pushed the moment it changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import aclosing, suppress
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from wxpush.errors import WxpushError
from wxpush.hub import Hub
from wxpush.login import LoginFlow
from wxpush.metrics import Metrics
from wxpush.settings import Settings
from wxpush.watch import watch

logger = logging.getLogger(__name__)

NORMAL, TRY_AGAIN = 1000, 1013
OVERLOADED = 1008  # policy violation: the client stopped reading


def origin_allowed(settings: Settings, origin: str | None, host: str | None) -> bool:
    """Apps and TVs send no Origin; browsers may come from our own origin or a listed one."""
    if origin is None:
        return True
    allowed = settings.allowed_origins
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    own = {urlsplit(settings.public_url).netloc} if settings.public_url else set()
    if host:
        own.add(host)
    return urlsplit(origin).netloc in own


class SocketCount:
    """Open sockets per client IP, in this process."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, ip: str, limit: int) -> bool:
        if self._open[ip] >= limit:
            return False
        self._open[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]


async def scene_socket(websocket: WebSocket) -> None:
    state = websocket.state
    settings: Settings = state.settings
    if not origin_allowed(settings, websocket.headers.get("origin"), websocket.headers.get("host")):
        await _deny(websocket, 403, "origin_not_allowed", "This origin may not open sockets.")
        return
    ip = websocket.client.host if websocket.client else "unknown"
    sockets: SocketCount = state.sockets
    if not sockets.take(ip, settings.sockets_per_ip):
        await _deny(websocket, 429, "too_many_sockets", "Too many open sockets from this address.")
        return
    metrics: Metrics = state.metrics
    metrics.waiters.labels("websocket").inc()
    try:
        await websocket.accept()
        await _serve(websocket, state.login, state.hub, metrics)
    finally:
        metrics.waiters.labels("websocket").dec()
        sockets.release(ip)


async def _serve(websocket: WebSocket, flow: LoginFlow, hub: Hub, metrics: Metrics) -> None:
    """Push states until a final one, the client leaves, or it stops reading."""
    pushing = asyncio.create_task(_push(websocket, flow, hub, metrics))
    listening = asyncio.create_task(_until_disconnect(websocket))
    try:
        await asyncio.wait({pushing, listening}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pushing, listening):
            task.cancel()
        await asyncio.gather(pushing, listening, return_exceptions=True)
    if pushing.done() and not pushing.cancelled() and pushing.exception() is None:
        code, reason = pushing.result()
        with suppress(RuntimeError, WebSocketDisconnect, OSError):
            await websocket.close(code, reason)


async def _push(
    websocket: WebSocket, flow: LoginFlow, hub: Hub, metrics: Metrics
) -> tuple[int, str]:
    """Send every state; returns the close code and reason to end with."""
    try:
        async with aclosing(watch(flow, hub, websocket.path_params["scene"])) as states:
            async for state, published in states:
                await websocket.send_json(state)
                if published is not None:
                    metrics.push_latency.observe(max(0.0, time.time() - published))
    except OverflowError:
        return OVERLOADED, "too slow"
    except WxpushError as exc:
        return TRY_AGAIN, exc.code
    except (RedisError, OSError):
        return TRY_AGAIN, "redis_unavailable"
    return NORMAL, ""


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read what the client sends (nothing is expected) so that a close is noticed at once."""
    with suppress(WebSocketDisconnect, RuntimeError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    response = JSONResponse({"error": code, "message": message}, status_code=status)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008)
