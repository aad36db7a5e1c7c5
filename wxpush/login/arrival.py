"""A person comes through a door: who they are, and the scene's move (SPEC §12).

Every door ends here — a scan of the follow QR code (from WeChat's callback) and the redirect
of the website and in-WeChat doors — so one person is one user whichever door they use: found
by their openid; else by their ``unionid`` among every identity (the new openid linked to that
user, no phone step); else unknown, ``NOT_REG`` (phone binding) or a new user when no phone is
required.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from wxpush.callback.dedup import Once, Retried
from wxpush.config.policy import LoginPolicy
from wxpush.errors import WxpushError
from wxpush.infra.metrics import Metrics
from wxpush.login.scenes import Person, SceneStore
from wxpush.people.audit import NOWHERE, Origin
from wxpush.people.schema import PROVIDER
from wxpush.people.store import People

logger = logging.getLogger(__name__)

LOOKUP_SECONDS = 1.5  # a unionid look-up's budget: WeChat gives a callback 5 s in all
UnionidLookup = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Arrival:
    """Resolve the person at a door and move their scene."""

    policy: LoginPolicy
    scenes: SceneStore
    people: People
    metrics: Metrics

    async def __call__(
        self, scene_id: str, *, account: str, openid: str, person: Person,
        lookup: UnionidLookup | None = None, once: Once | None = None,
        origin: Origin = NOWHERE,
    ) -> str | Retried | None:  # fmt: skip
        """A person came through a door of ``account``'s scene: find who they are (SPEC §12:
        openid, else unionid, else unknown) and move the scene, ``REG`` or ``NOT_REG``.

        ``lookup`` finds the person's unionid when WeChat did not give it (only for an
        unknown openid, within :data:`LOOKUP_SECONDS`; a failure decides without it).
        Returns the status moved to, :class:`Retried` for a callback's retry, ``None`` when
        the scene could not move (unknown, expired, another account's, already resolved).
        ``origin`` (the door) goes into the audit rows of a person linked or registered here.
        """
        unionid = person.unionid
        user_id = await self.people.user_id_of(person.appid, openid, person.provider)
        if user_id is None and unionid is None and lookup is not None:
            unionid = await bounded(lookup)
            person = replace(person, unionid=unionid)
        if user_id is None and unionid is not None:
            user_id = await self.people.link_unionid(
                person.appid, openid, provider=person.provider, unionid=unionid, origin=origin
            )
        new = False
        if user_id is None and not self.policy.require_phone and not self.policy.login_only:
            scene = await self.scenes.get(scene_id)  # no one is created for a dead scene
            if scene is None or scene.account != account or scene.status != "LOOP" or scene.link:
                return None
            user, new = await self.people.register_openid(
                person.appid, openid, provider=person.provider, unionid=unionid, origin=origin
            )
            user_id = user.id
        status = "NOT_REG" if user_id is None else "REG"
        moved = await self.scenes.mark_scanned(
            scene_id, account=account, openid=openid, user_id=user_id, new=new, once=once,
            person=person if person.provider != PROVIDER or unionid is not None else None,
        )  # fmt: skip
        if isinstance(moved, Retried):
            return moved
        if not moved:
            logger.debug("a login door changed nothing (account %s)", account)
            return None
        self.metrics.transitions.labels(status).inc()
        return status


async def bounded(lookup: UnionidLookup) -> str | None:
    """The unionid ``lookup`` finds within :data:`LOOKUP_SECONDS`; ``None`` on any failure
    (WeChat slow, refusing or unreachable, Redis away for the access_token): the person is
    then decided without it, never failed."""
    try:
        async with asyncio.timeout(LOOKUP_SECONDS):
            return await lookup()
    except (TimeoutError, WxpushError, RedisError, OSError) as exc:
        logger.warning("the unionid look-up failed (%s); deciding without it", type(exc).__name__)
        return None
