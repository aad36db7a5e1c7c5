"""Outbound HTTP to the operator's receivers (the SMS webhook, ``WXPUSH_FORWARD_URL``).

The shared client keeps connections open between calls, and a receiver closes one it has
kept idle for a while (uvicorn, Node and Apache after 5 s, gunicorn after 2 s). A call that
takes such a connection just as the far side closes it fails at once, with nothing
received: ``RemoteProtocolError`` ("Server disconnected without sending a response"), or
``ReadError`` / ``WriteError`` when the close came as a reset. Two defences:

- :data:`LIMITS` retires an idle connection after :data:`KEEPALIVE_EXPIRY` s, before any
  common receiver does, so the race is rare;
- :func:`post` sends the request again when it failed that way on a reused connection. The
  receiver cannot have acted on it (it closed an idle connection, it did not read a
  request). A failure on a new connection, or once an answer has begun, is not retried:
  there the receiver may have acted, and an SMS must not go out twice.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

logger = logging.getLogger(__name__)

KEEPALIVE_EXPIRY = 1.0  # below every common receiver's idle timeout (gunicorn's is 2 s)
MAX_KEEPALIVE = 20  # idle connections kept (httpx's default)
LIMITS = httpx.Limits(max_keepalive_connections=MAX_KEEPALIVE, keepalive_expiry=KEEPALIVE_EXPIRY)
_NOTHING_RECEIVED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Attempt:
    """What one request did, as httpcore's trace tells it."""

    def __init__(self) -> None:
        self.connected = False  # it opened a connection of its own
        self.answered = False  # response headers came back

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("connect_tcp.started"):
            self.connected = True
        elif event.endswith("receive_response_headers.complete"):
            self.answered = True

    @property
    def stale(self) -> bool:
        """It went on a pooled connection and got nothing back."""
        return not self.connected and not self.answered


async def post(http: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """``http.post(url, **kwargs)``, sent again while stale pooled connections lose it.

    Each such failure is immediate and retires its connection, so this ends within as
    many tries as the pool keeps idle connections, the last on a connection of its own.
    """
    for _ in range(MAX_KEEPALIVE):
        attempt = _Attempt()
        try:
            return await http.post(url, **kwargs, extensions={"trace": attempt})
        except _NOTHING_RECEIVED as exc:
            if not attempt.stale:
                raise
            logger.info("the receiver had closed a pooled connection (%s); sending again",
                        type(exc).__name__)  # fmt: skip
    return await http.post(url, **kwargs)
