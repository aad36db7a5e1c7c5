"""wxpush as an OpenID Connect provider (SPEC §14): the pieces behind ``/oidc/*``, together.

The authorization code flow rides on the scene machinery, so every door of §12 works behind
it: ``GET /oidc/authorize`` keeps the checked request (:mod:`.authorize`) and shows the hosted
page, whose widget opens scenes carrying the request's id. When such a scene is claimed —
the same claim-once step that hands wxpush's own tokens to a widget — :meth:`Provider.hand_over`
gives the page a redirect to the client with a code instead (:mod:`.codes`). The token
endpoint is :mod:`.grants`; userinfo, revocation (RFC 7009), introspection (RFC 7662) and
RP-initiated logout are here. Nothing here knows HTTP: the web layer passes parameters in and
turns :class:`~.errors.OAuthError` into RFC 6749 JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from wxpush.config.clients import Client
from wxpush.errors import BadRequest, Gone, Unauthorized
from wxpush.infra.pipeline import HotCommands
from wxpush.oidc.authorize import AuthRequest, Requests
from wxpush.oidc.codes import Codes, Grant
from wxpush.oidc.errors import OAuthError, PageError, invalid_request, invalid_token
from wxpush.oidc.grants import TokenEndpoint
from wxpush.people.audit import NOWHERE, Origin
from wxpush.people.store import People
from wxpush.tokens.service import Claims, TokenService

logger = logging.getLogger(__name__)

KINDS_OF_DOOR = {"auto": ("follow", "oauth"), "follow": ("follow",), "website": ("website",)}


class Provider:
    """The OIDC provider of one server (built once in the lifespan)."""

    def __init__(
        self, clients: Mapping[str, Client], tokens: TokenService, people: People, redis: Any,
        hot: HotCommands | None = None,
    ) -> None:  # fmt: skip
        """``hot``: the pipelined connection, for the commands of a login and of a token."""
        self.clients = clients
        self.tokens = tokens
        self.requests = Requests(redis, hot)
        self.codes = Codes(redis, hot)
        self.endpoint = TokenEndpoint(tokens, self.codes)
        self._people = people

    def metadata(self, base_url: str) -> dict[str, Any]:
        """``/.well-known/openid-configuration`` (OIDC Discovery §3)."""
        base = base_url.rstrip("/")
        return {
            "issuer": self.tokens.policy.issuer,
            "authorization_endpoint": f"{base}/oidc/authorize",
            "token_endpoint": f"{base}/oidc/token",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_endpoint": f"{base}/oidc/revoke",
            "introspection_endpoint": f"{base}/oidc/introspect",
            "end_session_endpoint": f"{base}/oidc/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "phone", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce",
                                 "amr", "at_hash", "phone_number", "phone_number_verified"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.tokens.signer.algorithm],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post", "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post", "none",
            ],
            "introspection_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post",
            ],
            "authorization_response_iss_parameter_supported": True,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }  # fmt: skip

    # -- the hosted page's scenes --------------------------------------------------------------

    async def request_for_scene(self, request_id: str, kind: str) -> AuthRequest:
        """The waiting request a new scene of ``kind`` is opened for.

        Raises:
            Gone: ``oidc_request_expired`` (start again at the site).
            BadRequest: ``kind_unavailable`` when the client's door is not ``kind``.
        """
        request = await self._waiting(request_id)
        if kind not in KINDS_OF_DOOR[request.door]:
            raise BadRequest(f"This client logs in through the {request.door} door.",
                             code="kind_unavailable")  # fmt: skip
        return request

    async def hand_over(
        self, request_id: str, user_id: str, *, amr: str, mark: str, origin: Origin = NOWHERE
    ) -> dict[str, Any]:
        """The claimed scene's person, given to the client: ``{"redirect": …}`` with a code."""
        request = await self._waiting(request_id)
        grant = Grant(
            client_id=request.client_id, redirect_uri=request.redirect_uri, scope=request.scope,
            nonce=request.nonce, code_challenge=request.code_challenge, user_id=user_id,
            amr=amr, auth_time=self.tokens.now(),
        )  # fmt: skip
        code = await self.codes.issue(grant, mark)
        self._people.logins.note(user_id, replace(origin, client_id=request.client_id))
        return {"redirect": self.back_to(request.redirect_uri, {"code": code}, request.state)}

    async def _waiting(self, request_id: str) -> AuthRequest:
        request = await self.requests.get(request_id)
        if request is None:
            raise Gone("This login request has expired; start again from the site.",
                       code="oidc_request_expired")  # fmt: skip
        return request

    async def mark_of(self, redirect: str) -> str | None:
        """A hand-over that reached no one: its code deleted, its claim's mark returned."""
        code = parse_qs(urlsplit(redirect).query).get("code", [""])[-1]
        return await self.codes.take_back(code) if code else None

    def back_to(self, redirect_uri: str, params: Mapping[str, str], state: str | None) -> str:
        """``redirect_uri`` with ``params``, ``state`` and ``iss`` (RFC 9207) added."""
        query = {**params, **({"state": state} if state is not None else {}),
                 "iss": self.tokens.policy.issuer}  # fmt: skip
        return redirect_uri + ("&" if urlsplit(redirect_uri).query else "?") + urlencode(query)

    # -- resource endpoints ------------------------------------------------------------------

    async def claims(self, access_token: str) -> Claims:
        """A verified access token that has not been revoked or logged out (else 401)."""
        try:
            return await self.tokens.verify_live(access_token)
        except Unauthorized as exc:
            raise invalid_token() from exc

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """``{"sub"}``, and the phone with the ``phone`` scope (OIDC Core §5.4)."""
        claims = await self.claims(access_token)
        user = await self._people.get_user(claims.user_id)
        if user is None:
            raise invalid_token("The person of this access token no longer exists.")
        info: dict[str, Any] = {"sub": user.id}
        if "phone" in claims.scope.split() and user.phone:
            info.update(phone_number=user.phone, phone_number_verified=True)
        return info

    async def revoke(self, client: Client, token: str) -> None:
        """RFC 7009: a refresh token's family or an access token of ``client`` ends; anything
        else (unknown, another client's) is ignored, as §2.2 asks."""
        if _is_jwt(token):
            try:
                claims = self.tokens.verify(token)
            except Unauthorized:
                return
            if claims.client_id == client.client_id:
                await self.tokens.revocations.revoke(
                    claims.user_id, claims.jti, claims.expires_at, self.tokens.now()
                )
            return
        refresh = await self.tokens.describe(token)
        if refresh is not None and refresh.client_id == client.client_id:
            await self.tokens.revoke_family(refresh.family)

    async def introspect(self, client: Client, token: str) -> dict[str, Any]:
        """RFC 7662: what ``token`` is, if it is active."""
        if _is_jwt(token):
            try:
                claims = await self.claims(token)
            except OAuthError:
                return {"active": False}
            return {"active": True, "sub": claims.user_id, "client_id": claims.client_id,
                    "exp": claims.expires_at, "iat": claims.issued_at, "scope": claims.scope,
                    "token_type": "Bearer", "iss": self.tokens.policy.issuer,
                    "jti": claims.jti}  # fmt: skip
        refresh = await self.tokens.describe(token)
        if refresh is None or not refresh.live or refresh.client_id != client.client_id:
            return {"active": False}
        return {"active": True, "sub": refresh.user_id, "client_id": refresh.client_id,
                "scope": refresh.scope, "token_type": "refresh_token",
                "iss": self.tokens.policy.issuer}  # fmt: skip

    async def logout(
        self, id_token_hint: str | None, post_logout_redirect_uri: str | None,
        state: str | None, client_id: str | None,
    ) -> str | None:  # fmt: skip
        """RP-initiated logout: the person's refresh tokens at the client end, and their
        access tokens there are refused from now; the URL to send the browser to, if any.

        Raises:
            PageError: ``bad_logout`` (no valid ``id_token_hint``) or
                ``bad_post_logout_redirect_uri``.
        """
        if not id_token_hint:
            raise PageError("bad_logout")
        try:
            decoded = self.tokens.signer.decode(
                id_token_hint, audience=list(self.clients), issuer=self.tokens.policy.issuer,
                options={"require": ["sub", "aud", "iss"], "verify_exp": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise PageError("bad_logout") from exc
        payload = decoded["payload"]
        audience = payload["aud"]
        client = self.clients.get(audience if isinstance(audience, str) else "")
        if client is None or (client_id is not None and client_id != client.client_id):
            raise PageError("bad_logout")
        if post_logout_redirect_uri is not None and (
            post_logout_redirect_uri not in client.post_logout_redirect_uris
        ):
            raise PageError("bad_post_logout_redirect_uri")
        user_id, now = str(payload["sub"]), self.tokens.now()
        await self.tokens.end_client(user_id, client.client_id)
        await self.tokens.revocations.end(user_id, client.client_id, now)
        if post_logout_redirect_uri is None:
            return None
        query = {"state": state} if state is not None else {}
        joiner = "&" if urlsplit(post_logout_redirect_uri).query else "?"
        return post_logout_redirect_uri + (joiner + urlencode(query) if query else "")


def token_param(form: Mapping[str, str]) -> str:
    token = form.get("token")
    if not token:
        raise invalid_request("token is missing.")
    return token


def _is_jwt(token: str) -> bool:
    """An access token (a JWS compact serialization) rather than an opaque refresh token."""
    return token.count(".") == 2
