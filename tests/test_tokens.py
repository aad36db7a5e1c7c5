"""Tokens: the key file, JWT issue/verify (and the attacks it must refuse), refresh rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis.asyncio import Redis

from wxpush.config.settings import Settings
from wxpush.errors import SettingsError, Unauthorized
from wxpush.tokens.keys import generate_key_file, load_or_create_signing_key
from wxpush.tokens.service import Claims, TokenService

SECRET = "an-hs256-secret-that-is-long-enough-0123456789"


def make_settings(tmp_path: Path, **extra: str) -> Settings:
    env = {
        "WXPUSH_APPID": "wx0123456789abcdef",
        "WXPUSH_APPSECRET": "appsecret",
        "WXPUSH_TOKEN": "tok3n",
        "WXPUSH_JWT_KEY_FILE": str(tmp_path / "key.pem"),
        **extra,
    }
    return Settings.from_env(env, dotenv=None)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, "sha256").digest()


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def unauthorized(service: TokenService, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        service.verify(token)
    assert info.value.status == 401
    assert info.value.code == "invalid_token"
    return info.value


# --- the key file ---------------------------------------------------------------------------


def test_key_file_created_0600_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "key.pem"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_signing_key(path)
    assert first.private_numbers() == second.private_numbers()
    assert not [p for p in path.parent.iterdir() if p.name != "key.pem"]  # no temp file left


def test_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_signing_key(tmp_path / "key.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


def test_workers_starting_together_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = list(pool.map(lambda _: load_or_create_signing_key(path), range(32)))
    assert len({key.private_numbers() for key in keys}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_readable_key_file_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "key.pem"
    generate_key_file(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="wxpush.tokens.keys"):
        load_or_create_signing_key(path)
    assert "chmod 600" in caplog.text
    assert path.read_text() not in caplog.text


async def test_service_keeps_kid_across_restarts(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        settings = make_settings(tmp_path)
        kid = TokenService(settings.token_policy(), redis_client).kid
        assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
        assert TokenService(settings.token_policy(), redis_client).kid == kid


@pytest.mark.parametrize(
    "content",
    [b"garbage", b"", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_corrupt_key_file_is_a_settings_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(SettingsError) as info:
        load_or_create_signing_key(path)
    assert info.value.variable == "WXPUSH_JWT_KEY_FILE"
    assert "WXPUSH_JWT_KEY_FILE" in str(info.value)
    assert path.read_bytes() == content  # never silently replaced


def test_wrong_curve_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SettingsError, match="WXPUSH_JWT_KEY_FILE"):
        load_or_create_signing_key(path)


async def test_generate_key_file(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        path = tmp_path / "key.pem"
        kid = generate_key_file(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert TokenService(make_settings(tmp_path).token_policy(), redis_client).kid == kid
        with pytest.raises(FileExistsError):
            generate_key_file(path)
        assert TokenService(make_settings(tmp_path).token_policy(), redis_client).kid == kid
        new_kid = generate_key_file(path, force=True)
        assert new_kid != kid
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert TokenService(make_settings(tmp_path).token_policy(), redis_client).kid == new_kid


# --- access tokens ----------------------------------------------------------------------------


async def test_access_token_verifies_against_jwks(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        settings = make_settings(
            tmp_path, WXPUSH_JWT_ISSUER="https://id.example", WXPUSH_JWT_AUDIENCE="shop"
        )
        service = TokenService(settings.token_policy(), redis_client)
        pair = await service.issue("user-1", new=True)
        assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token", "user"}
        assert pair["token_type"] == "Bearer"
        assert pair["expires_in"] == 7200
        assert pair["user"] == {"id": "user-1", "new": True}

        [entry] = service.jwks()["keys"]
        assert {k: entry[k] for k in ("kty", "crv", "alg", "use")} == {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
        }
        required = {k: entry[k] for k in ("crv", "kty", "x", "y")}
        canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
        assert entry["kid"] == b64(hashlib.sha256(canonical).digest())  # RFC 7638

        token = pair["access_token"]
        assert jwt.get_unverified_header(token)["kid"] == entry["kid"]
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        claims = jwt.decode(
            token,
            jwt.PyJWK(entry).key,
            algorithms=["ES256"],
            audience="shop",
            issuer="https://id.example",
        )
        assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "jti", "amr"}
        assert claims["sub"] == "user-1"
        assert claims["amr"] == ["wechat_mp"]
        assert claims["exp"] - claims["iat"] == 7200

        verified = service.verify(token)
        assert verified == Claims(
            "user-1", claims["jti"], claims["iat"], claims["exp"], ("wechat_mp",)
        )


async def test_lifetime_and_expiry_follow_the_clock(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        clock = Clock()
        settings = make_settings(tmp_path, WXPUSH_ACCESS_TOKEN_TTL_SECONDS="60")
        service = TokenService(settings.token_policy(), redis_client, clock=clock)
        pair = await service.issue("u", new=False)
        assert pair["expires_in"] == 60
        claims = service.verify(pair["access_token"])
        assert (claims.issued_at, claims.expires_at) == (int(clock.now), int(clock.now) + 60)
        clock.now += 59
        service.verify(pair["access_token"])
        clock.now += 1
        unauthorized(service, pair["access_token"])


async def test_token_from_the_future_is_refused(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        clock = Clock()
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client, clock=clock)
        token = (await service.issue("u", new=False))["access_token"]
        clock.now -= 3600
        unauthorized(service, token)


async def test_hs256_mode(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(
            make_settings(tmp_path, WXPUSH_JWT_SECRET=SECRET).token_policy(), redis_client
        )
        assert service.jwks() == {"keys": []}
        assert not (tmp_path / "key.pem").exists()  # no key file in HS256 mode
        token = (await service.issue("u", new=True))["access_token"]
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "HS256"
        assert header["kid"] and SECRET not in header["kid"]
        decoded = jwt.decode(
            token, SECRET, algorithms=["HS256"], audience="wxpush", issuer="wxpush"
        )
        assert decoded["sub"] == "u"
        assert service.verify(token).user_id == "u"

        es256 = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        unauthorized(es256, token)  # an HS256 token means nothing to an ES256 server
        unauthorized(service, (await es256.issue("u", new=True))["access_token"])


async def test_short_hs256_secret_is_a_settings_error(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, WXPUSH_JWT_SECRET="short")
    async with Redis.from_url(redis_url) as redis_client:
        with pytest.raises(SettingsError, match="WXPUSH_JWT_SECRET"):
            TokenService(settings.token_policy(), redis_client)


async def test_forged_tokens_are_refused(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        clock = Clock()
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client, clock=clock)
        good = (await service.issue("u", new=False))["access_token"]
        payload = jwt.decode(good, options={"verify_signature": False})
        kid = service.kid

        unauthorized(
            service, forge({"alg": "none", "typ": "JWT", "kid": kid}, payload, lambda _: b"")
        )
        unauthorized(service, forge({"alg": "None", "kid": kid}, payload, lambda _: b""))

        # Algorithm confusion: HS256 keyed with the published public key, in its usual encodings.
        public = load_or_create_signing_key(tmp_path / "key.pem").public_key()
        for secret in (
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            json.dumps(service.jwks()["keys"][0]).encode(),
        ):
            header = {"alg": "HS256", "typ": "JWT", "kid": kid}
            unauthorized(service, forge(header, payload, hs256(secret)))

        # Genuinely signed, but for someone else.
        key = load_or_create_signing_key(tmp_path / "key.pem")
        for change in ({"aud": "other"}, {"iss": "other"}, {"exp": int(clock.now) - 1}):
            token = jwt.encode({**payload, **change}, key, algorithm="ES256", headers={"kid": kid})
            unauthorized(service, token)
        for missing in ("exp", "iat", "sub", "iss", "aud", "jti"):
            claims = {k: v for k, v in payload.items() if k != missing}
            unauthorized(service, jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid}))
        unauthorized(service, jwt.encode(payload, key, algorithm="ES256", headers={"kid": "other"}))

        # Tampered: a payload naming another user under the original signature.
        head, _, signature = good.split(".")
        evil = b64(json.dumps({**payload, "sub": "admin"}).encode())
        unauthorized(service, f"{head}.{evil}.{signature}")
        unauthorized(service, good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"))
        for junk in ("", "not-a-jwt", "a.b.c", good + "."):
            unauthorized(service, junk)


# --- refresh tokens ---------------------------------------------------------------------------


async def refresh_error(service: TokenService, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        await service.refresh(token)
    assert info.value.status == 401
    return info.value.code


async def test_refresh_rotates(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        first = await service.issue("user-7", new=True)
        second = await service.refresh(first["refresh_token"])
        assert set(second) == set(first)
        assert second["user"] == {"id": "user-7", "new": False}
        assert second["refresh_token"] != first["refresh_token"]
        assert service.verify(second["access_token"]).user_id == "user-7"
        third = await service.refresh(second["refresh_token"])
        assert third["user"]["id"] == "user-7"


async def test_reuse_revokes_the_family(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        first = await service.issue("u", new=True)
        other = await service.issue("u", new=False)  # another login of the same person
        second = await service.refresh(first["refresh_token"])
        assert await refresh_error(service, first["refresh_token"]) == "refresh_token_reused"
        assert await refresh_error(service, second["refresh_token"]) == "invalid_refresh_token"
        assert await refresh_error(service, first["refresh_token"]) == "refresh_token_reused"
        await service.refresh(other["refresh_token"])  # other families are untouched


async def test_unknown_and_expired_refresh_tokens(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        settings = make_settings(tmp_path, WXPUSH_REFRESH_TOKEN_TTL_SECONDS="100")
        service = TokenService(settings.token_policy(), redis_client)
        assert await refresh_error(service, "nope") == "invalid_refresh_token"
        assert await refresh_error(service, "") == "invalid_refresh_token"
        pair = await service.issue("u", new=True)
        ttls = [await redis_client.ttl(key) async for key in redis_client.scan_iter()]
        assert ttls and all(0 < ttl <= 100 for ttl in ttls)
        await redis_client.flushdb()  # what expiry does, without waiting 100 s
        assert await refresh_error(service, pair["refresh_token"]) == "invalid_refresh_token"


async def test_spent_token_remembered_for_its_remaining_life(
    tmp_path: Path, redis_url: str
) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        first = await service.issue("u", new=True)
        digest = hashlib.sha256(first["refresh_token"].encode()).hexdigest()
        [key] = [k async for k in redis_client.scan_iter() if digest.encode() in k]
        await redis_client.expire(key, 50)
        await service.refresh(first["refresh_token"])
        assert 0 < await redis_client.ttl(key) <= 50  # spending it did not extend its life


async def test_concurrent_refreshes_one_winner(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        pair = await service.issue("u", new=True)
        results = await asyncio.gather(
            *(service.refresh(pair["refresh_token"]) for _ in range(20)), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, dict)]
        losers = [r for r in results if isinstance(r, Unauthorized)]
        assert len(winners) == 1
        assert len(losers) == 19
        assert {e.code for e in losers} == {"refresh_token_reused"}


async def test_logout(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        pair = await service.issue("u", new=True)
        rotated = await service.refresh(pair["refresh_token"])
        await service.logout(rotated["refresh_token"])
        assert await refresh_error(service, rotated["refresh_token"]) == "invalid_refresh_token"
        await service.logout(rotated["refresh_token"])
        await service.logout(pair["refresh_token"])
        await service.logout("never-issued")


async def test_logout_with_an_older_token_revokes_the_current_one(
    tmp_path: Path, redis_url: str
) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        pair = await service.issue("u", new=True)
        rotated = await service.refresh(pair["refresh_token"])
        await service.logout(pair["refresh_token"])
        assert await refresh_error(service, rotated["refresh_token"]) == "invalid_refresh_token"


async def test_a_token_from_before_family_tags_still_works(tmp_path: Path, redis_url: str) -> None:
    """A refresh token of the previous release (no family in it, its keys untagged) rotates
    within its own family, is refused once reused, and ends with its person: an upgrade
    logs nobody out."""
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        old, family = secrets.token_urlsafe(32), "oldfamily"
        digest = hashlib.sha256(old.encode()).hexdigest()
        record = {"family": family, "user": "u-old", "state": "live", "amr": "wx", "client": "",
                  "scope": ""}  # fmt: skip
        await redis_client.hset(f"wxpush:rt:{digest}", mapping=record)
        await redis_client.sadd(f"wxpush:rtf:{family}", digest)
        await redis_client.sadd("wxpush:rtp:u-old", family)
        assert (await service.describe(old)) is not None
        assert await service.family_of(old) == family
        rotated = await service.refresh(old)
        assert rotated["user"]["id"] == "u-old"
        assert "." not in rotated["refresh_token"]  # its family keeps the keys it had
        assert await refresh_error(service, old) == "refresh_token_reused"
        assert await refresh_error(service, rotated["refresh_token"]) == "invalid_refresh_token"
        await redis_client.sadd(f"wxpush:rtf:{family}", digest)  # live again, then erased
        await redis_client.hset(f"wxpush:rt:{digest}", "state", "live")
        await service.end_person("u-old")
        assert await refresh_error(service, old) == "invalid_refresh_token"
        assert not await redis_client.exists(f"wxpush:rt:{digest}", f"wxpush:rtf:{family}")
        assert not await redis_client.exists("wxpush:rtp:u-old")
        new = await service.issue("u-new", new=True)
        family_part, dot, _ = new["refresh_token"].partition(".")
        assert dot and await redis_client.exists(f"wxpush:rtf:{{{family_part}}}")


async def test_refresh_tokens_are_stored_hashed(tmp_path: Path, redis_url: str) -> None:
    async with Redis.from_url(redis_url) as redis_client:
        service = TokenService(make_settings(tmp_path).token_policy(), redis_client)
        first = await service.issue("u", new=True)
        second = await service.refresh(first["refresh_token"])
        third = await service.issue("v", new=True)
        raw = [p["refresh_token"].encode() for p in (first, second, third)]
        keys = [as_bytes(k) async for k in redis_client.scan_iter()]
        assert keys and all(key.startswith(b"wxpush:rt") for key in keys)
        stored: list[bytes] = list(keys)
        for key in keys:
            kind = as_bytes(await redis_client.type(key))
            if kind == b"hash":
                for field, value in (await redis_client.hgetall(key)).items():
                    stored += [as_bytes(field), as_bytes(value)]
            elif kind == b"set":
                stored += [as_bytes(m) for m in await redis_client.smembers(key)]
            else:
                raise AssertionError(f"unexpected {kind!r} at {key!r}")
        dump = b"\n".join(stored)
        assert not [token for token in raw if token in dump]
        digests = [hashlib.sha256(token).hexdigest().encode() for token in raw]
        assert all(digest in dump for digest in digests)


async def test_redis_errors_propagate(tmp_path: Path) -> None:
    import redis.exceptions

    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    service = TokenService(make_settings(tmp_path).token_policy(), client)
    for call in (lambda: service.issue("u", new=True), lambda: service.refresh("x")):
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await call()
        assert type(caught.value) is redis.exceptions.ConnectionError
    await client.aclose()


async def test_rotation_on_the_embedded_store(tmp_path: Path) -> None:
    """``wxpush demo`` runs on fakeredis: the rotation script must work there too."""
    from fakeredis import FakeAsyncRedis

    async with FakeAsyncRedis() as fake:
        service = TokenService(make_settings(tmp_path).token_policy(), fake)
        first = await service.issue("u", new=True)
        second = await service.refresh(first["refresh_token"])
        assert second["user"] == {"id": "u", "new": False}
        assert await refresh_error(service, first["refresh_token"]) == "refresh_token_reused"
        assert await refresh_error(service, second["refresh_token"]) == "invalid_refresh_token"
