"""The OpenID Connect provider (SPEC §14): the token endpoint's throughput, and the hosted
page's time to first QR, on one ``wxpush serve --workers 1`` and one redis-server.

Starts a redis-server, the fake WeChat (``tests/fakewechat.py``, in a thread of this process)
and ``python -m wxpush serve --workers 1`` of this checkout (its own SQLite file and ES256 key,
the defaults; ``WXPUSH_REQUIRE_PHONE=false``, so a scan logs a person in) with two
``[[client]]`` tables in ``WXPUSH_ACCOUNTS_FILE``: ``shop``, confidential (``client_secret_basic``),
and ``app``, public (PKCE ``S256``, ``client_id`` in the form). Then:

1. **The token endpoint**, in rounds; in each, every job below runs in an order that rotates
   from round to round, each request on one of ``--concurrency`` keep-alive connections
   (a closed loop: a connection sends its next request when its answer is in):

   - ``authorization_code`` for each client (scope ``openid offline_access``, so a refresh
     token too), and for the confidential one also with scope ``openid`` alone (no refresh
     token). Every exchange spends a fresh code, made right before the job through the real
     flow, untimed: ``GET /oidc/authorize`` → the hosted page's request id → ``POST
     /api/v1/scenes {"oidc": id}`` → a signed safe-mode SCAN callback → ``GET
     /api/v1/scenes/{id}`` (``REG``, its ``redirect`` carries the code). A code lives 60 s,
     so ``--codes`` per job must be made and spent within that.
   - ``refresh_token`` (rotation) for each client, and wxpush's own
     ``POST /api/v1/token/refresh`` beside them: each connection rotates a chain of its own,
     started from a login (an exchange, or a plain scene's scan), every answer's new token
     the next request's.

   Every answer is checked (200, the tokens it must carry); the run fails otherwise, but
   for a 503 (the server's Redis pool had no connection within its wait), which is counted
   and left out of the rate. Figures: requests per second (all rounds; each round's),
   p50 / p99 latency, the server's CPU per request (``clock_getcpuclockid``; its kernel share
   from /proc) and how busy its core was, and how busy this process and Redis kept theirs.
2. **Time to first QR**, one run at a time: what the hosted page's widget does before a QR
   is on screen — ``GET /oidc/authorize`` answered (the page), ``POST /api/v1/scenes`` with
   the request id answered, ``GET …/qr.svg`` answered — beside the plain widget's two steps
   (``POST /api/v1/scenes {}``, the QR), alternating. The scene step includes the server's
   ``qrcode/create`` call to the fake (its share, from the server's own httpx hooks, is
   printed). With ``--browser N`` (default 20), also Chromium: navigation → the QR ``<img>``
   loaded, from the page's own clock (Navigation and Resource Timing, a capturing ``load``
   listener), N runs in a fresh context each (nothing cached) and N in one context (the
   static files cached).

The timed requests go through a lean raw-socket HTTP/1.1 client (``doors.Raw``), so the
client costs little beside the server; ``--httpx`` sends them through ``httpx.AsyncClient``
instead (one client, ``--concurrency`` connections). The server runs on core 0; Redis, this
process, the fake and Chromium on the other cores.

Run from the repository root (``pip install -e '.[test]'`` first)::

    python bench/oidc.py                            # ≈ 2 minutes
    python bench/oidc.py --rounds 2 --codes 500 --refreshes 2000 --qr-runs 100 --browser 0
    python bench/oidc.py --redis-connections 8      # the server's WXPUSH_REDIS_CONNECTIONS
    python bench/oidc.py --httpx --browser 0        # httpx as the load generator
    python bench/oidc.py --profile /tmp/oidc        # py-spy the server in each token job

``--profile`` needs ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import uvloop

# Measure the checkout this script sits in (the fake, the wire helpers), as its server does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_http import (
    Credentials,
    free_port,
    http_request,
    pinned,
    start_py_spy,
    stop_py_spy,
    summarise_profile,
)
from doors import (
    Raw,
    Server,
    cpu_clock,
    server_env,
    split_cores,
    stand_ins,
    start_server,
    stop_server,
)
from push import Others, pct, scan_request

ROOT = Path(__file__).resolve().parents[1]
STEP = 10.0  # seconds any one request may take
CODE_SECONDS = 60  # an authorization code's life (wxpush.oidc.codes)
PREP_CONNECTIONS = 32  # connections making codes (untimed)
SHOP, SHOP_SECRET = "shop", "bench-secret-of-the-shop-0001"
SHOP_URI = "https://shop.example/auth/callback"
APP, APP_URI = "app", "http://127.0.0.1:9/app/callback"
REQUEST_ID = re.compile(rb'"request": "([A-Za-z0-9_-]+)"')
CHROMIUM_ARGS = [  # tests/test_widget.py's ARGS
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def clients_file(workdir: Path) -> Path:
    path = workdir / "clients.toml"
    path.write_text(
        f'[[client]]\nclient_id = "{SHOP}"\nclient_secret = "{SHOP_SECRET}"\n'
        f'redirect_uris = ["{SHOP_URI}"]\n\n'
        f'[[client]]\nclient_id = "{APP}"\nredirect_uris = ["{APP_URI}"]\ndoor = "follow"\n',
        encoding="utf-8",
    )
    return path


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


BASIC = "Basic " + base64.b64encode(f"{quote(SHOP)}:{quote(SHOP_SECRET)}".encode()).decode()


# -- requests as bytes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Req:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def wire(self, port: int) -> bytes:
        head = [f"{self.method} {self.path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                "User-Agent: Mozilla/5.0", "Accept: */*"]  # fmt: skip
        head += [f"{k}: {v}" for k, v in self.headers]
        if self.body or self.method == "POST":
            head.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def form(path: str, fields: dict[str, str], auth: str | None = None) -> Req:
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if auth:
        headers.append(("Authorization", auth))
    return Req("POST", path, urlencode(fields).encode(), tuple(headers))


def post_json(path: str, data: dict[str, Any]) -> Req:
    return Req("POST", path, json.dumps(data).encode(), (("Content-Type", "application/json"),))


def authorize_path(client: str, scope: str, challenge: str | None) -> str:
    query = {"response_type": "code", "client_id": client,
             "redirect_uri": SHOP_URI if client == SHOP else APP_URI, "scope": scope,
             "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12)}  # fmt: skip
    if challenge:
        query.update(code_challenge=challenge, code_challenge_method="S256")
    return "/oidc/authorize?" + urlencode(query)


class Sender:
    """``--concurrency`` lanes to the server: raw keep-alive sockets, or one httpx client."""

    def __init__(self, port: int, lanes: int, use_httpx: bool) -> None:
        self.port = port
        self.raws = [Raw(port) for _ in range(lanes)]
        limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)
        self.http = (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=STEP)
            if use_httpx
            else None
        )

    async def send(self, lane: int, req: Req) -> tuple[int, bytes]:
        if self.http is None:
            return await self.raws[lane].send(req.wire(self.port))
        answer = await self.http.request(
            req.method, req.path, content=req.body or None, headers=dict(req.headers)
        )
        return answer.status_code, answer.content

    async def close(self) -> None:
        for raw in self.raws:
            raw.close()
        if self.http is not None:
            await self.http.aclose()


class Unavailable(RuntimeError):
    """A 503: the server's Redis pool had no connection for the request within its wait."""


def check(status: int, body: bytes, want: int, what: str) -> Any:
    if status == 503:
        raise Unavailable(f"{what}: 503 {body[:200]!r}")
    if status != want:
        raise RuntimeError(f"{what}: {status} {body[:300]!r}")
    return json.loads(body) if body[:1] == b"{" else body


# -- logins (untimed) -------------------------------------------------------------------------


@dataclass(slots=True)
class Bench:
    server: Server
    creds: Credentials
    unavailable: int = 0  # 503s met while making codes and logins (each flow started again)

    @property
    def port(self) -> int:
        return self.server.port

    async def code(self, raw: Raw, client: str, scope: str, openid: str) -> tuple[str, str | None]:
        """A fresh code through the hosted page's flow: (code, PKCE verifier or None)."""
        verifier, challenge = pkce() if client == APP else (None, None)
        status, page = await raw.send(Req("GET", authorize_path(client, scope, challenge)).wire(
            self.port))  # fmt: skip
        found = REQUEST_ID.search(page) if status == 200 else None
        if found is None:
            raise RuntimeError(f"authorize: {status} {page[:300]!r}")
        scene = await self.scan_new(raw, {"oidc": found.group(1).decode()}, openid)
        redirect = scene.get("redirect")
        if scene.get("status") != "REG" or not redirect or "access_token" in scene:
            raise RuntimeError(f"the OIDC scene reads {scene!r}")
        return parse_qs(urlsplit(redirect).query)["code"][0], verifier

    async def scan_new(self, raw: Raw, body: dict[str, Any], openid: str) -> dict[str, Any]:
        """A scene opened with ``body``, scanned by ``openid``, read once (its claim)."""
        created = check(*await raw.send(post_json("/api/v1/scenes", body).wire(self.port)),
                        201, "scene")  # fmt: skip
        scan = scan_request(self.creds, self.port, created["scene"], openid)
        check(*await raw.send(scan), 200, "scan")
        read = Req("GET", f"/api/v1/scenes/{created['scene']}").wire(self.port)
        state: dict[str, Any] = check(*await raw.send(read), 200, "scene read")
        return state

    async def codes(self, client: str, scope: str, count: int) -> list[tuple[str, str | None]]:
        """``count`` fresh codes, ``PREP_CONNECTIONS`` flows at a time (one person each)."""
        out: list[tuple[str, str | None]] = []
        left = count

        async def worker(lane: int) -> None:
            nonlocal left
            raw = Raw(self.port)
            openid = f"oOidcBenchPerson{lane:012d}"
            try:
                while left > 0:
                    left -= 1
                    for _attempt in range(20):
                        try:
                            out.append(await self.code(raw, client, scope, openid))
                            break
                        except Unavailable:
                            self.unavailable += 1
                    else:
                        raise RuntimeError("making codes: 20 answers 503 in a row")
            finally:
                raw.close()

        await asyncio.gather(*(worker(lane) for lane in range(PREP_CONNECTIONS)))
        return out

    async def own_refresh_tokens(self, count: int) -> list[str]:
        """wxpush's own logins (a plain scene, a scan): their refresh tokens."""
        raw, tokens = Raw(self.port), []
        try:
            for number in range(count):
                state = await self.scan_new(raw, {}, f"oOidcBenchOwn{number:015d}")  # one at a time
                if state.get("status") != "REG" or not state.get("refresh_token"):
                    raise RuntimeError(f"the plain scene reads {sorted(state)}")
                tokens.append(state["refresh_token"])
        finally:
            raw.close()
        return tokens


# -- the token endpoint's jobs ----------------------------------------------------------------


class Job:
    """One kind of token request: ``request(lane)`` → the request, ``accept`` its answer."""

    name: str
    client: str
    refresh_grant: bool

    def request(self, lane: int) -> Req:
        raise NotImplementedError

    def accept(self, lane: int, status: int, body: bytes) -> None:
        raise NotImplementedError


def client_auth(client: str, fields: dict[str, str]) -> str | None:
    """``client_secret_basic`` for the shop; the public app sends its ``client_id``."""
    if client == APP:
        fields["client_id"] = APP
        return None
    return BASIC


class CodeJob(Job):
    def __init__(self, name: str, client: str, scope: str) -> None:
        self.name, self.client, self.scope = name, client, scope
        self.refresh_grant = False
        self.codes: collections.deque[tuple[str, str | None]] = collections.deque()
        self.refresh_tokens: list[str] = []  # what the exchanges gave (chains start here)

    def request(self, lane: int) -> Req:
        code, verifier = self.codes.popleft()
        fields = {"grant_type": "authorization_code", "code": code,
                  "redirect_uri": SHOP_URI if self.client == SHOP else APP_URI}  # fmt: skip
        if verifier:
            fields["code_verifier"] = verifier
        auth = client_auth(self.client, fields)
        return form("/oidc/token", fields, auth)

    def accept(self, lane: int, status: int, body: bytes) -> None:
        answer = check(status, body, 200, f"{self.name}: token")
        offline = "offline_access" in self.scope
        if not answer.get("id_token") or bool(answer.get("refresh_token")) != offline:
            raise RuntimeError(f"{self.name}: the token answer has {sorted(answer)}")
        if offline and len(self.refresh_tokens) < 1000:
            self.refresh_tokens.append(answer["refresh_token"])


class RefreshJob(Job):
    def __init__(self, name: str, client: str | None, chains: list[str]) -> None:
        self.name, self.client, self.chains = name, client or "", chains
        self.refresh_grant = True

    def request(self, lane: int) -> Req:
        token = self.chains[lane]
        if not self.client:  # wxpush's own
            return post_json("/api/v1/token/refresh", {"refresh_token": token})
        fields = {"grant_type": "refresh_token", "refresh_token": token}
        auth = client_auth(self.client, fields)
        return form("/oidc/token", fields, auth)

    def accept(self, lane: int, status: int, body: bytes) -> None:
        answer = check(status, body, 200, f"{self.name}: refresh")
        new = answer.get("refresh_token")
        if not new or new == self.chains[lane] or not answer.get("access_token"):
            raise RuntimeError(f"{self.name}: the refresh answer has {sorted(answer)}")
        self.chains[lane] = new


@dataclass(slots=True)
class Phase:
    latencies: list[float]  # of the 200s
    wall: float
    server_cpu: float
    side_cpu: float  # this process (the clients) and redis-server, on the other core(s)
    kernel: float  # the server's system time, s (/proc, in clock ticks)
    others: float
    unavailable: int  # answers 503 (not counted in the rate)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall


async def closed_loop(sender: Sender, job: Job, count: int, clock: Clocks) -> Phase:
    """``count`` requests of ``job``, each lane sending its next when its answer is in."""
    left, latencies, unavailable = count, [], 0

    async def lane(number: int) -> None:
        nonlocal left, unavailable
        while left > 0:
            left -= 1
            req = job.request(number)
            t0 = time.perf_counter()
            status, body = await sender.send(number, req)
            took = time.perf_counter() - t0
            try:
                job.accept(number, status, body)
            except Unavailable:  # the chain's token was not spent: the lane goes on with it
                unavailable += 1
                continue
            latencies.append(took)

    others, cpu0, side0, t0 = Others(), clock.server(), clock.side(), time.perf_counter()
    kernel0 = clock.kernel()
    await asyncio.gather(*(lane(n) for n in range(len(sender.raws))))
    wall = time.perf_counter() - t0
    server, side, kernel = clock.server() - cpu0, clock.side() - side0, clock.kernel() - kernel0
    return Phase(latencies, wall, server, side, kernel, others.percent(), unavailable)


@dataclass(frozen=True, slots=True)
class Clocks:
    """CPU seconds, to the ns: the server's; this process's and redis-server's together."""

    server: Callable[[], float]
    redis: Callable[[], float]
    pid: int  # the server's

    def kernel(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[12]) / os.sysconf("SC_CLK_TCK")

    def side(self) -> float:
        return time.process_time() + self.redis()


@dataclass(slots=True)
class Series:
    phases: list[Phase] = field(default_factory=list)
    prep: list[float] = field(default_factory=list)  # seconds to make a round's codes

    def all(self) -> list[float]:
        return sorted(x for p in self.phases for x in p.latencies)

    def rate(self) -> float:
        return sum(len(p.latencies) for p in self.phases) / sum(p.wall for p in self.phases)

    def cpu_us(self) -> float:
        n = sum(len(p.latencies) for p in self.phases)
        return 1e6 * sum(p.server_cpu for p in self.phases) / n

    def unavailable(self) -> int:
        return sum(p.unavailable for p in self.phases)

    def busy(self) -> float:
        return 100 * sum(p.server_cpu for p in self.phases) / sum(p.wall for p in self.phases)

    def kernel_share(self) -> float:
        return 100 * sum(p.kernel for p in self.phases) / sum(p.server_cpu for p in self.phases)

    def side_busy(self) -> float:
        return 100 * sum(p.side_cpu for p in self.phases) / sum(p.wall for p in self.phases)


async def token_rounds(args: argparse.Namespace, bench: Bench, clock: Clocks) -> dict[str, Series]:
    lanes = args.concurrency
    code_jobs = [
        CodeJob("code, confidential", SHOP, "openid offline_access"),
        CodeJob("code, public + PKCE", APP, "openid offline_access"),
        CodeJob("code, confidential, scope openid", SHOP, "openid"),
    ]
    # the refresh chains: one per lane, from a login each
    chains: dict[str, list[str]] = {}
    for job in code_jobs[:2]:
        while len(job.refresh_tokens) < lanes:
            short = lanes - len(job.refresh_tokens)
            job.codes.extend(await bench.codes(job.client, job.scope, short))
            sender = Sender(bench.port, lanes, False)
            try:
                await closed_loop(sender, job, short, clock)
            finally:
                await sender.close()
        chains[job.client], job.refresh_tokens = job.refresh_tokens[:lanes], []
    own = await bench.own_refresh_tokens(lanes)
    jobs: list[Job] = [
        *code_jobs,
        RefreshJob("refresh, confidential", SHOP, chains[SHOP]),
        RefreshJob("refresh, public", APP, chains[APP]),
        RefreshJob("own refresh (/api/v1/token/refresh)", None, own),
    ]
    series = {job.name: Series() for job in jobs}

    async def run(job: Job, count: int, into: Series | None) -> None:
        if isinstance(job, CodeJob):
            t0 = time.monotonic()
            job.codes.extend(await bench.codes(job.client, job.scope, count))
            made = time.monotonic() - t0
            if made > CODE_SECONDS - 15:
                raise RuntimeError(f"making {count} codes took {made:.0f} s: lower --codes")
            if into is not None:
                into.prep.append(made)
        sender = Sender(bench.port, lanes, args.httpx)
        spy = None
        if args.profile and into is not None:
            slug = re.sub(r"[^a-z]+", "-", job.name.lower()).strip("-")
            out = args.profile / f"{slug}.{len(into.phases)}.folded"
            spy = start_py_spy(bench.server.proc.pid, out, 250)
        try:
            phase = await closed_loop(sender, job, count, clock)
        finally:
            await sender.close()
            if spy is not None:
                stop_py_spy(spy)
        if isinstance(job, CodeJob):
            job.refresh_tokens.clear()
        if into is not None:
            into.phases.append(phase)

    for job in jobs:  # warm every path
        await run(job, args.warmup, None)
    for number in range(args.rounds):
        turn, t0 = number % len(jobs), time.monotonic()
        for job in jobs[turn:] + jobs[:turn]:
            count = args.refreshes if job.refresh_grant else args.codes
            await run(job, count, series[job.name])
        busy = max(s.phases[-1].others for s in series.values())
        print(f"tokens, round {number + 1}/{args.rounds}: {time.monotonic() - t0:.1f} s; other "
              f"processes used up to {busy:.0f} % of a core in a job", flush=True)  # fmt: skip
    return series


# -- time to first QR -------------------------------------------------------------------------


@dataclass(slots=True)
class Steps:
    names: tuple[str, ...]
    values: list[tuple[float, ...]] = field(default_factory=list)

    def column(self, index: int) -> list[float]:
        return sorted(v[index] for v in self.values)


async def first_qr(args: argparse.Namespace, bench: Bench) -> tuple[Steps, Steps]:
    """The hosted page's steps before a QR is on screen, beside the plain widget's."""
    port, raw = bench.port, Raw(bench.port)
    oidc = Steps(("page", "scene", "qr.svg", "total"))
    plain = Steps(("scene", "qr.svg", "total"))

    async def scene_and_qr(body: dict[str, Any]) -> tuple[float, float]:
        t0 = time.perf_counter()
        created = check(*await raw.send(post_json("/api/v1/scenes", body).wire(port)), 201,
                        "scene")  # fmt: skip
        t1 = time.perf_counter()
        svg = Req("GET", urlsplit(created["qr_image"]).path, headers=(("Accept", "image/*"),))
        status, image = await raw.send(svg.wire(port))
        if status != 200 or not image.startswith(b"<svg"):
            raise RuntimeError(f"qr.svg: {status} {image[:100]!r}")
        return t1 - t0, time.perf_counter() - t1

    try:
        for number in range(args.qr_runs + args.warmup // 10):
            page = Req(
                "GET",
                authorize_path(SHOP, "openid", None),
                headers=(("Accept", "text/html"), ("Accept-Language", "zh-CN")),
            )
            t0 = time.perf_counter()
            status, body = await raw.send(page.wire(port))
            t1 = time.perf_counter()
            found = REQUEST_ID.search(body) if status == 200 else None
            if found is None:
                raise RuntimeError(f"authorize: {status} {body[:300]!r}")
            scene, qr = await scene_and_qr({"oidc": found.group(1).decode()})
            plain_scene, plain_qr = await scene_and_qr({})
            if number >= args.warmup // 10:
                oidc.values.append((t1 - t0, scene, qr, t1 - t0 + scene + qr))
                plain.values.append((plain_scene, plain_qr, plain_scene + plain_qr))
    finally:
        raw.close()
    return oidc, plain


def wechat_sums(port: int) -> dict[str, tuple[float, float]]:
    """The server's own timing of its calls to WeChat: path → (seconds in all, calls)."""
    status, body = http_request(port, "GET", "/metrics")
    out: dict[str, list[float]] = {}
    for line in body.decode().splitlines() if status == 200 else []:
        name, _, value = line.rpartition(" ")
        for index, suffix in enumerate(("_sum", "_count")):
            prefix = f'wxpush_wechat_api_seconds{suffix}{{path="'
            if name.startswith(prefix):
                out.setdefault(name[len(prefix) : -2], [0.0, 0.0])[index] = float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


# -- Chromium ---------------------------------------------------------------------------------

RECORD_QR = """
document.addEventListener("load", (event) => {
  const el = event.target;
  if (el && el.tagName === "IMG" && String(el.src).includes("/qr.svg") && !window.__qrLoaded)
    window.__qrLoaded = performance.now();
}, true);
"""
TIMINGS = """
() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const one = (test) => res.find((e) => test(e.name)) || null;
  const scene = one((n) => n.endsWith("/api/v1/scenes"));
  const qr = one((n) => n.includes("/qr.svg"));
  const scripts = res.filter((e) => e.name.endsWith(".js"));
  const entry = one((n) => n.endsWith("/wxpush-oidc.js"));
  const wait = (e) => (e ? e.responseEnd - e.requestStart : NaN);
  return {
    page: nav.responseEnd,
    entry: entry ? entry.responseEnd : NaN,
    scripts: Math.max(...scripts.map((e) => e.responseEnd)),
    sent: scene ? scene.startTime : NaN,
    scene: scene ? scene.responseEnd : NaN,
    asked: qr ? qr.startTime : NaN,
    qr: qr ? qr.responseEnd : NaN,
    loaded: window.__qrLoaded,
    server: (nav.responseEnd - nav.requestStart) + wait(scene) + wait(qr),
    fetched: scripts.filter((e) => e.transferSize > 0).length,
  };
}
"""
BROWSER_MARKS = ("page", "entry", "scripts", "sent", "scene", "asked", "qr", "loaded", "server")


def browser_runs(url: str, runs: int) -> dict[str, list[dict[str, float]]]:
    """Navigation → the QR <img> loaded: ``runs`` with nothing cached, ``runs`` in one context."""
    from playwright import sync_api

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: the browser runs are skipped", file=sys.stderr)
        return {}
    out: dict[str, list[dict[str, float]]] = {"cold": [], "cached": []}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:

            def once(context: Any) -> dict[str, float]:
                page = context.new_page()
                try:
                    page.goto(url + authorize_path(SHOP, "openid", None), wait_until="commit")
                    page.wait_for_function("window.__qrLoaded", timeout=STEP * 1000)
                    marks: dict[str, float] = page.evaluate(TIMINGS)
                finally:
                    page.close()
                return marks

            def context() -> Any:
                made = browser.new_context(locale="en-US")
                made.add_init_script(RECORD_QR)
                return made

            shared = context()
            try:
                for number in range(runs + 2):  # two unmeasured first, in each
                    fresh = context()
                    try:
                        cold = once(fresh)
                    finally:
                        fresh.close()
                    cached = once(shared)
                    if number >= 2:
                        out["cold"].append(cold)
                        out["cached"].append(cached)
            finally:
                shared.close()
        finally:
            browser.close()
    return out


# -- the report -------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{1000 * value:.2f}"


def p50_p99(values: Sequence[float]) -> str:
    ordered = sorted(values)
    return f"{ms(pct(ordered, 0.5))} / {ms(pct(ordered, 0.99))}"


def rates(s: Series) -> str:
    return " / ".join(f"{p.rate:,.0f}" for p in s.phases)


def paired_ratio(a: Series, b: Series) -> str:
    """The median, and the range, of the per-round ratios of throughput (a / b)."""
    ratios = [x.rate / y.rate for x, y in zip(a.phases, b.phases, strict=True)]
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def report(
    args: argparse.Namespace, where: str, series: dict[str, Series], qr: tuple[Steps, Steps],
    create: tuple[float, float], browser: dict[str, list[dict[str, float]]], unavailable: int,
) -> None:  # fmt: skip
    client = "httpx.AsyncClient" if args.httpx else "raw keep-alive sockets"
    pool = args.redis_connections or "default"
    print(f"\n{os.cpu_count()} cores ({where}); one `wxpush serve --workers 1`, ES256 tokens, "
          f"WXPUSH_REDIS_CONNECTIONS {pool}; times in ms\n")  # fmt: skip
    print(f"### Token endpoint: {args.concurrency} concurrent connections ({client}), "
          f"{args.rounds} rounds, jobs alternating\n")  # fmt: skip
    print("| grant | answered 200 | 503 | per second (all rounds) | each round | p50 / p99 ms | "
          "server CPU per request (of it, kernel) | server core busy | clients + Redis busy "
          "|")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in series.items():
        n = sum(len(p.latencies) for p in s.phases)
        print(f"| {name} | {n:,} | {s.unavailable()} | {s.rate():,.0f} | {rates(s)} | "
              f"{p50_p99(s.all())} | {s.cpu_us():,.0f} µs ({s.kernel_share():.0f} %) | "
              f"{s.busy():.0f} % | "
              f"{s.side_busy():.0f} % |")  # fmt: skip
    own = series["own refresh (/api/v1/token/refresh)"]
    conf, pub = series["refresh, confidential"], series["refresh, public"]
    code = series["code, confidential"]
    print(f"\nOIDC refresh / own refresh (throughput, per-round ratios, median (range)): "
          f"confidential {paired_ratio(conf, own)}, public {paired_ratio(pub, own)}; "
          f"code exchange (confidential) / own refresh {paired_ratio(code, own)}; "
          f"server CPU per request: OIDC refresh {conf.cpu_us():,.0f} / {pub.cpu_us():,.0f} µs, "
          f"own {own.cpu_us():,.0f} µs")  # fmt: skip
    made = [x for s in series.values() for x in s.prep]
    if made:
        print(f"making {args.codes:,} codes through the flow took {min(made):.1f}–{max(made):.1f}"
              f" s ({args.codes / max(made):,.0f}–{args.codes / min(made):,.0f} logins/s, "
              f"{PREP_CONNECTIONS} at a time; {unavailable} answers 503 on the way, each flow "
              "started again)")  # fmt: skip

    oidc, plain = qr
    print(f"\n### Time to first QR, one run at a time ({len(oidc.values)} runs each)\n")
    print("| page | step | p50 / p99 ms | mean ms | share of the mean total |")
    print("|---|---|---:|---:|---:|")
    for label, steps in (("hosted OIDC page", oidc), ("plain widget", plain)):
        total = statistics.mean(steps.column(len(steps.names) - 1))
        for index, name in enumerate(steps.names):
            column = steps.column(index)
            share = "" if name == "total" else f"{100 * statistics.mean(column) / total:.0f} %"
            print(f"| {label} | {name} | {p50_p99(column)} | {ms(statistics.mean(column))} | "
                  f"{share} |")  # fmt: skip
    seconds, calls = create
    if calls:
        print(f"\nof the scene step, the server's qrcode/create call to the fake WeChat (its "
              f"httpx hooks, {calls:.0f} calls): mean {ms(seconds / calls)} ms")  # fmt: skip
    if browser:
        print("\n### Chromium: navigation → the QR <img> loaded (ms from navigation start)\n")
        print(
            "(p50 of each mark; the last columns: the QR loaded p50 / p99, and the time the "
            "browser waited on the three requests themselves, request sent → answer in)\n"
        )
        print(
            "| cache | runs | page answered | wxpush-oidc.js in | last module in | scene "
            "request sent | scene answered | qr.svg asked | qr.svg answered | QR <img> "
            "loaded | of it, page + scene + qr.svg requests | scripts over the network |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, runs in browser.items():
            mids = [ms(statistics.median(r[m] for r in runs) / 1000) for m in BROWSER_MARKS[:7]]
            loaded = p50_p99([r["loaded"] / 1000 for r in runs])
            server = ms(statistics.median(r["server"] for r in runs) / 1000)
            fetched = statistics.median(r["fetched"] for r in runs)
            print(f"| {label} | {len(runs)} | {' | '.join(mids)} | {loaded} | {server} | "
                  f"{fetched:.0f} |")  # fmt: skip
    others = [p.others for s in series.values() for p in s.phases]
    print(f"\nother processes: median {statistics.median(others):.0f} %, max "
          f"{max(others):.0f} % of a core over the token jobs")  # fmt: skip
    if max(others) > 10:
        print("WARNING: other processes were busy during the run; figures are pessimistic")


# -- the run ----------------------------------------------------------------------------------


def deadline(signum: int, frame: object) -> None:
    raise TimeoutError("the run took longer than --deadline")


async def bench_main(
    args: argparse.Namespace, bench: Bench
) -> tuple[dict[str, Series], tuple[Steps, Steps], tuple[float, float]]:
    pid = bench.server.proc.pid
    clock = Clocks(cpu_clock(pid), cpu_clock(bench.server.redis.pid), pid)
    series = await token_rounds(args, bench, clock)
    before = wechat_sums(bench.port)
    t0 = time.monotonic()
    qr = await first_qr(args, bench)
    after = wechat_sums(bench.port)
    print(f"time to first QR: {time.monotonic() - t0:.1f} s", flush=True)
    path = next((p for p in after if p.endswith("qrcode/create")), "")
    was = before.get(path, (0.0, 0.0))
    now = after.get(path, (0.0, 0.0))
    return series, qr, (now[0] - was[0], now[1] - was[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of token jobs")
    parser.add_argument("--codes", type=int, default=1000, help="code exchanges per job and round")
    parser.add_argument("--refreshes", type=int, default=3000, help="refreshes per job and round")
    parser.add_argument("--concurrency", type=int, default=16, help="token connections")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests per job")
    parser.add_argument("--qr-runs", type=int, default=200, help="time-to-first-QR runs")
    parser.add_argument("--browser", type=int, default=20, help="Chromium runs per cache state")
    parser.add_argument("--httpx", action="store_true", help="send the token requests by httpx")
    parser.add_argument(
        "--redis-connections",
        type=int,
        default=0,
        help="the server's WXPUSH_REDIS_CONNECTIONS (default: its own, 3)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy each job into DIR")
    parser.add_argument("--deadline", type=int, default=600, help="seconds for the run at most")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 1 <= args.concurrency <= 256:
        parser.error("--rounds must be 1..20 and --concurrency 1..256")
    if not args.concurrency <= args.codes <= 20_000 or not 1 <= args.refreshes <= 100_000:
        parser.error("--codes must be --concurrency..20,000 and --refreshes 1..100,000")
    if not 1 <= args.qr_runs <= 10_000 or not 0 <= args.browser <= 500:
        parser.error("--qr-runs must be 1..10,000 and --browser 0..500")
    args.warmup = max(args.warmup, args.concurrency)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    cpus, where = split_cores(
        args.no_pin, "the server on core 0; Redis, the clients, the fake and Chromium on the others"
    )
    signal.signal(signal.SIGALRM, deadline)
    signal.alarm(args.deadline)
    server: Server | None = None
    browser: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="wxpush-oidc-") as scratch, pinned(cpus[1]):
        workdir = Path(scratch)
        try:
            with stand_ins() as (fake, inbox, creds):
                env = server_env(creds, fake, inbox, free_port(), workdir, "oidc")
                env["WXPUSH_ACCOUNTS_FILE"] = str(clients_file(workdir))
                env["WXPUSH_REQUIRE_PHONE"] = "false"
                if args.redis_connections:
                    env["WXPUSH_REDIS_CONNECTIONS"] = str(args.redis_connections)
                server = start_server("oidc", ROOT, env, workdir, cpus)
                print(f"server: pid {server.proc.pid} on :{server.port} ({ROOT})", flush=True)
                bench = Bench(server, creds)
                series, qr, create = uvloop.run(bench_main(args, bench))
                if args.browser:
                    t0 = time.monotonic()
                    browser = browser_runs(server.url, args.browser)
                    print(f"Chromium: {time.monotonic() - t0:.1f} s", flush=True)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
            print(f"\nRUN FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            signal.alarm(0)
            if server is not None:
                stop_server(server)
                text = server.log.read_text(errors="replace") if server.log.exists() else ""
                if text.strip():
                    print(f"\nserver log:\n{text[-3000:]}")
    report(args, where, series, qr, create, browser, bench.unavailable)
    if args.profile:
        profiles(args.profile)
    return 0


def profiles(folder: Path) -> None:
    """Each job's py-spy samples (all its rounds together), summarised."""
    jobs: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.folded")):
        jobs.setdefault(path.name.split(".")[0], []).append(path)
    for job, paths in jobs.items():
        merged = folder / f"{job}.all"
        merged.write_text("".join(p.read_text(errors="replace") for p in paths))
        print(f"\n### py-spy: {job}\n\n{summarise_profile(merged, 15)}")


if __name__ == "__main__":
    sys.exit(main())
