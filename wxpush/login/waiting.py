"""Watching one scene: the states a waiting browser must see, in order, none missed.

Shared by the WebSocket and the long-poll, which subscribe first (:meth:`Hub.waiter`, confirmed
by Redis). The sequence is: subscribed, read the
state and yield it; then on every message re-read and yield the state when it changed;
stop after a final one. Expiry is pushed by a timer per waiter (``loop.call_at``, no Redis
polling): when the QR code's time is up the waiter re-reads and sees ``EXPIRED``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
import weakref
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


def _call_later(delay: float, waiter: Waiter, message: str = EXPIRY) -> _Alarm:
    loop = asyncio.get_running_loop()
    alarms = _ALARMS.get(loop)
    if alarms is None:
        alarms = _ALARMS[loop] = _Alarms(loop)
    return alarms.later(delay, waiter, message)


class _Alarm:
    __slots__ = ("alarms", "message", "waiter", "when")

    def __init__(self, alarms: _Alarms, when: float, waiter: Waiter, message: str) -> None:
        self.alarms, self.when, self.waiter, self.message = alarms, when, waiter, message

    def __lt__(self, other: _Alarm) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        if self.waiter is not None:
            self.waiter = None  # type: ignore[assignment]  # left in the heap until due...
            self.alarms.cancelled()


class _Alarms:
    """Every waiter's timer of one event loop, on one loop timer (a heap): a timer handle of
    its own costs a waiting socket 0.6 KiB, an alarm here a tenth of that."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[_Alarm] = []
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf
        self._dead = 0

    def cancelled(self) -> None:
        """...or until they are half the heap (sockets that left early): then it is rebuilt."""
        self._dead += 1
        if self._dead * 2 > len(self._heap):
            self._heap = [alarm for alarm in self._heap if alarm.waiter is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def later(self, delay: float, waiter: Waiter, message: str) -> _Alarm:
        alarm = _Alarm(self, self._loop.time() + delay, waiter, message)
        heapq.heappush(self._heap, alarm)
        if alarm.when < self._at:
            self._schedule(alarm.when)
        return alarm

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at, self._timer = when, self._loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self._timer, self._at = None, math.inf
        heap, now = self._heap, self._loop.time()
        while heap and heap[0].when <= now:
            alarm = heapq.heappop(heap)
            if alarm.waiter is not None:
                alarm.waiter.offer(alarm.message)
                alarm.waiter = None  # type: ignore[assignment]  # rung: a cancel is nothing
            else:
                self._dead -= 1
        if heap:
            self._schedule(heap[0].when)


_ALARMS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Alarms] = weakref.WeakKeyDictionary()


def _changed(last: dict[str, Any], state: dict[str, Any]) -> bool:
    return state["status"] != last["status"] or state.get("claimed") != last.get("claimed")
