"""Where bench/push.py's Redis and servers run, and what each server holds on each Redis node.

- :class:`Store`: the Redis of a run, one ``redis-server`` (``--redis single``, started by
  ``callback_http.start_redis``) or a Redis Cluster (``--redis cluster``): three masters and
  no replica (a replica is not on the push path: a shard's message goes from its master to
  the subscribers connected there; no replica keeps the benchmark's second core for the
  clients), each a ``redis-server`` on a free loopback port with a free cluster-bus port
  (``--cluster-port``: redis's own choice, port + 10000, may be taken or above 65535), joined
  by ``redis-cli --cluster create``, stopped by pid.
- :class:`Server`: one ``wxpush serve``. With ``--servers 2``, A makes the scenes and takes
  the callbacks, B holds the waiters' WebSockets and the pollers, so every frame crosses
  processes (A publishes, B's hub hears it).
- :class:`NodeView`: ``CLIENT LIST`` of one node, by server (its connections are named
  ``wxpush-<pid>``), and the channels subscribed there.
- :class:`Placement`: on which node the waiters' and the scanned scenes are, and the push
  latency per node.
"""

from __future__ import annotations

import math
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from callback_http import free_port, start_redis, stop
from redis.crc import key_slot

MASTERS = 3
SLOTS = 16384
NODE_TIMEOUT_MS = 2000  # also the rejoin delay a new node waits before it says ok
START_TIMEOUT = 30.0
BENCH_CLIENT_NAME = "wxpush-bench"
SCENE_KEY = "wxpush:scene:{%s}"  # wxpush/login/messages.py: key and channel, hash-tagged
DESCRIBE = ("one redis-server", f"Redis Cluster, {MASTERS} masters and no replica")


def ask(port: int, *command: str | int) -> Any:
    """One command to the node on ``port``, on a connection of its own (named as ours)."""
    with redis.Redis(port=port, client_name=BENCH_CLIENT_NAME, socket_timeout=5) as client:
        return client.execute_command(*command)


class Store:
    """The Redis of a run (see the module); :meth:`stop` stops whatever :meth:`start` got to."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # port → redis-server
        self._slots: list[tuple[int, int, int]] = []  # first slot, last slot, master's port

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    @property
    def ports(self) -> list[int]:
        return list(self.procs)

    @property
    def url(self) -> str:
        """``WXPUSH_REDIS_URL``: the one server, or a cluster's seed (its first master)."""
        return f"redis://127.0.0.1:{self.ports[0]}" + ("" if self.cluster else "/0")

    def describe(self) -> str:
        return f"{DESCRIBE[self.cluster]} ({', '.join(f':{p}' for p in self.ports)})"

    def start(self) -> None:
        if not self.cluster:
            port = free_port()
            self.procs[port] = start_redis(port, self.workdir)
            return
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        cli = shutil.which("redis-cli")
        if not Path(binary).exists() or cli is None:
            sys.exit("redis-server or redis-cli not found (apt-get install -y redis-server)")
        for _ in range(MASTERS):
            port, bus = free_port(), free_port()
            self.procs[port] = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning",
                 "--logfile", str(self.workdir / f"redis-{port}.log"),
                 "--cluster-enabled", "yes",
                 "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                 "--cluster-port", str(bus), "--cluster-node-timeout", str(NODE_TIMEOUT_MS)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        self._wait(lambda: all(self._pong(p) for p in self.ports), "a node never answered PING")
        addrs = [f"127.0.0.1:{port}" for port in self.ports]
        args = [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError("redis-cli --cluster create hung") from None
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self._wait(self._ready, "the cluster never said cluster_state:ok on every node")
        for first, last, master, *_ in ask(self.ports[0], "CLUSTER", "SLOTS"):
            self._slots.append((int(first), int(last), int(master[1])))

    def stop(self) -> None:
        for port, proc in reversed(self.procs.items()):
            stop(proc, f"redis-server :{port}")

    def node_of(self, scene: str) -> int:
        """The port of the node that holds ``scene``'s key and carries its channel."""
        if not self.cluster:
            return self.ports[0]
        slot = key_slot((SCENE_KEY % scene).encode())
        for first, last, port in self._slots:
            if first <= slot <= last:
                return port
        raise RuntimeError(f"slot {slot} is served by no master")

    def sample(self, scenes: Sequence[str], k: int) -> list[str]:
        """``k`` of ``scenes`` at random; on a cluster, as many from each master as there can
        be (a master with fewer scenes gives all it has), so every shard is measured."""
        if not self.cluster:
            return random.sample(scenes, min(k, len(scenes)))
        groups: dict[int, list[str]] = {}
        for scene in scenes:
            groups.setdefault(self.node_of(scene), []).append(scene)
        for group in groups.values():
            random.shuffle(group)
        out: list[str] = []
        while len(out) < k and any(groups.values()):
            for group in groups.values():
                if group and len(out) < k:
                    out.append(group.pop())
        random.shuffle(out)
        return out

    def _pong(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _ready(self) -> bool:
        for port in self.ports:
            info = ask(port, "CLUSTER", "INFO").decode()
            wanted = ("cluster_state:ok", f"cluster_slots_ok:{SLOTS}",
                      f"cluster_known_nodes:{MASTERS}")  # fmt: skip
            if not all(w in info for w in wanted):
                return False
        return True

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server :{port} exited with {proc.returncode}"
                                       f"{self._log(port)}")  # fmt: skip
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{what} in {START_TIMEOUT:.0f} s" + "".join(map(self._log, self.ports)))

    def _log(self, port: int) -> str:
        log = self.workdir / f"redis-{port}.log"
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        return "".join(f"\n  :{port} {line}" for line in tail)


@dataclass(frozen=True, slots=True)
class Server:
    label: str  # "A" (scenes, callbacks), "B" (waiters, pollers); "" when there is one
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node's ``CLIENT LIST`` (ours left out) and its channels."""

    port: int
    conns: dict[str, tuple[int, int]]  # server label → (connections, of which pub/sub)
    others: int  # connections neither ours nor a server's
    channels: int  # channels and shard channels subscribed on this node

    @classmethod
    def of(cls, port: int, servers: Sequence[Server], cluster: bool) -> NodeView:
        client = redis.Redis(port=port, client_name=BENCH_CLIENT_NAME, socket_timeout=5)
        try:
            rows = [r for r in client.client_list() if r.get("name") != BENCH_CLIENT_NAME]
            channels = len(client.pubsub_channels())
            if cluster:
                channels += len(client.pubsub_shardchannels())
        finally:
            client.close()
        label = {f"wxpush-{s.pid}": s.label for s in servers}
        conns: dict[str, tuple[int, int]] = {s.label: (0, 0) for s in servers}
        others = 0
        for row in rows:
            who = label.get(str(row.get("name")))
            if who is None:
                others += 1
                continue
            subscribed = "P" in str(row.get("flags", "")) or any(
                int(row.get(f, 0) or 0) > 0 for f in ("sub", "psub", "ssub")
            )
            total, pubsub = conns[who]
            conns[who] = (total + 1, pubsub + subscribed)
        return cls(port, conns, others, channels)


def node_views(store: Store, servers: Sequence[Server]) -> list[NodeView]:
    return [NodeView.of(port, servers, store.cluster) for port in store.ports]


def totals(views: Sequence[NodeView], label: str) -> tuple[int, int, int]:
    """Server ``label``'s connections and pub/sub connections on all nodes, and the channels
    subscribed on all nodes."""
    conns = sum(v.conns[label][0] for v in views)
    pubsub = sum(v.conns[label][1] for v in views)
    return conns, pubsub, sum(v.channels for v in views)


def brief(views: Sequence[NodeView]) -> str:
    """``:port A 3 (0), B 4 (1), 12 channels`` per node, for a progress line."""
    parts = []
    for v in views:
        by = ", ".join(f"{k or 'server'} {c} ({p})" for k, (c, p) in v.conns.items())
        extra = f", {v.others} other" if v.others else ""
        parts.append(f":{v.port} {by}{extra}, {v.channels:,} channels")
    return "; ".join(parts)


@dataclass(slots=True)
class Placement:
    """What ``--redis`` / ``--servers`` add to one run's result."""

    nodes_idle: list[NodeView] = field(default_factory=list)
    nodes_waiting: list[NodeView] = field(default_factory=list)
    waiters: Counter[int] = field(default_factory=Counter)  # node → waiters' scenes on it
    scans: Counter[int] = field(default_factory=Counter)  # node → scans fired on its scenes
    push: dict[int, list[float]] = field(default_factory=dict)  # node → latencies, sorted
    front_rss_mib: float = math.nan  # A with N waiters on B
    front_idle_cpu: float = math.nan  # A's % of a core over B's idle window

    def place(self, store: Store, waiting: Sequence[str], sample: Sequence[str],
              latency: Mapping[str, float]) -> None:  # fmt: skip
        self.waiters = Counter(store.node_of(s) for s in waiting)
        self.scans = Counter(store.node_of(s) for s in sample)
        per: dict[int, list[float]] = {}
        for scene, seconds in latency.items():
            per.setdefault(store.node_of(scene), []).append(seconds)
        self.push = {node: sorted(v) for node, v in per.items()}


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{1000 * value:.2f}"


def report(rows: Sequence[tuple[int, Placement]], kind: str, servers: int) -> None:
    """The per-node table: ``rows`` are (N, its placement)."""
    who = ["A", "B"] if servers == 2 else [""]
    roles = (
        "server A makes the scenes and takes the callbacks, server B holds the waiters' "
        "WebSockets and the pollers (every frame crosses processes; RSS, idle CPU and the "
        "push metric above are B's)"
        if servers == 2
        else "one server"
    )
    redis_is = DESCRIBE[kind == "cluster"]
    print(f"\n### Per Redis node ({redis_is}; {roles})\n")
    heads = " | ".join(f"{k or 'server'} conns (pub/sub)" for k in who)
    print(f"| waiters | node | waiters' scenes | scans | push p50 / p99 ms | {heads} | "
          "other conns | channels |")  # fmt: skip
    print("|---:|---|---:|---:|---:|" + "---:|" * len(who) + "---:|---:|")
    for n, p in rows:
        for i, v in enumerate(p.nodes_waiting):
            lat = p.push.get(v.port, [])
            seed = " (seed)" if kind == "cluster" and i == 0 else ""
            conns = " | ".join(f"{v.conns[k][0]} ({v.conns[k][1]})" for k in who)
            print(f"| {n:,} | :{v.port}{seed} | {p.waiters[v.port]:,} | {p.scans[v.port]:,} | "
                  f"{_ms(_pct(lat, 0.5))} / {_ms(_pct(lat, 0.99))} | {conns} | {v.others} | "
                  f"{v.channels:,} |")  # fmt: skip
        views = p.nodes_waiting
        sums = " | ".join(f"**{totals(views, k)[0]} ({totals(views, k)[1]})**" for k in who)
        on = sum(1 for v in views if p.waiters[v.port])
        print(f"| {n:,} | all ({on} of {len(views)} hold waiters) | {sum(p.waiters.values()):,}"
              f" | {sum(p.scans.values()):,} | | {sums} | {sum(v.others for v in views)} | "
              f"{sum(v.channels for v in views):,} |")  # fmt: skip
    for n, p in rows:
        extra = f"with no waiter: {brief(p.nodes_idle)}"
        if servers == 2:
            extra += (f"; server A with the waiters on B: RSS {p.front_rss_mib:.0f} MiB, CPU "
                      f"{p.front_idle_cpu:.2f} % of a core over B's idle window")  # fmt: skip
        print(f"- N = {n:,}: {extra}")
