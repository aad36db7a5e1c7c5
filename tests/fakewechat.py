"""A fake WeChat server API, speaking WeChat's real JSON shapes, on a real loopback port.

Use the ``fake_wechat`` fixture (import it into a test module or a conftest with
``from tests.fakewechat import fake_wechat  # noqa: F401``); it yields a running
:class:`FakeWeChat`. Point the code under test at ``fake.url`` (as ``WXPUSH_WECHAT_API_BASE``
or ``WeChatAPI(base_url=...)``) and build its account with :meth:`FakeWeChat.account`.

Endpoints (all under ``fake.url``)::

    POST /cgi-bin/stable_token     normal mode: the current token while it has > 5 min left
                                   (WeChat renews it in its last 5 minutes); force_refresh:
                                   a new one (the old one then answers 40001)
    GET  /cgi-bin/token            a new token on every call (old ones stay valid here)
    POST /cgi-bin/qrcode/create    {"ticket","expire_seconds","url":"http://weixin.qq.com/q/…"}
    GET  /cgi-bin/showqrcode       ?ticket= → a PNG of the QR code's url
    POST /cgi-bin/menu/create, GET /cgi-bin/menu/get (46003 when none), GET /cgi-bin/menu/delete
    GET  /cgi-bin/user/info        ?openid=&lang= → a subscribed follower (merged with
                                   ``fake.users[openid]``)
    GET  /owner/token              a "token owner" service for WXPUSH_ACCESS_TOKEN_URL:
                                   {"access_token","expires_in"} (not counted as a fetch)

Every API call checks ``access_token`` (missing 41001, unknown or invalidated 40001, expired
42001); fetches check ``appid``/``secret`` (40013/40125). Tokens live 7200 s on ``fake.clock``.

Observe: ``token_fetches`` (stable_token + token requests), ``stable_fetches``,
``plain_fetches``, ``forced_fetches``, ``owner_reads``, ``calls[path]``, ``requests`` (every
:class:`Seen` request), ``qrcodes`` (ticket → :class:`IssuedQR`, see :meth:`scene_of`),
``menu``. Script: :meth:`fail` (next N answers of a path, or of all: an errcode, an HTTP
status or a raw body), :meth:`invalidate` (every token issued so far answers 40001), and
``sticky_stable`` (normal-mode stable_token keeps returning an invalidated token, so the
client must force a refresh). Handlers run on the server's thread; attributes are plain
Python values safe to read from tests.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import segno
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import TIMEOUT, free_port, wait_for
from wxpush.config.accounts import Account

APPID = "wxfake0123456789"
SECRET = "fakesecret0123456789abcdef012345"
LIFETIME = 7200
RENEW_WINDOW = 300
ERRMSG = {
    40001: "invalid credential, access_token is invalid or not latest",
    40013: "invalid appid",
    40125: "invalid appsecret",
    40164: "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist",
    41001: "access_token missing",
    42001: "access_token expired",
    45009: "reach max api daily quota limit",
    46003: "menu no exist",
    48001: "api unauthorized",
    -1: "system error",
}


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    params: dict[str, str]
    body: Any  # the JSON body parsed (None when empty, the text when not JSON)
    raw: bytes


@dataclass
class IssuedQR:
    ticket: str
    url: str
    scene_str: str
    expire_seconds: int
    action_name: str


@dataclass
class _Rule:
    path: str
    times: int | None
    errcode: int | None
    status: int
    body: str | None


@dataclass
class FakeWeChat:
    """The fake's state; the Starlette app is :meth:`app`, served by :meth:`running`."""

    appid: str = APPID
    secret: str = SECRET
    clock: Callable[[], float] = time.time
    sticky_stable: bool = False
    url: str = ""
    token_fetches: int = 0
    stable_fetches: int = 0
    plain_fetches: int = 0
    forced_fetches: int = 0
    owner_reads: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[Seen] = field(default_factory=list)
    qrcodes: dict[str, IssuedQR] = field(default_factory=dict)
    menu: dict[str, Any] | None = None
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token → expires_at
    invalid: set[str] = field(default_factory=set)
    stable_token: str | None = None
    rules: list[_Rule] = field(default_factory=list)

    # --- for tests ---------------------------------------------------------------------------

    @property
    def owner_url(self) -> str:
        return f"{self.url}/owner/token"

    def account(self, **overrides: Any) -> Account:
        """An Account for this fake (``access_token_url=fake.owner_url`` for owner mode)."""
        values: dict[str, Any] = {"name": "default", "appid": self.appid, "secret": self.secret}
        return Account(**{"token": "faketoken", **values, **overrides})

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

    def heal(self) -> None:
        self.rules.clear()

    def invalidate(self) -> None:
        """Every token issued so far now answers 40001 (as after a secret reset)."""
        self.invalid.update(self.tokens)

    def scene_of(self, ticket_or_url: str) -> str:
        """The ``scene_str`` of a QR code this fake issued, by its ticket or url."""
        for qr in self.qrcodes.values():
            if ticket_or_url in (qr.ticket, qr.url):
                return qr.scene_str
        raise KeyError(ticket_or_url)

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
        def route(path: str, handler: Callable[[Request, Any], Any], method: str) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._handle(request, handler)

            return Route(path, endpoint, methods=[method])

        return Starlette(
            routes=[
                route("/cgi-bin/stable_token", self._stable, "POST"),
                route("/cgi-bin/token", self._plain, "GET"),
                route("/cgi-bin/qrcode/create", self._qrcode, "POST"),
                route("/cgi-bin/showqrcode", self._showqrcode, "GET"),
                route("/cgi-bin/menu/create", self._menu_create, "POST"),
                route("/cgi-bin/menu/get", self._menu_get, "GET"),
                route("/cgi-bin/menu/delete", self._menu_delete, "GET"),
                route("/cgi-bin/user/info", self._user_info, "GET"),
                route("/owner/token", self._owner, "GET"),
            ]
        )

    async def _handle(self, request: Request, handler: Callable[[Request, Any], Any]) -> Response:
        path = request.url.path
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.calls[path] += 1
        self.requests.append(Seen(request.method, path, dict(request.query_params), body, raw))
        self._count(path, body)
        scripted = self._scripted(path)
        if scripted is not None:
            return scripted
        result = handler(request, body)
        return result if isinstance(result, Response) else JSONResponse(result)

    def _count(self, path: str, body: Any) -> None:
        """Every request counts, scripted failures too."""
        if path in ("/cgi-bin/stable_token", "/cgi-bin/token"):
            self.token_fetches += 1
        self.stable_fetches += path == "/cgi-bin/stable_token"
        forced = isinstance(body, dict) and body.get("force_refresh") is True
        self.forced_fetches += path == "/cgi-bin/stable_token" and forced
        self.plain_fetches += path == "/cgi-bin/token"
        self.owner_reads += path == "/owner/token"

    def _scripted(self, path: str) -> Response | None:
        for rule in self.rules:
            if rule.path in ("*", path) and rule.times != 0:
                if rule.times is not None:
                    rule.times -= 1
                if rule.errcode is not None:
                    return JSONResponse(_error(rule.errcode))
                return Response(rule.body or "", rule.status, media_type="text/html")
        return None

    # --- tokens ------------------------------------------------------------------------------

    def _mint(self) -> str:
        token = secrets.token_urlsafe(48)
        self.tokens[token] = self.clock() + LIFETIME
        return token

    def _grant(self, token: str) -> dict[str, Any]:
        return {"access_token": token, "expires_in": int(self.tokens[token] - self.clock())}

    def _credentials(self, appid: Any, secret: Any) -> dict[str, Any] | None:
        if appid != self.appid:
            return _error(40013)
        return None if secret == self.secret else _error(40125)

    def _stable(self, request: Request, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        refused = self._credentials(body.get("appid"), body.get("secret"))
        if refused is not None:
            return refused
        force = body.get("force_refresh") is True
        if force or not self._stable_usable():
            if self.stable_token is not None:
                self.invalid.add(self.stable_token)
            self.stable_token = self._mint()
        return self._grant(self.stable_token)  # type: ignore[arg-type]

    def _stable_usable(self) -> bool:
        token = self.stable_token
        if token is None or (token in self.invalid and not self.sticky_stable):
            return False
        return self.tokens[token] - self.clock() > RENEW_WINDOW

    def _plain(self, request: Request, body: Any) -> dict[str, Any]:
        query = request.query_params
        if query.get("grant_type") != "client_credential":
            return _error(40002, "invalid grant_type")
        refused = self._credentials(query.get("appid"), query.get("secret"))
        return refused if refused is not None else self._grant(self._mint())

    def _owner(self, request: Request, body: Any) -> dict[str, Any]:
        if not self._stable_usable() or self.stable_token in self.invalid:
            self.stable_token = self._mint()
        return self._grant(self.stable_token)  # type: ignore[arg-type]

    def _checked_token(self, request: Request) -> dict[str, Any] | None:
        token = request.query_params.get("access_token")
        if not token:
            return _error(41001)
        if token not in self.tokens or token in self.invalid:
            return _error(40001)
        return _error(42001) if self.clock() >= self.tokens[token] else None

    # --- the API -----------------------------------------------------------------------------

    def _qrcode(self, request: Request, body: Any) -> dict[str, Any]:
        refused = self._checked_token(request)
        if refused is not None:
            return refused
        try:
            action = body["action_name"]
            scene = body["action_info"]["scene"]
            scene_str = str(scene.get("scene_str", scene.get("scene_id", "")))
            expire = min(int(body.get("expire_seconds", 60)), 2592000)
        except (KeyError, TypeError, ValueError, AttributeError):
            return _error(40097, "invalid args")
        if action not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"):
            return _error(40097, "invalid action name")
        if not 1 <= len(scene_str) <= 64:
            return _error(40097, "invalid scene")
        ticket = "gQ" + secrets.token_urlsafe(60)
        url = f"http://weixin.qq.com/q/{secrets.token_urlsafe(16)}"
        self.qrcodes[ticket] = IssuedQR(ticket, url, scene_str, expire, action)
        return {"ticket": ticket, "expire_seconds": expire, "url": url}

    def _showqrcode(self, request: Request, body: Any) -> Response:
        qr = self.qrcodes.get(request.query_params.get("ticket", ""))
        if qr is None:
            return Response(b"", 404)
        out = io.BytesIO()
        segno.make(qr.url).save(out, kind="png", scale=4)
        return Response(out.getvalue(), media_type="image/jpg")

    def _menu_create(self, request: Request, body: Any) -> dict[str, Any]:
        refused = self._checked_token(request)
        if refused is not None:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("button"), list):
            return _error(40016, "invalid button size")
        self.menu = body
        return _error(0)

    def _menu_get(self, request: Request, body: Any) -> dict[str, Any]:
        refused = self._checked_token(request)
        if refused is not None:
            return refused
        return _error(46003) if self.menu is None else {"menu": self.menu}

    def _menu_delete(self, request: Request, body: Any) -> dict[str, Any]:
        refused = self._checked_token(request)
        if refused is None:
            self.menu = None
        return refused or _error(0)

    def _user_info(self, request: Request, body: Any) -> dict[str, Any]:
        refused = self._checked_token(request)
        if refused is not None:
            return refused
        openid = request.query_params.get("openid", "")
        if not openid:
            return _error(40003, "invalid openid")
        profile = {
            "subscribe": 1,
            "openid": openid,
            "language": "zh_CN",
            "subscribe_time": int(self.clock()),
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 0,
            "qr_scene_str": "",
        }
        return {**profile, **self.users.get(openid, {})}


def _error(errcode: int, errmsg: str | None = None) -> dict[str, Any]:
    if errcode == 0:
        return {"errcode": 0, "errmsg": "ok"}
    text = errmsg or ERRMSG.get(errcode, "error")
    return {"errcode": errcode, "errmsg": f"{text} rid: {secrets.token_hex(6)}"}


@pytest.fixture
def fake_wechat() -> Iterator[FakeWeChat]:
    """A fresh fake WeChat serving on a free loopback port (``fake.url``)."""
    with FakeWeChat().running() as fake:
        yield fake
