"""A real PostgreSQL for the tests: ``initdb`` into a temporary directory, one server per run.

Registered as a pytest plugin from ``tests/conftest.py``. PostgreSQL refuses to run as root,
so when the tests run as root the cluster belongs to an unprivileged user (``nobody``, or a
``wxpush-test`` system user created on first need) and lives in a directory that user owns.
Missing binaries fail the tests with a clear message: they are never skipped.

Fixtures: ``postgres_server`` (the process, which ``stop``/``start`` to simulate an outage, or
``frozen`` to hang), ``postgres_url`` (its admin database), ``postgres_db_url`` (a fresh
database per test) and ``sqlite_url`` (a SQLite file in the test's own temporary directory).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.util import TIMEOUT, free_port, wait_for

_BINARIES = ("initdb", "postgres", "pg_isready")
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


def find_bindir() -> Path:
    """The directory holding initdb, postgres and pg_isready; fail loudly when there is none."""
    candidates = [os.path.dirname(shutil.which("postgres") or "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if directory and all(os.access(Path(directory, b), os.X_OK) for b in _BINARIES):
            return Path(directory)
    pytest.fail(
        "PostgreSQL is not installed: initdb/postgres/pg_isready are neither on PATH nor in "
        "/usr/lib/postgresql/*/bin (apt-get install postgresql)",
        pytrace=False,
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who owns the cluster: ourselves, unless we are root (which postgres refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "wxpush-test"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "wxpush-test"], check=True)
    return pwd.getpwnam("wxpush-test")


@dataclass
class PostgresServer:
    """A postgres process we own on a free loopback port."""

    bindir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def initdb(self) -> None:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        (self.root / "sock").mkdir()
        if self.user is not None:
            os.chown(self.root / "sock", self.user.pw_uid, self.user.pw_gid)
        command = [str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", "postgres"]
        command += ["--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, check=False, **self._run_as()
        )
        assert done.returncode == 0, f"initdb failed: {done.stderr.decode(errors='replace')}"

    def start(self) -> None:
        command = [str(self.bindir / "postgres"), "-D", str(self.root / "data")]
        command += ["-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.root / "sock")]
        for option in _FAST:
            command += ["-c", option]
        with open(self.root / "postgres.log", "ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.root, stdout=log, stderr=log, **self._run_as()
            )
        wait_for(self._ready, timeout=TIMEOUT * 4)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.root / "postgres.log").read_text(errors="replace")
            pytest.fail(f"postgres exited at start-up:\n{log[-2000:]}", pytrace=False)
        command = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(command, check=False).returncode == 0

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """PostgreSQL hung, not dead: the postmaster and every backend stopped (SIGSTOP)
        with their sockets open, so connects and statements hang instead of failing; they
        go on (SIGCONT) on exit."""
        assert self.proc is not None
        stopped = [self.proc.pid]
        os.kill(self.proc.pid, signal.SIGSTOP)  # first: it starts no backend from now on
        try:
            for pid in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):  # one that just ended
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are cut, as in a real outage, and a restart works."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        self.proc = None


def _children(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (the postmaster's backends and workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole run, removed afterwards."""
    bindir = find_bindir()
    # Not pytest's tmp dir: that one is private to root, and the server may run as nobody.
    root = Path(tempfile.mkdtemp(prefix="wxpush-pg-"))
    server = PostgresServer(bindir, root, free_port(), _unprivileged_user())
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The server's admin database, as an async SQLAlchemy URL."""
    return postgres_server.url


_numbers = itertools.count(1)


@pytest.fixture
async def postgres_db_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database for one test (dropped afterwards)."""
    if postgres_server.proc is None:  # a test that simulated an outage failed midway
        postgres_server.start()
    name = f"test_{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(postgres_server.dsn, timeout=TIMEOUT)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
    if postgres_server.proc is None:
        postgres_server.start()
    admin = await asyncpg.connect(postgres_server.dsn, timeout=TIMEOUT)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A real SQLite file, in a directory that does not exist yet (the engine creates it)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'wxpush.db'}"
