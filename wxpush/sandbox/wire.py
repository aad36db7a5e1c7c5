"""What WeChat sends to an account's callback: the message XML and the signed request.

The sandbox's phone builds its scans here at run time, and the tests' ``tests/wire.py``
builds every callback they send from the same two steps: :func:`event_xml` /
:func:`text_xml` (the message, in WeChat's field order, CDATA text and bare numbers, built
with lxml so no value can break out), then :func:`callback_request` (the query string signed
with the account's Token and the body plain, encrypted in safe mode, or both in compatible
mode).
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

from lxml import etree

from wxpush.wechat import replies
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.signature import sign

Mode = Literal["plain", "compat", "safe"]
TICKET_EVENTS = frozenset({"subscribe", "SCAN"})  # the events a QR code scan sends


def event_xml(
    event: str,
    event_key: str | None = None,
    *,
    to_user: str,
    openid: str,
    ticket: str | None = None,
    create_time: int | None = None,
) -> bytes:
    """An event from ``openid`` to the account ``to_user``; ``Ticket`` only for a QR scan."""
    fields = [*_head(to_user, openid, create_time, "event"), ("Event", event)]
    if event_key is not None:
        fields.append(("EventKey", event_key))
        if ticket and event in TICKET_EVENTS:
            fields.append(("Ticket", ticket))
    return _document(fields)


def text_xml(
    content: str, *, to_user: str, openid: str, msg_id: int, create_time: int | None = None
) -> bytes:
    """A text message from ``openid`` to the account ``to_user``."""
    fields = _head(to_user, openid, create_time, "text")
    return _document([*fields, ("Content", content), ("MsgId", msg_id)])


def callback_request(
    xml: bytes,
    *,
    token: str,
    openid: str,
    to_user: str,
    mode: Mode = "plain",
    crypto: MessageCrypto | None = None,
    timestamp: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """``(query params, body)`` of the POST WeChat makes to deliver ``xml``.

    ``safe`` and ``compat`` need the account's ``crypto``; ``compat`` sends the plaintext
    fields beside ``Encrypt``, as compatible mode does.
    """
    ts = timestamp or str(int(time.time()))
    nonce = str(secrets.randbelow(10**9))
    params = {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce}
    params["openid"] = openid
    if mode == "plain":
        return params, xml
    if crypto is None:
        raise ValueError(f"{mode} mode needs the account's MessageCrypto")
    body, msg_signature = replies.encrypted_request(
        xml, crypto, token, to_user=to_user, timestamp=ts, nonce=nonce
    )
    if mode == "compat":
        encrypt = body[body.index(b"<Encrypt>") : body.index(b"</xml>")]
        body = xml.replace(b"</xml>", encrypt + b"</xml>")
    params.update({"encrypt_type": "aes", "msg_signature": msg_signature})
    return params, body


def _head(
    to_user: str, openid: str, create_time: int | None, msg_type: str
) -> list[tuple[str, str | int]]:
    created = int(time.time()) if create_time is None else create_time
    return [
        ("ToUserName", to_user), ("FromUserName", openid), ("CreateTime", created),
        ("MsgType", msg_type),
    ]  # fmt: skip


def _document(fields: list[tuple[str, str | int]]) -> bytes:
    """``<xml>`` of ``fields``: numbers bare, text in CDATA (escaped where CDATA cannot be)."""
    root = etree.Element("xml")
    for tag, value in fields:
        child = etree.SubElement(root, tag)
        if isinstance(value, int):
            child.text = str(value)
        else:
            child.text = value if "]]>" in value or "\r" in value else etree.CDATA(value)
    return bytes(etree.tostring(root, encoding="utf-8", xml_declaration=False))
