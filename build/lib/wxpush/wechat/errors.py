"""Errors of the WeChat protocol layer.

::

    ProtocolError
    ├── SignatureError          signature or msg_signature does not match      → 403
    │   └── StaleTimestampError timestamp outside the accepted window          → 403
    ├── CiphertextError         bad base64, bad length, bad padding, bad frame → 400
    │   └── AppIdMismatchError  the payload names another appid                → 400
    └── XMLError                malformed XML or a required field missing      → 400
        └── ForbiddenDoctypeError  a DOCTYPE (DTD, entities): refused          → 400

Every low-level failure (binascii, struct, UnicodeDecodeError, lxml) is re-raised as one of
these ``from`` the original, so callers only ever catch :class:`ProtocolError`.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Input that does not follow WeChat's protocol."""


class SignatureError(ProtocolError):
    """The request is not signed with the account's token."""


class StaleTimestampError(SignatureError):
    """The signed timestamp is too far from now (a replay, or a badly set clock)."""


class CiphertextError(ProtocolError):
    """The ``Encrypt`` payload cannot be decrypted into a message."""


class AppIdMismatchError(CiphertextError):
    """The decrypted payload belongs to another appid."""


class XMLError(ProtocolError):
    """The XML is malformed or lacks a field WeChat always sends."""


class ForbiddenDoctypeError(XMLError):
    """The XML carries a DOCTYPE; WeChat never sends one, so it is refused outright."""
