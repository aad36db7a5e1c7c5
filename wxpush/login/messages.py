"""The ONE format of a scene's pub/sub message: written by the scene's transition script,
read by its waiters. Nothing else knows it.

A scene's key and its channel have the same name, ``wxpush:scene:{<id>}``: the braces are
the id's hash tag, so on a Redis Cluster every key of the scene (its de-dup keys too,
:func:`tag`) and its sharded channel are on one slot, and a scan's one script runs on one
shard. The message is the
new status and the publish time, ``"<STATUS> <unix time>"`` (the time feeds the
push-latency metric): never a secret, never the tokens, which the first reader claims from
the store.
"""

from __future__ import annotations

import time

from wxpush.login.states import CODES

PREFIX = "wxpush:scene:"


def tag(scene_id: str) -> str:
    """The scene's hash tag: a key holding it is on the scene's slot of a cluster."""
    return "{" + scene_id + "}"


def channel(scene_id: str) -> str:
    """The pub/sub channel of a scene (the same name as its key)."""
    return PREFIX + tag(scene_id)


def key(scene_id: str) -> str:
    """The Redis hash of a scene."""
    return PREFIX + tag(scene_id)


def encode(status: str, now: float | None = None) -> str:
    """The message announcing that a scene moved to ``status``."""
    return f"{status} {time.time() if now is None else now:.6f}"


def heard(message: str) -> str | None:
    """The status a scene message announces (``None`` for a waiter's own timer messages and
    the hub's ``RESYNC``, which say only "look again")."""
    status = message.partition(" ")[0]
    return status if status in CODES else None


def published_at(message: str) -> float | None:
    """The publish time carried by a scene message."""
    _, _, stamp = message.partition(" ")
    try:
        return float(stamp)
    except ValueError:
        return None
