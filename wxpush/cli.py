"""The ``wxpush`` command: serve, demo, check, keygen, menu, users (:mod:`wxpush.cli_users`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from wxpush import __version__, checks, cli_users
from wxpush.clients.wechat import WeChatAPI
from wxpush.config.accounts import Account
from wxpush.config.settings import Settings, port_from_env
from wxpush.errors import SettingsError, Unavailable, WxpushError
from wxpush.infra.sql import open_engine
from wxpush.lifespan import quiet_secret_loggers
from wxpush.people.migrate import refuse_newer
from wxpush.server import (
    KEEP_ALIVE,
    MAX_KEEP_ALIVE,
    MAX_PING_INTERVAL,
    PING_INTERVAL,
    server_options,
    websocket_options,
)
from wxpush.tokens.keys import generate_key_file


def main(argv: Sequence[str] | None = None) -> int:
    quiet_secret_loggers()
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"wxpush: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxpush", description="WeChat QR login server")
    parser.add_argument("--version", action="version", version=f"wxpush {__version__}")
    sub = parser.add_subparsers(title="commands")

    serve = sub.add_parser("serve", help="run the production server (uvicorn)")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    serve.add_argument("--port", type=int, default=port_from_env())
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--ws-ping-interval", type=_ping_interval, default=PING_INTERVAL, metavar="SECONDS",
        help=f"ping every WebSocket this often (default {PING_INTERVAL:g}; keep it under the "
        "60 s idle timeout of common proxies)",
    )  # fmt: skip
    serve.add_argument(
        "--keep-alive", type=_keep_alive, default=KEEP_ALIVE, metavar="SECONDS",
        help=f"keep an idle HTTP connection this long (default {KEEP_ALIVE}; keep it above "
        "the idle timeout of the proxy or load balancer in front)",
    )  # fmt: skip
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo", help="everything on this machine, no WeChat account needed")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(run=_demo)

    check = sub.add_parser("check", help="validate settings and reach Redis and WeChat")
    check.set_defaults(run=_check)

    keygen = sub.add_parser("keygen", help="create the ES256 JWT signing key file")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    keygen.set_defaults(run=_keygen)

    menu = sub.add_parser("menu", help="set, show or delete the account's custom menu")
    menu.add_argument("--account", default=None, help="account name (default: the first)")
    verbs = menu.add_subparsers(title="menu commands", required=True)
    menu_set = verbs.add_parser("set", help="create the menu from a JSON file")
    menu_set.add_argument("file", type=Path)
    menu_set.set_defaults(run=_menu_set)
    verbs.add_parser("get", help="print the current menu").set_defaults(run=_menu_get)
    verbs.add_parser("delete", help="delete the menu").set_defaults(run=_menu_delete)

    cli_users.add_parser(sub)
    return parser


def _ping_interval(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_PING_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: give seconds, more than 0 and at most {MAX_PING_INTERVAL:g} (SPEC §3)"
        )
    return seconds


def _keep_alive(raw: str) -> int:
    seconds = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= seconds <= MAX_KEEP_ALIVE:
        raise argparse.ArgumentTypeError(f"{raw!r}: give whole seconds, from 1 to {MAX_KEEP_ALIVE}")
    return seconds


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    if args.workers > 1 and settings.embedded_redis:
        raise SettingsError("WXPUSH_REDIS_URL", "required to run more than one worker")
    asyncio.run(_refuse_a_newer_database(settings.database_url))
    uvicorn.run(
        "wxpush.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        server_header=False,
        timeout_keep_alive=args.keep_alive,
        **server_options(settings),
        **websocket_options(args.ws_ping_interval),
    )
    return 0


async def _refuse_a_newer_database(url: str) -> None:
    """A database at a schema version newer than this wxpush stops ``serve`` here, in its
    one line, before any worker starts (each worker's start-up would refuse it too, inside a
    traceback). A database that is down is left to the workers' start-up, as before."""
    engine = open_engine(url)
    try:
        await refuse_newer(engine)
    except Unavailable:
        pass
    finally:
        await engine.dispose()


def _demo(args: argparse.Namespace) -> int:
    import uvicorn

    from wxpush.app import create_app
    from wxpush.sandbox.demo import demo_settings, demo_url

    settings = demo_settings(args.host, args.port)
    app, url = create_app(settings), demo_url(settings)
    print(f"wxpush demo: open {url}/ (sandbox phone, console SMS)", flush=True)
    if url.startswith("http://127.0.0.1") and args.host != "127.0.0.1":
        print("wxpush demo: for phones on the LAN, set WXPUSH_PUBLIC_URL=http://<this host's "
              f"LAN address>:{args.port} so the QR code points at it", flush=True)  # fmt: skip
    uvicorn.run(
        app, host=args.host, port=args.port, server_header=False, timeout_keep_alive=KEEP_ALIVE,
        **server_options(settings), **websocket_options(),
    )  # fmt: skip
    return 0


def _keygen(args: argparse.Namespace) -> int:
    path = Settings.one("jwt_key_file")
    try:
        kid = generate_key_file(path, force=args.force)
    except FileExistsError:
        print(f"wxpush: {path} exists; pass --force to replace it (every issued token ends)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"wrote {path} (kid {kid})")
    return 0


# -- check ----------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"settings: failed — {exc}")
        return 1
    names = ", ".join(settings.accounts)
    apps = f"{len(settings.accounts)} account(s): {names}" if settings.accounts else "no account"
    if settings.websites:
        apps += f"; {len(settings.websites)} website app(s): {', '.join(settings.websites)}"
    print(f"settings: ok ({apps})")
    return asyncio.run(checks.services(settings))


# -- menu -----------------------------------------------------------------------------------


def _menu_set(args: argparse.Namespace) -> int:
    try:
        menu = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"wxpush: cannot read a JSON menu from {args.file}: {exc}", file=sys.stderr)
        return 2

    async def run(api: WeChatAPI) -> None:
        await api.menu_create(menu)
        print("menu set")

    return _with_api(args, run)


def _menu_get(args: argparse.Namespace) -> int:
    async def run(api: WeChatAPI) -> None:
        print(json.dumps(await api.menu_get(), ensure_ascii=False, indent=2))

    return _with_api(args, run)


def _menu_delete(args: argparse.Namespace) -> int:
    async def run(api: WeChatAPI) -> None:
        await api.menu_delete()
        print("menu deleted")

    return _with_api(args, run)


def _with_api(args: argparse.Namespace, run: Callable[[WeChatAPI], Awaitable[None]]) -> int:
    settings = Settings.from_env()
    account = _pick_account(settings, args.account)

    async def go() -> int:
        async with checks.clients(settings) as (redis, http):
            api = WeChatAPI(account, http=http, redis=redis, base_url=settings.wechat_api_base)
            try:
                await run(api)
            except WxpushError as exc:
                print(f"wxpush: {exc.message}", file=sys.stderr)
                return 1
        return 0

    return asyncio.run(go())


def _pick_account(settings: Settings, name: str | None) -> Account:
    if name is None:
        return settings.default_account
    if name not in settings.accounts:
        raise SettingsError("--account", f"no account named {name!r}")
    return settings.accounts[name]
