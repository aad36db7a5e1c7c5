"""Access tokens (JWT) and refresh tokens (opaque, rotated, in Redis).

Access tokens are JWTs signed by the one :class:`~wxpush.tokens.keys.Signer` (ES256 with a
key file, or HS256 with ``WXPUSH_JWT_SECRET``); :meth:`TokenService.verify` answers every
failure with the same 401. Time comes from
an injectable clock, so ``exp``/``iat`` are checked by us rather than by PyJWT's wall clock.

Refresh tokens are 256 random bits handed to the client once; Redis only ever sees their
SHA-256. Each belongs to a *family* (one login). Using one spends it and issues the next of
the same family in one Lua script, so two concurrent refreshes cannot both win. A spent token
is remembered as spent for the rest of its lifetime: presenting it again means it leaked
(or the client raced itself), and the whole family is revoked (RFC 9700 §4.14.2)::

    wxpush:rt:<sha256>     hash {family, user, state: live|spent}   TTL = refresh_token_ttl
    wxpush:rtf:<family>    set of the family's live token hashes    deleted on revocation

A token is live only while its hash is in its family's set, so revoking a family is a single
``DEL``. Redis errors propagate; the app turns them into 503s.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from redis.asyncio import Redis

from wxpush.config.policy import TokenPolicy
from wxpush.errors import Unauthorized
from wxpush.infra.pipeline import HotCommands, hot_commands
from wxpush.tokens.keys import Signer

logger = logging.getLogger(__name__)

AMR = ("wechat_mp",)
IAT_LEEWAY = 30  # seconds of clock skew tolerated between the hosts that issue and verify
_REQUIRED = ["exp", "iat", "sub", "iss", "aud", "jti"]
_RT_KEYS = "wxpush:rt:"
_RTF_KEYS = "wxpush:rtf:"

# KEYS: the new token, its family set. ARGV: the token's hash, family, user, ttl, amr. A
# login's first refresh token, in one round trip on the hot path (a REG frame waits for it).
_ISSUE = """
redis.call('HSET', KEYS[1], 'family', ARGV[2], 'user', ARGV[3], 'state', 'live', 'amr', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: old token, family set, new token. ARGV: old hash, new hash, family, ttl.
_ROTATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'invalid'} end
if state ~= 'live' then
  redis.call('DEL', KEYS[2])
  return {'reused'}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return {'invalid'} end
local user = redis.call('HGET', KEYS[1], 'user')
local amr = redis.call('HGET', KEYS[1], 'amr') or ''
redis.call('HSET', KEYS[1], 'state', 'spent')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'family', ARGV[3], 'user', user, 'state', 'live', 'amr', amr)
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'ok', user, amr}
"""


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says."""

    user_id: str
    jti: str
    issued_at: int
    expires_at: int
    amr: tuple[str, ...]


class TokenService:
    """Issues, verifies and rotates tokens. Built once per app in the lifespan."""

    def __init__(
        self,
        policy: TokenPolicy,
        redis: Redis,
        hot: HotCommands | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``hot`` (default ``redis``) carries :meth:`issue`, which a login's frame waits for."""
        self._policy = policy
        self._redis = redis
        self._clock = clock
        self._rotate = redis.register_script(_ROTATE)
        self._issue = hot_commands(redis, hot).register_script(_ISSUE)
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
        refresh_token = secrets.token_urlsafe(32)
        family = family or new_family()
        digest = _digest(refresh_token)
        ttl = self._policy.refresh_ttl
        keys = [_token_key(digest), _family_key(family)]
        await self._issue(keys=keys, args=[digest, family, user_id, ttl, amr])
        return self._pair(user_id, refresh_token, new=new, amr=amr)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Spend ``refresh_token`` and return a new pair of the same family.

        Raises:
            Unauthorized: ``invalid_refresh_token`` (unknown, expired or revoked), or
                ``refresh_token_reused`` (already spent: the family is now revoked).
        """
        digest = _digest(refresh_token)
        family = await self._redis.hget(_token_key(digest), "family")
        if family is None:
            raise _invalid_refresh()
        new_token = secrets.token_urlsafe(32)
        new_digest = _digest(new_token)
        family, ttl = _text(family), self._policy.refresh_ttl
        keys = [_token_key(digest), _family_key(family), _token_key(new_digest)]
        args: list[str | int] = [digest, new_digest, family, ttl]
        result = await self._rotate(keys=keys, args=args)
        outcome = _text(result[0])
        if outcome == "reused":
            logger.warning("a spent refresh token was presented again; its family is revoked")
            raise Unauthorized(
                "This refresh token was already used; log in again.", code="refresh_token_reused"
            )
        if outcome != "ok":
            raise _invalid_refresh()
        amr = _text(result[2]) if len(result) > 2 and result[2] else AMR[0]
        return self._pair(_text(result[1]), new_token, new=False, amr=amr)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the family of ``refresh_token``; an unknown token is not an error."""
        family = await self.family_of(refresh_token)
        if family is not None:
            await self.revoke_family(family)

    async def family_of(self, refresh_token: str) -> str | None:
        """The family of a refresh token, or ``None`` for an unknown one."""
        family = await self._redis.hget(_token_key(_digest(refresh_token)), "family")
        return None if family is None else _text(family)

    async def revoke_family(self, family: str) -> None:
        """End a login: none of its refresh tokens works any more (one ``DEL``; a family
        that never existed is not an error)."""
        await self._redis.delete(_family_key(family))

    def verify(self, access_token: str) -> Claims:
        """Check signature, algorithm, ``kid``, audience, issuer and lifetime.

        Raises:
            Unauthorized: ``invalid_token``, whatever the reason (one 401 for every failure,
                so the answer tells an attacker nothing).
        """
        try:
            decoded = self.signer.decode(
                access_token,
                audience=self._policy.audience,
                issuer=self._policy.issuer,
                # exp and iat are checked below against our clock, not PyJWT's.
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
            claims = self._claims(decoded["header"], decoded["payload"])
        except jwt.PyJWTError as exc:
            raise Unauthorized(
                "The access token is missing, invalid or expired.", code="invalid_token"
            ) from exc
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
        return Claims(payload["sub"], payload["jti"], iat, exp, tuple(amr))

    def _pair(self, user_id: str, refresh_token: str, *, new: bool, amr: str) -> dict[str, Any]:
        return {
            "access_token": self._access_token(user_id, amr),
            "token_type": "Bearer",
            "expires_in": self._policy.access_ttl,
            "refresh_token": refresh_token,
            "user": {"id": user_id, "new": new},
        }

    def _access_token(self, user_id: str, amr: str) -> str:
        now = int(self._clock())
        payload = {
            "iss": self._policy.issuer,
            "sub": user_id,
            "aud": self._policy.audience,
            "iat": now,
            "exp": now + self._policy.access_ttl,
            "jti": secrets.token_urlsafe(16),
            "amr": [amr],
        }
        return self.signer.sign(payload)


def new_family() -> str:
    """A fresh refresh-token family id (not a secret: a token of the family is needed to use it)."""
    return secrets.token_urlsafe(16)


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode("utf-8")).hexdigest()


def _token_key(digest: str) -> str:
    return _RT_KEYS + digest


def _family_key(family: str) -> str:
    return _RTF_KEYS + family


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _invalid_refresh() -> Unauthorized:
    return Unauthorized(
        "The refresh token is unknown, expired or revoked.", code="invalid_refresh_token"
    )
