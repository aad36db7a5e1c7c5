"""WeChat's OAuth 2.0 doors, pure: the URLs a person is sent to and the answers that come back.

Two doors end in the same redirect (SPEC §13): the Open Platform **website** login
(``connect/qrconnect``, scope ``snsapi_login``: WeChat's own QR code, confirmed on the phone)
and the service account's **in-WeChat** login (``connect/oauth2/authorize``, scope
``snsapi_base``: a page opened inside WeChat). Either sends the browser to our
``redirect_uri`` with ``code`` and ``state``; the code is exchanged at
``sns/oauth2/access_token`` for the person's ``openid`` (and ``unionid`` when the app is bound
to an Open Platform account). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

RedirectKind = Literal["website", "oauth"]

SCOPES: dict[RedirectKind, str] = {"website": "snsapi_login", "oauth": "snsapi_base"}
PATHS: dict[RedirectKind, str] = {
    "website": "/connect/qrconnect",
    "oauth": "/connect/oauth2/authorize",
}
WECHAT_CONNECT = "https://open.weixin.qq.com"
# WeChat serves its embed script from its static host, not from the connect host.
WECHAT_WXLOGIN_SCRIPT = "https://res.wx.qq.com/connect/zh_CN/htmledition/js/wxLogin.js"


def authorize_url(
    connect_base: str, kind: RedirectKind, appid: str, redirect_uri: str, state: str
) -> str:
    """The WeChat URL that starts a redirect login (WeChat wants its parameters in this
    order and the ``#wechat_redirect`` fragment)."""
    query = urlencode(
        {
            "appid": appid,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": SCOPES[kind],
            "state": state,
        }
    )
    return f"{connect_base.rstrip('/')}{PATHS[kind]}?{query}#wechat_redirect"


def wxlogin_options(appid: str, redirect_uri: str, state: str) -> dict[str, Any]:
    """The options of ``new WxLogin({...})`` (WeChat's embed of the website-login QR code);
    the widget adds the ``id`` of the element to draw into. WeChat's script puts
    ``redirect_uri`` into its frame's URL as given, so it is given URL-encoded, as WeChat's
    documentation asks."""
    return {
        "appid": appid,
        "scope": SCOPES["website"],
        "redirect_uri": quote(redirect_uri, safe=""),
        "state": state,
        "self_redirect": True,
    }


def wxlogin_script(connect_base: str) -> str:
    """Where ``WxLogin.js`` is loaded from: WeChat's static host for WeChat's connect base,
    else the stand-in's own ``/connect/wxLogin.js`` (the sandbox)."""
    base = connect_base.rstrip("/")
    return WECHAT_WXLOGIN_SCRIPT if base == WECHAT_CONNECT else f"{base}/connect/wxLogin.js"


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``sns/oauth2/access_token`` answers for a code: who the person is to this app.

    ``snapshot`` is WeChat's "snapshot page" visitor (``is_snapshotuser=1``): a virtual
    openid that is nobody, never to be stored. ``access_token`` (the person's, for
    ``sns/userinfo``) is kept out of ``repr``.
    """

    openid: str
    unionid: str | None
    scope: str
    snapshot: bool
    access_token: str = field(repr=False, default="")


def parse_grant(data: Mapping[str, Any]) -> Grant:
    """The :class:`Grant` of an exchange answer that carried no errcode.

    Raises:
        ValueError: the answer lacks an openid or carries values of the wrong type.
    """
    openid, unionid = data.get("openid"), data.get("unionid")
    if not isinstance(openid, str) or not openid:
        raise ValueError("no openid")
    if unionid is not None and not isinstance(unionid, str):
        raise ValueError("unionid is not text")
    scope, token = data.get("scope", ""), data.get("access_token", "")
    if not isinstance(scope, str) or not isinstance(token, str):
        raise ValueError("scope or access_token is not text")
    snapshot = data.get("is_snapshotuser", 0) in (1, "1", True)
    return Grant(openid, unionid or None, scope, snapshot, token)


def unionid_of(data: Mapping[str, Any]) -> str | None:
    """The ``unionid`` of a ``user/info`` or ``sns/userinfo`` answer (``None``: not bound)."""
    value = data.get("unionid")
    return value if isinstance(value, str) and value else None
