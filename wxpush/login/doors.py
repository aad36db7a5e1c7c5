"""The doors of a login (SPEC §12, §13): a scene of any kind, and the redirect doors' end.

``follow`` is the service-account QR code (:class:`~wxpush.login.flow.LoginFlow`). The two
redirect doors send the person to WeChat with a one-time ``state`` bound to the scene:
``website`` (the Open Platform's own QR code, confirmed on the phone) and ``oauth`` (a page
opened inside WeChat, which cannot scan its own screen). WeChat sends the browser back to
``/wechat/{name}/oauth/redirect`` with a ``code``; :meth:`Doors.redirected` takes the state,
exchanges the code, and the person arrives exactly as a scan does (:mod:`.arrival`): the
scene moves, is published, and the waiting widget claims the tokens. Any failure leaves the
scene ``LOOP`` with its state given back, so the person may try again until it expires.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wxpush.clients.wechat_oauth import OAuthClient
from wxpush.config.accounts import Account, WebsiteApp
from wxpush.errors import BadRequest, WxpushError
from wxpush.login.arrival import Arrival, UnionidLookup
from wxpush.login.flow import LoginFlow
from wxpush.login.redirect_state import RedirectStates
from wxpush.login.scenes import KINDS, Kind, Opened, Person, Scene
from wxpush.people.audit import Origin
from wxpush.people.schema import OPEN_PROVIDER, PROVIDER
from wxpush.wechat.oauth import authorize_url, unionid_of, wxlogin_options, wxlogin_script

logger = logging.getLogger(__name__)

REDIRECT_SECONDS = 600  # WeChat's codes live 10 minutes: a redirect scene no longer
_CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class Started:
    """A new scene and what its door shows: a QR code (``follow``) or the WeChat URL to go
    to, with the ``WxLogin.js`` embed's options (``website``)."""

    scene: Scene
    authorize_url: str | None = None
    wxlogin: dict[str, Any] | None = None
    wxlogin_script: str | None = None


@dataclass(frozen=True, slots=True)
class Redirected:
    """Where a redirect left its scene (``REG``, ``NOT_REG``; a link scene's ``LINKED`` or
    ``CONFLICT``), and where to send the person (``None``: a page)."""

    status: str
    return_to: str | None


@dataclass(frozen=True, slots=True)
class Doors:
    """Scenes of every kind, and the redirect that ends the ``website`` and ``oauth`` doors."""

    flow: LoginFlow
    arrival: Arrival
    websites: Mapping[str, WebsiteApp]
    states: RedirectStates
    oauth: OAuthClient
    connect_base: str

    async def start(
        self, kind: str | None, name: str | None, *, ip: str, base_url: str,
        return_to: str | None = None, oidc: str | None = None, link: str | None = None,
    ) -> Started:  # fmt: skip
        """A scene of ``kind`` (default ``follow``) for the app ``name``; ``base_url`` is the
        server's public URL (the redirect URI's), ``return_to`` already checked by the caller;
        ``oidc`` an OIDC request's scene, ``link`` a link scene of that user (SPEC §15).

        Raises:
            BadRequest: ``bad_kind``, ``kind_unavailable`` (no app for that door),
                ``unknown_account``.
        """
        door = _kind(kind)
        if door == "follow":
            return Started(await self.flow.create(name, ip=ip, oidc=oidc, link=link))
        appid, name = self._app(door, name)
        await self.flow.limit_scenes(ip)
        ttl = min(self.flow.policy.qr_expire_seconds, REDIRECT_SECONDS)
        scene, state = await self.flow.scenes.create_redirect(
            door, name, ttl, return_to, Opened(oidc, link, ip)
        )
        redirect_uri = f"{base_url.rstrip('/')}/wechat/{name}/oauth/redirect"
        started = Started(scene, authorize_url(self.connect_base, door, appid, redirect_uri, state))
        self.flow.metrics.scenes_created.labels(name).inc()
        if door == "oauth":
            return started
        options = wxlogin_options(appid, redirect_uri, state)
        return Started(scene, started.authorize_url, options, wxlogin_script(self.connect_base))

    async def redirected(self, name: str, code: str | None, state: str) -> Redirected:
        """WeChat's redirect back to ``/wechat/{name}/oauth/redirect``: the person arrives at
        their scene, which is now ``REG`` or ``NOT_REG``.

        Raises:
            BadRequest: ``state_invalid`` (unknown, used or expired state, or another app's),
                ``declined`` (no code: the person said no), ``invalid_code``,
                ``snapshot_user`` (WeChat's snapshot page: nobody to log in).
            WeChatAPIError: WeChat refused the code (40029, 40163, …): a 502.
        """
        scene_id = await self.states.take(state)
        scene = None if scene_id is None else await self.flow.scenes.get(scene_id)
        if scene is not None and scene.account != name:
            await self.states.give_back(state, scene.id)  # not this app's to spend
            raise _state_invalid()
        if scene is None or scene.status != "LOOP":
            raise _state_invalid()
        try:
            status = await self._arrive(scene, code)
        except BaseException:
            await self.states.give_back(state, scene.id)
            raise
        return Redirected(status, scene.return_to)

    async def _arrive(self, scene: Scene, code: str | None) -> str:
        if not code:
            raise BadRequest("The WeChat login was declined.", code="declined")
        if not _CODE.fullmatch(code):
            raise BadRequest("The login code is malformed.", code="invalid_code")
        app = self._credentials(scene)
        grant = await self.oauth.exchange(app.appid, _secret(app), code)
        if grant.snapshot:
            raise BadRequest(
                "WeChat opened this page as a preview; open it in WeChat to log in.",
                code="snapshot_user",
            )
        provider = OPEN_PROVIDER if scene.kind == "website" else PROVIDER
        lookup: UnionidLookup | None = None
        if grant.unionid is None and scene.kind == "website":

            async def lookup() -> str | None:
                return await self.oauth.unionid(grant)

        elif grant.unionid is None and isinstance(app, Account) and app.unionid:
            api = self.flow.wechat[app.name]

            async def lookup() -> str | None:
                return unionid_of(await api.user_info(grant.openid))

        person = Person(provider, app.appid, grant.unionid)
        if scene.link is not None and self.flow.linking is not None:
            moved = await self.flow.linking(
                scene.id, account=scene.account, openid=grant.openid, person=person,
                lookup=lookup,
            )  # fmt: skip
            if moved is None:
                raise _state_invalid()
            return "LINKED" if moved == "REG" else str(moved)
        moved = await self.arrival(
            scene.id, account=scene.account, openid=grant.openid, person=person, lookup=lookup,
            origin=Origin(scene.kind, scene.ip),
        )  # fmt: skip
        if moved is None:  # the scene ended meanwhile
            raise _state_invalid()
        if grant.unionid is not None and moved == "REG":
            await self._remember(person, grant.openid)
        return str(moved)

    async def _remember(self, person: Person, openid: str) -> None:
        assert person.unionid is not None
        try:
            await self.flow.people.remember_unionid(
                person.appid, openid, provider=person.provider, unionid=person.unionid
            )
        except WxpushError:  # the login went through; the unionid is kept next time
            logger.warning("the unionid of a known identity could not be kept")

    def _app(self, door: Kind, name: str | None) -> tuple[str, str]:
        if door == "website":
            app = self._website(name)
            return app.appid, app.name
        if not self.flow.accounts:
            raise _unavailable(door)
        account = self.flow.account(name)
        if account.secret is None:  # its token is another service's: no secret to exchange
            raise _unavailable(door)
        return account.appid, account.name

    def _website(self, name: str | None) -> WebsiteApp:
        if not self.websites:
            raise _unavailable("website")
        if name is None:
            only = next(iter(self.websites.values())) if len(self.websites) == 1 else None
            found = only or self.websites.get("website")
        else:
            found = self.websites.get(name)
        if found is None:
            raise BadRequest(
                "Name the website app to log in with (account).", code="unknown_account"
            )
        return found

    def _credentials(self, scene: Scene) -> Account | WebsiteApp:
        if scene.kind == "website":
            return self.websites[scene.account]
        return self.flow.accounts[scene.account]


def _kind(kind: str | None) -> Kind:
    if kind is None:
        return "follow"
    if kind not in KINDS:
        raise BadRequest(f"kind is one of {', '.join(KINDS)}.", code="bad_kind")
    return kind


def _state_invalid() -> BadRequest:
    return BadRequest("This login link is unknown, used or expired.", code="state_invalid")


def _unavailable(door: str) -> BadRequest:
    return BadRequest(f"The {door} door is not configured on this server.", code="kind_unavailable")


def _secret(app: Account | WebsiteApp) -> str:
    if app.secret is None:  # refused when the scene was made; the settings changed since
        raise _unavailable("oauth")
    return app.secret
