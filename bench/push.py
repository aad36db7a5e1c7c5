"""Real-time push benchmark: N idle WebSocket waiters on one server process, against polling.

Starts its own ``redis-server``, the fake WeChat API (``tests/fakewechat.py``, in a thread of
this process) and ``wxpush serve --workers 1`` on free loopback ports, then for each N:

1. creates N scenes for WebSocket waiters and P = min(N, ``--max-pollers``) more for pollers
   with ``POST /api/v1/scenes`` (each asks the fake WeChat for a QR code);
2. reads the server's RSS with no waiter, then opens N WebSockets on ``/ws/v1/scenes/{id}``
   from ``--clients`` other processes (``websockets`` on uvloop, N/clients sockets each, no
   client pings), each checking that the first frame is ``LOOP``;
3. reads the server's RSS again ((RSS with N − RSS idle)/N per waiter), its Redis connections
   (``CLIENT LIST`` without the benchmark's own, named ``wxpush-bench``) and its CPU time over
   ``--idle-seconds`` of idleness (utime + stime from ``/proc``);
4. fires ``--scans`` SCAN events of unknown openids (each a ``NOT_REG``) through the real
   safe-mode callback ``POST /wechat/default/callback``, one after the other (or
   ``--fire-concurrency`` at a time), on scenes sampled from the waiters; the latency is from
   just before the POST is written to the moment the client process has the ``NOT_REG`` frame,
   both read from ``CLOCK_MONOTONIC``, which is system-wide on Linux;
5. with the N sockets still open, the same logins by 1-second polling: P pollers (one
   keep-alive connection each, in the same client processes) ``GET /api/v1/scenes/{id}`` on a
   fixed 1 s schedule with random phases; the requests/s the server absorbs and its CPU are
   measured over ``--poll-seconds``, then min(``--scans``, P) scans are fired on poll scenes;
   the latency is from the POST to the answer of the first poll that shows ``NOT_REG``.

Each N gets a fresh redis-server and server, so RSS and CPU start from the same place. On a
machine with two or more cores the server runs alone on core 0 and everything else (Redis, the
clients, the firer, the fake WeChat) on the others.

``--redis cluster`` runs on a Redis Cluster of three masters without replicas, started for each
N on free loopback ports (``bench/topology.py``), with ``WXPUSH_REDIS_CLUSTER=1``: a scene's key
and sharded channel are on its slot's master, and the server's hub holds one pub/sub connection
per master it waits on; the scans are spread evenly over the masters. ``--servers 2`` starts two
servers on the same Redis (both on core 0): A makes the scenes and takes the callbacks, the
waiters' WebSockets and the pollers are on B, so every frame crosses processes; RSS, idle CPU
and the push metric are B's. Either adds a table per Redis node: the waiters' scenes and the
scans on it, their push latency, each server's connections (``CLIENT LIST``, named
``wxpush-<pid>``) and the channels subscribed there.

Run from the repository root (``pip install -e '.[test,bench]'`` first)::

    python bench/push.py                          # N = 1,000 and 5,000
    python bench/push.py --waiters 10000 --scans 1000
    python bench/push.py --waiters 1000 --fire-concurrency 4 --idle-seconds 20
    python bench/push.py --waiters 1000 --redis cluster --servers 2
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import redis
from callback_http import (
    Credentials,
    ProcStats,
    cpu_busy,
    free_port,
    http_request,
    pinned,
    stop,
)
from topology import Placement, Server, Store, brief, node_views, totals
from topology import report as report_nodes

from wxpush.wechat.crypto import MessageCrypto

ROOT = Path(__file__).resolve().parents[1]
CALLBACK = "/wechat/default/callback"
BENCH_CLIENT_NAME = "wxpush-bench"
START_TIMEOUT = 30.0  # seconds for the server to answer /healthz
STEP_TIMEOUT = 300.0  # seconds for any one step of a client process
QR_EXPIRE_SECONDS = 3600  # no scene may expire during a run
PING_INTERVAL = 45  # what `wxpush serve` sets (ws_ping_interval)
TRY_AGAIN, RETRIES = 1013, 3  # a socket closed with 1013 at once is opened again (3 times)

GOALS = (
    ("waiters on one process", "10,000"),
    ("push latency p50 / p99", "≤ 1 ms / ≤ 5 ms"),
    ("server RSS per idle waiter", "≤ 20 KiB"),
    ("Redis pub/sub connections per process", "1"),
    ("idle CPU with N waiters", "< 2 % of a core"),
    ("push vs 1 s polling (p50 latency)", "≥ 300× lower"),
)


class Deadline(SystemExit):
    """The run's time is up (a SystemExit so that asyncio lets it through)."""


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of sorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# -- the client processes (WebSockets and pollers) ----------------------------------------------


@dataclass(slots=True)
class _Held:
    """What one client process saw on its sockets."""

    frames: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    closes: list[tuple[str, int | None, str]] = field(default_factory=list)  # unexpected ones
    sockets: dict[str, Any] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    closing: bool = False
    retries: Counter[str] = field(default_factory=Counter)  # refused first tries, by close


@dataclass(slots=True)
class _Polled:
    seen: dict[str, tuple[float, str]] = field(default_factory=dict)  # first non-LOOP answer
    done: array.array[float] = field(default_factory=lambda: array.array("d"))  # answer times
    rtts: array.array[float] = field(default_factory=lambda: array.array("d"))
    errors: Counter[str] = field(default_factory=Counter)


async def _hold(ws: Any, scene: str, held: _Held) -> None:
    from websockets.exceptions import ConnectionClosed

    frames = held.frames[scene]
    try:
        async for message in ws:
            now = time.monotonic()
            frames.append((now, str(json.loads(message).get("status"))))
    except ConnectionClosed:
        pass
    except Exception as exc:  # a bad frame: keep it for the report
        frames.append((time.monotonic(), f"error {type(exc).__name__}"))
    if not held.closing:
        held.closes.append((scene, ws.close_code, ws.close_reason or ""))


async def _open(port: int, scene: str, held: _Held, gate: asyncio.Semaphore) -> str | None:
    """Open one socket and read its first frame; returns an error text, or None.

    A socket the server closes with 1013 ("try again later") is opened again after a pause,
    as the widget would, at most ``RETRIES`` times; every such close is counted.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    for attempt in range(RETRIES + 1):
        async with gate:
            try:
                ws = await connect(
                    f"ws://127.0.0.1:{port}/ws/v1/scenes/{scene}",
                    ping_interval=None,  # browsers do not ping; the server does
                    compression=None,
                    open_timeout=20,
                    close_timeout=2,
                    max_queue=4,
                    user_agent_header=None,
                )
            except Exception as exc:
                return f"connect: {type(exc).__name__}: {exc}"[:200]
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 20))
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                held.retries[f"{code} {exc.rcvd.reason if exc.rcvd else ''}".strip()] += 1
                if code == TRY_AGAIN and attempt < RETRIES:
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                return f"first frame: {type(exc).__name__}: {exc}"[:200]
            except Exception as exc:
                await ws.close()
                return f"first frame: {type(exc).__name__}: {exc}"[:200]
        held.frames[scene] = [(time.monotonic(), str(first.get("status")))]
        held.sockets[scene] = ws
        if first.get("status") != "LOOP":
            return f"first frame is {first!r}"
        task = asyncio.create_task(_hold(ws, scene, held))
        held.tasks.add(task)
        return None
    return "unreachable"


async def _poller(
    port: int, scene: str, start: float, stop_at: asyncio.Event, polled: _Polled
) -> None:
    """Poll one scene every second on a fixed schedule, over one keep-alive connection."""
    request = (
        f"GET /api/v1/scenes/{scene} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    tick = 0
    try:
        while not stop_at.is_set():
            now = time.monotonic()
            tick = max(tick, math.floor(now - start))  # skip ticks missed, never burst
            due = start + tick
            tick += 1
            if due > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_at.wait(), due - now)
                if stop_at.is_set():
                    break
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                sent = time.monotonic()
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await asyncio.wait_for(reader.readexactly(length), 10)
                answered = time.monotonic()
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                polled.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            polled.done.append(answered)
            polled.rtts.append(answered - sent)
            if status != 200:
                polled.errors[f"HTTP {status}"] += 1
                continue
            if scene not in polled.seen:
                state = str(json.loads(body).get("status"))
                if state != "LOOP":
                    polled.seen[scene] = (answered, state)
    finally:
        if writer is not None:
            writer.close()


async def _client(pipe: Connection, port: int) -> None:
    held = _Held()
    polled = _Polled()
    stop_polling = asyncio.Event()
    pollers: list[asyncio.Task[None]] = []
    while True:
        command, *rest = await asyncio.to_thread(pipe.recv)
        if command == "connect":
            scenes, concurrency = rest
            gate = asyncio.Semaphore(concurrency)
            t0 = time.monotonic()
            errors = await asyncio.gather(*(_open(port, s, held, gate) for s in scenes))
            failures = [e for e in errors if e is not None]
            pipe.send(("connected", len(scenes) - len(failures), failures[:20], len(failures),
                       time.monotonic() - t0, held.retries))  # fmt: skip
        elif command == "frames":
            alive = sum(1 for ws in held.sockets.values() if ws.close_code is None)
            pipe.send(("frames", held.frames, held.closes, alive))
        elif command == "poll":
            scenes, start = rest
            for scene in scenes:
                phase = start + random.random()  # browsers start at random moments
                pollers.append(asyncio.create_task(_poller(port, scene, phase, stop_polling,
                                                           polled)))  # fmt: skip
            pipe.send(("polling", len(pollers)))
        elif command == "stop-polling":
            stop_polling.set()
            await asyncio.wait(pollers, timeout=15)
            pipe.send(("polled", polled.seen, polled.done, polled.rtts, polled.errors))
        elif command == "close":
            held.closing = True
            sockets = list(held.sockets.values())
            await asyncio.wait_for(
                asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 60
            )
            await asyncio.wait(held.tasks, timeout=10) if held.tasks else None
            pipe.send(("closed", len(sockets)))
            return


def _client_main(pipe: Connection, port: int, limit: int) -> None:
    """A client process: its own open-file limit, uvloop, and a hard deadline of its own."""
    signal.alarm(limit)  # whatever happens, this process ends
    raise_nofile()
    import uvloop

    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        uvloop.run(_client(pipe, port))


class Clients:
    """The client processes, driven over pipes (every wait is bounded)."""

    def __init__(self, count: int, port: int, cpus: set[int] | None, limit: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # this process has threads: no fork
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        with pinned(cpus):
            for _ in range(count):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_client_main, args=(child, port, limit), daemon=True)
                proc.start()
                child.close()
                self.pipes.append(parent)
                self.procs.append(proc)

    def ask(self, commands: Sequence[tuple[Any, ...]], timeout: float = STEP_TIMEOUT) -> list[Any]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        deadline = time.monotonic() + timeout
        answers = []
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"client process {proc.pid} did not answer {commands[0][0]!r}")
            answers.append(pipe.recv())
        return answers

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()  # SIGTERM, by pid
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


def split(items: Sequence[str], parts: int) -> list[list[str]]:
    return [list(items[i::parts]) for i in range(parts)]


# -- the server ----------------------------------------------------------------------------------


def start_server(
    port: int, store: Store, creds: Credentials, wechat_url: str, workdir: Path, log: Path,
    jwt_secret: str,
) -> subprocess.Popen[bytes]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
    env.update(
        {
            "WXPUSH_APPID": creds.appid,
            "WXPUSH_APPSECRET": creds.secret,
            "WXPUSH_TOKEN": creds.token,
            "WXPUSH_AES_KEY": creds.aes_key,
            "WXPUSH_REDIS_URL": store.url,
            "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'wxpush.db'}",
            "WXPUSH_LOG_LEVEL": "warning",
            "WXPUSH_WECHAT_API_BASE": wechat_url,
            "WXPUSH_JWT_SECRET": jwt_secret,  # one for both servers of --servers 2
            "WXPUSH_QR_EXPIRE_SECONDS": str(QR_EXPIRE_SECONDS),
            "WXPUSH_SCENES_PER_MINUTE_PER_IP": "1000000000",
            "WXPUSH_SOCKETS_PER_IP": "1000000000",
        }
    )
    if store.cluster:
        env["WXPUSH_REDIS_CLUSTER"] = "1"
    wxpush = shutil.which("wxpush")
    cmd = [wxpush] if wxpush else [sys.executable, "-m", "wxpush"]
    cmd += ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:  # the cwd is a scratch dir: no stray .env
        proc = subprocess.Popen(
            cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"wxpush serve exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, Exception):
            status, _ = http_request(port, "GET", "/healthz")
            if status == 200:
                return proc
        time.sleep(0.1)
    stop(proc, "wxpush serve")
    raise RuntimeError(f"wxpush serve did not answer /healthz in time:\n{log.read_text()}")


def nofile_of(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


def metrics_of(port: int) -> dict[str, float]:
    """The server's own Prometheus figures this benchmark looks at."""
    status, body = http_request(port, "GET", "/metrics")
    out: dict[str, float] = {}
    if status != 200:
        return out
    wanted = (
        'wxpush_waiters{transport="websocket"}',
        "wxpush_hub_reconnects_total",
        "wxpush_push_latency_seconds_sum",
        "wxpush_push_latency_seconds_count",
        'wxpush_scene_transitions_total{status="NOT_REG"}',
    )
    for line in body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[name] = float(value)
    return out


@dataclass(frozen=True, slots=True)
class RedisView:
    connections: int  # the server's, not ours
    pubsub: int  # of which subscribed (flags P)
    channels: int  # channels subscribed in all

    @classmethod
    def of(cls, port: int) -> RedisView:
        client = redis.Redis(port=port, client_name=BENCH_CLIENT_NAME, socket_timeout=5)
        try:
            rows = [r for r in client.client_list() if r.get("name") != BENCH_CLIENT_NAME]
            channels = len(client.pubsub_channels())
        finally:
            client.close()
        pubsub = sum(1 for r in rows if "P" in r.get("flags", "") or int(r.get("sub", 0)) > 0)
        return cls(len(rows), pubsub, channels)


# -- scenes and scans (this process) ----------------------------------------------------------


async def create_scenes(port: int, count: int, concurrency: int) -> list[dict[str, Any]]:
    """``count`` scenes through ``POST /api/v1/scenes`` (each asks WeChat for a QR code)."""
    out: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    todo = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as http:

        async def worker() -> None:
            for _ in todo:
                answer = await http.post("/api/v1/scenes")
                if answer.status_code == 201:
                    out.append(answer.json())
                else:
                    failures[f"HTTP {answer.status_code} {answer.text[:80]}"] += 1
                    if sum(failures.values()) > 20:
                        raise RuntimeError(f"scene creation keeps failing: {dict(failures)}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        print(f"  scene creation failures: {dict(failures)}")
    return out


def scan_request(creds: Credentials, port: int, scene: str, openid: str) -> bytes:
    """A signed, encrypted SCAN of ``login:<scene>`` by ``openid``, as WeChat sends it."""
    from tests import wire

    xml = wire.event_xml("SCAN", f"login:{scene}", openid=openid)
    crypto = MessageCrypto(creds.appid, creds.aes_key)
    params, body = wire.signed(xml, mode="safe", token=creds.token, crypto=crypto, openid=openid)
    return (
        f"POST {CALLBACK}?{urlencode(params)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"User-Agent: Mozilla/4.0\r\nAccept: */*\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(slots=True)
class Fired:
    sent: dict[str, float] = field(default_factory=dict)  # scene → monotonic time of the POST
    answered: dict[str, float] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)


async def fire_scans(
    creds: Credentials, port: int, scenes: Sequence[str], concurrency: int, tag: str
) -> Fired:
    """One SCAN per scene, ``concurrency`` at a time over keep-alive connections."""
    fired = Fired()
    todo = iter(enumerate(scenes))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i, scene in todo:
                request = scan_request(creds, port, scene, f"oPushBench{tag}{i:08d}")
                fired.sent[scene] = time.monotonic()
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                fired.answered[scene] = time.monotonic()
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await asyncio.wait_for(reader.readexactly(length), 10)
                fired.statuses[int(head[9:12])] += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return fired


# -- one run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    waiters: int
    connected: int = 0
    connect_seconds: float = 0.0
    connect_cpu_us: float = 0.0
    connect_failures: list[str] = field(default_factory=list)
    connect_retries: Counter[str] = field(default_factory=Counter)  # closes before LOOP
    rss_idle_mib: float = 0.0
    rss_waiting_mib: float = 0.0
    idle_cpu_zero: float = 0.0  # % of a core with no waiter
    idle_cpu: float = 0.0  # % of a core with N waiters
    idle_cpu_median: float = 0.0  # % of a core in the median second (between ping bursts)
    idle_seconds: float = 0.0
    redis_idle: RedisView | None = None
    redis_waiting: RedisView | None = None
    push: list[float] = field(default_factory=list)  # seconds, sorted
    push_missed: int = 0
    push_answer: list[float] = field(default_factory=list)  # callback answer times, sorted
    frame_before_answer: int = 0
    spurious: int = 0  # frames on sockets nobody scanned
    scan_statuses: Counter[int] = field(default_factory=Counter)
    server_push_mean_ms: float = math.nan
    hub_reconnects: float = 0.0
    waiters_gauge: float = math.nan
    pollers: int = 0
    poll_rps: float = 0.0
    poll_cpu: float = 0.0  # % of a core while polling
    poll_rtt: list[float] = field(default_factory=list)  # in the req/s window (no scans)
    poll_rtt_scans: list[float] = field(default_factory=list)  # while scans are fired
    poll: list[float] = field(default_factory=list)
    poll_missed: int = 0
    poll_errors: Counter[str] = field(default_factory=Counter)
    closed_early: list[tuple[str, int | None, str]] = field(default_factory=list)
    alive_after: int = 0
    others: dict[str, float] = field(default_factory=dict)  # phase → % of a core not ours
    placement: Placement | None = None  # per Redis node (--redis cluster, --servers 2)

    @property
    def rss_per_waiter_kib(self) -> float:
        return 1024 * (self.rss_waiting_mib - self.rss_idle_mib) / max(1, self.connected)


def cpu_percent(pid: int, seconds: float) -> tuple[float, float]:
    """The process's CPU (% of a core) over ``seconds``, and in its median second.

    Keep-alive pings come in bursts (one per socket every 45 s, spread like the connects):
    the average over a whole ping interval is the true idle cost, the median second the cost
    between the bursts.
    """
    t0 = time.monotonic()
    first = last = ProcStats.of(pid).cpu_seconds
    seconds_used: list[float] = []
    while (left := t0 + seconds - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        now = ProcStats.of(pid).cpu_seconds
        seconds_used.append(now - last)
        last = now
    elapsed = time.monotonic() - t0
    return 100 * (last - first) / elapsed, 100 * sorted(seconds_used)[len(seconds_used) // 2]


class Others:
    """CPU that processes not ours used during a phase (ours: this process and its children)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = cpu_busy().get("cpu", 0.0)
        self.ours0 = ProcStats.of(os.getpid()).cpu_seconds

    def percent(self) -> float:
        """% of a core used by others since this object was made."""
        elapsed = time.monotonic() - self.t0
        busy = cpu_busy().get("cpu", 0.0) - self.busy0
        ours = ProcStats.of(os.getpid()).cpu_seconds - self.ours0
        return 100 * max(0.0, busy - ours) / max(elapsed, 1e-9)


def run_one(
    args: argparse.Namespace, n: int, cpus: tuple[set[int] | None, set[int] | None]
) -> Result:
    from tests.fakewechat import FakeWeChat

    server_cpus, other_cpus = cpus
    result = Result(n)
    creds = Credentials.generate()
    jwt_secret = secrets.token_hex(32)
    servers: list[Server] = []
    clients: list[Clients] = []  # filled by _run, stopped here whatever happens
    with (
        tempfile.TemporaryDirectory(prefix="wxpush-push-") as scratch,
        FakeWeChat(appid=creds.appid, secret=creds.secret).running() as fake,
    ):
        workdir = Path(scratch)
        store = Store(args.redis, workdir)
        labels = ["A", "B"] if args.servers == 2 else [""]
        logs = [workdir / f"server{'-' if label else ''}{label}.log" for label in labels]
        try:
            with pinned(other_cpus):
                store.start()
            for label, log in zip(labels, logs, strict=True):
                port = free_port()
                with pinned(server_cpus):
                    proc = start_server(port, store, creds, fake.url, workdir, log, jwt_secret)
                servers.append(Server(label, port, proc))
            if not topology(args):
                server = servers[0]
                print(f"\n## N = {n:,}: wxpush serve pid {server.pid} on 127.0.0.1:{server.port} "
                      f"(open files {nofile_of(server.pid)}), redis :{store.ports[0]}, "
                      f"fake WeChat {fake.url}")  # fmt: skip
            else:
                said = ", ".join(f"{s.label or 'wxpush serve'} pid {s.pid} on 127.0.0.1:{s.port}"
                                 for s in servers)  # fmt: skip
                print(f"\n## N = {n:,}: {said} (open files {nofile_of(servers[-1].pid)}); "
                      f"{store.describe()}; fake WeChat {fake.url}")  # fmt: skip
            _run(args, n, result, creds, store, servers, fake, other_cpus, clients)
        finally:
            for group in clients:
                group.stop()
            for server in reversed(servers):
                stop(server.proc, f"wxpush serve {server.label}".rstrip())
            store.stop()
            for label, log in zip(labels, logs, strict=True):
                text = log.read_text(errors="replace") if log.exists() else ""
                if text.strip():
                    name = f"server {label}" if label else "server"
                    print(f"  {name} log (warnings and errors, last 3,000 characters):")
                    for line in text[-3000:].splitlines():
                        print(f"    {line}")
    return result


def topology(args: argparse.Namespace) -> bool:
    """Whether the run is not the default one (one redis-server, one server)."""
    return bool(args.redis != "single" or args.servers != 1)


def _run(
    args: argparse.Namespace,
    n: int,
    result: Result,
    creds: Credentials,
    store: Store,
    servers: list[Server],
    fake: Any,
    other_cpus: set[int] | None,
    owned: list[Clients],
) -> None:
    pollers = min(n, args.max_pollers)
    result.pollers = pollers
    front, back = servers[0], servers[-1]  # A: scenes and callbacks; B: waiters and pollers
    port, pid = back.port, back.pid
    placement = result.placement = Placement() if topology(args) else None

    def redis_view(when: str) -> RedisView:
        """B's connections; by default every connection but ours (as this script always did)."""
        if placement is None:
            return RedisView.of(store.ports[0])
        views = node_views(store, servers)
        if when == "idle":
            placement.nodes_idle = views
        else:
            placement.nodes_waiting = views
        return RedisView(*totals(views, back.label))

    def sample_of(scenes: Sequence[str], k: int) -> list[str]:
        return store.sample(scenes, k) if placement else random.sample(scenes, min(k, len(scenes)))

    # 1. scenes
    t0 = time.monotonic()
    made = asyncio.run(create_scenes(front.port, n + pollers, args.create_concurrency))
    if len(made) < n + pollers:
        raise RuntimeError(f"only {len(made)} of {n + pollers} scenes were created")
    for body in random.sample(made, 20):  # the QR code carries login:<id>, nothing else
        assert fake.scene_of(body["qr_url"]) == f"login:{body['scene']}", body
    scenes = [body["scene"] for body in made]
    waiting, polling = scenes[:n], scenes[n:]
    print(f"  created {len(made):,} scenes in {time.monotonic() - t0:.1f} s")

    # 2. idle, no waiter
    time.sleep(2)
    result.rss_idle_mib = ProcStats.of(pid).rss_mib
    result.redis_idle = redis_view("idle")
    result.idle_cpu_zero, _ = cpu_percent(pid, min(10.0, args.idle_seconds))
    print(f"  no waiter: RSS {result.rss_idle_mib:.1f} MiB, CPU {result.idle_cpu_zero:.2f} % "
          f"of a core, Redis {result.redis_idle}")  # fmt: skip
    if placement:
        print(f"  per node: {brief(placement.nodes_idle)}")

    # 3. N sockets
    clients = Clients(args.clients, port, other_cpus, args.deadline + 60)
    owned.append(clients)
    cpu0 = ProcStats.of(pid).cpu_seconds
    shares = split(waiting, args.clients)
    answers = clients.ask([("connect", s, args.connect_concurrency) for s in shares])
    result.connect_seconds = max(a[4] for a in answers)
    result.connected = sum(a[1] for a in answers)
    result.connect_failures = [f for a in answers for f in a[2]]
    failed = sum(a[3] for a in answers)
    for a in answers:
        result.connect_retries.update(a[5])
    result.connect_cpu_us = 1e6 * (ProcStats.of(pid).cpu_seconds - cpu0) / max(1, n)
    print(f"  {result.connected:,} of {n:,} sockets open in {result.connect_seconds:.1f} s "
          f"({result.connect_cpu_us:.0f} µs of server CPU each); {failed} failed; closed at "
          f"once and opened again: {dict(result.connect_retries)}")  # fmt: skip
    for failure in result.connect_failures[:5]:
        print(f"    failure: {failure}")
    time.sleep(3)
    result.rss_waiting_mib = ProcStats.of(pid).rss_mib
    result.redis_waiting = redis_view("waiting")
    result.idle_seconds = args.idle_seconds
    others = Others()
    a0, t0 = ProcStats.of(front.pid).cpu_seconds, time.monotonic()
    result.idle_cpu, result.idle_cpu_median = cpu_percent(pid, args.idle_seconds)
    result.others["idle"] = others.percent()
    if placement:
        placement.front_idle_cpu = (100 * (ProcStats.of(front.pid).cpu_seconds - a0)
                                    / (time.monotonic() - t0))  # fmt: skip
        placement.front_rss_mib = ProcStats.of(front.pid).rss_mib
    print(f"  {n:,} waiters: RSS {result.rss_waiting_mib:.1f} MiB "
          f"({result.rss_per_waiter_kib:.1f} KiB each), idle CPU {result.idle_cpu:.2f} % "
          f"(median second {result.idle_cpu_median:.1f} %) over "
          f"{args.idle_seconds:.0f} s, Redis {result.redis_waiting}")  # fmt: skip
    if placement:
        print(f"  per node: {brief(placement.nodes_waiting)}")

    # 4. push
    sample = sample_of(waiting, args.scans)
    others = Others()
    fired = asyncio.run(fire_scans(creds, front.port, sample, args.fire_concurrency, "ws"))
    result.others["push"] = others.percent()
    result.scan_statuses = fired.statuses
    time.sleep(2)
    frames: dict[str, list[tuple[float, str]]] = {}
    for _, part, _, _ in clients.ask([("frames",)] * args.clients):
        frames.update(part)
    scanned = set(sample)
    push: dict[str, float] = {}
    for scene in sample:
        got = [t for t, status in frames.get(scene, [])[1:] if status == "NOT_REG"]
        if not got:
            result.push_missed += 1
            continue
        push[scene] = got[0] - fired.sent[scene]
        result.frame_before_answer += got[0] < fired.answered[scene]
    result.push = sorted(push.values())
    if placement:
        placement.place(store, waiting, sample, push)
    result.push_answer = sorted(fired.answered[s] - fired.sent[s] for s in fired.answered)
    result.spurious = sum(len(f) - 1 for s, f in frames.items() if s not in scanned)
    m = metrics_of(port)
    count = m.get("wxpush_push_latency_seconds_count", 0.0)
    if count:
        result.server_push_mean_ms = 1000 * m["wxpush_push_latency_seconds_sum"] / count
    result.hub_reconnects = sum(
        (metrics_of(s.port) if s is not back else m).get("wxpush_hub_reconnects_total", 0.0)
        for s in servers
    )
    result.waiters_gauge = m.get('wxpush_waiters{transport="websocket"}', math.nan)
    print(f"  push: {len(push)} of {len(sample)} scans seen, p50 {1000 * pct(result.push, 0.5):.2f}"
          f" ms, p99 {1000 * pct(result.push, 0.99):.2f} ms; callback answers "
          f"{dict(fired.statuses)}; {result.spurious} frames on unscanned sockets; "
          f"{len(result.closed_early)} sockets closed early; server metrics {m}")  # fmt: skip

    # 5. polling, the N sockets still open
    start = time.monotonic() + 0.5
    clients.ask([("poll", s, start) for s in split(polling, args.clients)])
    time.sleep(2.5)  # every poller has started
    others = Others()
    busy0, w0 = ProcStats.of(pid).cpu_seconds, time.monotonic()
    time.sleep(args.poll_seconds)
    busy1, w1 = ProcStats.of(pid).cpu_seconds, time.monotonic()
    result.poll_cpu = 100 * (busy1 - busy0) / (w1 - w0)
    poll_sample = sample_of(polling, min(args.scans, pollers))
    fired_poll = asyncio.run(
        fire_scans(creds, front.port, poll_sample, args.fire_concurrency, "poll")
    )
    result.others["polling"] = others.percent()
    result.scan_statuses.update(fired_poll.statuses)
    time.sleep(2.5)  # every poller has polled at least twice since its scan
    seen: dict[str, tuple[float, str]] = {}
    done: list[float] = []
    rtts: list[float] = []
    for _, part_seen, part_done, part_rtts, errors in clients.ask(
        [("stop-polling",)] * args.clients
    ):
        seen.update(part_seen)
        done.extend(part_done)
        rtts.extend(part_rtts)
        result.poll_errors.update(errors)
    result.poll_rps = sum(1 for t in done if w0 <= t < w1) / (w1 - w0)
    result.poll_rtt = sorted(rtt for t, rtt in zip(done, rtts, strict=True) if w0 <= t < w1)
    result.poll_rtt_scans = sorted(rtt for t, rtt in zip(done, rtts, strict=True) if t >= w1)
    poll: list[float] = []
    for scene in poll_sample:
        if scene in seen and seen[scene][1] == "NOT_REG":
            poll.append(seen[scene][0] - fired_poll.sent[scene])
        else:
            result.poll_missed += 1
    result.poll = sorted(poll)
    print(f"  polling: {pollers:,} pollers, {result.poll_rps:,.0f} req/s, server CPU "
          f"{result.poll_cpu:.0f} % of a core, poll p50 {1000 * pct(result.poll, 0.5):.0f} ms; "
          f"errors {dict(result.poll_errors)}")  # fmt: skip

    # 6. the end: sockets still open? then close them all
    for _, _, closes, alive in clients.ask([("frames",)] * args.clients):
        result.closed_early.extend(closes)
        result.alive_after += alive
    clients.ask([("close",)] * args.clients, timeout=90)


# -- the report ---------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{1000 * value:.2f}"


def report(results: Sequence[Result], args: argparse.Namespace, where: str) -> None:
    print("\n### Push vs polling\n")
    print(f"{os.cpu_count()} cores ({where}); {args.clients} client processes; scans fired "
          f"{args.fire_concurrency} at a time; idle CPU over {args.idle_seconds:.0f} s (the "
          f"server pings every socket every {PING_INTERVAL} s)\n")  # fmt: skip
    print(
        "| waiters (open at end) | connect | RSS idle → N | RSS/waiter | Redis conns (pub/sub, "
        "channels) | idle CPU 0 → N (median s) | push p50 / p99 ms | callback answer p50 ms | "
        "pollers | poll req/s (server CPU) | poll p50 / p99 ms | poll p50 ÷ push p50 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rv = r.redis_waiting
        ratio = pct(r.poll, 0.5) / pct(r.push, 0.5) if r.push and r.poll else math.nan
        print(
            f"| {r.waiters:,} ({r.alive_after:,}) | {r.connect_seconds:.1f} s | "
            f"{r.rss_idle_mib:.0f} → {r.rss_waiting_mib:.0f} MiB | "
            f"{r.rss_per_waiter_kib:.1f} KiB | "
            f"{rv.connections if rv else '?'} ({rv.pubsub if rv else '?'}, "
            f"{rv.channels if rv else '?'}) | "
            f"{r.idle_cpu_zero:.2f} → {r.idle_cpu:.2f} % ({r.idle_cpu_median:.1f} %) | "
            f"{ms(pct(r.push, 0.5))} / {ms(pct(r.push, 0.99))} | {ms(pct(r.push_answer, 0.5))} | "
            f"{r.pollers:,} | {r.poll_rps:,.0f} ({r.poll_cpu:.0f} %) | "
            f"{pct(r.poll, 0.5) * 1000:.0f} / {pct(r.poll, 0.99) * 1000:.0f} | {ratio:,.0f}× |"
        )
    print("\n### Goals\n")
    print("| goal | target | measured | met |")
    print("|---|---|---|---|")
    biggest = max(results, key=lambda r: r.waiters)
    full = [r for r in results if r.alive_after == r.waiters and r.connected == r.waiters]
    most = max((r.waiters for r in full), default=0)
    rows = [
        (GOALS[0], f"{most:,} held to the end", most >= 10_000),
        (
            GOALS[1],
            ", ".join(f"{ms(pct(r.push, 0.5))} / {ms(pct(r.push, 0.99))} ms" for r in results),
            all(pct(r.push, 0.5) <= 0.001 and pct(r.push, 0.99) <= 0.005 for r in results),
        ),
        (
            GOALS[2],
            ", ".join(f"{r.rss_per_waiter_kib:.1f} KiB" for r in results),
            all(r.rss_per_waiter_kib <= 20 for r in results),
        ),
        pubsub_goal(results, args),
        (
            GOALS[4],
            ", ".join(f"{r.idle_cpu:.2f} %" for r in results),
            all(r.idle_cpu < 2 for r in results),
        ),
        (
            GOALS[5],
            ", ".join(
                f"{pct(r.poll, 0.5) / pct(r.push, 0.5):,.0f}×" if r.push and r.poll else "–"
                for r in results
            ),
            all(r.push and r.poll and pct(r.poll, 0.5) >= 300 * pct(r.push, 0.5) for r in results),
        ),
    ]
    for (goal, target), measured, met in rows:
        print(f"| {goal} | {target} | {measured} | {'yes' if met else '**no**'} |")
    print(f"\n(columns for N = {', '.join(f'{r.waiters:,}' for r in results)}; largest N run: "
          f"{biggest.waiters:,})")  # fmt: skip
    for r in results:
        problems = []
        if r.connected < r.waiters:
            problems.append(f"{r.waiters - r.connected} sockets failed to open "
                            f"({'; '.join(r.connect_failures[:3])})")  # fmt: skip
        if r.connect_retries:
            problems.append(
                f"{r.connect_retries.total()} sockets closed before their first frame and "
                f"opened again: {dict(r.connect_retries)}"
            )
        if r.closed_early:
            codes = Counter(f"{code} {reason}".strip() for _, code, reason in r.closed_early)
            problems.append(f"{len(r.closed_early)} sockets closed by the server: {dict(codes)}")
        if r.push_missed:
            problems.append(f"{r.push_missed} scans never reached their socket")
        if r.spurious:
            problems.append(f"{r.spurious} frames on sockets nobody scanned")
        if r.poll_missed:
            problems.append(f"{r.poll_missed} polled scans never seen")
        if r.poll_errors:
            problems.append(f"poll errors {dict(r.poll_errors)}")
        bad = {s: c for s, c in r.scan_statuses.items() if s != 200}
        if bad:
            problems.append(f"callback answers other than 200: {bad}")
        if r.hub_reconnects:
            problems.append(f"{r.hub_reconnects:.0f} hub reconnects")
        extra = (
            f"server's own push metric (publish → frame sent) mean {r.server_push_mean_ms:.2f} ms; "
            f"frame before the callback's answer in {r.frame_before_answer} of {len(r.push)}; "
            f"{r.connect_cpu_us:.0f} µs server CPU per socket opened; poll round trip p50 / "
            f"p99 {ms(pct(r.poll_rtt, 0.5))} / {ms(pct(r.poll_rtt, 0.99))} ms (steady), "
            f"{ms(pct(r.poll_rtt_scans, 0.5))} / {ms(pct(r.poll_rtt_scans, 0.99))} ms (while "
            f"scans are fired); other processes used "
            + ", ".join(f"{v:.0f} % of a core ({k})" for k, v in r.others.items())
        )
        busy = {k: v for k, v in r.others.items() if v > 10}
        if busy:
            problems.append(
                "WARNING: other processes were busy ("
                + ", ".join(f"{k} {v:.0f} % of a core" for k, v in busy.items())
                + "); figures are pessimistic"
            )
        print(f"- N = {r.waiters:,}: {extra}; " + ("; ".join(problems) or "no errors"))


def pubsub_goal(
    results: Sequence[Result], args: argparse.Namespace
) -> tuple[tuple[str, str], str, bool]:
    """The goals row of pub/sub connections: 1 on one Redis; on a cluster, one per master
    that carries a waiter's channel (and none on a master that carries none)."""
    if args.redis != "cluster":
        return (
            GOALS[3],
            ", ".join(str(r.redis_waiting.pubsub if r.redis_waiting else "?") for r in results),
            all(r.redis_waiting is not None and r.redis_waiting.pubsub == 1 for r in results),
        )
    label = "B" if args.servers == 2 else ""
    measured: list[str] = []
    met = True
    for r in results:
        views = r.placement.nodes_waiting if r.placement else []
        each = [v.conns[label][1] for v in views]
        measured.append(" / ".join(map(str, each)) or "?")
        met &= bool(views) and all(
            v.conns[label][1] == (1 if r.placement and r.placement.waiters[v.port] else 0)
            for v in views
        )
    return ((GOALS[3][0] + " (per master)", "1 per master waited on"),
            ", ".join(measured) + " (per master)", met)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", default="1000,5000", help="comma-separated Ns")
    parser.add_argument("--clients", type=int, default=4, help="WebSocket client processes")
    parser.add_argument("--scans", type=int, default=500, help="scans per measurement")
    parser.add_argument("--fire-concurrency", type=int, default=1, help="scans in flight")
    parser.add_argument(
        "--connect-concurrency", type=int, default=4, help="handshakes in flight per client"
    )
    parser.add_argument("--create-concurrency", type=int, default=32, help="scene creations")
    parser.add_argument("--idle-seconds", type=float, default=float(PING_INTERVAL))
    parser.add_argument("--max-pollers", type=int, default=1000)
    parser.add_argument("--poll-seconds", type=float, default=10.0, help="req/s window")
    parser.add_argument("--deadline", type=int, default=900, help="seconds per N at most")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--redis", choices=("single", "cluster"), default="single",
                        help="one redis-server, or a Redis Cluster of 3 masters")  # fmt: skip
    parser.add_argument("--servers", type=int, choices=(1, 2), default=1,
                        help="2: scenes and callbacks on server A, waiters on B")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        ns = [int(x.replace("_", "")) for x in args.waiters.split(",") if x.strip()]
    except ValueError:
        parser.error("--waiters is a comma-separated list of numbers")
    if not ns or not all(1 <= n <= 50_000 for n in ns):
        parser.error("each N must be 1..50,000")
    if not 1 <= args.clients <= 64 or not 1 <= args.fire_concurrency <= 64:
        parser.error("--clients and --fire-concurrency must be 1..64")
    if not 1 <= args.idle_seconds <= 300 or not 1 <= args.poll_seconds <= 120:
        parser.error("--idle-seconds must be 1..300 and --poll-seconds 1..120")
    if not 60 <= args.deadline <= 3600:
        parser.error("--deadline must be 60..3600 s")

    sys.path.insert(0, str(ROOT))  # tests.fakewechat, tests.wire
    limit = raise_nofile()
    need = max(ns) + min(max(ns), args.max_pollers) + 200
    if limit < need:
        print(f"WARNING: open-file limit {limit} < {need}; raise the hard limit (ulimit -Hn)")
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) >= 2
    cpus = ({cores[0]}, set(cores[1:])) if pin else (None, None)
    where = "server on core 0, the rest on the others" if pin else "not pinned"
    if pin and args.servers == 2:
        where = "servers A and B on core 0, the rest on the others"

    def deadline(signum: int, frame: object) -> None:
        raise Deadline(f"a run took more than {args.deadline} s; stopping")

    signal.signal(signal.SIGALRM, deadline)
    results: list[Result] = []
    print("Goals: " + "; ".join(f"{g}: {t}" for g, t in GOALS))
    try:
        for n in ns:
            signal.alarm(args.deadline)
            try:
                with pinned(cpus[1]):  # this process (firer, fake WeChat) off the server's core
                    results.append(run_one(args, n, cpus))
            finally:
                signal.alarm(0)
    except (RuntimeError, Deadline) as exc:
        print(f"\nRUN FAILED: {exc}", file=sys.stderr)
    if results:
        report(results, args, where)
        placed = [(r.waiters, r.placement) for r in results if r.placement is not None]
        if placed:
            report_nodes(placed, args.redis, args.servers)
    return 0 if len(results) == len(ns) else 1


if __name__ == "__main__":
    sys.exit(main())
