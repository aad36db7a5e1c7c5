"""SMS codes that prove a phone number: sent under limits, stored hashed, tried a few times.

Everything lives in Redis, shared by every process:

- ``wxpush:sms:code:{scope}:{phone}`` — a hash ``{digest, left, exp}``: the HMAC of the code
  (never the code), the tries left and the expiry by our clock; the key's TTL cleans up.
  ``scope`` is the scene the code was sent for, so a code proves nothing elsewhere.
- ``wxpush:sms:next:{phone}`` — when the phone may get another code (the resend interval).
- ``wxpush:sms:day:{phone}`` and ``wxpush:sms:ip:{ip}`` — sliding logs (sorted sets of send
  times) for the per-day-per-phone and per-hour-per-IP limits. A sliding log is exact where a
  fixed window would let twice the limit through across a boundary, and the logs stay tiny.

Checking and consuming the limits is one Lua script, and so is a check of a code, so that
concurrent requests can neither exceed a limit nor get more than ``sms_max_tries`` guesses.
A send whose provider fails gives its reservation back: the person may retry at once. A right
code is spent only by :meth:`SmsCodes.consume`, once what it proves has been put to use (a
phone bound): a bind that fails on the way (the database is down) leaves the code as it was.

The digest is an HMAC keyed with the accounts' secrets: a bare hash of a six-digit code falls
to a million guesses, so a copy of Redis alone must not reveal live codes. Codes and full phone
numbers are never logged; the console provider's print of the code is its whole purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from wxpush.config.policy import SmsPolicy
from wxpush.errors import BadRequest, Gone, RateLimited
from wxpush.sms.phone import mask_phone
from wxpush.sms.providers import SmsProvider

logger = logging.getLogger(__name__)

CODE_DIGITS = 6
# A sliding log of sends: admit(log, window ms, limit, now ms, member) records the send and
# answers 0, or answers the ms until the oldest send in the window leaves it.
_ADMIT = """
local function admit(log, window, limit, now, member)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  local n = redis.call('ZCARD', log)
  if n >= limit then
    local freed = redis.call('ZRANGE', log, n - limit, n - limit, 'WITHSCORES')
    return tonumber(freed[2]) + window - now
  end
  redis.call('ZADD', log, now, member)
  redis.call('PEXPIRE', log, window)
  return 0
end
"""

# KEYS: the phone's next, its day log (one hash tag: one slot of a cluster). ARGV: now_ms,
# interval_ms, day limit, member, next. Answers {verdict, ms to wait}; on "ok" the send is
# recorded in both keys.
_RESERVE_PHONE = (
    _ADMIT
    + """
local now = tonumber(ARGV[1])
local next_ok = tonumber(redis.call('GET', KEYS[1]) or '0')
if next_ok > now then return {'interval', next_ok - now} end
local wait = admit(KEYS[2], 86400000, tonumber(ARGV[3]), now, ARGV[4])
if wait > 0 then return {'phone', wait} end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
return {'ok', 0}
"""
)

# KEYS: the ip log. ARGV: now_ms, hour limit, member. Answers as above.
_RESERVE_IP = (
    _ADMIT
    + """
local wait = admit(KEYS[1], 3600000, tonumber(ARGV[2]), tonumber(ARGV[1]), ARGV[3])
if wait > 0 then return {'ip', wait} end
return {'ok', 0}
"""
)

# Undo a phone's reservation (its SMS could not be sent, or the ip was over its limit).
# KEYS as for _RESERVE_PHONE; ARGV: member, next.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"""

# KEYS: the code. ARGV: digest, now_ms, '1' to spend a right code ('0' to keep it). Answers
# {verdict, tries left}; a wrong code costs a try.
_VERIFY = """
local code = redis.call('HMGET', KEYS[1], 'digest', 'left', 'exp')
if not code[1] then return {'none', 0} end
if tonumber(code[3]) <= tonumber(ARGV[2]) then return {'expired', 0} end
if tonumber(code[2]) <= 0 then return {'spent', 0} end
if code[1] == ARGV[1] then
  if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
  return {'ok', 0}
end
return {'wrong', redis.call('HINCRBY', KEYS[1], 'left', -1)}
"""

# KEYS: the code. ARGV: digest. Spends the code only if it is still this one (not a newer
# code sent meanwhile).
_CONSUME = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class SmsCodes:
    """Send and verify one-time codes under the limits of an :class:`SmsPolicy`."""

    def __init__(
        self,
        policy: SmsPolicy,
        redis: Any,
        provider: SmsProvider,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._redis = redis
        self._provider = provider
        self._clock = clock
        self._key = policy.hmac_key
        self._reserve_phone = redis.register_script(_RESERVE_PHONE)
        self._reserve_ip = redis.register_script(_RESERVE_IP)
        self._release = redis.register_script(_RELEASE)
        self._verify = redis.register_script(_VERIFY)
        self._consume = redis.register_script(_CONSUME)

    async def send(self, phone: str, *, ip: str, scope: str) -> int:
        """Send a fresh code to ``phone`` (E.164) for ``scope``; return seconds until a resend.

        Raises :class:`RateLimited` (``Retry-After`` = seconds until allowed) past a limit and
        :class:`BadGateway` when the provider fails, in which case nothing is consumed.
        """
        s = self._policy
        now = self._now_ms()
        member, next_ok = f"{now}:{secrets.token_hex(4)}", str(now + s.interval * 1000)
        # the phone's keys share its hash tag; the ip's are elsewhere on a cluster, so the
        # phone is reserved first and given back when the ip is over its limit
        phone_keys = [f"wxpush:sms:{{{phone}}}:next", f"wxpush:sms:{{{phone}}}:day"]
        ip_keys = [f"wxpush:sms:ip:{ip}"]
        args = [now, s.interval * 1000, s.per_day_per_phone, member, next_ok]
        verdict, wait_ms = await self._reserve_phone(keys=phone_keys, args=args)
        if _text(verdict) == "ok":
            args = [now, s.per_hour_per_ip, member]
            verdict, wait_ms = await self._reserve_ip(keys=ip_keys, args=args)
            if _text(verdict) != "ok":
                await self._release(keys=phone_keys, args=[member, next_ok])
        if _text(verdict) != "ok":
            raise _rate_limited(_text(verdict), math.ceil(int(wait_ms) / 1000))
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        try:
            await self._provider.send(phone, code, s.code_ttl)
        except Exception:
            await self._release(keys=phone_keys, args=[member, next_ok])
            await self._redis.zrem(ip_keys[0], member)
            raise
        await self._store(phone, scope, code, now)
        logger.info("SMS code sent to %s", mask_phone(phone))
        return s.interval

    async def verify(self, phone: str, code: str, *, scope: str) -> None:
        """Accept the code once (:meth:`check`, then spent at once)."""
        await self._try(phone, code, scope, spend=True)

    async def check(self, phone: str, code: str, *, scope: str) -> None:
        """Check the code without spending it; a wrong one costs one of the tries left.

        The caller spends a right code with :meth:`consume` once it has done what the code
        allows; until then the code stays valid (a failure on the way costs the person
        nothing).

        Raises :class:`BadRequest` (``wrong_code``, ``no_code``, ``invalid_code``) or
        :class:`Gone` (``code_spent`` after too many wrong tries, ``code_expired``).
        """
        await self._try(phone, code, scope, spend=False)

    async def consume(self, phone: str, code: str, *, scope: str) -> None:
        """Spend a code that :meth:`check` accepted (if no newer code replaced it)."""
        digest = self._digest(phone, scope, code.strip())
        await self._consume(keys=[_code_key(phone, scope)], args=[digest])

    async def _try(self, phone: str, code: str, scope: str, *, spend: bool) -> None:
        code = code.strip()
        if len(code) != CODE_DIGITS or not (code.isascii() and code.isdigit()):
            raise BadRequest("The code is the 6 digits sent by SMS.", code="invalid_code")
        digest = self._digest(phone, scope, code)
        keys = [_code_key(phone, scope)]
        args = [digest, self._now_ms(), "1" if spend else "0"]
        verdict, left = await self._verify(keys=keys, args=args)
        _check_verdict(_text(verdict), int(left))

    async def _store(self, phone: str, scope: str, code: str, now: int) -> None:
        ttl = self._policy.code_ttl
        fields = {
            "digest": self._digest(phone, scope, code),
            "left": self._policy.max_tries,
            "exp": now + ttl * 1000,
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_code_key(phone, scope))  # a new code replaces the old, tries and all
            pipe.hset(_code_key(phone, scope), mapping=fields)
            pipe.expire(_code_key(phone, scope), ttl)
            await pipe.execute()

    def _digest(self, phone: str, scope: str, code: str) -> str:
        message = f"{scope}\0{phone}\0{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _check_verdict(verdict: str, left: int) -> None:
    if verdict == "ok":
        return
    if verdict == "wrong":
        if left > 0:
            plural = "try" if left == 1 else "tries"
            raise BadRequest(f"The code is wrong; {left} {plural} left.", code="wrong_code")
        raise BadRequest(
            "The code is wrong and no tries are left; ask for a new code.", code="wrong_code"
        )
    if verdict == "spent":
        raise Gone("This code had too many wrong tries; ask for a new one.", code="code_spent")
    if verdict == "expired":
        raise Gone("This code has expired; ask for a new one.", code="code_expired")
    raise BadRequest(
        "No code is waiting for this phone (or it has expired); ask for a new one.",
        code="no_code",
    )


_LIMIT_MESSAGES = {
    "interval": "A code was just sent to this phone; you can ask for another in {wait}.",
    "phone": "This phone has had too many codes in the last 24 hours; try again in {wait}.",
    "ip": "Too many codes were asked for from your network; try again in {wait}.",
}


def _rate_limited(which: str, seconds: int) -> RateLimited:
    seconds = max(1, seconds)
    message = _LIMIT_MESSAGES[which].format(wait=_duration(seconds))
    return RateLimited(message, retry_after=seconds, code="sms_rate_limited")


def _duration(seconds: int) -> str:
    """Seconds in the unit a person would use: 45 s, 12 min, 3 h."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _code_key(phone: str, scope: str) -> str:
    return f"wxpush:sms:code:{scope}:{phone}"
