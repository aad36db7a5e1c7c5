"""Request signatures of the two SMS vendors, pure functions: Alibaba Cloud's ACS3-HMAC-SHA256
(its "V3" signature) and Tencent Cloud's TC3-HMAC-SHA256.

Both are the same idea — a canonical request (method, path, query, chosen headers, the body's
SHA-256) hashed, then an HMAC-SHA256 over that hash — and differ in the details: Alibaba signs
``host``, ``content-type`` and every ``x-acs-*`` header with the bare AccessKey secret and
joins the Authorization parts with ``,``; Tencent derives a key per day and service
(``"TC3" + key`` → date → service → ``tc3_request``), puts the timestamp and the credential
scope in the string to sign, and joins with ``", "``.

Why our own and not the vendors' SDKs: Tencent's signer is private methods of its client
classes, which bring ``requests``, an ``httpx.AsyncClient`` of their own and a logger that
writes whole request bodies (the code) at DEBUG; Alibaba's ``get_authorization`` is public but
takes a Tea request object, and its packages bring ``requests``, ``aiohttp`` and
``cryptography`` for some forty lines of hashing. These functions are checked against the
worked examples both vendors publish (``tests/test_sms_vendors.py``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

ACS3 = "ACS3-HMAC-SHA256"
TC3 = "TC3-HMAC-SHA256"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def percent_encode(text: str) -> str:
    """RFC 3986, as both vendors want it: only ``A-Z a-z 0-9 - _ . ~`` stay as they are."""
    return quote(text, safe="-_.~")


def canonical_query(query: Mapping[str, str]) -> str:
    """``a=1&b=2``: names sorted, names and values percent-encoded."""
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str], *, lower_values: bool = False) -> tuple[str, str]:
    """The canonical header lines (``name:value\\n`` each, names lowercase and sorted, values
    trimmed, and lowercase too for Tencent) and the signed-header list (``host;x-acs-action``)."""
    lowered = sorted(
        (name.lower(), value.strip().lower() if lower_values else value.strip())
        for name, value in headers.items()
    )
    lines = "".join(f"{name}:{value}\n" for name, value in lowered)
    return lines, ";".join(name for name, _ in lowered)


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body_hash: str,
    *,
    lower_values: bool = False,
) -> tuple[str, str]:
    """The canonical request both signatures hash, and its signed-header list."""
    lines, signed = canonical_headers(headers, lower_values=lower_values)
    uri = quote(path or "/", safe="/-_.~")
    parts = [method.upper(), uri, canonical_query(query), lines, signed, body_hash]
    return "\n".join(parts), signed


def acs3_authorization(
    *,
    access_key_id: str,
    access_key_secret: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body_hash: str,
) -> str:
    """Alibaba Cloud's ``Authorization`` header over ``headers`` (which must hold ``host``,
    ``x-acs-action``, ``x-acs-version``, ``x-acs-date``, ``x-acs-signature-nonce`` and
    ``x-acs-content-sha256`` = ``body_hash``, and ``content-type`` when there is a body)."""
    request, signed = canonical_request(method, path, query, headers, body_hash)
    to_sign = f"{ACS3}\n{sha256_hex(request.encode())}"
    signature = hmac.new(access_key_secret.encode(), to_sign.encode(), hashlib.sha256)
    credential = f"Credential={access_key_id},SignedHeaders={signed}"
    return f"{ACS3} {credential},Signature={signature.hexdigest()}"


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    timestamp: int,
    date: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body_hash: str,
) -> str:
    """Tencent Cloud's ``Authorization`` header over ``headers`` (at least ``content-type``
    and ``host``; their values are signed in lowercase, as the TC3 document says);
    ``date`` is the UTC date (``2019-02-25``) of ``timestamp``."""
    request, signed = canonical_request(method, path, query, headers, body_hash, lower_values=True)
    scope = f"{date}/{service}/tc3_request"
    to_sign = f"{TC3}\n{timestamp}\n{scope}\n{sha256_hex(request.encode())}"
    key = _hmac(("TC3" + secret_key).encode(), date)
    key = _hmac(_hmac(key, service), "tc3_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{TC3} Credential={secret_id}/{scope}, SignedHeaders={signed}, Signature={signature}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
