"""Access tokens refused before their ``exp``: revocation is immediate inside wxpush (SPEC §14).

An access token is a JWT that any site can check offline, so a logout cannot unsay it to
them; inside wxpush (``/api/v1/me``, ``/oidc/userinfo``, ``/oidc/introspect``) it is refused
at once. Two kinds of marks, each kept only as long as a token it could refuse lives::

    wxpush:revoked:{<user>}:jti:<jti>        one token (RFC 7009 revocation)
    wxpush:revoked:{<user>}:before:<client>  the person's tokens at a client issued up to
                                             this second (an RP-initiated logout); client
                                             ``*``: every token of the person

A token's marks share the person's hash tag, so one ``MGET`` checks them on a Redis Cluster too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wxpush.tokens.service import Claims

_PREFIX = "wxpush:revoked:"
EVERY_CLIENT = "*"


class Revocations:
    """Marks in Redis that refuse access tokens early; ``ttl`` bounds a token's life."""

    def __init__(self, redis: Any, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl

    async def revoke(self, user_id: str, jti: str, expires_at: int, now: int) -> None:
        """Refuse the token ``jti`` of ``user_id`` from now until its ``exp``."""
        left = expires_at - now
        if left > 0:
            await self._redis.set(_key(user_id, "jti", jti), "1", ex=left)

    async def end(self, user_id: str, client_id: str, now: int) -> None:
        """Refuse every token of ``user_id`` at ``client_id`` (:data:`EVERY_CLIENT`: at all)
        issued up to ``now``."""
        await self._redis.set(_key(user_id, "before", client_id), str(now), ex=self._ttl)

    async def refused(self, claims: Claims) -> bool:
        """Is this verified token revoked, or ended by a logout since it was issued?"""
        client = claims.client_id or ""
        keys = [_key(claims.user_id, "jti", claims.jti), _key(claims.user_id, "before", client),
                _key(claims.user_id, "before", EVERY_CLIENT)]  # fmt: skip
        jti, before_client, before_all = await self._redis.mget(keys)
        if jti is not None:
            return True
        return any(
            mark is not None and claims.issued_at <= int(mark)
            for mark in (before_client, before_all)
        )


def _key(user_id: str, kind: str, what: str) -> str:
    return f"{_PREFIX}{{{user_id}}}:{kind}:{what}"
