"""The ONE place that calls WeChat over HTTP: the shared access_token, QR codes, the menu.

The access_token lives in Redis (``wxpush:wechat:token:{appid}``, JSON, TTL = its lifetime),
shared by every process. It is fetched under a Redis lock (``SET NX PX``, random value,
compare-and-delete release), so N processes starting together make one fetch while the rest
poll the cache for a few seconds. Near expiry, whoever takes the lock refreshes it while the
others keep using the still-valid token. On errcode 40001/42001/40014 the token is dropped
(only if it is still the cached one), a new one fetched and the call retried exactly once.

``/cgi-bin/stable_token`` is preferred: it does not invalidate the token that other systems of
the same account hold; ``/cgi-bin/token`` is the fallback where it is unavailable. With
``access_token_url`` set, another service owns the token and we only read it from there.

Every non-zero ``errcode`` becomes :class:`WeChatAPIError` with a sentence for people, an
unreachable WeChat :class:`BadGateway`, an unreachable Redis :class:`Unavailable`. Tokens and
secrets are never logged nor put in messages (the request URL carries them: we never show it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx
import redis.asyncio
import redis.exceptions

from wxpush.clients.wechat_answers import checked, decode, json_object, send
from wxpush.config.accounts import Account
from wxpush.errors import BadGateway, Unavailable, WeChatAPIError

if TYPE_CHECKING:  # types-redis makes Redis generic; redis' own inline types do not
    RedisClient: TypeAlias = redis.asyncio.Redis[Any]  # type: ignore[type-arg, unused-ignore]

logger = logging.getLogger(__name__)

REFRESH_AHEAD = 300.0  # WeChat itself renews a stable token in its last 5 minutes
LOCK_MS = 5_000  # a lock whose holder died frees itself; a waiter then fetches
WAIT_SECONDS = 6.0  # the longest a caller waits for another process's fetch
POLL_SECONDS = 0.025
INVALID_TOKEN = frozenset({40001, 40014, 42001})
_STABLE_UNSUPPORTED = frozenset({40066, 48001})  # stable_token itself is not available
_JSON = {"Content-Type": "application/json; charset=utf-8"}
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class QRCode:
    """A temporary QR code: show ``url`` (or the image of ``ticket``) for ``expire_seconds``."""

    ticket: str
    url: str
    expire_seconds: int


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float
    refresh_at: float


class WeChatAPI:
    """WeChat's server API for one account, sharing its access_token through Redis."""

    def __init__(
        self,
        account: Account,
        *,
        http: httpx.AsyncClient,
        redis: RedisClient,
        base_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self._http = http
        self._redis = redis
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._key = f"wxpush:wechat:token:{account.appid}"
        self._lock_key = f"wxpush:wechat:token-lock:{account.appid}"
        self._delete_if_equal = self._redis.register_script(_DELETE_IF_EQUAL)
        self._use_stable = True

    # --- the calls -------------------------------------------------------------------------

    async def create_qrcode(self, scene_str: str, expire_seconds: int) -> QRCode:
        """Create a temporary string-scene QR code (``QR_STR_SCENE``)."""
        scene = {"scene": {"scene_str": scene_str}}
        body = {"expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE"}
        data = await self._api("/cgi-bin/qrcode/create", {**body, "action_info": scene})
        try:
            return QRCode(str(data["ticket"]), str(data["url"]), int(data["expire_seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadGateway("WeChat's QR code answer is malformed") from exc

    async def menu_create(self, menu: Mapping[str, Any]) -> None:
        """Replace the account's custom menu."""
        await self._api("/cgi-bin/menu/create", menu)

    async def menu_get(self) -> dict[str, Any]:
        """The custom menu as WeChat returns it (``{"menu": {...}}``); errcode 46003: none."""
        return await self._api("/cgi-bin/menu/get")

    async def menu_delete(self) -> None:
        """Delete the account's custom menu."""
        await self._api("/cgi-bin/menu/delete")

    async def user_info(self, openid: str) -> dict[str, Any]:
        """The follower's profile (``subscribe``, ``openid``, ``unionid``, …)."""
        return await self._api("/cgi-bin/user/info", openid=openid, lang="zh_CN")

    async def _api(
        self, path: str, body: Mapping[str, Any] | None = None, **params: str
    ) -> dict[str, Any]:
        """GET ``path`` (POST with a ``body``) with the token; on a bad token retry once."""
        token = await self.access_token()
        try:
            return await self._call(path, token, body, params)
        except WeChatAPIError as exc:
            if exc.errcode not in INVALID_TOKEN:
                raise
            logger.warning(
                "WeChat refused %s's access_token (errcode %d); fetching a new one",
                self.account.appid,
                exc.errcode,
            )
            await self._discard(token)
            return await self._call(path, await self._token(stale=token), body, params)

    async def _call(
        self, path: str, token: str, body: Mapping[str, Any] | None, params: Mapping[str, str]
    ) -> dict[str, Any]:
        # WeChat shows \uXXXX escapes literally (in menus, for one), so send UTF-8 as is.
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        response = await self._send(
            "GET" if body is None else "POST",
            self._base + path,
            params={**params, "access_token": token},
            content=content,
            headers={} if body is None else _JSON,
        )
        return checked(path, decode("WeChat", response))

    # --- the access_token ------------------------------------------------------------------

    async def access_token(self) -> str:
        """The account's current access_token, fetched at most once across processes."""
        return await self._token(stale=None)

    async def _token(self, stale: str | None) -> str:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            cached = await self._read()
            if cached is not None and cached.value != stale:
                if self._clock() < cached.refresh_at:
                    return cached.value
                return await self._refresh_ahead(cached)
            fresh = await self._refresh(stale)
            if fresh is not None:
                return fresh
            if time.monotonic() > deadline:
                raise BadGateway("WeChat's access_token was not fetched in time, try again")
            await asyncio.sleep(POLL_SECONDS)

    async def _refresh_ahead(self, cached: _Token) -> str:
        """Renew a token near expiry unless another process is at it; use it meanwhile."""
        try:
            fresh = await self._refresh(stale=None)
        except BadGateway as exc:  # still valid: serve it and try again on the next call
            logger.warning("cannot renew %s's access_token: %s", self.account.appid, exc)
            return cached.value
        return cached.value if fresh is None else fresh

    async def _refresh(self, stale: str | None) -> str | None:
        """Fetch and cache a token under the lock; ``None`` when another process holds it."""
        async with self._lock() as held:
            if not held:
                return None
            cached = await self._read()  # another process may have stored one meanwhile
            if cached and cached.value != stale and self._clock() < cached.refresh_at:
                return cached.value
            fresh = await self._fetch(force=False)
            if fresh.value == stale and self.account.access_token_url is None:
                fresh = await self._fetch(force=True)  # stable_token gave the bad one back
            await self._store(fresh)
            return fresh.value

    async def _fetch(self, *, force: bool) -> _Token:
        if self.account.access_token_url is not None:
            owner = "the access_token service"
            response = await self._send("GET", self.account.access_token_url, owner)
            return self._parse_token(checked("access_token_url", decode(owner, response)))
        if self._use_stable and (token := await self._fetch_stable(force)) is not None:
            return token
        self._use_stable = False
        params = {"grant_type": "client_credential", "appid": self.account.appid}
        params["secret"] = self.account.secret or ""
        response = await self._send("GET", self._base + "/cgi-bin/token", params=params)
        return self._parse_token(checked("/cgi-bin/token", decode("WeChat", response)))

    async def _fetch_stable(self, force: bool) -> _Token | None:
        """A token from stable_token, or ``None`` where that endpoint is not available."""
        body: dict[str, Any] = {"grant_type": "client_credential", "appid": self.account.appid}
        body |= {"secret": self.account.secret or "", "force_refresh": force}
        response = await self._send("POST", self._base + "/cgi-bin/stable_token", json=body)
        if response.status_code not in (200, 404):
            raise BadGateway(f"WeChat answered HTTP {response.status_code}")
        data = json_object(response.content) if response.status_code == 200 else None
        if data is None or data.get("errcode") in _STABLE_UNSUPPORTED:
            logger.warning("no stable_token for %s; using /cgi-bin/token", self.account.appid)
            return None
        return self._parse_token(checked("/cgi-bin/stable_token", data))

    def _parse_token(self, data: Mapping[str, Any]) -> _Token:
        value, expires_in = data.get("access_token"), data.get("expires_in")
        if not (isinstance(value, str) and value and isinstance(expires_in, int)) or (
            expires_in <= 0
        ):
            raise BadGateway("the access_token answer is malformed")
        now = self._clock()  # a short-lived token is renewed at half its life, not always
        return _Token(
            value, now + expires_in, now + expires_in - min(REFRESH_AHEAD, expires_in / 2)
        )

    async def _send(
        self, method: str, url: str, upstream: str = "WeChat", **kwargs: Any
    ) -> httpx.Response:
        return await send(self._http, method, url, upstream, **kwargs)

    # --- Redis -----------------------------------------------------------------------------

    async def _read(self) -> _Token | None:
        async with _redis_errors():
            token = _load(await self._redis.get(self._key))
        return token if token is not None and self._clock() < token.expires_at else None

    async def _store(self, token: _Token) -> None:
        ttl_ms = max(1, int((token.expires_at - self._clock()) * 1000))
        async with _redis_errors():
            await self._redis.set(self._key, json.dumps(dataclasses.asdict(token)), px=ttl_ms)

    async def _discard(self, bad: str) -> None:
        """Drop the cached token only if it is still ``bad`` (another may have renewed it)."""
        async with _redis_errors():
            raw = await self._redis.get(self._key)
            token = _load(raw)
            if raw is not None and token is not None and token.value == bad:
                await self._delete_if_equal(keys=[self._key], args=[raw])

    @asynccontextmanager
    async def _lock(self) -> AsyncIterator[bool]:
        value = secrets.token_hex(16)
        async with _redis_errors():
            held = bool(await self._redis.set(self._lock_key, value, nx=True, px=LOCK_MS))
        try:
            yield held
        finally:
            if held:
                async with _redis_errors():
                    await self._delete_if_equal(keys=[self._lock_key], args=[value])


@asynccontextmanager
async def _redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Unavailable(
            "Redis is not reachable; try again shortly.", code="redis_unavailable"
        ) from exc


def _load(raw: bytes | str | None) -> _Token | None:
    """The cached token, or ``None`` when missing or unreadable (then it is fetched anew)."""
    try:
        data = json.loads(raw or b"")
        return _Token(str(data["value"]), float(data["expires_at"]), float(data["refresh_at"]))
    except (TypeError, ValueError, KeyError):
        return None
