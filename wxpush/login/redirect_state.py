"""The ``state`` of a redirect door (SPEC §13): one-time, bound to its scene in Redis.

``wxpush:oauth:<state>`` holds the scene id for the scene's life (on a cluster, on a slot of
its own: the state must not name the scene, so it cannot carry the scene's hash tag). The
redirect takes it with ``GETDEL``, so of two redirects carrying one state only one goes on; a
redirect that logged no one in (declined, WeChat's error, a snapshot visitor) gives it back,
so the person may try again until the scene expires. The state, not the scene id, is what
WeChat and the person's browser history see.
"""

from __future__ import annotations

import secrets
from typing import Any

from wxpush.login import messages

PREFIX = "wxpush:oauth:"
_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def new_state() -> str:
    """192 random bits in hex: within WeChat's ``A-Za-z0-9``, at most 128 characters."""
    return secrets.token_hex(24)


def key(state: str) -> str:
    return PREFIX + state


def plausible(state: str) -> bool:
    return 0 < len(state) <= 128 and all(c in _CHARS for c in state)


class RedirectStates:
    """Take and give back redirect states (they are written with their scene)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def take(self, state: str) -> str | None:
        """The scene ``state`` was bound to, consumed (``None``: unknown, used or expired)."""
        if not plausible(state):
            return None
        value: bytes | None = await self._redis.getdel(key(state))
        return None if value is None else value.decode()

    async def give_back(self, state: str, scene_id: str) -> None:
        """Bind ``state`` to its scene again, for the rest of the scene's life; a state taken
        meanwhile is left alone (and a scene that ends meanwhile leaves a state that leads
        nowhere: its redirect finds no scene)."""
        ttl = await self._redis.pttl(messages.key(scene_id))
        if ttl > 0:
            await self._redis.set(key(state), scene_id, px=ttl, nx=True)
