"""The Redis connection: a real server by URL, or an embedded in-memory one.

With no ``WXPUSH_REDIS_URL`` the server runs on fakeredis (an in-memory, Redis-compatible
store with pub/sub and Lua), which lives inside the process: fine for ``wxpush demo`` and a
first look, wrong for more than one process, so start-up says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from wxpush.infra.cluster import ClusterClient, open_cluster
from wxpush.infra.lanes import ClusterLanes
from wxpush.infra.pipeline import HotCommands, PipelinedConnection, hot_commands

logger = logging.getLogger(__name__)

# Fail fast: a request must get a 503 within about a second when Redis is away or hung (a
# stopped process, a stalled host: connects and writes succeed, no reply ever comes), never
# hang. Every command of ours is O(1) or a short script that Redis answers in well under a
# millisecond, so a reply that takes SOCKET_TIMEOUT s means the server is stuck. A timed-out
# command is never sent again (see open_redis).
#
# Not tighter than a second: a busy process (thousands of sockets opening, a burst of scene
# creations) lags its own event loop by hundreds of milliseconds, and at 0.5 s bench/push.py
# saw healthy commands time out (and a timed-out reply on the pipelined connection fails every
# command in flight on it): 503s from a server whose Redis was fine.
SOCKET_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5
# A server process holds MAX_CONNECTIONS (WXPUSH_REDIS_CONNECTIONS) in all: the hub's pub/sub,
# the hot path's pipelined connection (wxpush.infra.pipeline), and the rest in redis-py's
# pool. The pool does not multiplex, so its callers queue for a connection (for at most
# POOL_WAIT s; a refused or dead server still fails fast at connect) instead of each opening
# one of their own: a process with 10,000 waiting browsers still holds 3 connections. A healthy
# Redis serves thousands of commands in POOL_WAIT: a queue that long means the connections
# ahead are stuck on a hung server, and the caller gets a 503 rather than a longer wait.
MAX_CONNECTIONS = 3
MIN_CONNECTIONS = 3  # pub/sub, pipelined connection, and one pooled for everything else
POOL_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: one server by ``url``, or the master of ``service`` as the
    ``sentinels`` name it (``url`` then carries only the password, db and TLS options)."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = "mymaster"
    cluster: bool = False  # url is a seed of a Redis Cluster

    @property
    def mode(self) -> str:
        return "sentinel" if self.sentinels else "cluster" if self.cluster else "single"

    def problem(self) -> tuple[str, str] | None:
        """What is wrong with this target (the setting, what): ``None`` when nothing."""
        if not self.cluster:
            return None
        if self.sentinels:
            return "WXPUSH_REDIS_CLUSTER", "a cluster has no sentinels; set one or the other"
        if self.url is None:
            return "WXPUSH_REDIS_URL", "missing; give any node of the cluster"
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return "WXPUSH_REDIS_URL", "a cluster is reached over TCP, not a unix socket"
        if parts.path.strip("/") not in ("", "0"):
            return "WXPUSH_REDIS_URL", "a cluster has only database 0"
        return None


Target = RedisTarget | str | None


def open_redis(target: Target, *, connections: int = MAX_CONNECTIONS) -> Redis:
    """Return an asyncio Redis client for ``target`` (a :class:`RedisTarget` or a URL) holding
    at most ``connections`` (pub/sub included), or the embedded store for ``None``."""
    if isinstance(target, RedisTarget) and target.sentinels:
        return _open_sentinel(target, connections)
    if isinstance(target, RedisTarget) and target.cluster and target.url is not None:
        return _open_cluster(target.url, connections)
    url = target.url if isinstance(target, RedisTarget) else target
    if url is None:
        from fakeredis import FakeAsyncRedis  # imported lazily: only the embedded mode needs it

        logger.warning(
            "WXPUSH_REDIS_URL is not set: using an embedded in-memory Redis (fakeredis); "
            "this server must run as a single process and loses its state on restart"
        )
        client: Redis = FakeAsyncRedis()
        return client
    pool = FairPool.from_url(url, **_pool_options(connections))
    return Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


def _pool_options(connections: int) -> dict[str, Any]:
    """What every pool of ours is built with, one server's or the Sentinel master's."""
    return {
        "max_connections": connections,
        "timeout": POOL_WAIT,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 30,
        "retry_on_timeout": False,
        # One immediate retry when a pooled connection turns out dead (a Redis restart closed
        # it: the retry connects again), never redis-py's default of ten with backoff. Only
        # for ConnectionError: Retry's default list also holds TimeoutError, and a command
        # that timed out went to a server that is hung (sending it again only doubles the
        # wait) and may still run it once it wakes.
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "client_name": f"wxpush-{os.getpid()}",  # CLIENT LIST tells each process's connections
    }


class FairPool(BlockingConnectionPool):
    """redis-py's blocking pool, with its callers served in the order they came.

    redis-py's own wakes one waiter when a connection comes back, but a caller arriving at that
    moment takes it first: under steady load a waiter can lose every time for ``timeout`` s
    and fail (``No connection available.``: a 503 with Redis healthy; 11 of 20,000 commands by
    32 callers on 3 connections, each waiting the whole second, while the p99 wait was 0.4 ms).
    Here every caller first takes a turn from a FIFO semaphore of ``max_connections``, so no
    one barges past a waiter.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(self.max_connections)
        self._held: set[int] = set()  # the connections handed out with a turn

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                await self._turns.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            self._turns.release()
            raise
        self._held.add(id(connection))
        return connection

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        if id(connection) in self._held:  # not one refused inside get_connection
            self._held.discard(id(connection))
            self._turns.release()


class _SentinelBlockingPool(SentinelConnectionPool, FairPool):
    """The master's connections, found through the sentinels (and again after a failover:
    a connection that fails asks them anew), queued for as :func:`open_redis`'s are."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # closing for good: the sentinels' connections too
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def _open_sentinel(target: RedisTarget, connections: int) -> Redis:
    options: dict[str, Any] = {}
    if target.url is not None:
        options = dict(parse_url(target.url))
        for name in ("host", "port", "path"):
            options.pop(name, None)
        if issubclass(options.pop("connection_class", object), SSLConnection):
            options["ssl"] = True
    timeouts = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT}
    # redis-py annotates Sentinel in some releases and not in others
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call,unused-ignore]
    pool = _SentinelBlockingPool(target.service, sentinel, **_pool_options(connections), **options)  # type: ignore[no-untyped-call]
    return Redis.from_pool(pool)


def _open_cluster(url: str, connections: int) -> Redis:
    options = _pool_options(connections)
    for name in ("max_connections", "timeout", "retry", "retry_on_timeout"):
        options.pop(name)
    # On each node: the hub's pub/sub (if it waits on a scene there), the hot path's
    # pipelined connection, and the rest for the turns of everything else.
    turns = max(1, connections - 2)
    return cast(Redis, open_cluster(url, turns=turns, wait=POOL_WAIT, **options))


async def ping(client: Any) -> None:
    """The server answers (on a cluster: every master)."""
    if isinstance(client, ClusterClient):
        await client.ping_masters()
    else:
        await client.ping()


def open_connections(
    url: Target, *, connections: int = MAX_CONNECTIONS
) -> tuple[Redis, HotCommands]:
    """A server's Redis: the client (pool and pub/sub) and the hot path's commands, holding
    ``connections`` in all (on a cluster, on each master: the hot path there has a pipelined
    connection to each, :mod:`wxpush.infra.lanes`). With the embedded store the client
    serves the hot path too."""
    if isinstance(url, RedisTarget) and url.cluster:
        cluster = open_redis(url, connections=connections)
        assert isinstance(cluster, ClusterClient)
        lanes = ClusterLanes(cluster, timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
        return cluster, lanes
    if isinstance(url, RedisTarget) and not url.sentinels:
        url = url.url
    if url is None or (isinstance(url, str) and not PipelinedConnection.serves(url)):
        client = open_redis(url, connections=connections)
        return client, hot_commands(client)
    client = open_redis(url, connections=connections - 1)
    return client, PipelinedConnection(
        client, timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT
    )
