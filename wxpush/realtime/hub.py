"""One Redis pub/sub connection per process (per cluster master), fanned out to every local
waiter.

A *waiter* is one local listener on one channel: for the login, one browser (a WebSocket or
a long-poll) on one scene. The hub knows channels by the names it is given (the login core
names them, :mod:`wxpush.login.messages`), never what they carry. However many waiters there
are, the process holds a single pub/sub connection (on a Redis Cluster, one to each master
that serves a channel it waits on, :mod:`wxpush.realtime.shards`): the first waiter of a
channel subscribes it, the last one unsubscribes (reference counting).

Ordering: :meth:`Hub.waiter` returns only once Redis has *confirmed* the subscription, so a
waiter that then reads the scene's state cannot miss a change published after that read.

Push at the floor: a move made by this process (:meth:`Hub.moved`) reaches its own waiters at
once, without waiting for its publish to come back from Redis; the copy that comes back is
dropped (and one that came first makes the local one dropped), so no waiter hears a message
twice. Other processes hear it through pub/sub as ever.

Backpressure: messages are fanned out with ``put_nowait`` into a small bounded queue per
waiter. The listener never awaits a waiter; a waiter whose queue overflows is marked
``overflowed`` and its transport closes it (a browser that stopped reading loses its socket,
the others lose nothing).

Faults: if a connection drops, its listener logs it, reconnects with capped exponential
backoff (on a cluster, to whichever master serves each channel by then), re-subscribes every
live channel, and tells each channel's waiters ``RESYNC`` once Redis has confirmed that
channel again, so each re-reads its scene and sends whatever changed meanwhile. Waiters stay
open throughout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from redis.exceptions import RedisError

from wxpush.errors import Unavailable
from wxpush.realtime.shards import IDLE_SECONDS, Route, Shard, route_for

logger = logging.getLogger(__name__)

RESYNC = "RESYNC"  # not a status: "re-read the scene, something may have changed"
QUEUE_SIZE = 16
SUBSCRIBE_TIMEOUT = 1.0  # a waiter that cannot subscribe by then gets a 503


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


class _Confirmed:
    """Whether Redis has confirmed a channel's subscription, and who waits for it: an
    ``asyncio.Event`` with just that (its deque alone costs 0.6 KiB, for every scene)."""

    __slots__ = ("_waiting", "done")

    def __init__(self) -> None:
        self.done = False
        self._waiting: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self.done = True
        waiting, self._waiting = self._waiting, None
        for future in waiting or ():
            if not future.done():
                future.set_result(None)

    def clear(self) -> None:
        self.done = False

    async def wait(self) -> None:
        if self.done:
            return
        future = asyncio.get_running_loop().create_future()
        if self._waiting is None:
            self._waiting = []
        self._waiting.append(future)
        try:
            await future
        finally:
            if self._waiting is not None and future in self._waiting:
                self._waiting.remove(future)


class _Channel:
    __slots__ = ("confirmed", "once", "waiters")

    def __init__(self) -> None:
        self.waiters: list[Waiter] = []  # few: a set costs four times an empty list
        self.confirmed = _Confirmed()
        # messages handed over by one way (local, or Redis) whose copy by the other way is
        # still to come: that copy is dropped (None while there is none: most never have one)
        self.once: list[str] | None = None

    def first_time(self, text: str) -> bool:
        """Whether ``text`` comes for the first time (each comes at most twice: from this
        process's own move, and back through Redis)."""
        once = self.once
        if once is not None and text in once:
            once.remove(text)
            return False
        if once is None:
            once = self.once = []
        elif len(once) >= QUEUE_SIZE:  # a copy that never came (a lost connection)
            del once[0]
        once.append(text)
        return True


class Hub:
    """The process's pub/sub fan-out. Start with :meth:`run` as a background task."""

    def __init__(
        self, redis: Any, *, on_reconnect: Callable[[], None] | None = None,
        route: Route | None = None,
    ) -> None:  # fmt: skip
        self._route = route or route_for(redis)
        self._channels: dict[str, _Channel] = {}
        self._where: dict[str, Shard] = {}  # each live channel's shard
        self._shards: dict[str, Shard] = {}
        if not self._route.sharded:  # the one connection, kept open
            self._shards[""] = Shard(self, self._route, "")
        self._on_reconnect = on_reconnect or (lambda: None)
        self._resync: set[str] = set()  # channels to tell RESYNC once re-subscribed
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()

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
            with suppress(RedisError, OSError):  # no map of the cluster: the wait times out
                await self._place(name)
        waiter = Waiter(name, size)
        entry.waiters.append(waiter)
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
            entry.waiters.remove(waiter)
            if not entry.waiters and self._channels.get(name) is entry:
                del self._channels[name]
                self._resync.discard(name)
                if (shard := self._where.pop(name, None)) is not None:
                    await shard.unsubscribe(name)
                    self._drop_if_idle(shard)

    async def _place(self, name: str) -> None:
        """Hand channel ``name`` to the shard that carries it (one is opened if need be)."""
        node = await self._route.node(name)
        shard = self._shards.get(node)
        if shard is None:
            shard = self._shards[node] = Shard(self, self._route, node)
            if self._running:
                self._start(shard)
        self._where[name] = shard
        await shard.subscribe(name)

    def _drop_if_idle(self, shard: Shard) -> None:
        """A cluster shard that carries nothing is closed if it still carries nothing after
        :data:`IDLE_SECONDS` (the one server's stays)."""
        if self._route.sharded and not shard.channels:
            asyncio.get_running_loop().call_later(IDLE_SECONDS, self._retire_if_idle, shard)

    def _retire_if_idle(self, shard: Shard) -> None:
        if not shard.channels and self._shards.get(shard.node) is shard:
            del self._shards[shard.node]  # no channel is placed on it from now on
            shard.retire()

    # -- what the shards tell ---------------------------------------------------------------

    def confirmed(self, shard: Shard, name: str) -> None:
        entry = self._channels.get(name)
        if entry is None or self._where.get(name) is not shard:
            return
        entry.confirmed.set()
        if name in self._resync:
            self._resync.discard(name)
            for waiter in list(entry.waiters):
                waiter.offer(RESYNC)

    def heard(self, name: str, text: str) -> None:
        """A message from Redis."""
        entry = self._channels.get(name)
        if entry is not None and entry.first_time(text):
            for waiter in list(entry.waiters):
                waiter.offer(text)

    def moved(self, name: str, text: str) -> None:
        """A message of this process's own move (published too): its waiters have it at
        once, not after the publish comes back from Redis, and that copy is dropped."""
        self.heard(name, text)

    def reconnected(self) -> None:
        self._on_reconnect()

    async def lost(self, shard: Shard) -> None:
        """``shard`` lost its connection: its channels wait for their re-subscription (and
        are told RESYNC then: a change may land meanwhile); those another node serves now
        move to that node's shard."""
        for name in shard.channels:
            if (entry := self._channels.get(name)) is not None:
                entry.confirmed.clear()
            self._resync.add(name)
        if not self._route.sharded:
            return
        try:
            await self._route.refresh()
        except Exception as exc:  # the cluster is away: try the same nodes again
            logger.warning("cannot read the Redis Cluster's map (%s)", type(exc).__name__)
            return
        for name in list(shard.channels):
            with suppress(Exception):  # a slot no master serves yet: stays, tried again
                moved = await self._route.node(name) != shard.node
                if moved and self._where.get(name) is shard:
                    shard.channels.discard(name)
                    await self._place(name)
        if not shard.channels:  # all moved (a failover): it is done with
            self._retire_if_idle(shard)

    # -- the listeners ----------------------------------------------------------------------

    async def run(self) -> None:
        """Listen forever: each connection reconnects with capped backoff, never dies
        silently."""
        if not self._route.sharded:
            await self._shards[""].run()
            return
        self._running = True
        for shard in self._shards.values():
            self._start(shard)
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            for task in list(self._tasks):
                task.cancel()

    def _start(self, shard: Shard) -> None:
        task = shard.task = asyncio.create_task(shard.run())
        self._tasks.add(task)  # with the ones dropped that are still closing
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for shard in list(self._shards.values()):
            await shard.close()
        await self._route.close()
