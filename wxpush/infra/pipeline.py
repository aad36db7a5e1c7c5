"""One pipelined Redis connection for the commands on the login's hot path.

redis-py sends each command on a connection taken from its pool and keeps that connection
until the reply is in, so concurrent commands either queue for a connection or each need
one of their own. On this path (a scan's transition script, a waiter's read of its scene,
a login's first refresh token, the callback's stored reply) that costs more than Redis
itself: a pool checkout with its condition lock and timeout, redis-py's retry and
observability layers. Side by side (``bench/redis_hop.py``): ≈ 70 µs of CPU per command
against ≈ 7 µs here, and after the few milliseconds of idleness between two scans ≈ 0.3 ms
more wall time per command.

A :class:`PipelinedConnection` writes every command at once on one connection and matches the
replies to their callers in order (Redis answers a connection's commands in the order it sent
them), so any number of callers share it without waiting for each other; commands written in
the same turn of the event loop leave in one ``write``. hiredis parses the replies.

Faults: a lost connection fails the commands in flight with redis-py's ``ConnectionError``
(a 503 to the caller, as from the pool), and the next command connects again; a command
without its reply after :data:`wxpush.infra.redis_client.SOCKET_TIMEOUT` fails with
``TimeoutError`` and drops the connection, since the server is stuck or gone. Nothing is
retried: a script that may have run is never run twice (a ``NOSCRIPT`` answer means it did
not run: the script is loaded and sent again). The embedded store (fakeredis) has no
pipelined connection; the redis-py client serves the same calls there (:class:`HotCommands`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

Arg = str | bytes | int | float
CLOSE_WAIT = 1.0


class HotScript(Protocol):
    async def __call__(
        self, keys: Sequence[Arg] | None = None, args: Sequence[Arg] | None = None
    ) -> Any: ...


class HotCommands(Protocol):
    """The calls the hot path makes, as redis-py names them (a pipelined connection or a client)."""

    def register_script(self, script: str) -> HotScript: ...

    async def hgetall(self, name: str) -> Any: ...

    async def get(self, name: str) -> Any: ...

    async def set(self, name: str, value: Arg, ex: int | None = None) -> Any: ...


def hot_commands(client: Any, hot: HotCommands | None = None) -> HotCommands:
    """``hot`` when there is one, else the redis-py ``client`` itself: it offers the same
    calls (with more options), so the hot path's code does not depend on which serves it."""
    return hot if hot is not None else cast(HotCommands, client)


class PipelinedConnection:
    """A pipelined connection to the Redis server of ``client``'s pool (see the module)."""

    def __init__(self, client: Redis, *, timeout: float, connect_timeout: float) -> None:
        kwargs = client.connection_pool.connection_kwargs
        self._address = (kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
        self._path: str | None = kwargs.get("path")  # unix:// URLs
        self._tls = _tls_context(client)  # rediss:// URLs
        pool = client.connection_pool
        # With Sentinel, the master's address is asked at each connect (after a failover, the
        # lost connection's next command finds the new master).
        self._master = pool if isinstance(pool, SentinelConnectionPool) else None
        self._hello = _handshake(kwargs)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    @staticmethod
    def serves(url: str) -> bool:
        """TCP, TLS (``rediss://``, redis-py's ``ssl_*`` URL options), unix sockets."""
        return urlsplit(url).scheme in ("redis", "rediss", "unix")

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (hiredis's types: bytes, int, list)."""
        conn = self._conn if self._conn is not None and self._conn.open else await self._connect()
        reply = conn.send(_pack(args))
        try:
            async with asyncio.timeout(self._timeout):
                return await reply
        except TimeoutError as exc:
            if reply.done() and not reply.cancelled():
                # The reply came in time but the event loop ran the timeout first: a loop
                # that lagged past the timeout (a busy process) sees both due at once.
                return reply.result()
            conn.fail(RedisTimeoutError("Redis did not answer in time"))
            raise RedisTimeoutError("Redis did not answer in time") from exc

    def register_script(self, script: str) -> PipelinedScript:
        return PipelinedScript(self, script)

    async def hgetall(self, name: str) -> dict[bytes, bytes]:
        flat = await self.execute("HGETALL", name)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def get(self, name: str) -> Any:
        return await self.execute("GET", name)

    async def set(self, name: str, value: Arg, ex: int | None = None) -> Any:
        if ex is None:
            return await self.execute("SET", name, value)
        return await self.execute("SET", name, value, "EX", ex)

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.fail(RedisConnectionError("the pipelined connection was closed"))
            await conn.closed()

    async def _connect(self) -> _Connection:
        """Connect once for all the callers that find the pipelined connection closed at the same
        time."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._conn = task.result()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._master is not None:
                    self._address = await self._master.get_master_address()  # type: ignore[no-untyped-call]
                if self._path is not None:
                    _, conn = await loop.create_unix_connection(_Connection, self._path)
                elif self._tls is not None:
                    _, conn = await loop.create_connection(
                        _Connection, *self._address, ssl=self._tls, server_hostname=self._address[0]
                    )
                else:
                    _, conn = await loop.create_connection(_Connection, *self._address)
                for command in self._hello:  # AUTH, SELECT, CLIENT SETNAME
                    await conn.send(_pack(command))
        except BaseException as exc:
            if conn is not None:
                conn.fail(RedisConnectionError("the handshake failed"))
            if isinstance(exc, ResponseError):
                raise RedisConnectionError(f"Redis refused the connection: {exc}") from exc
            if isinstance(exc, ssl.SSLError):  # a certificate refused, either way
                raise RedisConnectionError(f"TLS with Redis failed: {exc.reason}") from exc
            if isinstance(exc, OSError | TimeoutError | RedisConnectionError):
                raise RedisConnectionError(f"cannot reach Redis: {type(exc).__name__}") from exc
            raise
        return conn


class PipelinedScript:
    """A Lua script run by ``EVALSHA`` on a :class:`PipelinedConnection`, loaded again after a
    ``NOSCRIPT`` (a restarted or flushed Redis)."""

    def __init__(self, connection: PipelinedConnection, script: str) -> None:
        self._connection = connection
        self._script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    async def __call__(
        self, keys: Sequence[Arg] | None = None, args: Sequence[Arg] | None = None
    ) -> Any:
        return await run_script(self._connection.execute, self.sha, self._script, keys, args)


async def run_script(
    execute: Any, sha: str, script: str, keys: Sequence[Arg] | None, args: Sequence[Arg] | None
) -> Any:
    """``EVALSHA`` by ``execute`` (one command's reply), the script loaded after a
    ``NOSCRIPT``."""
    keys, args = keys or (), args or ()
    try:
        return await execute("EVALSHA", sha, len(keys), *keys, *args)
    except NoScriptError:
        await execute("SCRIPT", "LOAD", script)
        return await execute("EVALSHA", sha, len(keys), *keys, *args)


class _Connection(asyncio.Protocol):
    """The socket: pending replies in order, writes of one loop turn sent together."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._lost = asyncio.get_running_loop().create_future()
        self.open = True

    async def closed(self) -> None:
        """Wait (a second at most) until the transport is gone: a TLS one closes after its
        close_notify exchange, which must not outlive the event loop."""
        if self._lost is not None:
            with suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await asyncio.shield(self._lost)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        if not self.open:
            reply.set_exception(RedisConnectionError("Redis connection lost"))
            return reply
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(packed)
        self._pending.append(reply)
        return reply

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.open and self._transport is not None and out:
            self._transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                self._deliver(reply)
        except hiredis.ProtocolError:
            logger.warning("unreadable reply from Redis; dropping the connection")
            self.fail(RedisConnectionError("unreadable reply from Redis"))

    def _deliver(self, reply: Any) -> None:
        if not self._pending:
            return  # a reply to a caller that the connection already failed
        future = self._pending.popleft()
        if future.done():
            return  # its caller gave up waiting
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith("READONLY"):  # a master demoted by a failover: find the new one
                future.set_exception(RedisConnectionError("Redis is a replica now: " + text))
                self.fail(RedisConnectionError("Redis became a replica"))
                return
            kind = NoScriptError if text.startswith("NOSCRIPT") else ResponseError
            future.set_exception(kind(text))
        else:
            future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("Redis connection lost"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def fail(self, error: Exception) -> None:
        """Fail every command in flight and close: no reply can be matched any more."""
        self.open = False
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a caller that already gave up logs nothing
        if self._transport is not None:
            self._transport.close()


def _pack(args: tuple[Arg, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub: one item only
    return packed


def _tls_context(client: Redis) -> ssl.SSLContext | None:
    """The TLS context redis-py's own connections to this server use: the URL's ``ssl_*``
    options, with redis-py's defaults (a certificate required, its host name checked)."""
    pool = client.connection_pool
    if not issubclass(pool.connection_class, SSLConnection):
        return None
    options = {k.removeprefix("ssl_"): v for k, v in pool.connection_kwargs.items()
               if k.startswith("ssl_")}  # fmt: skip
    options.setdefault("cert_reqs", "required")
    options.setdefault("check_hostname", True)
    return RedisSSLContext(**options).get()


def _handshake(kwargs: dict[str, Any]) -> list[tuple[Arg, ...]]:
    commands: list[tuple[Arg, ...]] = []
    password, username = kwargs.get("password"), kwargs.get("username")
    if password:
        commands.append(("AUTH", username, password) if username else ("AUTH", password))
    if int(kwargs.get("db") or 0):
        commands.append(("SELECT", int(kwargs["db"])))
    if kwargs.get("client_name"):
        commands.append(("CLIENT", "SETNAME", kwargs["client_name"]))
    return commands
