"""One Redis pub/sub connection per process, fanned out to every local waiter.

A *waiter* is one local listener on one channel: for the login, one browser (a WebSocket or
a long-poll) on one scene. The hub knows channels by the names it is given (the login core
names them, :mod:`wxpush.login.messages`), never what they carry. However many waiters there
are, the process holds a single pub/sub connection: the first waiter of a channel
subscribes it, the last one unsubscribes (reference counting).

Ordering: :meth:`Hub.waiter` returns only once Redis has *confirmed* the subscription, so a
waiter that then reads the scene's state cannot miss a change published after that read.

Backpressure: messages are fanned out with ``put_nowait`` into a small bounded queue per
waiter. The listener never awaits a waiter; a waiter whose queue overflows is marked
``overflowed`` and its transport closes it (a browser that stopped reading loses its socket,
the others lose nothing).

Faults: if the connection drops, the listener logs it, reconnects with capped exponential
backoff, re-subscribes every live channel, and tells each channel's waiters ``RESYNC`` once
Redis has confirmed that channel again, so each re-reads its scene and sends whatever changed
meanwhile. Waiters stay open throughout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wxpush.errors import Unavailable

logger = logging.getLogger(__name__)

RESYNC = "RESYNC"  # not a status: "re-read the scene, something may have changed"
QUEUE_SIZE = 16
SUBSCRIBE_TIMEOUT = 1.0  # a waiter that cannot subscribe by then gets a 503
BACKOFF_FIRST, BACKOFF_CAP = 0.05, 5.0


class Waiter:
    """One local listener on one channel: :meth:`next` gives its messages (and ``RESYNC``).

    Tens of thousands may wait at once, so it is small: a short list and, while its reader
    waits, one future (an ``asyncio.Queue`` with its events costs ten times that).
    """

    __slots__ = ("_messages", "_size", "_wakeup", "channel", "overflowed", "stopped")

    def __init__(self, channel: str, size: int) -> None:
        self.channel = channel
        self._size = size
        self._messages: list[str] = []
        self._wakeup: asyncio.Future[None] | None = None
        self.overflowed = False
        self.stopped = False

    def offer(self, message: str) -> None:
        """Hand a message over without waiting; overflow marks the waiter for closing."""
        if len(self._messages) >= self._size:
            self.overflowed = True
        else:
            self._messages.append(message)
        self._wake()

    def stop(self) -> None:
        """Its reader is gone (the client left) or done waiting (a long-poll's deadline):
        :meth:`next` answers ``None`` from now on."""
        self.stopped = True
        self._wake()

    async def next(self) -> str | None:
        """The next message, or ``None`` once stopped.

        Raises:
            OverflowError: this waiter fell too far behind.
        """
        while True:
            if self.overflowed:
                raise OverflowError("waiter overflowed")
            if self.stopped:
                return None
            if self._messages:
                return self._messages.pop(0)
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)


class _Channel:
    __slots__ = ("confirmed", "waiters")

    def __init__(self) -> None:
        self.waiters: set[Waiter] = set()
        self.confirmed = asyncio.Event()


class Hub:
    """The process's pub/sub fan-out. Start with :meth:`run` as a background task."""

    def __init__(self, redis: Any, *, on_reconnect: Callable[[], None] | None = None) -> None:
        self._redis = redis
        self._channels: dict[str, _Channel] = {}
        self._pubsub: Any = None
        self._connected = asyncio.Event()
        self._on_reconnect = on_reconnect or (lambda: None)
        self._resync: set[str] = set()  # channels to tell RESYNC once re-subscribed

    @property
    def waiter_count(self) -> int:
        return sum(len(c.waiters) for c in self._channels.values())

    @asynccontextmanager
    async def waiter(self, name: str, size: int = QUEUE_SIZE) -> AsyncIterator[Waiter]:
        """Subscribe (confirmed by Redis) for the duration of the block.

        Raises:
            Unavailable: the subscription was not confirmed within a second (Redis down).
        """
        entry = self._channels.get(name)
        if entry is None:
            entry = self._channels[name] = _Channel()
            if self._connected.is_set():
                await self._subscribe(name)
        waiter = Waiter(name, size)
        entry.waiters.add(waiter)
        try:
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    await entry.confirmed.wait()
            except TimeoutError as exc:
                raise Unavailable(
                    "Redis is not reachable; try again shortly.", code="redis_unavailable"
                ) from exc
            yield waiter
        finally:
            entry.waiters.discard(waiter)
            if not entry.waiters and self._channels.get(name) is entry:
                del self._channels[name]
                await self._unsubscribe(name)

    async def _subscribe(self, name: str) -> None:
        with suppress(RedisError, OSError):  # the listener re-subscribes after a reconnect
            await self._pubsub.subscribe(name)

    async def _unsubscribe(self, name: str) -> None:
        if self._connected.is_set():
            with suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(name)

    # -- the listener -----------------------------------------------------------------------

    async def run(self) -> None:
        """Listen forever: reconnect with capped backoff, never die silently."""
        delay = BACKOFF_FIRST
        first = True
        while True:
            try:
                await self._connect(resync=not first)
                if not first:
                    self._on_reconnect()
                first = False
                delay = BACKOFF_FIRST
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError):
                logger.warning("Redis pub/sub connection lost; reconnecting in %.2f s", delay)
            except Exception:
                logger.exception("Redis pub/sub listener failed; reconnecting in %.2f s", delay)
            await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    async def close(self) -> None:
        await self._disconnect()

    async def _connect(self, *, resync: bool) -> None:
        # After a reconnect, a change may have landed while we were away: each channel's
        # waiters are told RESYNC once Redis confirms its subscription again (not before: a
        # re-read made while still unsubscribed could miss a change published meanwhile).
        self._resync = set(self._channels) if resync else set()
        self._pubsub = self._redis.pubsub()
        # Keep the connection even when no channel is live, so subscribing later is one
        # command on an open connection.
        await self._pubsub.subscribe("wxpush:hub")
        for name in list(self._channels):
            await self._pubsub.subscribe(name)
        self._connected.set()

    async def _disconnect(self) -> None:
        self._connected.clear()
        for entry in self._channels.values():
            entry.confirmed.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            kind = message["type"]
            name = message["channel"].decode()
            entry = self._channels.get(name)
            if entry is None:
                continue
            if kind == b"subscribe" or kind == "subscribe":
                entry.confirmed.set()
                if name in self._resync:
                    self._resync.discard(name)
                    for waiter in list(entry.waiters):
                        waiter.offer(RESYNC)
            elif kind == b"message" or kind == "message":
                data = message["data"]
                text = data.decode() if isinstance(data, bytes) else str(data)
                for waiter in list(entry.waiters):
                    waiter.offer(text)
