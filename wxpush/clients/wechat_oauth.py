"""WeChat's OAuth calls: a code exchanged for the person, and the person's unionid.

``sns/oauth2/access_token`` needs the app's secret, not an access_token, so these calls stand
beside :class:`~wxpush.clients.wechat.WeChatAPI` rather than in it: the same base URL, the
same errcode words (:mod:`.wechat_answers`), no token cache. The code and the secret travel
in the query string, as WeChat wants; neither is ever logged (httpx's request log is kept
quiet by the lifespan) nor put in an error's message.
"""

from __future__ import annotations

from typing import Any

import httpx

from wxpush.clients.wechat_answers import checked, decode, send
from wxpush.errors import BadGateway
from wxpush.wechat.oauth import Grant, parse_grant, unionid_of

EXCHANGE = "/sns/oauth2/access_token"
USERINFO = "/sns/userinfo"


class OAuthClient:
    """The OAuth endpoints of WeChat's API at ``base_url`` (``WXPUSH_WECHAT_API_BASE``)."""

    def __init__(self, *, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    async def exchange(self, appid: str, secret: str, code: str) -> Grant:
        """The person a ``code`` stands for (WeChat's codes are single use, 5 minutes).

        Raises:
            WeChatAPIError: WeChat's errcode (40029 bad code, 40163 code used, 40125 bad
                secret, …), a 502 whose message says it in words.
            BadGateway: WeChat unreachable, or its answer malformed.
        """
        params = {"appid": appid, "secret": secret, "code": code}
        data = await self._get(EXCHANGE, {**params, "grant_type": "authorization_code"})
        try:
            return parse_grant(data)
        except ValueError as exc:
            raise BadGateway("WeChat's answer for the login code is malformed") from exc

    async def unionid(self, grant: Grant) -> str | None:
        """The person's unionid from ``sns/userinfo`` (for an exchange that gave none)."""
        params = {"access_token": grant.access_token, "openid": grant.openid, "lang": "zh_CN"}
        return unionid_of(await self._get(USERINFO, params))

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = await send(self._http, "GET", self._base + path, params=params)
        return checked(path, decode("WeChat", response))
