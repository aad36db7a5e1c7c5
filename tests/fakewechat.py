"""A fake WeChat server API on a real loopback port: the sandbox's core, observed and scripted.

Use the ``fake_wechat`` fixture (import it into a test module or a conftest with
``from tests.fakewechat import fake_wechat  # noqa: F401``); it yields a running
:class:`FakeWeChat`. Point the code under test at ``fake.url`` (as ``WXPUSH_WECHAT_API_BASE``
or ``WeChatAPI(base_url=...)``) and build its account with :meth:`FakeWeChat.account` and
its Open Platform website app with :meth:`FakeWeChat.website`.

WeChat's behaviour is not written here: every ``cgi-bin`` and ``sns`` endpoint is answered by
:class:`wxpush.sandbox.wechatapi.Platform`, the core the sandbox runs on Redis, here on a
:class:`~wxpush.sandbox.state.MemoryStore` whose lifetimes follow ``fake.clock``. Tokens live
7200 s; normal-mode ``stable_token`` hands out the current one until its last 5 minutes,
force_refresh a new one (the old one then answers 40001); ``token`` a new one on every call;
``qrcode/create`` answers ``"url": "http://weixin.qq.com/q/…"``; ``sns/oauth2/access_token``
exchanges a code once, within 300 s, for either app. This module adds what only tests need,
around the same routes:

- ``GET /owner/token``: a "token owner" service for WXPUSH_ACCESS_TOKEN_URL,
  ``{"access_token","expires_in"}`` (the stable token; not counted as a fetch).
- Observe: ``token_fetches`` (stable_token + token requests), ``stable_fetches``,
  ``plain_fetches``, ``forced_fetches``, ``owner_reads``, ``calls[path]``, ``requests``
  (every :class:`Seen` request, scripted ones too), :meth:`scene_of`.
- Script: :meth:`fail` (next N answers of a path, or of all: an errcode, an HTTP status or a
  raw body), :meth:`invalidate` (every token issued so far answers 40001), ``sticky_stable``
  (normal-mode stable_token keeps returning an invalidated token, so the client must force a
  refresh), ``users[openid]`` (fields merged into ``user/info`` and ``sns/userinfo``: a
  ``"unionid"`` there is the only unionid ``user/info`` gives, unless ``sandbox_unionids``
  gives every openid the sandbox's), :meth:`authorize` (the code WeChat would hand the
  ``redirect_uri`` after the person consents), ``clock``.

Handlers run on the server's thread; attributes are plain Python values safe to read from tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from tests.conftest import TIMEOUT, free_port, wait_for
from wxpush.config.accounts import Account, WebsiteApp
from wxpush.sandbox.oauth import Scope
from wxpush.sandbox.persons import unionid_of
from wxpush.sandbox.platform import route, routes
from wxpush.sandbox.shapes import Answer, App, Call, IssuedQR, parse_record, wechat_error
from wxpush.sandbox.state import MemoryStore
from wxpush.sandbox.wechatapi import TICKETS, Platform

APPID = "wxfake0123456789"
SECRET = "fakesecret0123456789abcdef012345"
WEBSITE_APPID = "wxfakeweb0123456"
WEBSITE_SECRET = "fakewebsecret0123456789abcdef012"
OWNER = "/owner/token"
T = TypeVar("T")


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    params: dict[str, str]
    body: Any  # the JSON body parsed (None when empty, the text when not JSON)
    raw: bytes


@dataclass
class _Rule:
    path: str
    times: int | None
    errcode: int | None
    status: int
    body: str | None


@dataclass
class FakeWeChat:
    """The fake's observations and scripts; the Starlette app is :meth:`app`."""

    appid: str = APPID
    secret: str = SECRET
    website_appid: str = WEBSITE_APPID
    website_secret: str = WEBSITE_SECRET
    clock: Callable[[], float] = time.time
    sticky_stable: bool = False
    sandbox_unionids: bool = False  # user/info gives every openid the sandbox's unionid
    url: str = ""
    token_fetches: int = 0
    stable_fetches: int = 0
    plain_fetches: int = 0
    forced_fetches: int = 0
    owner_reads: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[Seen] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[_Rule] = field(default_factory=list)
    delays: dict[str, float] = field(default_factory=dict)
    store: MemoryStore = field(init=False)
    _invalidations: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.store = MemoryStore(lambda: self.clock())

    # --- for tests ---------------------------------------------------------------------------

    @property
    def owner_url(self) -> str:
        return f"{self.url}{OWNER}"

    def account(self, **overrides: Any) -> Account:
        """An Account for this fake (``access_token_url=fake.owner_url`` for owner mode)."""
        values: dict[str, Any] = {"name": "default", "appid": self.appid, "secret": self.secret}
        return Account(**{"token": "faketoken", **values, **overrides})

    def website(self, **overrides: Any) -> WebsiteApp:
        """The WebsiteApp of this fake's Open Platform website app (named ``website``)."""
        values = {"name": "website", "appid": self.website_appid, "secret": self.website_secret}
        return WebsiteApp(**{**values, **overrides})

    def authorize(
        self,
        appid: str,
        openid: str,
        *,
        unionid: str | None = None,
        snapshot: bool = False,
        scope: Scope = "snsapi_login",
    ) -> str:
        """The code WeChat hands ``redirect_uri`` once ``openid`` consents at ``appid`` (the
        website app: ``snsapi_login``; the service account: ``snsapi_base`` or
        ``snsapi_userinfo``). It exchanges once, within 300 s of ``clock``, and carries
        ``unionid`` and ``is_snapshotuser`` as given. Safe to call from a test's thread or
        event loop (the memory store never waits)."""
        issued = self.platform().issue_code(
            appid, openid, unionid=unionid, scope=scope, snapshot=snapshot
        )
        return _run_at_once(issued)

    def fail(
        self,
        path: str = "*",
        *,
        errcode: int | None = None,
        status: int = 200,
        body: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next ``times`` requests to ``path`` ("*": any) with an error.

        ``errcode`` gives WeChat's JSON error; otherwise ``status`` with ``body`` (raw text).
        ``times=None`` keeps failing until :meth:`heal`.
        """
        self.rules.append(_Rule(path, times, errcode, status, body))

    def hang(self, path: str, *, seconds: float) -> None:
        """The next request to ``path`` is answered only after ``seconds`` (a slow WeChat)."""
        self.delays[path] = seconds

    def heal(self) -> None:
        self.rules.clear()
        self.delays.clear()

    def invalidate(self) -> None:
        """Every token issued so far now answers 40001 (as after a secret reset).

        Tests call this from their own thread; the core applies it on the server's, before
        it answers the next request (which is when "so far" is observed).
        """
        self._invalidations += 1

    def scene_of(self, ticket_or_url: str) -> str:
        """The ``scene_str`` of a QR code this fake issued, by its ticket or url."""
        for _, raw in self.store.items(TICKETS):
            qr = parse_record(IssuedQR, raw)
            if qr is not None and ticket_or_url in (qr.ticket, qr.url):
                return qr.scene_str
        raise KeyError(ticket_or_url)

    def platform(self, *, sticky_stable: bool | None = None) -> Platform:
        """The core as this fake runs it: one app, the memory store, the fake's clock."""
        sticky = self.sticky_stable if sticky_stable is None else sticky_stable
        apps = {
            self.appid: App(self.appid, self.secret),
            self.website_appid: App(self.website_appid, self.website_secret, "website"),
        }
        return Platform(
            apps, self.store, clock=self.clock, profiles=self.users, sticky_stable=sticky,
            unionids=unionid_of if self.sandbox_unionids else lambda openid: None,
        )  # fmt: skip

    @contextmanager
    def running(self) -> Iterator[FakeWeChat]:
        """Serve on a free 127.0.0.1 port in a background thread until the block ends."""
        port = free_port()
        config = uvicorn.Config(
            self.app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="fake-wechat", daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started)
            self.url = f"http://127.0.0.1:{port}"
            yield self
        finally:
            server.should_exit = True
            thread.join(TIMEOUT)

    # --- the app -----------------------------------------------------------------------------

    def app(self) -> Starlette:
        """WeChat's routes (the sandbox's) and the owner's, all through :meth:`_handle`."""
        return Starlette(routes=[*routes(self._handle), route(OWNER, "GET", self._handle)])

    async def _handle(self, request: Request, call: Call) -> Answer:
        raw = await request.body()
        self.calls[call.path] += 1
        self.requests.append(Seen(call.method, call.path, dict(call.params), _seen(raw), raw))
        self._count(call)
        delay = self.delays.pop(call.path, None)
        if delay is not None:
            await asyncio.sleep(delay)
        scripted = self._scripted(call.path)
        if scripted is not None:
            return scripted
        while self._invalidations:
            self._invalidations -= 1
            await self.platform().invalidate(self.appid)
        if call.path == OWNER:
            return Answer(await self.platform(sticky_stable=False).stable_grant(self.appid))
        return await self.platform().answer(call)

    def _count(self, call: Call) -> None:
        """Every request counts, scripted failures too."""
        stable, plain = call.path == "/cgi-bin/stable_token", call.path == "/cgi-bin/token"
        self.token_fetches += stable or plain
        self.stable_fetches += stable
        self.plain_fetches += plain
        forced = isinstance(call.body, dict) and call.body.get("force_refresh") is True
        self.forced_fetches += stable and forced
        self.owner_reads += call.path == OWNER

    def _scripted(self, path: str) -> Answer | None:
        for rule in self.rules:
            if rule.path in ("*", path) and rule.times != 0:
                if rule.times is not None:
                    rule.times -= 1
                if rule.errcode is not None:
                    return Answer(wechat_error(rule.errcode))
                body = (rule.body or "").encode()
                return Answer(body, rule.status, media_type="text/html")
        return None


def _run_at_once(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (the core on the memory store), run
    here and now: no event loop needed, and none disturbed if one is running."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("the memory store was expected never to wait")


def _seen(raw: bytes) -> Any:
    """The body as :class:`Seen` keeps it: JSON parsed, ``None`` when empty, else text."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


@pytest.fixture
def fake_wechat() -> Iterator[FakeWeChat]:
    """A fresh fake WeChat serving on a free loopback port (``fake.url``)."""
    with FakeWeChat().running() as fake:
        yield fake
