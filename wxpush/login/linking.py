"""A link scene's end (SPEC §15): the WeChat identity that comes through its door is
attached to the logged-in person who opened it.

A link scene is a scene of any door opened by ``POST /api/v1/me/identities`` with the
person's access token; it carries their user id (``link``). Whoever comes through it is not
logged in: their identity is attached to that user (``REG`` with ``linked``, no tokens), or,
when it already belongs to someone else (by its openid, or by its unionid: the same person in
WeChat's eyes), the scene ends ``CONFLICT`` and nothing moves. The attach is written before
the move (a scene that expired in between leaves the identity linked, as the person asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from wxpush.callback.dedup import Once, Retried
from wxpush.infra.metrics import Metrics
from wxpush.login.arrival import UnionidLookup, bounded
from wxpush.login.scenes import Person, SceneStore
from wxpush.people.audit import Origin
from wxpush.people.store import People

logger = logging.getLogger(__name__)

REPLY_LINKED = "This WeChat account is now linked to your account."
REPLY_TAKEN = "This WeChat account already belongs to another account; nothing was changed."


@dataclass(frozen=True, slots=True)
class Linking:
    """Attach the person at a link scene's door to the scene's user, and end the scene."""

    scenes: SceneStore
    people: People
    metrics: Metrics

    async def __call__(
        self, scene_id: str, *, account: str, openid: str, person: Person,
        lookup: UnionidLookup | None = None, once: Once | None = None,
    ) -> str | Retried | None:  # fmt: skip
        """Returns the status moved to (``REG`` linked, ``CONFLICT``), :class:`Retried` for a
        callback's retry, ``None`` when nothing could move (unknown, expired, another
        account's scene, not a link scene, or its user erased meanwhile)."""
        scene = await self.scenes.get(scene_id)
        if scene is None or scene.link is None or scene.account != account:
            return None
        if scene.status != "LOOP":
            return None
        unionid = person.unionid
        if unionid is None and lookup is not None:
            known = await self.people.user_id_of(person.appid, openid, person.provider)
            unionid = None if known is not None else await bounded(lookup)
        outcome = await self.people.links.attach(
            scene.link, person.appid, openid, provider=person.provider, unionid=unionid,
            origin=Origin(scene.kind, scene.ip),
        )  # fmt: skip
        if outcome == "gone":
            logger.info("a link scene's person was erased before the link")
            return None
        taken = outcome == "taken"
        moved = await self.scenes.mark_linked(
            scene_id, account=account, openid=openid, link=scene.link, taken=taken, once=once
        )
        if isinstance(moved, Retried) or not moved:
            return moved or None
        status = "CONFLICT" if taken else "REG"
        self.metrics.transitions.labels(status).inc()
        return status
