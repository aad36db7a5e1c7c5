"""The scene state machine in Redis: create, resolve a scan, claim once, expire.

A scene is one login attempt (one QR code, one waiting browser), a Redis hash
``wxpush:scene:{<id>}`` (the braces are its hash tag) that lives as long as its QR code::

    LOOP ──scan, known person──▶ REG ──first read──▶ REG (claimed)
      │                           ▲
      └──scan, new person──▶ NOT_REG ──bind phone──┘ (claimed by the bind itself)
    (key gone) = EXPIRED

    a link scene (SPEC §15): LOOP ──scan──▶ REG (linked: no tokens) or CONFLICT

Every transition is one Lua script, so two processes can never both move a scene, and the
token is handed out exactly once: the first reader of an unclaimed ``REG`` scene flips
``claimed`` and only then are tokens minted (no token is ever stored). The claim is marked
with the refresh-token family it is for, so a claim whose tokens never reached anyone (the
reader left, or the issue failed) is given back by its own claimer only — ``claimed`` again
``0``, for the next reader. Each change is published on the scene's channel, of its key's
name (sharded, ``SPUBLISH``, on a cluster), with the new status only — no secret crosses
pub/sub; a waiter that hears it reads (and claims) from the store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from wxpush.callback.dedup import Once, Retried
from wxpush.errors import Conflict, Gone, NotFound
from wxpush.infra.pipeline import HotCommands, hot_commands
from wxpush.login import messages, redirect_state, scene_scripts
from wxpush.login.states import Status
from wxpush.people.schema import PROVIDER

logger = logging.getLogger(__name__)

SCENE_PREFIX = "login:"  # a QR code's scene_str: login:{id}, or link:{id} for a link scene
LINK_PREFIX = "link:"
RESULT_GRACE = 120  # seconds a REG/NOT_REG scene outlives a QR about to expire

Kind = Literal["follow", "website", "oauth"]
KINDS: tuple[Kind, ...] = ("follow", "website", "oauth")
MP = PROVIDER  # the service account's openids (the follow and oauth doors)


def new_scene_id() -> str:
    """128 random bits, URL-safe: the scene id is a bearer secret held by the browser."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class Scene:
    id: str
    account: str
    status: Status
    qr_url: str
    expires_at: float
    openid: str | None = None
    user_id: str | None = None
    new: bool = False
    claimed: bool = False
    kind: Kind = "follow"
    provider: str = MP
    appid: str | None = None  # the app the openid is of (kept with it, for the bind)
    unionid: str | None = None
    return_to: str | None = None
    oidc: str | None = None  # the OIDC authorization request it logs in for (SPEC §14)
    link: str | None = None  # a link scene's user, who the identity is attached to (§15)
    ip: str | None = None  # who opened it (for the audit log)

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of reading a REG scene: the claimer gets the user to mint tokens for."""

    user_id: str
    new: bool
    provider: str = MP  # the door's provider, named in the token's ``amr``
    oidc: str | None = None  # handed over to that OIDC request instead of tokens
    kind: str = "follow"
    ip: str | None = None  # who opened the scene


QRMaker = Callable[[str, int], Awaitable[str]]  # (scene_str, expire_seconds) -> QR url


class SceneStore:
    """Scenes in Redis. ``redis`` is a ``redis.asyncio.Redis`` (or the embedded store);
    ``hot`` (default ``redis``) carries the reads and moves on the path of a login."""

    def __init__(
        self,
        redis: Any,
        hot: HotCommands | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sharded: bool = False,
        moved: Callable[[str, str], None] = lambda channel, message: None,
    ) -> None:
        self._redis = redis
        self._moved = moved  # told each move this process made: (channel, message)
        self._hot = hot_commands(redis, hot)
        self._clock = clock
        self._move = self._hot.register_script(scene_scripts.move_script(sharded))
        self._claim = self._hot.register_script(scene_scripts.CLAIM)
        self._release = self._hot.register_script(scene_scripts.RELEASE)

    async def create(
        self, account: str, expire_seconds: int, make_qr: QRMaker, opened: Opened | None = None
    ) -> Scene:
        """Create a scene and its temporary QR code (``scene_str = login:{id}``, or
        ``link:{id}`` for a link scene: the scan's callback then knows which it is)."""
        scene_id, opened = new_scene_id(), opened or Opened()
        prefix = SCENE_PREFIX if opened.link is None else LINK_PREFIX
        qr_url = await make_qr(prefix + scene_id, expire_seconds)
        expires_at = self._clock() + expire_seconds
        fields = {"account": account, "status": "LOOP", "qr_url": qr_url,
                  "expires_at": repr(expires_at), "claimed": "0", **opened.fields()}  # fmt: skip
        await self._write(scene_id, fields, expire_seconds)
        return Scene(scene_id, account, "LOOP", qr_url, expires_at, oidc=opened.oidc,
                     link=opened.link, ip=opened.ip)  # fmt: skip

    async def create_redirect(
        self, kind: Kind, account: str, ttl: int, return_to: str | None,
        opened: Opened | None = None,
    ) -> tuple[Scene, str]:  # fmt: skip
        """A scene of a redirect door and the one-time ``state`` bound to it (SPEC §13): the
        scene id itself never goes into a URL given to WeChat."""
        scene_id, state = new_scene_id(), redirect_state.new_state()
        opened = opened or Opened()
        expires_at = self._clock() + ttl
        fields = {"account": account, "kind": kind, "status": "LOOP",
                  "expires_at": repr(expires_at), "claimed": "0", **opened.fields()}  # fmt: skip
        if return_to is not None:
            fields["return_to"] = return_to
        await self._write(scene_id, fields, ttl)
        # after the scene, on a slot of its own: a state whose write failed leaves a scene no
        # redirect can reach, which expires unseen
        await self._redis.set(redirect_state.key(state), scene_id, ex=ttl)
        scene = Scene(scene_id, account, "LOOP", "", expires_at, kind=kind, return_to=return_to,
                      oidc=opened.oidc, link=opened.link, ip=opened.ip)  # fmt: skip
        return scene, state

    async def _write(self, scene_id: str, fields: dict[str, str], ttl: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(messages.key(scene_id), mapping=fields)
            pipe.expire(messages.key(scene_id), ttl)
            await pipe.execute()

    async def get(self, scene_id: str) -> Scene | None:
        """The scene, or ``None`` when unknown or expired."""
        if not _plausible(scene_id):
            return None
        raw = await self._hot.hgetall(messages.key(scene_id))
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return Scene(
            id=scene_id,
            account=f.get("account", ""),
            status=f.get("status", "EXPIRED"),
            qr_url=f.get("qr_url", ""),
            expires_at=float(f.get("expires_at", "0")),
            openid=f.get("openid") or None,
            user_id=f.get("user_id") or None,
            new=f.get("new") == "1",
            claimed=f.get("claimed") == "1",
            kind=_kind(f.get("kind")),
            provider=f.get("provider") or MP,
            appid=f.get("appid") or None,
            unionid=f.get("unionid") or None,
            return_to=f.get("return_to") or None,
            oidc=f.get("oidc") or None,
            link=f.get("link") or None,
            ip=f.get("ip") or None,
        )

    async def mark_scanned(self, scene_id: str, *, account: str, openid: str,
                           user_id: str | None, new: bool = False,
                           once: Once | None = None,
                           person: Person | None = None) -> bool | Retried:  # fmt: skip
        """LOOP → REG (``user_id`` known) or NOT_REG (kept ``openid``). False unless the
        scene exists, belongs to ``account`` and is ``LOOP``. With ``once`` (the callback's
        de-dup key) the move also claims it, in the same script; :class:`Retried` when it
        was claimed already (a retry of the event: nothing moves). ``person`` says whose
        openid it is when it is not the scanned service account's (a redirect door) or has
        a unionid: kept for the bind, and the provider for the token's ``amr``."""
        fields = {"openid": openid}
        if person is not None:
            fields.update(person.fields())
        if user_id is None:
            return await self._transition(scene_id, "LOOP", "NOT_REG", account, fields, once)
        fields.update(user_id=user_id, new=_flag(new))
        return await self._transition(scene_id, "LOOP", "REG", account, fields, once)

    async def mark_linked(
        self, scene_id: str, *, account: str, openid: str, link: str, taken: bool,
        once: Once | None = None,
    ) -> bool | Retried:  # fmt: skip
        """A link scene of ``link``'s ends: LOOP → REG (the identity attached) or CONFLICT
        (another person's); as :meth:`mark_scanned` otherwise."""
        status = "CONFLICT" if taken else "REG"
        fields = {"openid": openid, "user_id": link}
        return await self._transition(scene_id, "LOOP", status, account, fields, once, link)

    async def mark_bound(self, scene_id: str, *, user_id: str, new: bool, mark: str) -> None:
        """NOT_REG → REG, already claimed (with ``mark``, as :meth:`claim`): the bind answer
        carries the tokens itself."""
        fields = {"user_id": user_id, "new": _flag(new), "claimed": "1", "claim": mark}
        moved = await self._transition(scene_id, "NOT_REG", "REG", "", fields)
        if not moved:
            raise Conflict("This login was already completed.", code="scene_state")

    async def claim(self, scene_id: str, mark: str) -> Claim | None:
        """Claim a REG scene's login once; ``None`` for every later reader (or another state).

        ``mark`` (the family of the tokens the claim is for) is what :meth:`release` takes.
        """
        result = await self._claim(keys=[messages.key(scene_id)], args=[mark])
        if isinstance(result, list):
            user_id, new, provider, oidc, kind, ip = (v.decode() for v in result)
            return Claim(user_id, new == "1", provider or MP, oidc or None, kind or "follow",
                         ip or None)  # fmt: skip
        return None

    async def release(self, scene_id: str, mark: str) -> None:
        """Give back the claim made with ``mark``, if it is the scene's: the next reader
        claims again. A claim that was never taken (or another's) is left as it is."""
        await self._release(keys=[messages.key(scene_id)], args=[mark])

    async def require(self, scene_id: str, status: Status) -> Scene:
        """The scene if it is in ``status``: 404 unknown-but-plausible never; 410 expired."""
        scene = await self.get(scene_id)
        if scene is None:
            if not _plausible(scene_id):
                raise NotFound("No such scene.", code="scene_not_found")
            raise Gone("This QR code has expired; show a new one.", code="scene_expired")
        if scene.status != status:
            raise Conflict(f"This login is {scene.status}, not {status}.", code="scene_state")
        return scene

    async def _transition(
        self, scene_id: str, old: str, to: str, account: str, fields: dict[str, str],
        once: Once | None = None, link: str = "",
    ) -> bool | Retried:  # fmt: skip
        # The message is the status and the publish time (for the push-latency metric);
        # never a secret.
        message = messages.encode(to)
        keys = [messages.key(scene_id)] if once is None else [messages.key(scene_id), once.key]
        args: list[str | bytes | int] = [old, to, RESULT_GRACE, message, account]
        args += ["", ""] if once is None else [once.ttl, once.marker]
        args.append(link)
        for name, value in fields.items():
            args += [name, value]
        result: bytes | list[bytes] | None = await self._move(keys=keys, args=args)
        if isinstance(result, list):
            return Retried(result[1])
        if result == b"OK":
            self._moved(messages.channel(scene_id), message)  # this process's waiters, now
            # and their frames go before this caller goes on (a callback's encrypted reply
            # is a tenth of a millisecond of work that would come first)
            await asyncio.sleep(0)
            return True
        return False


@dataclass(frozen=True, slots=True)
class Opened:
    """What a new scene is for, beyond its door: an OIDC request, a link of this user's; and
    who opened it."""

    oidc: str | None = None
    link: str | None = None
    ip: str | None = None

    def fields(self) -> dict[str, str]:
        found = {"oidc": self.oidc, "link": self.link, "ip": self.ip}
        return {name: value for name, value in found.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Person:
    """Who a scene's openid belongs to, beyond the scene's own service account."""

    provider: str
    appid: str
    unionid: str | None = None

    def fields(self) -> dict[str, str]:
        found = {"provider": self.provider, "appid": self.appid}
        return found if self.unionid is None else {**found, "unionid": self.unionid}


def _kind(value: str | None) -> Kind:
    return value if value in ("website", "oauth") else "follow"  # type: ignore[return-value]


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _plausible(scene_id: str) -> bool:
    """Ids are 22 URL-safe characters; anything else cannot be a scene."""
    return (
        len(scene_id) == 22
        and scene_id.isascii()
        and all(c.isalnum() or c in "-_" for c in scene_id)
    )
