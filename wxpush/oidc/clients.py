"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3).

Three methods, as the discovery document says: ``client_secret_basic`` (HTTP Basic, the id and
secret each form-urlencoded first, §2.3.1), ``client_secret_post`` (``client_id`` and
``client_secret`` in the form) and ``none`` (a public client: its ``client_id`` only, its
proof is PKCE). A request may use one method only; a confidential client must send its
secret, a public client must not send one. Secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from urllib.parse import unquote_plus

from wxpush.config.clients import Client
from wxpush.oidc.errors import invalid_client, invalid_request


def authenticate(
    clients: Mapping[str, Client], authorization: str | None, form: Mapping[str, str]
) -> Client:
    """The client a request comes from, authenticated.

    Raises:
        OAuthError: ``invalid_client`` (401: unknown, wrong or missing secret) or
            ``invalid_request`` (two methods at once).
    """
    basic = _basic(authorization) if authorization else None
    posted_secret = form.get("client_secret")
    if basic is not None and posted_secret is not None:
        raise invalid_request("Authenticate the client one way only (Basic or the form).")
    secret: str | None
    if basic is not None:
        client_id, secret = basic
        if form.get("client_id", client_id) != client_id:
            raise invalid_client("client_id differs from the client authenticated.")
    else:
        client_id, secret = form.get("client_id", ""), posted_secret
    client = clients.get(client_id)
    if client is None:
        raise invalid_client("Unknown client.")
    if client.client_secret is None:
        if secret:
            raise invalid_client("This client is public: it has no secret to send.")
        return client
    if not secret or not hmac.compare_digest(
        secret.encode("utf-8"), client.client_secret.encode("utf-8")
    ):
        raise invalid_client("The client secret is missing or wrong.")
    return client


def _basic(authorization: str) -> tuple[str, str] | None:
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None  # another scheme (a Bearer on revoke) is not a client's credentials
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise invalid_client("The Basic credentials are malformed.") from exc
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise invalid_client("The Basic credentials are malformed.")
    return unquote_plus(client_id), unquote_plus(secret)
