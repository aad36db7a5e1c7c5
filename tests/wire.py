"""Build callbacks exactly as WeChat sends them: signed query strings, plain or encrypted XML."""

from __future__ import annotations

import base64
import os
import secrets
import time
from typing import Literal

from wxpush.wechat import replies
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.signature import sign

Mode = Literal["plain", "compat", "safe"]

APPID = "wx0123456789abcdef"
TOKEN = "wxpushtesttoken"
OPENID = "oTestOpenid0000000000000001"
ACCOUNT_ID = "gh_0123456789ab"


def new_aes_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()[:43]


def event_xml(
    event: str,
    event_key: str | None = None,
    *,
    openid: str = OPENID,
    create_time: int | None = None,
    ticket: str
    | None = "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIE",
) -> bytes:
    created = int(time.time()) if create_time is None else create_time
    parts = [
        f"<ToUserName><![CDATA[{ACCOUNT_ID}]]></ToUserName>",
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
        f"<CreateTime>{created}</CreateTime>",
        "<MsgType><![CDATA[event]]></MsgType>",
        f"<Event><![CDATA[{event}]]></Event>",
    ]
    if event_key is not None:
        parts.append(f"<EventKey><![CDATA[{event_key}]]></EventKey>")
        if ticket and event in {"subscribe", "SCAN"}:
            parts.append(f"<Ticket><![CDATA[{ticket}]]></Ticket>")
    return ("<xml>" + "".join(parts) + "</xml>").encode()


def text_xml(content: str, *, openid: str = OPENID, msg_id: int = 1234567890123456) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    ).encode()


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
    ts = timestamp or str(int(time.time()))
    nonce = str(secrets.randbelow(10**9))
    params = {
        "signature": sign(token, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "openid": openid,
    }
    if mode == "plain":
        return params, xml
    assert crypto is not None
    body, msg_signature = replies.encrypted_request(
        xml, crypto, token, to_user=ACCOUNT_ID, timestamp=ts, nonce=nonce
    )
    if mode == "compat":  # plaintext fields beside Encrypt, as compatible mode sends
        encrypt = body[body.index(b"<Encrypt>") : body.index(b"</xml>")]
        body = xml.replace(b"</xml>", encrypt + b"</xml>")
    params.update({"encrypt_type": "aes", "msg_signature": msg_signature})
    return params, body
