"""``WS /ws/v1/scenes/{scene}``: the scene's state pushed the moment it changes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from contextlib import aclosing, suppress
from typing import Any

from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from wxpush.config.settings import Settings
from wxpush.errors import WxpushError
from wxpush.infra.metrics import Metrics
from wxpush.login import messages
from wxpush.login.flow import LoginFlow
from wxpush.login.states import hands_over
from wxpush.login.waiting import watch
from wxpush.realtime.hub import Hub, Waiter
from wxpush.web import access, origins
from wxpush.web.errors import error_response
from wxpush.web.requests import client_host

logger = logging.getLogger(__name__)

NORMAL, TRY_AGAIN = 1000, 1013
OVERLOADED = 1008  # policy violation: the client stopped reading


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


_DONE: dict[str, Any] = {}  # a socket's scope state, once it is served


async def scene_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """The socket of one waiting browser (``WS /ws/v1/scenes/{scene}``), as a plain ASGI app.

    A waiting socket lives for minutes and there may be tens of thousands: it holds no
    Starlette request object, middleware or routing frames, and one task besides its own
    (reading the client, so that a departure is noticed at once). For the same reason it
    writes its own access line (when it ends, or when refused) instead of living inside the
    access log's wrapper.
    """
    started = time.perf_counter()
    scene_id: str = scope["path_params"]["scene"]
    state = scope["state"]
    settings: Settings = state["settings"]
    if (await receive())["type"] != "websocket.connect":
        return  # the client left during the handshake
    if not origins.allowed(settings, _origin(scope), scope):
        message = "This origin may not open sockets."
        await _deny(scope, send, started, 403, "origin_not_allowed", message)
        return
    ip = client_host(scope)
    sockets: SocketCount = state["sockets"]
    if not sockets.take(ip, settings.sockets_per_ip):
        message = "Too many open sockets from this address."
        await _deny(scope, send, started, 429, "too_many_sockets", message)
        return
    metrics: Metrics = state["metrics"]
    metrics.waiters.labels("websocket").inc()
    flow, hub = state["login"], state["hub"]
    del state  # the scope's copy of the app's state: let it go with the headers (below)
    try:
        await send({"type": "websocket.accept"})
        # An idle socket keeps its scope for its whole life: what only the handshake needed
        # goes (1.3 KiB a socket)
        scope["headers"], scope["state"] = (), _DONE
        await _serve(receive, send, scene_id, flow, hub, metrics)
    finally:
        metrics.waiters.labels("websocket").dec()
        sockets.release(ip)
        access.write(scope, 101, started)


async def _serve(
    receive: Receive, send: Send, scene_id: str, flow: LoginFlow, hub: Hub, metrics: Metrics
) -> None:
    """Push states until a final one, the client leaves, or it stops reading."""
    try:
        async with hub.waiter(messages.channel(scene_id)) as waiter:
            listening = asyncio.create_task(_until_disconnect(receive, waiter))
            try:
                code, reason = await _push(send, scene_id, waiter, flow, metrics)
            finally:
                listening.cancel()
            if waiter.stopped:
                return  # the client left
    except WxpushError as exc:  # Redis did not confirm the subscription
        code, reason = TRY_AGAIN, exc.code
    with suppress(OSError, RuntimeError):
        await send({"type": "websocket.close", "code": code, "reason": reason})


async def _push(
    send: Send, scene_id: str, waiter: Waiter, flow: LoginFlow, metrics: Metrics
) -> tuple[int, str]:
    """Send every state; returns the close code and reason to end with."""
    try:
        async with aclosing(watch(flow, scene_id, waiter)) as states:
            async for state, published in states:
                if not await _deliver(send, scene_id, waiter, flow, state):
                    return NORMAL, ""  # the client left: there is no one to close for
                if published is not None:
                    metrics.push_latency.observe(max(0.0, time.time() - published))
    except OverflowError:
        return OVERLOADED, "too slow"
    except WxpushError as exc:
        return TRY_AGAIN, exc.code
    except (RedisError, OSError):
        return TRY_AGAIN, "redis_unavailable"
    return NORMAL, ""


async def _deliver(
    send: Send, scene_id: str, waiter: Waiter, flow: LoginFlow, state: dict[str, Any]
) -> bool:
    """Send one state; ``False`` when the client has left. A login (a state with tokens)
    that cannot be sent — the client left while it was being claimed — is given back, so the
    scene's next reader gets it instead of no one."""
    if not hands_over(state):
        await send({"type": "websocket.send", "text": _compact(state)})
        return True
    if waiter.stopped:
        flow.give_back(scene_id, state)
        return False
    try:
        await send({"type": "websocket.send", "text": _compact(state)})
    except (OSError, RuntimeError):  # closed under us (ClientDisconnected is an OSError)
        flow.give_back(scene_id, state)
        raise
    return True


async def _until_disconnect(receive: Receive, waiter: Waiter) -> None:
    """Read what the client sends (nothing is expected); when it leaves, stop its waiter."""
    with suppress(OSError, RuntimeError):
        while (await receive())["type"] != "websocket.disconnect":
            pass
    waiter.stop()


def _compact(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False)


def _origin(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


async def no_such_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket handshake on any other path: 404, in the same JSON as every error."""
    started = time.perf_counter()
    if (await receive())["type"] == "websocket.connect":
        message = "There is no WebSocket at this path."
        await _deny(scope, send, started, 404, "not_found", message)


async def _deny(
    scope: Scope, send: Send, started: float, status: int, code: str, message: str
) -> None:
    """Refuse the handshake with the JSON error answer (or close 1008 where the server cannot)."""
    access.write(scope, status, started)
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": OVERLOADED})
        return
    answer = error_response(status, code, message)
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": answer.raw_headers})  # fmt: skip
    await send({"type": "websocket.http.response.body", "body": answer.body})


class SceneSocket:
    """:func:`scene_socket` as routing takes a plain ASGI app (a function would be wrapped in
    a Starlette session, a frame and an object more for every waiting socket)."""

    __call__ = staticmethod(scene_socket)
