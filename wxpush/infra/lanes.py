"""The hot path on a Redis Cluster: one pipelined connection to each master.

On one Redis the login's hot path (a scan's script, a waiter's read of its scene, a login's
first refresh token) shares one :class:`~wxpush.infra.pipeline.PipelinedConnection`. On a
cluster, :class:`ClusterLanes` holds one to each master it has sent to, and sends each
command to the master of its key's slot, from the map redis-py's cluster client keeps. Many
callers share each lane, so the hot path neither queues for the cluster client's turns nor
pays its per-command cost.

Redirections: a ``MOVED`` (the slot went elsewhere: a resharding, a failover) ran nothing,
so the map is read again and the command sent where the slot is now; an ``ASK`` (a slot
half-way through a migration) is left to the cluster client, which sends ``ASKING`` first.
A lane that fails (its master died) fails its callers, as the single lane does (a 503, never
sent again), and the map is read again before the next command, which finds the promoted
replica once the cluster has one.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError

from wxpush.infra.cluster import ClusterClient
from wxpush.infra.pipeline import Arg, PipelinedConnection, run_script

REDIRECTIONS = 3  # MOVED answers followed for one command at most


class ClusterLanes:
    """The hot path's commands (:class:`~wxpush.infra.pipeline.HotCommands`) on a cluster."""

    def __init__(self, cluster: ClusterClient, *, timeout: float, connect_timeout: float) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._lanes: dict[str, PipelinedConnection] = {}
        self._stale = False  # read the map again before the next command
        self._reading: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    async def execute(self, key: Arg, *args: Arg) -> Any:
        """Send one command about ``key`` to the master of its slot; its reply."""
        for _ in range(REDIRECTIONS):
            name, lane = await self._lane(key)
            try:
                return await lane.execute(*args)
            except RedisConnectionError:
                self._forget(name)
                raise
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("ASK "):
                    return await self._cluster.execute_command(*args)
                if not text.startswith("MOVED "):
                    if text.startswith(("CLUSTERDOWN", "TRYAGAIN")):
                        raise RedisConnectionError(f"Redis Cluster cannot serve: {text}") from exc
                    raise
                self._stale = True  # ran nothing: look again and send it there
        raise RedisConnectionError("Redis Cluster keeps moving this slot; try again")

    def register_script(self, script: str) -> ClusterScript:
        return ClusterScript(self, script)

    async def hgetall(self, name: str) -> dict[bytes, bytes]:
        flat = await self.execute(name, "HGETALL", name)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def get(self, name: str) -> Any:
        return await self.execute(name, "GET", name)

    async def set(self, name: str, value: Arg, ex: int | None = None) -> Any:
        if ex is None:
            return await self.execute(name, "SET", name, value)
        return await self.execute(name, "SET", name, value, "EX", ex)

    async def aclose(self) -> None:
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            await lane.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _lane(self, key: Arg) -> tuple[str, PipelinedConnection]:
        if self._stale:
            await self._read_map()
        try:
            await self._cluster.initialize()  # the map, read once
            slot = self._cluster.keyslot(key)
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
        except (KeyError, IndexError, RedisClusterException) as exc:
            self._stale = True
            raise RedisConnectionError("no master of the cluster serves this key") from exc
        lane = self._lanes.get(node.name)
        if lane is None:
            # a node's settings, in the shape a pipelined connection reads a client's
            pool = SimpleNamespace(connection_kwargs={**node.connection_kwargs, "host": node.host,
                                                      "port": node.port},
                                   connection_class=node.connection_class)  # fmt: skip
            lane = self._lanes[node.name] = PipelinedConnection(
                SimpleNamespace(connection_pool=pool),  # type: ignore[arg-type]
                timeout=self._timeout, connect_timeout=self._connect_timeout,
            )  # fmt: skip
        return node.name, lane

    def _forget(self, name: str) -> None:
        """A lane failed: its master may be gone (closed; the map is read again)."""
        self._stale = True
        lane = self._lanes.pop(name, None)
        if lane is not None:
            closing = asyncio.ensure_future(lane.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _read_map(self) -> None:
        """Read the cluster's map again, once for all the callers that find it stale."""
        if self._reading is None:
            self._stale = False
            self._reading = asyncio.ensure_future(self._cluster.nodes_manager.initialize())
            self._reading.add_done_callback(self._read)
        try:
            await asyncio.shield(self._reading)
        except Exception as exc:  # no node answers: a 503, and the next caller tries again
            self._stale = True
            raise RedisConnectionError(f"cannot read the Redis Cluster's map: {exc}") from exc

    def _read(self, task: asyncio.Task[None]) -> None:
        self._reading = None
        if not task.cancelled():
            task.exception()  # retrieved: the callers got it


class ClusterScript:
    """A Lua script run by ``EVALSHA`` on the lane of its first key's master, loaded there
    after a ``NOSCRIPT``."""

    def __init__(self, lanes: ClusterLanes, script: str) -> None:
        self._lanes = lanes
        self._script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    async def __call__(
        self, keys: Sequence[Arg] | None = None, args: Sequence[Arg] | None = None
    ) -> Any:
        if not keys:
            raise ValueError("a script on a cluster needs a key to route by")
        execute = functools.partial(self._lanes.execute, keys[0])
        return await run_script(execute, self.sha, self._script, keys, args)
