"""WeChat's OAuth doors, sans-HTTP: authorization codes, their exchange, ``sns/userinfo``.

A code is what WeChat hands the site's ``redirect_uri`` once the person confirms (the website
QR code on the phone, or the consent inside WeChat): :meth:`OAuth.issue_code` makes one, as
the sandbox's pages do on a tap and the test fake's ``authorize()`` does for a test. Like
WeChat's, a code lives 300 s and is good once; its exchange gives an access token for that
one person (``sns:``, not the app's ``cgi-bin`` token) that ``sns/userinfo`` accepts.

What it keeps (keys of a :class:`~wxpush.sandbox.state.Store`)::

    code:{code}   {"appid","openid","unionid","scope","snapshot","expires_at","used"}
    sns:{token}   {"appid","openid","unionid","scope","expires_at"}  kept an hour past expiry

Errors are WeChat's, as HTTP 200 JSON: 40002 a grant_type other than authorization_code,
40013 / 40125 a wrong appid / secret, 40029 a code unknown, expired or another app's, 40163
a code used before; for ``sns/userinfo`` 41001 no token, 40001 an unknown one, 42001 an
expired one, 40003 an openid not the token's, 48001 a ``snsapi_base`` token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from wxpush.sandbox.shapes import App, Call, Refused, credentials, parse_record
from wxpush.sandbox.state import Store

CODE_LIFETIME = 300  # seconds a code waits for its exchange (WeChat: 5 minutes)
SNS_LIFETIME = 7200  # seconds the exchange's access token lives
SNS_EXPIRED_KEPT = 3600  # an expired one answers 42001 (not 40001) this long
CODES, GRANTS = "code:", "sns:"
Scope = Literal["snsapi_login", "snsapi_base", "snsapi_userinfo"]
SCOPES: dict[str, tuple[str, ...]] = {
    "website": ("snsapi_login",),
    "service": ("snsapi_base", "snsapi_userinfo"),
}
USERINFO_FIELDS = ("nickname", "sex", "province", "city", "country", "headimgurl", "unionid")


@dataclass(frozen=True)
class _Code:
    appid: str
    openid: str
    unionid: str | None
    scope: str
    snapshot: bool
    expires_at: float
    used: bool = False


@dataclass(frozen=True)
class _Grant:
    appid: str
    openid: str
    unionid: str | None
    scope: str
    expires_at: float


class OAuth:
    """The OAuth side of :class:`~wxpush.sandbox.wechatapi.Platform`, on the same apps, store
    and clock; ``profiles`` adds fields to ``sns/userinfo`` answers (by openid)."""

    def __init__(
        self,
        apps: Mapping[str, App],
        store: Store,
        clock: Callable[[], float],
        profiles: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self.apps, self.store, self.clock, self.profiles = apps, store, clock, profiles

    async def issue_code(
        self,
        appid: str,
        openid: str,
        *,
        unionid: str | None = None,
        scope: Scope,
        snapshot: bool = False,
    ) -> str:
        """A new code for ``openid`` at ``appid``, as WeChat redirects with it after consent.

        ``unionid``: what the exchange reports (``None``: the exchange has none); ``snapshot``:
        the person was on WeChat's snapshot page (the exchange says ``is_snapshotuser: 1``).
        Raises :class:`ValueError` for an app not configured or a scope not of its kind.
        """
        app = self.apps.get(appid)
        if app is None or scope not in SCOPES[app.kind]:
            raise ValueError(f"no {scope} code for the app {appid!r}")
        code = secrets.token_hex(16)
        record = _Code(appid, openid, unionid, scope, snapshot, self.clock() + CODE_LIFETIME)
        await self.store.set(CODES + code, json.dumps(asdict(record)), CODE_LIFETIME)
        return code

    async def access_token(self, call: Call) -> dict[str, Any]:
        """``GET sns/oauth2/access_token``: the code's person, once."""
        if call.params.get("grant_type") != "authorization_code":
            raise Refused(40002)
        app = credentials(self.apps, call.params.get("appid"), call.params.get("secret"))
        code = await self._consume(app, call.params.get("code", ""))
        token = secrets.token_urlsafe(48)
        grant = _Grant(code.appid, code.openid, code.unionid, code.scope,
                       self.clock() + SNS_LIFETIME)  # fmt: skip
        ttl = SNS_LIFETIME + SNS_EXPIRED_KEPT
        await self.store.set(GRANTS + token, json.dumps(asdict(grant)), ttl)
        answer: dict[str, Any] = {
            "access_token": token, "expires_in": SNS_LIFETIME,
            "refresh_token": secrets.token_urlsafe(48), "openid": code.openid,
            "scope": code.scope,
        }  # fmt: skip
        if code.snapshot:
            answer["is_snapshotuser"] = 1
        if code.unionid:
            answer["unionid"] = code.unionid
        return answer

    async def userinfo(self, call: Call) -> dict[str, Any]:
        """``GET sns/userinfo``: the profile of the token's person (``snsapi_userinfo`` and
        ``snsapi_login`` tokens only), with ``profiles[openid]``'s fields of that shape."""
        grant = await self._grant(call.params.get("access_token", ""))
        if call.params.get("openid", "") != grant.openid:
            raise Refused(40003)
        if grant.scope == "snsapi_base":
            raise Refused(48001)
        answer: dict[str, Any] = {
            "openid": grant.openid, "nickname": "微信用户", "sex": 0, "province": "",
            "city": "", "country": "", "headimgurl": "", "privilege": [],
        }  # fmt: skip
        if grant.unionid:
            answer["unionid"] = grant.unionid
        profile = self.profiles.get(grant.openid, {})
        return {**answer, **{k: v for k, v in profile.items() if k in USERINFO_FIELDS}}

    async def _consume(self, app: App, code: str) -> _Code:
        """The code's record, marked used (kept so a second use answers 40163)."""
        raw = await self.store.get(CODES + code) if code else None
        record = None if raw is None else parse_record(_Code, raw)
        left = 0.0 if record is None else record.expires_at - self.clock()
        if record is None or record.appid != app.appid or left <= 0:
            raise Refused(40029)
        if record.used:
            raise Refused(40163)
        await self.store.set(CODES + code, json.dumps(asdict(replace(record, used=True))), left)
        return record

    async def _grant(self, token: str) -> _Grant:
        if not token:
            raise Refused(41001)
        raw = await self.store.get(GRANTS + token)
        grant = None if raw is None else parse_record(_Grant, raw)
        if grant is None or grant.appid not in self.apps:
            raise Refused(40001)
        if self.clock() >= grant.expires_at:
            raise Refused(42001)
        return grant
