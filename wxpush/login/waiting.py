"""Watching one scene: the states a waiting browser must see, in order, none missed.

Shared by the WebSocket and the long-poll, which subscribe first (:meth:`Hub.waiter`, confirmed
by Redis). The sequence is: subscribed, read the
state and yield it; then on every message re-read and yield the state when it changed;
stop after a final one. Expiry is pushed by a timer per waiter (``loop.call_at``, no Redis
polling): when the QR code's time is up the waiter re-reads and sees ``EXPIRED``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from redis.exceptions import RedisError

from wxpush.errors import Unavailable
from wxpush.login import messages
from wxpush.login.flow import LoginFlow
from wxpush.login.states import FINAL
from wxpush.realtime.hub import RESYNC, Waiter

EXPIRY = "EXPIRY"  # the waiter's own timer: "the QR code's time is up, re-read"
EXPIRY_SLACK = 0.05  # Redis expires keys on its own clock; re-read a moment after
RETRY_READ = 0.5  # a re-read that failed because Redis is away is tried again this much later


async def watch(
    flow: LoginFlow, scene_id: str, waiter: Waiter
) -> AsyncGenerator[tuple[dict[str, Any], float | None], None]:
    """Yield ``(state, published_at)`` now, then for each changed state, until a final one
    (or until ``waiter`` is stopped). ``waiter`` is subscribed to the scene's channel
    (:meth:`Hub.waiter` of :func:`.messages.channel`).

    ``published_at`` is when the change was published (for the push-latency metric), or
    ``None`` for the first read and for changes noticed otherwise (expiry, a resync).

    Raises:
        OverflowError: the consumer fell too far behind (its queue overflowed).
    """
    state, expires_at = await flow.first_state(scene_id)
    yield state, None
    if state["status"] in FINAL:
        return
    timer = _call_later(max(0.0, expires_at - time.time()) + EXPIRY_SLACK, waiter)
    try:
        last = state
        while (message := await waiter.next()) is not None:
            try:
                state = await flow.state(scene_id, heard=messages.heard(message))
            except (RedisError, OSError, Unavailable):
                # Redis is restarting (refused, or still loading its data): keep the
                # browser waiting and look again shortly.
                _call_later(RETRY_READ, waiter, RESYNC)
                continue
            if message == EXPIRY and state["status"] == "LOOP":
                timer.cancel()  # our clock ran ahead of Redis's: look again shortly
                timer = _call_later(0.25, waiter)
                continue
            if _changed(last, state):
                yield state, messages.published_at(message)
                last = state
            if state["status"] in FINAL:
                return
    finally:
        timer.cancel()


def _call_later(delay: float, waiter: Waiter, message: str = EXPIRY) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, waiter.offer, message)


def _changed(last: dict[str, Any], state: dict[str, Any]) -> bool:
    return state["status"] != last["status"] or state.get("claimed") != last.get("claimed")
