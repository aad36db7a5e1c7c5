"""WeChat's server API as WeChat behaves, on a small store: the one stand-in for WeChat.

The sandbox (``/sandbox/cgi-bin/*`` and ``/sandbox/sns/*`` on the server's Redis) and the test fake
(``tests/fakewechat.py``, in memory, with counters and scripted failures around it) both
answer through :class:`Platform`, so what a test proves against the fake is what the demo
does. The HTTP side (a request in, a response out) is :mod:`wxpush.sandbox.platform`.

What it keeps (keys of a :class:`~wxpush.sandbox.state.Store`)::

    token:{access_token}  {"appid","expires_at","epoch"}  kept an hour past expiry (→ 42001)
    stable:{appid}        the stable_token of the app
    epoch:{appid}         bumped by invalidate(): every older token answers 40001
    ticket:{ticket}       an IssuedQR, for its expire_seconds
    menu:{appid}          the custom menu

Like WeChat, a bad call is HTTP 200 with ``{"errcode","errmsg"}``: a wrong appid 40013 or
secret 40125, a missing token 41001, an unknown, replaced or invalidated one 40001, an
expired one 42001, a malformed body 47001, bad arguments 40097 (the values and the errcode
table are in :mod:`wxpush.sandbox.shapes`). Each app is an :class:`App` of a kind: a service
account, or an Open Platform website app, which has only the OAuth endpoints (authorization
codes, ``sns/oauth2/access_token``, ``sns/userinfo``: :mod:`wxpush.sandbox.oauth`).
"""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import segno

from wxpush.errors import NotFound
from wxpush.sandbox.oauth import OAuth, Scope
from wxpush.sandbox.shapes import (
    Answer,
    App,
    Call,
    IssuedQR,
    Refused,
    credentials,
    parse_record,
    wechat_error,
    weixin_url,
)
from wxpush.sandbox.state import Store

LIFETIME = 7200  # seconds an access_token lives
RENEW_WINDOW = 300  # stable_token renews in a token's last 5 minutes, as WeChat does
EXPIRED_KEPT = 3600  # an expired token answers 42001 (not 40001) this long
MAX_QR_SECONDS = 2_592_000  # WeChat's cap for temporary QR codes: 30 days
QR_ACTIONS = ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE")
TICKETS = "ticket:"


@dataclass(frozen=True)
class _Token:
    appid: str
    expires_at: float
    epoch: int


class Platform:
    """WeChat's answers for ``apps`` (by appid), with its state in ``store``.

    ``clock`` dates tokens and QR codes; ``qr_url`` makes the URL a QR code encodes (the
    sandbox's phone page); ``profiles`` adds fields to ``user/info`` and ``sns/userinfo``
    answers (by openid); ``unionids`` gives ``user/info`` a person's unionid (by openid;
    ``None``: not bound to an Open Platform account); ``sticky_stable`` makes normal-mode
    ``stable_token`` hand back an invalidated token (the case a client must answer with
    ``force_refresh``). A :class:`Platform` holds no state of its own: make one per request
    when its arguments come from the request.
    """

    def __init__(
        self,
        apps: Mapping[str, App],
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        qr_url: Callable[[str], str] = weixin_url,
        profiles: Mapping[str, Mapping[str, Any]] | None = None,
        unionids: Callable[[str], str | None] = lambda openid: None,
        sticky_stable: bool = False,
    ) -> None:
        self.apps, self.store, self.clock, self.qr_url = apps, store, clock, qr_url
        self.profiles = profiles or {}
        self.unionids, self.sticky_stable = unionids, sticky_stable
        self.oauth = OAuth(apps, store, clock, self.profiles)

    async def answer(self, call: Call) -> Answer:
        """Answer ``call`` as WeChat would (raises :class:`NotFound` for a missing image)."""
        endpoint = ENDPOINTS.get(call.path)
        if endpoint is None or endpoint.method != call.method:
            return Answer({"errcode": 404, "errmsg": "Not Found"}, status=404)
        try:
            reply = await endpoint.handle(self, call)
        except Refused as refused:
            reply = wechat_error(refused.errcode, refused.errmsg)
        return reply if isinstance(reply, Answer) else Answer(reply)

    # --- access tokens ---------------------------------------------------------------------

    async def token(self, call: Call) -> dict[str, Any]:
        """``GET cgi-bin/token``: a new token on every call (older ones stay valid)."""
        if call.params.get("grant_type") != "client_credential":
            raise Refused(40002)
        app = self._app(call.params.get("appid"), call.params.get("secret"))
        return self._grant(*await self._mint(app.appid))

    async def stable_token(self, call: Call) -> dict[str, Any]:
        """``POST cgi-bin/stable_token``: the app's one token, renewed when forced or due."""
        if not isinstance(call.body, dict):
            raise Refused(47001)
        app = self._app(call.body.get("appid"), call.body.get("secret"))
        return await self.stable_grant(app.appid, force=call.body.get("force_refresh") is True)

    async def stable_grant(self, appid: str, *, force: bool = False) -> dict[str, Any]:
        """The stable token of ``appid``: a new one (the old one revoked) if ``force``, if
        there is none, if it was invalidated (unless sticky) or if it is in its last minutes."""
        key = "stable:" + appid
        current = await self.store.get(key)
        record = None if force or current is None else await self._usable(current)
        if current is None or record is None:
            if current is not None:
                await self.store.delete("token:" + current)
            current, record = await self._mint(appid)
            await self.store.set(key, current, LIFETIME + EXPIRED_KEPT)
        return self._grant(current, record)

    async def invalidate(self, appid: str) -> None:
        """Every token of ``appid`` issued so far answers 40001 (as after a secret reset)."""
        epoch = await self._epoch(appid)
        await self.store.set("epoch:" + appid, str(epoch + 1))

    def _app(self, appid: object, secret: object) -> App:
        """A service account's credentials (a website app has no ``cgi-bin`` token: 40013)."""
        app = credentials(self.apps, appid, secret)
        if app.kind != "service":
            raise Refused(40013)
        return app

    async def _mint(self, appid: str) -> tuple[str, _Token]:
        token = secrets.token_urlsafe(48)
        record = _Token(appid, self.clock() + LIFETIME, await self._epoch(appid))
        await self.store.set("token:" + token, json.dumps(asdict(record)), LIFETIME + EXPIRED_KEPT)
        return token, record

    def _grant(self, token: str, record: _Token) -> dict[str, Any]:
        return {"access_token": token, "expires_in": int(record.expires_at - self.clock())}

    async def _token(self, token: str) -> _Token | None:
        raw = await self.store.get("token:" + token)
        return None if raw is None else parse_record(_Token, raw)

    async def _epoch(self, appid: str) -> int:
        return int(await self.store.get("epoch:" + appid) or 0)

    async def _valid(self, record: _Token) -> bool:
        return record.epoch == await self._epoch(record.appid)

    async def _usable(self, token: str) -> _Token | None:
        """The record of a stable token to hand out again; ``None``: time for a new one."""
        record = await self._token(token)
        if record is None or not (self.sticky_stable or await self._valid(record)):
            return None
        return record if record.expires_at - self.clock() > RENEW_WINDOW else None

    async def _caller(self, call: Call) -> App:
        """The app whose ``access_token`` the call carries, or WeChat's refusal."""
        token = call.params.get("access_token", "")
        if not token:
            raise Refused(41001)
        record = await self._token(token)
        app = None if record is None else self.apps.get(record.appid)
        if record is None or app is None or not await self._valid(record):
            raise Refused(40001)
        if self.clock() >= record.expires_at:
            raise Refused(42001)
        return app

    # --- QR codes --------------------------------------------------------------------------

    async def qrcode_create(self, call: Call) -> dict[str, Any]:
        """``POST cgi-bin/qrcode/create``: a ticket, its lifetime and the URL it encodes."""
        app = await self._caller(call)
        action, scene_str, expire = _qr_request(call.body)
        ticket = "gQ" + secrets.token_urlsafe(48)
        qr = IssuedQR(
            ticket, self.qr_url(ticket), scene_str, expire, action, app.appid,
            self.clock() + expire,
        )  # fmt: skip
        await self.store.set(TICKETS + ticket, json.dumps(asdict(qr)), expire)
        return {"ticket": ticket, "expire_seconds": expire, "url": qr.url}

    async def ticket(self, ticket: str) -> IssuedQR | None:
        """The QR code of ``ticket`` (``None``: unknown or expired)."""
        raw = await self.store.get(TICKETS + ticket) if ticket else None
        return None if raw is None else parse_record(IssuedQR, raw)

    async def showqrcode(self, call: Call) -> Answer:
        """``GET cgi-bin/showqrcode``: the QR code's image (a JSON 404 for an unknown one)."""
        qr = await self.ticket(call.params.get("ticket", ""))
        if qr is None:
            raise NotFound("No QR code has this ticket (or it expired).", code="unknown_ticket")
        out = io.BytesIO()
        segno.make(qr.url, error="m").save(out, kind="png", scale=4)
        return Answer(out.getvalue(), media_type="image/png")

    # --- menu and users --------------------------------------------------------------------

    async def menu_create(self, call: Call) -> dict[str, Any]:
        app = await self._caller(call)
        if not isinstance(call.body, dict) or not isinstance(call.body.get("button"), list):
            raise Refused(40016)
        await self.store.set("menu:" + app.appid, json.dumps(call.body))
        return wechat_error(0)

    async def menu_get(self, call: Call) -> dict[str, Any]:
        app = await self._caller(call)
        menu = await self.store.get("menu:" + app.appid)
        if menu is None:
            raise Refused(46003)
        return {"menu": json.loads(menu)}

    async def menu_delete(self, call: Call) -> dict[str, Any]:
        app = await self._caller(call)
        await self.store.delete("menu:" + app.appid)
        return wechat_error(0)

    async def user_info(self, call: Call) -> dict[str, Any]:
        """``GET cgi-bin/user/info``: a subscribed follower, with the person's unionid when
        the platform knows one (plus ``profiles[openid]``)."""
        await self._caller(call)
        openid = call.params.get("openid", "")
        if not openid:
            raise Refused(40003)
        profile = {
            "subscribe": 1, "openid": openid, "language": "zh_CN",
            "subscribe_time": int(self.clock()), "unionid": self.unionids(openid), "remark": "",
            "groupid": 0, "tagid_list": [], "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 0, "qr_scene_str": "",
        }  # fmt: skip
        known = {k: v for k, v in profile.items() if v is not None}
        return {**known, **self.profiles.get(openid, {})}

    # --- the OAuth doors (wxpush.sandbox.oauth) --------------------------------------------

    async def issue_code(
        self,
        appid: str,
        openid: str,
        *,
        unionid: str | None = None,
        scope: Scope,
        snapshot: bool = False,
    ) -> str:
        """A code for ``openid`` at ``appid``, as WeChat gives the ``redirect_uri`` after
        consent (see :meth:`wxpush.sandbox.oauth.OAuth.issue_code`)."""
        return await self.oauth.issue_code(
            appid, openid, unionid=unionid, scope=scope, snapshot=snapshot
        )

    async def sns_access_token(self, call: Call) -> dict[str, Any]:
        return await self.oauth.access_token(call)

    async def sns_userinfo(self, call: Call) -> dict[str, Any]:
        return await self.oauth.userinfo(call)


def _qr_request(body: Any) -> tuple[str, str, int]:
    """``(action_name, scene_str, expire_seconds)`` of a qrcode/create body, or 40097."""
    try:
        action = str(body["action_name"])
        scene = body["action_info"]["scene"]
        scene_str = str(scene.get("scene_str", scene.get("scene_id", "")))
        expire = min(int(body.get("expire_seconds", 60)), MAX_QR_SECONDS)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Refused(40097) from exc
    if action not in QR_ACTIONS:
        raise Refused(40097, "invalid action name")
    if not 1 <= len(scene_str) <= 64 or expire <= 0:
        raise Refused(40097, "invalid scene")
    return action, scene_str, expire


class Endpoint(NamedTuple):
    method: Literal["GET", "POST"]
    handle: Callable[[Platform, Call], Awaitable[Answer | dict[str, Any]]]


ENDPOINTS: dict[str, Endpoint] = {
    "/cgi-bin/token": Endpoint("GET", Platform.token),
    "/cgi-bin/stable_token": Endpoint("POST", Platform.stable_token),
    "/cgi-bin/qrcode/create": Endpoint("POST", Platform.qrcode_create),
    "/cgi-bin/showqrcode": Endpoint("GET", Platform.showqrcode),
    "/cgi-bin/menu/create": Endpoint("POST", Platform.menu_create),
    "/cgi-bin/menu/get": Endpoint("GET", Platform.menu_get),
    "/cgi-bin/menu/delete": Endpoint("GET", Platform.menu_delete),
    "/cgi-bin/user/info": Endpoint("GET", Platform.user_info),
    "/sns/oauth2/access_token": Endpoint("GET", Platform.sns_access_token),
    "/sns/userinfo": Endpoint("GET", Platform.sns_userinfo),
}
"""WeChat's paths, each with its method and handler: the one route table of both fakes."""
