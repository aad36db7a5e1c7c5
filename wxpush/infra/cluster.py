"""Redis Cluster (SPEC §17): redis-py's cluster client, made to fail and queue as ours do.

:func:`open_cluster` gives a :class:`ClusterClient`: redis-py's ``RedisCluster`` (it finds every
node from one seed, routes each command by its key's slot and follows ``MOVED`` / ``ASK``),
with three changes that make it behave like the single server's client
(:mod:`wxpush.infra.redis_client`):

- **Callers queue in turn.** redis-py's cluster node refuses a command outright
  (``MaxConnectionsError``) once its connections are all busy. Here every command and
  pipeline first takes a turn from a FIFO semaphore of ``connections``, for at most
  ``POOL_WAIT`` s: a node never holds more than ``connections`` of this process's, and a
  burst waits instead of failing.
- **A command that timed out is never sent again.** redis-py retries on ``TimeoutError``;
  a script that timed out may still run once the node wakes, and a refresh token's rotation
  run twice would read as its reuse. A lost connection is retried once, as the pool's is.
- **A cluster that cannot serve is unavailable.** ``CLUSTERDOWN``, a slot no master covers,
  ``TRYAGAIN`` mid-resharding, redirections that never settle: each is raised as redis-py's
  ``ConnectionError`` (a 503 that says to try again), like a server that is away.

Keys that one script or transaction touches share a hash tag (``{...}``), so they are on one
slot; everything else is one key per command.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

# ClusterError: CLUSTERDOWN, redirections that never settled; AskError: MOVED too;
# RedisClusterException: no node reachable to read the map from, a slot no master serves
_UNSERVED = (ClusterError, RedisClusterException, TryAgainError, AskError)


class ClusterClient(RedisCluster):
    """redis-py's cluster client with turns, no resend after a timeout, and 503s (see the
    module)."""

    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]  # not TimeoutError
        RedisConnectionError, ClusterDownError, SlotNotCoveredError,
    )  # fmt: skip

    def __init__(self, *args: Any, turns: int, wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turns = asyncio.Semaphore(turns)
        self.turn_wait = wait

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with _turn(self):
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py's error
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]

    async def ping_masters(self) -> None:
        """Every master answers (``/readyz``, ``wxpush check``)."""
        await self.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)

    def masters(self) -> list[ClusterNode]:
        return list(self.get_primaries())


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, ClusterClient)
        async with _turn(client):
            return await super().execute(raise_on_error, allow_redirections)


class _turn:
    """A caller's turn at the cluster's connections, with its errors made ours."""

    def __init__(self, client: ClusterClient) -> None:
        self._client = client

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self._client.turn_wait):
                await self._client.turns.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._client.turns.release()
        if isinstance(exc, _UNSERVED):
            raise RedisConnectionError(f"Redis Cluster cannot serve this now: {exc}") from exc


def open_cluster(url: str, *, turns: int, wait: float, **options: Any) -> ClusterClient:
    """The cluster that ``url`` (any node) is a seed of: at most ``turns`` commands out at once
    (each caller waits ``wait`` s at most for one); ``options`` go to every node's connections."""
    return ClusterClient.from_url(  # type: ignore[return-value]
        url,
        turns=turns,
        wait=wait,
        # the turns keep a node at ``turns`` connections; redis-py gives a connection back
        # to its node a moment late after an error (from a task), so a little headroom
        max_connections=turns + 2,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        require_full_coverage=True,
        **options,
    )
