"""The doors (SPEC §12–§13): a redirect door's code → tokens, and what the unionid look-up adds.

Starts a redis-server per server, the fake WeChat (``tests/fakewechat.py``, in a thread of this
process, on loopback) and ``wxpush serve --workers 1`` processes on free loopback ports, each
with its own SQLite file and ES256 key (the defaults), then runs rounds in which every job
below takes its turn, in an order that rotates from round to round:

- ``website`` / ``oauth``: a person known beforehand (bound once with a phone) logs in through
  the door. A WebSocket is already open on the scene (``ws_url``, first frame ``LOOP``); the
  code is minted as WeChat would (``fake.authorize``); then the clock runs from writing
  ``GET /wechat/{name}/oauth/redirect?code=&state=`` to the redirect's answer, and to the
  frame with the tokens at the waiter. The website code carries the person's unionid (an app
  bound to an Open Platform account), the ``snsapi_base`` one none; ``website, no unionid``
  (a diagnostic) is the website door with an exchange that gives none, so the server has no
  unionid to keep after the login.
- ``exchange alone``: ``sns/oauth2/access_token`` against the fake, from a lean raw-socket
  client and from httpx (what the server calls it with), and ``user/info`` from the raw
  client: the fake's own share of the figures above and below.
- scans of the follow door (``POST /wechat/default/callback``, a signed safe-mode SCAN, a
  waiter on the scene): an unknown openid on a server without ``WXPUSH_UNIONID`` (no look-up),
  the same on one with it (one ``user/info`` call to the fake, which gives a unionid nobody
  has: ``NOT_REG`` still; as a diagnostic also one that gives no unionid, so the search by
  unionid is skipped), and a known openid there (no call). With ``--before`` also an
  unknown openid on the code before the doors, whose server runs that tree
  (``PYTHONPATH``). The clock runs from writing the POST to its answer and to the frame.

Every answer and frame is checked (200, ``REG`` with tokens or ``NOT_REG``), and so are the
fake's calls per job (``user/info`` exactly once per unknown scan with the flag, never
otherwise); the run fails if any is wrong. Servers run on core 0, everything else (Redis, this
process and the fake) on the other cores. Figures: p50 / p99 over every sample, the median of
the rounds' p50s, the median of the per-round differences for pairs, and the server's CPU per
login (everything it did for one: the scene, the socket, the redirect or scan, the claim).

Run from the repository root (``pip install -e '.[test]'`` first)::

    python bench/doors.py --before f29c725        # 10 rounds of 50 per job
    python bench/doors.py --rounds 4 --per-round 25
    python bench/doors.py --before /tmp/old-tree  # a directory holding an older wxpush/

``--before`` takes a git revision (archived from this checkout into the scratch directory) or
a directory; without it the older tree is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect

# Measure the checkout this script sits in (the fake, the wire helpers), as its servers do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_http import Credentials, ProcStats, free_port, http_request, pinned, start_redis, stop
from push import Others, pct, scan_request

from tests.fakewechat import FakeWeChat

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0  # seconds for a server to answer /healthz
STEP = 10.0  # seconds any one request or frame may take
USER_INFO = "/cgi-bin/user/info"
EXCHANGE = "/sns/oauth2/access_token"
SNS_USERINFO = "/sns/userinfo"
WEB_OPENID = "oDoorsBenchWeb000000000000001"  # the known person at the website app
WEB_UNIONID = "uDoorsBenchPerson00000000001"
MP_OPENID = "oDoorsBenchMp0000000000000001"  # the known person at the service account
PHONES = ("13800138001", "13800138002")


# -- the processes -----------------------------------------------------------------------------


@dataclass(slots=True)
class Server:
    """One ``wxpush serve`` on its own redis-server."""

    label: str
    port: int
    proc: subprocess.Popen[bytes]
    redis: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(slots=True)
class Inbox:
    """The SMS vendor's webhook: the codes the servers sent, by phone."""

    url: str = ""
    codes: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def serving(app: Any, name: str) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread of this process; yields its URL.

    Idle connections are kept 75 s, as ``wxpush serve`` keeps them, so the servers' keep-alive
    connections to the fake stay open between their jobs (uvicorn's default is 5 s)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none",
        access_log=False, timeout_keep_alive=75,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)


def split_cores(
    no_pin: bool, pinned_as: str
) -> tuple[tuple[set[int] | None, set[int] | None], str]:
    """Core 0 for the server(s), the others for everything else (unless ``no_pin`` or one
    core); returns the two CPU sets and the report's words for it (``pinned_as`` when pinned)."""
    cores = sorted(os.sched_getaffinity(0))
    if no_pin or len(cores) < 2:
        return (None, None), "not pinned"
    return ({cores[0]}, set(cores[1:])), pinned_as


@contextlib.contextmanager
def stand_ins() -> Iterator[tuple[FakeWeChat, Inbox, Credentials]]:
    """The fake WeChat and the SMS inbox, each served in a thread; the account's credentials."""
    fake, inbox = FakeWeChat(), Inbox()
    creds = replace(Credentials.generate(), appid=fake.appid, secret=fake.secret)
    with (
        serving(fake.app(), "fake-wechat") as fake_url,
        serving(inbox_app(inbox), "sms-inbox") as inbox_url,
    ):
        fake.url, inbox.url = fake_url, inbox_url + "/sms"
        yield fake, inbox, creds


def inbox_app(inbox: Inbox) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        sent = await request.json()
        inbox.codes[str(sent["phone"])] = str(sent["code"])
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/sms", receive, methods=["POST"])])


def server_env(
    creds: Credentials, fake: FakeWeChat, inbox: Inbox, redis_port: int, workdir: Path, label: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXPUSH_")}
    env.update(
        {
            "WXPUSH_APPID": fake.appid,
            "WXPUSH_APPSECRET": fake.secret,
            "WXPUSH_TOKEN": creds.token,
            "WXPUSH_AES_KEY": creds.aes_key,
            "WXPUSH_WEBSITE_APPID": fake.website_appid,
            "WXPUSH_WEBSITE_SECRET": fake.website_secret,
            "WXPUSH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "WXPUSH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / (label + '.db')}",
            "WXPUSH_JWT_KEY_FILE": str(workdir / f"{label}-jwt.pem"),
            "WXPUSH_LOG_LEVEL": "warning",
            "WXPUSH_WECHAT_API_BASE": fake.url,
            "WXPUSH_SMS_PROVIDER": "webhook",
            "WXPUSH_SMS_WEBHOOK_URL": inbox.url,
            "WXPUSH_SCENES_PER_MINUTE_PER_IP": "1000000000",
            "WXPUSH_SOCKETS_PER_IP": "1000000000",
        }
    )
    return env


def start_server(
    label: str, tree: Path, env: dict[str, str], workdir: Path, cpus: tuple[Any, Any]
) -> Server:
    """``python -m wxpush serve`` of ``tree`` (``PYTHONPATH``), from a scratch cwd."""
    redis_port, port = int(env["WXPUSH_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]), free_port()
    with pinned(cpus[1]):
        redis = start_redis(redis_port, workdir)
    env = {**env, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "wxpush", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = workdir / f"{label}.log"
    with pinned(cpus[0]), log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--workers", "1"], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(label, port, proc, redis, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(redis, "redis-server")
            raise RuntimeError(f"{label}: wxpush serve exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if http_request(port, "GET", "/healthz")[0] == 200:
                return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"{label}: wxpush serve did not answer /healthz:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    stop(server.proc, f"wxpush serve ({server.label})")
    stop(server.redis, f"redis-server ({server.label})")


def before_tree(spec: str, workdir: Path) -> Path:
    """The older tree: a directory with ``wxpush/``, or a revision of this checkout."""
    path = Path(spec)
    if (path / "wxpush" / "__init__.py").exists():
        return path.resolve()
    tree = workdir / "before"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", spec], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


# -- a lean client ---------------------------------------------------------------------------


class Raw:
    """One keep-alive HTTP/1.1 connection: requests written as ready bytes, answers read by
    Content-Length (the timed requests go through this, not through httpx)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def get(self, path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "User-Agent: Mozilla/5.0\r\nAccept: text/html\r\n"
            "Accept-Language: zh-CN,zh;q=0.9\r\n\r\n"
        ).encode()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), STEP)
        length, close = 0, False
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"transfer-encoding:"):
                raise RuntimeError("a chunked answer: this client reads Content-Length only")
            close |= line == b"connection: close"
        body = await asyncio.wait_for(self.reader.readexactly(length), STEP)
        if close:
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def cpu_clock(pid: int) -> Callable[[], float]:
    """Another process's CPU time in seconds, every thread's, dead ones too, to the
    nanosecond (``clock_getcpuclockid``; /proc counts in 10 ms ticks, too coarse for a few
    milliseconds per login)."""
    libc = ctypes.CDLL(None, use_errno=True)
    clock = ctypes.c_int()
    if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return lambda: ProcStats.of(pid).cpu_seconds
    return lambda: time.clock_gettime(clock.value)


async def waiter(ws_url: str) -> ClientConnection:
    """A browser's socket on a scene, past its first frame (``LOOP``)."""
    ws = await connect(
        ws_url, ping_interval=None, compression=None, open_timeout=STEP, close_timeout=2,
        user_agent_header=None,
    )  # fmt: skip
    first = json.loads(await asyncio.wait_for(ws.recv(), STEP))
    if first.get("status") != "LOOP":
        raise RuntimeError(f"the first frame is {first!r}")
    return ws


async def next_frame(ws: ClientConnection) -> tuple[float, dict[str, Any]]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), STEP))
    return time.perf_counter(), frame


# -- the jobs ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Series:
    """One job's samples (seconds) by column, in all and as each round's p50."""

    columns: tuple[str, ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)  # server CPU s per sample, per round
    calls: Counter[str] = field(default_factory=Counter)  # the fake's, over every round
    samples: int = 0
    others: list[float] = field(default_factory=list)  # % of a core not ours, per round

    def add_round(self, samples: Sequence[tuple[float, ...]]) -> None:
        for index, column in enumerate(self.columns):
            part = [s[index] for s in samples]
            self.values.setdefault(column, []).extend(part)
            self.rounds.setdefault(column, []).append(statistics.median(part))
        self.samples += len(samples)

    def p50_p99(self, column: str) -> str:
        ordered = sorted(self.values[column])
        return f"{ms(pct(ordered, 0.5))} / {ms(pct(ordered, 0.99))}"

    def median_p50(self, column: str) -> float:
        return median(self.rounds[column])


@dataclass(slots=True)
class Bench:
    creds: Credentials
    fake: FakeWeChat
    inbox: Inbox
    servers: dict[str, Server]
    http: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    raw: dict[str, Raw] = field(default_factory=dict)
    cpu: dict[str, Callable[[], float]] = field(default_factory=dict)
    counter: int = 0

    def openid(self, tag: str) -> str:
        self.counter += 1
        return f"oDoors{tag}{self.counter:010d}{secrets.token_hex(3)}"

    async def scene(self, server: str, **body: Any) -> dict[str, Any]:
        answer = await self.http[server].post("/api/v1/scenes", json=body)
        if answer.status_code != 201:
            raise RuntimeError(f"{server}: scene creation: {answer.status_code} {answer.text}")
        return dict(answer.json())

    def redirect_path(self, created: dict[str, Any], code: str) -> str:
        query = parse_qs(urlsplit(created["authorize_url"]).query)
        path = urlsplit(query["redirect_uri"][0]).path
        return f"{path}?{urlencode({'code': code, 'state': query['state'][0]})}"

    def code(self, kind: str, openid: str, unionid: bool = True) -> str:
        if kind == "website":
            given = WEB_UNIONID if unionid else None
            return self.fake.authorize(self.fake.website_appid, openid, unionid=given)
        return self.fake.authorize(self.fake.appid, openid, scope="snsapi_base")

    async def login(self, server: str, kind: str, unionid: bool = True) -> tuple[float, float]:
        """A known person through a redirect door: (redirect answered, tokens at the waiter).
        ``unionid``: the website exchange gives the person's unionid (as WeChat does for an
        app bound to an Open Platform account)."""
        created = await self.scene(server, kind=kind)
        ws = await waiter(created["ws_url"])
        try:
            openid = WEB_OPENID if kind == "website" else MP_OPENID
            path = self.redirect_path(created, self.code(kind, openid, unionid))
            raw = self.raw[server]
            frame = asyncio.ensure_future(next_frame(ws))
            t0 = time.perf_counter()
            status, body = await raw.send(raw.get(path))
            answered = time.perf_counter()
            framed, got = await frame
        finally:
            await ws.close()
        if status != 200 or b'data-wxpush-page="logged_in"' not in body:
            raise RuntimeError(f"{server} {kind}: redirect answered {status} {body[:200]!r}")
        if got.get("status") != "REG" or not got.get("access_token"):
            raise RuntimeError(f"{server} {kind}: the waiter got {sorted(got)}")
        return answered - t0, framed - t0

    async def scan(self, server: str, openid: str, expect: str) -> tuple[float, float]:
        """A signed SCAN of a follow scene by ``openid``: (callback answered, frame)."""
        created = await self.scene(server)
        ws = await waiter(created["ws_url"])
        try:
            port = self.servers[server].port
            request = scan_request(self.creds, port, created["scene"], openid)
            frame = asyncio.ensure_future(next_frame(ws))
            t0 = time.perf_counter()
            status, body = await self.raw[server].send(request)
            answered = time.perf_counter()
            framed, got = await frame
        finally:
            await ws.close()
        if status != 200 or not body:
            raise RuntimeError(f"{server}: the scan answered {status} {body[:200]!r}")
        if got.get("status") != expect or (expect == "REG") != bool(got.get("access_token")):
            raise RuntimeError(f"{server}: the waiter got {got.get('status')}, not {expect}")
        return answered - t0, framed - t0

    async def alone(self, raw: Raw, http: httpx.AsyncClient, token: str) -> tuple[float, ...]:
        """The fake alone: the website exchange (raw, then httpx) and user/info (raw)."""
        params = {"appid": self.fake.website_appid, "secret": self.fake.website_secret}
        times = []
        for via in ("raw", "httpx"):
            code = self.code("website", self.openid("Alone"))
            query = urlencode({**params, "code": code, "grant_type": "authorization_code"})
            t0 = time.perf_counter()
            if via == "raw":
                status, body = await raw.send(raw.get(f"{EXCHANGE}?{query}"))
            else:
                answer = await http.get(f"{EXCHANGE}?{query}")
                status, body = answer.status_code, answer.content
            times.append(time.perf_counter() - t0)
            if status != 200 or b"openid" not in body:
                raise RuntimeError(f"the fake's exchange answered {status} {body[:200]!r}")
        openid = self.openid("AloneInfo")
        self.fake.users[openid] = {"unionid": "u" + openid}
        query = urlencode({"access_token": token, "openid": openid, "lang": "zh_CN"})
        t0 = time.perf_counter()
        status, body = await raw.send(raw.get(f"{USER_INFO}?{query}"))
        times.append(time.perf_counter() - t0)
        if status != 200 or b"unionid" not in body:
            raise RuntimeError(f"the fake's user/info answered {status} {body[:200]!r}")
        return tuple(times)

    async def bind(self, server: str, scene: str, phone: str) -> None:
        http = self.http[server]
        sent = await http.post(f"/api/v1/scenes/{scene}/sms", json={"phone": phone})
        if sent.status_code != 202:
            raise RuntimeError(f"{server}: sms: {sent.status_code} {sent.text}")
        code = self.inbox.codes.pop("+86" + phone)
        bound = await http.post(f"/api/v1/scenes/{scene}/bind", json={"phone": phone,
                                                                      "code": code})  # fmt: skip
        if bound.status_code != 200:
            raise RuntimeError(f"{server}: bind: {bound.status_code} {bound.text}")

    async def known_people(self, server: str) -> None:
        """The website person and the service-account person, each bound once by phone."""
        for kind, openid, phone in (("website", WEB_OPENID, PHONES[0]),
                                    ("oauth", MP_OPENID, PHONES[1])):  # fmt: skip
            created = await self.scene(server, kind=kind)
            path = self.redirect_path(created, self.code(kind, openid))
            answer = await self.http[server].get(path)
            if answer.status_code != 200:
                raise RuntimeError(f"{server}: first {kind} redirect: {answer.status_code}")
            await self.bind(server, created["scene"], phone)


# -- the run ----------------------------------------------------------------------------------


ANSWER_FRAME = ("answer", "frame")
ALONE = ("exchange raw", "exchange httpx", "user/info raw")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    server: str | None  # None: the fake alone
    run: Callable[[], Awaitable[tuple[float, ...]]]  # one sample
    expect_calls: dict[str, int]  # path → the fake's calls per sample (checked exactly)
    columns: tuple[str, ...] = ANSWER_FRAME


def jobs_of(bench: Bench, has_before: bool, token: str) -> list[Job]:
    fake_raw = Raw(int(bench.fake.url.rsplit(":", 1)[1]))
    fake_http = httpx.AsyncClient(base_url=bench.fake.url, timeout=STEP)
    bench.raw["fake"], bench.http["fake"] = fake_raw, fake_http

    def unknown(server: str, unionid: bool) -> Callable[[], Awaitable[tuple[float, ...]]]:
        async def run() -> tuple[float, ...]:
            openid = bench.openid("Scan")
            if unionid:  # user/info gives the person's unionid; no user here has it
                bench.fake.users[openid] = {"unionid": "u" + openid}
            return await bench.scan(server, openid, "NOT_REG")

        return run

    door = {EXCHANGE: 1, SNS_USERINFO: 0, USER_INFO: 0}  # a known person: the exchange only
    jobs = [
        Job("website", "after", lambda: bench.login("after", "website"), door),
        Job("oauth", "after", lambda: bench.login("after", "oauth"), door),
        Job("website, no unionid", "after", lambda: bench.login("after", "website", False), door),
        Job(
            "alone",
            None,
            lambda: bench.alone(fake_raw, fake_http, token),
            {EXCHANGE: 2, USER_INFO: 1},
            ALONE,
        ),
        Job("unknown, no look-up", "plain", unknown("plain", False), {USER_INFO: 0}),
        Job("unknown, user/info", "after", unknown("after", True), {USER_INFO: 1}),
        Job("unknown, no unionid", "after", unknown("after", False), {USER_INFO: 1}),
        Job(
            "known, unionid on",
            "after",
            lambda: bench.scan("after", MP_OPENID, "REG"),
            {USER_INFO: 0},
        ),
    ]
    if has_before:
        jobs.append(Job("before: unknown", "before", unknown("before", False), {USER_INFO: 0}))
    return jobs


async def run_job(bench: Bench, job: Job, count: int, series: Series | None) -> None:
    """``count`` samples of ``job`` in a row; the fake's calls checked, the server's CPU read."""
    clock = bench.cpu[job.server] if job.server else lambda: math.nan
    calls0 = Counter(bench.fake.calls)
    others = Others()
    cpu0 = clock()
    samples = [await job.run() for _ in range(count)]
    cpu = clock() - cpu0
    calls = Counter(bench.fake.calls)
    calls.subtract(calls0)
    for path, per in job.expect_calls.items():
        if calls[path] != per * count:
            raise RuntimeError(f"{job.name}: the fake had {calls[path]} {path} calls for "
                               f"{count} samples, not {per * count}")  # fmt: skip
    if series is None:
        return
    series.add_round(samples)
    series.cpu.append(cpu / count)
    series.calls.update({k: v for k, v in calls.items() if v > 0})
    series.others.append(others.percent())


async def bench_main(args: argparse.Namespace, bench: Bench) -> dict[str, Series]:
    for name, server in bench.servers.items():
        bench.http[name] = httpx.AsyncClient(base_url=server.url, timeout=STEP)
        bench.raw[name] = Raw(server.port)
        bench.cpu[name] = cpu_clock(server.proc.pid)
    try:
        await bench.known_people("after")
        async with httpx.AsyncClient(base_url=bench.fake.url, timeout=STEP) as http:
            grant = {"grant_type": "client_credential", "appid": bench.fake.appid,
                     "secret": bench.fake.secret}  # fmt: skip
            token = (await http.post("/cgi-bin/stable_token", json=grant)).json()["access_token"]
        jobs = jobs_of(bench, "before" in bench.servers, token)
        for job in jobs:  # warm every path: connections, the access_token, the caches
            await run_job(bench, job, args.warmup, None)
        series = {job.name: Series(job.columns) for job in jobs}
        for number in range(args.rounds):
            turn = number % len(jobs)
            t0 = time.monotonic()
            for job in jobs[turn:] + jobs[:turn]:
                await run_job(bench, job, args.per_round, series[job.name])
            busy = max(s.others[-1] for s in series.values())
            print(f"round {number + 1}/{args.rounds}: {time.monotonic() - t0:.1f} s; other "
                  f"processes used up to {busy:.0f} % of a core in a job")  # fmt: skip
        return series
    finally:
        for client in bench.http.values():
            await client.aclose()
        for raw in bench.raw.values():
            raw.close()


# -- the report -------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{1000 * value:.2f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def paired(a: Series, b: Series, column: str, other: str | None = None) -> str:
    """The median, and the range, of the per-round differences of p50s (a − b)."""
    diffs = [x - y for x, y in zip(a.rounds[column], b.rounds[other or column], strict=True)]
    return f"{ms(median(diffs))} ({ms(min(diffs))} … {ms(max(diffs))})"


def calls_text(series: Series) -> str:
    per = {k.rsplit("/", 1)[1]: v / series.samples for k, v in sorted(series.calls.items())}
    return ", ".join(f"{k} {v:.2f}" for k, v in per.items()) or "none"


def cpu_us(series: Series) -> float:
    return 1e6 * median(series.cpu)


def wechat_calls_seen(port: int) -> dict[str, tuple[float, int]]:
    """The server's own timing of its calls to WeChat (``wxpush_wechat_api_seconds``, from
    its httpx hooks): path → (mean seconds, calls), warm-up included."""
    status, body = http_request(port, "GET", "/metrics")
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in body.decode().splitlines() if status == 200 else []:
        name, _, value = line.rpartition(" ")
        for suffix, into in (("_sum", sums), ("_count", counts)):
            prefix = f'wxpush_wechat_api_seconds{suffix}{{path="'
            if name.startswith(prefix):
                into[name[len(prefix) : -2]] = float(value)
    return {k: (sums[k] / counts[k], int(counts[k])) for k in sums if counts.get(k)}


def report(
    series: dict[str, Series], args: argparse.Namespace, where: str,
    seen: dict[str, tuple[float, int]],
) -> None:  # fmt: skip
    web, oauth, alone = series["website"], series["oauth"], series["alone"]
    print(f"\n{os.cpu_count()} cores ({where}); {args.rounds} rounds of {args.per_round} per "
          f"job, jobs alternating; times in ms\n")  # fmt: skip
    print("### Redirect doors, a known person: code → tokens\n")
    print("| door | logins | redirect answer p50 / p99 | tokens at the waiter p50 / p99 | "
          "median of rounds' p50 (answer / frame) | server CPU per login | fake calls per "
          "login |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    doors = (
        ("website", web),
        ("oauth", oauth),
        ("website, the exchange without unionid", series["website, no unionid"]),
    )
    for name, s in doors:
        print(f"| {name} | {s.samples} | {s.p50_p99('answer')} | {s.p50_p99('frame')} | "
              f"{ms(s.median_p50('answer'))} / {ms(s.median_p50('frame'))} | "
              f"{cpu_us(s):.0f} µs | {calls_text(s)} |")  # fmt: skip
    print("\n| the fake alone | calls | p50 / p99 | median of rounds' p50 |")
    print("|---|---:|---:|---:|")
    labels = ("sns/oauth2/access_token, raw socket", "sns/oauth2/access_token, httpx",
              "cgi-bin/user/info, raw socket")  # fmt: skip
    for label, column in zip(labels, ALONE, strict=True):
        print(f"| {label} | {alone.samples} | {alone.p50_p99(column)} | "
              f"{ms(alone.median_p50(column))} |")  # fmt: skip
    print("\nours, redirect answer − the exchange alone (per-round p50s, median (range)): "
          f"website {paired(web, alone, 'answer', 'exchange raw')}, oauth "
          f"{paired(oauth, alone, 'answer', 'exchange raw')}; less the httpx exchange: website "
          f"{paired(web, alone, 'answer', 'exchange httpx')}, oauth "
          f"{paired(oauth, alone, 'answer', 'exchange httpx')}")  # fmt: skip
    print("the server's own timing of its calls to the fake (its httpx hooks; mean, warm-up "
          "included): " + ", ".join(f"{path} {ms(mean)} ({calls})"
                                    for path, (mean, calls) in sorted(seen.items())))  # fmt: skip

    print("\n### Follow-door scans: the unionid look-up\n")
    print(
        "| code | scan | scans | user/info calls | callback answer p50 / p99 | frame at the "
        "waiter p50 / p99 | median of rounds' p50 (answer / frame) | server CPU per scan |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows = [("before", "before: unknown", "unknown openid, no look-up")]
    rows += [
        ("after", "unknown, no look-up", "unknown openid, WXPUSH_UNIONID unset"),
        ("after", "unknown, user/info", "unknown openid, WXPUSH_UNIONID=1 (user/info)"),
        ("after", "unknown, no unionid", "the same, user/info gives no unionid"),
        ("after", "known, unionid on", "known openid, WXPUSH_UNIONID=1"),
    ]
    for code, name, label in rows:
        if name not in series:
            continue
        s = series[name]
        print(f"| {code} | {label} | {s.samples} | {s.calls.get(USER_INFO, 0)} | "
              f"{s.p50_p99('answer')} | {s.p50_p99('frame')} | "
              f"{ms(s.median_p50('answer'))} / {ms(s.median_p50('frame'))} | "
              f"{cpu_us(s):.0f} µs |")  # fmt: skip
    plain, looked = series["unknown, no look-up"], series["unknown, user/info"]
    bare = series["unknown, no unionid"]
    print(
        "\nthe look-up's cost (per-round p50 differences, median (range)): answer "
        f"{paired(looked, plain, 'answer')}, frame {paired(looked, plain, 'frame')}; "
        f"user/info alone against the fake {ms(alone.median_p50('user/info raw'))}; server "
        f"CPU {cpu_us(looked) - cpu_us(plain):+.0f} µs per scan. Of it, the call "
        f"(user/info without a unionid − unset): answer {paired(bare, plain, 'answer')}; "
        f"the unionid's search (with − without): answer {paired(looked, bare, 'answer')}"
    )

    if "before: unknown" in series:
        before = series["before: unknown"]
        print("after − before, unknown openid without look-up: answer "
              f"{paired(plain, before, 'answer')}, frame {paired(plain, before, 'frame')}; "
              f"server CPU {cpu_us(plain) - cpu_us(before):+.0f} µs per scan")  # fmt: skip
    others = [o for s in series.values() for o in s.others]
    print(f"\nother processes: median {median(others):.0f} %, max {max(others):.0f} % of a "
          "core over the jobs")  # fmt: skip
    if max(others) > 10:
        print("WARNING: other processes were busy during the run; figures are pessimistic")


def deadline(signum: int, frame: object) -> None:
    raise TimeoutError("the run took longer than --deadline")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds")
    parser.add_argument("--per-round", type=int, default=50, help="samples per job and round")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured samples per job")
    parser.add_argument("--before", default=None, help="an older tree: git revision or dir")
    parser.add_argument("--deadline", type=int, default=600, help="seconds for the run at most")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100 or not 1 <= args.per_round <= 10_000:
        parser.error("--rounds must be 1..100 and --per-round 1..10,000")
    if not 1 <= args.warmup <= 1000 or not 30 <= args.deadline <= 3600:
        parser.error("--warmup must be 1..1000 and --deadline 30..3600 s")

    cpus, where = split_cores(
        args.no_pin, "servers on core 0; Redis, the client and the fake on the others"
    )
    signal.signal(signal.SIGALRM, deadline)
    signal.alarm(args.deadline)
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="wxpush-doors-") as scratch, pinned(cpus[1]):
        workdir = Path(scratch)
        try:
            with stand_ins() as (fake, inbox, creds):
                trees = {"after": ROOT, "plain": ROOT}
                if args.before:
                    trees["before"] = before_tree(args.before, workdir)
                for label, tree in trees.items():
                    env = server_env(creds, fake, inbox, free_port(), workdir, label)
                    if label == "after":
                        env["WXPUSH_UNIONID"] = "1"
                    servers[label] = start_server(label, tree, env, workdir, cpus)
                print(", ".join(f"{s.label}: pid {s.proc.pid} on :{s.port} ({trees[s.label]})"
                                for s in servers.values()))  # fmt: skip
                bench = Bench(creds, fake, inbox, servers)
                series = uvloop.run(bench_main(args, bench))
                seen = wechat_calls_seen(servers["after"].port)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
            print(f"\nRUN FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            signal.alarm(0)
            for server in servers.values():
                stop_server(server)
                text = server.log.read_text(errors="replace") if server.log.exists() else ""
                if text.strip():
                    print(f"\n{server.label} server log:\n{text[-3000:]}")
    report(series, args, where, seen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
