"""End-to-end benchmark of safe-mode (AES) WeChat callbacks through the real server.

Starts its own ``redis-server`` and ``wxpush serve --workers 1`` (uvicorn, uvloop, httptools)
on free loopback ports, then fires N distinct encrypted callbacks -- a mix of ``SCAN`` events
with ``EventKey`` ``login:<id>`` and menu ``CLICK`` events, each with its own ``FromUserName``
and ``CreateTime`` so none is de-duplicated -- over C keep-alive connections, and prints a
markdown table: requests/s, latency percentiles, non-200 answers, and the server's CPU time
and RSS.

The load generator is a lean raw-socket HTTP/1.1 client on uvloop (pre-serialised requests,
keep-alive, no pipelining) in its own process. On a machine with two or more cores the server
is pinned to core 0 and the client and Redis to core 1, so the client does not compete with
the server; its own CPU use is reported so that you can see it is not the bottleneck.
The server's CPU time per callback is the figure least disturbed by other work on the
machine; the run also reports how much CPU processes other than ours used meanwhile.

Run from the repository root (``pip install -e '.[test,bench]'`` first)::

    python bench/callback_http.py                       # 30,000 callbacks, 64 connections
    python bench/callback_http.py -n 60000 -c 128 --runs 2
    python bench/callback_http.py --profile /tmp/wxpush-prof   # also py-spy the server
    python bench/callback_http.py --log-level info      # the server writes its access log

``--profile`` needs ``pip install py-spy``; it writes folded stacks and prints the functions
where the server spends its time.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import http.client
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast
from urllib.parse import urlencode

from wxpush.wechat import replies
from wxpush.wechat.crypto import MessageCrypto
from wxpush.wechat.signature import sign

ACCOUNT = "default"
ACCOUNT_ID = "gh_0123456789ab"
PATH = f"/wechat/{ACCOUNT}/callback"
TICKET = "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIE"
START_TIMEOUT = 30.0  # seconds for redis-server and wxpush serve to come up
STOP_TIMEOUT = 10.0  # seconds for a child to exit after SIGTERM
MAX_RECONNECTS = 1000  # per run, across all connections
MAX_RUN_SECONDS = 240  # a run must end well within the server's 300 s timestamp window


# -- the environment --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    appid: str
    secret: str
    token: str
    aes_key: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(
            appid="wx" + secrets.token_hex(8),
            secret=secrets.token_hex(16),
            token=secrets.token_hex(16),
            aes_key=base64.b64encode(os.urandom(32)).decode()[:43],
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block (and the children it starts) on ``cpus``; restore the affinity after."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    """Stop one child we started, by its pid: SIGTERM, then SIGKILL after a timeout."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def start_redis(port: int, workdir: Path, tls: Path | None = None) -> subprocess.Popen[bytes]:
    """A redis-server on ``port``; with ``tls`` (a certificate, its ``key.pem`` beside it) on a
    TLS port only."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        sys.exit("redis-server not found (apt-get install -y redis-server)")
    ports = ["--port", str(port)]
    if tls is not None:
        key = str(tls.parent / "key.pem")
        ports = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls),
                 "--tls-key-file", key, "--tls-auth-clients", "no"]  # fmt: skip
    proc = subprocess.Popen(
        [
            binary,
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"redis-server exited with status {proc.returncode}")
        if tls is not None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return proc  # listening (its TLS is the clients' to check)
            time.sleep(0.05)
            continue
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return proc
        time.sleep(0.05)
    stop(proc, "redis-server")
    sys.exit("redis-server did not answer PING in time")


def start_server(
    port: int, redis_port: int, creds: Credentials, workdir: Path, log: Path, level: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
    env.update(
        {
            "WXPUSH_APPID": creds.appid,
            "WXPUSH_APPSECRET": creds.secret,
            "WXPUSH_TOKEN": creds.token,
            "WXPUSH_AES_KEY": creds.aes_key,
            "WXPUSH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "WXPUSH_LOG_LEVEL": level,
            "WXPUSH_WECHAT_API_BASE": "http://127.0.0.1:9",
            "WXPUSH_JWT_SECRET": secrets.token_hex(32),
        }
    )
    wxpush = shutil.which("wxpush")
    cmd = [wxpush] if wxpush else [sys.executable, "-m", "wxpush"]
    cmd += ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:  # the cwd is a scratch dir: no stray .env, no wxpush.db
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"wxpush serve exited with status {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(port, "GET", "/healthz")
            if status == 200:
                return proc
        time.sleep(0.1)
    stop(proc, "wxpush serve")
    sys.exit(f"wxpush serve did not answer /healthz in time:\n{log.read_text()}")


def http_request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "text/xml; charset=utf-8"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


# -- process statistics ---------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn with one worker is one process, but be sure)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


@dataclass(frozen=True, slots=True)
class ProcStats:
    cpu_seconds: float
    rss_mib: float
    peak_rss_mib: float

    @classmethod
    def of(cls, pid: int) -> ProcStats:
        tick = os.sysconf("SC_CLK_TCK")
        cpu = rss = peak = 0.0
        for p in _tree(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{p}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                cpu += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
                    elif line.startswith("VmHWM:"):
                        peak += int(line.split()[1]) / 1024
        return cls(cpu, rss, peak)


def cpu_busy() -> dict[str, float]:
    """Busy CPU seconds per core (and ``cpu`` for all) since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if not line.startswith("cpu"):
                break
            name, *values = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
            out[name] = (user + nice + system + irq + softirq + steal) / tick
    return out


# -- the callbacks ----------------------------------------------------------------------------


def build_requests(
    count: int, creds: Credentials, port: int, scan_ratio: float, tag: str
) -> tuple[list[bytes], int]:
    """``count`` serialised safe-mode POSTs, all distinct; returns them and how many are scans.

    Every event has its own openid and ``CreateTime``, so the de-duplication key
    (``FromUserName``+``CreateTime``+``Event``+``EventKey``) never repeats.
    """
    crypto = MessageCrypto(creds.appid, creds.aes_key)
    now = int(time.time())
    host = f"127.0.0.1:{port}".encode()
    every = max(1, round(1 / scan_ratio)) if scan_ratio > 0 else 0
    out: list[bytes] = []
    scans = 0
    for i in range(count):
        openid = f"oBench{tag}{i:09d}"
        created = now - (i % 60)
        if every and i % every == 0:
            scans += 1
            event = (
                "<Event><![CDATA[SCAN]]></Event>"
                f"<EventKey><![CDATA[login:{tag}{i:x}{secrets.token_hex(6)}]]></EventKey>"
                f"<Ticket><![CDATA[{TICKET}]]></Ticket>"
            )
        else:
            event = "<Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[MENU_HELP]]></EventKey>"
        xml = (
            f"<xml><ToUserName><![CDATA[{ACCOUNT_ID}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"{event}</xml>"
        ).encode()
        ts, nonce = str(now), str(secrets.randbelow(10**9))
        body, msg_signature = replies.encrypted_request(
            xml, crypto, creds.token, to_user=ACCOUNT_ID, timestamp=ts, nonce=nonce
        )
        query = urlencode(
            {
                "signature": sign(creds.token, ts, nonce),
                "timestamp": ts,
                "nonce": nonce,
                "openid": openid,
                "encrypt_type": "aes",
                "msg_signature": msg_signature,
            }
        )
        out.append(
            b"POST " + PATH.encode() + b"?" + query.encode() + b" HTTP/1.1\r\n"
            b"Host: " + host + b"\r\n"
            b"User-Agent: Mozilla/4.0\r\n"
            b"Accept: */*\r\n"
            b"Content-Type: text/xml\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
    return out, scans


# -- the load generator (runs in its own process) ---------------------------------------------


@dataclass(slots=True)
class ClientResult:
    latencies: array.array[float]  # seconds, per completed request
    statuses: Counter[int]
    bad_bodies: int  # 200 answers whose body is not "success"
    failures: int  # connection errors / timeouts (no HTTP status)
    elapsed: float  # first send to last answer, seconds
    cpu_seconds: float  # the client's own CPU time
    samples: list[tuple[int, int, bytes]] = field(default_factory=list)  # (index, status, body)


class _Job:
    __slots__ = (
        "bad_bodies",
        "failures",
        "latencies",
        "next",
        "reconnects",
        "requests",
        "samples",
        "statuses",
    )

    def __init__(self, requests: Sequence[bytes]) -> None:
        self.requests = requests
        self.next = 0
        self.latencies: array.array[float] = array.array("d")
        self.statuses: Counter[int] = Counter()
        self.bad_bodies = 0
        self.failures = 0
        self.reconnects = 0
        self.samples: list[tuple[int, int, bytes]] = []

    def take(self) -> int | None:
        if self.next >= len(self.requests):
            return None
        self.next += 1
        return self.next - 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending one request at a time (no pipelining)."""

    def __init__(self, job: _Job, finished: asyncio.Future[None]) -> None:
        self.job = job
        self.finished = finished
        self.transport: asyncio.Transport | None = None
        self.index: int | None = None
        self.started = 0.0
        self.buf = bytearray()
        self.need = -1
        self.body_at = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.send_next()

    def send_next(self) -> None:
        assert self.transport is not None
        index = self.job.take()
        if index is None:
            self.index = None
            self.transport.close()
            return
        self.index, self.buf, self.need = index, bytearray(), -1
        self.started = time.perf_counter()
        self.transport.write(self.job.requests[index])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            stop_at = head.find(b"\r\n", at + 2)
            try:  # the server always sends Content-Length; anything else is a failure
                if at < 0 or not head.startswith(b"http/1.1 "):
                    raise ValueError("no Content-Length")
                self.status = int(head[9:12])
                length = int(head[at + 17 : stop_at if stop_at >= 0 else len(head)])
            except ValueError:
                self.fail()
                return
            self.body_at = end + 4
            self.need = self.body_at + length
        if len(self.buf) < self.need:
            return
        elapsed = time.perf_counter() - self.started
        job, body = self.job, bytes(self.buf[self.body_at : self.need])
        job.latencies.append(elapsed)
        job.statuses[self.status] += 1
        if self.status == 200 and body != replies.SUCCESS:
            job.bad_bodies += 1
        if len(job.samples) < 4 or (self.index is not None and self.index % 5000 == 1):
            job.samples.append((self.index or 0, self.status, body))
        self.send_next()

    def fail(self) -> None:
        self.job.failures += 1
        self.index = None
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.index is not None:  # lost with a request in flight
            self.job.failures += 1
        if not self.finished.done():
            self.finished.set_result(None)


async def _drive(job: _Job, port: int) -> None:
    """One connection slot: connect, run requests until the job is empty, reconnect on loss."""
    loop = asyncio.get_running_loop()
    while job.next < len(job.requests):
        finished: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(partial(_Connection, job, finished), "127.0.0.1", port)
            await finished
        except OSError:
            job.failures += 1
            job.take()  # give up on one request so that the loop is bounded
        if job.next < len(job.requests):
            job.reconnects += 1
            if job.reconnects > MAX_RECONNECTS:
                raise RuntimeError("too many reconnects; is the server down?")


async def _load(
    requests: Sequence[bytes], port: int, concurrency: int, limit: float
) -> ClientResult:
    job = _Job(requests)
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(_drive(job, port) for _ in range(min(concurrency, len(requests))))),
            timeout=limit,
        )
    except TimeoutError:
        raise RuntimeError(
            f"the run did not finish within --timeout {limit:.0f} s "
            f"({len(job.latencies):,} of {len(requests):,} answered)"
        ) from None
    elapsed = time.perf_counter() - t0
    return ClientResult(
        latencies=job.latencies,
        statuses=job.statuses,
        bad_bodies=job.bad_bodies,
        failures=job.failures,
        elapsed=elapsed,
        cpu_seconds=time.process_time() - cpu0,
        samples=job.samples,
    )


def _client_main(
    pipe: Connection, requests: Sequence[bytes], port: int, concurrency: int, limit: float
) -> None:
    try:
        import uvloop

        result = uvloop.run(_load(requests, port, concurrency, limit))
        pipe.send(result)
    except BaseException as exc:
        pipe.send(exc)
    finally:
        pipe.close()


def run_client(
    requests: Sequence[bytes], port: int, concurrency: int, limit: float, cpus: set[int] | None
) -> ClientResult:
    """Run the load in a forked process (it inherits ``requests`` without copying them)."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    with pinned(cpus):
        proc = ctx.Process(target=_client_main, args=(child, requests, port, concurrency, limit))
        proc.start()
    child.close()
    try:
        if not parent.poll(limit + 30):
            raise RuntimeError("the load generator did not report in time")
        result = parent.recv()
    finally:
        proc.join(timeout=STOP_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=STOP_TIMEOUT)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, ClientResult)
    return result


# -- profiling ---------------------------------------------------------------------------------


def start_py_spy(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: pip install py-spy (profiling skipped)", file=sys.stderr)
        return None
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    cmd += ["--output", str(out), "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach
    if proc.poll() is not None:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        print(f"py-spy failed to start: {err.strip()}", file=sys.stderr)
        return None
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


_LIB_PATH = re.compile(r"(?:site-packages|lib/python3\.\d+)/(.*)$")


def _frame_name(frame: str) -> tuple[str, str]:
    """``func (path/to/file.py:123)`` -> (``func (pkg/file.py)``, ``pkg``)."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    lib = _LIB_PATH.search(path)
    if lib:
        path = lib.group(1)
    elif "/wxpush/" in path:
        path = "wxpush/" + path.split("/wxpush/", 1)[1]
    package = path.split("/", 1)[0] if "/" in path else (path.removesuffix(".py") or "?")
    return (f"{name} ({path})" if path else name), package


def summarise_profile(folded: Path, top: int) -> str:
    """Where the server's busy samples go, from py-spy's folded stacks (markdown tables).

    Native code (lxml, uvloop, pycryptodome, system calls) is charged to the Python function
    that called it.
    """
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))] or frames
        total += count
        own[frames[-1][0]] += count
        packages[frames[-1][1]] += count
        for name in {f[0] for f in frames}:
            incl[name] += count
    if not total:
        return "(no samples)"

    def table(title: str, counts: Counter[str], n: int) -> list[str]:
        rows = [f"| {100 * c / total:.1f} | `{k}` |" for k, c in counts.most_common(n)]
        return ["", f"| {title} % | |", "|---:|---|", *rows]

    lines = [f"py-spy: {total} busy samples of the server"]
    lines += table("self, by package", packages, 12)
    lines += table("self", own, top)
    mine = Counter({k: v for k, v in incl.items() if "(wxpush/" in k and " (wxpush/cli" not in k})
    lines += table("inclusive, wxpush", mine, top)
    return "\n".join(lines)


# -- the run -----------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass(frozen=True, slots=True)
class RunReport:
    number: int
    requests: int
    scans: int
    result: ClientResult
    server_cpu: float
    redis_cpu: float
    server_after: ProcStats
    build_seconds: float

    def row(self) -> str:
        r = self.result
        lat = sorted(r.latencies)
        ms = [1000 * _pct(lat, q) for q in (0.5, 0.9, 0.99)]
        non200 = sum(n for status, n in r.statuses.items() if status != 200) + r.failures
        rps = len(lat) / r.elapsed if r.elapsed else 0.0
        return (
            f"| {self.number} | {self.requests:,} ({self.scans:,} SCAN) | {rps:,.0f} | "
            f"{ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} | {1000 * max(lat, default=0):.1f} | "
            f"{non200} | {r.bad_bodies} | {self.server_cpu:.1f} s "
            f"({100 * self.server_cpu / r.elapsed:.0f}%) | "
            f"{1e6 * self.server_cpu / max(1, len(lat)):.0f} µs | "
            f"{self.server_after.rss_mib:.0f} MiB | "
            f"{r.cpu_seconds:.1f} s ({100 * r.cpu_seconds / r.elapsed:.0f}%) | "
            f"{self.redis_cpu:.1f} s ({100 * self.redis_cpu / r.elapsed:.0f}%) |"
        )


HEADER = (
    "| run | callbacks | req/s | p50 ms | p90 ms | p99 ms | max ms | non-200 | non-success body"
    " | server CPU (util.) | server CPU per callback | server RSS"
    " | client CPU (util.) | redis CPU (util.) |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def verify_sample(port: int, creds: Credentials) -> list[str]:
    """Send a few callbacks one by one and decode the answers; raise if any is wrong."""
    reqs, _ = build_requests(4, creds, port, 0.5, "verify")
    lines = []
    for raw in reqs:
        head, _, body = raw.partition(b"\r\n\r\n")
        target = head.split(b" ", 2)[1].decode()
        kind = "SCAN" if b"SCAN" in _plain_event(creds, body) else "CLICK"
        status, answer = http_request(port, "POST", target, body)
        lines.append(f"{kind}: HTTP {status} {answer.decode(errors='replace')!r}")
        if status != 200 or answer != replies.SUCCESS:
            raise RuntimeError(f"unexpected answer to a {kind} callback: {lines[-1]}")
    # the same delivery again: WeChat's retry must get the same answer, de-duplicated
    head, _, body = reqs[0].partition(b"\r\n\r\n")
    status, answer = http_request(port, "POST", head.split(b" ", 2)[1].decode(), body)
    lines.append(f"retry of the first: HTTP {status} {answer.decode(errors='replace')!r}")
    if status != 200 or answer != replies.SUCCESS:
        raise RuntimeError(f"unexpected answer to a retried callback: {lines[-1]}")
    return lines


def _plain_event(creds: Credentials, body: bytes) -> bytes:
    start = body.index(b"<Encrypt><![CDATA[") + len(b"<Encrypt><![CDATA[")
    encrypt = body[start : body.index(b"]]></Encrypt>")]
    return MessageCrypto(creds.appid, creds.aes_key).decrypt(encrypt)


def redis_keys(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(b"DBSIZE\r\n")
        reply = s.recv(64)
    return int(reply[1:].split(b"\r\n", 1)[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=30_000, help="callbacks per run")
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="connections")
    parser.add_argument("--runs", type=int, default=1, help="measured runs on the same server")
    parser.add_argument("--warmup", type=int, default=2_000, help="unmeasured callbacks first")
    parser.add_argument("--scan-ratio", type=float, default=0.5, help="share of SCAN events")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per run at most")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--redis-with-server",
        action="store_true",
        help="pin redis-server to the server's core instead of the client's",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the server into this directory"
    )
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument(
        "--log-level", default="warning",
        help="the server's WXPUSH_LOG_LEVEL (info: an access line per callback, to a file)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.requests <= 1_000_000 or not 0 < args.concurrency <= 4096:
        parser.error("--requests must be 1..1,000,000 and --concurrency 1..4096")
    if not 0 <= args.scan_ratio <= 1 or not 1 <= args.runs <= 20:
        parser.error("--scan-ratio must be 0..1 and --runs 1..20")
    if not 1 <= args.timeout <= MAX_RUN_SECONDS:
        # Requests are signed just before a run; past the server's 300 s window they go stale.
        parser.error(f"--timeout must be 1..{MAX_RUN_SECONDS} s (the timestamp window is 300 s)")

    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) >= 2
    server_cpus = {cores[0]} if pin else None
    other_cpus = set(cores[1:]) if pin else None

    creds = Credentials.generate()
    redis_port, port = free_port(), free_port()
    children: list[tuple[subprocess.Popen[bytes], str]] = []
    with tempfile.TemporaryDirectory(prefix="wxpush-bench-") as scratch:
        workdir = Path(scratch)
        try:
            with pinned(server_cpus if args.redis_with_server else other_cpus):
                redis = start_redis(redis_port, workdir)
            children.append((redis, "redis-server"))
            with pinned(server_cpus):
                log = workdir / "server.log"
                server = start_server(port, redis_port, creds, workdir, log, args.log_level)
            children.append((server, "wxpush serve"))
            return _bench(args, creds, port, (redis_port, redis.pid), server, other_cpus, pin)
        finally:
            for proc, name in reversed(children):
                stop(proc, name)
            log = workdir / "server.log"
            if log.exists() and log.stat().st_size:
                print("\nserver log (warnings and errors):\n" + log.read_text()[-4000:])


def _bench(
    args: argparse.Namespace,
    creds: Credentials,
    port: int,
    redis: tuple[int, int],
    server: subprocess.Popen[bytes],
    other_cpus: set[int] | None,
    pin: bool,
) -> int:
    redis_port, redis_pid = redis
    print(f"wxpush serve pid {server.pid} on 127.0.0.1:{port}, redis on :{redis_port}")
    where = "not pinned"
    if pin:
        redis_where = "the server's" if args.redis_with_server else "the client's"
        where = f"server on core 0, client on the others, redis on {redis_where}"
    print(f"{os.cpu_count()} cores ({where}); {args.concurrency} keep-alive connections")
    for line in verify_sample(port, creds):
        print(f"  sample {line}")

    if args.warmup:
        warm, _ = build_requests(args.warmup, creds, port, args.scan_ratio, "warm")
        w = run_client(warm, port, args.concurrency, args.timeout, other_cpus)
        print(f"warm-up: {len(warm):,} callbacks, statuses {dict(w.statuses)}")

    reports: list[RunReport] = []
    for number in range(1, args.runs + 1):
        t0 = time.perf_counter()
        reqs, scans = build_requests(args.requests, creds, port, args.scan_ratio, f"r{number}")
        build_seconds = time.perf_counter() - t0
        keys_before = redis_keys(redis_port)
        spy = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            with pinned(other_cpus):
                spy = start_py_spy(
                    server.pid, args.profile / f"run{number}.folded", args.profile_rate
                )
        before, redis_before = ProcStats.of(server.pid), ProcStats.of(redis_pid)
        busy_before = cpu_busy()
        try:
            result = run_client(reqs, port, args.concurrency, args.timeout, other_cpus)
        finally:
            if spy is not None:
                stop_py_spy(spy)
        after, redis_after = ProcStats.of(server.pid), ProcStats.of(redis_pid)
        busy = {k: v - busy_before.get(k, 0.0) for k, v in cpu_busy().items()}
        new_keys = redis_keys(redis_port) - keys_before
        report = RunReport(
            number, len(reqs), scans, result, after.cpu_seconds - before.cpu_seconds,
            redis_after.cpu_seconds - redis_before.cpu_seconds, after, build_seconds,
        )  # fmt: skip
        reports.append(report)
        print(
            f"run {number}: built {len(reqs):,} requests in {build_seconds:.1f} s; "
            f"{result.elapsed:.2f} s on the wire; statuses {dict(result.statuses)}; "
            f"{result.failures} connection failures; {new_keys:,} new de-dup keys in Redis"
        )
        ours = report.server_cpu + report.redis_cpu + result.cpu_seconds
        others = busy.get("cpu", ours) - ours
        per_core = ", ".join(
            f"{k} {100 * v / result.elapsed:.0f}%" for k, v in busy.items() if k != "cpu"
        )
        print(
            f"  machine: busy {per_core}; processes not ours used {others:.1f} CPU-s "
            f"({100 * others / result.elapsed:.0f}% of a core)"
        )
        if others > 0.1 * result.elapsed:
            print("  WARNING: other processes were busy during the run; figures are pessimistic")
        for index, status, body in sorted(result.samples)[:3]:
            print(f"  answer #{index}: HTTP {status} {body[:60]!r}")
        if args.profile is not None and (args.profile / f"run{number}.folded").exists():
            print(summarise_profile(args.profile / f"run{number}.folded", 15))

    final = ProcStats.of(server.pid)
    print()
    print(HEADER)
    for report in reports:
        print(report.row())
    print(
        f"\nserver at the end: CPU {final.cpu_seconds:.1f} s in total, "
        f"RSS {final.rss_mib:.0f} MiB (peak {final.peak_rss_mib:.0f} MiB)"
    )
    errors = sum(
        r.result.failures
        + r.result.bad_bodies
        + sum(n for s, n in r.result.statuses.items() if s != 200)
        for r in reports
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
