"""``wxpush demo``: the whole login flow on one machine, with no WeChat account.

The demo's settings are defaults overlaid by ``.env`` and the real environment (so any
``WXPUSH_*`` variable still wins), except three it always sets: the sandbox is on, and the
WeChat API base and connect base (WeChat's OAuth screens) are this server's own
``/sandbox``. With no ``WXPUSH_REDIS_URL`` it runs on
the embedded store; people live in ``wxpush-demo.db`` and the JWT key in
``wxpush-demo-jwt.pem`` in the current directory. The appids are fixed (so people stay known
across restarts): the service account's and a sandbox website app's (the ``website`` door),
both bound to one Open Platform account (``WXPUSH_UNIONID=1``), so a sandbox person is one
user through every door. The secrets, Token and EncodingAESKey are new on every start
(callbacks run in safe mode, as most accounts do).

It is an OpenID Connect provider too (SPEC §14): its issuer is its own URL, and unless the
accounts file names clients it has one, the public client ``demo`` (PKCE) of a relying party on
``http://127.0.0.1:8001`` or ``http://localhost:8001`` (``/callback``; back to ``/`` after a
logout) — the README's Authlib example.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets

from dotenv import dotenv_values

from wxpush.config.clients import Client
from wxpush.config.settings import Settings

DEMO_APPID = "wxsandboxdemo0001"
DEMO_WEBSITE_APPID = "wxsandboxweb00001"
DEMO_RP = ("http://127.0.0.1:8001", "http://localhost:8001")
DEMO_CLIENT = Client(
    client_id="demo",
    redirect_uris=tuple(f"{rp}/callback" for rp in DEMO_RP),
    post_logout_redirect_uris=tuple(f"{rp}/" for rp in DEMO_RP),
)


def demo_settings(host: str, port: int) -> Settings:
    """The demo's :class:`Settings` (see the module docstring)."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    defaults = {
        "WXPUSH_APPID": DEMO_APPID,
        "WXPUSH_APPSECRET": secrets.token_hex(16),
        "WXPUSH_TOKEN": secrets.token_hex(16),
        "WXPUSH_AES_KEY": base64.b64encode(secrets.token_bytes(32)).decode()[:43],
        "WXPUSH_WEBSITE_APPID": DEMO_WEBSITE_APPID,
        "WXPUSH_WEBSITE_SECRET": secrets.token_hex(16),
        "WXPUSH_UNIONID": "1",
        "WXPUSH_DATABASE_URL": "sqlite+aiosqlite:///wxpush-demo.db",
        "WXPUSH_SMS_PROVIDER": "console",
        "WXPUSH_JWT_KEY_FILE": "wxpush-demo-jwt.pem",
        "WXPUSH_LOG_LEVEL": "warning",
    }
    netloc = f"[{local}]:{port}" if ":" in local else f"{local}:{port}"
    sandbox = f"http://{netloc}/sandbox"
    forced = {
        "WXPUSH_SANDBOX": "1",
        "WXPUSH_WECHAT_API_BASE": sandbox,
        "WXPUSH_WECHAT_CONNECT_BASE": sandbox,
    }
    dotenv = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    env = {**defaults, **dotenv, **os.environ, **forced}
    env.setdefault("WXPUSH_JWT_ISSUER", env.get("WXPUSH_PUBLIC_URL") or f"http://{netloc}")
    settings = Settings.from_env(env, dotenv=None)
    if not settings.clients:
        settings = dataclasses.replace(settings, clients={DEMO_CLIENT.client_id: DEMO_CLIENT})
    return settings


def demo_url(settings: Settings) -> str:
    """The URL to open in a browser: ``WXPUSH_PUBLIC_URL``, else the address the demo listens
    on. Unless ``WXPUSH_PUBLIC_URL`` is set, the page's sockets are checked against that
    address (and ``localhost`` for a loopback one): the page works from the printed URL, from
    ``localhost`` and from a LAN address the demo is bound to."""
    return settings.public_url or settings.wechat_api_base.removesuffix("/sandbox")
