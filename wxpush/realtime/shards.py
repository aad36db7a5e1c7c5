"""The hub's pub/sub connections: one to the one Redis, or one per cluster master it waits on.

A :class:`Shard` is one pub/sub connection and the channels it carries; it listens, and after
a failure reconnects with capped exponential backoff and subscribes its channels again
(:class:`wxpush.realtime.hub.Hub` tells their waiters ``RESYNC`` once each is confirmed).

Where a channel goes is a :class:`Route`:

- :class:`OneServer`: every channel on one connection (plain ``SUBSCRIBE``), which it keeps
  even when no channel is live, so that subscribing later is one command on an open
  connection.
- :class:`ClusterShards` (SPEC §17): a scene's channel is *sharded* (``SSUBSCRIBE``), carried
  by the master of its slot, so a process holds a connection only to a master it waits on,
  closed once it has carried no channel for :data:`IDLE_SECONDS`. After a failure (the
  master died, a ``MOVED``, the slot taken away by a resharding: ``sunsubscribe`` from the
  server), the cluster's map is read again and every channel whose slot another master now
  serves moves to that master's shard, re-confirmed and told ``RESYNC`` there (its state is
  in its key: nothing is missed).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any, Protocol

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wxpush.infra.cluster import ClusterClient

logger = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_CAP = 0.05, 5.0
KEEPALIVE = "wxpush:hub"
IDLE_SECONDS = 30.0  # a cluster shard that carried no channel this long is closed


class Owner(Protocol):
    """What a shard tells (the hub)."""

    def confirmed(self, shard: Shard, name: str) -> None: ...

    def heard(self, name: str, text: str) -> None: ...

    def reconnected(self) -> None: ...

    async def lost(self, shard: Shard) -> None: ...


class Route(Protocol):
    sharded: bool  # SSUBSCRIBE / smessage, and a shard that carries nothing closes

    async def node(self, name: str) -> str:
        """The shard that carries channel ``name``."""
        ...

    def pubsub(self, node: str) -> Any: ...

    async def refresh(self) -> None:
        """Learn again which node serves what (after a failure)."""
        ...

    async def close(self) -> None: ...


class OneServer:
    sharded = False

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def node(self, name: str) -> str:
        return ""

    def pubsub(self, node: str) -> Any:
        return self._redis.pubsub()

    async def refresh(self) -> None:
        return None

    async def close(self) -> None:
        return None


class ClusterShards:
    sharded = True

    def __init__(self, cluster: ClusterClient) -> None:
        self._cluster = cluster
        self._clients: dict[str, Redis] = {}  # one pub/sub client per master, as it is needed

    async def node(self, name: str) -> str:
        try:
            await self._cluster.initialize()  # the map, read once (and after a failure)
            found = self._cluster.nodes_manager.get_node_from_slot(self._cluster.keyslot(name))
        except (KeyError, IndexError, RedisClusterException) as exc:
            raise RedisConnectionError("no master of the cluster serves this channel") from exc
        return str(found.name)

    def pubsub(self, node: str) -> Any:
        client = self._clients.get(node)
        if client is None:
            found = self._cluster.get_node(node_name=node)
            if found is None:
                raise RedisConnectionError(f"the cluster has no node {node} any more")
            # no retry of its own: a lost connection must reach the shard (which re-reads
            # the map and tells RESYNC), never be mended silently underneath it
            options = {**found.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
            # two: a shard that has just let go of its last channel may still be closing as
            # the next one starts (the pool keeps the connection for the one after)
            pool = ConnectionPool(
                connection_class=found.connection_class, max_connections=2, **options
            )
            client = self._clients[node] = Redis(connection_pool=pool)
        return client.pubsub()

    async def refresh(self) -> None:
        await self._cluster.nodes_manager.initialize()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            with suppress(RedisError, OSError):
                await client.aclose()


def route_for(redis: Any) -> Route:
    return ClusterShards(redis) if isinstance(redis, ClusterClient) else OneServer(redis)


class Shard:
    """One pub/sub connection (see the module), subscribed to ``wxpush:hub`` as well, so that
    it stays open (and its listener listening) whether or not a channel is live on it; the
    hub ends a shard of a cluster that has carried nothing for a while (:meth:`retire`)."""

    def __init__(self, owner: Owner, route: Route, node: str) -> None:
        self.node = node
        self.channels: set[str] = set()
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.retired = False  # the hub holds it no more: its listener ends
        self._owner = owner
        self._route = route
        self._pubsub: Any = None

    async def subscribe(self, name: str) -> None:
        self.channels.add(name)
        if self.connected.is_set():
            with suppress(RedisError, OSError):  # the listener subscribes again after a failure
                await self._command("subscribe", name)

    async def unsubscribe(self, name: str) -> None:
        self.channels.discard(name)
        if self.connected.is_set():
            with suppress(RedisError, OSError):
                await self._command("unsubscribe", name)

    def retire(self) -> None:
        self.retired = True
        if self.task is not None:
            self.task.cancel()  # its connection closes as the listener ends

    async def run(self) -> None:
        """Listen until cancelled (or retired)."""
        try:
            await self._run()
        finally:
            await self.close()

    async def _run(self) -> None:
        delay, first = BACKOFF_FIRST, True
        while not self.retired:
            try:
                await self._connect()
                if not first:
                    self._owner.reconnected()
                first, delay = False, BACKOFF_FIRST
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
                logger.warning("Redis pub/sub connection lost (%s); reconnecting in %.2f s",
                               type(exc).__name__, delay)  # fmt: skip
            except Exception:
                logger.exception("Redis pub/sub listener failed; reconnecting in %.2f s", delay)
            await self.close()
            await self._owner.lost(self)  # channels another node serves now move there
            if not self.retired:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)

    async def close(self) -> None:
        self.connected.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _connect(self) -> None:
        self._pubsub = self._route.pubsub(self.node)
        await self._pubsub.subscribe(KEEPALIVE)  # plain SUBSCRIBE: on a cluster node too
        done: set[str] = set()
        while todo := self.channels - done:  # and any added meanwhile
            for name in todo:  # one at a time: a cluster's are on many slots
                await self._command("subscribe", name)
            done |= todo
        self.connected.set()

    async def _command(self, verb: str, name: str) -> None:
        if self._pubsub is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        try:
            await getattr(self._pubsub, "s" + verb if self._route.sharded else verb)(name)
        except AttributeError as exc:  # redis-py's, on a connection closed meanwhile
            raise RedisConnectionError("the pub/sub connection is closing") from exc

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            kind = message["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            name = message["channel"].decode()
            if kind in ("message", "smessage"):
                data = message["data"]
                self._owner.heard(name, data.decode() if isinstance(data, bytes) else str(data))
            elif kind in ("subscribe", "ssubscribe") and name in self.channels:
                self._owner.confirmed(self, name)
            elif kind == "sunsubscribe" and name in self.channels:
                # not ours: the slot went to another master (a resharding)
                raise ResponseError(f"the cluster moved {name} elsewhere")
        raise RedisConnectionError("Redis ended the subscriptions")
