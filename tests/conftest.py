"""Shared fixtures: a real redis-server on a free loopback port, started once per session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import uvloop

from tests.util import TIMEOUT, free_port, wait_for

pytest_plugins = ["tests.pg"]

__all__ = ["TIMEOUT", "free_port", "wait_for"]


@dataclass
class RedisServer:
    """A redis-server process we own; ``stop``/``start`` simulate an outage."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; run the README's test command"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                "--maxclients",
                "20000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis(port=self.port, socket_timeout=0.5).ping())

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Redis hung, not dead: the process stopped (SIGSTOP) with its sockets open, so
        connects and writes succeed and no reply comes; it goes on (SIGCONT) on exit."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=TIMEOUT)
            self.proc = None

    def restart(self) -> None:
        """Stop Redis cleanly, keeping its data on disk, and start it again (data reloaded)."""
        assert self.proc is not None
        with contextlib.suppress(redis.ConnectionError):  # it closes our connection as it goes
            self.client().shutdown(save=True)
        self.proc.wait(timeout=TIMEOUT)
        self.proc = None
        self.start()
        (self.workdir / "dump.rdb").unlink(missing_ok=True)  # later SIGKILL restarts start empty

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=TIMEOUT)


def pytest_sessionstart(session: pytest.Session) -> None:
    """With ``WXPUSH_TEST_INSTALLED=1`` (the README's test command) the suite must test the
    installed wheel: stop at once if ``wxpush`` would be imported from the checkout."""
    if os.environ.get("WXPUSH_TEST_INSTALLED") != "1":
        return
    import wxpush

    checkout = Path(__file__).resolve().parents[1]
    if checkout in Path(wxpush.__file__).resolve().parents:
        raise pytest.UsageError(
            f"wxpush is imported from the checkout ({wxpush.__file__}), not the installed "
            "wheel: run pytest from the test virtualenv with --import-mode=append"
        )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on the standard loop; those marked ``uvloop`` on uvloop as well."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if item.get_closest_marker("uvloop"):
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop, freeze, lock or restart."""
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_env() -> dict[str, str]:
    """Settings of Redis beside ``WXPUSH_REDIS_URL`` for a server under test (a module on a
    cluster sets its own)."""
    return {}


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the shared redis-server for each test."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url
