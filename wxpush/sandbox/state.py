"""Where the stand-in WeChat keeps its state: the server's Redis, or a dict for tests.

The core (:mod:`wxpush.sandbox.wechatapi`) needs only text values under text keys, with an
optional lifetime, so the interface is three calls. The sandbox runs it on
:class:`RedisStore` (shared by every process of the server, and working on the embedded
fakeredis); the test fake runs it on :class:`MemoryStore`, whose lifetimes follow the fake's
clock, so a test that moves the clock by hand also ages what is stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Protocol

from redis.asyncio import Redis


class Store(Protocol):
    """Text values under text keys; ``ttl`` in seconds (``None``: kept until deleted)."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...


class RedisStore:
    """A :class:`Store` on Redis, every key under ``prefix``; lifetimes on Redis's clock."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, key: str) -> str | None:
        value: bytes | str | None = await self._redis.get(self._prefix + key)
        return value.decode() if isinstance(value, bytes) else value

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        seconds = None if ttl is None else max(1, math.ceil(ttl))
        await self._redis.set(self._prefix + key, value, ex=seconds)

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)


class MemoryStore:
    """A :class:`Store` in a dict; a value expires when ``clock()`` reaches its deadline.

    It never awaits, so it is safe to read from another thread between requests
    (:meth:`items`), which is how the test fake answers questions from tests.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._values: dict[str, tuple[str, float | None]] = {}

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._values[key] = (value, None if ttl is None else self.clock() + ttl)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    def items(self, prefix: str) -> Iterator[tuple[str, str]]:
        """The live values whose key starts with ``prefix`` (a snapshot, any thread)."""
        for key in [k for k in list(self._values) if k.startswith(prefix)]:
            value = self._live(key)
            if value is not None:
                yield key, value

    def _live(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, deadline = entry
        return value if deadline is None or self.clock() < deadline else None
