"""Refresh tokens: opaque, rotated, in Redis (SPEC §3; an OIDC client's, §14).

A refresh token is ``<family>.<secret>``: 256 random bits after the id of its *family* (one
login), handed to the client once; Redis only ever sees the token's SHA-256. Using one spends
it and issues the next of the same family in one Lua script, so two concurrent refreshes
cannot both win. A spent token is remembered as spent for the rest of its lifetime:
presenting it again means it leaked (or the client raced itself), and the whole family is
revoked (RFC 9700 §4.14.2)::

    wxpush:rt:{<family>}:<sha256>  hash {family, user, state: live|spent, amr, client, scope}
                                                                    TTL = refresh_token_ttl
    wxpush:rtf:{<family>}     set of the family's live token hashes    deleted on revocation
    wxpush:rtu:<user>:<client>  the families of one person at one OIDC client (for logout)
    wxpush:rtp:<user>         the families of one person anywhere (for their erasure)

A family's keys share its hash tag, so on a Redis Cluster its scripts run on one slot; the
person's indexes are written beside them, one key per command. Tokens issued before families
had tags (no ``.``) keep their old keys, ``wxpush:rt:<sha256>`` and ``wxpush:rtf:<family>``,
and their family keeps them as it rotates, until it ends: nobody is logged out by an upgrade.

A token is live only while its hash is in its family's set, so revoking a family is a
``DEL``. A token of an OIDC client carries that client: it refreshes only there (wxpush's own
only at ``/api/v1/token/refresh``), and a token presented at the wrong place is not spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from wxpush.errors import Unauthorized
from wxpush.infra.pipeline import HotCommands, hot_commands

logger = logging.getLogger(__name__)

_RT_KEYS = "wxpush:rt:"
_RTF_KEYS = "wxpush:rtf:"
_RTU_KEYS = "wxpush:rtu:"
_RTP_KEYS = "wxpush:rtp:"
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

# KEYS: the new token, its family set. ARGV: the token's hash, family, user, ttl, amr, client
# ('' = wxpush's own), scope. A login's first refresh token, on the hot path (a REG frame
# waits for it), in the same round trip as the person's indexes (_INDEX).
_ISSUE = """
redis.call('HSET', KEYS[1], 'family', ARGV[2], 'user', ARGV[3], 'state', 'live', 'amr', ARGV[5],
           'client', ARGV[6], 'scope', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: one of the person's indexes. ARGV: the family, ttl.
_INDEX = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: old token, family set, new token. ARGV: old hash, new hash, family, ttl, the client
# presenting it ('' = wxpush's own API): a token of another client is not spent.
_ROTATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'invalid'} end
if (redis.call('HGET', KEYS[1], 'client') or '') ~= ARGV[5] then return {'invalid'} end
if state ~= 'live' then
  redis.call('DEL', KEYS[2])
  return {'reused'}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return {'invalid'} end
local user = redis.call('HGET', KEYS[1], 'user')
local amr = redis.call('HGET', KEYS[1], 'amr') or ''
local scope = redis.call('HGET', KEYS[1], 'scope') or ''
redis.call('HSET', KEYS[1], 'state', 'spent')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'family', ARGV[3], 'user', user, 'state', 'live', 'amr', amr,
           'client', ARGV[5], 'scope', scope)
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'ok', user, amr, scope}
"""


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """What a refresh token is: whose, of which login and client, and whether it still works."""

    family: str
    user_id: str
    client_id: str | None
    scope: str
    live: bool
    amr: str = ""


class RefreshTokens:
    """The refresh tokens in Redis. ``hot`` (the pipelined connection) carries a login's first
    token and every rotation: many refreshes at once share it instead of queueing for the
    pool's few connections (the token endpoint's throughput, ``bench/oidc.py``)."""

    def __init__(self, redis: Redis, hot: HotCommands | None, ttl: int) -> None:
        self._redis = redis
        self._hot = hot_commands(redis, hot)
        self._ttl = ttl
        self._rotate = self._hot.register_script(_ROTATE)
        self._issue = self._hot.register_script(_ISSUE)
        self._index = self._hot.register_script(_INDEX)

    async def new(
        self, user_id: str, family: str, amr: str, client_id: str | None = None, scope: str = ""
    ) -> str:
        """A new live token of ``family``."""
        token = f"{family}.{secrets.token_urlsafe(32)}"
        keys = _Keys.of(token, family)
        indexes = [_RTP_KEYS + user_id]
        if client_id is not None:
            indexes.append(_user_client_key(user_id, client_id))
        args: list[str | int] = [keys.digest, family, user_id, self._ttl, amr, client_id or "",
                                 scope]  # fmt: skip
        # indexes first: a person's erasure meanwhile finds the family, then ends it
        await asyncio.gather(*(self._index(keys=[i], args=[family, self._ttl]) for i in indexes))
        await self._issue(keys=[keys.token, keys.family], args=args)
        return token

    async def rotate(self, token: str, client_id: str | None) -> tuple[RefreshToken, str]:
        """Spend ``token`` and return what it was with the next token of its family.

        Raises:
            Unauthorized: ``invalid_refresh_token`` (unknown, expired, revoked or another
                client's), or ``refresh_token_reused`` (already spent: the family is revoked).
        """
        family = _family_in(token)
        if family is None:  # a token from before families had tags: its record names it
            found = (await self._hot.hgetall(_Keys.of(token, "").token)).get(b"family")
            if found is None:
                raise _invalid_refresh()
            family = _text(found)
        keys = _Keys.of(token, family)
        new_token = (
            secrets.token_urlsafe(32) if keys.legacy else f"{family}.{secrets.token_urlsafe(32)}"
        )
        new_keys = _Keys.of(new_token, family)
        args: list[str | int] = [keys.digest, new_keys.digest, family, self._ttl, client_id or ""]
        result = await self._rotate(keys=[keys.token, keys.family, new_keys.token], args=args)
        outcome = _text(result[0])
        if outcome == "reused":
            logger.warning("a spent refresh token was presented again; its family is revoked")
            raise Unauthorized(
                "This refresh token was already used; log in again.", code="refresh_token_reused"
            )
        if outcome != "ok":
            raise _invalid_refresh()
        user, amr, scope = (_text(item) for item in result[1:4])
        return RefreshToken(family, user, client_id, scope, True, amr), new_token

    async def describe(self, token: str) -> RefreshToken | None:
        """What ``token`` is (live: unspent and its family not revoked), or ``None``."""
        keys = await self._keys(token)
        if keys is None:
            return None
        raw: dict[Any, Any] = await self._redis.hgetall(keys.token)
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        in_family = await self._redis.sismember(keys.family, keys.digest)
        live = f.get("state") == "live" and bool(in_family)
        client = f.get("client") or None
        return RefreshToken(
            f["family"], f["user"], client, f.get("scope", ""), live, f.get("amr", "")
        )

    async def end_client(self, user_id: str, client_id: str) -> None:
        """Log the person out of one client: every family issued there ends."""
        key = _user_client_key(user_id, client_id)
        families = [_text(f) for f in await self._redis.smembers(key)]
        await self._delete([key, *(k for f in families for k in _family_keys(f))])

    async def end_person(self, user_id: str, client_ids: Iterable[str]) -> None:
        """Every refresh token of the person ends, and their live tokens' records go (their
        erasure); a family being rotated meanwhile ends too, its set being gone."""
        families = [_text(f) for f in await self._redis.smembers(_RTP_KEYS + user_id)]
        records: list[str] = []
        for family in families:
            tagged, legacy = _family_keys(family)
            records += [_Keys.record(family, _text(d)) for d in await self._redis.smembers(tagged)]
            records += [_RT_KEYS + _text(d) for d in await self._redis.smembers(legacy)]
        indexes = [_RTP_KEYS + user_id, *(_user_client_key(user_id, c) for c in client_ids)]
        await self._delete([*records, *(k for f in families for k in _family_keys(f)), *indexes])

    async def family_of(self, token: str) -> str | None:
        """The family of a token, or ``None`` for an unknown one."""
        keys = await self._keys(token)
        family = None if keys is None else await self._redis.hget(keys.token, "family")
        return None if family is None else _text(family)

    async def revoke_family(self, family: str) -> None:
        """End a login: none of its tokens works any more (a family that never existed is not
        an error)."""
        await self._delete(_family_keys(family))

    async def _keys(self, token: str) -> _Keys | None:
        family = _family_in(token)
        if family is not None:
            return _Keys.of(token, family)
        legacy = _Keys.of(token, "")
        found = await self._redis.hget(legacy.token, "family")
        return None if found is None else _Keys.of(token, _text(found))

    async def _delete(self, keys: Iterable[str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)  # one key per command: a Redis Cluster spreads them
            await pipe.execute()


@dataclass(frozen=True, slots=True)
class _Keys:
    """A token's record and its family's set: tagged by the family, or (a token from before
    families had tags) as they were."""

    digest: str
    token: str
    family: str
    legacy: bool

    @staticmethod
    def of(token: str, family: str) -> _Keys:
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        if _family_in(token) is None:
            return _Keys(digest, _RT_KEYS + digest, _RTF_KEYS + family, True)
        return _Keys(digest, _Keys.record(family, digest), _family_keys(family)[0], False)

    @staticmethod
    def record(family: str, digest: str) -> str:
        return f"{_RT_KEYS}{{{family}}}:{digest}"


def _family_in(token: str) -> str | None:
    """The family a token names (``None``: a token from before families had tags, or one
    that cannot be ours)."""
    family, dot, _ = token.partition(".")
    if not dot or not 0 < len(family) <= 64 or not all(c in _URLSAFE for c in family):
        return None
    return family


def _family_keys(family: str) -> tuple[str, str]:
    """A family's set, tagged and as it was before tags."""
    return f"{_RTF_KEYS}{{{family}}}", _RTF_KEYS + family


def new_family() -> str:
    """A fresh refresh-token family id (not a secret: a token of the family is needed to use it)."""
    return secrets.token_urlsafe(16)


def _user_client_key(user_id: str, client_id: str) -> str:
    return f"{_RTU_KEYS}{user_id}:{client_id}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _invalid_refresh() -> Unauthorized:
    return Unauthorized(
        "The refresh token is unknown, expired or revoked.", code="invalid_refresh_token"
    )
