"""Access tokens (JWT) and refresh tokens (opaque, rotated, in Redis).

Access tokens are ES256 JWTs signed with a P-256 key kept in a PEM file (created on first
start, mode 0600), or HS256 when ``WXPUSH_JWT_SECRET`` is set. :meth:`TokenService.verify`
decodes with a *fixed* algorithm list, so neither ``alg: none`` nor algorithm confusion (an
HMAC keyed with our public key) can pass, and every failure is the same 401. Time comes from
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

import base64
import errno
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis.asyncio import Redis

from wxpush.config.settings import Settings, SettingsError
from wxpush.errors import Unauthorized
from wxpush.infra.pipeline import HotCommands, hot_commands

logger = logging.getLogger(__name__)

KEY_VARIABLE = "WXPUSH_JWT_KEY_FILE"
AMR = ("wechat_mp",)
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash
IAT_LEEWAY = 30  # seconds of clock skew tolerated between the hosts that issue and verify
_REQUIRED = ["exp", "iat", "sub", "iss", "aud", "jti"]
_RT_KEYS = "wxpush:rt:"
_RTF_KEYS = "wxpush:rtf:"

# KEYS: the new token, its family set. ARGV: the token's hash, family, user, ttl. A login's
# first refresh token, in one round trip on the hot path (a REG frame waits for it).
_ISSUE = """
redis.call('HSET', KEYS[1], 'family', ARGV[2], 'user', ARGV[3], 'state', 'live')
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
redis.call('HSET', KEYS[1], 'state', 'spent')
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'family', ARGV[3], 'user', user, 'state', 'live')
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'ok', user}
"""


# --- the signing key --------------------------------------------------------------------------


def load_or_create_signing_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """Load the ES256 key from ``path``, creating it (mode 0600) when the file is absent.

    Several workers may start together: the new file is written under a temporary name and
    hard-linked into place, which fails if another process got there first; we then load
    theirs, so every worker signs with the same key.

    Raises:
        SettingsError: the file cannot be read or written, or is not a P-256 private key.
    """
    path = Path(path)
    if not path.exists():
        try:
            _write_key(path, ec.generate_private_key(ec.SECP256R1()), overwrite=False)
            logger.info("created a new JWT signing key in %s", path)
        except FileExistsError:
            pass  # another worker created it first: use theirs
    return _read_key(path)


def generate_key_file(path: str | Path, *, force: bool = False) -> str:
    """Write a new signing key for ``wxpush keygen`` and return its ``kid``.

    Replacing the key makes every access token issued so far fail verification, so an
    existing file is only overwritten with ``force=True``.

    Raises:
        FileExistsError: the file exists and ``force`` is false.
        SettingsError: the file cannot be written.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(Path(path), key, overwrite=force)
    return _thumbprint(key.public_key())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, overwrite: bool) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created 0600 from the start (O_EXCL: never someone else's file): never readable by others.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and fails if the name exists (unlike rename)
    except FileExistsError as exc:
        raise FileExistsError(errno.EEXIST, "the key file exists", str(path)) from exc
    except OSError as exc:
        raise SettingsError(KEY_VARIABLE, f"cannot write {path}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(KEY_VARIABLE, f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        logger.warning("the JWT signing key %s is readable by other users; chmod 600 it", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        problem = f"{path} is not an unencrypted PEM private key (delete it to create a new one)"
        raise SettingsError(KEY_VARIABLE, problem) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SettingsError(KEY_VARIABLE, f"{path} is not a P-256 (ES256) private key")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    x, y = (_b64(n.to_bytes(32, "big")) for n in (numbers.x, numbers.y))
    return {"crv": "P-256", "kty": "EC", "x": x, "y": y}


def _thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(_public_jwk(public), sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


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
        settings: Settings,
        redis: Redis,
        hot: HotCommands | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``hot`` (default ``redis``) carries :meth:`issue`, which a login's frame waits for."""
        self._settings = settings
        self._redis = redis
        self._clock = clock
        self._rotate = redis.register_script(_ROTATE)
        self._issue = hot_commands(redis, hot).register_script(_ISSUE)
        self._public: ec.EllipticCurvePublicKey | None = None
        self._signing_key: ec.EllipticCurvePrivateKey | bytes
        self._verify_key: ec.EllipticCurvePublicKey | bytes
        self._algorithm: Literal["ES256", "HS256"]
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.encode("utf-8")
            if len(secret) < MIN_SECRET_BYTES:
                raise SettingsError("WXPUSH_JWT_SECRET", "must be at least 32 bytes long")
            self._algorithm, self._signing_key, self._verify_key = "HS256", secret, secret
            self.kid = hashlib.sha256(b"wxpush-kid:" + secret).hexdigest()[:16]
        else:
            key = load_or_create_signing_key(settings.jwt_key_file)
            self._public = key.public_key()
            self._algorithm, self._signing_key, self._verify_key = "ES256", key, self._public
            self.kid = _thumbprint(self._public)

    def jwks(self) -> dict[str, Any]:
        """The public keys for ``/.well-known/jwks.json``; none with HS256 (a secret stays one)."""
        if self._public is None:
            return {"keys": []}
        entry = {**_public_jwk(self._public), "kid": self.kid, "alg": "ES256", "use": "sig"}
        return {"keys": [entry]}

    async def issue(self, user_id: str, *, new: bool, family: str | None = None) -> dict[str, Any]:
        """Start a login: an access token and the first refresh token of a new family.

        ``family`` (from :func:`new_family`) is for a caller that must be able to revoke the
        login before it knows whether this call went through (:meth:`revoke_family`).
        """
        refresh_token = secrets.token_urlsafe(32)
        family = family or new_family()
        digest = _digest(refresh_token)
        ttl = self._settings.refresh_token_ttl
        keys = [_token_key(digest), _family_key(family)]
        await self._issue(keys=keys, args=[digest, family, user_id, ttl])
        return self._pair(user_id, refresh_token, new=new)

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
        family, ttl = _text(family), self._settings.refresh_token_ttl
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
        return self._pair(_text(result[1]), new_token, new=False)

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
            decoded = jwt.decode_complete(
                access_token,
                self._verify_key,
                algorithms=[self._algorithm],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
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
        if header.get("kid") != self.kid:
            raise jwt.InvalidTokenError("unknown kid")
        iat, exp, amr = payload["iat"], payload["exp"], payload.get("amr", [])
        if type(iat) is not int or type(exp) is not int:
            raise jwt.InvalidTokenError("iat and exp must be integers")
        now = self._clock()
        if now >= exp or iat > now + IAT_LEEWAY:
            raise jwt.InvalidTokenError("expired or not yet valid")
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise jwt.InvalidTokenError("amr must be a list of strings")
        return Claims(payload["sub"], payload["jti"], iat, exp, tuple(amr))

    def _pair(self, user_id: str, refresh_token: str, *, new: bool) -> dict[str, Any]:
        return {
            "access_token": self._access_token(user_id),
            "token_type": "Bearer",
            "expires_in": self._settings.access_token_ttl,
            "refresh_token": refresh_token,
            "user": {"id": user_id, "new": new},
        }

    def _access_token(self, user_id: str) -> str:
        now = int(self._clock())
        payload = {
            "iss": self._settings.jwt_issuer,
            "sub": user_id,
            "aud": self._settings.jwt_audience,
            "iat": now,
            "exp": now + self._settings.access_token_ttl,
            "jti": secrets.token_urlsafe(16),
            "amr": list(AMR),
        }
        headers = {"kid": self.kid}
        return jwt.encode(payload, self._signing_key, algorithm=self._algorithm, headers=headers)


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
