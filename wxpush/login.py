"""The login flow: ties scenes, people, SMS codes and tokens together.

This is the one place that knows the order of a login: a scan resolves a scene to ``REG``
(known person) or ``NOT_REG`` (new person); the first reader of a ``REG`` scene claims it and
gets freshly minted tokens; a new person proves a phone number and the bind answer itself is
the scene's one claim. It is also the :class:`~wxpush.callback.ScanHandler` the callback
endpoint hands login scans to.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from wxpush.accounts import People
from wxpush.callback import Claimed, Once, Retried, Scan
from wxpush.errors import BadRequest, NotFound
from wxpush.limits import RateLimiter
from wxpush.metrics import Metrics
from wxpush.scenes import CODES, Claim, Scene, SceneStore
from wxpush.settings import Account, Settings
from wxpush.sms import SmsCodes, normalize_phone
from wxpush.tokens import TokenService
from wxpush.wechat.api import WeChatAPI

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoginFlow:
    settings: Settings
    scenes: SceneStore
    people: People
    tokens: TokenService
    sms: SmsCodes
    wechat: dict[str, WeChatAPI]
    limiter: RateLimiter
    metrics: Metrics

    # -- scenes -----------------------------------------------------------------------------

    async def create(self, account_name: str | None, *, ip: str) -> Scene:
        """A new scene with its QR code, limited per IP."""
        account = self._account(account_name)
        await self.limiter.hit(
            f"scenes:{ip}", limit=self.settings.scenes_per_minute_per_ip, window=60,
            code="scene_rate_limited", what="new QR codes",
        )  # fmt: skip
        api = self.wechat[account.name]

        async def make_qr(scene_str: str, expire_seconds: int) -> str:
            return (await api.create_qrcode(scene_str, expire_seconds)).url

        scene = await self.scenes.create(account.name, self.settings.qr_expire_seconds, make_qr)
        self.metrics.scenes_created.labels(account.name).inc()
        return scene

    async def state(self, scene_id: str, *, heard: str | None = None) -> dict[str, Any]:
        """What a waiting browser sees; the first reader of a ``REG`` scene gets the tokens.

        ``heard`` is the status a waiter was just told the scene moved to (the scene's own
        published message, sent by the same script as the move): ``NOT_REG`` is then the
        state itself, with no read; ``REG`` goes straight to the claim.
        """
        if heard == "NOT_REG":
            return status_body("NOT_REG")
        if heard == "REG":
            claim = await self.scenes.claim(scene_id)
            if claim is not None:
                return await self._logged_in(claim)
        return await self._state_of(scene_id, await self.scenes.get(scene_id))

    async def first_state(self, scene_id: str) -> tuple[dict[str, Any], float]:
        """:meth:`state` for a waiter that has just subscribed, with the time its QR code
        expires (for its expiry timer), from one read of the scene."""
        scene = await self.scenes.get(scene_id)
        return await self._state_of(scene_id, scene), (scene.expires_at if scene else 0.0)

    async def _state_of(self, scene_id: str, scene: Scene | None) -> dict[str, Any]:
        if scene is None:
            return status_body("EXPIRED")
        if scene.status == "LOOP":
            return {**status_body("LOOP"), "expires_in": scene.expires_in(time.time())}
        if scene.status != "REG":
            return status_body(scene.status)
        claim = await self.scenes.claim(scene_id)
        if claim is None:
            return {**status_body("REG"), "claimed": True}
        return await self._logged_in(claim)

    async def _logged_in(self, claim: Claim) -> dict[str, Any]:
        return {**status_body("REG"), **await self.tokens.issue(claim.user_id, new=claim.new)}

    async def qr_url(self, scene_id: str) -> str:
        scene = await self.scenes.get(scene_id)
        if scene is None:
            raise NotFound("No such scene, or its QR code has expired.", code="scene_not_found")
        return scene.qr_url

    # -- the scan (from the WeChat callback) ------------------------------------------------

    async def on_scan(self, scan: Scan, once: Once) -> Claimed | Retried | None:
        """Resolve a login scan; answers the passive reply for the person in WeChat.

        On the path from WeChat's callback to the browser's frame, so it costs one lookup of
        the person (in place on SQLite) and one Redis round trip: the transition script
        itself checks that the event is not a retry (claiming ``once``) and that the scene
        exists, is this account's and is still waiting.
        """
        appid, account = scan.account.appid, scan.account.name
        user_id = await self.people.user_id_of(appid, scan.openid)
        new = False
        if user_id is None and not self.settings.require_phone and not self.settings.login_only:
            scene = await self.scenes.get(scan.scene_id)  # no one is created for a dead scene
            if scene is None or scene.account != account or scene.status != "LOOP":
                return None
            user, new = await self.people.register_openid(appid, scan.openid)
            user_id = user.id
        status = "NOT_REG" if user_id is None else "REG"
        moved = await self.scenes.mark_scanned(
            scan.scene_id, account=account, openid=scan.openid, user_id=user_id, new=new,
            once=once,
        )  # fmt: skip
        if isinstance(moved, Retried):
            return moved
        if not moved:  # unknown, expired, another account's, or already resolved
            logger.info("scan changed nothing (account %s)", account)
            return None
        self.metrics.transitions.labels(status).inc()
        if status == "NOT_REG":
            return Claimed(self.settings.reply_finish_on_screen)
        return Claimed(self.settings.reply_logged_in)

    # -- phone binding ----------------------------------------------------------------------

    async def send_code(self, scene_id: str, phone_raw: str, *, ip: str) -> int:
        """Send an SMS code for a ``NOT_REG`` scene; returns seconds until a resend."""
        await self.scenes.require(scene_id, "NOT_REG")
        phone = normalize_phone(phone_raw)
        return await self.sms.send(phone, ip=ip, scope=scene_id)

    async def bind(self, scene_id: str, phone_raw: str, code: str) -> dict[str, Any]:
        """Check the code, link or create the person, and answer with the tokens."""
        scene = await self.scenes.require(scene_id, "NOT_REG")
        if not (code.isascii() and code.isdigit()) or len(code) != 6:
            raise BadRequest("The code is the 6 digits sent by SMS.", code="invalid_code")
        phone = normalize_phone(phone_raw)
        await self.sms.verify(phone, code, scope=scene_id)
        if scene.openid is None:  # pragma: no cover - NOT_REG always keeps the openid
            raise BadRequest("This login has no WeChat identity.", code="scene_state")
        account = self.settings.accounts[scene.account]
        user, new = await self.people.bind_phone(
            account.appid, scene.openid, phone,
            link_by_phone=self.settings.link_by_phone, login_only=self.settings.login_only,
        )  # fmt: skip
        await self.scenes.mark_bound(scene_id, user_id=user.id, new=new)
        self.metrics.transitions.labels("REG").inc()
        return {**status_body("REG"), **await self.tokens.issue(user.id, new=new)}

    def _account(self, name: str | None) -> Account:
        if name is None:
            return self.settings.default_account
        account = self.settings.accounts.get(name)
        if account is None:
            raise BadRequest(f"No WeChat account is named {name!r}.", code="unknown_account")
        return account


def status_body(status: str) -> dict[str, Any]:
    return {"status": status, "code": CODES[status]}
