"""The Redis Cluster fixture itself: three masters serving the slots, each with a replica in
sync, and a killed master's slots taken over by its replica, the data it had replicated read
there by redis-py's cluster client."""

from __future__ import annotations

from redis.cluster import RedisCluster as ClusterClient

from tests.cluster import MASTERS, RedisCluster, redis_cluster
from tests.sentinel import ask

__all__ = ["redis_cluster"]


def spread_keys(cluster: RedisCluster) -> dict[int, str]:
    """One key per master (keys of different hash tags until every master has one)."""
    found: dict[int, str] = {}
    for n in range(100):
        found.setdefault(cluster.master_of(f"{{tag{n}}}:k"), f"{{tag{n}}}:k")
        if len(found) == MASTERS:
            return found
    raise AssertionError(f"100 hash tags on {len(found)} masters only")


def test_keys_of_different_tags_land_on_different_masters(redis_cluster: RedisCluster) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == MASTERS
    assert sorted(redis_cluster.replica) == masters
    assert sorted([*masters, *redis_cluster.replica.values()]) == sorted(redis_cluster.ports)
    keys = spread_keys(redis_cluster)
    assert sorted(keys) == masters
    client = ClusterClient.from_url(redis_cluster.seed_url)
    try:
        for port, key in keys.items():
            assert client.set(key, str(port))
        for port, key in keys.items():
            assert ask(port, "GET", key) == str(port).encode()  # written on master_of(key)
            redis_cluster.replicate(port)
            assert ask(redis_cluster.replica[port], "DBSIZE") == 1  # and on its replica
    finally:
        client.close()


def test_a_killed_masters_replica_serves_its_keys(redis_cluster: RedisCluster) -> None:
    client = ClusterClient.from_url(redis_cluster.seed_url)
    try:
        keys = spread_keys(redis_cluster)
        for port, key in keys.items():
            assert client.set(key, f"v{port}")
            redis_cluster.replicate(port)
        # the seed's node if it is a master: the client then has lost the node it began with
        old = redis_cluster.ports[0] if redis_cluster.ports[0] in keys else min(keys)
        redis_cluster.kill(old)
        new = redis_cluster.wait_failover(old)
        assert new != old
        assert redis_cluster.master_of(keys[old]) == new
        assert sorted(redis_cluster.masters()) == sorted({*keys, new} - {old})
        assert ask(new, "GET", keys[old]) == f"v{old}".encode()
        for port, key in keys.items():  # the same client, across the failover
            assert client.get(key) == f"v{port}".encode()
    finally:
        client.close()
    fresh = ClusterClient.from_url(redis_cluster.seed_url)  # seeded by a node still alive
    try:
        assert fresh.get(keys[old]) == f"v{old}".encode()
    finally:
        fresh.close()
