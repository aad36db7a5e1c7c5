"""Passive replies, built with lxml (never string formatting), plain or encrypted.

Text goes into CDATA sections like WeChat's own; text containing ``]]>`` cannot live in
CDATA, and a carriage return in CDATA reaches the reader as a line feed (XML end-of-line
handling), so such text is written as escaped character data instead (``\r`` as ``&#13;``),
which WeChat reads the same.
"""

from __future__ import annotations

import time

from lxml import etree

from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.signature import sign

SUCCESS = b"success"


def _text(value: str) -> str | etree.CDATA:
    return value if "]]>" in value or "\r" in value else etree.CDATA(value)


def _document(fields: list[tuple[str, str | int]]) -> bytes:
    root = etree.Element("xml")
    for tag, value in fields:
        child = etree.SubElement(root, tag)
        child.text = str(value) if isinstance(value, int) else _text(value)
    return bytes(etree.tostring(root, encoding="utf-8", xml_declaration=False))


def text_reply(to_user: str, from_user: str, content: str, *, now: int | None = None) -> bytes:
    """A passive text reply to ``to_user`` (the person's openid) from the account."""
    return _document(
        [
            ("ToUserName", to_user),
            ("FromUserName", from_user),
            ("CreateTime", int(time.time()) if now is None else now),
            ("MsgType", "text"),
            ("Content", content),
        ]
    )


def encrypted_envelope(
    plain: bytes,
    crypto: MessageCrypto,
    token: str,
    *,
    timestamp: str,
    nonce: str,
) -> bytes:
    """Wrap a plaintext reply for safe or compatible mode, signed with ``token``."""
    encrypted = crypto.encrypt(plain)
    return _document(
        [
            ("Encrypt", encrypted),
            ("MsgSignature", sign(token, timestamp, nonce, encrypted)),
            ("TimeStamp", timestamp),
            ("Nonce", nonce),
        ]
    )


def encrypted_request(
    plain: bytes,
    crypto: MessageCrypto,
    token: str,
    *,
    to_user: str,
    timestamp: str,
    nonce: str,
) -> tuple[bytes, str]:
    """Build a safe-mode request body as WeChat sends it; returns ``(body, msg_signature)``.

    Used by the sandbox and by tests that speak WeChat's wire format.
    """
    encrypted = crypto.encrypt(plain)
    body = _document([("ToUserName", to_user), ("Encrypt", encrypted)])
    return body, sign(token, timestamp, nonce, encrypted)
