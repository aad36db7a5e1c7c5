"""The audit log: a row for every login, bind, link, unlink and delete (SPEC §15).

A row says when (``at``), who (``user_id``, kept after the person is erased, and nothing
else of theirs: no phone, no openid), what (``event``), through which door (``follow``,
``website``, ``oauth``; ``api`` for the people routes, ``cli`` for ``wxpush users``), for
which OIDC client, and from which IP. ``detail`` says how, in a word or two (``new user``,
``by unionid``, ``by phone``, ``identity 12``): never a secret or a person's number.

A change to the people tables writes its row in its own transaction (:func:`write`): the row
exists exactly when the change does. A login changes no table (its claim is in Redis), and a
waiting browser's frame must not wait for a disk write, so :class:`LoginLog` collects login
rows and writes them a moment later, many to a transaction. A process killed in between
loses the rows of its last half second; a database that is down keeps them queued (up to
:data:`MAX_QUEUED`) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wxpush.errors import WxpushError
from wxpush.infra.sql import guarded
from wxpush.people.schema import audit, now

logger = logging.getLogger(__name__)

Event = Literal["login", "register", "bind", "link", "unlink", "delete"]
FLUSH_SECONDS: Final = 0.5  # how long a login's row may wait to be written with others
MAX_QUEUED: Final = 10_000  # login rows kept while the database is away; older ones dropped
RETRY_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a change came from: the door, the OIDC client, the person's IP."""

    door: str | None = None
    ip: str | None = None
    client_id: str | None = None


NOWHERE: Final = Origin()


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit row, as read back."""

    at: datetime
    user_id: str
    event: str
    door: str | None
    client_id: str | None
    ip: str | None
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "user_id": self.user_id, "event": self.event,
                "door": self.door, "client_id": self.client_id, "ip": self.ip,
                "detail": self.detail}  # fmt: skip


def row(event: Event, user_id: str, origin: Origin, detail: str | None = None) -> dict[str, Any]:
    return {"at": now(), "user_id": user_id, "event": event, "door": origin.door,
            "client_id": origin.client_id, "ip": origin.ip, "detail": detail}  # fmt: skip


async def write(
    conn: AsyncConnection, event: Event, user_id: str, origin: Origin, detail: str | None = None
) -> None:
    """The row of a change, in the change's own transaction (``conn``)."""
    await conn.execute(insert(audit).values(row(event, user_id, origin, detail)))


async def recent(conn: AsyncConnection, user_id: str, limit: int = 20) -> list[Entry]:
    """The last ``limit`` rows of ``user_id``, newest first."""
    query = (
        select(audit)
        .where(audit.c.user_id == user_id)
        .order_by(audit.c.at.desc(), audit.c.id.desc())
        .limit(limit)
    )
    return [_entry(r) for r in (await conn.execute(query)).all()]


def _entry(r: Any) -> Entry:
    at = r.at if r.at.tzinfo is not None else r.at.replace(tzinfo=now().tzinfo)
    return Entry(at, r.user_id, r.event, r.door, r.client_id, r.ip, r.detail)


class LoginLog:
    """Login rows, written in the background a moment after the login (see the module)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queued: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED)
        self._task: asyncio.Task[None] | None = None

    def note(self, user_id: str, origin: Origin, detail: str | None = None) -> None:
        """Queue the row of a login of ``user_id`` (never blocks, never fails)."""
        if len(self._queued) == MAX_QUEUED:
            logger.warning("audit: the database is away and the login queue is full; "
                           "the oldest login row is dropped")  # fmt: skip
        self._queued.append(row("login", user_id, origin, detail))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="wxpush-audit")

    async def flush(self) -> None:
        """Write every queued row now (the tests' and the shutdown's)."""
        while self._queued:
            await self._write()

    async def aclose(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - shutdown's budget
        """Stop the writer, writing what is queued within ``timeout`` s."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except (TimeoutError, WxpushError, OSError):
            if self._queued:
                logger.warning("audit: %d login rows could not be written", len(self._queued))

    async def _run(self) -> None:
        while self._queued:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self._write()
            except Exception as exc:  # the database is away: keep them, try again later
                logger.warning("audit: login rows wait for the database (%s)",
                               type(exc).__name__)  # fmt: skip
                await asyncio.sleep(RETRY_SECONDS)

    async def _write(self) -> None:
        batch = [self._queued.popleft() for _ in range(len(self._queued))]
        if not batch:
            return
        try:
            async with guarded(self._engine.begin()) as conn:
                await conn.execute(insert(audit), batch)
        except BaseException:
            self._queued.extendleft(reversed(batch))  # first in line again
            raise
