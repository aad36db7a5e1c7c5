"""Authorization codes: random, single use, 60 s, bound to what they were issued for (SPEC §14).

Redis sees only a code's SHA-256. Spending one is one Lua script: the first use marks it
``used`` with the ``jti`` and refresh-token family of the tokens it is about to buy, and
keeps that mark for :data:`USED_SECONDS`; a second use gets those back, so the caller
revokes what the first issued (RFC 6749 §4.1.2)::

    wxpush:oidc:code:<sha256>   hash {grant: JSON, mark, state: live|used, jti, family, exp}
                                TTL = CODE_SECONDS, then USED_SECONDS once used

A code checked against a wrong client, redirect URI or verifier is spent all the same: a
guess costs the guesser the code.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from wxpush.infra.pipeline import HotCommands, hot_commands

CODE_SECONDS = 60
USED_SECONDS = 600
_KEY = "wxpush:oidc:code:"

# KEYS[1] the code. ARGV: the jti and family the tokens will have, their exp, USED_SECONDS.
# Returns {'ok', grant} to the first use, {'used', jti, family, exp, grant} after, or false.
_SPEND = """
local s = redis.call('HMGET', KEYS[1], 'state', 'grant', 'jti', 'family', 'exp')
if not s[1] then return false end
if s[1] == 'used' then return {'used', s[3], s[4], s[5], s[2]} end
redis.call('HSET', KEYS[1], 'state', 'used', 'jti', ARGV[1], 'family', ARGV[2], 'exp', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'ok', s[2]}
"""

# KEYS[1] the code. A live code is deleted and its claim mark returned; a used one stays.
_TAKE_BACK = """
local s = redis.call('HMGET', KEYS[1], 'state', 'mark')
if s[1] ~= 'live' then return false end
redis.call('DEL', KEYS[1])
return s[2]
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code was issued for: the request's bindings and the person who logged in."""

    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    user_id: str
    amr: str
    auth_time: int


@dataclass(frozen=True, slots=True)
class Spent:
    """A code's use: ``first`` (the grant to honour) or a replay (what to revoke)."""

    grant: Grant
    first: bool
    jti: str = ""
    family: str = ""
    expires_at: int = 0


class Codes:
    """The codes in Redis (see the module docstring)."""

    def __init__(self, redis: Any, hot: HotCommands | None = None) -> None:
        """``hot`` (the pipelined connection) carries the spend, the token endpoint's one
        command: concurrent exchanges share it rather than queue for the pool."""
        self._redis = redis
        self._spend = hot_commands(redis, hot).register_script(_SPEND)
        self._take_back = redis.register_script(_TAKE_BACK)

    async def issue(self, grant: Grant, mark: str) -> str:
        """A new code for ``grant``; ``mark`` is the scene claim it was handed over under."""
        code = secrets.token_urlsafe(32)
        fields = {"grant": json.dumps(asdict(grant)), "mark": mark, "state": "live"}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(code), mapping=fields)
            pipe.expire(_key(code), CODE_SECONDS)
            await pipe.execute()
        return code

    async def spend(self, code: str, *, jti: str, family: str, expires_at: int) -> Spent | None:
        """Use ``code`` (``None``: unknown or expired)."""
        if not code or len(code) > 256:
            return None
        result = await self._spend(keys=[_key(code)], args=[jti, family, expires_at, USED_SECONDS])
        if not result:
            return None
        outcome = _text(result[0])
        if outcome == "ok":
            return Spent(_grant(result[1]), first=True)
        used_jti, used_family, exp, grant = (_text(item) for item in result[1:5])
        return Spent(_grant(grant), False, used_jti, used_family, int(exp))

    async def take_back(self, code: str) -> str | None:
        """A code that reached no one: delete it and return the claim ``mark`` it was under
        (``None`` when it is gone or was already used)."""
        mark = await self._take_back(keys=[_key(code)])
        return _text(mark) if mark else None


def _grant(raw: bytes | str) -> Grant:
    return Grant(**json.loads(raw))


def _key(code: str) -> str:
    return _KEY + hashlib.sha256(code.encode("utf-8")).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
