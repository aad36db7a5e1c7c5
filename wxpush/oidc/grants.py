"""``POST /oidc/token``: the ``authorization_code`` and ``refresh_token`` grants (SPEC §14).

The client is authenticated first (:mod:`.clients`). A code is spent before anything else is
looked at (:mod:`.codes`), then checked against the client, the redirect URI and the PKCE
verifier (RFC 7636, S256 by Authlib's comparison); its tokens are minted by the one
:class:`~wxpush.tokens.service.TokenService`, with the ``jti`` and family the spend recorded.
A replayed code revokes what its first use issued. The ``id_token`` is signed by the same
signer as access tokens (its ``kid`` in the JWKS), with ``at_hash`` per OIDC Core §3.1.3.6.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oidc.core.util import create_half_hash

from wxpush.config.clients import Client
from wxpush.errors import Unauthorized
from wxpush.oidc.codes import Codes, Grant
from wxpush.oidc.errors import OAuthError, invalid_grant, invalid_request
from wxpush.tokens.refresh import new_family
from wxpush.tokens.service import ClientGrant, TokenService, new_jti

logger = logging.getLogger(__name__)

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


class TokenEndpoint:
    """The grants of ``/oidc/token`` for an authenticated client."""

    def __init__(self, tokens: TokenService, codes: Codes) -> None:
        self._tokens = tokens
        self._codes = codes

    async def grant(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        """The token response (RFC 6749 §5.1), or an :class:`OAuthError` (§5.2)."""
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self._code(client, form)
        if grant_type == "refresh_token":
            return await self._refresh(client, form)
        if not grant_type:
            raise invalid_request("grant_type is missing.")
        raise OAuthError("unsupported_grant_type", f"The grant type {grant_type!r} is not offered.")

    async def _code(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        code, redirect_uri = form.get("code"), form.get("redirect_uri")
        if not code:
            raise invalid_request("code is missing.")
        if not redirect_uri:
            raise invalid_request("redirect_uri is missing.")
        now = self._tokens.now()
        jti, family = new_jti(), new_family()
        expires_at = now + self._tokens.policy.access_ttl
        spent = await self._codes.spend(code, jti=jti, family=family, expires_at=expires_at)
        if spent is None:
            raise invalid_grant("The code is unknown or expired.")
        grant = spent.grant
        if not spent.first:
            logger.warning("an authorization code was used twice; what it issued is revoked")
            await self._tokens.revoke_family(spent.family)
            await self._tokens.revocations.revoke(grant.user_id, spent.jti, spent.expires_at, now)
            raise invalid_grant("The code was already used; the tokens it gave are revoked.")
        if grant.client_id != client.client_id:
            raise invalid_grant("The code was issued to another client.")
        if grant.redirect_uri != redirect_uri:
            raise invalid_grant("redirect_uri differs from the authorization request's.")
        _check_verifier(grant, form.get("code_verifier"))
        scope = grant.scope
        answer = await self._tokens.issue_client(
            grant.user_id,
            ClientGrant(client.client_id, scope, grant.amr, jti, family,
                        refresh="offline_access" in scope.split()),
        )  # fmt: skip
        answer["id_token"] = self.id_token(grant, answer["access_token"], now)
        return answer

    async def _refresh(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token:
            raise invalid_request("refresh_token is missing.")
        try:
            answer = await self._tokens.refresh(token, client_id=client.client_id)
        except Unauthorized as exc:
            raise invalid_grant(exc.message) from exc
        asked = form.get("scope")
        if asked is not None and not set(asked.split()) <= set(answer["scope"].split()):
            raise OAuthError("invalid_scope", "A refresh cannot widen the scope.")
        return answer

    def id_token(self, grant: Grant, access_token: str, now: int) -> str:
        """The ID token of a login (OIDC Core §2) for the access token it comes with."""
        signer = self._tokens.signer
        payload: dict[str, Any] = {
            "iss": self._tokens.policy.issuer,
            "sub": grant.user_id,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": now,
            "exp": now + self._tokens.policy.access_ttl,
            "auth_time": grant.auth_time,
            "amr": [grant.amr],
            "at_hash": _half_hash(access_token, signer.algorithm),
        }
        if grant.nonce is not None:
            payload["nonce"] = grant.nonce
        return signer.sign(payload)


def _check_verifier(grant: Grant, verifier: str | None) -> None:
    if grant.code_challenge is None:
        if verifier is not None:
            raise invalid_grant("This code was issued without a code_challenge.")
        return
    if verifier is None or not _VERIFIER.fullmatch(verifier):
        raise invalid_grant("code_verifier is missing or malformed.")
    if not compare_s256_code_challenge(verifier, grant.code_challenge):  # type: ignore[no-untyped-call]
        raise invalid_grant("code_verifier does not match the code_challenge.")


def _half_hash(access_token: str, algorithm: str) -> str:
    """``at_hash``: the left half of the token's hash by the signing algorithm's hash."""
    half = create_half_hash(access_token, algorithm)
    if half is None:  # pragma: no cover - the signer's algorithms all have one
        raise ValueError(f"no hash for {algorithm}")
    return half.decode("ascii")
