"""``wxpush serve`` as a real process, the way it runs in production."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.util import TIMEOUT, free_port, wait_for


def _more_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


@dataclass
class ServerProcess:
    """One ``wxpush serve --workers 1`` on a free loopback port, stopped by pid."""

    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)  # more ``wxpush serve`` options
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
        with (self.workdir / f"server-{self.port}.log").open("wb") as log:
            self.proc = self._spawn(clean, log)
        wait_for(self._healthy, timeout=TIMEOUT * 3)
        return self

    def _spawn(self, clean: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "wxpush", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), *self.args],
            env={**clean, "WXPUSH_LOG_LEVEL": "warning", **self.env},
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_more_files,
            start_new_session=True,  # its own process group: uvicorn's workers stop with it
        )  # fmt: skip

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        return httpx.get(self.url + "/healthz", timeout=1).status_code == 200

    def log(self) -> str:
        return (self.workdir / f"server-{self.port}.log").read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        stop_group(self.proc, sig)
        self.proc = None


@contextlib.contextmanager
def run_demo(
    workdir: Path, port: int = 0, *, timeout: float = TIMEOUT * 2, **env_extra: str
) -> Iterator[str]:
    """``wxpush demo`` as a user starts it (no WXPUSH_ variables but ``env_extra``), up and
    answering ``/healthz`` within ``timeout`` s; yields its base URL, stopped by pid after."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")} | env_extra
    log_path = workdir / "demo.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wxpush", "demo", "--port", str(port)],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")
        return httpx.get(base + "/healthz", timeout=1).status_code == 200

    try:
        wait_for(up, timeout=timeout)
        yield base
    finally:
        stop_group(proc, signal.SIGTERM)


def stop_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group ``proc`` leads (a server and any workers it spawned), wait
    for ``proc``, SIGKILL the group if it lingers, and reap what is left of it: a test
    leaves no process behind, even when it kills the server on purpose."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=TIMEOUT * 2)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers orphaned by a killed parent
