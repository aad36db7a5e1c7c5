"""Build callbacks exactly as WeChat sends them: signed query strings, plain or encrypted XML.

The builders are the sandbox's (:mod:`wxpush.sandbox.wire`), the one place that knows what
WeChat sends; this module gives them the tests' account (:data:`APPID`, :data:`TOKEN`,
:data:`ACCOUNT_ID`) and person (:data:`OPENID`) as defaults.
"""

from __future__ import annotations

import base64
import os

from wxpush.sandbox import wire
from wxpush.sandbox.wire import Mode
from wxpush.wechat.crypto import MessageCrypto

APPID = "wx0123456789abcdef"
TOKEN = "wxpushtesttoken"
OPENID = "oTestOpenid0000000000000001"
ACCOUNT_ID = "gh_0123456789ab"
TICKET = "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIE"


def new_aes_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()[:43]


def event_xml(
    event: str,
    event_key: str | None = None,
    *,
    openid: str = OPENID,
    create_time: int | None = None,
    ticket: str | None = TICKET,
) -> bytes:
    """An event to the tests' account; a QR scan (``subscribe``/``SCAN`` with a key) carries
    ``ticket``."""
    return wire.event_xml(
        event, event_key, to_user=ACCOUNT_ID, openid=openid, ticket=ticket,
        create_time=create_time,
    )  # fmt: skip


def text_xml(content: str, *, openid: str = OPENID, msg_id: int = 1234567890123456) -> bytes:
    return wire.text_xml(content, to_user=ACCOUNT_ID, openid=openid, msg_id=msg_id)


def signed(
    xml: bytes,
    *,
    mode: Mode = "plain",
    token: str = TOKEN,
    crypto: MessageCrypto | None = None,
    timestamp: str | None = None,
    openid: str = OPENID,
) -> tuple[dict[str, str], bytes]:
    """Return ``(query params, body)`` of a POST callback carrying ``xml``."""
    return wire.callback_request(
        xml, token=token, openid=openid, to_user=ACCOUNT_ID, mode=mode, crypto=crypto,
        timestamp=timestamp,
    )  # fmt: skip
