"""Access tokens (JWT), and the refresh tokens of :mod:`.refresh`, issued together.

Access tokens are JWTs signed by the one :class:`~wxpush.tokens.keys.Signer` (ES256 with a
key file, or HS256 with ``WXPUSH_JWT_SECRET``); :meth:`TokenService.verify` answers every
failure with the same 401. Time comes from an injectable clock, so ``exp``/``iat`` are checked
by us rather than by PyJWT's wall clock. An OIDC client's access token (SPEC §14) has ``aud``
= ``client_id`` and the ``client_id`` and ``scope`` claims; wxpush's own has ``aud`` =
``WXPUSH_JWT_AUDIENCE``. An ``id_token`` has no ``jti``, so it never passes as an access token.
Redis errors propagate; the app turns them into 503s.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from redis.asyncio import Redis

from wxpush.config.policy import TokenPolicy
from wxpush.errors import Unauthorized
from wxpush.infra.pipeline import HotCommands
from wxpush.tokens.keys import Signer
from wxpush.tokens.refresh import RefreshToken, RefreshTokens, new_family
from wxpush.tokens.revocation import EVERY_CLIENT, Revocations

logger = logging.getLogger(__name__)

AMR = ("wechat_mp",)
IAT_LEEWAY = 30  # seconds of clock skew tolerated between the hosts that issue and verify
_REQUIRED = ["exp", "iat", "sub", "iss", "aud", "jti"]


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says."""

    user_id: str
    jti: str
    issued_at: int
    expires_at: int
    amr: tuple[str, ...]
    client_id: str | None = None  # an OIDC client's token (SPEC §14); None: wxpush's own
    scope: str = ""


@dataclass(frozen=True, slots=True)
class ClientGrant:
    """What an OIDC client was granted: its id, the scope, the door (``amr``), and the
    ``jti`` and refresh-token ``family`` chosen before the tokens are (to revoke them by)."""

    client_id: str
    scope: str
    amr: str
    jti: str
    family: str
    refresh: bool  # offline_access was granted


async def end_person(
    redis: Redis, policy: TokenPolicy, user_id: str, *, clients: Iterable[str], now: int
) -> None:
    """End every token of ``user_id`` (their erasure) with no signing key at hand: what
    :meth:`TokenService.end_person` does, for ``wxpush users delete``."""
    await Revocations(redis, policy.access_ttl).end(user_id, EVERY_CLIENT, now)
    await RefreshTokens(redis, None, policy.refresh_ttl).end_person(user_id, tuple(clients))


class TokenService:
    """Issues, verifies and rotates tokens. Built once per app in the lifespan."""

    def __init__(
        self,
        policy: TokenPolicy,
        redis: Redis,
        hot: HotCommands | None = None,
        *,
        clients: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``hot`` (default ``redis``) carries :meth:`issue`, which a login's frame waits for;
        ``clients`` are the OIDC client ids, the other audiences an access token may have."""
        self._policy = policy
        self._clients = tuple(clients)
        self._audiences = [policy.audience, *self._clients]
        self._clock = clock
        self._redis = redis
        self._refresh = RefreshTokens(redis, hot, policy.refresh_ttl)
        self.revocations = Revocations(redis, policy.access_ttl)
        self.signer = Signer(policy)
        self.kid = self.signer.kid

    def jwks(self) -> dict[str, Any]:
        return self.signer.jwks()

    async def issue(
        self, user_id: str, *, new: bool, family: str | None = None, amr: str = AMR[0]
    ) -> dict[str, Any]:
        """Start a login: an access token and the first refresh token of a new family.

        ``family`` (from :func:`new_family`) is for a caller that must be able to revoke the
        login before it knows whether this call went through (:meth:`revoke_family`).
        ``amr`` names the door (SPEC §12: ``wechat_mp``, ``wechat_open``); the family's
        refreshed tokens keep it.
        """
        refresh_token = await self._refresh.new(user_id, family or new_family(), amr)
        return self._pair(user_id, refresh_token, new=new, amr=amr)

    async def issue_client(self, user_id: str, grant: ClientGrant) -> dict[str, Any]:
        """An OIDC client's tokens (RFC 6749 §5.1): the access token with ``grant.jti``, and a
        refresh token of ``grant.family`` when ``offline_access`` was granted."""
        if not grant.refresh:
            return self._client_answer(user_id, grant)
        refresh_token = await self._refresh.new(
            user_id, grant.family, grant.amr, grant.client_id, grant.scope
        )
        return {**self._client_answer(user_id, grant), "refresh_token": refresh_token}

    async def refresh(self, refresh_token: str, *, client_id: str | None = None) -> dict[str, Any]:
        """Spend ``refresh_token`` and return a new pair of the same family; a client's token
        only at that client (``client_id``), and wxpush's own only without one.

        Raises:
            Unauthorized: ``invalid_refresh_token`` (unknown, expired or revoked), or
                ``refresh_token_reused`` (already spent: the family is now revoked).
        """
        token, new_token = await self._refresh.rotate(refresh_token, client_id)
        user, amr = token.user_id, token.amr or AMR[0]
        if client_id is None:
            return self._pair(user, new_token, new=False, amr=amr)
        grant = ClientGrant(client_id, token.scope, amr, new_jti(), token.family, refresh=True)
        return {**self._client_answer(user, grant), "refresh_token": new_token}

    async def describe(self, refresh_token: str) -> RefreshToken | None:
        return await self._refresh.describe(refresh_token)

    async def end_client(self, user_id: str, client_id: str) -> None:
        await self._refresh.end_client(user_id, client_id)

    async def end_person(self, user_id: str) -> None:
        """The person is erased: every refresh token ends and every access token is refused
        inside wxpush at once (a site checking tokens offline sees them until their ``exp``)."""
        await end_person(self._redis, self._policy, user_id, clients=self._clients, now=self.now())

    async def logout(self, refresh_token: str) -> None:
        """Revoke the family of ``refresh_token``; an unknown token is not an error."""
        family = await self.family_of(refresh_token)
        if family is not None:
            await self.revoke_family(family)

    async def family_of(self, refresh_token: str) -> str | None:
        return await self._refresh.family_of(refresh_token)

    async def revoke_family(self, family: str) -> None:
        await self._refresh.revoke_family(family)

    def verify(self, access_token: str) -> Claims:
        """Check signature, algorithm, ``kid``, audience, issuer and lifetime.

        Raises:
            Unauthorized: ``invalid_token``, whatever the reason (one 401 for every failure,
                so the answer tells an attacker nothing).
        """
        try:
            decoded = self.signer.decode(
                access_token,
                audience=self._audiences,
                issuer=self._policy.issuer,
                # exp and iat are checked below against our clock, not PyJWT's.
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
            claims = self._claims(decoded["header"], decoded["payload"])
        except jwt.PyJWTError as exc:
            raise _invalid_token() from exc
        return claims

    async def verify_live(self, access_token: str) -> Claims:
        """:meth:`verify`, and not revoked or logged out since (SPEC §14: immediate inside
        wxpush). Raises :class:`Unauthorized` ``invalid_token`` the same way."""
        claims = self.verify(access_token)
        if await self.revocations.refused(claims):
            raise _invalid_token()
        return claims

    def _claims(self, header: dict[str, Any], payload: dict[str, Any]) -> Claims:
        iat, exp, amr = payload["iat"], payload["exp"], payload.get("amr", [])
        if type(iat) is not int or type(exp) is not int:
            raise jwt.InvalidTokenError("iat and exp must be integers")
        now = self._clock()
        if now >= exp or iat > now + IAT_LEEWAY:
            raise jwt.InvalidTokenError("expired or not yet valid")
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise jwt.InvalidTokenError("amr must be a list of strings")
        client, scope = payload.get("client_id"), payload.get("scope", "")
        if (client is not None and not isinstance(client, str)) or not isinstance(scope, str):
            raise jwt.InvalidTokenError("client_id and scope must be strings")
        if client is None and payload["aud"] != self._policy.audience:
            raise jwt.InvalidTokenError("a client's audience without its client_id")
        return Claims(payload["sub"], payload["jti"], iat, exp, tuple(amr), client, scope)

    def _pair(self, user_id: str, refresh_token: str, *, new: bool, amr: str) -> dict[str, Any]:
        return {
            "access_token": self._access_token(user_id, amr),
            "token_type": "Bearer",
            "expires_in": self._policy.access_ttl,
            "refresh_token": refresh_token,
            "user": {"id": user_id, "new": new},
        }

    def _client_answer(self, user_id: str, grant: ClientGrant) -> dict[str, Any]:
        """An OIDC client's access token, as the token endpoint answers it (RFC 6749 §5.1)."""
        access_token = self._access_token(user_id, grant.amr, grant, jti=grant.jti)
        return {"access_token": access_token, "token_type": "Bearer",
                "expires_in": self._policy.access_ttl, "scope": grant.scope}  # fmt: skip

    def _access_token(
        self, user_id: str, amr: str, grant: ClientGrant | None = None, *, jti: str | None = None
    ) -> str:
        now = int(self._clock())
        payload: dict[str, Any] = {
            "iss": self._policy.issuer,
            "sub": user_id,
            "aud": self._policy.audience if grant is None else grant.client_id,
            "iat": now,
            "exp": now + self._policy.access_ttl,
            "jti": jti or new_jti(),
            "amr": [amr],
        }
        if grant is not None:
            payload["client_id"], payload["scope"] = grant.client_id, grant.scope
        return self.signer.sign(payload)

    def now(self) -> int:
        return int(self._clock())

    @property
    def policy(self) -> TokenPolicy:
        return self._policy


def new_jti() -> str:
    """A fresh access-token id (the handle of its revocation)."""
    return secrets.token_urlsafe(16)


def _invalid_token() -> Unauthorized:
    """The one 401 of every access token refused, whatever the reason."""
    return Unauthorized("The access token is missing, invalid or expired.", code="invalid_token")
