"""One Redis command on the login's hot path: redis-py's pool against wxpush's pipelined connection.

Starts its own ``redis-server`` (pinned to the last core, this process to the first), then
times the same Lua script (an ``HMGET`` of a scene-like hash, as the scan's transition reads)
through ``wxpush.infra.redis_client.open_redis`` (redis-py's ``BlockingConnectionPool``, as the
server
had it before the pipelined connection) and through ``wxpush.infra.pipeline.PipelinedConnection``,
alternating in rounds:

- **after idleness**: one command every ``--gap`` ms, like scans fired one at a time: wall
  time p50 / p99 from the call to the reply;
- **back to back**: CPU time per command, and the throughput of ``--concurrency`` callers
  sharing the client.

With ``--tls`` Redis listens on a TLS port only (a self-signed certificate made by
``openssl``) and both clients speak TLS: the pool is what a ``rediss://`` hot path used before
the pipelined connection spoke TLS.

Run from the repository root::

    python bench/redis_hop.py                      # 400 commands after a 20 ms gap, each way
    python bench/redis_hop.py --gap 2 --commands 1000
    python bench/redis_hop.py --tls
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop
from callback_http import free_port, pinned, start_redis, stop

from wxpush.infra.pipeline import PipelinedConnection
from wxpush.infra.redis_client import CONNECT_TIMEOUT, SOCKET_TIMEOUT, open_redis

SCRIPT = "return redis.call('HMGET', KEYS[1], 'status', 'account')"
Call = Callable[[], Awaitable[Any]]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def after_idle(calls: dict[str, Call], commands: int, gap: float) -> dict[str, list[float]]:
    """Alternate the clients, one command each per gap, so both see the same machine."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(commands):
        for name, call in calls.items():
            await asyncio.sleep(gap)
            started = time.perf_counter()
            await call()
            times[name].append(time.perf_counter() - started)
    return times


async def back_to_back(call: Call, commands: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per command, commands/s) with ``concurrency`` callers."""
    per = commands // concurrency

    async def caller() -> None:
        for _ in range(per):
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per * concurrency
    return 1e6 * cpu / done, done / wall


async def measure(port: int, args: argparse.Namespace, cert: Path | None) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    if cert is not None:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    pool = open_redis(url)
    pipelined = PipelinedConnection(pool, timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
    await pool.hset("wxpush:scene:bench", mapping={"status": "LOOP", "account": "default"})
    pooled, laned = pool.register_script(SCRIPT), pipelined.register_script(SCRIPT)
    calls: dict[str, Call] = {
        "redis-py pool": lambda: pooled(keys=["wxpush:scene:bench"]),
        "wxpush pipelined connection": lambda: laned(keys=["wxpush:scene:bench"]),
    }
    for call in calls.values():  # load the script, open the connections
        await call()
    idle = await after_idle(calls, args.commands, args.gap / 1000)
    over = "TLS; " if cert else ""
    print(f"\n{over}{args.commands} commands each, one every {args.gap:g} ms; then "
          f"{args.busy:,} back to back by {args.concurrency} callers\n")  # fmt: skip
    print("| client | after idleness p50 µs | p99 µs | CPU µs per command | commands/s |")
    print("|---|---:|---:|---:|---:|")
    for name, call in calls.items():
        cpu, rate = await back_to_back(call, args.busy, args.concurrency)
        p50, p99 = 1e6 * pct(idle[name], 0.5), 1e6 * pct(idle[name], 0.99)
        print(f"| {name} | {p50:.0f} | {p99:.0f} | {cpu:.1f} | {rate:,.0f} |")
    await pipelined.aclose()
    await pool.aclose()


def tls_files(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (``cert.pem``, its key beside it)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder / "cert.pem"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=400, help="timed after idleness")
    parser.add_argument("--gap", type=float, default=20.0, help="ms of idleness before each")
    parser.add_argument("--busy", type=int, default=20_000, help="commands back to back")
    parser.add_argument("--concurrency", type=int, default=32, help="callers back to back")
    parser.add_argument("--tls", action="store_true", help="Redis on a TLS port only")
    args = parser.parse_args(argv)
    if not 1 <= args.commands <= 100_000 or not 0 <= args.gap <= 1000:
        parser.error("--commands must be 1..100,000 and --gap 0..1000 ms")
    if not 1 <= args.concurrency <= args.busy:
        parser.error("--concurrency must be 1..--busy")
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="wxpush-bench-") as tmp:
        port, cert = free_port(), (tls_files(Path(tmp)) if args.tls else None)
        with pinned({cores[-1]} if len(cores) > 1 else None):
            redis = start_redis(port, Path(tmp), tls=cert)
        try:
            with pinned({cores[0]} if len(cores) > 1 else None):
                uvloop.run(measure(port, args, cert))
        finally:
            stop(redis, "redis-server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
