"""``wxpush users``: the operator's view of people (SPEC §15) on the server's own settings.

``find TERM`` (a phone, openid, unionid or id), ``show ID`` (identities and the last audit
rows), ``delete ID`` (tokens ended first, then the person erased) and ``export`` (JSON lines).
Exit codes: 0 done; 1 no such user; 2 usage or settings; 3 the database or Redis is not
reachable. Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from wxpush.config.settings import Settings
from wxpush.errors import Unavailable, WxpushError
from wxpush.infra.redis_client import open_redis
from wxpush.infra.sql import open_engine
from wxpush.people.audit import Entry, Origin
from wxpush.people.links import Links
from wxpush.people.migrate import STEPS, refuse_newer
from wxpush.people.schema import User
from wxpush.sms.phone import mask_phone
from wxpush.tokens.service import end_person

OK, NOT_FOUND, USAGE, UNREACHABLE = 0, 1, 2, 3
CLI = Origin(door="cli")


class Stop(Exception):
    """End the command with this line on stderr and this exit code."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code, self.line = code, line


def add_parser(sub: Any) -> None:
    """The ``users`` command and its verbs, under ``wxpush``'s subparsers ``sub``."""
    users = sub.add_parser("users", help="find, show, delete or export people (the operator's)")
    verbs = users.add_subparsers(title="users commands", required=True)
    find = verbs.add_parser("find", help="the users with this phone, openid, unionid or id")
    find.add_argument("term")
    find.set_defaults(run=_run(_find))
    show = verbs.add_parser("show", help="one user: identities and the last audit rows")
    show.add_argument("id")
    show.add_argument("--with-phone", action="store_true", help="print the phone in full")
    show.add_argument("--limit", type=_limit, default=20, help="audit rows (default 20)")
    show.set_defaults(run=_run(_show))
    delete = verbs.add_parser("delete", help="erase a user: tokens ended, rows deleted")
    delete.add_argument("id")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(run=_run(_delete))
    export = verbs.add_parser("export", help="every user as JSON lines on stdout")
    export.add_argument("--with-phone", action="store_true", help="include phone numbers")
    export.set_defaults(run=_run(_export))


def _limit(raw: str) -> int:
    count = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"{raw!r}: give a whole number from 1 to 1000")
    return count


Verb = Callable[[argparse.Namespace, Settings, Links], Awaitable[int]]


def _run(verb: Verb) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        settings = Settings.from_env()  # a SettingsError is cli.main's: exit 2, one line
        try:
            _check_file(settings)
            return asyncio.run(_with_database(settings, lambda links: verb(args, settings, links)))
        except Stop as stop:
            print(f"wxpush users: {stop.line}", file=sys.stderr)
            return stop.code
        except Unavailable:
            print(f"wxpush users: the database is not reachable ({_where(settings)}); nothing "
                  "was changed", file=sys.stderr)  # fmt: skip
            return UNREACHABLE
        except WxpushError as exc:
            print(f"wxpush users: {exc.message}", file=sys.stderr)
            return USAGE

    return run


async def _with_database(settings: Settings, work: Callable[[Links], Awaitable[int]]) -> int:
    """Run ``work`` on the server's database, once it is known to hold wxpush's tables at
    this wxpush's schema version (a SQLite file that is not there is not created)."""
    engine = open_engine(settings.database_url)
    try:
        version = await refuse_newer(engine)
        if version is None or version < STEPS[-1].version:
            state = "holds no wxpush tables" if version is None else f"is at version {version}"
            raise Stop(USAGE, f"the database {_where(settings)} {state}; start this wxpush's "
                       "server on it once to create or upgrade them")  # fmt: skip
        return await work(Links(engine))
    finally:
        await engine.dispose()


def _check_file(settings: Settings) -> None:
    url = make_url(settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():
        raise Stop(USAGE, f"no database file {file} (WXPUSH_DATABASE_URL)")


def _where(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


async def _known(links: Links, user_id: str) -> User:
    user = await links.user(user_id)
    if user is None:
        raise Stop(NOT_FOUND, f"no user {user_id}")
    return user


# -- the verbs ------------------------------------------------------------------------------


async def _find(args: argparse.Namespace, settings: Settings, links: Links) -> int:
    ids = await links.find(args.term)
    found = [user for user in [await links.user(i) for i in ids] if user is not None]
    if not found:
        raise Stop(NOT_FOUND, f"no user has the phone, openid, unionid or id {args.term!r}")
    for user in found:
        print(f"{user.id}\tcreated {user.created_at:%Y-%m-%d %H:%M}Z\t"
              f"{len(user.identities)} identities\t{_phone(user, full=False)}")  # fmt: skip
    return OK


async def _show(args: argparse.Namespace, settings: Settings, links: Links) -> int:
    user, history = await links.user(args.id), await links.history(args.id, args.limit)
    if user is None and not history:
        raise Stop(NOT_FOUND, f"no user {args.id}")
    if user is None:
        print(f"user {args.id}: erased (only the audit rows remain)")
    else:
        print(f"user {user.id}\ncreated {user.created_at.isoformat()}")
        print(f"phone {_phone(user, full=args.with_phone)}\nidentities {len(user.identities)}")
        for i in user.identities:
            linked = i.linked_at.isoformat() if i.linked_at else "-"
            print(f"  #{i.id}\t{i.provider}\t{i.appid}\t{i.openid}\t"
                  f"unionid {i.unionid or '-'}\tlinked {linked}")  # fmt: skip
    print(f"audit (last {len(history)}, newest first)")
    for entry in history:
        print("  " + _audit_line(entry))
    return OK


async def _delete(args: argparse.Namespace, settings: Settings, links: Links) -> int:
    user = await _known(links, args.id)
    if not args.yes:
        _confirm(user)
    if settings.embedded_redis:
        print("tokens: not ended from here — the server keeps them in its own memory (no "
              "WXPUSH_REDIS_URL); restart it to end them")  # fmt: skip
    else:
        await _end_tokens(settings, user.id)
        ttl = settings.access_token_ttl
        print("tokens: ended (refused inside wxpush at once; a site checking them offline "
              f"sees an access token until it expires, at most {ttl} s)")  # fmt: skip
    if not await links.erase(user.id, CLI):
        raise Stop(NOT_FOUND, f"no user {user.id} (erased meanwhile)")
    print(f"deleted user {user.id} and {len(user.identities)} identities; the audit rows stay")
    return OK


def _confirm(user: User) -> None:
    if not sys.stdin.isatty():
        raise Stop(USAGE, "pass --yes to delete without a prompt (stdin is not a terminal)")
    answer = input(f"Erase user {user.id} and {len(user.identities)} identities? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise Stop(USAGE, "not deleted")


async def _end_tokens(settings: Settings, user_id: str) -> None:
    """Every token of the person ends first: Redis down stops the delete with nothing
    deleted (erasing first would leave tokens no one can end by name any more)."""
    redis = open_redis(settings.redis, connections=2)
    try:
        await end_person(redis, settings.token_policy(), user_id, clients=settings.clients,
                         now=int(time.time()))  # fmt: skip
    except (RedisError, OSError) as exc:
        raise Stop(UNREACHABLE, f"Redis is not reachable ({type(exc).__name__}); nothing was "
                   "deleted") from None  # fmt: skip
    finally:
        await redis.aclose()


async def _export(args: argparse.Namespace, settings: Settings, links: Links) -> int:
    count = 0
    async for user in links.everyone():
        print(json.dumps(_exported(user, with_phone=args.with_phone), ensure_ascii=False))
        count += 1
    print(f"wxpush users: exported {count} users", file=sys.stderr)
    return OK


def _exported(user: User, *, with_phone: bool) -> dict[str, Any]:
    found: dict[str, Any] = {"id": user.id, "created_at": user.created_at.isoformat()}
    if with_phone:
        found["phone"] = user.phone
    else:
        found["has_phone"] = user.phone is not None
    found["identities"] = [
        {"id": i.id, "provider": i.provider, "appid": i.appid, "openid": i.openid,
         "unionid": i.unionid, "linked_at": i.linked_at.isoformat() if i.linked_at else None}
        for i in user.identities
    ]  # fmt: skip
    return found


def _phone(user: User, *, full: bool) -> str:
    if user.phone is None:
        return "no phone"
    return user.phone if full else mask_phone(user.phone)


def _audit_line(entry: Entry) -> str:
    fields = [entry.at.isoformat(timespec="seconds"), entry.event, entry.door or "-",
              entry.client_id or "-", entry.ip or "-", entry.detail or ""]  # fmt: skip
    return "\t".join(fields).rstrip()
