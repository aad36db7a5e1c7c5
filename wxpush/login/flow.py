"""The login flow: ties scenes, people, SMS codes and tokens together.

This is the one place that knows the order of a login: a scan resolves a scene to ``REG``
(known person) or ``NOT_REG`` (new person); the first reader of a ``REG`` scene claims it and
gets freshly minted tokens; a new person proves a phone number and the bind answer itself is
the scene's one claim. It is also the :class:`~wxpush.callback.service.ScanHandler` the callback
endpoint hands login scans to.

A claim is taken once, so a claim whose tokens reach no one would lose the login for good.
Claiming and issuing are therefore one step: if it does not end with the tokens in the
reader's hands — the issue failed, the reader was cancelled, or (:meth:`LoginFlow.give_back`)
its socket closed before they could be sent — the tokens are revoked and the claim given back,
so the next reader of the scene logs in. A claim is never cut short by a waiter's timeout: the
long-poll stops waiting for news at its deadline, not in the middle of a read.

A scene opened for an OIDC authorization request (SPEC §14) is claimed the same way, but its
claimer gets the :class:`Handover`'s redirect to the client (with a code) instead of tokens;
one that reaches no one is given back the same way, its code deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from wxpush.callback.dedup import Claimed, Once, Retried
from wxpush.callback.scan import Scan
from wxpush.clients.wechat import WeChatAPI
from wxpush.config.accounts import Account
from wxpush.config.policy import LoginPolicy
from wxpush.errors import BadRequest, NotFound
from wxpush.infra.metrics import Metrics
from wxpush.infra.ratelimit import RateLimiter
from wxpush.login.arrival import Arrival
from wxpush.login.giveback import GiveBacks
from wxpush.login.handover import Handover
from wxpush.login.linking import REPLY_LINKED, REPLY_TAKEN, Linking
from wxpush.login.scenes import Claim, Opened, Person, Scene, SceneStore
from wxpush.login.states import LINKED, TAKEN, status_body
from wxpush.people.audit import Origin
from wxpush.people.schema import PROVIDER
from wxpush.people.store import People
from wxpush.sms.codes import SmsCodes
from wxpush.sms.phone import normalize_phone
from wxpush.tokens.refresh import new_family
from wxpush.tokens.service import TokenService
from wxpush.wechat.oauth import unionid_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoginFlow:
    policy: LoginPolicy
    accounts: Mapping[str, Account]
    scenes: SceneStore
    people: People
    tokens: TokenService
    sms: SmsCodes
    wechat: dict[str, WeChatAPI]
    limiter: RateLimiter
    metrics: Metrics
    arrival: Arrival
    handover: Handover | None = None
    linking: Linking | None = None
    _give_backs: GiveBacks = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_give_backs", GiveBacks(self.tokens, self.scenes))

    # -- scenes -----------------------------------------------------------------------------

    async def create(
        self, account_name: str | None, *, ip: str, oidc: str | None = None,
        link: str | None = None,
    ) -> Scene:  # fmt: skip
        """A new scene with its QR code, limited per IP (``oidc``: for that OIDC request;
        ``link``: a link scene of that user)."""
        account = self.account(account_name)
        await self.limit_scenes(ip)
        api = self.wechat[account.name]

        async def make_qr(scene_str: str, expire_seconds: int) -> str:
            return (await api.create_qrcode(scene_str, expire_seconds)).url

        expire = self.policy.qr_expire_seconds
        scene = await self.scenes.create(account.name, expire, make_qr, Opened(oidc, link, ip))
        self.metrics.scenes_created.labels(account.name).inc()
        return scene

    async def limit_scenes(self, ip: str) -> None:
        """New scenes of any door are limited per IP (429 past the limit)."""
        await self.limiter.hit(
            f"scenes:{ip}", limit=self.policy.scenes_per_minute_per_ip, window=60,
            code="scene_rate_limited", what="new QR codes",
        )  # fmt: skip

    async def state(self, scene_id: str, *, heard: str | None = None) -> dict[str, Any]:
        """What a waiting browser sees; the first reader of a ``REG`` scene gets the tokens.

        ``heard`` is the status a waiter was just told the scene moved to (the scene's own
        published message, sent by the same script as the move): ``NOT_REG`` is then the
        state itself, with no read; ``REG`` goes straight to the claim.
        """
        if heard == "NOT_REG":
            return status_body("NOT_REG")
        if heard == "REG":
            login = await self._claim(scene_id)
            if login is not None:
                return login
        return await self._state_of(scene_id, await self.scenes.get(scene_id))

    async def first_state(self, scene_id: str) -> tuple[dict[str, Any], float]:
        """:meth:`state` for a waiter that has just subscribed, with the time its QR code
        expires (for its expiry timer), from one read of the scene."""
        scene = await self.scenes.get(scene_id)
        return await self._state_of(scene_id, scene), (scene.expires_at if scene else 0.0)

    async def _state_of(self, scene_id: str, scene: Scene | None) -> dict[str, Any]:
        if scene is None:
            return status_body("EXPIRED")
        if scene.status == "CONFLICT":
            return dict(TAKEN)
        if scene.link is not None and scene.status == "REG":
            return dict(LINKED)
        if scene.status == "LOOP":
            return {**status_body("LOOP"), "expires_in": scene.expires_in(time.time())}
        if scene.status != "REG":
            return status_body(scene.status)
        login = await self._claim(scene_id)
        if login is None:
            return {**status_body("REG"), "claimed": True}
        return login

    async def _claim(self, scene_id: str) -> dict[str, Any] | None:
        """Claim the scene and issue its tokens; ``None`` when it was claimed already.

        The claim is marked with the family of the tokens it is for, chosen before either
        call, so that whatever stops this half-way, even before it is known whether the
        claim went through, is undone exactly: that family revoked, that claim given back.
        """
        family = new_family()
        try:
            claim = await self.scenes.claim(scene_id, family)
            if claim is None:
                return None
            pair = await self._login(claim, family, Origin(claim.kind, claim.ip))
        except asyncio.CancelledError:  # no answer will carry the tokens
            self._give_backs.later(scene_id, family)
            raise
        except Exception:
            await self._give_backs.now(scene_id, family)
            raise
        return {**status_body("REG"), **pair}

    async def _login(self, claim: Claim, family: str, origin: Origin) -> dict[str, Any]:
        """The tokens of a claim (or, for an OIDC request's scene, its hand-over, which
        writes the login's audit row with its client)."""
        user_id, amr = claim.user_id, claim.provider
        if claim.oidc is not None and self.handover is not None:
            return await self.handover.hand_over(
                claim.oidc, user_id, amr=amr, mark=family, origin=origin
            )
        pair = await self.tokens.issue(user_id, new=claim.new, family=family, amr=amr)
        self.people.logins.note(user_id, origin)
        return pair

    def give_back(self, scene_id: str, state: dict[str, Any]) -> None:
        """The login in ``state`` (a :meth:`state` with tokens, or a hand-over's redirect)
        could not be handed to its reader — its socket closed first: revoke the tokens (or
        the code) and give the claim back, in the background, so that the next reader of
        the scene logs in."""
        if "redirect" in state and self.handover is not None:
            self._give_backs.later(scene_id, find=partial(self.handover.mark_of, state["redirect"]))
        else:
            self._give_backs.later(
                scene_id, find=partial(self.tokens.family_of, state["refresh_token"])
            )

    async def settle(self) -> None:
        """Wait for the give-backs still running (at shutdown, before Redis is closed)."""
        await self._give_backs.settle()

    async def qr_url(self, scene_id: str) -> str:
        scene = await self.scenes.get(scene_id)
        if scene is None or not scene.qr_url:  # a redirect door's scene has no QR code
            raise NotFound("No such scene, or its QR code has expired.", code="scene_not_found")
        return scene.qr_url

    # -- the scan (from the WeChat callback) ------------------------------------------------

    async def on_scan(self, scan: Scan, once: Once) -> Claimed | Retried | None:
        """Resolve a login scan; answers the passive reply for the person in WeChat.

        On the path from WeChat's callback to the browser's frame, so a known person costs
        one lookup (in place on SQLite) and one Redis round trip: the transition script
        itself checks that the event is not a retry (claiming ``once``) and that the scene
        exists, is this account's and is still waiting. An unknown openid of an account
        bound to an Open Platform account costs a ``user/info`` call too (its unionid may
        be a person known through another door), bounded so the answer leaves in time.
        """
        account = scan.account
        person = Person(PROVIDER, account.appid)

        async def unionid() -> str | None:
            return unionid_of(await self.wechat[account.name].user_info(scan.openid))

        lookup = unionid if account.unionid else None
        if scan.link:
            return await self._on_link_scan(scan, person, lookup, once)
        moved = await self.arrival(
            scan.scene_id, account=account.name, openid=scan.openid, person=person,
            lookup=lookup, once=once, origin=Origin("follow"),
        )  # fmt: skip
        if moved is None or isinstance(moved, Retried):
            return moved
        if moved == "NOT_REG":
            return Claimed(self.policy.reply_finish_on_screen)
        return Claimed(self.policy.reply_logged_in)

    async def _on_link_scan(
        self, scan: Scan, person: Person, lookup: Any, once: Once
    ) -> Claimed | Retried | None:
        if self.linking is None:
            return None
        moved = await self.linking(
            scan.scene_id, account=scan.account.name, openid=scan.openid, person=person,
            lookup=lookup, once=once,
        )  # fmt: skip
        if moved is None or isinstance(moved, Retried):
            return moved
        return Claimed(REPLY_TAKEN if moved == "CONFLICT" else REPLY_LINKED)

    # -- phone binding ----------------------------------------------------------------------

    async def send_code(self, scene_id: str, phone_raw: str, *, ip: str) -> int:
        """Send an SMS code for a ``NOT_REG`` scene; returns seconds until a resend."""
        await self.scenes.require(scene_id, "NOT_REG")
        phone = normalize_phone(phone_raw)
        return await self.sms.send(phone, ip=ip, scope=scene_id)

    async def bind(
        self, scene_id: str, phone_raw: str, code: str, *, ip: str | None = None
    ) -> dict[str, Any]:
        """Check the code, link or create the person, and answer with the tokens.

        The code is spent only once the bind has gone through: a wrong one costs a try at
        once, a right one stays valid through any failure on the way (the database or Redis
        down: a 503, and the same code works again). The scene's move to ``REG`` is the
        once-only step: of two binds with the right code, both may link the person (the
        database keeps them one user), but only one moves the scene and answers with tokens;
        the other's are revoked and it gets a 409.
        """
        scene = await self.scenes.require(scene_id, "NOT_REG")
        if not (code.isascii() and code.isdigit()) or len(code) != 6:
            raise BadRequest("The code is the 6 digits sent by SMS.", code="invalid_code")
        phone = normalize_phone(phone_raw)
        await self.sms.check(phone, code, scope=scene_id)
        if scene.openid is None:  # pragma: no cover - NOT_REG always keeps the openid
            raise BadRequest("This login has no WeChat identity.", code="scene_state")
        appid = scene.appid or self.accounts[scene.account].appid
        origin = Origin(scene.kind, ip)
        user, new = await self.people.bind_phone(
            appid, scene.openid, phone,
            link_by_phone=self.policy.link_by_phone, login_only=self.policy.login_only,
            provider=scene.provider, unionid=scene.unionid, origin=origin,
        )  # fmt: skip
        claim = Claim(user.id, new, scene.provider, scene.oidc, scene.kind, ip)
        pair = await self._bound(scene_id, claim, origin)
        # The scene is no longer NOT_REG, so the code (valid for this scene only) can prove
        # nothing any more: spending it now is tidiness, and a failure here costs no one.
        with suppress(RedisError, OSError):
            await self.sms.consume(phone, code, scope=scene_id)
        self.metrics.transitions.labels("REG").inc()
        return {**status_body("REG"), **pair}

    async def _bound(self, scene_id: str, claim: Claim, origin: Origin) -> dict[str, Any]:
        """Issue the tokens, then move the scene to ``REG`` claimed by them (as :meth:`_claim`,
        undone if anything stops it half-way)."""
        family = new_family()
        try:
            pair = await self._login(claim, family, origin)
            await self.scenes.mark_bound(
                scene_id, user_id=claim.user_id, new=claim.new, mark=family
            )
        except asyncio.CancelledError:
            self._give_backs.later(scene_id, family)
            raise
        except Exception:
            await self._give_backs.now(scene_id, family)
            raise
        return pair

    def account(self, name: str | None) -> Account:
        """The service account ``name`` (default: the first one)."""
        if not self.accounts:
            raise BadRequest(
                "The follow door is not configured on this server.", code="kind_unavailable"
            )
        if name is None:
            return next(iter(self.accounts.values()))
        account = self.accounts.get(name)
        if account is None:
            raise BadRequest(f"No WeChat account is named {name!r}.", code="unknown_account")
        return account
