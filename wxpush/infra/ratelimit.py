"""Fixed-window rate limits in Redis, shared by every process."""

from __future__ import annotations

from typing import Any

from wxpush.errors import RateLimited


class RateLimiter:
    """Counts hits per key in windows of ``window`` seconds (``INCR`` + ``EXPIRE NX``).

    A fixed window lets up to twice the limit through across a window boundary; for abuse
    limits (QR codes, SMS) that slack is harmless and the cost is one round trip per hit.
    """

    def __init__(self, redis: Any, prefix: str = "wxpush:limit:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def hit(self, key: str, *, limit: int, window: int, code: str, what: str) -> None:
        """Count one hit; raise :class:`RateLimited` (with ``Retry-After``) past ``limit``."""
        name = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, window, nx=True)
            pipe.ttl(name)
            count, _, ttl = await pipe.execute()
        if count > limit:
            raise RateLimited(
                f"Too many {what}; try again in {max(1, ttl)} s.",
                retry_after=ttl if ttl > 0 else window,
                code=code,
            )
