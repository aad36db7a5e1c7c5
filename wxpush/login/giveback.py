"""Giving a claim back: a login whose tokens (or OIDC code) reached no one is undone, so that
the next reader of the scene logs in (:mod:`wxpush.login.flow`).

Undoing is revoking the claim's refresh-token family (or deleting its code) and releasing the
claim. While Redis is away it is tried again in the background (:data:`RETRIES`): a claim left
taken with no tokens out would lose the login for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from wxpush.login.scenes import SceneStore
from wxpush.tokens.service import TokenService

logger = logging.getLogger(__name__)

MarkFinder = Callable[[], Awaitable[str | None]]
RETRIES = (0.5, 1.0, 2.0, 4.0)  # seconds between tries while Redis is away
SETTLE_TIMEOUT = 2.0  # how long a shutdown waits for the give-backs still running


class GiveBacks:
    """Undo claims, now or in the background; :meth:`settle` waits for those running."""

    def __init__(self, tokens: TokenService, scenes: SceneStore) -> None:
        self._tokens = tokens
        self._scenes = scenes
        self._running: set[asyncio.Task[None]] = set()  # referenced until done

    async def now(self, scene_id: str, family: str) -> None:
        """Revoke ``family`` and release its claim; while Redis is away, in the background."""
        try:
            await self._revoke_and_release(scene_id, family)
        except (RedisError, OSError):
            self.later(scene_id, family, first_delay=RETRIES[0])

    def later(
        self, scene_id: str, family: str | None = None, *, find: MarkFinder | None = None,
        first_delay: float = 0.0,
    ) -> None:  # fmt: skip
        """Undo in the background. ``find``: where the claim's mark is when only what
        reached no one is known (the refresh token's family, or the hand-over's code)."""
        task = asyncio.ensure_future(self._retrying(scene_id, family, find, first_delay))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def settle(self) -> None:
        if self._running:
            await asyncio.wait(set(self._running), timeout=SETTLE_TIMEOUT)

    async def _retrying(
        self, scene_id: str, family: str | None, find: MarkFinder | None, delay: float
    ) -> None:
        for retry in (*RETRIES, None):
            await asyncio.sleep(delay)
            try:
                if family is None and find is not None:
                    family = await find()
                if family is not None:
                    await self._revoke_and_release(scene_id, family)
                return
            except (RedisError, OSError):
                if retry is None:
                    logger.warning("a login that reached no one could not be given back")
                    return
                delay = retry

    async def _revoke_and_release(self, scene_id: str, family: str) -> None:
        await self._tokens.revoke_family(family)
        await self._scenes.release(scene_id, family)
