"""A Redis Cluster on 127.0.0.1: three masters and a replica of each, six real redis-servers
on free ports, joined by ``redis-cli --cluster create`` and stopped by pid. Failover is quick
(a master unanswering for a second is failing, and its replica may always stand) so a
test can kill a master and wait for its replica's promotion; a node's log is
``<workdir>/redis-<port>.log``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import redis

from tests.sentinel import ask
from tests.util import TIMEOUT, free_port, wait_for

SLOTS = 16384
MASTERS = 3
NODE_TIMEOUT_MS = 1000
FAILOVER = TIMEOUT * 2  # failing after 1 s, then the replica's election (after 0.5-1 s): ~2.5 s


@dataclass
class Node:
    """One line of ``CLUSTER NODES``."""

    id: str
    port: int
    flags: set[str]
    master_id: str  # "-" for a master
    slots: list[str]

    @property
    def alive_master(self) -> bool:
        return "master" in self.flags and not self.flags & {"fail", "fail?"} and bool(self.slots)


@dataclass
class RedisCluster:
    workdir: Path
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(MASTERS * 2)])
    # the cluster bus's ports, free ones too (redis's own choice, port + 10000, may be taken or
    # above 65535: redis-server then exits at once)
    bus_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(MASTERS * 2)])
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    replica: dict[int, int] = field(default_factory=dict)  # master's port → its replica's, at start

    @property
    def seed_url(self) -> str:
        """``redis://`` of a node alive now (the first port while it is up): a client's seed."""
        return f"redis://127.0.0.1:{self.live()[0]}"

    def live(self) -> list[int]:
        """The ports of the nodes not killed, in ``ports`` order."""
        return [port for port in self.ports if port in self.procs]

    def start(self) -> None:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            self._spawn(port, bus)
        for port in self.ports:
            self._wait(partial(ask, port, "PING"), f"redis-server on {port} never answered")
        binary = shutil.which("redis-cli")
        assert binary, "redis-cli is not installed; run the README's test command"
        addrs = [f"127.0.0.1:{port}" for port in self.ports]
        args = [binary, "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT * 6)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"redis-cli --cluster create hung:\n{e.stdout!r}") from None
        said = f"{done.stdout}{done.stderr}"
        assert done.returncode == 0, f"redis-cli --cluster create failed:\n{said}"
        # redis-cli returns once the nodes agree on the slots, while gossip has not yet told
        # every node which are the replicas (cluster_size:1 for a moment), and a master says
        # cluster_state:fail for a node timeout more (its rejoin delay after a minority)
        self._wait(self._ready, "the cluster never became ready", TIMEOUT * 3)
        nodes = self.nodes()
        port_of = {node.id: node.port for node in nodes}
        self.replica = {port_of[n.master_id]: n.port for n in nodes if n.master_id != "-"}

    def nodes(self, port: int | None = None) -> list[Node]:
        """``CLUSTER NODES`` as the node on ``port`` (by default the first alive) says now."""
        text = ask(port or self.live()[0], "CLUSTER", "NODES").decode()
        found = []
        for line in text.splitlines():
            id_, addr, flags, master_id, _, _, _, _, *slots = line.split()
            found.append(Node(id_, int(addr.split("@")[0].rsplit(":", 1)[1]),
                              set(flags.split(",")), master_id, slots))  # fmt: skip
        return found

    def masters(self) -> list[int]:
        """The ports of the masters serving slots now (a failed one is no longer among them)."""
        return sorted(node.port for node in self.nodes() if node.alive_master)

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot, as ``CLUSTER SLOTS`` says now."""
        port = self.live()[0]
        slot = int(ask(port, "CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in ask(port, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise AssertionError(f"slot {slot} of {key!r} is served by no master")

    def move_slot(self, key: str, to: int) -> None:
        """Reshard: move ``key``'s slot, its keys with it, to the master on ``to`` (as
        ``redis-cli --cluster reshard`` does: IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE)."""
        source = self.master_of(key)
        slot = int(ask(source, "CLUSTER", "KEYSLOT", key))
        ids = {node.port: node.id for node in self.nodes() if node.alive_master}
        ask(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to])
        while keys := ask(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            ask(source, "MIGRATE", "127.0.0.1", to, "", 0, int(TIMEOUT * 1000), "KEYS", *keys)
        for port in ids:
            ask(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[to])
        self._wait(lambda: all(self.master_of(key) == to for _ in (0,)), f"slot {slot} moved")

    def replicate(self, port: int) -> None:
        """Wait until the replica has every write of the master on ``port``."""
        assert ask(port, "WAIT", 1, int(TIMEOUT * 1000)) == 1

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)

    def failover_done(self, old: int) -> bool:
        """Whether the replica of the (killed) master on ``old`` serves its slots now, and
        every node alive says so and ``cluster_state:ok``."""
        try:
            if ask(self.replica[old], "ROLE")[0] != b"master":
                return False
            for port in self.live():
                owners = {int(m[1]) for _, _, m, *_ in ask(port, "CLUSTER", "SLOTS")}
                if old in owners or not self._ok(port):
                    return False
        except redis.RedisError:
            return False
        return True

    def wait_failover(self, old: int, timeout: float = FAILOVER) -> int:
        """Wait for :meth:`failover_done`; the promoted replica's port."""
        self._wait(lambda: self.failover_done(old), f"no failover of {old}", timeout)
        return self.replica[old]

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    def _spawn(self, port: int, bus: int) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; run the README's test command"
        workdir = str(self.workdir)
        self.procs[port] = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--logfile", f"{workdir}/redis-{port}.log",
             "--cluster-enabled", "yes", "--cluster-config-file", f"{workdir}/nodes-{port}.conf",
             "--cluster-port", str(bus), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # a replica may stand however long since it last heard its master
             "--cluster-replica-validity-factor", "0",
             "--cluster-allow-reads-when-down", "no",
             # the replica's first sync at once, not after diskless sync's 5 s wait for others
             "--repl-diskless-sync-delay", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _ok(self, port: int) -> bool:
        info = ask(port, "CLUSTER", "INFO").decode()
        return "cluster_state:ok" in info and f"cluster_slots_ok:{SLOTS}" in info

    def _ready(self) -> bool:
        """Every node: ``cluster_state:ok``, every slot served, all six nodes known, three
        masters each with its replica; every replica's link to its master up."""
        try:
            for port in self.ports:
                nodes = self.nodes(port)
                masters = {n.id for n in nodes if n.alive_master}
                followed = {n.master_id for n in nodes if "slave" in n.flags}
                if not self._ok(port) or len(nodes) != MASTERS * 2 or len(masters) != MASTERS:
                    return False
                if followed != masters:
                    return False
                role = ask(port, "INFO", "replication")  # parsed by redis-py: a dict
                if role["role"] == "slave" and role["master_link_status"] != "up":
                    return False
        except redis.RedisError:
            return False
        return True

    def _wait(self, predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
        try:
            wait_for(predicate, timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"{what} within {timeout} s:\n{self._state()}") from None

    def _state(self) -> str:
        """What every node alive says of the cluster (or its log's end), for a failure's
        message."""
        told = []
        for port in self.live():
            try:
                info = ask(port, "CLUSTER", "INFO").decode().split("\r\n")[:7]
                told.append(f"{port}: {' '.join(info)}\n{ask(port, 'CLUSTER', 'NODES').decode()}")
            except redis.RedisError as e:
                log = (self.workdir / f"redis-{port}.log").read_text().splitlines()[-3:]
                told.append(f"{port}: {e!r}\n" + "\n".join(log))
        return "\n".join(told)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    found = RedisCluster(tmp_path / "cluster")
    found.workdir.mkdir()
    try:
        found.start()
        yield found
    finally:
        found.stop()
