"""A Redis Sentinel set on 127.0.0.1: one master, one replica and three sentinels, each a
real redis-server on a free port, stopped by pid. Failover is quick (a master unanswering
for half a second is down) so a test can kill the master and wait for the replica's
promotion."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.util import TIMEOUT, free_port, wait_for

SERVICE = "mymaster"
DOWN_AFTER_MS = 500


@dataclass
class SentinelSet:
    workdir: Path
    ports: list[int] = field(default_factory=lambda: [free_port(), free_port()])
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinels(self) -> str:
        """``WXPUSH_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        master, replica = self.ports
        self._server(master)
        self._server(replica, "--replicaof", "127.0.0.1", str(master))
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._spawn(port, str(conf), "--sentinel")
        # ready once every sentinel knows the replica and the two other sentinels (their
        # hello messages go every 2 s): only then can they agree on a failover
        assert wait_for(self._ready, timeout=TIMEOUT * 3)

    def master_port(self) -> int:
        """The master's port as the sentinels say it."""
        _, port = ask(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def replicate(self, port: int) -> None:
        """Wait until the replica has every write of the master on ``port``."""
        assert ask(port, "WAIT", 1, int(TIMEOUT * 1000)) == 1

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    def _server(self, port: int, *extra: str) -> None:
        self._spawn(port, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                    "--dir", str(self.workdir), *extra)  # fmt: skip
        assert wait_for(lambda: ask(port, "PING"))

    def _spawn(self, port: int, *args: str) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; run the README's test command"
        self.procs[port] = subprocess.Popen(
            [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _ready(self) -> bool:
        try:
            if "online" not in str(ask(self.ports[0], "INFO", "replication")):
                return False  # the replica's first sync is not done
            for port in self.sentinel_ports:
                replicas = ask(port, "SENTINEL", "REPLICAS", SERVICE)
                others = ask(port, "SENTINEL", "SENTINELS", SERVICE)
                if len(replicas) < 1 or len(others) < 2:
                    return False
        except redis.RedisError:
            return False
        return True


def ask(port: int, *command: str | int) -> Any:
    """One command to the server on ``port``, on a connection of its own (closed after)."""
    with redis.Redis(port=port, socket_timeout=TIMEOUT) as client:
        return client.execute_command(*command)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    found = SentinelSet(tmp_path / "sentinel")
    found.workdir.mkdir()
    try:
        found.start()
        yield found
    finally:
        found.stop()
