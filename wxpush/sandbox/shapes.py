"""The vocabulary of the stand-in WeChat: apps, calls, answers, QR codes and errcodes.

These are the values :class:`~wxpush.sandbox.wechatapi.Platform` takes and gives, with no
HTTP in them: :mod:`wxpush.sandbox.platform` turns requests into :class:`Call` and
:class:`Answer` into responses, for the sandbox and for the test fake alike.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

ERRMSG = {
    -1: "system error",
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40016: "invalid button size",
    40029: "invalid code",
    40097: "invalid args",
    40125: "invalid appsecret",
    40163: "code been used",
    40164: "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist",
    41001: "access_token missing",
    42001: "access_token expired",
    45009: "reach max api daily quota limit",
    46003: "menu no exist",
    47001: "data format error",
    48001: "api unauthorized",
}
Kind = Literal["service", "website"]
T = TypeVar("T")


def wechat_error(errcode: int, errmsg: str | None = None) -> dict[str, Any]:
    """WeChat's error shape, with its ``rid`` suffix (errcode 0 is WeChat's plain success)."""
    if errcode == 0:
        return {"errcode": 0, "errmsg": "ok"}
    text = errmsg or ERRMSG.get(errcode, "error")
    return {"errcode": errcode, "errmsg": f"{text} rid: {secrets.token_hex(6)}"}


def weixin_url(ticket: str) -> str:
    """What a real QR code of WeChat encodes (the test fake's QR codes)."""
    return f"http://weixin.qq.com/q/{secrets.token_urlsafe(16)}"


@dataclass(frozen=True)
class App:
    """One app WeChat knows: its credentials and kind (``secret`` ``None``: never fetches)."""

    appid: str
    secret: str | None
    kind: Kind = "service"


@dataclass(frozen=True)
class Call:
    """One API request: ``body`` is the JSON parsed, ``None`` when empty or not JSON."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class Answer:
    """What WeChat answers: JSON (``body`` a mapping) or bytes of ``media_type``; ``headers``
    carry what a page answer needs, such as the ``Location`` of a redirect."""

    body: Mapping[str, Any] | bytes
    status: int = 200
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedQR:
    """A QR code ``qrcode/create`` issued, as stored under its ticket."""

    ticket: str
    url: str
    scene_str: str
    expire_seconds: int
    action_name: str
    appid: str
    expires_at: float


class Refused(Exception):
    """WeChat refuses the call with an errcode (answered as HTTP 200 JSON)."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        super().__init__(errcode)
        self.errcode, self.errmsg = errcode, errmsg


def credentials(apps: Mapping[str, App], appid: object, secret: object) -> App:
    """The app whose ``appid`` and ``secret`` a call gives, or WeChat's refusal: 40013 for an
    unknown appid, 40125 for a wrong secret (or an app that never fetches)."""
    app = apps.get(appid) if isinstance(appid, str) else None
    if app is None:
        raise Refused(40013)
    given = secret.encode() if isinstance(secret, str) else b""
    if app.secret is None or not secrets.compare_digest(given, app.secret.encode()):
        raise Refused(40125)
    return app


def parse_record(cls: type[T], text: str) -> T | None:
    """A dataclass stored as JSON, or ``None`` for a record this version did not write."""
    try:
        return cls(**json.loads(text))
    except (ValueError, TypeError):  # written by another version of the sandbox
        return None
